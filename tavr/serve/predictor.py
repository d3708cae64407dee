"""TAVRModel: the KServe predictor, and `serve`, which runs it as a local HTTP server.

    POST /v1/models/<name>:predict   {"instances": [{"reference_video": B64, "target_background": B64,
                                     "driving_audio": B64, "prompt": "...", "steps": N, "seed": N, ...}]}
                                  -> {"predictions": [{"video": B64 mp4, "duration_s": X, "seconds": X,
                                     "model_version": "..."}]}
    POST /v2/models/<name>/infer     the same fields as named inputs (media and prompt BYTES,
                                     steps and seed INT32/INT64, keep_ratio, guidance, timeout_s FP32/FP64),
                                     shape [N] for N instances; outputs video (BYTES), duration_s
                                     (FP32), seconds (FP32), model_version (BYTES), each [N]
    GET  /v2/models/<name>/ready     200 once loaded and warmed up

Fields and their rules: tavr/serve/requests.py. Answers besides 200:

    400  {"error", "field", "rule"}  bad input of any kind, an oversized body included
    503  {"error"} + Retry-After     the queue is full (one generation runs, serve.queue_size wait)
    504  {"error", "field", "rule"}  the generation ran past its timeout and was cancelled

Bad input never reaches the model's state: the server stays ready after any of them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import tempfile
import time
import uuid
from pathlib import Path

import kserve
import numpy as np
import torch
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import InferOutput, InferRequest, InferResponse

from tavr.config import ServeConfig
from tavr.serve.requests import FIELDS, RequestError, check_fields, check_instance

HASHED_BYTES = 256 * 2**20  # files up to this size enter the version hash by content, larger ones by size
INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
V2_TYPES = {"steps": INTS, "seed": INTS, **{k: ("FP32", "FP64", *INTS) for k in ("keep_ratio", "guidance", "timeout_s")}}


class Busy(Exception):
    """Every queue slot is taken: 503 with Retry-After."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"busy: one generation running and {waiting} waiting; retry in {retry_after} s")
        self.retry_after = retry_after


class GenerationTimeout(Exception):
    """A generation passed its deadline and was stopped between denoising steps: 504."""

    def __init__(self, timeout_s: float):
        super().__init__(f"timeout_s: the generation ran past {timeout_s:g} s and was cancelled")
        self.as_json = {"error": str(self), "field": "timeout_s", "rule": "timeout"}


def model_version(directory: str | Path) -> str:
    """<folder name>-<12 hex of a hash over the folder's files>: changes whenever weights or config do."""
    directory = Path(directory).resolve()
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        size = path.stat().st_size
        digest.update(path.read_bytes() if size <= HASHED_BYTES else str(size).encode())
    return f"{directory.name}-{digest.hexdigest()[:12]}"


def to_instances(payload, max_instances: int) -> tuple[list[dict], InferRequest | None]:
    """A V1 body (dict, or JSON bytes sent without a JSON content type) or a V2 InferRequest
    -> (one dict of fields per instance, the InferRequest or None)."""
    if isinstance(payload, InferRequest):
        columns, count = {}, None
        for tensor in payload.inputs:
            if tensor.name not in FIELDS:
                raise RequestError(tensor.name, "known_field", f"unknown input (known: {', '.join(sorted(FIELDS))})")
            if tensor.name in columns:
                raise RequestError(tensor.name, "duplicate", "is given twice")
            kinds = V2_TYPES.get(tensor.name, ("BYTES",))
            if tensor.datatype not in kinds:
                raise RequestError(tensor.name, "datatype", f"is {tensor.datatype}; expected {' or '.join(kinds)}")
            values = list(np.asarray(tensor.data, dtype=object).reshape(-1))
            if len(tensor.shape) != 1 or tensor.shape[0] != len(values):
                raise RequestError(tensor.name, "shape", f"shape {list(tensor.shape)} does not match its {len(values)} values ([N] expected)")
            if count is not None and len(values) != count:
                raise RequestError(tensor.name, "shape", f"has {len(values)} values; other inputs have {count}")
            columns[tensor.name], count = values, len(values)
        instances = [{k: v[i] for k, v in columns.items()} for i in range(count or 0)]
    else:
        if isinstance(payload, (bytes, bytearray)):
            try:
                payload = json.loads(payload)
            except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, 4300+ digit numbers, deep nesting
                raise RequestError("body", "json", f"is not JSON ({type(e).__name__})") from e
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError("instances", "required", 'the body must be {"instances": [{...}]}')
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise RequestError("instances", "list", "must be a list of objects")
    if not 1 <= len(instances) <= max_instances:
        raise RequestError("instances", "count", f"{len(instances)} instances; 1 to {max_instances} per request")
    return instances, payload if isinstance(payload, InferRequest) else None


class TAVRModel(kserve.Model):
    """A TAVR pipeline folder behind KServe's V1 and V2 protocols, one generation at a time."""

    def __init__(self, cfg: ServeConfig):
        super().__init__(cfg.name)
        self.cfg = cfg
        self.pipeline = None
        self.version = ""
        self._active = 0  # requests admitted and not yet answered (running + waiting)
        self._lock = asyncio.Lock()

    def load(self) -> bool:
        """Load the pipeline folder and run one short generation; only then is the model ready."""
        from tavr.pipeline import TAVRPipeline

        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.pipeline = TAVRPipeline.from_pretrained(self.cfg.model_dir).to(device)
        self.version = self.cfg.version or model_version(self.cfg.model_dir)
        self._warm_up()
        self.ready = True
        return self.ready

    def _warm_up(self) -> None:
        """A full chunk on synthetic inputs: every code path (VAE both ways, transformer) runs once."""
        gen = self.pipeline.config
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (gen.min_reference_frames, gen.size, gen.size, 3), dtype=np.uint8)
        mask = np.zeros((gen.size, gen.size), dtype=bool)
        mask[gen.size // 4 : 3 * gen.size // 4, gen.size // 4 : 3 * gen.size // 4] = True
        audio = rng.standard_normal(int(gen.chunk_frames / gen.fps * gen.audio_rate)).astype(np.float32) * 0.1
        self.pipeline(frames, frames[0], audio, background_mask=mask, num_steps=self.cfg.warmup_steps)

    # ----- one request -----

    async def predict(self, payload, headers=None):
        instances, v2 = to_instances(payload, self.cfg.max_instances)
        for instance in instances:
            check_fields(instance, self.cfg)  # cheap: a bad field is a 400 even when the queue is full
        if self._active >= 1 + self.cfg.queue_size:
            raise Busy(self._active - 1, self.cfg.retry_after_s)
        self._active += 1
        try:
            gen = self.pipeline.config
            jobs = [await asyncio.to_thread(check_instance, inst, self.cfg, gen) for inst in instances]
            async with self._lock:
                timeout = min(job.timeout_s for job in jobs)  # one budget for the whole request
                deadline = time.monotonic() + timeout
                outputs = [await asyncio.to_thread(self._generate, job, deadline, timeout) for job in jobs]
        finally:
            self._active -= 1
        if v2 is None:
            return {"predictions": outputs}
        columns = [("video", "BYTES"), ("duration_s", "FP32"), ("seconds", "FP32"), ("model_version", "BYTES")]
        tensors = [InferOutput(name, [len(outputs)], kind, [o[name] for o in outputs]) for name, kind in columns]
        return InferResponse(response_id=v2.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=tensors)

    def _generate(self, job, deadline: float, timeout: float) -> dict:
        """Run one checked job (in a worker thread); stop between denoising steps past `deadline`."""

        def check_deadline(done: int, total: int) -> None:
            if time.monotonic() > deadline:
                raise GenerationTimeout(timeout)

        with tempfile.TemporaryDirectory(prefix="tavr-answer-") as tmp:
            try:
                out = self.pipeline(**job.pipeline_kwargs(), out_path=Path(tmp) / "out.mp4", progress=check_deadline)
            except ValueError as e:  # the pipeline's own input checks
                raise RequestError("instances", "pipeline", str(e)) from e
            video = base64.b64encode(out.path.read_bytes()).decode("ascii")
        return {"video": video, "duration_s": len(out.frames) / out.fps, "seconds": out.seconds, "model_version": self.version}


# ----- the HTTP server -----


class RequestGuard:
    """ASGI middleware in front of KServe's app.

    A body over `max_bytes` (declared or streamed) is answered 400 without being kept in memory;
    KServe's own 400s (a body it cannot parse, say) get the {"error", "field", "rule"} shape of ours.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def too_large(self) -> RequestError:
        return RequestError("body", "max_request_mb", f"the request is larger than {self.max_bytes / 2**20:g} MiB")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        refusal = None
        if declared.isdigit() and int(declared) > self.max_bytes:
            refusal = self.too_large()
        elif scope.get("path", "").endswith("/infer") and b"inference-header-content-length" in headers:
            refusal = RequestError("body", "json", "the binary tensor extension is not supported: send JSON with base64 media")
        if refusal is not None:
            await _drain(receive)  # so the client gets the answer rather than a broken pipe
            return await JSONResponse(refusal.as_json(), status_code=400)(scope, receive, send)
        seen, held, over = 0, [], False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise self.too_large()
            return message

        async def reshaped(message):
            if message["type"] == "http.response.start" and message["status"] == 400:
                held.append(message)  # hold the head until the body shows whose 400 it is
                return
            if held and message["type"] == "http.response.body":
                body = message.get("body", b"")
                try:
                    error = json.loads(body)
                except ValueError:
                    error = None
                if over:  # whatever caught the streamed-limit error answers with it
                    body = json.dumps(self.too_large().as_json()).encode()
                elif isinstance(error, dict) and "field" not in error:
                    detail = str(error.get("error") or error.get("detail") or "cannot be read")
                    rule = "json" if "Unrecognized request format" in detail else "format"
                    body = json.dumps({"error": f"body: {detail}", "field": "body", "rule": rule}).encode()
                head = held.pop()
                headers = [(k, v) for k, v in head["headers"] if k.lower() != b"content-length"]
                await send({**head, "headers": headers + [(b"content-length", str(len(body)).encode())]})
                message = {**message, "body": body}
            await send(message)

        await self.app(scope, counted, reshaped)


async def _drain(receive) -> None:
    """Read and drop the rest of a request body."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _request_error(_, exc: RequestError):
    return JSONResponse(exc.as_json(), status_code=400)


async def _schema_error(_, exc: RequestValidationError):
    first = (exc.errors() or [{}])[0]
    field = ".".join(str(p) for p in first.get("loc", ("body",)))
    return JSONResponse({"error": f"{field}: {first.get('msg', 'invalid')}", "field": field, "rule": "schema"}, status_code=400)


async def _busy(_, exc: Busy):
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})


async def _timeout(_, exc: GenerationTimeout):
    return JSONResponse(exc.as_json, status_code=504)


def _bind(host: str) -> None:
    """kserve's RESTServer always binds 0.0.0.0 (kserve 0.15): set uvicorn's host on the one it builds."""
    from kserve import model_server
    from kserve.protocol.rest.server import RESTServer

    class HostRESTServer(RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.config.host = host

    model_server.RESTServer = HostRESTServer


def serve(cfg: ServeConfig) -> None:
    """Load, warm up, then serve V1 and V2 on cfg.host:cfg.port until interrupted (blocks)."""
    from kserve.model_server import app

    check_limits(cfg)
    model = TAVRModel(cfg)
    model.load()
    app.add_middleware(RequestGuard, max_bytes=int(cfg.max_request_mb * 2**20))
    for exc, handler in ((RequestError, _request_error), (RequestValidationError, _schema_error),
                         (Busy, _busy), (GenerationTimeout, _timeout)):  # fmt: skip
        app.add_exception_handler(exc, handler)
    _bind(cfg.host)
    kserve.ModelServer(http_port=cfg.port, enable_grpc=False, workers=1).start([model])


def check_limits(cfg: ServeConfig) -> None:
    """Raise ValueError for settings no server can work with."""
    problems = []
    if cfg.queue_size < 0:
        problems.append(f"serve.queue_size {cfg.queue_size} < 0")
    if cfg.max_instances < 1 or cfg.max_steps < 1 or cfg.warmup_steps < 1:
        problems.append("serve.max_instances, max_steps and warmup_steps must be >= 1")
    for key in ("max_request_mb", "max_audio_seconds", "max_reference_seconds", "timeout_s"):
        if not getattr(cfg, key) > 0 or not math.isfinite(getattr(cfg, key)):
            problems.append(f"serve.{key} must be a positive number")
    if cfg.retry_after_s < 0:
        problems.append(f"serve.retry_after_s {cfg.retry_after_s} < 0")
    if not 0 < cfg.port < 65536:
        problems.append(f"serve.port {cfg.port} is not a TCP port")
    if problems:
        raise ValueError("; ".join(problems))
