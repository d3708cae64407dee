"""reports/train/summary.json from the stages' metrics files, and its checks."""

import json

import pytest

from tavr.train import summary


def _write(models, stage, **metrics):
    (models / stage).mkdir(parents=True, exist_ok=True)
    (models / stage / "metrics.json").write_text(json.dumps(metrics))


def _models(tmp_path, s2_identity=0.6):
    models = tmp_path / "models"
    _write(models, "codec", seconds=100.0, psnr_bench=20.0)
    _write(models, "stage1", seconds=80.0, loss_first=2.0, loss_last=0.8, identity_heldout=0.5, val_loss=1.1, steps=200)
    _write(models, "stage2", seconds=60.0, loss_first=1.0, loss_last=0.8, identity_heldout=s2_identity, val_loss=0.9)
    _write(models, "stage3", seconds=90.0, reward_first=0.4, reward_last=0.7, identity_heldout=0.65)
    return models


def test_summary_has_the_target_keys_and_checks(tmp_path):
    out = summary.summarize(_models(tmp_path), latents_seconds=170.0)
    assert set(out["stage1"]) >= {"seconds", "loss_first", "loss_last", "identity_heldout"}
    assert set(out["stage3"]) >= {"seconds", "reward_first", "reward_last", "identity_heldout"}
    assert out["codec"]["psnr"] == 20.0
    assert out["chain_seconds"] == pytest.approx(100 + 170 + 80 + 60 + 90)
    assert out["checks"]["loss_drop"] == pytest.approx(0.6)
    assert out["checks"]["stage2_beats_stage1"] is True and out["checks"]["stage3_beats_stage2"] is True
    worse = summary.summarize(_models(tmp_path / "b", s2_identity=0.4))
    assert worse["checks"]["stage2_beats_stage1"] is False


def test_summary_names_the_missing_stage(tmp_path):
    models = _models(tmp_path)
    (models / "stage3" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="stage3"):
        summary.summarize(models)


def test_main_writes_summary_and_curves(tmp_path):
    models = _models(tmp_path)
    runs = tmp_path / "runs" / "stage3" / "dvclive" / "plots" / "metrics"
    runs.mkdir(parents=True)
    (runs / "reward_mean.tsv").write_text("timestamp\tstep\treward_mean\n0\t1\t0.1\n0\t2\t0.3\n")
    summary.main(["--models", str(models), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                  "--latents-timing", str(tmp_path / "none.json")])  # fmt: skip
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["stage3"]["reward_last"] == 0.7
    png = (tmp_path / "out" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
