"""The cross-scene benchmark: generate every pair with a pipeline, or score any method's videos.

    tavr bench --model DIR --pairs data/bench_pairs.json --out DIR [--protocol video|raw|adapted] [--steps N] [--limit N]
    tavr bench score --pred-dir DIR --pairs data/bench_pairs.json --out DIR [--method NAME]
    tavr bench score --targets --out DIR --method upper_bound     (the target clips themselves)

A pair (tavr.data.pairs) holds a reference clip of a held-out person in one scene, a target
clip of the same person in another scene with its person mask, and the target's audio. A
method sees the reference, the target frames with the person masked out and the audio, and
must put the reference person into the target scene. The reference is the video (TAVR), or for
an image-reference model one frame of it: raw, or adapted to the target scene (tavr.eval.adapt);
`wrong_ref` gives another person's video, the lower bound (a method that ignored its reference
would score the same), and the target clips scored as a method are the upper bound. Scores (tavr.eval.metrics) compare the
result with the reference (identity), the audio (lip sync) and the target scene outside the
person (background).

Writes, under DIR:
    pairs.csv       one row per pair: pair_id, identity (person), every metric, frames, audio_frames,
                    gen_seconds (the pipeline call; empty for scored videos), seconds (with scoring)
    summary.json    {"method", "pairs", "scored", "missing": [pair_id, ...], "failed": [{"pair_id", "reason"}],
                    "short": [pair_id, ...], "metrics": {name: mean}} (+ "protocol" when generated)
    videos/         <pair_id>.mp4 (generation only)
    inputs/         <pair_id>.png: the reference image an image protocol gave
Videos scored from another method are read as <pair_id>.mp4 and resized to the target's size
if needed; a missing video is listed in "missing", one that cannot be decoded (corrupt, empty, not a
video) in "failed" with the reason, and neither is scored as zero. A video with fewer frames than its
driving audio (cut to `frames` when given) is scored and listed in "short". The gate reads all three
as lost coverage (tavr.eval.gate).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tavr.data.pairs import load_pairs
from tavr.progress import bar as progress_bar
from tavr.data.synth import load_masks
from tavr.data.video import VideoError, read_audio, read_video, write_video
from tavr.eval import metrics
from tavr.eval.adapt import adapt_reference
from tavr.files import sha256, write_json

METRICS = ("id_top1", "id_margin", "identity", "lipsync", "lipsync_offset", "bg_psnr", "bg_ssim", "person_psnr", "stability",
           "face_rate")
GALLERY_CLIPS = 2  # reference clips per person whose embeddings make its gallery entry


PROTOCOLS = ("video", "raw", "adapted", "wrong_ref")


def pair_inputs(root: Path, pair: dict, fps: int = 25, rate: int = 16000, frames: int | None = None) -> dict:
    """Decoded inputs of one pair; `frames` cuts the target, its mask and the audio to that many frames.
    "audio_frames": video frames the (cut) driving audio lasts, the length a method's video must reach."""
    reference = read_video(root / pair["reference"], fps=fps, audio_rate=rate)
    target = read_video(root / pair["target"], fps=fps).frames
    mask = load_masks(root / pair["target_mask"])
    audio = read_audio(root / pair["driving_audio"], rate)
    if frames:
        target, mask, audio = target[:frames], mask[:frames], audio[: round(frames / fps * rate)]
    return {"reference": reference.frames, "reference_audio": reference.audio, "target": target, "mask": mask,
            "audio": audio, "fps": fps, "rate": rate, "audio_frames": int(len(audio) * fps // rate)}  # fmt: skip


def wrong_reference(root: Path, pairs: list[dict], i: int, fps: int = 25, rate: int = 16000):
    """(frames, audio) of the reference of the first pair after pair i (cyclically) showing another person:
    the control that says how much of a method's identity comes from its reference at all."""
    me = pairs[i]["identity"]
    for k in range(1, len(pairs)):
        other = pairs[(i + k) % len(pairs)]
        if other["identity"] != me:
            clip = read_video(root / other["reference"], fps=fps, audio_rate=rate)
            return clip.frames, clip.audio
    raise ValueError("the wrong_ref protocol needs pairs of at least two people")


def reference_input(protocol: str, root: Path, pair: dict, inputs: dict) -> np.ndarray:
    """What a method is given as the reference: the video (F, H, W, 3), or one image (H, W, 3):
    its first frame (raw), or that frame adapted to the target scene (tavr.eval.adapt); wrong_ref:
    another person's video (in inputs["wrong_reference"])."""
    if protocol == "video":
        return inputs["reference"]
    if protocol == "wrong_ref":
        return inputs["wrong_reference"]
    if protocol == "raw":
        return inputs["reference"][0]
    if protocol == "adapted":
        if "reference_mask" not in pair:
            raise ValueError(f"pair {pair['pair_id']} has no reference_mask, which the adapted protocol needs "
                             "(bench pairs written before it existed: re-run `tavr ingest`)")  # fmt: skip
        person = load_masks(root / pair["reference_mask"])[0]
        return adapt_reference(inputs["reference"][0], person, inputs["target"][0], inputs["mask"][0])
    raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")


def _fit(video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frames (F, H, W, 3) resized to size = (H, W) when they differ (bilinear)."""
    if video.shape[1:3] == size:
        return video
    return np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], Image.BILINEAR)) for f in video])


def gallery(root: Path, pairs: list[dict], fps: int = 25, identity_frames: int = 4,
            scored: list[dict] = ()) -> metrics.Gallery | None:  # fmt: skip
    """Every person of the pairs file, each from the first GALLERY_CLIPS reference clips of theirs
    (None with a single person: nobody to tell apart, id_top1 and id_margin stay uncomputed).
    The reference clips of `scored` pairs are embedded too and kept in `references`."""
    clips: dict[str, list[str]] = {}
    for pair in pairs:
        mine = clips.setdefault(pair["identity"], [])
        if len(mine) < GALLERY_CLIPS and pair["reference"] not in mine:
            mine.append(pair["reference"])
    if len(clips) < 2:
        return None
    wanted = dict.fromkeys([c for refs in clips.values() for c in refs] + [p["reference"] for p in scored])
    embedded = {c: metrics.reference_embedding_of(read_video(root / c, fps=fps).frames, identity_frames) for c in wanted}
    people = metrics.Gallery.of_embeddings({person: [embedded[c] for c in refs] for person, refs in clips.items()})
    return dataclasses.replace(people, references={c: e for c, e in embedded.items() if e is not None})


def score_pair(video: np.ndarray, inputs: dict, identity_frames: int = 4, max_offset: int = 3,
               gallery: metrics.Gallery | None = None, person: str | None = None, reference: str | None = None) -> dict:  # fmt: skip
    """Every metric of one generated video (F, H, W, 3) against the pair's inputs (and the gallery, for
    identification; its embedding of the `reference` clip when it holds one)."""
    video = _fit(video, inputs["target"].shape[1:3])
    known = gallery.references.get(reference) if gallery is not None and reference else None
    return metrics.score_video(video, inputs["reference"], inputs["target"], inputs["mask"], inputs["audio"],
                               inputs["rate"], inputs["fps"], identity_frames, max_offset, gallery, person, known)  # fmt: skip


def summarize(rows: list[dict], method: str, missing: list[str], failed: list[dict] | None = None) -> dict:
    """Mean of every metric over the pairs where it is defined (None, e.g. no face for the offset, is
    skipped), with the coverage: pairs asked, scored, missing, failed and short."""
    failed = failed or []
    table = pd.DataFrame(rows)
    means = {}
    for name in METRICS:
        values = pd.to_numeric(table[name], errors="coerce").dropna() if name in table else pd.Series(dtype=float)
        means[name] = float(values.mean()) if len(values) else None
    short = [r["pair_id"] for r in rows if r["frames"] < r["audio_frames"]]
    return {"method": method, "pairs": len(rows) + len(missing) + len(failed), "scored": len(rows), "missing": missing,
            "failed": failed, "short": short, "metrics": means}  # fmt: skip


def _write(out: Path, rows: list[dict], summary: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    columns = ["pair_id", "person", *METRICS, "frames", "audio_frames", "gen_seconds", "seconds"]
    frame = pd.DataFrame(rows, columns=columns)
    tmp = out / "pairs.csv.tmp"
    frame.to_csv(tmp, index=False)
    tmp.replace(out / "pairs.csv")
    write_json(out / "summary.json", summary, indent=1)
    return summary


def write_gallery(pairs_file: str | Path, out: str | Path, fps: int = 25, identity_frames: int = 4, limit: int = 0,
                  validation: tuple[int, int] | None = None) -> dict:  # fmt: skip
    """`tavr bench gallery`: the gallery of every person of the pairs file, once for every method, with
    the reference embedding of every pair scored (report_pairs(limit, validation))."""
    root, pairs = load_pairs(pairs_file)
    people = gallery(root, pairs, fps, identity_frames, report_pairs(pairs, limit, validation))
    if people is None:
        raise ValueError(f"{pairs_file} shows fewer than 2 people: there is nobody to tell apart")
    people.save(out, sha256(pairs_file))
    return {"people": len(people.people), "references": len(people.references), "out": str(out)}


def report_pairs(pairs: list[dict], limit: int = 0, validation: tuple[int, int] | None = None) -> list[dict]:
    """The pairs a method scores: the first `limit` (0 = all) of those outside the validation slice
    [start, stop), the pairs knobs are chosen on (benchmarks/guidance_val.py)."""
    start, stop = validation or (0, 0)
    kept = [p for i, p in enumerate(pairs) if not start <= i < stop]
    return kept[:limit] if limit > 0 else kept


def _pairs(path: str | Path, limit: int, identity_frames: int = 4, fps: int = 25, gallery_file: str | Path | None = None,
           validation: tuple[int, int] | None = None) -> tuple[Path, list[dict], metrics.Gallery | None]:  # fmt: skip
    """(root, the pairs to score (report_pairs), the gallery of every person in the file: read from
    `gallery_file` when it was made from this very pairs file, else computed)."""
    root, pairs = load_pairs(path)
    scored = report_pairs(pairs, limit, validation)
    if not scored:
        raise ValueError(f"{path} holds no pairs" + (f" outside the validation slice {list(validation)}" if pairs else ""))
    everyone = None
    if gallery_file and Path(gallery_file).is_file():
        everyone, source = metrics.Gallery.load(gallery_file)
        if source != sha256(path):
            warnings.warn(f"{gallery_file} was made from another pairs file than {path}: computing the gallery again")
            everyone = None
    if everyone is None:
        everyone = gallery(root, pairs, fps, identity_frames)
    return root, scored, everyone


def generate(pipeline, pairs_file: str | Path, out: str | Path, steps: int | None = None, limit: int = 0,
             seed: int = 0, method: str = "tavr", identity_frames: int = 4, max_offset: int = 3,
             progress: Callable[[int, int], None] | None = None, protocol: str = "video", frames: int = 0,
             keep_ratio: float | None = None, reference_audio: bool = True, gallery_file: str | Path | None = None,
             validation: tuple[int, int] | None = None) -> dict:
    """Generate the first `frames` frames (0 = all) of every pair (report_pairs) with `pipeline` (a TAVRPipeline) given
    the reference of `protocol` (see reference_input), save and score it. Image protocols also save the image
    given, as inputs/<pair_id>.png. Identity is always scored against the whole reference video.
    `keep_ratio` (default: the model's) and `reference_audio` False are the claims' ablations."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    out = Path(out)
    gen = pipeline.config
    root, pairs, people = _pairs(pairs_file, limit, identity_frames, gen.fps, gallery_file, validation)
    rows = []
    for i, pair in enumerate(progress_bar(pairs, desc=f"bench {method}", unit="pair", disable=progress is not None)):
        inputs = pair_inputs(root, pair, gen.fps, gen.audio_rate, frames)
        start = time.perf_counter()
        ref_audio = inputs["reference_audio"]
        if protocol == "wrong_ref":  # another person's video and voice; scored against this pair's person
            inputs["wrong_reference"], ref_audio = wrong_reference(root, pairs, i, gen.fps, gen.audio_rate)
        if not reference_audio:
            ref_audio = np.zeros(0, np.float32)  # an empty track: the pipeline generates without reference audio
        reference = reference_input(protocol, root, pair, inputs)
        if reference.ndim == 3:
            (out / "inputs").mkdir(parents=True, exist_ok=True)
            Image.fromarray(reference).save(out / "inputs" / f"{pair['pair_id']}.png")
        result = pipeline(reference, inputs["target"], inputs["audio"], reference_audio=ref_audio,
                          background_mask=inputs["mask"], num_steps=steps, keep_ratio=keep_ratio, seed=seed + i)  # fmt: skip
        write_video(out / "videos" / f"{pair['pair_id']}.mp4", result.frames, gen.fps, result.audio, gen.audio_rate)
        scores = score_pair(result.frames, inputs, identity_frames, max_offset, people, pair["identity"], pair["reference"])
        rows.append({"pair_id": pair["pair_id"], "person": pair["identity"], **scores, "frames": len(result.frames),
                     "audio_frames": inputs["audio_frames"], "gen_seconds": result.seconds,
                     "seconds": time.perf_counter() - start})  # fmt: skip
        if progress:
            progress(i + 1, len(pairs))
    summary = summarize(rows, method, [])
    summary["protocol"] = protocol
    return _write(out, rows, summary)


def score_dir(pred_dir: str | Path | None, pairs_file: str | Path, out: str | Path, method: str = "external", limit: int = 0,
              fps: int = 25, rate: int = 16000, identity_frames: int = 4, max_offset: int = 3, frames: int = 0,
              gallery_file: str | Path | None = None, validation: tuple[int, int] | None = None) -> dict:
    """Score <pred_dir>/<pair_id>.mp4 for every pair (another method's outputs) against the pair's first
    `frames` frames and their audio (0 = the whole pair); a video that cannot be read is a failed pair.
    pred_dir None scores every pair's own target clip: the upper bound any method could reach."""
    out = Path(out)
    if pred_dir is not None and not Path(pred_dir).is_dir():
        raise FileNotFoundError(f"{pred_dir} is not a folder of <pair_id>.mp4 videos")
    root, pairs, people = _pairs(pairs_file, limit, identity_frames, fps, gallery_file, validation)
    rows, missing, failed = [], [], []
    for pair in progress_bar(pairs, desc=f"score {method}", unit="pair"):
        path = root / pair["target"] if pred_dir is None else Path(pred_dir) / f"{pair['pair_id']}.mp4"
        if not path.is_file():
            missing.append(pair["pair_id"])
            continue
        start = time.perf_counter()
        try:
            video = read_video(path, fps=fps).frames
            if len(video) == 0:
                raise ValueError("it holds no frames")
        except (VideoError, ValueError, OSError) as e:  # corrupt, empty, text: this pair fails, the rest are scored
            failed.append({"pair_id": pair["pair_id"], "reason": str(e)})
            continue
        inputs = pair_inputs(root, pair, fps, rate, frames)
        n = min(len(video), inputs["target"].shape[0], inputs["audio_frames"])  # the frames it has are scored
        cut = {**inputs, "target": inputs["target"][:n], "mask": inputs["mask"][:n], "audio": inputs["audio"][: round(n / fps * rate)]}
        scores = score_pair(video[:n], cut, identity_frames, max_offset, people, pair["identity"], pair["reference"])
        rows.append({"pair_id": pair["pair_id"], "person": pair["identity"], **scores, "frames": len(video),
                     "audio_frames": inputs["audio_frames"], "seconds": time.perf_counter() - start})  # fmt: skip
    if not rows:
        reasons = f"; {len(failed)} could not be read (first: {failed[0]['reason']})" if failed else ""
        raise FileNotFoundError(f"none of the {len(pairs)} pairs has a readable video in {pred_dir} (expected <pair_id>.mp4){reasons}")
    return _write(out, rows, summarize(rows, method, missing, failed))
