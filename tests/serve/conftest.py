"""A real `tavr serve` process on loopback, serving a small untrained pipeline, and media to send it."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tavr.config import GenerateConfig, ModelConfig, SynthConfig
from tavr.data import synth
from tavr.data.video import write_audio, write_video
from tavr.pipeline import TAVRPipeline
from tavr.serve.client import wait_ready

GEN = GenerateConfig(size=128, chunk_frames=9, reference_frames=9, steps=2, sampler="euler")
LIMITS = {"max_audio_seconds": 3.0, "max_request_mb": 1.0, "queue_size": 2, "retry_after_s": 7, "max_steps": 8}


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Files: a talking reference, a background video and still, 1-s and 4-s driving audio, a faceless video."""
    root = tmp_path_factory.mktemp("media")
    allowed = root / "allowed"
    allowed.mkdir()
    specs = synth.plan(SynthConfig())
    ref, tgt = synth.render_clip(SynthConfig(), specs[0]), synth.render_clip(SynthConfig(), specs[9])
    write_video(allowed / "ref.mp4", ref.frames[:25], 25, ref.audio[:16000], 16000)
    write_video(root / "bg.mp4", tgt.frames[:25], 25)
    from PIL import Image

    Image.fromarray(tgt.frames[0]).resize((160, 96)).save(root / "bg.png")  # not square: the server crops
    write_audio(root / "speech.wav", np.resize(tgt.audio, 16000), 16000)  # 1.00 s
    write_audio(root / "long.wav", np.resize(tgt.audio, 4 * 16000), 16000)  # over the 3-s limit
    ramp = np.linspace(0, 255, 128, dtype=np.float32)
    plain = np.broadcast_to((ramp[None, :, None, None] * 0.5 + ramp[None, None, :, None] * 0.5), (25, 128, 128, 3))
    write_video(root / "noface.mp4", plain.astype(np.uint8), 25)
    write_video(root / "outside.mp4", ref.frames[:25], 25)
    return {"root": root, "allowed": allowed, "ref": allowed / "ref.mp4", "bg": root / "bg.mp4", "still": root / "bg.png",
            "audio": root / "speech.wav", "long": root / "long.wav", "noface": root / "noface.mp4",
            "outside": root / "outside.mp4"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, media):
    """Start `python -m tavr.cli serve` and wait until /ready answers; yields {"url", "log", "process"}."""
    root = tmp_path_factory.mktemp("server")
    TAVRPipeline.from_config(ModelConfig(num_layers=2), GEN, seed=0).save_pretrained(root / "model")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"serve": {**LIMITS, "allowed_root": str(media["allowed"])}}))
    port = _free_port()
    log = open(root / "server.log", "w")
    cmd = [sys.executable, "-m", "tavr.cli", "serve", "--model-dir", str(root / "model"), "--port", str(port), "--params", str(params)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, timeout=180, alive=lambda: proc.poll() is None)
        except RuntimeError as e:
            pytest.fail(f"{e}:\n{(root / 'server.log').read_text()[-3000:]}")
        yield {"url": url, "log": root / "server.log", "process": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
