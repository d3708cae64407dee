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


def safetensors_problem(path: str | Path) -> str | None:
    """Why a .safetensors file is unreadable (missing, truncated, a broken header), or None when its
    size is exactly what its header describes: cheap, reads only the header."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n <= 0 or 8 + n > size:
                return f"truncated ({size} bytes)"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        return f"unreadable header ({e})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size < 8 + n + end:
        return f"truncated ({size} of the {8 + n + end} bytes its header describes)"
    if size > 8 + n + end:
        return f"{size} bytes where its header describes {8 + n + end}"
    return None


def load_weights(path: str | Path) -> dict:
    """A .safetensors file's tensors; a missing, truncated or broken file is a ValueError that names it
    (never a safetensors traceback), so a damaged model folder says which file to replace."""
    from safetensors.torch import load_file

    why = safetensors_problem(path)
    if why:
        raise ValueError(f"weights file {path} is {why}: copy or export the model again")
    return load_file(str(path))


def save_weights(module, path: str | Path) -> None:
    """A module's state dict as a .safetensors file, on the CPU whatever device it trained on."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))


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
