"""Synthetic multimodal data for fast unit tests.

Users and items get latent factors P, Q ~ N(0, I_k).  Each user draws ``per_user`` distinct
items with probability ∝ exp(⟨p_u, q_i⟩/√k + b_i) (Gumbel top-k), b_i a popularity bias.
Each modality m is a noisy linear image of the item factors, x_m = Q A_m + σ_m ε with
A_m ~ N(0, 1/k), and σ_m set so that Var(Q A_m) / σ_m² equals the modality's SNR.
Interactions are split 8:1:1 per user at random.
"""

from __future__ import annotations

import numpy as np

from mmrobust.data.dataset import Dataset

DEFAULT_MODALITIES = {"image": (32, 4.0), "text": (16, 0.5)}


def make_synthetic(
    n_users: int = 300,
    n_items: int = 400,
    n_factors: int = 8,
    per_user: int = 20,
    modalities: dict[str, tuple[int, float]] | None = None,
    popularity_skew: float = 1.0,
    seed: int = 0,
    name: str = "synthetic",
) -> Dataset:
    """A :class:`Dataset` with ``modalities`` = {name: (dims, signal-to-noise ratio)}."""
    if per_user >= n_items:
        raise ValueError(f"per_user ({per_user}) must be smaller than n_items ({n_items})")
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n_users, n_factors))
    q = rng.standard_normal((n_items, n_factors))
    bias = popularity_skew * rng.standard_normal(n_items)
    logits = p @ q.T / np.sqrt(n_factors) + bias
    gumbel = -np.log(-np.log(rng.uniform(size=logits.shape)))
    chosen = np.argpartition(-(logits + gumbel), per_user, axis=1)[:, :per_user]
    users = np.repeat(np.arange(n_users), per_user)
    items = chosen.reshape(-1)
    position = rng.permuted(np.tile(np.arange(per_user), (n_users, 1)), axis=1).reshape(-1)
    labels = np.where(position < int(0.8 * per_user), 0,
                      np.where(position < int(0.9 * per_user), 1, 2))
    features = {}
    chosen = modalities if modalities is not None else DEFAULT_MODALITIES
    for modality, (dims, snr) in chosen.items():
        signal = q @ rng.standard_normal((n_factors, dims)) / np.sqrt(n_factors)
        sigma = np.sqrt(signal.var() / snr)
        features[modality] = (signal + sigma * rng.standard_normal(signal.shape)).astype(np.float32)
    return Dataset.from_interactions(name, users, items, labels, n_users, n_items, features)
