"""Ingest: a folder (or CSV) of videos -> face-centred clips + manifest.

Sources are laid out `<identity>/<scene>/<name>.<ext>` under a folder, or
listed in a CSV with columns `path, identity, scene[, split]`. Each video is
decoded at the configured fps and audio rate, the face is detected in every
frame and tracked, and the video is cut into clips of `clip_seconds`. Each clip
is cropped to a square around the face (fixed within the clip), resized and
written as

    out/<identity>/<scene>/<name>-<k>.mp4       H.264 + AAC
    out/<identity>/<scene>/<name>-<k>.wav       16-bit PCM, the same audio
    out/<identity>/<scene>/<name>-<k>.mask.npz  person mask per frame (F, H, W)
    out/manifest.parquet                        one row per clip (see `COLUMNS`)
    out/quarantine.jsonl                        every file or clip left out, with its reason
    out/summary.json                            counts, and quarantine reasons tallied

Person masks come from a `<name>.mask.npz` beside the source when there is one
(TAVR-Synth writes them), otherwise from the tracked face box (head ellipse and
shoulders). A split comes from a `<name>.json` sidecar or the CSV `split`
column, else from hashing the identity (`bench_fraction`), else "train".
The output folder is built beside `out` and swapped in at the end, so a failed
run never leaves a half-written data set behind.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tavr.config import IngestConfig
from tavr.data import faces
from tavr.data.synth import load_masks, save_masks
from tavr.data.video import VideoError, iter_video, read_video, write_audio, write_video
from tavr.files import replace_dir

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
MARKER = ".tavr-ingest"  # written into every ingest output: a folder holding it may be replaced
COLUMNS = [
    "clip_id", "path", "audio_path", "mask_path", "source", "identity", "scene", "split", "start_s",
    "fps", "frames", "width", "height", "duration_s", "has_audio", "audio_rate",
    "face_rate", "face_size_mean", "face_size_std", "face_cx_std", "face_cy_std",
    "mouth_open_mean", "mouth_open_std", "mouth_audio_corr",
]  # fmt: skip


@dataclass(frozen=True)
class Source:
    path: Path
    identity: str
    scene: str
    split: str | None = None


def discover(src: str | Path) -> tuple[list[Source], list[dict]]:
    """Videos under a folder laid out <identity>/<scene>/*, or listed in a CSV."""
    src = Path(src)
    sources, bad = [], []
    if src.is_file() and src.suffix.lower() == ".csv":
        table = pd.read_csv(src)
        missing = {"path", "identity", "scene"} - set(table.columns)
        if missing:
            raise ValueError(f"{src}: CSV needs columns path, identity, scene; missing {sorted(missing)}")
        for row in table.itertuples():
            path = Path(row.path) if Path(row.path).is_absolute() else src.parent / row.path
            split = getattr(row, "split", None)
            sources.append(Source(path, str(row.identity), str(row.scene), split if isinstance(split, str) else None))
        return sources, bad
    if not src.is_dir():
        return sources, bad
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS):
        parts = path.relative_to(src).parts
        if len(parts) != 3:
            bad.append({"path": str(path), "reason": "not laid out as <identity>/<scene>/<file>"})
            continue
        split = None
        meta = path.with_suffix(".json")
        if meta.is_file():
            split = json.loads(meta.read_text()).get("split")
        sources.append(Source(path, parts[0], parts[1], split))
    return sources, bad


def track_faces(frames: np.ndarray, detect_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Detect the face in every frame and follow one person.

    frames (F, H, W, 3) uint8 -> boxes (F, 4) x0, y0, x1, y1 in frame pixels
    (frames without a detection carry the last box) and found (F,) bool.
    """
    f, h, w, _ = frames.shape
    scale = detect_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    boxes = np.full((f, 4), np.nan, dtype=np.float32)
    found = np.zeros(f, dtype=bool)
    prev = None
    for i, frame in enumerate(frames):
        dets = faces.detect_faces(np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR)))
        if len(dets):
            cand = dets[:, :4] / scale
            if prev is None:
                pick = 0  # highest score
            else:  # nearest to where the face was
                pick = int(np.argmin(np.linalg.norm((cand[:, :2] + cand[:, 2:]) / 2 - (prev[:2] + prev[2:]) / 2, axis=1)))
            prev = cand[pick]
            found[i] = True
        if prev is not None:
            boxes[i] = prev
    first = int(np.argmax(found)) if found.any() else 0
    boxes[:first] = boxes[first]  # frames before the first detection take its box
    return boxes, found


def crop_box(boxes: np.ndarray, found: np.ndarray, h: int, w: int, cfg: IngestConfig) -> tuple[int, int, int]:
    """A square (x0, y0, side) around the median face, kept inside the frame."""
    b = boxes[found]
    side = float(np.median(b[:, 2] - b[:, 0])) * cfg.crop_margin
    side = int(round(min(side, h, w)))
    cx = float(np.median((b[:, 0] + b[:, 2]) / 2))
    cy = float(np.median((b[:, 1] + b[:, 3]) / 2)) - cfg.crop_shift * side
    x0 = int(round(np.clip(cx - side / 2, 0, w - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, h - side)))
    return x0, y0, side


def box_mask(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """Person mask from face boxes (F, 4): head ellipse plus shoulders -> (F, H, W) bool."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((len(boxes), h, w), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0)
        head = ((x - cx) / (0.8 * s)) ** 2 + ((y - cy + 0.15 * s) / (1.0 * s)) ** 2 <= 1
        neck = (np.abs(x - cx) < 0.45 * s) & (y > cy)
        shoulders = (y > cy + 0.9 * s) & (np.abs(x - cx) < 0.6 * s + 1.2 * (y - cy - 0.9 * s))
        out[i] = head | neck | shoulders
    return out


def _resize_stack(frames: np.ndarray, box: tuple[int, int, int], size: int, resample) -> np.ndarray:
    x0, y0, side = box
    return np.stack(
        [np.asarray(Image.fromarray(f[y0 : y0 + side, x0 : x0 + side]).resize((size, size), resample)) for f in frames]
    )


def clip_stats(frames: np.ndarray, boxes: np.ndarray, found: np.ndarray, audio: np.ndarray, cfg: IngestConfig) -> dict:
    """Face-box and mouth-motion statistics of one output clip (boxes in its pixels)."""
    n, size = len(frames), frames.shape[1]
    scale = cfg.detect_side / size
    mouth = np.full(n, np.nan, dtype=np.float32)
    for i in np.flatnonzero(found):
        big = np.asarray(Image.fromarray(frames[i]).resize((cfg.detect_side,) * 2, Image.BILINEAR))
        mouth[i] = faces.mouth_opening(faces.landmarks(big, boxes[i] * scale))
    b = boxes[found]
    sides, centres = (b[:, 2] - b[:, 0]) / size, (b[:, :2] + b[:, 2:]) / 2 / size
    filled = np.where(np.isnan(mouth), np.nanmean(mouth), mouth)
    env = faces.audio_envelope(audio, cfg.audio_rate, cfg.fps, n)
    corr, _ = faces.best_lag_correlation(filled, env, 3)
    return {
        "face_rate": float(found.mean()),
        "face_size_mean": float(np.median(sides)),
        "face_size_std": float(sides.std()),
        "face_cx_std": float(centres[:, 0].std()),
        "face_cy_std": float(centres[:, 1].std()),
        "mouth_open_mean": float(np.nanmean(mouth)),
        "mouth_open_std": float(np.nanstd(mouth)),
        "mouth_audio_corr": float(corr),
    }


def _split(source: Source, cfg: IngestConfig) -> str:
    if source.split in ("train", "bench"):
        return source.split
    if cfg.bench_fraction > 0:
        h = int(hashlib.sha1(source.identity.encode()).hexdigest()[:8], 16) / 16**8
        return "bench" if h < cfg.bench_fraction else "train"
    return "train"


def _clip_row(clip_id, source, split, k, n, frames, audio, masks, out_boxes, found, cfg) -> dict:
    return {
        "clip_id": clip_id,
        "path": f"{clip_id}.mp4",
        "audio_path": f"{clip_id}.wav",
        "mask_path": f"{clip_id}.mask.npz",
        "source": str(source.path),
        "identity": source.identity,
        "scene": source.scene,
        "split": split,
        "start_s": k * n / cfg.fps,
        "fps": float(cfg.fps),
        "frames": n,
        "width": cfg.size,
        "height": cfg.size,
        "duration_s": n / cfg.fps,
        "has_audio": True,
        "audio_rate": cfg.audio_rate,
        **clip_stats(frames, out_boxes, found, audio, cfg),
    }


def ingest_file(source: Source, cfg: IngestConfig, out: Path) -> tuple[list[dict], list[dict]]:
    """One source video -> (manifest rows, quarantine entries).

    The video is decoded one clip at a time (frames downscaled to at most
    `decode_side` on their shorter side), so long recordings never sit in memory whole.
    """
    where = str(source.path)
    n = int(round(cfg.clip_seconds * cfg.fps))
    mask_file = source.path.with_name(source.path.stem + ".mask.npz")
    src_masks = load_masks(mask_file) if mask_file.is_file() else None
    split = _split(source, cfg)
    rows, bad, any_face, k = [], [], False, -1
    try:
        for k, clip in enumerate(iter_video(source.path, cfg.fps, cfg.audio_rate, n, max_side=cfg.decode_side)):
            if cfg.max_clips_per_video and k >= cfg.max_clips_per_video:
                break
            if clip.audio is None:
                return [], [{"path": where, "reason": "no audio stream"}]
            clip_id = f"{source.identity}/{source.scene}/{source.path.stem}-{k:02d}"
            if float(np.abs(clip.audio).max(initial=0.0)) < 1e-4:
                bad.append({"path": where, "clip_id": clip_id, "reason": "audio is silent"})
                continue
            _, h, w, _ = clip.frames.shape
            boxes, found = track_faces(clip.frames, cfg.detect_side)
            any_face |= bool(found.any())
            rate = float(found.mean())
            if rate < cfg.min_face_rate:
                bad.append({"path": where, "clip_id": clip_id, "reason": f"low face rate: found in {rate:.0%} of frames (< {cfg.min_face_rate:.0%})"})
                continue
            x0, y0, side = crop_box(boxes, found, h, w, cfg)
            frames = _resize_stack(clip.frames, (x0, y0, side), cfg.size, Image.BICUBIC)
            out_boxes = (boxes - np.array([x0, y0, x0, y0], dtype=np.float32)) * (cfg.size / side)
            masks = None
            if src_masks is not None and len(src_masks) >= (k + 1) * n:
                m = src_masks[k * n : (k + 1) * n]
                if m.shape[1:] != (h, w):  # the frames were downscaled on decode
                    m = np.stack([np.asarray(Image.fromarray(f.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)) > 127 for f in m])
                masks = _resize_stack(m.astype(np.uint8) * 255, (x0, y0, side), cfg.size, Image.BILINEAR) > 127
            if masks is None:
                masks = box_mask(out_boxes, cfg.size, cfg.size)
            base = out / clip_id
            base.parent.mkdir(parents=True, exist_ok=True)
            write_video(base.with_suffix(".mp4"), frames, cfg.fps, clip.audio, cfg.audio_rate)
            write_audio(base.with_suffix(".wav"), clip.audio, cfg.audio_rate)
            save_masks(base.with_suffix(".mask.npz"), masks)
            rows.append(_clip_row(clip_id, source, split, k, n, frames, clip.audio, masks, out_boxes, found, cfg))
    except VideoError as e:
        return rows, bad + [{"path": where, "reason": e.reason}]
    if k < 0:  # not one whole clip: say how many frames there were
        try:
            short = read_video(source.path, fps=cfg.fps, audio_rate=cfg.audio_rate, max_side=64)
        except VideoError as e:
            return [], [{"path": where, "reason": e.reason}]
        if short.audio is None:
            return [], [{"path": where, "reason": "no audio stream"}]
        return [], [{"path": where, "reason": f"too few frames: {short.num_frames} < {n} needed for one clip"}]
    if not any_face and not rows and all(b["reason"].startswith("low face rate") for b in bad):
        return [], [{"path": where, "reason": "no face detected"}]
    return rows, bad


def _job(args: tuple[Source, IngestConfig, Path]) -> tuple[list[dict], list[dict]]:
    return ingest_file(*args)


def check_output(sources: list[str | Path], out: str | Path, force: bool = False) -> None:
    """Ingest replaces `out` whole, so refuse an `out` that holds or lies inside a source, and a
    non-empty `out` that is not an earlier ingest output (no MARKER file) unless `force`."""
    target = Path(out).resolve()
    for src in sources:
        s = Path(src).resolve()
        if s == target or target in s.parents or s in target.parents:
            raise ValueError(f"output {out} overlaps source {src}: ingest replaces its output folder whole, "
                             "so the output must lie outside every source and hold none of them")
    if target.exists() and not target.is_dir():
        raise ValueError(f"output {out} is a file, not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file() and not force:
        raise ValueError(f"output {out} is not empty and is not an earlier ingest output (no {MARKER}): ingest would "
                         "replace everything in it; choose another folder, or pass --force to replace it")


def ingest(
    sources: list[str | Path], out: str | Path, cfg: IngestConfig, progress: Callable[[int, int], None] | None = None,
    force: bool = False,
) -> dict:
    """Ingest every source into `out` (checked by `check_output` first); returns the summary
    (also in out/summary.json)."""
    check_output(sources, out, force)
    out = Path(out)
    found, quarantine = [], []
    for src in sources:
        s, bad = discover(src)
        found += s
        quarantine += bad
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows: list[dict] = []
    workers = min(cfg.workers or os.cpu_count() or 1, max(len(found), 1))
    jobs = [(s, cfg, work) for s in found]
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    results = pool.imap_unordered(_job, jobs) if pool else map(_job, jobs)
    try:
        for i, (r, bad) in enumerate(results, 1):
            rows += r
            quarantine += bad
            if progress:
                progress(i, len(jobs))
    finally:
        if pool:
            pool.close()
            pool.join()
    manifest = pd.DataFrame(rows, columns=COLUMNS).sort_values("clip_id").reset_index(drop=True)
    manifest.to_parquet(work / "manifest.parquet", index=False)
    quarantine.sort(key=lambda q: (q["path"], q.get("clip_id", "")))
    (work / "quarantine.jsonl").write_text("".join(json.dumps(q) + "\n" for q in quarantine))
    summary = {
        "sources": [str(s) for s in sources],
        "videos": len(found),
        "clips": len(manifest),
        "identities": int(manifest["identity"].nunique()),
        "scenes": int(manifest["scene"].nunique()),
        "splits": {k: int(v) for k, v in manifest["split"].value_counts().items()},
        "quarantined": len(quarantine),
        "reasons": dict(Counter(q["reason"].split(":")[0] for q in quarantine)),
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    (work / MARKER).write_text("written by tavr ingest; this folder is replaced whole by the next ingest into it\n")
    replace_dir(work, out)
    return summary
