"""Client of the TAVR predictor: files in, mp4 out, over KServe's V1 or V2 protocol.

    answer = generate("http://localhost:8080", reference="ref.mp4", background="bg.png",
                      audio="speech.wav", out="talking.mp4", steps=20, seed=0)

A 503 is retried after the server's Retry-After (up to `retries` times); any other
error answer raises ClientError with the server's JSON message.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx


class ClientError(RuntimeError):
    def __init__(self, status: int, body: dict | str):
        message = body.get("error", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.body = status, body


def _b64(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return base64.b64encode(path.read_bytes()).decode("ascii")


def instance(reference, background, audio, reference_audio=None, **options) -> dict:
    """One request instance from media files; options: prompt, steps, seed, keep_ratio, guidance, timeout_s."""
    fields = {"reference_video": _b64(reference), "target_background": _b64(background), "driving_audio": _b64(audio)}
    if reference_audio is not None:
        fields["reference_audio"] = _b64(reference_audio)
    return {**fields, **{k: v for k, v in options.items() if v is not None}}


V2_TYPES = {"steps": "INT64", "seed": "INT64", "keep_ratio": "FP32", "guidance": "FP32", "timeout_s": "FP32"}


def v2_body(fields: dict) -> dict:
    """One instance as an Open Inference Protocol request (every input shape [1])."""
    inputs = [{"name": k, "shape": [1], "datatype": V2_TYPES.get(k, "BYTES"), "data": [v]} for k, v in fields.items()]
    return {"inputs": inputs}


def post(url: str, name: str, fields: dict, protocol: str = "v1", timeout: float = 900.0, retries: int = 3) -> dict:
    """Send one instance; return the answer's fields (video as base64)."""
    if protocol not in ("v1", "v2"):
        raise ValueError(f"protocol must be v1 or v2; got {protocol!r}")
    base = url.rstrip("/")
    endpoint = f"{base}/v1/models/{name}:predict" if protocol == "v1" else f"{base}/v2/models/{name}/infer"
    body = {"instances": [fields]} if protocol == "v1" else v2_body(fields)
    for attempt in range(retries + 1):
        response = httpx.post(endpoint, json=body, timeout=timeout)
        if response.status_code == 503 and attempt < retries:
            time.sleep(float(response.headers.get("retry-after", 5)))
            continue
        break
    try:
        answer = response.json()
    except ValueError:
        answer = response.text
    if response.status_code != 200:
        raise ClientError(response.status_code, answer)
    if protocol == "v1":
        return answer["predictions"][0]
    return {o["name"]: o["data"][0] for o in answer["outputs"]}


def generate(url: str, reference, background, audio, out, name: str = "tavr", protocol: str = "v1",
             reference_audio=None, timeout: float = 900.0, retries: int = 3, **options) -> dict:
    """Generate a video from files and write it to `out`; returns duration_s, seconds, model_version."""
    answer = post(url, name, instance(reference, background, audio, reference_audio, **options), protocol, timeout, retries)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(answer.pop("video")))
    return answer


def wait_ready(url: str, name: str = "tavr", timeout: float = 300.0, alive=None) -> float:
    """Poll /v2/models/<name>/ready until it answers 200; returns the seconds waited.

    `alive()` (optional) is asked between polls, e.g. whether the server process still runs;
    False or the timeout raises RuntimeError.
    """
    start = time.monotonic()
    while True:
        try:
            if httpx.get(f"{url.rstrip('/')}/v2/models/{name}/ready", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"the server at {url} stopped before it was ready")
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"the server at {url} was not ready after {timeout:g} s")
        time.sleep(0.5)
