"""The pipeline: its compiled IR holds every step, the gate condition and the cluster settings;
a whole local run (kfp.local, every step a subprocess) ends with the gate's decision and the export."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler

import components as c
from pipelines import compile as compile_cli
from pipelines import run as run_cli
from pipelines import tavr_pipeline
from tavr import steps

ROOT = Path(__file__).resolve().parents[2]

STEPS = ["split-params", "ingest", "qa", "codec", "latents", "train-stage", "rl-stage", "bench", "report", "gate", "export", "deploy"]


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


def test_a_step_takes_only_its_own_sections_so_editing_serve_port_keeps_every_training_cache_key(tmp_path):
    """kfp's cache key of a task is its component and its inputs. Every task takes `params` from the split
    step's output for its own step, and editing serve.port changes only the deploy step's slice."""
    outputs = set(c.split_params.component_spec.outputs)
    assert outputs == set(steps.STEP_SECTIONS)  # the component's outputs are the steps the split knows
    ir, _ = _compile(tmp_path)
    sources = {}  # task name -> the split output its params come from
    for task in ir["root"]["dag"]["tasks"].values():
        given = task.get("inputs", {}).get("parameters", {})
        if "params" in given and task["taskInfo"]["name"] != "params":  # the split step itself takes the whole text
            sources[task["taskInfo"]["name"]] = given["params"]["taskOutputParameter"]
        if "triggerPolicy" in task:  # deploy, inside the gate's condition, gets its slice through the condition
            inner = ir["components"][task["componentRef"]["name"]]["dag"]["tasks"].values()
            channel = next(t["inputs"]["parameters"]["params"]["componentInputParameter"] for t in inner)
            sources["deploy"] = given[channel]["taskOutputParameter"]
    assert {"ingest", "latents", *steps.TRAINING, "bench tavr", "deployment gate", "deploy"} <= set(sources)
    for name, source in sources.items():
        assert source["producerTask"] == "split-params" and source["outputParameterKey"] in steps.STEP_SECTIONS, name
    assert {sources[name]["outputParameterKey"] for name in steps.TRAINING} == set(steps.TRAINING)
    assert sources["deploy"]["outputParameterKey"] == "deploy"
    text = (ROOT / "params.yaml").read_text()
    edited = yaml.safe_load(text)
    serve = edited.setdefault("serve", {}) or {}
    edited["serve"] = {**serve, "port": int(serve.get("port", 8080)) + 1}
    before, after = steps.split_params(text), steps.split_params(yaml.safe_dump(edited))
    assert [k for k in before if before[k] != after[k]] == ["deploy"]
    for name in steps.TRAINING:
        assert before[name] == after[name]
    # a training key changes its stage's slice, and the image baseline's that merges it (the file's YAML anchor)
    edited["stage2"]["run"]["lr"] = 1e-5
    changed = [k for k, v in steps.split_params(yaml.safe_dump(edited)).items() if v != before[k]]
    assert changed == ["stage2", "image_stage2", "deploy"]


def test_a_step_that_reads_a_section_it_was_not_given_says_which():
    cfg = steps.config(steps.split_params("stage1: {run: {steps: 7}}\n")["stage1"])
    assert cfg.stage1.run.steps == 7 and cfg.latents.window_frames == 9
    with pytest.raises(AttributeError, match="not 'serve'.*STEP_SECTIONS"):
        cfg.serve.port
