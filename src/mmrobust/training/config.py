"""Typed training configuration (MMRec's documented defaults)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmrobust.evaluation import DEFAULT_KS, METRIC_NAMES


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1000, ge=1, description="epoch cap (MMRec 1000); early "
                                                "stopping usually ends sooner")
    batch_size: int = Field(2048, ge=1, description="BPR triples per batch (MMRec 2048)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (MMRec 1e-3)")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay (MMRec 0)")
    patience: int = Field(20, ge=1, description="evaluations without improvement before "
                                                "stopping (MMRec stopping_step 20)")
    valid_metric: str = Field("recall@20", description="model selection metric "
                                                       "on the validation split")
    eval_every: int = Field(1, ge=1, description="evaluate on validation every this many epochs")
    ks: list[int] = Field(default_factory=lambda: list(DEFAULT_KS),
                          description="cut-offs K of the metrics")
    eval_batch_size: int = Field(4096, ge=1, description="users per full-ranking batch")
    seed: int = Field(0, description="seed of initialisation, sampling and dropout")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    checkpoint_every: int = Field(1, ge=1, description="write a resumable checkpoint "
                                                       "every this many epochs")
    progress: bool = Field(True, description="show a progress bar (off when not on a terminal)")
    restore: Literal["best", "last"] = Field(
        "best", description="keep the best-validation weights, or the last "
                            "epoch's (fixed-length defense fine-tuning)")

    @field_validator("valid_metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        match = re.fullmatch(r"([a-z]+)@(\d+)", value.lower())
        if not match or match.group(1) not in METRIC_NAMES:
            raise ValueError(f"valid_metric '{value}' must look like name@K "
                             f"with name in {', '.join(METRIC_NAMES)}")
        return value.lower()

    @field_validator("ks")
    @classmethod
    def _ks(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(value))

    def model_post_init(self, __context: object) -> None:
        k = int(self.valid_metric.split("@")[1])
        if k not in self.ks:
            raise ValueError(f"valid_metric {self.valid_metric} uses "
                             f"K={k}, which is not among ks {self.ks}")
