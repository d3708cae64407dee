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


def mean_ci(values, draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> dict:
    """{"mean", "ci": [lo, hi], "n"} of the finite values (N,) (NaN and None are left out); None when none is."""
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "ci": [None, None], "n": 0}
    means = v[_draws(len(v), draws, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(v.mean()), "ci": [float(lo), float(hi)], "n": int(len(v))}


def paired_difference(a, b, draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> dict:
    """{"diff": mean(a - b), "ci": [lo, hi], "n"} over the pairs where both values (aligned (N,)) are finite."""
    a = np.asarray([np.nan if x is None else x for x in a], dtype=np.float64)
    b = np.asarray([np.nan if x is None else x for x in b], dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must align: {a.shape} vs {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[both]
    if not len(d):
        return {"diff": None, "ci": [None, None], "n": 0}
    means = d[_draws(len(d), draws, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(d.mean()), "ci": [float(lo), float(hi)], "n": int(len(d))}


def intervals(tables: dict, metrics: tuple[str, ...], seed: int = 0) -> dict:
    """{method: {metric: mean_ci}} from per-pair tables (pandas, one row per pair, a column per metric)."""
    return {m: {k: mean_ci(t[k].tolist() if k in t else [], seed=seed) for k in metrics} for m, t in tables.items()}


def differences(tables: dict, candidate: str, metrics: tuple[str, ...], seed: int = 0) -> dict:
    """{"<candidate> - <other>": {metric: paired_difference}} for every other method, pairs matched by pair_id."""
    if candidate not in tables:
        return {}
    mine = tables[candidate].set_index("pair_id")
    out = {}
    for other, table in tables.items():
        if other == candidate:
            continue
        theirs = table.set_index("pair_id")
        ids = sorted(set(mine.index) & set(theirs.index))
        out[f"{candidate} - {other}"] = {
            k: paired_difference(mine.loc[ids, k].tolist() if k in mine else [None] * len(ids),
                                 theirs.loc[ids, k].tolist() if k in theirs else [None] * len(ids), seed=seed)
            for k in metrics
        }  # fmt: skip
    return out
