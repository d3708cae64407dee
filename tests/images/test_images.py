"""The CPU package image, built and run for real (`make test-images`, which builds it first; marked
`images`, so the default `make test` leaves these out): the pipeline's steps inside it through
kfp.local.DockerRunner, the predictor container answering a V1 request on 127.0.0.1, and the
non-root user the manifests require. Needs a running Docker daemon (docker/README.md)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tavr.config import load_config
from tavr.data.video import read_video
from tavr.serve.client import wait_ready
from tests.pipelines.conftest import TINY
from tests.serve.conftest import media  # noqa: F401  (a fixture: a talking reference, a background, speech)

pytestmark = pytest.mark.images
REPO = Path(__file__).resolve().parents[2]
IMAGE = load_config(REPO / "params.yaml").kubeflow.image


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def image():
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("no Docker daemon answers: start one (docker/README.md), then `make test-images`")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is not built: `make test-images` builds it before these tests")
    return IMAGE


def test_the_image_runs_as_the_non_root_user_the_manifests_name():
    assert docker("image", "inspect", "-f", "{{.Config.User}}", IMAGE).stdout.strip() == "1000"
    uid = docker("run", "--rm", "--network", "none", IMAGE, "id", "-u").stdout.strip()
    assert uid == "1000"
    runtime = (REPO / "manifests" / "trainer" / "runtime.yaml").read_text()
    assert "runAsUser: 1000" in runtime and "runAsNonRoot: true" in runtime
    # the package, its data models and the shipped base are inside; nothing of the build's wheelhouse is
    probe = ("import torch; from tavr.data import faces; from pathlib import Path; faces._detector(); faces._predictor(); "
             "assert Path('/app/models/base/transformer').is_dir(); assert not Path('/app/wheels').exists(); "
             "assert not Path('/wheels').exists(); print(torch.__version__)")  # fmt: skip
    out = docker("run", "--rm", "--network", "none", IMAGE, "python3", "-c", probe).stdout
    assert "+cpu" in out  # the CPU build: no CUDA libraries in this image


def test_the_pipeline_steps_run_inside_the_image(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY))
    root = tmp_path / "outputs"
    run = subprocess.run([sys.executable, "-m", "pipelines.run", "--local", "--docker", "--params", str(params),
                          "--root", str(root)], cwd=REPO, capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    paths = {k: Path(v.strip()) for k, v in (line.split(": ", 1) for line in run.stdout.splitlines() if ": " in line)
             if k in ("decision", "exported", "report")}  # fmt: skip
    assert set(paths) == {"decision", "exported", "report"}
    decision = json.loads(paths["decision"].read_text())
    assert isinstance(decision["pass"], bool) and decision["reasons"] is not None
    assert (paths["report"] / "summary.json").is_file() and (paths["report"] / "claims.md").is_file()  # the report folder
    run_root = paths["decision"].parents[1]
    tasks = {p.name for p in run_root.iterdir() if p.is_dir()}
    for step in ("ingest", "qa", "codec", "latents", "train-stage", "rl-stage", "bench", "upper-bound", "report", "gate", "export"):
        assert step in tasks, f"step {step} left no outputs: {sorted(tasks)}"
    assert {"train-stage-4", "rl-stage-2"} <= tasks  # TAVR's and the image baseline's stages
    # written inside the containers, as the image's user: the steps did not run on this host's Python
    assert {(run_root / t).stat().st_uid for t in tasks} == {1000}


def test_the_predictor_container_answers_a_v1_request(media, tmp_path):  # noqa: F811
    port = 18080 + int(time.time()) % 1000
    name = f"tavr-predictor-{port}"
    serve = {"serve": {"allowed_root": "/nowhere", "max_steps": 8}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(serve))
    tmp_path.chmod(0o755)  # pytest makes it 0700 for root; the container reads it as uid 1000
    docker("run", "-d", "--name", name, "--network", "host", "-v", f"{tmp_path}:/cfg:ro", IMAGE,
           "tavr", "serve", "--model-dir", "/app/models/base", "--host", "127.0.0.1", "--port", str(port),
           "--params", "/cfg/params.yaml")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        alive = lambda: docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip() == "true"  # noqa: E731
        try:
            wait_ready(url, timeout=300, alive=alive)
        except RuntimeError as e:
            logs = docker('logs', name, check=False)
            pytest.fail(f"{e}:\n{(logs.stdout + logs.stderr)[-3000:]}")
        assert docker("exec", name, "id", "-u").stdout.strip() == "1000"
        out = tmp_path / "out.mp4"
        sent = subprocess.run([sys.executable, "-m", "tavr.cli", "client", "generate", "--url", url, "--name", "tavr",
                               "--reference", str(media["ref"]), "--background", str(media["bg"]), "--audio", str(media["audio"]),
                               "--out", str(out), "--steps", "4", "--seed", "0"],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        clip = read_video(out)
        assert len(clip.frames) == 25 and clip.frames.shape[1:3] == (128, 128)  # 1 s of speech at 25 fps
        assert len(clip.audio) > 0.9 * 16000  # the driving audio is muxed in
    finally:
        docker("rm", "-f", name, check=False)
