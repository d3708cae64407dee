"""Every component's function (`.python_func`) on tiny params, chained as the pipeline chains them:
the same artifacts flow from ingest to the deploy step's InferenceService."""

import json

import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

import components as c
from tavr import steps
from tavr.pipeline import TAVRPipeline


def _art(kind, tmp, name):
    return kind(name=name, uri=str(tmp / name), metadata={})


@pytest.fixture(scope="module")
def chain(tiny_params, tmp_path_factory):
    """Run every step once, each on its own slice of the params as the pipeline passes them (a step that
    reads a section it is not given fails); returns {artifact name: artifact}."""
    tmp = tmp_path_factory.mktemp("steps")
    a = {}
    p = steps.split_params(tiny_params)

    def out(kind, name):
        a[name] = _art(kind, tmp, name)
        return a[name]

    c.ingest.python_func(params=p["ingest"], sources="synth", repo=str(tmp), remote="", clips=out(Dataset, "clips"),
                         metrics=out(Metrics, "ingest_metrics"))  # fmt: skip
    c.qa.python_func(params=p["qa"], clips=a["clips"], report=out(HTML, "qa_report"), metrics=out(Metrics, "qa_metrics"))
    c.codec.python_func(params=p["codec"], clips=a["clips"], model=out(Model, "vae"), metrics=out(Metrics, "codec_metrics"))
    c.latents.python_func(params=p["latents"], clips=a["clips"], vae=a["vae"], cache=out(Dataset, "cache"),
                          metrics=out(Metrics, "latents_metrics"))  # fmt: skip
    for prefix in ("", "image_"):
        c.train_stage.python_func(params=p[f"{prefix}stage1"], section=f"{prefix}stage1", runs="", latents=a["cache"], vae=a["vae"],
                                  clips=a["clips"], model=out(Model, f"{prefix}s1"), metrics=out(Metrics, f"{prefix}s1_m"))  # fmt: skip
        c.train_stage.python_func(params=p[f"{prefix}stage2"], section=f"{prefix}stage2", runs="", latents=a["cache"], vae=a["vae"],
                                  clips=a["clips"], model=out(Model, f"{prefix}s2"), metrics=out(Metrics, f"{prefix}s2_m"),
                                  previous=a[f"{prefix}s1"])  # fmt: skip
        c.rl_stage.python_func(params=p[f"{prefix}stage3"], section=f"{prefix}stage3", runs="", latents=a["cache"], clips=a["clips"],
                               previous=a[f"{prefix}s2"], model=out(Model, f"{prefix}s3"), metrics=out(Metrics, f"{prefix}s3_m"))  # fmt: skip
    methods = (("tavr", "video", "s3", 0.0, True), ("image_raw", "raw", "image_s3", 0.0, True),
               ("image_adapted", "adapted", "image_s3", 0.0, True), ("tavr_stage1", "video", "s1", 0.0, True),
               ("tavr_stage2", "video", "s2", 0.0, True), ("tavr_keep025", "video", "s3", 0.25, True),
               ("tavr_no_ref_audio", "video", "s3", 0.0, False), ("tavr_wrong_ref", "wrong_ref", "s3", 0.0, True))  # fmt: skip
    for method, protocol, model, keep, audio in methods:
        c.bench.python_func(params=p["bench"], method=method, protocol=protocol, model=a[model], clips=a["clips"],
                            results=out(Dataset, f"bench_{method}"), metrics=out(Metrics, f"bench_{method}_m"),
                            keep_ratio=keep, reference_audio=audio)  # fmt: skip
    c.upper_bound.python_func(params=p["bench"], clips=a["clips"], results=out(Dataset, "bench_upper_bound"),
                              metrics=out(Metrics, "bench_upper_bound_m"))  # fmt: skip
    c.report.python_func(params=p["report"], tavr=a["bench_tavr"], image_raw=a["bench_image_raw"],
                         image_adapted=a["bench_image_adapted"], tavr_stage1=a["bench_tavr_stage1"],
                         tavr_stage2=a["bench_tavr_stage2"], tavr_keep025=a["bench_tavr_keep025"],
                         tavr_no_ref_audio=a["bench_tavr_no_ref_audio"], tavr_wrong_ref=a["bench_tavr_wrong_ref"],
                         upper_bound=a["bench_upper_bound"], clips=a["clips"], folder=out(Dataset, "report"),
                         page=out(HTML, "page"), metrics=out(Metrics, "report_m"))  # fmt: skip
    a["passed"] = c.gate.python_func(params=p["gate"], production="", report=a["report"], decision=out(Artifact, "decision"),
                                     metrics=out(Metrics, "gate_m")).passed  # fmt: skip
    c.export.python_func(decision=a["decision"], model=a["s3"], exported=out(Model, "exported"))
    return a


def test_data_steps_write_clips_pairs_and_a_qa_page(chain):
    clips = chain["clips"].path
    pairs = json.loads(open(f"{clips}/bench_pairs.json").read())
    assert pairs["count"] == 2 and chain["ingest_metrics"].metadata["clips"] == 6
    assert "<html" in open(chain["qa_report"].path).read().lower()
    assert chain["qa_metrics"].metadata["clips"] == 6


def test_training_steps_chain_through_their_artifacts(chain):
    for name in ("s1", "s2", "s3", "image_s1", "image_s2", "image_s3"):
        pipe = TAVRPipeline.from_pretrained(chain[name].path)
        assert pipe.config.reference_frames == (1 if name.startswith("image") else 9), name
    assert chain["s2_m"].metadata["steps"] == 2 and chain["s3_m"].metadata["steps"] == 1
    assert chain["latents_metrics"].metadata["windows"] == 30  # 6 clips x five 9-frame windows


def test_evaluation_steps_report_decide_and_export(chain):
    summary = json.loads(open(f"{chain['report'].path}/summary.json").read())
    assert list(summary["methods"]) == ["tavr", "image_raw", "image_adapted", "tavr_stage1", "tavr_stage2", "tavr_keep025",
                                        "tavr_no_ref_audio", "tavr_wrong_ref", "upper_bound"] and summary["pairs"] == 2
    claims = open(f"{chain['report'].path}/claims.md").read()
    assert "| a video reference beats a raw reference image | tavr - image_raw | id_top1 |" in claims
    assert all(not r["verdict"].startswith("not run") for r in summary["claims"])  # every claim's methods ran
    assert summary["methods"]["upper_bound"]["face_rate"] == 1.0  # the targets themselves
    page = open(chain["page"].path).read()
    assert "data:image/png;base64," in page and "src='plots/" not in page  # one self-contained file for the UI
    decision = json.loads(open(chain["decision"].path).read())
    assert decision["pass"] is chain["passed"] is False  # untrained models: no face, identity 0
    assert chain["gate_m"].metadata["pass"] == 0.0
    export = json.loads(open(f"{chain['exported'].path}/export.json").read())
    assert export["exported"] is False and export["reasons"] == decision["reasons"]


def test_deploy_dry_run_writes_the_inference_service(chain, tiny_params, tmp_path):
    service = _art(Artifact, tmp_path, "service")
    action = c.deploy.python_func(params=steps.split_params(tiny_params)["deploy"], storage_uri="", dry_run=True, exported=chain["s3"], service=service)
    body = json.loads(open(service.path).read())
    assert action == "dry-run" and body["kind"] == "InferenceService"
    assert body["spec"]["predictor"]["containers"][0]["env"] == [{"name": "STORAGE_URI", "value": chain["s3"].uri}]
    assert body["spec"]["predictor"]["containers"][0]["args"][:3] == ["serve", "--model-dir", "/mnt/models"]


class LocalTrainer:
    """A Trainer API server whose 'cluster' is this machine: a created TrainJob runs its command
    here (one process instead of torchrun on several nodes) and is Complete when that succeeds."""

    def __init__(self):
        self.jobs = {}

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        import subprocess
        import sys

        trainer = body["spec"]["trainer"]
        assert trainer["command"][:2] == ["torchrun", "-m"] and trainer["numNodes"] == 2
        res = subprocess.run([sys.executable, "-m", trainer["command"][2], *trainer["args"]], capture_output=True, text=True,
                             env={**__import__("os").environ, "WANDB_MODE": "disabled"})  # fmt: skip
        ok = res.returncode == 0
        self.jobs[body["metadata"]["name"]] = {"type": "Complete" if ok else "Failed", "status": "True", "message": res.stderr[-2000:]}

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": {"conditions": [self.jobs[name]]}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.jobs.pop(name)


def test_a_stage_past_one_node_runs_from_the_runs_volume_as_a_trainjob(chain, tiny_params, tmp_path):
    import yaml

    from tavr import steps

    params = yaml.safe_load(tiny_params)
    params["kubeflow"] = {**params["kubeflow"], "trainer_nodes": 2, "runs_pvc": "tavr-runs"}
    text, runs, out = yaml.safe_dump(params), tmp_path / "runs", tmp_path / "model"
    api = LocalTrainer()
    inputs = {"cache": chain["cache"].path, "vae": chain["vae"].path, "init": chain["s1"].path, "clips": chain["clips"].path}
    metrics = steps.on_trainer(text, "stage2", "stage1", inputs, str(out), str(runs), api=api)
    assert metrics["steps"] == 2 and list(api.jobs.values())[0]["type"] == "Complete"
    staged = yaml.safe_load((runs / "stage2-job" / "params.yaml").read_text())["stage2"]
    assert staged["init"] == str(runs / "stage2-job/inputs/init") and staged["run"]["steps"] == 2  # the rest of the section kept
    assert TAVRPipeline.from_pretrained(out).config.chunk_frames == 9
