"""Video and audio file IO on PyAV (FFmpeg): decode, probe, encode.

Conventions: frames are uint8 RGB arrays (F, H, W, 3); audio is float32 mono
(N,) in [-1, 1]; frame rates are exact `Fraction`s. Anything FFmpeg can read is
accepted; writing produces H.264 (yuv420p) + AAC, byte-identical for identical
input. A file that cannot be used raises `VideoError` with a short `reason`.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import os
import uuid
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

try:
    import av
except ImportError:  # a slim training image (latents only): reading or writing a media file then says so
    av = None

__all__ = [
    "Clip", "VideoError", "iter_video", "probe", "read_audio", "read_video", "write_audio", "write_video",
]

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


def _need_av() -> None:
    if av is None:
        raise ImportError("reading or writing media files needs PyAV: pip install av")


def _open(path: str | os.PathLike):
    _need_av()
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


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


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


def _frame_mono(frame) -> np.ndarray:
    """A resampled packed-float ("flt") audio frame -> (n,) float32, the mean of its channels.

    Packed, not planar: PyAV 18 misreads planar frames of 8 or more channels (it reports one
    plane too many and reads past the buffers), so planar multichannel input could crash.
    """
    channels = max(1, len(frame.layout.channels))
    return frame.to_ndarray().reshape(-1, channels).mean(axis=1, dtype=np.float32)


def _mono(chunks: list, resampler) -> np.ndarray:
    """Flush `resampler` after `chunks` (mono (n,) arrays) -> (N,) clipped to [-1, 1]."""
    chunks = chunks + [_frame_mono(f) for f in resampler.resample(None)]
    if not chunks:
        return np.zeros(0, np.float32)
    return np.clip(np.concatenate(chunks), -1.0, 1.0)


_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError) if av is not None else (OSError, ValueError)


def _only(container, stream) -> None:
    """Have the demuxer skip the packets of every stream but `stream`."""
    for other in container.streams:
        if other is not stream:
            other.discard = av.stream.Discard.all


def _decode_error(path, error) -> VideoError:
    detail = getattr(error, "strerror", None) or error or "no decodable video frames"
    return VideoError(path, f"cannot decode: {detail}")


class _Frames:
    """The decoded frames of `stream`, in order, as (time, uint8 RGB (H, W, 3)).

    Every frame is converted to the first frame's size, downscaled so its shorter side is
    `max_side` when it is longer than that. A decode error ends the sequence and is kept
    in `error` (a truncated file gives what decodes); `count` and `t0` (the first frame's
    time) are filled in as frames come out."""

    def __init__(self, container, stream, max_side: int | None = None):
        self.container, self.stream, self.max_side = container, stream, max_side
        self.fps = _stream_fps(stream)
        self.eps = float(stream.time_base or 0) + 1e-9  # timestamps are rounded to the time base
        self.size, self.error, self.count, self.t0 = None, None, 0, None
        stream.thread_type = "AUTO"  # frame + slice threads; output is unaffected
        _only(container, stream)
        # one converter for every frame: frame.to_ndarray(format=...) builds a new one each call, which
        # costs ~6 ms a 128x128 frame against ~0.3 ms reused (same pixels; measured with PyAV 18)
        self.convert = av.video.reformatter.VideoReformatter()

    def _rgb(self, frame) -> np.ndarray:
        if self.size is None:
            w, h = frame.width, frame.height
            short = min(w, h)
            if self.max_side is not None and short > self.max_side:
                w, h = (max(1, round(Fraction(side * self.max_side, short))) for side in (w, h))
            self.size = (w, h)
        if (frame.width, frame.height) == self.size:
            return self.convert.reformat(frame, format="rgb24").to_ndarray()
        w, h = self.size
        return self.convert.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()

    def __iter__(self):
        last = None
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    last = _time(frame, Fraction(0) if last is None else last + 1 / self.fps)
                    self.t0 = last if self.t0 is None else self.t0
                    self.count += 1
                    yield last, self._rgb(frame)
        except _DECODE_ERRORS as e:  # truncated/corrupt: keep what decoded
            self.error = e


def _pick(frames, out_fps: Fraction, src_fps: Fraction, eps: float, hold: int = 8):
    """(time, rgb) source frames resampled to `out_fps` by timestamps, lazily.

    Output k shows the source frame on screen at time k/out_fps after the first frame
    (the last one whose time is <= that, within `eps`; no interpolation); after the last
    source frame that one repeats, up to round(count / src_fps * out_fps) outputs (at
    least 1). An output comes once a later source frame shows which frame it is and the
    frames so far put it within that count (which only grows), so a stream stops exactly
    where a decode of the whole file would; up to `hold` outputs wait for the count
    before they go anyway (timestamps running ahead of the frame count)."""
    k, count, t0, shown, period = 0, 0, None, None, float(out_fps)
    due = collections.deque()  # outputs known by time, not yet within the count
    for t, rgb in frames:
        t0 = t if t0 is None else t0
        rel = float(t - t0)
        while count and (k + len(due)) / period + eps < rel:
            due.append(shown)
        shown, count = rgb, count + 1
        n_out = max(1, round(count / src_fps * out_fps))
        while due and (k < n_out or len(due) > hold):
            yield due.popleft()
            k += 1
    n_out = max(1, round(count / src_fps * out_fps)) if count else 0
    for _ in range(k, n_out):
        yield due.popleft() if due else shown


class _Audio:
    """The first audio stream of `path` as float32 mono at `rate`, with sample 0 at time
    `t0` (the first video frame): audio starting later is preceded by silence, audio
    starting earlier is cut, and reading past the end gives silence. It decodes on demand
    through a demuxer of its own, so memory holds about what was asked for, however the
    file interleaves audio with video. A decode error ends the audio."""

    def __init__(self, path, rate: int, t0: Fraction):
        self.container = _open(path)
        self.rate, self.t0 = rate, t0
        self.pos = None  # index (relative to t0) of buf[0]; set by the first audio frame
        self.buf = np.zeros(0, np.float32)
        stream = self.container.streams.audio[0]
        _only(self.container, stream)
        self.pieces = self._decode(stream)

    def _decode(self, stream):
        resampler = av.AudioResampler(format="flt", rate=self.rate)
        try:
            for frame in self.container.decode(stream):
                if self.pos is None:
                    a0 = _time(frame, None)
                    self.pos = 0 if a0 is None else round((a0 - self.t0) * self.rate)
                for out in resampler.resample(frame):
                    yield _frame_mono(out)
        except _DECODE_ERRORS:
            pass
        try:
            for out in resampler.resample(None):
                yield _frame_mono(out)
        except _DECODE_ERRORS:
            pass

    def take(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start + n) as (n,) float32; `start` must not go backwards."""
        if self.pos is not None and start > self.pos:  # drop what is behind
            drop = min(start - self.pos, len(self.buf))
            self.buf, self.pos = self.buf[drop:], self.pos + drop
        pieces, have = [self.buf], len(self.buf)
        while self.pos is None or self.pos + have < start + n:
            piece = next(self.pieces, None)
            if piece is None:
                break
            pieces.append(np.clip(piece, -1.0, 1.0))
            have += len(pieces[-1])
        self.buf = np.concatenate(pieces) if len(pieces) > 1 else self.buf
        out = np.zeros(n, np.float32)
        if self.pos is not None:
            lo, hi = max(start, self.pos), min(start + n, self.pos + len(self.buf))
            if hi > lo:
                out[lo - start:hi - start] = self.buf[lo - self.pos:hi - self.pos]
        return out

    def close(self) -> None:
        self.pieces.close()
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_video(path, fps=None, audio_rate: int = 16000, max_seconds: float | None = None,
               max_side: int | None = None, max_frames: int | None = None) -> Clip:
    """Decode a video file into a `Clip`.

    fps: resample to this rate by timestamps (output time k/fps takes the source frame
    shown at that time; no interpolation), else keep every frame at the stream rate.
    Audio is mono float32 at `audio_rate`, aligned to the first frame and padded or
    trimmed to round(duration * audio_rate) samples; None without an audio stream.
    max_side: downscale while decoding (keeping the aspect ratio, swscale "area") so
    the shorter side is at most this; the other side is rounded, so it may be odd.
    max_frames: stop after this many decoded source frames (whatever their timestamps), so
    a file packing thousands of frames into a second costs no more than that.
    A file that decodes partially returns what decodes. For long files see `iter_video`.
    """
    out_fps = None if fps is None else _as_fps(fps)
    limit = None if max_seconds is None else Fraction(max_seconds)
    if max_side is not None:
        _check_positive("max_side", max_side)
    with _open(path) as container:
        source = _Frames(container, _video_stream(container, path), max_side)
        has_audio = bool(container.streams.audio)
        times, frames = [], []
        for t, rgb in source:
            if limit is not None and times and t - times[0] >= limit:
                break
            if max_frames is not None and len(times) >= max_frames:
                break
            times.append(t)
            frames.append(rgb)
    if not frames:
        raise _decode_error(path, source.error)

    out_fps = out_fps or source.fps
    n_out = len(frames) if fps is None else max(1, round(len(frames) / source.fps * out_fps))
    if limit is not None:
        n_out = min(n_out, max(1, math.floor(limit * out_fps + Fraction(1, 10**6))))
    if fps is not None:
        frames = _pick(zip(times, frames), out_fps, source.fps, source.eps)
    clip = Clip(np.stack(list(itertools.islice(frames, n_out))), out_fps, None, audio_rate)
    if has_audio:
        with _Audio(path, audio_rate, times[0]) as audio:
            clip.audio = audio.take(0, round(clip.duration * audio_rate))
    return clip


def iter_video(path, fps, audio_rate: int = 16000, chunk_frames: int = 50,
               max_side: int | None = None) -> Iterator[Clip]:
    """Decode a video file lazily as consecutive `Clip`s of exactly `chunk_frames` frames.

    One pass front to back, holding about one chunk of frames (plus the audio not yet
    handed out), for files too long for `read_video`. Frames are resampled to `fps` as
    read_video(path, fps=fps) does (fps=None: the stream rate) and are its frames, chunk
    by chunk; a last partial chunk is dropped, so a file shorter than one chunk yields
    nothing. Chunk c has round(chunk_frames / fps * audio_rate) samples of audio starting
    at sample round(c * chunk_frames / fps * audio_rate) of read_video's audio (which
    makes the chunks' audio read_video's audio, end to end, when chunk_frames / fps *
    audio_rate is whole; otherwise starts are rounded so audio never drifts from the
    frames); None for every chunk without an audio stream. Audio is decoded through a
    second demuxer of the same file, so its memory does not depend on the interleaving.
    max_side: as in read_video. Errors (raised on the first `next`) as in read_video.
    """
    out_fps = None if fps is None else _as_fps(fps)
    _check_positive("chunk_frames", chunk_frames)
    if max_side is not None:
        _check_positive("max_side", max_side)
    return _iter_video(path, out_fps, audio_rate, chunk_frames, max_side)


def _iter_video(path, out_fps, audio_rate, chunk_frames, max_side) -> Iterator[Clip]:
    with contextlib.ExitStack() as stack:
        container = stack.enter_context(_open(path))
        source = _Frames(container, _video_stream(container, path), max_side)
        has_audio, audio = bool(container.streams.audio), None
        frames = (rgb for _, rgb in source) if out_fps is None else \
            _pick(source, out_fps, source.fps, source.eps)
        out_fps = out_fps or source.fps
        n_audio = round(chunk_frames / out_fps * audio_rate)
        chunk, i, c = None, 0, 0
        for rgb in frames:
            if chunk is None:
                chunk = np.empty((chunk_frames, *rgb.shape), np.uint8)
            chunk[i] = rgb
            i += 1
            if i < chunk_frames:
                continue
            clip = Clip(chunk, out_fps, None, audio_rate)
            if has_audio:
                if audio is None:  # opened once the first frame's time is known
                    audio = stack.enter_context(_Audio(path, audio_rate, source.t0))
                clip.audio = audio.take(round(c * chunk_frames / out_fps * audio_rate), n_audio)
            chunk, i, c = None, 0, c + 1
            yield clip
        if not source.count:
            raise _decode_error(path, source.error)


def read_audio(path: str | os.PathLike, rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """All audio of a file (wav, mp3, flac, or a video's first audio stream) as (N,)
    float32 mono at `rate`, cut to the stream's declared duration (an mp4's AAC track decodes up to
    1023 samples of padding past it). `max_seconds` stops decoding once that much is read (the result
    is then at most one decoded frame longer), so a long file costs no more than that."""
    limit = None if max_seconds is None else math.ceil(max_seconds * rate)
    with _open(path) as container:
        if not container.streams.audio:
            raise VideoError(path, "no audio stream")
        resampler = av.AudioResampler(format="flt", rate=rate)
        chunks, have = [], 0
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(_frame_mono(out))
                    have += len(chunks[-1])
                if limit is not None and have > limit:
                    break
        except (av.FFmpegError, OSError, ValueError) as e:
            if not chunks:
                raise VideoError(path, f"cannot decode: {getattr(e, 'strerror', None) or e}") from e
        audio = _mono(chunks, resampler)
        stream = container.streams.audio[0]
        if stream.duration and stream.time_base:  # AAC pads its last frame to 1024 samples: keep the stream's length
            audio = audio[: max(1, round(float(stream.duration * stream.time_base) * rate))]
        return audio


MAX_PIXELS = 4096 * 4096  # per frame, read from the header before anything is decoded
MAX_ASPECT = 8  # longer side : shorter side
MAX_SOURCE_FPS = 60  # a bounded read stops after max_seconds * this many source frames


def check_frame_size(width: int, height: int, what: str = "frames") -> None:
    """ValueError for frames no one should decode: empty, over MAX_PIXELS, or thinner than 1:MAX_ASPECT."""
    if width < 1 or height < 1 or width * height > MAX_PIXELS or max(width, height) > MAX_ASPECT * min(width, height):
        raise ValueError(f"{what} are {width}x{height}; at most {MAX_PIXELS // 10**6} megapixels and {MAX_ASPECT}:1")


def read_checked(path, fps: int, audio_rate: int, max_seconds: float, max_side: int, what: str = "video",
                 check: Callable[[int, int], None] | None = None):  # fmt: skip
    """read_video after the header's frame size passed `check` (default `check_frame_size`): decoding
    stops after `max_seconds` (or MAX_SOURCE_FPS times as many source frames), frames come out with their
    shorter side at most `max_side`. A 20-s 1080p file costs what its first seconds at that size cost,
    and a wrong size is told before any decoding. generate and the server read media through it."""
    facts = probe(path)
    (check or (lambda w, h: check_frame_size(w, h, f"{what} frames")))(facts["width"], facts["height"])
    return read_video(path, fps=fps, audio_rate=audio_rate, max_seconds=max_seconds, max_side=max_side,
                      max_frames=math.ceil(max_seconds * MAX_SOURCE_FPS))  # fmt: skip


def check_writable(path: str | os.PathLike) -> Path:
    """Raise ValueError unless a video can be written at `path` (not a folder, an .mp4, in a folder that
    exists or can be made and takes a file): checked before work whose result would be lost."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a folder; give a file name ending in .mp4")
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"output {path} must end in .mp4")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe_file = parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.probe"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as e:
        raise ValueError(f"output {path} cannot be written: {e.strerror or e}") from e
    return path


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
    _need_av()
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
