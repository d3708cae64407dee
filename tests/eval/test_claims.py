"""The claims table: differences with CIs on recorded per-pair scores, verdicts on the CI's side of 0,
and claims whose methods did not run listed as such."""

import numpy as np
import pandas as pd

from tavr.eval.claims import evaluate, markdown


def _table(top1, lipsync, seconds=1.0):
    n = len(top1)
    return pd.DataFrame({"pair_id": [f"pair{i:03d}" for i in range(n)], "id_top1": top1, "id_margin": np.asarray(top1) - 0.5,
                         "lipsync": lipsync, "gen_seconds": seconds, "face_rate": 1.0})  # fmt: skip


def test_claims_follow_the_confidence_intervals():
    rng = np.random.default_rng(0)
    base = (rng.random(40) < 0.3).astype(float)
    tavr = np.maximum(base, (rng.random(40) < 0.7).astype(float))
    sync = rng.normal(0.5, 0.1, 40)
    tables = {
        "tavr": _table(tavr, sync + 0.1, seconds=2.0),
        "image_raw": _table(base, sync),
        "image_adapted": _table(tavr, sync + 0.1),  # as good as tavr: undecided
        "tavr_keep025": _table(tavr, sync + 0.1, seconds=0.8),
    }
    rows = evaluate(tables)

    def row(start, metric):
        return next(r for r in rows if r["claim"].startswith(start) and r["metric"] == metric)

    raw = row("a video reference beats a raw", "id_top1")
    assert raw["verdict"] == "holds" and raw["ci"][0] > 0 and raw["n"] == 40
    assert row("a video reference beats a raw", "lipsync")["verdict"] == "holds"
    assert row("a video reference beats an image", "id_top1")["verdict"] == "undecided"
    assert row("keeping 25% of the reference tokens keeps", "id_top1")["verdict"] == "holds"  # the same identity
    speed = row("keeping 25% of the reference tokens saves", "gen_seconds")
    assert speed["diff"] == 0.4 and speed["verdict"] == "holds"
    rl = row("RL on identity (stage 3)", "id_top1")
    assert rl["verdict"].startswith("not run") and "tavr_stage2" in rl["verdict"]
    text = markdown(evaluate(tables), 40)
    assert "| a video reference beats a raw reference image | tavr - image_raw | id_top1 |" in text and "0.40x" in text


def test_zeros_against_zeros_prove_nothing():
    blank = _table([0.0] * 10, [0.0] * 10).assign(face_rate=0.0)
    rows = evaluate({"tavr": blank, "tavr_keep025": blank})
    keep = next(r for r in rows if r["claim"].startswith("keeping 25% of the reference tokens keeps") and r["metric"] == "id_top1")
    assert keep["verdict"] == "not testable: neither method drew a face"


def test_person_psnr_decides_the_control_without_faces():
    rng = np.random.default_rng(1)
    right = _table([0.0] * 12, [0.0] * 12).assign(face_rate=0.0, person_psnr=17 + rng.normal(0, 0.5, 12))
    wrong = right.assign(person_psnr=right["person_psnr"] - 3 + rng.normal(0, 0.5, 12))
    rows = [r for r in evaluate({"tavr": right, "tavr_wrong_ref": wrong}) if r["b"] == "tavr_wrong_ref"]
    verdicts = {r["metric"]: r["verdict"] for r in rows}
    assert verdicts["person_psnr"] == "holds" and verdicts["id_top1"].startswith("not testable")
    swapped = evaluate({"tavr": wrong, "tavr_wrong_ref": right})
    assert next(r for r in swapped if r["b"] == "tavr_wrong_ref" and r["metric"] == "person_psnr")["verdict"] == "fails"
