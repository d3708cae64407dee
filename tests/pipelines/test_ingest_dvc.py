"""The ingest step pulls DVC-tracked videos from a remote before ingesting them."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tavr import steps
from tavr.config import SynthConfig
from tavr.data import synth


def _run(cmd, cwd):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{cmd}:\n{res.stdout}\n{res.stderr}"


@pytest.mark.slow
def test_dvc_sources_are_pulled_from_the_remote_then_ingested(tiny_params, tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], repo)
    _run([*dvc, "init", "-q"], repo)
    _run([*dvc, "remote", "add", "store", str(remote)], repo)
    tiny = synth.resized(SynthConfig(**yaml.safe_load(tiny_params)["synth"]), 3, 4)
    synth.generate(tiny, repo / "data" / "raw")
    _run([*dvc, "add", "data/raw"], repo)
    _run([*dvc, "push", "--remote", "store"], repo)
    shutil.rmtree(repo / "data" / "raw")
    shutil.rmtree(repo / ".dvc" / "cache")  # nothing local: the videos can only come from the remote

    numbers = steps.ingest(tiny_params, str(tmp_path / "clips"), sources="dvc:data/raw", repo=str(repo), remote="store")
    assert numbers["clips"] == 6 and numbers["bench_pairs"] == 2
    assert (repo / "data" / "raw").is_dir() and (tmp_path / "clips" / "bench_pairs.json").is_file()
    with pytest.raises(subprocess.CalledProcessError):
        steps.ingest(tiny_params, str(tmp_path / "clips2"), sources="dvc:data/missing", repo=str(repo))
