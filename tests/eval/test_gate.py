"""The deployment gate's decisions, export only on a pass, and the production registry."""

import json

import numpy as np

import pytest

from tavr.config import GateConfig, GenerateConfig, ModelConfig
from tavr.eval.export import export, promote
from tavr.eval.gate import decide, run_gate
from tavr.pipeline import TAVRPipeline


def _metrics(identity=0.6, lipsync=0.5, face_rate=0.9, bg_psnr=25.0):
    return {"identity": identity, "lipsync": lipsync, "lipsync_offset": 0.0, "bg_psnr": bg_psnr, "bg_ssim": 0.8,
            "stability": 3.0, "face_rate": face_rate}  # fmt: skip


def _summary(tavr=None, raw=None, adapted=None, pairs=30):
    methods = {"tavr": tavr or _metrics(), "image_raw": raw or _metrics(identity=0.4), "image_adapted": adapted or _metrics(identity=0.5)}
    full = {"asked": pairs, "scored": pairs, "missing": 0, "failed": 0, "short": 0}
    return {"pairs": pairs, "methods": methods, "coverage": {m: dict(full) for m in methods}}


RAW = GateConfig(identity_metric="identity")  # point estimates of the raw identity: the decisions below are on numbers


def _failed(decision):
    return {c["check"] for c in decision["checks"] if not c["ok"]}


def test_a_candidate_that_beats_both_baselines_above_every_floor_passes():
    decision = decide(_summary(), RAW)
    assert decision["pass"] and _failed(decision) == set() and decision["production"] is None
    assert len(decision["reasons"]) == len(decision["checks"]) == 11  # 3 coverages + 4 floors + 2 checks per baseline
    assert decision["candidate"]["identity"] == 0.6


def test_each_shortfall_fails_the_gate_with_its_numbers():
    behind = decide(_summary(adapted=_metrics(identity=0.65)), RAW)
    assert not behind["pass"] and _failed(behind) == {"identity_vs_image_adapted"}
    assert behind["reasons"] == [r["reason"] for r in behind["checks"] if not r["ok"]]
    assert "-0.0500" in behind["reasons"][0] and "image_adapted" in behind["reasons"][0]
    # lip sync may trail a baseline by the tolerance, not more
    assert decide(_summary(tavr=_metrics(lipsync=0.46)), RAW)["pass"]
    assert _failed(decide(_summary(tavr=_metrics(lipsync=0.40)), RAW)) == {"lipsync_vs_image_raw", "lipsync_vs_image_adapted"}
    # floors; an identity nobody could compute (no face) fails every check that needs it
    assert _failed(decide(_summary(tavr=_metrics(bg_psnr=12.0)), RAW)) == {"min_bg_psnr"}
    zero = _metrics(identity=None, face_rate=0.0)
    failed = decide(_summary(tavr=zero, raw=zero, adapted=zero), RAW)
    assert _failed(failed) == {"min_identity", "min_face_rate", "identity_vs_image_raw", "identity_vs_image_adapted"}
    assert any("not computed" in r for r in failed["reasons"])
    # a baseline that was not benchmarked cannot be beaten
    summary = _summary()
    del summary["methods"]["image_raw"]
    assert _failed(decide(summary, RAW)) == {"beats_image_raw"}
    with pytest.raises(ValueError, match="candidate"):
        decide(summary, GateConfig(identity_metric="identity", candidate="other"))


def test_the_candidate_is_compared_with_production():
    production = {"pairs": 30, "metrics": _metrics(identity=0.615)}
    assert decide(_summary(), RAW, production)["pass"]  # 0.015 lower, within max_regression 0.02 ...
    strict = decide(_summary(), GateConfig(identity_metric="identity", max_regression=0.01), production)
    assert _failed(strict) == {"identity_vs_production"}  # ... and not at 0.01
    other = decide(_summary(), GateConfig(identity_metric="identity", max_regression=0.05), {"pairs": 158, "metrics": _metrics()})
    assert _failed(other) == {"same_pairs"} and other["production"]["identity"] == 0.6


def _pipeline_dir(tmp_path):
    pipe = TAVRPipeline.from_config(ModelConfig(num_layers=1), GenerateConfig(chunk_frames=9, reference_frames=9))
    pipe.save_pretrained(tmp_path / "candidate")
    return tmp_path / "candidate"


def test_export_writes_the_model_only_on_a_pass_and_promote_registers_it(tmp_path):
    model, out, production = _pipeline_dir(tmp_path), tmp_path / "export", tmp_path / "production"
    cfg = GateConfig(identity_metric="identity", summary=str(tmp_path / "summary.json"), out=str(tmp_path / "gate.json"), production=str(production))
    (tmp_path / "summary.json").write_text(json.dumps(_summary()))

    assert run_gate(cfg)["pass"]
    info = export(cfg.out, model, out)
    assert info["exported"] and TAVRPipeline.from_pretrained(out).config.chunk_frames == 9
    assert json.loads((out / "bench.json").read_text()) == {"pairs": 30, "metrics": _metrics()}
    promote(out, production)
    assert (production / "model_index.json").is_file()

    # a worse candidate: the gate now compares with production and fails; the old export is gone
    (tmp_path / "summary.json").write_text(json.dumps(_summary(tavr=_metrics(identity=0.55))))
    decision = run_gate(cfg)
    assert not decision["pass"] and _failed(decision) == {"identity_vs_production"}
    info = export(cfg.out, model, out)
    assert not info["exported"] and sorted(p.name for p in out.iterdir()) == ["export.json"]
    with pytest.raises(FileNotFoundError, match="gate did not pass"):
        TAVRPipeline.from_pretrained(out)
    with pytest.raises(ValueError, match="no exported model"):
        promote(out, production)
    assert (production / "model_index.json").is_file()  # production is untouched


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tavr bench report"):
        run_gate(GateConfig(summary=str(tmp_path / "none.json")))
    (tmp_path / "prod").mkdir()
    (tmp_path / "s.json").write_text(json.dumps(_summary()))
    with pytest.raises(FileNotFoundError, match="bench.json"):
        run_gate(GateConfig(summary=str(tmp_path / "s.json"), production=str(tmp_path / "prod"), out=str(tmp_path / "g.json")))
    with pytest.raises(FileNotFoundError, match="tavr gate"):
        export(tmp_path / "nogate.json", tmp_path, tmp_path / "out")


def test_a_method_that_scored_part_of_the_pairs_or_a_short_video_fails_the_gate():
    """Means over 2 of 10 pairs (one a 3-frame video) decide nothing, whatever they are."""
    summary = _summary(tavr=_metrics(identity=0.9, lipsync=0.989), pairs=10)
    summary["coverage"]["tavr"].update(scored=2, missing=7, failed=1)
    decision = decide(summary, RAW)
    assert not decision["pass"] and _failed(decision) == {"coverage_tavr"}
    assert "scored 2 of 10 pairs (7 missing, 1 failed)" in decision["reasons"][0]
    summary = _summary(pairs=10)
    summary["coverage"]["image_raw"]["short"] = 1  # a baseline's numbers count as much as the candidate's
    assert _failed(decide(summary, RAW)) == {"coverage_image_raw"}
    old = _summary(pairs=10)
    del old["coverage"]  # a summary without coverage: its scored counts decide
    old["scored"] = {"tavr": 10, "image_raw": 10, "image_adapted": 3}
    assert _failed(decide(old, RAW)) == {"coverage_image_adapted"}


def _per_pair(top1: list[float], lipsync: float = 0.5, face_rate: float = 1.0):
    import pandas as pd

    n = len(top1)
    return pd.DataFrame({"pair_id": [f"pair{i:03d}" for i in range(n)], "id_top1": top1, "id_margin": top1, "identity": 0.95,
                         "lipsync": lipsync, "face_rate": face_rate})  # fmt: skip


def _evidence_summary(tables: dict):
    """A report summary from recorded per-pair scores, with the report's own CIs (tavr.eval.stats)."""
    from tavr.eval import stats

    keys = ("id_top1", "id_margin", "identity", "lipsync", "face_rate")
    methods = {m: {**{k: float(t[k].mean()) for k in keys}, "bg_psnr": 25.0} for m, t in tables.items()}
    n = len(next(iter(tables.values())))
    full = {"asked": n, "scored": n, "missing": 0, "failed": 0, "short": 0}
    return {"pairs": n, "methods": methods, "coverage": {m: dict(full) for m in tables},
            "ci": stats.intervals(tables, keys), "differences": stats.differences(tables, "tavr", keys)}


def test_the_gate_decides_on_the_ci_of_the_paired_difference():
    """On 40 recorded pairs: a candidate identified on most pairs where the baselines manage some 16 passes;
    one that is ahead by two lucky pairs (inside the noise) fails, though its mean is higher."""
    rng = np.random.default_rng(0)
    base = (rng.random(40) < 0.4).astype(float)
    better = np.where(rng.random(40) < 0.75, 1.0, base)
    lucky = base.copy()
    lucky[[3, 17]] = 1.0  # two more pairs than the baseline: a mean 0.05 higher
    for cand, passes in ((better, True), (lucky, False)):
        tables = {"tavr": _per_pair(cand.tolist()), "image_raw": _per_pair(base.tolist()), "image_adapted": _per_pair(base.tolist())}
        decision = decide(_evidence_summary(tables), GateConfig())
        assert decision["pass"] is passes, decision["reasons"]
        assert decision["candidate"]["id_top1"] > _evidence_summary(tables)["methods"]["image_raw"]["id_top1"]
    assert _failed(decision) == {"id_top1_vs_image_raw", "id_top1_vs_image_adapted"}  # its floor it clears
    assert all("95% CI lower end" in r for r in decision["reasons"])
