"""Graph helpers on plain ``torch.sparse`` (torch-scatter / torch-sparse are not used)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def bipartite_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """The (U+I)×(U+I) symmetric user–item adjacency A = [[0, R], [Rᵀ, 0]]."""
    r = sp.csr_matrix(train, dtype=np.float32)
    return sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)


def sym_normalize(adj: sp.spmatrix) -> sp.csr_matrix:
    """D^{-1/2} A D^{-1/2}; rows with degree 0 stay zero."""
    adj = sp.csr_matrix(adj, dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    d = sp.diags(inv_sqrt.astype(np.float32))
    return sp.csr_matrix(d @ adj @ d, dtype=np.float32)


def to_torch_csr(matrix: sp.spmatrix, device: torch.device | str = "cpu") -> Tensor:
    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data), size=m.shape, device=device, check_invariants=False,
        )


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a constant symmetric sparse A; the backward pass is Aᵀ g = A g."""

    @staticmethod
    def forward(ctx, adj: Tensor, dense: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ dense

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return None, _SymmetricSpMM.apply(ctx.adj, grad)


def sym_spmm(adj: Tensor, dense: Tensor) -> Tensor:
    """Multiply a constant symmetric sparse matrix with a dense one, differentiable in ``dense``
    (also twice, as the backward is itself a product with A)."""
    return _SymmetricSpMM.apply(adj, dense)
