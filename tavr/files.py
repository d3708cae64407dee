"""Writing files so that a reader never sees half of one: write beside, then rename."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
