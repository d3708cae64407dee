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
