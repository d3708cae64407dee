"""File helpers: writes a reader never sees half of (write beside, then rename), and file hashes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1-MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | Path, data: Any, indent: int = 2, newline: bool = True) -> None:
    """JSON through a temporary file (per process) and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=str) + ("\n" if newline else ""))
    os.replace(tmp, path)


def replace_dir(staged: str | Path, dst: str | Path) -> None:
    """Put the finished folder `staged` in place of `dst`: the old one is moved aside first and
    removed last, so `dst` is never a half-written folder."""
    import shutil

    staged, dst = Path(staged), Path(dst)
    old = dst.with_name(f".{dst.name}.replaced-{os.getpid()}")  # a name of our own: a user's `dst.old` is never touched
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    staged.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
