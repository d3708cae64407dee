"""The pipeline's steps on explicit folders: what each Kubeflow component calls.

DVC runs every stage in the repository layout (data/, models/, reports/). A Kubeflow component
gets one folder per input and output artifact instead. Each function here takes the text of a
params file and those folders, points the stage's config section at them, and calls the same
library function its DVC stage calls; it returns the step's numbers for kfp's Metrics.

Artifact layouts:
    clips     ingest's output: clips, manifest.parquet, quarantine.jsonl and bench_pairs.json
    codec     models/codec (the fitted patch codec)    latents   data/latents
    model     a pipeline folder (TAVRPipeline)          bench     <method>/ results of `tavr bench`
`runs` is where training checkpoints go: a folder that outlives the pod (a PVC on a cluster)
makes a retried step resume where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tavr.config import TAVRConfig, build_config, to_dict

PAIRS = "bench_pairs.json"


TRAINING = ("stage1", "stage2", "stage3", "image_stage1", "image_stage2", "image_stage3")
# The params sections each step reads (`preset` goes to every step: it sets every section's defaults).
# A kfp task gets only its step's sections (split_params), so its cache key changes only when they do:
# editing serve.port re-runs the deploy step alone. A step that reads a section it was not given fails.
STEP_SECTIONS: dict[str, tuple[str, ...]] = {
    "ingest": ("synth", "ingest"),
    "qa": ("qa",),
    "codec": ("codec",),
    "latents": ("latents", "generate", "model"),
    **{name: (name, "model", "generate", "latents", "kubeflow") for name in TRAINING},
    "bench": ("bench",),
    "report": ("bench",),
    "gate": ("gate",),
    "deploy": ("kubeflow", "serve"),
}
GIVEN = "_sections"  # the key of a split params text that names the sections it holds


class _Absent:
    """Stands in for a section a step was not given: any read says which and where to add it."""

    def __init__(self, name: str, step_sections: list[str]):
        self._name, self._given = name, step_sections

    def __getattr__(self, attr: str):
        raise AttributeError(f"this step was given the params sections {self._given}, not {self._name!r} (read "
                             f"{self._name}.{attr}): add it to the step's tavr.steps.STEP_SECTIONS")  # fmt: skip


def split_params(params: str) -> dict[str, str]:
    """A params file's text -> {step: JSON of only the sections STEP_SECTIONS gives it, plus `preset`
    and the list of what it holds}. Sections absent from the file are absent from the slice too (their
    defaults apply, as in the whole file)."""
    data = yaml.safe_load(params) or {}
    out = {}
    for step, names in STEP_SECTIONS.items():
        keep = ["preset", *names]
        out[step] = json.dumps({**{k: data[k] for k in keep if k in data}, GIVEN: keep}, sort_keys=True)
    return out


def config(params: str) -> TAVRConfig:
    """The config tree from a params file's text ("" = defaults), or from one step's slice of it
    (split_params), whose other sections raise when read."""
    data = yaml.safe_load(params) or {}
    given = data.pop(GIVEN, None)
    cfg = build_config(data)
    if given is None:
        return cfg
    absent = {f.name: _Absent(f.name, given) for f in dataclasses.fields(cfg) if f.name not in given}
    return dataclasses.replace(cfg, **absent)


def _numbers(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def pull(repo: str | Path, target: str, remote: str = "") -> Path:
    """`dvc pull` one tracked path of a DVC repository (its default remote, or `remote`)."""
    cmd = [sys.executable, "-m", "dvc", "pull", target] + (["--remote", remote] if remote else [])
    subprocess.run(cmd, cwd=repo, check=True)
    return Path(repo) / target


def ingest(params: str, out: str, sources: str = "synth", repo: str = ".", remote: str = "") -> dict:
    """TAVR-Synth ("synth"), folders of videos, and/or "dvc:<path>" (pulled from the repository's
    remote first), comma-separated -> clips + bench pairs in `out`."""
    from tavr.data import synth
    from tavr.data.ingest import ingest as run_ingest
    from tavr.data.pairs import make_pairs, write_pairs

    cfg = config(params)
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for src in [s.strip() for s in sources.split(",") if s.strip()]:
            if src == "synth":
                synth.generate(cfg.synth, Path(tmp) / "synth")
                folders.append(Path(tmp) / "synth")
            elif src.startswith("dvc:"):
                folders.append(pull(repo, src[4:], remote))
            else:
                folders.append(Path(src))
        if not folders:
            raise ValueError(f"no sources given ({sources!r}): use synth, a folder, or dvc:<path>")
        summary = run_ingest(folders, out, cfg.ingest)
    if summary["clips"] == 0:
        raise ValueError(f"no usable clips in {sources}; reasons are in {out}/quarantine.jsonl")
    import pandas as pd

    pairs = make_pairs(pd.read_parquet(Path(out) / "manifest.parquet"), cfg.ingest.bench_pairs, cfg.ingest.pairs_seed)
    write_pairs(Path(out) / PAIRS, pairs, out)
    return {"clips": summary["clips"], "quarantined": summary["quarantined"], "bench_pairs": len(pairs)}


def qa(params: str, clips: str, report: str) -> dict:
    """The great-expectations gate over the manifest; raises when it fails (the pipeline stops)."""
    from tavr.data.qa import format_failures, run_qa

    result = run_qa(Path(clips) / "manifest.parquet", config(params).qa, report)
    if not result.success:
        raise ValueError(f"QA failed:\n{format_failures(result)}")
    return {"expectations": len(result.results), "clips": result.n_clips}


def codec(params: str, clips: str, out: str) -> dict:
    """Stage 0: the patch codec fitted on the clips' train split (closed form: no checkpoints)."""
    from tavr.train import stage0_codec

    cfg = dataclasses.replace(config(params).codec, manifest=str(Path(clips) / "manifest.parquet"), out=out)
    return _numbers(stage0_codec.fit(cfg))


def latents(params: str, clips: str, vae_dir: str, out: str) -> dict:
    from tavr.train.latents import encode_cache

    root = config(params)
    cfg = dataclasses.replace(root.latents, vae=vae_dir, manifest=str(Path(clips) / "manifest.parquet"), out=out)
    return _numbers(encode_cache(cfg, root.generate, progress=False))


def _heldout(cfg, clips: str):
    return dataclasses.replace(cfg.heldout, pairs=str(Path(clips) / PAIRS))


def flow_stage(params: str, section: str, latents_dir: str, vae_dir: str, clips: str, out: str, runs: str,
               init: str = "") -> dict:  # fmt: skip
    """Stage 1 or 2 (or the image baseline's `image_stage1`/`image_stage2`): `init` is the previous stage;
    without one, the section's own `init` (stage 1: the shipped base, models/base, which the image holds)."""
    from tavr.train import stage1

    root = config(params)
    init = init or getattr(root, section).init
    if root.kubeflow.trainer_nodes > 1:
        inputs = {"cache": latents_dir, "vae": vae_dir, "init": init, "clips": clips}
        return on_trainer(params, section, "stage1", inputs, out, runs)
    cfg = getattr(root, section)
    cfg = dataclasses.replace(cfg, cache=latents_dir, vae=vae_dir, out=out, run_dir=str(Path(runs) / section),
                              init=init, heldout=_heldout(cfg, clips))  # fmt: skip
    return _numbers(stage1.train(cfg, root, {section: to_dict(cfg), "model": to_dict(root.model)}))


def rl_stage(params: str, section: str, latents_dir: str, clips: str, init: str, out: str, runs: str) -> dict:
    """Stage 3 (or `image_stage3`) from the stage-2 pipeline folder `init`."""
    from tavr.train import stage3_rl

    root = config(params)
    if root.kubeflow.trainer_nodes > 1:
        return on_trainer(params, section, "stage3_rl", {"cache": latents_dir, "init": init, "clips": clips}, out, runs)
    cfg = getattr(root, section)
    cfg = dataclasses.replace(cfg, init=init, cache=latents_dir, manifest=str(Path(clips) / "manifest.parquet"), out=out,
                              run_dir=str(Path(runs) / section), heldout=_heldout(cfg, clips))  # fmt: skip
    config_dict = {section: to_dict(cfg), "latents": to_dict(root.latents), "generate": to_dict(root.generate)}
    return _numbers(stage3_rl.train(cfg, root, config_dict))


def on_trainer(params: str, section: str, module: str, inputs: dict[str, str], out: str, runs: str, api=None) -> dict:
    """Run a training section on `kubeflow.trainer_nodes` nodes as a Kubeflow Trainer job
    (tavr.train.trainjob): its inputs are copied to the runs volume, which the trainer pods mount
    too, a params file there points the section at them, and the finished model is copied to `out`.
    `api` is the cluster's CustomObjectsApi (None = the in-cluster one)."""
    import uuid

    from tavr.train import trainjob

    kf = config(params).kubeflow
    if not kf.runs_pvc or not runs:
        raise ValueError("kubeflow.trainer_nodes > 1 needs kubeflow.runs_pvc: the trainer pods read their inputs from it")
    job_dir = Path(runs) / f"{section}-job"
    paths: dict[str, str] = {}
    for key, src in inputs.items():
        if src:
            shutil.copytree(src, job_dir / "inputs" / key, dirs_exist_ok=True)
            paths[key] = str(job_dir / "inputs" / key)
    clips = paths.pop("clips")
    data = yaml.safe_load(params) or {}
    data.pop(GIVEN, None)  # the job's own command reads the file as a params.yaml
    section_data = data.get(section) or {}
    override = {**paths, "out": str(job_dir / "out"), "run_dir": str(job_dir / "run"),
                "heldout": {**(section_data.get("heldout") or {}), "pairs": f"{clips}/{PAIRS}"}}  # fmt: skip
    if module == "stage3_rl":
        override["manifest"] = f"{clips}/manifest.parquet"
    data[section] = {**section_data, **override}
    (job_dir / "params.yaml").write_text(yaml.safe_dump(data))
    name = f"tavr-{section.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    if api is None:
        from kubernetes import client
        from kubernetes import config as kube

        kube.load_incluster_config()
        api = client.CustomObjectsApi()
    job = trainjob.trainjob(kf, name, module, str(job_dir / "params.yaml"), section)
    trainjob.run(api, job, kf.namespace, kf.trainer_timeout_s)
    shutil.copytree(job_dir / "out", out, dirs_exist_ok=True)
    return _numbers(json.loads((Path(out) / "metrics.json").read_text()))


def bench(params: str, method: str, protocol: str, model: str, clips: str, out: str, keep_ratio: float = 0.0,
          reference_audio: bool = True) -> dict:  # fmt: skip
    """One method on the bench pairs (`tavr bench`); `out` gets pairs.csv, summary.json, videos/.
    keep_ratio 0 = the model's own; keep_ratio and reference_audio False are the claims' ablations."""
    from tavr.eval.benchmark import generate
    from tavr.pipeline import TAVRPipeline

    cfg = config(params).bench
    summary = generate(TAVRPipeline.from_pretrained(model), Path(clips) / PAIRS, out, cfg.steps, cfg.limit_for(method), cfg.seed,
                       method, cfg.identity_frames, cfg.max_offset, protocol=protocol, frames=cfg.frames,
                       keep_ratio=keep_ratio or None, reference_audio=reference_audio, validation=cfg.validation)  # fmt: skip
    return _numbers(summary["metrics"])


def upper_bound(params: str, clips: str, out: str) -> dict:
    """The target clips scored as a method (`tavr bench score --targets`): the upper bound of every metric."""
    from tavr.eval.benchmark import score_dir

    cfg = config(params).bench
    summary = score_dir(None, Path(clips) / PAIRS, out, "upper_bound", cfg.limit_for("upper_bound"), identity_frames=cfg.identity_frames,
                        max_offset=cfg.max_offset, frames=cfg.frames, validation=cfg.validation)  # fmt: skip
    return _numbers(summary["metrics"])


def report(params: str, results: dict[str, str], clips: str, out: str) -> dict:
    """Every method's results (method -> `bench` output folder) side by side in `out` (index.html, summary.json)."""
    from tavr.eval.report import build_report

    cfg = config(params).bench
    Path(out).mkdir(parents=True, exist_ok=True)
    for method, folder in results.items():
        shutil.copytree(folder, Path(out) / method, dirs_exist_ok=True)
    summary = build_report(out, list(results), Path(clips) / PAIRS, cfg.grid_pairs)
    return {f"{m}.{k}": float(v) for m, values in summary["methods"].items() for k, v in values.items() if v is not None}


def gate(params: str, summary: str, out: str, production: str = "") -> dict:
    """The deployment decision on the report's summary.json; `production` is a registered model folder ("" = none)."""
    from tavr.eval.gate import run_gate

    return run_gate(dataclasses.replace(config(params).gate, production=production), summary, out)


def export(gate_file: str, model: str, out: str) -> dict:
    from tavr.eval.export import export as run_export

    return run_export(gate_file, model, out)


def inline_page(folder: str, page: str) -> None:
    """The report's index.html with its plots embedded (data URIs): one self-contained file for the
    Kubeflow UI, which shows an HTML artifact without the files beside it."""
    import base64
    import re

    root = Path(folder)

    def embed(m: re.Match) -> str:
        data = base64.b64encode((root / m.group(1)).read_bytes()).decode()
        return f"src='data:image/png;base64,{data}'"

    html = (root / "index.html").read_text()
    Path(page).write_text(re.sub(r"src='(plots/[^']+\.png)'", embed, html))


def storage_uri(artifact_uri: str) -> str:
    """A KServe storageUri for a Kubeflow artifact: minio:// becomes s3:// (KServe reads MinIO through
    its S3 client and the service account's credentials); gs://, s3:// and pvc:// stay as they are."""
    if artifact_uri.startswith("minio://"):
        return "s3://" + artifact_uri[len("minio://") :]
    return artifact_uri
