"""One generation request: checked JSON fields -> decoded inputs (`Job`), or a `RequestError`.

A V1 instance and a V2 request carry the same fields (V2 as named inputs):

    field                       JSON / V2 type      rule
    reference_video             base64 / BYTES      required: a video (mp4, mov, webm, ...) with a face
    reference_audio             base64 / BYTES      optional: audio or video; default: the reference's own
    target_background           base64 / BYTES      required: an image (png, jpg, ...) or a video
                                                    (looped or cut to the output's length)
    driving_audio               base64 / BYTES      required: wav, mp3, flac (or a video's audio),
                                                    0 < duration <= serve.max_audio_seconds
    <media field>_uri           string / BYTES      instead of the base64 field: a path or file:// URI
                                                    below serve.allowed_root (a file:// URI may also
                                                    stand in the media field itself)
    prompt                      string / BYTES      at most 2000 characters
    steps                       int / INT32         1 .. serve.max_steps (default: the model's)
    seed                        int / INT32/INT64   >= 0
    keep_ratio                  number / FP32       (0, 1]
    guidance                    number / FP32       1 .. 20, both guidance scales (1 = off)
    timeout_s                   number / FP32       > 0; at most serve.timeout_s

Frames of up to 16 megapixels and 8:1 are read; the reference is cropped around its face as `tavr
ingest` crops (tavr.data.framing) and resized to the model's size, the background kept at its size up
to generate.max_output_side (the pipeline generates in its person's crop and pastes it back); decoding
stops at the duration limits or after 60 source frames per second of them. Every
failure names the field and the rule it broke; nothing here raises anything else.
"""

from __future__ import annotations

import base64
import binascii
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from kserve.errors import InvalidInput
from PIL import Image

from tavr.config import GenerateConfig, IngestConfig, ServeConfig

MEDIA = ("reference_video", "reference_audio", "target_background", "driving_audio")
REQUIRED = ("reference_video", "target_background", "driving_audio")
SCALARS = ("prompt", "steps", "seed", "keep_ratio", "guidance", "timeout_s")
FIELDS = frozenset(MEDIA) | {f"{m}_uri" for m in MEDIA} | frozenset(SCALARS)
MAX_PROMPT = 2000
MAX_GUIDANCE = 20.0


def _printable(text: str, limit: int = 300) -> str:
    """Text safe to echo in a JSON answer: lone surrogates escaped, at most `limit` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."


class RequestError(InvalidInput):
    """A bad request: HTTP 400 with {"error": message, "field": field, "rule": rule}."""

    def __init__(self, field: str, rule: str, detail: str):
        field = _printable(str(field))
        super().__init__(_printable(f"{field}: {detail}"))
        self.field, self.rule = field, rule

    def as_json(self) -> dict:
        return {"error": str(self), "field": self.field, "rule": self.rule}


@dataclass
class Job:
    """One checked instance, ready for TAVRPipeline.__call__."""

    reference_video: np.ndarray  # (F, S, S, 3) uint8: the face crop, F <= the model's reference_frames cap
    reference_audio: np.ndarray | None  # (N,) float32 at the model's audio rate
    target_background: np.ndarray  # (H, W, 3) or (F, H, W, 3) uint8, longer side <= max_output_side
    driving_audio: np.ndarray  # (N,) float32
    prompt: str = ""
    steps: int | None = None
    seed: int = 0
    keep_ratio: float | None = None
    guidance: float | None = None
    timeout_s: float = math.inf

    def pipeline_kwargs(self) -> dict:
        return {
            "reference_video": self.reference_video, "reference_audio": self.reference_audio,
            "target_background": self.target_background, "driving_audio": self.driving_audio,
            "prompt": self.prompt, "num_steps": self.steps, "seed": self.seed, "keep_ratio": self.keep_ratio,
            "reference_guidance": self.guidance, "audio_guidance": self.guidance,
        }  # fmt: skip


# ----- scalars -----


def _int(field: str, value, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise RequestError(field, "integer", f"expected an integer, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise RequestError(field, "range", f"{value} is outside [{lo}, {hi}]")
    return value


def _float(field: str, value, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise RequestError(field, "number", f"expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        raise RequestError(field, "range", f"{value} is outside {'(' if lo_open else '['}{lo}, {hi}]")
    return value


def _text(field: str, value) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(field, "utf-8", "is not UTF-8 text") from e
    if not isinstance(value, str):
        raise RequestError(field, "string", f"expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates ("\ud800") that JSON lets through
        raise RequestError(field, "utf-8", "is not valid Unicode text") from e
    return value


# ----- media -----


def decode_base64(field: str, value) -> bytes:
    """Standard base64, optionally as a data: URI; line breaks and spaces are ignored."""
    text = _text(field, value)
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    if not text:
        raise RequestError(field, "base64", "is empty")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(field, "base64", f"is not valid base64 ({e})") from e


def resolve_uri(field: str, value, allowed_root: str, max_bytes: int | None = None) -> Path:
    """A path or file:// URI -> an existing regular file below `allowed_root`, at most `max_bytes`."""
    text = _text(field, value)
    if not allowed_root:
        raise RequestError(field, "allowed_root", "paths are refused by this server (serve.allowed_root is not set)")
    parsed = urlparse(text)
    if parsed.scheme not in ("", "file"):
        raise RequestError(field, "uri_scheme", f"scheme {parsed.scheme!r} is not supported; use a path or file:// URI")
    if parsed.scheme and parsed.netloc not in ("", "localhost"):
        raise RequestError(field, "uri_scheme", f"file URIs name no host other than localhost; got {parsed.netloc!r}")
    relative = unquote(parsed.path) if parsed.scheme else text
    if "\x00" in relative:
        raise RequestError(field, "path", "contains a NUL character")
    root = Path(allowed_root).resolve()
    try:
        path = (root / relative).resolve()
        inside = path.is_relative_to(root)
        size = path.stat().st_size if inside and path.is_file() else None
    except (OSError, RuntimeError, ValueError) as e:  # too long, symlink loop, ...
        raise RequestError(field, "path", f"cannot be resolved ({type(e).__name__})") from e
    if not inside:
        raise RequestError(field, "allowed_root", f"{text} is outside the allowed root")
    if size is None:
        raise RequestError(field, "exists", f"{text} is not a file below the allowed root")
    if max_bytes is not None and size > max_bytes:
        raise RequestError(field, "max_request_mb", f"{text} has {size} bytes; at most {max_bytes}")
    return path


class _Source:
    """A media field as a file: the given path, or the base64 bytes in a temporary file."""

    def __init__(self, field: str, instance: dict, allowed_root: str, workdir: Path, max_bytes: int):
        self.field = field
        value = instance.get(field)
        if f"{field}_uri" in instance:
            self.path = resolve_uri(f"{field}_uri", instance[f"{field}_uri"], allowed_root, max_bytes)
        elif isinstance(value, str) and value.startswith("file://"):  # ':' is not base64: unambiguous
            self.path = resolve_uri(field, value, allowed_root, max_bytes)
        else:
            self.path = workdir / field
            self.path.write_bytes(decode_base64(field, instance[field]))

    def fail(self, kind: str, error: Exception) -> RequestError:
        reason = getattr(error, "reason", None) or str(error) or type(error).__name__
        return RequestError(self.field, "decodable", f"cannot be decoded as {kind} ({reason})")


def _check_pixels(field: str, width: int, height: int) -> None:
    from tavr.data.video import check_frame_size

    try:
        check_frame_size(width, height)
    except ValueError as e:
        raise RequestError(field, "frame_size", str(e)) from None


def _read_video(src: _Source, gen: GenerateConfig, max_seconds: float, max_side: int):
    """Frames (F, H, W, 3), shorter side at most `max_side`, and audio (tavr.data.video.read_checked): the
    declared frame size is checked before anything is decoded, and decoding stops after max_seconds."""
    from tavr.data.video import read_checked

    try:
        clip = read_checked(src.path, gen.fps, gen.audio_rate, max_seconds, max_side,
                            check=lambda w, h: _check_pixels(src.field, w, h))  # fmt: skip
    except RequestError:
        raise
    except Exception as e:  # any demuxer or decoder failure is the input's fault
        raise src.fail("video", e) from e
    return clip.frames, clip.audio


def _read_audio(src: _Source, gen: GenerateConfig, max_seconds: float) -> np.ndarray:
    """Decoding stops a little past `max_seconds`: a long, well-compressed file costs no more."""
    from tavr.data.video import read_audio

    try:
        return read_audio(src.path, gen.audio_rate, max_seconds=max_seconds + 1.0)
    except Exception as e:
        raise src.fail("audio", e) from e


def _read_background(src: _Source, gen: GenerateConfig, max_seconds: float) -> np.ndarray:
    """A still image (its size checked from the header before decoding) or a video, at most
    `max_output_side` on its longer side: the pipeline generates in its person's crop and answers at this size."""
    from tavr.data.framing import limit_side

    try:
        img = Image.open(src.path)
    except (OSError, ValueError, Image.DecompressionBombError):
        img = None  # not an image Pillow knows: try it as a video
    if img is not None:
        with img:
            _check_pixels(src.field, *img.size)
            if getattr(img, "n_frames", 1) == 1:
                try:
                    return limit_side(np.asarray(img.convert("RGB"))[None], gen.max_output_side)[0]
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    raise src.fail("image", e) from e
    frames, _ = _read_video(src, gen, max_seconds, gen.max_output_side)  # an animation or a video; the output is never longer
    return limit_side(frames, gen.max_output_side)


# ----- one instance -----


def check_fields(instance, limits: ServeConfig) -> dict:
    """The checks that need no decoding: field names, sources, scalars -> the scalar options.

    Cheap enough to run before a request is queued, so bad input is a 400 even when the server is busy.
    """
    if not isinstance(instance, dict):
        raise RequestError("instances", "object", f"each instance must be a JSON object, got {type(instance).__name__}")
    unknown = sorted(set(instance) - FIELDS, key=str)
    if unknown:
        raise RequestError(unknown[0], "known_field", f"unknown field (known: {', '.join(sorted(FIELDS))})")
    for field in MEDIA:
        if field in instance and f"{field}_uri" in instance:
            raise RequestError(field, "one_source", f"give {field} or {field}_uri, not both")
    for field in REQUIRED:
        if field not in instance and f"{field}_uri" not in instance:
            raise RequestError(field, "required", "is required (base64, or a path in <field>_uri)")
    for field in MEDIA:
        for key in (field, f"{field}_uri"):
            if key in instance:
                _text(key, instance[key])

    job = {"timeout_s": limits.timeout_s}
    if "prompt" in instance:
        job["prompt"] = _text("prompt", instance["prompt"])
        if len(job["prompt"]) > MAX_PROMPT:
            raise RequestError("prompt", "max_length", f"has {len(job['prompt'])} characters; at most {MAX_PROMPT}")
    if "steps" in instance:
        job["steps"] = _int("steps", instance["steps"], 1, limits.max_steps)
    if "seed" in instance:
        job["seed"] = _int("seed", instance["seed"], 0, 2**63 - 1)
    if "keep_ratio" in instance:
        job["keep_ratio"] = _float("keep_ratio", instance["keep_ratio"], 0.0, 1.0, lo_open=True)
    if "guidance" in instance:
        job["guidance"] = _float("guidance", instance["guidance"], 1.0, MAX_GUIDANCE)
    if "timeout_s" in instance:
        job["timeout_s"] = _float("timeout_s", instance["timeout_s"], 0.0, limits.timeout_s, lo_open=True)
    return job


def check_instance(instance, limits: ServeConfig, gen: GenerateConfig) -> Job:
    """Validate and decode one instance (a dict of the fields above) -> Job, or raise RequestError."""
    from tavr.data import framing
    from tavr.pipeline import reference_length

    job = check_fields(instance, limits)
    max_bytes = int(limits.max_request_mb * 2**20)
    with tempfile.TemporaryDirectory(prefix="tavr-request-") as tmp:
        sources = {
            f: _Source(f, instance, limits.allowed_root, Path(tmp), max_bytes)
            for f in MEDIA if f in instance or f"{f}_uri" in instance
        }  # fmt: skip
        driving = _read_audio(sources["driving_audio"], gen, limits.max_audio_seconds)
        seconds = len(driving) / gen.audio_rate
        if seconds * gen.fps < 1:
            raise RequestError("driving_audio", "min_duration", f"lasts {seconds:.3f} s, less than one frame")
        if seconds > limits.max_audio_seconds:
            raise RequestError("driving_audio", "max_duration", f"lasts more than {limits.max_audio_seconds:g} s, the limit")
        reference, own_audio = _read_video(sources["reference_video"], gen, limits.max_reference_seconds, 4 * gen.size)
        n_ref = reference_length(len(reference), gen.reference_frames)
        if n_ref < gen.min_reference_frames:
            raise RequestError("reference_video", "min_frames",
                               f"has {len(reference)} frames at {gen.fps} fps; at least {gen.min_reference_frames} are needed")
        reference = reference[:n_ref]
        try:  # the face crop the model works on, as `tavr ingest` makes it (a crop already passes through)
            reference = framing.crop(reference, framing.face_framing(reference, IngestConfig(), True, "reference"), gen.size)
        except ValueError as e:
            raise RequestError("reference_video", "face", f"{e} (searched {len(framing.face_sample(reference))} sampled frames)") from None
        ref_audio = own_audio
        if "reference_audio" in sources:
            ref_audio = _read_audio(sources["reference_audio"], gen, limits.max_reference_seconds)
            ref_audio = ref_audio[: int(limits.max_reference_seconds * gen.audio_rate)]
        background = _read_background(sources["target_background"], gen, seconds + gen.chunk_frames / gen.fps)
    return Job(reference, ref_audio, background, driving, **job)
