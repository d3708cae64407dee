"""Serving speed: seconds of compute per second of generated video, and requests per minute.

    .venv/bin/python benchmarks/serve_speed.py [--model DIR | --vae patch wan-tiny] [--seconds 4] [--steps N]
        [--sequential 3] [--requests 9] [--clients 3] [--json OUT]

Starts `tavr serve` as its own process on loopback (default limits, queue_size 2), with DIR or,
without one, an untrained pipeline of the tiny preset per `--vae` codec, one after another in one
run (the same shapes `make run` trains: speed does not depend on the weights). Inputs are a TAVR-Synth reference video, background
video and `seconds` of driving audio, sent as base64 over V1.

1. startup: seconds from launch to /ready (imports, load, warm-up generation).
2. sequential: `sequential` requests one after another: client wall time per request and per
   second of generated video (the "real-time factor"), and the server's own `seconds`.
3. throughput: `clients` threads send `requests` in all, back to back; a 503 waits its
   Retry-After and counts as a rejection. Requests per minute = completed / wall minutes.
   With clients = 1 + queue_size the queue stays full without rejections.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from tavr.config import SynthConfig, load_config
from tavr.data import synth
from tavr.data.video import write_audio, write_video
from tavr.pipeline import TAVRPipeline
from tavr.serve.client import wait_ready


def _media(folder: Path, seconds: float) -> dict:
    specs = synth.plan(SynthConfig())
    ref, tgt = synth.render_clip(SynthConfig(), specs[0]), synth.render_clip(SynthConfig(), specs[9])
    write_video(folder / "ref.mp4", ref.frames, 25, ref.audio, 16000)
    write_video(folder / "bg.mp4", tgt.frames, 25)
    write_audio(folder / "speech.wav", np.resize(tgt.audio, int(seconds * 16000)), 16000)
    b64 = {k: base64.b64encode((folder / f).read_bytes()).decode() for k, f in
           (("reference_video", "ref.mp4"), ("target_background", "bg.mp4"), ("driving_audio", "speech.wav"))}  # fmt: skip
    return b64


def _post(url: str, instance: dict) -> tuple[int, float, dict, str]:
    start = time.perf_counter()
    res = httpx.post(f"{url}/v1/models/tavr:predict", json={"instances": [instance]}, timeout=1800)
    wall = time.perf_counter() - start
    body = res.json()
    return res.status_code, wall, (body["predictions"][0] if res.status_code == 200 else body), res.headers.get("retry-after", "")


@contextlib.contextmanager
def server(model: str, tmp: Path):
    """`tavr serve` on `model` as its own process on a free loopback port with default limits (whatever
    ./params.yaml says), log in tmp/server.log; yields (url, seconds from launch to /ready), stops it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    (tmp / "none.yaml").write_text("{}\n")
    cmd = [sys.executable, "-m", "tavr.cli", "serve", "--model-dir", model, "--port", str(port), "--params", str(tmp / "none.yaml")]
    with open(tmp / "server.log", "w") as log:
        launched = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_ready(url, timeout=600, alive=lambda: proc.poll() is None)
            yield url, time.perf_counter() - launched
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def measure(model: str, instance: dict, args, tmp: Path) -> dict:
    """Start `tavr serve` on `model`, time startup, sequential requests and throughput; stop it."""
    with server(model, tmp) as (url, startup):
        sequential = [_post(url, instance) for _ in range(args.sequential)]
        if any(code != 200 for code, *_ in sequential):
            raise SystemExit(f"a sequential request failed: {sequential}")
        duration = sequential[0][2]["duration_s"]

        counts, latencies, lock = {"done": 0, "rejected": 0}, [], threading.Lock()
        remaining = list(range(args.requests))

        def client(_: int) -> None:
            while True:
                with lock:
                    if not remaining:
                        return
                    remaining.pop()
                while True:
                    code, wall, body, retry = _post(url, instance)
                    if code != 503:
                        break
                    with lock:
                        counts["rejected"] += 1
                    time.sleep(float(retry or 1))
                if code != 200:
                    raise RuntimeError(f"HTTP {code}: {body}")
                with lock:
                    counts["done"] += 1
                    latencies.append(wall)

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, range(args.clients)))
        minutes = (time.perf_counter() - start) / 60

    walls = [w for _, w, _, _ in sequential]
    server_s = [b["seconds"] for _, _, b, _ in sequential]
    result = {
        "video_seconds": duration, "startup_s": round(startup, 1),
        "sequential": {"requests": len(walls), "wall_s_median": round(statistics.median(walls), 2),
                       "server_s_median": round(statistics.median(server_s), 2),
                       "seconds_per_video_second": round(statistics.median(walls) / duration, 2)},
    }  # fmt: skip
    if counts["done"]:
        result["throughput"] = {
            "clients": args.clients, "requests": counts["done"], "rejected_503": counts["rejected"],
            "requests_per_minute": round(counts["done"] / minutes, 2),
            "latency_s_median": round(statistics.median(latencies), 2), "latency_s_max": round(max(latencies), 2),
        }  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="pipeline folder (default: untrained tiny-preset pipelines, one per --vae)")
    ap.add_argument("--vae", nargs="*", default=["patch"], help="codecs of the untrained pipelines, measured side by side "
                                                                "(patch, wan-tiny: the learned tiny VAE's shape)")
    ap.add_argument("--seconds", type=float, default=4.0, help="driving audio per request")
    ap.add_argument("--steps", type=int, default=0, help="denoising steps (default: the model's)")
    ap.add_argument("--sequential", type=int, default=3)
    ap.add_argument("--requests", type=int, default=9, help="throughput requests (0 = skip that part)")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        instance = _media(tmp, args.seconds)
        if args.steps:
            instance["steps"] = args.steps
        models = {args.model: args.model} if args.model else {}
        for name in [] if args.model else args.vae:
            cfg = load_config(None, {"generate": {"vae": name}})
            TAVRPipeline.from_config(cfg.model, cfg.generate).save_pretrained(tmp / name)  # same seed: same transformer
            models[f"untrained tiny preset, vae {name}"] = str(tmp / name)
        runs = {label: measure(folder, instance, args, tmp) for label, folder in models.items()}

    result = {"audio_seconds": args.seconds, "steps": args.steps or "model default", "models": runs, "cpu_threads": os.cpu_count()}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
