"""Video and audio file IO on PyAV (FFmpeg): decode, probe, encode.

Conventions: frames are uint8 RGB arrays (F, H, W, 3); audio is float32 mono
(N,) in [-1, 1]; frame rates are exact `Fraction`s. Anything FFmpeg can read is
accepted; writing produces H.264 (yuv420p) + AAC, byte-identical for identical
input. A file that cannot be used raises `VideoError` with a short `reason`.
"""

from __future__ import annotations

import math
import os
import uuid
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["Clip", "VideoError", "probe", "read_audio", "read_video", "write_audio", "write_video"]

_AAC_FRAME = 1024  # samples per AAC frame


class VideoError(Exception):
    """A media file that cannot be used; `reason` is short and machine-usable."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(str(path), reason)
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(eq=False)
class Clip:
    """Decoded video: frames (F, H, W, 3) uint8 RGB at exact `fps`; audio (N,) float32
    mono at `audio_rate`, starting at the first frame and lasting `duration` (or None)."""

    frames: np.ndarray
    fps: Fraction
    audio: np.ndarray | None = None
    audio_rate: int = 16000

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        return float(self.num_frames / self.fps)


def _open(path: str | os.PathLike):
    try:
        container = av.open(str(path))
    except FileNotFoundError as e:
        raise VideoError(path, "file not found") from e
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(path, f"cannot decode: {getattr(e, 'strerror', None) or e}") from e
    if not container.streams:
        container.close()
        raise VideoError(path, "cannot decode: no streams found")
    return container


def _video_stream(container, path):
    """First real video stream (cover art in audio files does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise VideoError(path, "no video stream")


def _as_fps(fps) -> Fraction:
    """int/Fraction -> exact Fraction; a float like 29.97 -> nearest small fraction."""
    out = Fraction(fps).limit_denominator(1001000) if isinstance(fps, float) else Fraction(fps)
    if out <= 0:
        raise ValueError(f"fps must be positive; got {fps}")
    return out


def _stream_fps(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return Fraction(25)


def probe(path: str | os.PathLike) -> dict:
    """Container facts without decoding: format, width, height, fps (Fraction),
    num_frames (None if unknown), has_audio, audio_rate (None), duration (s or None)."""
    with _open(path) as container:
        v = _video_stream(container, path)
        a = container.streams.audio[0] if container.streams.audio else None
        duration = float(v.duration * v.time_base) if v.duration and v.time_base else (
            container.duration / av.time_base if container.duration is not None else None)
        return {
            "format": container.format.name,
            "codec": v.codec_context.name,
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "fps": _stream_fps(v),
            "num_frames": v.frames or None,
            "has_audio": a is not None,
            "audio_rate": a.rate if a is not None else None,
            "duration": duration,
        }


def _time(frame, fallback: Fraction | None) -> Fraction | None:
    """Presentation time of a decoded frame in seconds, exact."""
    ok = frame.pts is not None and frame.time_base is not None
    return frame.pts * Fraction(frame.time_base) if ok else fallback


def _mono(chunks: list, resampler) -> np.ndarray:
    """Flush `resampler` after `chunks` (fltp arrays (C, n)); average channels -> (N,)."""
    chunks = chunks + [f.to_ndarray() for f in resampler.resample(None)]
    if not chunks:
        return np.zeros(0, np.float32)
    audio = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)
    return np.clip(audio, -1.0, 1.0)


def read_video(path, fps=None, audio_rate: int = 16000, max_seconds: float | None = None) -> Clip:
    """Decode a video file into a `Clip`.

    fps: resample to this rate by timestamps (output time k/fps takes the source frame
    shown at that time; no interpolation), else keep every frame at the stream rate.
    Audio is mono float32 at `audio_rate`, aligned to the first frame and padded or
    trimmed to round(duration * audio_rate) samples; None without an audio stream.
    A file that decodes partially returns what decodes.
    """
    out_fps = None if fps is None else _as_fps(fps)
    with _open(path) as container:
        vstream = _video_stream(container, path)
        vstream.thread_type = "AUTO"  # frame + slice threads; output is unaffected
        astream = container.streams.audio[0] if container.streams.audio else None
        src_fps = _stream_fps(vstream)
        limit = None if max_seconds is None else Fraction(max_seconds)
        resampler = av.AudioResampler(format="fltp", rate=audio_rate)
        frames, times, audio, a0 = [], [], [], None
        v_done, a_done = False, astream is None
        try:
            for packet in container.demux(*[s for s in (vstream, astream) if s is not None]):
                for frame in packet.decode():
                    if packet.stream is vstream and not v_done:
                        t = _time(frame, times[-1] + 1 / src_fps if times else Fraction(0))
                        if limit is not None and times and t - times[0] >= limit:
                            v_done = True
                            continue
                        times.append(t)
                        frames.append(frame.to_ndarray(format="rgb24"))
                    elif packet.stream is astream and not a_done:
                        t = _time(frame, None)
                        a0 = t if a0 is None else a0
                        if limit is not None and times and t is not None and t - times[0] >= limit:
                            a_done = True
                        audio += [f.to_ndarray() for f in resampler.resample(frame)]
                if v_done and a_done:
                    break
        except (av.FFmpegError, OSError, ValueError) as e:  # truncated/corrupt: keep what decoded
            error = e
        else:
            error = None
    if not frames:
        detail = getattr(error, "strerror", None) or error or "no decodable video frames"
        raise VideoError(path, f"cannot decode: {detail}")

    out_fps = out_fps or src_fps
    n_out = len(frames) if fps is None else max(1, round(len(frames) / src_fps * out_fps))
    if limit is not None:
        n_out = min(n_out, max(1, math.floor(limit * out_fps + Fraction(1, 10**6))))
    if fps is None:
        video = np.stack(frames[:n_out])
    else:
        rel = np.array([float(t - times[0]) for t in times])
        eps = float(vstream.time_base or 0) + 1e-9  # timestamps are rounded to the time base
        want = np.arange(n_out) / float(out_fps)
        idx = np.clip(np.searchsorted(rel, want + eps, side="right") - 1, 0, len(frames) - 1)
        video = np.stack([frames[i] for i in idx])

    clip = Clip(video, out_fps, None, audio_rate)
    if astream is not None:  # shift so sample 0 is at the first frame's time; fit length
        mono = _mono(audio, resampler)
        shift = 0 if a0 is None else round((a0 - times[0]) * audio_rate)
        mono = np.concatenate([np.zeros(shift, np.float32), mono]) if shift > 0 else mono[-shift:]
        n = round(clip.duration * audio_rate)
        clip.audio = np.pad(mono[:n], (0, max(0, n - len(mono))))
    return clip


def read_audio(path: str | os.PathLike, rate: int = 16000) -> np.ndarray:
    """All audio of a file (wav, mp3, flac, or a video's first audio stream) as (N,)
    float32 mono at `rate`."""
    with _open(path) as container:
        if not container.streams.audio:
            raise VideoError(path, "no audio stream")
        resampler = av.AudioResampler(format="fltp", rate=rate)
        chunks = []
        try:
            for frame in container.decode(container.streams.audio[0]):
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
        except (av.FFmpegError, OSError, ValueError) as e:
            if not chunks:
                raise VideoError(path, f"cannot decode: {getattr(e, 'strerror', None) or e}") from e
        return _mono(chunks, resampler)


def _atomic_target(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def _check_audio(audio) -> np.ndarray:
    if not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.dtype.kind != "f":
        got = f"{audio.dtype} {audio.shape}" if isinstance(audio, np.ndarray) else type(audio).__name__
        raise ValueError(f"audio must be float (N,); got {got}")
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_audio(path: str | os.PathLike, audio: np.ndarray, rate: int = 16000) -> None:
    """Write (N,) float audio in [-1, 1] as a 16-bit PCM mono wav, atomically."""
    pcm = np.round(_check_audio(audio) * 32767).astype("<i2")
    path, tmp = _atomic_target(path)
    try:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(rate))
            w.writeframes(pcm.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _encode_audio(out, stream, audio: np.ndarray, start: int, stop: int) -> int:
    """Encode audio[start:] in AAC-frame chunks while they begin before `stop`."""
    rate = stream.codec_context.sample_rate
    while start < min(stop, len(audio)):
        chunk = audio[None, start:start + _AAC_FRAME]
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(stream.encode(frame))
        start += chunk.shape[1]
    return start


def write_video(path, frames: np.ndarray, fps, audio: np.ndarray | None = None,
                audio_rate: int = 16000, crf: int = 18) -> None:
    """Write frames (F, H, W, 3) uint8 RGB (H, W even) as H.264 yuv420p at `fps`
    (int or Fraction), with (N,) float audio as AAC mono, atomically. Identical input
    gives a byte-identical file (x264 runs single-threaded, without mb-tree)."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
            or frames.shape[-1] != 3 or frames.shape[0] == 0:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames must be uint8 (F, H, W, 3); got {got}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"frame height and width must be even; got {height}x{width}")
    fps = _as_fps(fps)
    if audio is not None:
        audio = _check_audio(audio)
    path, tmp = _atomic_target(path)
    try:
        with av.open(str(tmp), "w") as out:
            vs = out.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            # One thread, and no mb-tree: x264's AVX-512 mb-tree code reads uninitialised
            # memory, so with it the bytes change from run to run on AVX-512 CPUs.
            vs.options = {"crf": str(crf), "threads": "1", "mbtree": "0"}
            vs.codec_context.thread_count = 1
            if audio is not None:
                as_ = out.add_stream("aac", rate=audio_rate)
                as_.layout = "mono"
            sent = 0  # audio samples encoded so far; keep them interleaved with video
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts, frame.time_base = i, 1 / fps
                out.mux(vs.encode(frame))
                if audio is not None:
                    sent = _encode_audio(out, as_, audio, sent, round((i + 1) / fps * audio_rate))
            out.mux(vs.encode(None))
            if audio is not None:
                _encode_audio(out, as_, audio, sent, len(audio))
                out.mux(as_.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
