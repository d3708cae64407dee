"""Pretraining: the tiny base that stages 1-3 fine-tune, with a curve of quality against compute.

    python -m tavr.train.pretrain [--params params.yaml] [--resume auto|never] [--export]
                                                             (tavr pretrain, make pretrain)

1. Data, under `data` (data/pretrain/): TAVR-Synth drawn with `synth` (a seed of its own, many
   scenes, no bench split), ingested like the default's clips and encoded by the chain's codec
   (`train.vae`, models/codec) into a latent cache. Each part is skipped when `stamp.json` says
   it was made from the same config and codec.
2. Training: stage 1's loop (tavr/train/stage1.py) on that cache with the `train` section, run
   in segments of `eval_every` steps; every segment ends on a checkpoint, so a kill loses at
   most `train.run.checkpoint_every` steps and `--resume auto` continues exactly.
3. The curve: after each segment the EMA weights generate the first `eval_frames` frames of
   `eval_pairs` pairs of two kinds, with fixed seeds: default bench pairs (people and scenes no
   training saw) and cross-scene pairs of the pretraining people; and each bench pair again
   with the next pair's (another person's) reference as a control. Per kind: dlib's face rate on
   every 2nd generated frame, its mean best detection score (threshold -1.5: moves long before
   the face rate does), person-region PSNR to the real target. One JSON line per point in
   `run_dir/curve.jsonl` (with steps, samples seen and training seconds) and `out/curve.png`.
4. `out` (models/base/): the pipeline folder, `card.json` (command, params, data seed and
   identity ranges, steps, samples, seconds, machine, losses, commit, sha256 of every weight
   file) and MODEL_CARD.md written from it. `--export` writes it from the newest checkpoint of a
   run still going (its card says `finished: false`, the steps reached and planned), so the chain
   can fine-tune from a base while its pretraining continues in later sessions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tavr.config import TAVRConfig, to_dict
from tavr.data.pairs import load_pairs, make_pairs
from tavr.data.synth import load_masks
from tavr.data.video import read_audio, read_video
from tavr.files import replace_dir, sha256, write_json
from tavr.models.transformer import TAVRTransformer3DModel
from tavr.models.vae import load_vae
from tavr.pipeline import TAVRPipeline
from tavr.rl.rewards import FACE_FLOOR, best_face_scores
from tavr.train import common, stage1
from tavr.train.stage1 import saved_generate

CODE = ("tavr", "params.yaml", "pyproject.toml", "requirements.lock")  # what a card's commit vouches for


# ----- 1. data -----


def prepare_data(root: TAVRConfig, progress: bool = True) -> Path:
    """Synth -> clips -> latent cache under `pretrain.data`; returns the cache folder."""
    from tavr.data import synth
    from tavr.data.ingest import ingest
    from tavr.train.latents import encode_cache

    cfg = root.pretrain
    data = Path(cfg.data)
    codec = Path(cfg.train.vae) / "model.safetensors"
    if not codec.is_file():
        raise FileNotFoundError(f"{codec} is missing: fit the codec first (dvc repro codec)")
    ingest_cfg = {k: v for k, v in to_dict(root.ingest).items() if k not in ("pairs_out", "workers")}  # what shapes the clips
    latents_cfg = {k: v for k, v in to_dict(root.latents).items() if k not in ("vae", "manifest", "out", "timing")}
    want = {"synth": {k: v for k, v in to_dict(cfg.synth).items() if k != "workers"}, "ingest": ingest_cfg,
            "latents": latents_cfg, "codec": sha256(codec)}  # fmt: skip
    stamp = data / "stamp.json"
    have = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if any(have.get(k) != want[k] for k in ("synth", "ingest")) or not (data / "clips" / "manifest.parquet").is_file():
        synth.generate(cfg.synth, data / "synth")
        ingest([data / "synth"], data / "clips", root.ingest, force=True)  # data/ is this stage's own folder
        have = {}
    if have != want or not (data / "latents" / "cache.safetensors").is_file():
        latents = dataclasses.replace(root.latents, vae=cfg.train.vae, manifest=str(data / "clips" / "manifest.parquet"),
                                      out=str(data / "latents"))  # fmt: skip
        encode_cache(latents, root.generate, progress=progress)
    write_json(stamp, want, indent=1)
    return data / "latents"


def eval_pairs(root: TAVRConfig) -> dict[str, tuple[Path, list[dict]]]:
    """{"bench": default bench pairs, "pretrain": cross-scene pairs of pretraining people}, `eval_pairs` each."""
    cfg = root.pretrain
    bench_root, bench = load_pairs(cfg.bench_pairs)
    manifest = pd.read_parquet(Path(cfg.data) / "clips" / "manifest.parquet")
    own = make_pairs(manifest.assign(split="bench"), cfg.eval_pairs, seed=1)
    return {"bench": (bench_root, bench[: cfg.eval_pairs]), "pretrain": ((Path(cfg.data) / "clips").resolve(), own)}


# ----- 3. the curve -----


def _person_psnr(generated: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    diff = (generated.astype(np.float64) - target.astype(np.float64))[mask]
    return float(10 * np.log10(255.0**2 / max(float((diff**2).mean()), 1e-10))) if diff.size else float("nan")


@torch.no_grad()
def curve_point(pipe: TAVRPipeline, pairs: dict[str, tuple[Path, list[dict]]], root: TAVRConfig) -> dict:
    """Face rate, mean best dlib score and person PSNR per kind of pair (and the wrong-reference control)."""
    cfg, gen = root.pretrain, pipe.config
    n = cfg.eval_frames
    out = {}
    for kind, (base, items) in pairs.items():
        controls = [False, True] if kind == "bench" else [False]
        for wrong in controls:
            scores, psnrs = [], []
            for i, pair in enumerate(items):
                ref_pair = items[(i + 1) % len(items)] if wrong else pair
                reference = read_video(base / ref_pair["reference"], audio_rate=gen.audio_rate)  # its own voice, as in training
                target = read_video(base / pair["target"]).frames[:n]
                mask = load_masks(base / pair["target_mask"])[:n]
                audio = read_audio(base / pair["driving_audio"], gen.audio_rate)[: round(n / gen.fps * gen.audio_rate)]
                video = pipe(reference.frames, target, audio, reference_audio=reference.audio, background_mask=mask,
                             num_steps=cfg.eval_steps, seed=i).frames[:n]  # fmt: skip
                scores.append(np.maximum(best_face_scores(video[::2], FACE_FLOOR), FACE_FLOOR))
                psnrs.append(_person_psnr(video, target, mask))
            s = np.concatenate(scores)
            name = f"{kind}_wrong_ref" if wrong else kind
            out[name] = {"face_rate": round(float((s >= 0).mean()), 4), "best_score": round(float(s.mean()), 4),
                         "person_psnr": round(float(np.nanmean(psnrs)), 2), "frames": int(s.size)}  # fmt: skip
    return out


def plot_curve(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [p["samples"] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for kind, style in (("bench", "-o"), ("bench_wrong_ref", ":x"), ("pretrain", "--s")):
        for ax, key in zip(axes, ("face_rate", "best_score", "person_psnr")):
            ax.plot(samples, [p["eval"][kind][key] for p in points], style, label=kind)
            ax.set_title(key)
            ax.set_xlabel("samples seen")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----- 2. training in segments -----


def finished_base(root: TAVRConfig, reached: int = 0) -> dict:
    """The card of `train.out` when it holds a finished base of these params (what shapes the weights:
    synth, train, model) that is as long as asked and no older than the run's newest checkpoint
    (at step `reached`): then there is nothing to train. {} when the run should go on: no finished
    base, or one that a checkpoint at its own step can lengthen. Anything else is an error, never a
    silent retrain over the base: other params, or a base that only older checkpoints could redo."""
    cfg = root.pretrain
    path = Path(cfg.train.out) / "card.json"
    card = json.loads(path.read_text()) if path.is_file() else {}
    if not card.get("finished"):
        return {}
    theirs, ours = card["params"], {"pretrain": to_dict(cfg), "model": to_dict(root.model)}
    same = theirs["model"] == ours["model"] and all(
        common.comparable(theirs["pretrain"][k]) == common.comparable(ours["pretrain"][k]) for k in ("synth", "train"))
    if not same:
        raise ValueError(f"{cfg.train.out} holds a finished base of other params; move it aside to pretrain a new one")
    if card["steps"] >= max(cfg.train.run.steps, reached):
        return card
    if reached == card["steps"]:  # asked for more, and the checkpoint the base came from is here
        return {}
    raise ValueError(f"{cfg.train.out} is a finished base of {card['steps']} steps, but {cfg.train.run_dir} only holds a "
                     f"checkpoint at step {reached}: lengthening it would retrain over the base; move it aside first")


def _ema_pipeline(root: TAVRConfig, checkpoint: Path, codec) -> TAVRPipeline:
    """The EMA weights of a checkpoint as a pipeline (the chain's codec, the stage's inference config)."""
    from safetensors.torch import load_file

    model = TAVRTransformer3DModel(root.model)
    ema = load_file(str(checkpoint / "ema.safetensors")) or load_file(str(checkpoint / "model.safetensors"))
    model.load_state_dict({**model.state_dict(), **ema})
    return TAVRPipeline(model, codec, saved_generate(root, "video"))


def _step_of(ckpt: Path | None) -> int:
    return int(json.loads((ckpt / "state.json").read_text())["step"]) if ckpt else 0


def _seconds_of(ckpt: Path) -> float:
    """Training seconds a checkpoint's run had spent when it was saved (every resumed call summed)."""
    return float(json.loads((ckpt / "state.json").read_text())["data"].get("seconds", 0.0))


def pretrain(root: TAVRConfig, resume: str | None = "auto", stop_after: int | None = None, progress: bool = True) -> dict:
    """Run (or resume) the pretraining to `train.run.steps`; `stop_after` ends this call at that step.

    Returns the card (also written to out/card.json) once the run is complete, else {}."""
    cfg = root.pretrain
    run = cfg.train.run
    if cfg.eval_every < 0 or cfg.eval_every % run.checkpoint_every:
        raise ValueError(f"pretrain.eval_every ({cfg.eval_every}) must be 0 (no curve) or a positive multiple of "
                         f"pretrain.train.run.checkpoint_every ({run.checkpoint_every})")  # fmt: skip
    run_dir = Path(cfg.train.run_dir)
    if resume is None and common.latest_checkpoint(run_dir) is not None:
        raise ValueError(f"{run_dir} holds a pretraining run: resume it (--resume auto) or move the folder aside")
    shipped = finished_base(root, _step_of(common.latest_checkpoint(run_dir)))  # e.g. a clone: the base, not its checkpoints
    if shipped:
        print(f"{cfg.train.out} is finished ({shipped['steps']} steps of these params): nothing to train", flush=True)
        return shipped
    cache = prepare_data(root, progress)
    train_cfg = dataclasses.replace(cfg.train, cache=str(cache))
    config_dict = {"pretrain.train": to_dict(train_cfg), "model": to_dict(root.model)}  # what the weights depend on
    curve = cfg.eval_every > 0  # 0: no curve (a machine without the scorers: PyAV, dlib, MiniLM); --score adds the base's point
    pairs = eval_pairs(root) if curve else {}
    codec = load_vae(train_cfg.vae)  # read once: a `dvc repro codec` elsewhere may replace the folder meanwhile
    curve_path = run_dir / "curve.jsonl"

    step = _step_of(common.latest_checkpoint(run_dir))
    points = [p for p in _read_curve(curve_path) if p["step"] <= step]  # a point of a checkpoint that was since lost is dropped
    if curve and (not points or points[-1]["step"] < step):  # the start, or a point missed by a kill between save and eval
        points.append(_point(root, common.latest_checkpoint(run_dir), step, pairs, codec))
        _write_curve(curve_path, points)
    end = run.steps if stop_after is None else min(stop_after, run.steps)
    while step < end:
        target = min(step + cfg.eval_every - step % cfg.eval_every, end) if curve else end
        stage1.train(train_cfg, root, config_dict, resume="auto", stop_after=None if target == run.steps else target)
        before, step = step, _step_of(common.latest_checkpoint(run_dir))
        if step <= before:
            raise RuntimeError(f"pretraining stopped at step {before} without a new checkpoint (stop_after must be a "
                               f"multiple of checkpoint_every, {run.checkpoint_every})")
        if curve:
            points.append(_point(root, common.latest_checkpoint(run_dir), step, pairs, codec))
            _write_curve(curve_path, points)
        write_checkpoint_card(root, common.latest_checkpoint(run_dir))
    if points:
        plot_curve(points, run_dir / "curve.png")
    if step < run.steps:
        return {}
    metrics = json.loads((Path(train_cfg.out) / "metrics.json").read_text())
    return write_card(root, Path(train_cfg.out), step, metrics["seconds"], points, (metrics.get("loss_first"), metrics.get("loss_last")))


def _point(root: TAVRConfig, ckpt: Path | None, step: int, pairs, codec) -> dict:
    if ckpt is None:
        torch.manual_seed(root.pretrain.train.run.seed)
        pipe = TAVRPipeline(TAVRTransformer3DModel(root.model), codec, saved_generate(root, "video"))
        seconds = 0.0
    else:
        pipe = _ema_pipeline(root, ckpt, codec)
        seconds = _seconds_of(ckpt)
    pipe.to(common.auto_device())
    run = root.pretrain.train.run
    return {"step": step, "samples": step * run.batch_size * run.grad_accum, "train_seconds": round(seconds, 1),
            "eval": curve_point(pipe, pairs, root)}  # fmt: skip


def _read_curve(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _write_curve(path: Path, points: list[dict]) -> None:
    """The whole curve, one JSON line per point, replaced atomically; the newest point is printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(p) + "\n" for p in points))
    os.replace(tmp, path)
    last = points[-1]
    print(json.dumps({"step": last["step"], "samples": last["samples"], **{k: v["face_rate"] for k, v in last["eval"].items()}}), flush=True)


# ----- 4. the model card -----


def _commit() -> str:
    """HEAD's hash, with "+changes" when the code or params differ from it (what ran is not that commit);
    TAVR_CODE_COMMIT, when set, wins: the commit a copied tree was made from."""
    declared = os.environ.get("TAVR_CODE_COMMIT", "")
    if declared:  # a copied tree (a build or GPU machine), whose .git may be missing or older than its files
        return f"{declared} (declared by TAVR_CODE_COMMIT)"
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], capture_output=True,
                                 text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if changed else "")


def _provenance(root: TAVRConfig) -> dict:
    """What both cards record: the command and params, the data, the machine and the code commit."""
    cfg = root.pretrain
    manifest = pd.read_parquet(Path(cfg.data) / "clips" / "manifest.parquet")
    return {
        "command": "tavr pretrain --params params.yaml (make pretrain)",
        "params": {"pretrain": to_dict(cfg), "model": to_dict(root.model), "preset": root.preset},
        "data": {"synth_seed": cfg.synth.seed, "identities": sorted(manifest["identity"].unique().tolist()),
                 "identity_range": [0, cfg.synth.identities - 1], "scenes": int(manifest["scene"].nunique()),
                 "clips": len(manifest)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": str(common.auto_device()),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "commit": _commit(),
    }  # fmt: skip


def write_checkpoint_card(root: TAVRConfig, checkpoint: Path) -> None:
    """run_dir/checkpoint_card.json: a checkpoint that a later `make pretrain` resumes from (the one
    committed between sessions), with the provenance and the sha256 of each of its files."""
    state = json.loads((checkpoint / "state.json").read_text())
    run = root.pretrain.train.run
    card = {
        **_provenance(root), "checkpoint": checkpoint.name, "step": state["step"],
        "samples_seen": state["step"] * run.batch_size * run.grad_accum, "train_seconds": round(state["data"].get("seconds", 0.0), 1),
        "sha256": {p.name: sha256(p) for p in sorted(checkpoint.iterdir()) if p.is_file()},
    }  # fmt: skip
    write_json(checkpoint.parent.parent / "checkpoint_card.json", card, indent=1)


def write_card(root: TAVRConfig, out: Path, step: int, seconds: float, points: list[dict], losses: tuple,
               exported_from: str = "") -> dict:  # fmt: skip
    """out/card.json and out/MODEL_CARD.md for the weights in `out`: provenance, length (steps of the
    planned `train.run.steps`; `finished` is false for an export of a run still going), losses, the
    curve and the sha256 of every weight file."""
    cfg = root.pretrain
    planned = cfg.train.run.steps
    weights = sorted(p for p in out.rglob("*.safetensors"))
    card = {
        **_provenance(root), "finished": step >= planned, "steps": step, "planned_steps": planned,
        "exported_from": exported_from, "samples_seen": step * cfg.train.run.batch_size * cfg.train.run.grad_accum,
        "train_seconds": round(seconds, 1),
        "losses": {"loss_first": losses[0], "loss_last": losses[1]},
        "curve": points, "sha256": {str(p.relative_to(out)): sha256(p) for p in weights},
    }  # fmt: skip
    write_json(out / "card.json", card, indent=1)
    _write_model_card(root, out, card)
    return card


def _write_model_card(root: TAVRConfig, out: Path, card: dict) -> None:
    """out/MODEL_CARD.md, the card's summary for people."""
    cfg = root.pretrain
    step, planned = card["steps"], card["planned_steps"]
    last = card["curve"][-1]["eval"] if card["curve"] else {}
    state = "finished" if card["finished"] else f"**unfinished**: exported from `{card['exported_from']}`, {step} of {planned} planned steps"
    lines = [
        "# TAVR tiny base (pretrained)", "",
        f"- command: `{card['command']}`, code commit `{card['commit']}`; {state}",
        f"- data: TAVR-Synth seed {cfg.synth.seed}, identities 0-{cfg.synth.identities - 1} of that seed "
        f"({len(card['data']['identities'])} people, {card['data']['scenes']} scenes, {card['data']['clips']} clips); none of the default's people or scenes",
        f"- training: {step} steps, {card['samples_seen']} samples, {card['train_seconds']} s on {card['machine']['device']} "
        f"({card['machine']['cpus']} cores, torch {card['machine']['torch']})",
        f"- losses: first {card['losses']['loss_first']}, last {card['losses']['loss_last']}",
        "- last curve point: " + ", ".join(f"{k} faces {v['face_rate']}, person PSNR {v['person_psnr']} dB" for k, v in last.items()),
        "", "| file | sha256 |", "| --- | --- |", *[f"| `{k}` | `{v}` |" for k, v in card["sha256"].items()], "",
    ]  # fmt: skip
    (out / "MODEL_CARD.md").write_text("\n".join(lines))


def score(root: TAVRConfig) -> dict:
    """Score the base in `train.out` as it is (the curve point of its last step) and add the point to its
    card and MODEL_CARD.md: for a run trained without a curve (`eval_every: 0`, e.g. on a GPU machine
    without the scorers' PyAV, dlib and MiniLM). The weights, their hashes and the provenance stay."""
    out = Path(root.pretrain.train.out)
    path = out / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: nothing to score (tavr pretrain writes it)")
    card = json.loads(path.read_text())
    pipe = TAVRPipeline.from_pretrained(out).to(common.auto_device())
    point = {"step": card["steps"], "samples": card["samples_seen"], "train_seconds": card["train_seconds"],
             "eval": curve_point(pipe, eval_pairs(root), root), "scored_after_training": True}  # fmt: skip
    card["curve"] = [p for p in card["curve"] if p["step"] != point["step"]] + [point]
    write_json(path, card, indent=1)
    _write_model_card(root, out, card)
    return card


def export(root: TAVRConfig) -> dict:
    """Write `train.out` (models/base) from the newest intact checkpoint of the run, finished or not:
    its EMA weights as a pipeline folder with the codec, and the card. The folder is replaced whole."""
    cfg = root.pretrain
    run_dir = Path(cfg.train.run_dir)
    ckpt = common.latest_checkpoint(run_dir, hashes=True)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} holds no intact checkpoint to export: run `tavr pretrain` first")
    step = _step_of(ckpt)
    out = Path(cfg.train.out)
    staged = out.with_name(out.name + ".partial")
    shutil.rmtree(staged, ignore_errors=True)  # left by a killed export
    _ema_pipeline(root, ckpt, load_vae(cfg.train.vae)).save_pretrained(staged)
    points = [p for p in _read_curve(run_dir / "curve.jsonl") if p["step"] <= step]
    card = write_card(root, staged, step, _seconds_of(ckpt), points, common.first_last(common.logged_series(run_dir, "loss")), str(ckpt))
    replace_dir(staged, out)
    return card


def main(argv: list[str] | None = None) -> None:
    ap = common.params_parser("Pretrain the tiny base on its own TAVR-Synth set, with a quality curve.")
    ap.add_argument("--resume", default="auto", help="auto (latest checkpoint) or never")
    ap.add_argument("--export", action="store_true", help="write `out` from the newest checkpoint now, finished or not")
    ap.add_argument("--score", action="store_true", help="add the curve point of the base in `out` to its card")
    root, args = common.parse_config(ap, argv)
    try:
        if args.score:
            card = score(root)
        else:
            card = export(root) if args.export else pretrain(root, None if args.resume == "never" else "auto")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps({k: card[k] for k in ("steps", "samples_seen", "train_seconds")} if card else {}, indent=1))


if __name__ == "__main__":
    main()
