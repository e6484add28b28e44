"""Linear item content shared by VBPR and DUIF: one matrix W maps the concatenated item
features to the content vector, W f_i = Σ_m W_m x_{m,i} (VBPR Eq. 2's E·f_i, DUIF's E·x_i),
and W_m, the column block of modality m, is that modality's item encoder g^m."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mmrobust.models.base import rows


class LinearContent:
    """Mixin for a :class:`~mmrobust.models.base.Recommender` whose projection is ``self.W``
    ([d, Σ_m D_m]); call :meth:`_init_blocks` after the feature dimensions are known."""

    W: Tensor

    def _init_blocks(self) -> None:
        self._blocks: dict[str, tuple[int, int]] = {}
        start = 0
        for m in self.modalities:
            self._blocks[m] = (start, start + self.feature_dims[m])
            start += self.feature_dims[m]

    def modality_embedding_dims(self) -> dict[str, int]:
        return {m: self.config.embedding_size for m in self.modalities}

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        start, end = self._blocks[modality]
        return x @ self.W[:, start:end].T

    def _content(self, features: Mapping[str, Tensor], items: Tensor | None,
                 embedding_delta: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """{m: W_m x_{m,i} (+ δ_{m,i})} for ``items`` (all items if None)."""
        parts = {}
        for m in self.modalities:
            e = self.encode_modality(m, features[m] if items is None else rows(features[m], items))
            if embedding_delta is not None and m in embedding_delta:
                e = e + (embedding_delta[m] if items is None else rows(embedding_delta[m], items))
            parts[m] = e
        return parts
