"""UAT: untargeted adversarial training against promotion attacks (Band Together §4.1, Eq. 8–10).

Every batch, noise for the positive and negative items from the BPR gradient,
δ_{m,i} = ε_{m,i} ∇_δ L_BPR / ‖∇_δ L_BPR‖ (per row, ε relative, r = 10 %), and training on
L_BPR(clean) + λ · L_BPR(noisy), fine-tuning a clean checkpoint (50 epochs in the paper).
The noise is on the pre-extracted item features the model reads (the paper's "modality
embeddings"); ``point: embedding`` perturbs the model's own modality embeddings instead.
Search space (paper): λ ∈ {0.1, 1, 2, …, 10}.
"""

from __future__ import annotations

from pydantic import Field

from mmrobust.defenses.adversarial import AdversarialConfig, AdversarialTraining
from mmrobust.models import Needs


class UATConfig(AdversarialConfig):
    eps: float = Field(0.1, ge=0, description="r = 10 % of the row's L2 norm (paper)")
    lam: float = Field(1.0, ge=0, description="λ (paper search space 0.1, 1, …, 10)")


class UAT(AdversarialTraining):
    name = "uat"
    needs = Needs("UAT", routes=("direct",))
    Config = UATConfig
