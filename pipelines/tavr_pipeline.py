"""The TAVR pipeline: which components run, in what order, on what hardware. Pure wiring: every
step's work is in components/ (and under it, tavr.steps).

    params (each step's own sections) -> ingest -> qa -> codec -> latents -> stage1 -> stage2 -> stage3 ---------> bench(tavr) ----------.
                                    \\-> image_stage1 -> 2 -> 3 -> bench(image_raw), bench(adapted) -> report
    report -> gate -> export -> [gate passed] deploy

Settings come from the `kubeflow` section of params.yaml (components.image.KUBEFLOW): GPUs for
training steps, retries, caching, and a PVC for checkpoints that outlive a pod.
"""

import json
from typing import NamedTuple

import yaml
from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Model

import components as c
from components.image import KUBEFLOW, PARAMS_PATH
from tavr.config import KubeflowConfig

# the params as one line of JSON (YAML reads it): kfp copies a default into comments of the
# compiled file, where a multi-line one would break the YAML
PARAMS = json.dumps(yaml.safe_load(PARAMS_PATH.read_text()) if PARAMS_PATH.is_file() else {})
Outputs = NamedTuple("Outputs", [("decision", Artifact), ("exported", Model), ("report", Dataset)])
RUNS_MOUNT = "/runs"


def build(kf: KubeflowConfig = KUBEFLOW):
    """The pipeline with the settings of `kf` (kfp traces a pipeline when it is defined, so
    settings are bound here, not read later)."""

    def _step(task, name: str, training: bool = False):
        """Display name, caching and retries for every step; GPUs and the checkpoint volume for training."""
        task.set_display_name(name).set_caching_options(kf.caching)
        if kf.retries:
            task.set_retry(kf.retries, backoff_duration="30s")
        if training and kf.accelerator_limit > 0:
            task.set_accelerator_type(kf.accelerator_type).set_accelerator_limit(kf.accelerator_limit)
        if training and kf.runs_pvc:
            kubernetes.mount_pvc(task, pvc_name=kf.runs_pvc, mount_path=RUNS_MOUNT)
        return task

    def _model_chain(params, runs: str, prefix: str, latents, vae, clips):
        """Stages 1-3 for the model named by `prefix` ("" = TAVR, "image_" = the image-reference baseline);
        `params`: the split step's outputs, each stage's own sections."""
        s1 = _step(c.train_stage(params=params[f"{prefix}stage1"], section=f"{prefix}stage1", runs=runs, latents=latents,
                                 vae=vae, clips=clips), f"{prefix}stage1", training=True)  # fmt: skip
        s2 = _step(c.train_stage(params=params[f"{prefix}stage2"], section=f"{prefix}stage2", runs=runs, latents=latents,
                                 vae=vae, clips=clips, previous=s1.outputs["model"]), f"{prefix}stage2", training=True)  # fmt: skip
        s3 = _step(c.rl_stage(params=params[f"{prefix}stage3"], section=f"{prefix}stage3", runs=runs, latents=latents,
                              clips=clips, previous=s2.outputs["model"]), f"{prefix}stage3", training=True)  # fmt: skip
        return s1.outputs["model"], s2.outputs["model"], s3.outputs["model"]

    @dsl.pipeline(name="tavr", description="TAVR: data to a deployed talking-avatar model, gated by the cross-scene benchmark.")
    def tavr_pipeline(params: str = PARAMS, sources: str = kf.sources, repo: str = kf.repo,
                      remote: str = kf.dvc_remote, production: str = "", storage_uri: str = "",
                      deploy_dry_run: bool = True) -> Outputs:  # fmt: skip
        runs = RUNS_MOUNT if kf.runs_pvc else ""
        p = _step(c.split_params(params=params), "params").outputs  # each step's own sections: its cache key
        ingest = _step(c.ingest(params=p["ingest"], sources=sources, repo=repo, remote=remote), "ingest")
        clips = ingest.outputs["clips"]
        qa = _step(c.qa(params=p["qa"], clips=clips), "QA gate")
        codec = _step(c.codec(params=p["codec"], clips=clips).after(qa), "codec")
        latents = _step(c.latents(params=p["latents"], clips=clips, vae=codec.outputs["model"]), "latents", training=True)
        cache, vae_model = latents.outputs["cache"], codec.outputs["model"]

        tavr_s1, tavr_s2, tavr = _model_chain(p, runs, "", cache, vae_model, clips)
        _, _, image = _model_chain(p, runs, "image_", cache, vae_model, clips)
        results = {}
        methods = (  # (name, protocol, model, keep_ratio (0 = the model's), reference audio): as in dvc.yaml's bench stages
            ("tavr", "video", tavr, 0.0, True), ("image_raw", "raw", image, 0.0, True), ("image_adapted", "adapted", image, 0.0, True),
            ("tavr_stage1", "video", tavr_s1, 0.0, True), ("tavr_stage2", "video", tavr_s2, 0.0, True),
            ("tavr_keep025", "video", tavr, 0.25, True), ("tavr_no_ref_audio", "video", tavr, 0.0, False),
            ("tavr_wrong_ref", "wrong_ref", tavr, 0.0, True),
        )  # fmt: skip
        for method, protocol, model, keep, audio in methods:
            task = c.bench(params=p["bench"], method=method, protocol=protocol, model=model, clips=clips, keep_ratio=keep,
                           reference_audio=audio)  # fmt: skip
            results[method] = _step(task, f"bench {method}").outputs["results"]
        results["upper_bound"] = _step(c.upper_bound(params=p["bench"], clips=clips), "upper bound").outputs["results"]
        report = _step(c.report(params=p["report"], clips=clips, **results), "report")
        gate = _step(c.gate(params=p["gate"], production=production, report=report.outputs["folder"]), "deployment gate")
        export = _step(c.export(decision=gate.outputs["decision"], model=tavr), "export")
        with dsl.If(gate.outputs["passed"] == True, name="gate-passed"):  # noqa: E712 (kfp builds a condition from ==)
            _step(c.deploy(params=p["deploy"], storage_uri=storage_uri, dry_run=deploy_dry_run, exported=export.outputs["exported"]),
                  "deploy")  # fmt: skip
        return Outputs(decision=gate.outputs["decision"], exported=export.outputs["exported"], report=report.outputs["folder"])

    return tavr_pipeline


tavr_pipeline = build()
