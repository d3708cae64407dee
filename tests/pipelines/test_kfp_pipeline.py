"""The pipeline: its compiled IR holds every step, the gate condition and the cluster settings;
a whole local run (kfp.local, every step a subprocess) ends with the gate's decision and the export."""

import dataclasses
import json

import yaml

from kfp import compiler

from pipelines import compile as compile_cli
from pipelines import run as run_cli
from pipelines import tavr_pipeline

STEPS = ["ingest", "qa", "codec", "latents", "train-stage", "rl-stage", "bench", "report", "gate", "export", "deploy"]


def _compile(tmp_path, **kubeflow):
    out = tmp_path / "tavr.yaml"
    compiler.Compiler().compile(tavr_pipeline.build(dataclasses.replace(tavr_pipeline.KUBEFLOW, **kubeflow)), str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def test_the_compiled_pipeline_holds_every_step_and_the_gate_condition(tmp_path):
    ir, platform = _compile(tmp_path, accelerator_limit=1, runs_pvc="tavr-runs", retries=2, caching=True)
    assert {f"comp-{s}" for s in STEPS} <= set(ir["components"])
    tasks = ir["root"]["dag"]["tasks"]
    names = sorted(t["taskInfo"]["name"] for t in tasks.values())
    for shown in ("ingest", "QA gate", "stage1", "stage2", "stage3", "image_stage1", "image_stage2", "image_stage3",
                  "bench tavr", "bench image_raw", "bench image_adapted", "report", "deployment gate", "export"):
        assert shown in names, shown
    condition = next(t for t in tasks.values() if "triggerPolicy" in t)
    assert "passed" in condition["triggerPolicy"]["condition"]
    inner = ir["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert [t["componentRef"]["name"] for t in inner.values()] == ["comp-deploy"]  # deploy only when the gate passes
    executors = ir["deploymentSpec"]["executors"]
    trained = [t for t in tasks.values() if t["taskInfo"]["name"] in ("latents", "stage1", "image_stage3")]
    for t in trained:
        resources = executors[t["componentRef"]["name"].replace("comp-", "exec-")]["container"]["resources"]
        assert resources["accelerator"]["resourceCount"] == "1" and resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert t["retryPolicy"]["maxRetryCount"] == 2 and t["cachingOptions"]["enableCache"] is True
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert any(m["pvcMount"][0]["constant"] == "tavr-runs" for m in mounts.values())
    # on CPU, training steps ask for no accelerator and no volume
    ir, platform = _compile(tmp_path, accelerator_limit=0, runs_pvc="")
    assert not any("accelerator" in e["container"].get("resources", {}) for e in ir["deploymentSpec"]["executors"].values())
    assert not platform
    compile_cli.main(["--out", str(tmp_path / "cli.yaml")])  # the command writes the same kind of file
    assert yaml.safe_load(open(tmp_path / "cli.yaml"))["pipelineInfo"]["name"] == "tavr"


def test_a_local_run_ends_with_the_decision_and_the_export(tiny_params, tmp_path, monkeypatch, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(tiny_params)
    assert run_cli.main(["--local", "--params", str(params), "--root", str(tmp_path / "out"), "--no-cache"]) == 0
    paths = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if line.split(": ")[0] in
                 ("decision", "exported", "report"))  # fmt: skip
    decision = json.loads(open(paths["decision"]).read())
    assert decision["pass"] is False and any("id_top1" in r for r in decision["reasons"])
    assert json.loads(open(f"{paths['exported']}/export.json").read())["exported"] is False
    summary = json.loads(open(f"{paths['report']}/summary.json").read())
    assert set(summary["methods"]) == {"tavr", "image_raw", "image_adapted", "tavr_stage1", "tavr_stage2", "tavr_keep025",
                                       "tavr_no_ref_audio", "tavr_wrong_ref", "upper_bound"}
