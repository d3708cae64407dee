"""Paired bootstrap intervals: they cover the mean, shrink with more pairs, and a paired difference sees
a small consistent gain that the two methods' own intervals hide."""

import numpy as np
import pandas as pd

from tavr.eval.stats import differences, intervals, mean_ci, paired_difference


def test_mean_interval_covers_the_mean_and_skips_missing_values():
    values = [0.2, 0.4, None, 0.6, float("nan"), 0.8]
    ci = mean_ci(values)
    assert ci["n"] == 4 and ci["mean"] == 0.5 and ci["ci"][0] < 0.5 < ci["ci"][1]
    assert mean_ci([None, None]) == {"mean": None, "ci": [None, None], "n": 0}
    rng = np.random.default_rng(1)
    wide, narrow = mean_ci(rng.normal(size=20)), mean_ci(rng.normal(size=2000))
    assert narrow["ci"][1] - narrow["ci"][0] < (wide["ci"][1] - wide["ci"][0]) / 5


def test_a_paired_difference_finds_what_separate_intervals_cannot():
    rng = np.random.default_rng(0)
    hardness = rng.normal(0, 1.0, size=40)  # pairs differ a lot; both methods share it
    a, b = hardness + 0.1 + rng.normal(0, 0.02, 40), hardness + rng.normal(0, 0.02, 40)
    ca, cb = mean_ci(a), mean_ci(b)
    assert ca["ci"][0] < cb["ci"][1]  # the methods' own intervals overlap ...
    d = paired_difference(a, b)
    assert d["n"] == 40 and d["ci"][0] > 0  # ... the paired difference is clearly above 0
    same = paired_difference(b + rng.normal(0, 0.02, 40), b)
    assert same["ci"][0] < 0 < same["ci"][1]
    assert paired_difference([1.0, None], [0.5, 0.2])["n"] == 1


def test_tables_are_matched_by_pair_id():
    t = pd.DataFrame({"pair_id": ["p0", "p1", "p2"], "id_top1": [1.0, 1.0, 0.0]})
    u = pd.DataFrame({"pair_id": ["p2", "p1"], "id_top1": [0.0, 0.0]})
    d = differences({"tavr": t, "base": u}, "tavr", ("id_top1",))["tavr - base"]["id_top1"]
    assert d["n"] == 2 and d["diff"] == 0.5  # p1: 1 - 0, p2: 0 - 0; p0 is not paired
    assert intervals({"tavr": t}, ("id_top1", "absent"))["tavr"]["absent"]["n"] == 0
