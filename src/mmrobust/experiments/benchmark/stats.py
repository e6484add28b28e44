"""Paired significance tests across seeds (scipy.stats).

Two table rows are compared on the seeds they share, value by value (seed k of a defense
is fine-tuned from seed k of the clean model, so the pairs are matched).  Both the paired
t-test and the Wilcoxon signed-rank test are reported, as the AMR paper does with its
paired t-test (§4.2).  With fewer than three shared seeds no test is run ("n/a"); with
n ≤ 5 the exact two-sided Wilcoxon test cannot go below p = 2/2ⁿ (0.0625 for n = 5), so
it cannot reach 0.05 — the report's legend says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_SEEDS = 3


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of a and b over ``n`` shared seeds (``diff`` = mean of a − b)."""

    n: int
    diff: float
    t_p: float
    w_p: float
    note: str = ""

    @property
    def t_significant(self) -> bool:
        return not math.isnan(self.t_p) and self.t_p < ALPHA

    @property
    def w_significant(self) -> bool:
        return not math.isnan(self.w_p) and self.w_p < ALPHA

    def text(self, p: float) -> str:
        return "n/a" if math.isnan(p) else f"{p:.3g}"


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with n pairs."""
    return 2.0 / 2**n if n > 0 else 1.0


def paired_test(a: Mapping[int, float], b: Mapping[int, float]) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of a vs b on their shared seeds."""
    seeds = sorted(set(a) & set(b))
    x = np.array([a[s] for s in seeds], dtype=float)
    y = np.array([b[s] for s in seeds], dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    diff = float(np.mean(x - y)) if n else math.nan
    if n < MIN_SEEDS:
        return PairedTest(
            n, diff, math.nan, math.nan, f"n/a: {n} paired seed(s), tests need ≥ {MIN_SEEDS}"
        )
    d = x - y
    if np.allclose(d, 0.0, rtol=0.0, atol=1e-15):
        return PairedTest(n, diff, 1.0, 1.0, "identical values")
    if np.allclose(d, d[0], rtol=1e-12, atol=0.0):
        return PairedTest(n, diff, math.nan, _wilcoxon(d), "constant difference: t-test undefined")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_p = float(stats.ttest_rel(x, y).pvalue)
    note = (
        f"Wilcoxon p ≥ {wilcoxon_floor(n):.3g} with n = {n}" if wilcoxon_floor(n) >= ALPHA else ""
    )
    return PairedTest(n, diff, t_p, _wilcoxon(d), note)


def _wilcoxon(d: np.ndarray) -> float:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(stats.wilcoxon(d).pvalue)
    except ValueError:
        return math.nan


def legend(n_seeds: int, baseline: str | None) -> list[str]:
    """The significance legend of a table with ``n_seeds`` seeds."""
    base = baseline or "the undefended model"
    lines = [
        f"† paired t-test p < {ALPHA} vs {base}; ‡ Wilcoxon signed-rank p < {ALPHA} vs {base}; "
        f"§ the best and second-best rows of the column differ (paired t-test p < {ALPHA}). "
        "Pairs are matched by seed."
    ]
    if n_seeds < MIN_SEEDS:
        lines.append(
            f"With {n_seeds} seed(s) no test is run (n/a): paired tests need at least {MIN_SEEDS}."
        )
    elif wilcoxon_floor(n_seeds) >= ALPHA:
        lines.append(
            f"With n = {n_seeds} seeds the exact two-sided Wilcoxon test cannot give p < {ALPHA} "
            f"(its smallest p is 2/2ⁿ = {wilcoxon_floor(n_seeds):.3g}), so ‡ cannot appear; "
            "the t-test assumes normally distributed differences."
        )
    return lines
