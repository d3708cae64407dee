"""Pretraining: its data shares no person or scene with the default's, it resumes exactly after a
SIGKILL, and its card's hashes name the files it wrote."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tavr.config import load_config, to_dict
from tavr.data import synth
from tavr.pipeline import TAVRPipeline
from tavr.files import sha256

ROOT = Path(__file__).resolve().parents[2]


def test_pretraining_people_and_scenes_are_disjoint_from_the_default():
    default, pre = load_config(ROOT / "params.yaml").synth, load_config(ROOT / "params.yaml").pretrain.synth
    assert pre.seed != default.seed and pre.bench_identities == 0
    people = {json.dumps(synth.identity(default, i).attributes(), sort_keys=True) for i in range(default.identities)}
    ours = [json.dumps(synth.identity(pre, i).attributes(), sort_keys=True) for i in range(pre.identities)]
    assert len(set(ours)) == pre.identities and not people & set(ours)
    scenes = {json.dumps(synth.scene(default, j).attributes(), sort_keys=True) for j in range(default.scenes)}
    assert not scenes & {json.dumps(synth.scene(pre, j).attributes(), sort_keys=True) for j in range(pre.scenes)}
    # the check has teeth: the same seed gives the same people
    assert json.dumps(synth.identity(default, 3).attributes(), sort_keys=True) in people


def _params(tmp: Path, cache: Path, clips: Path, name: str) -> Path:
    run = {"steps": 4, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1, "tracker": "none"}
    pretrain = {
        "synth": {"identities": 3, "scenes": 4, "scenes_per_identity": 2, "clips_per_scene": 1, "workers": 2},
        "train": {"run": run, "vae": str(cache / "codec"), "out": str(tmp / name / "base"), "run_dir": str(tmp / name / "run")},
        "data": str(tmp / "data"), "bench_pairs": str(clips.parent.parent / "bench_pairs.json"),
        "eval_every": 2, "eval_pairs": 1, "eval_steps": 1, "eval_frames": 5,
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"pretrain": pretrain, "ingest": {"workers": 2}, "latents": {"batch": 4}}))
    return path


def test_pretrain_resumes_exactly_after_sigkill_and_its_card_names_its_files(cache, clips, tmp_path, kill_at_first_checkpoint):
    cmd = [sys.executable, "-m", "tavr.train.pretrain", "--params"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    whole = _params(tmp_path, cache, clips, "whole")
    subprocess.run([*cmd, str(whole)], check=True, capture_output=True, env=env, timeout=600)

    killed = _params(tmp_path, cache, clips, "killed")
    proc = subprocess.Popen([*cmd, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    kill_at_first_checkpoint(proc, tmp_path / "killed" / "run" / "checkpoints", timeout=300)
    assert not (tmp_path / "killed" / "base" / "card.json").exists()
    # an unfinished run exports its newest checkpoint's EMA weights, with a card that says so
    subprocess.run([*cmd, str(killed), "--export"], check=True, capture_output=True, env=env, timeout=300)
    part = tmp_path / "killed" / "base"
    early = json.loads((part / "card.json").read_text())
    assert (early["finished"], early["steps"], early["planned_steps"]) == (False, 2, 4)
    ema = load_file(str(Path(early["exported_from"]) / "ema.safetensors"))
    exported = load_file(str(part / "transformer/model.safetensors"))
    assert ema and all(torch.equal(exported[k], v) for k, v in ema.items())
    assert all(sha256(part / f) == h for f, h in early["sha256"].items())
    subprocess.run([*cmd, str(killed)], check=True, capture_output=True, env=env, timeout=600)

    a = load_file(str(tmp_path / "whole/base/transformer/model.safetensors"))
    b = load_file(str(tmp_path / "killed/base/transformer/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    curve = [json.loads(line) for line in (tmp_path / "killed/run/curve.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [0, 2, 4] and [p["samples"] for p in curve] == [0, 4, 8]
    assert set(curve[-1]["eval"]) == {"bench", "bench_wrong_ref", "pretrain"}
    assert (tmp_path / "killed/run/curve.png").is_file()
    resume = json.loads((tmp_path / "killed/run/checkpoint_card.json").read_text())
    ckpt = tmp_path / "killed/run/checkpoints" / resume["checkpoint"]
    assert resume["step"] == 4 and set(resume["sha256"]) >= {"model.safetensors", "ema.safetensors", "optimizer.safetensors"}
    assert all(sha256(ckpt / f) == h for f, h in resume["sha256"].items())

    out = tmp_path / "whole" / "base"
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 4 and card["samples_seen"] == 8 and card["data"]["synth_seed"] == 1 and card["finished"]
    assert set(card["sha256"]) == {"transformer/model.safetensors", "vae/model.safetensors"}
    assert all(sha256(out / f) == h for f, h in card["sha256"].items())
    assert "sha256" in (out / "MODEL_CARD.md").read_text()
    TAVRPipeline.from_pretrained(out)
    # a second run on a finished folder refuses to start over
    res = subprocess.run([*cmd, str(whole), "--resume", "never"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode != 0 and "holds a pretraining run" in res.stderr
    # a clone that has the finished base but not its checkpoints trains nothing; other params are refused
    shutil.rmtree(tmp_path / "whole" / "run" / "checkpoints")
    res = subprocess.run([*cmd, str(whole)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "nothing to train" in res.stdout
    assert json.loads((out / "card.json").read_text()) == card
    longer = yaml.safe_load(whole.read_text())
    longer["pretrain"]["train"]["run"]["steps"] = 6  # longer, without the checkpoint it would continue from
    whole.write_text(yaml.safe_dump(longer))
    res = subprocess.run([*cmd, str(whole)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode != 0 and "retrain over the base" in res.stderr
    longer["pretrain"]["train"]["run"].update(steps=4, lr=1e-3)
    whole.write_text(yaml.safe_dump(longer))
    res = subprocess.run([*cmd, str(whole)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode != 0 and "finished base of other params" in res.stderr
    # the killed run's folder still holds an older checkpoint than its finished base: nothing to train either
    older = sorted((tmp_path / "killed" / "run" / "checkpoints").glob("step_*"))
    shutil.rmtree(older[-1])
    res = subprocess.run([*cmd, str(killed)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "nothing to train" in res.stdout


def test_a_run_without_a_curve_is_scored_afterwards_into_its_card(cache, clips, tmp_path):
    from tavr.train.pretrain import pretrain, score

    path = _params(tmp_path, cache, clips, "nocurve")
    raw = yaml.safe_load(path.read_text())
    raw["pretrain"]["eval_every"] = 0  # a GPU machine without the scorers
    raw["pretrain"]["train"]["run"]["steps"] = 2
    path.write_text(yaml.safe_dump(raw))
    root = load_config(path)
    card = pretrain(root, progress=False)
    out = tmp_path / "nocurve" / "base"
    assert card["finished"] and card["curve"] == [] and not (tmp_path / "nocurve/run/curve.jsonl").exists()
    scored = score(root)
    assert [p["step"] for p in scored["curve"]] == [2] and scored["curve"][0]["scored_after_training"]
    assert set(scored["curve"][0]["eval"]) == {"bench", "bench_wrong_ref", "pretrain"}
    assert {k: v for k, v in scored.items() if k != "curve"} == {k: v for k, v in card.items() if k != "curve"}
    assert json.loads((out / "card.json").read_text()) == scored and "bench faces" in (out / "MODEL_CARD.md").read_text()
    assert score(root)["curve"] == scored["curve"]  # scoring again replaces the point, it does not add one


@pytest.mark.skipif(not (ROOT / "models/base/card.json").is_file(), reason="no base shipped yet (make pretrain writes it)")
def test_the_shipped_base_matches_its_card_and_loads():
    base = ROOT / "models" / "base"
    card = json.loads((base / "card.json").read_text())
    assert card["sha256"] and all(sha256(base / f) == h for f, h in card["sha256"].items())
    pipe = TAVRPipeline.from_pretrained(base)
    assert to_dict(pipe.transformer.config) == card["params"]["model"]
