"""Paired bootstrap confidence intervals for benchmark means and their differences.

Every method is scored on the same pairs with the same noise, so a difference between two methods is
estimated on the pairs both scored, and each bootstrap draw resamples those pairs once for both
methods (a paired bootstrap): the variation between pairs, which both methods share, cancels out.
Draws are seeded, so a report is reproducible.
"""

from __future__ import annotations

import numpy as np

DRAWS = 2000
LEVEL = 0.95


def _draws(n: int, draws: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))  # (draws, n) resampled pair indices


def _floats(values) -> np.ndarray:
    return np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)


def _interval(v: np.ndarray, draws: int, level: float, seed: int) -> list[float]:
    """[lo, hi] of the bootstrap distribution of the mean of v (N,)."""
    means = v[_draws(len(v), draws, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def mean_ci(values, draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> dict:
    """{"mean", "ci": [lo, hi], "n"} of the finite values (N,) (NaN and None are left out); None when none is."""
    v = _floats(values)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "ci": [None, None], "n": 0}
    return {"mean": float(v.mean()), "ci": _interval(v, draws, level, seed), "n": int(len(v))}


def paired_difference(a, b, draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> dict:
    """{"diff": mean(a - b), "ci": [lo, hi], "n"} over the pairs where both values (aligned (N,)) are finite."""
    a, b = _floats(a), _floats(b)
    if a.shape != b.shape:
        raise ValueError(f"paired values must align: {a.shape} vs {b.shape}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if not len(d):
        return {"diff": None, "ci": [None, None], "n": 0}
    return {"diff": float(d.mean()), "ci": _interval(d, draws, level, seed), "n": int(len(d))}


def aligned(a, b) -> tuple:
    """Two per-pair tables indexed by pair_id, and the pair ids both hold (sorted): what a paired comparison reads."""
    a, b = a.set_index("pair_id"), b.set_index("pair_id")
    return a, b, sorted(set(a.index) & set(b.index))


def table_difference(a, b, metric: str, seed: int = 0) -> dict:
    """paired_difference of `metric` between two per-pair tables on the pairs both hold (None where a table lacks it)."""
    a, b, ids = aligned(a, b)
    column = lambda t: t.loc[ids, metric].tolist() if metric in t else [None] * len(ids)  # noqa: E731
    return paired_difference(column(a), column(b), seed=seed)


def intervals(tables: dict, metrics: tuple[str, ...], seed: int = 0) -> dict:
    """{method: {metric: mean_ci}} from per-pair tables (pandas, one row per pair, a column per metric)."""
    return {m: {k: mean_ci(t[k].tolist() if k in t else [], seed=seed) for k in metrics} for m, t in tables.items()}


def differences(tables: dict, candidate: str, metrics: tuple[str, ...], seed: int = 0) -> dict:
    """{"<candidate> - <other>": {metric: paired_difference}} for every other method, pairs matched by pair_id."""
    if candidate not in tables:
        return {}
    return {f"{candidate} - {other}": {k: table_difference(tables[candidate], table, k, seed) for k in metrics}
            for other, table in tables.items() if other != candidate}  # fmt: skip
