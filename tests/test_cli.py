"""The `tavr` commands as a user runs them: layout on disk, summaries, exit codes."""

import json

import pandas as pd
from typer.testing import CliRunner

from tavr.cli import app

runner = CliRunner()


def test_synth_ingest_qa_chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: dataclass defaults
    res = runner.invoke(app, ["synth", "--out", "syn", "--identities", "3", "--scenes", "4", "--seed", "2", "--workers", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "syn" / "synth.json").read_text())
    assert summary["identities"]["bench"] == ["id002"] and summary["scenes"]["bench"] == ["sc02", "sc03"]
    mp4s = sorted((tmp_path / "syn").glob("*/*/*.mp4"))
    assert len(mp4s) == summary["clips"] == 2 * 2 * 2 + 1 * 2 * 2
    for mp4 in mp4s:
        assert mp4.with_suffix(".json").is_file() and mp4.with_name(mp4.stem + ".mask.npz").is_file()

    res = runner.invoke(app, ["ingest", "syn", "missing_dir", "clips", "--pairs", "pairs.json"])
    assert res.exit_code == 0, res.output
    assert "skipping missing source" in res.output
    manifest = pd.read_parquet(tmp_path / "clips" / "manifest.parquet")
    assert set(manifest["split"]) == {"train", "bench"}
    pairs = json.loads((tmp_path / "pairs.json").read_text())
    assert pairs["count"] == len(pairs["pairs"]) > 0

    res = runner.invoke(app, ["qa", "clips/manifest.parquet", "--report", "qa"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "qa" / "qa.json").read_text())["success"] is True

    # a leak: a train identity shows up in the bench split too -> exit 1, named
    leak = manifest.copy()
    leak.loc[leak.index[0], "split"] = "bench" if leak.loc[leak.index[0], "split"] == "train" else "train"
    leak.to_parquet(tmp_path / "leak.parquet")
    res = runner.invoke(app, ["qa", "leak.parquet", "--report", "qa_leak"])
    assert res.exit_code == 1
    assert "identity_in_both_splits" in res.output and leak.loc[leak.index[0], "identity"] in res.output


def test_bad_invocations_exit_2_with_a_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["ingest", "nowhere", "out"])
    assert res.exit_code == 2 and "no source exists" in res.output
    res = runner.invoke(app, ["ingest", "out"])
    assert res.exit_code == 2 and "SRC... OUT" in res.output
    res = runner.invoke(app, ["qa", "nothing.parquet"])
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "params.yaml").write_text("synth:\n  identitees: 3\n")
    res = runner.invoke(app, ["synth", "--out", "x"])
    assert res.exit_code == 2 and "synth.identitees" in res.output


def test_ingest_with_no_usable_video_exits_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src" / "a" / "b").mkdir(parents=True)
    (tmp_path / "src" / "a" / "b" / "x.mp4").write_text("not a video")
    res = runner.invoke(app, ["ingest", "src", "out"])
    assert res.exit_code == 1 and "no usable clips" in res.output
    assert "cannot decode" in (tmp_path / "out" / "quarantine.jsonl").read_text()


def test_config_command_prints_the_resolved_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("preset: small\nsynth:\n  seed: 9\n")
    res = runner.invoke(app, ["config"])
    assert res.exit_code == 0
    tree = json.loads(res.stdout)
    assert tree["synth"]["seed"] == 9 and tree["ingest"]["size"] == 256


def test_train_commands_explain_bad_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["train", "--help"])
    assert res.exit_code == 0
    for stage in ("codec", "vae", "latents", "stage1", "stage2", "stage3", "summary"):
        assert stage in res.output
    (tmp_path / "bad.yaml").write_text("stage3:\n  group_sise: 4\n")
    res = runner.invoke(app, ["train", "stage3", "--params", "bad.yaml"])
    assert res.exit_code == 2 and "stage3.group_sise" in res.output
    res = runner.invoke(app, ["train", "stage3"])  # defaults, but no stage-2 model here
    assert res.exit_code == 2 and "models/stage2" in " ".join(res.output.split())
    res = runner.invoke(app, ["train", "summary"])
    assert res.exit_code == 2 and "dvc repro codec" in " ".join(res.output.split())


def test_set_overrides_any_value_on_every_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("bench:\n  limit: 40\n")
    res = runner.invoke(app, ["config", "--set", "bench.limit=3", "--set", "bench.validation=[0, 0]", "--set", "synth.shift=0.3"])
    assert res.exit_code == 0, res.output
    tree = json.loads(res.stdout)
    assert tree["bench"]["limit"] == 3 and tree["bench"]["validation"] == [0, 0] and tree["synth"]["shift"] == 0.3
    res = runner.invoke(app, ["config", "--set", "bench.limit"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    res = runner.invoke(app, ["config", "--set", "bench.limmit=3"])
    assert res.exit_code == 2 and "bench.limmit" in res.output
    # the training stages take it too (through their module's command line): the rule on stage3.group_size fires
    res = runner.invoke(app, ["train", "stage3", "--set", "stage3.group_size=0"])
    assert res.exit_code == 2 and "stage3.group_size" in res.output
    # and a synth run renders what the override asks for
    res = runner.invoke(app, ["synth", "--out", "syn", "--set", "synth.identities=3", "--set", "synth.scenes=4",
                              "--set", "synth.bench_identities=1", "--set", "synth.bench_scenes=2", "--set", "synth.workers=2",
                              "--set", "synth.scenes_per_identity=1", "--set", "synth.clips_per_scene=1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "syn" / "synth.json").read_text())["clips"] == 2 * 1 + 1 * 2
    # the output is not a terminal: the progress comes as plain lines, the last one at the end
    assert "synth: 4/4 in" in res.output
