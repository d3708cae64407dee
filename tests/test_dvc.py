"""DVC versions the data for real: a second clone pulls exactly the outputs the first pushed."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synth": {"identities": 3, "scenes": 4, "bench_identities": 1, "bench_scenes": 2, "scenes_per_identity": 2,
              "clips_per_scene": 1, "workers": 2},
    "ingest": {"bench_pairs": 2},
}  # fmt: skip


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def _tree(root: Path, parts: list[str]) -> dict[str, str]:
    out = {}
    for part in parts:
        base = root / part
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.slow
def test_second_clone_pulls_the_same_outputs(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    a, b, remote = tmp_path / "a", tmp_path / "b", tmp_path / "remote"
    a.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, a / name)
    shutil.copytree(ROOT / ".dvc", a / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    shutil.copytree(ROOT / "tavr", a / "tavr", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((a / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (a / "params.yaml").write_text(yaml.safe_dump(params))
    (a / "data" / "raw").mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(["git", "init", "-q"], a)
    _run([sys.executable, "-m", "dvc", "remote", "modify", "local", "url", str(remote)], a)
    _run([sys.executable, "-m", "dvc", "repro", "qa"], a)  # the data stages; training has its own tests
    _run([sys.executable, "-m", "dvc", "push"], a)
    _run(["git", "add", "-A"], a)
    _run([*git, "commit", "-qm", "tiny run"], a)

    _run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    (b / "data" / "raw").mkdir(parents=True)
    _run([sys.executable, "-m", "dvc", "pull", "qa", "--with-deps"], b)
    status = _run([sys.executable, "-m", "dvc", "status", "qa", "--with-deps"], b)
    assert "up to date" in status, status
    outs = ["data/synth", "data/clips", "data/bench_pairs.json", "reports/qa"]
    tree_a, tree_b = _tree(a, outs), _tree(b, outs)
    assert tree_a == tree_b
    assert any(k.endswith(".mp4") for k in tree_a) and "data/clips/manifest.parquet" in tree_a
