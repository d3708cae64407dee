"""Export a model the gate passed, and register it as production.

    tavr export  [--gate reports/gate.json] [--model models/stage3] [--out models/export]
    tavr promote [--src models/export] [--dst models/production]

`export` always rewrites `out` and leaves export.json there = {"exported", "model", "reasons",
"pairs"}. Only when the gate passed does `out` also hold the pipeline (model_index.json,
transformer/, vae/: a `TAVRPipeline.from_pretrained` folder, what `tavr serve` and the KServe
manifests load), gate.json and bench.json (the candidate's benchmark numbers). A failed gate
leaves no pipeline, so nothing stale can be served or deployed.

`promote` copies an exported model to the production registry, which the next gate compares
candidates with. Both write beside the destination and rename, so a reader never sees half a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tavr.files import replace_dir, write_json

PIPELINE_PARTS = ("model_index.json", "transformer", "vae")


def export(gate_path: str | Path, model: str | Path, out: str | Path) -> dict:
    """Write `out` from the gate's decision (see the module text); returns export.json's content."""
    gate_path, model, out = Path(gate_path), Path(model), Path(out)
    if not gate_path.is_file():
        raise FileNotFoundError(f"{gate_path} does not exist: run `tavr gate` first")
    decision = json.loads(gate_path.read_text())
    passed = bool(decision.get("pass"))
    if passed and not (model / "model_index.json").is_file():
        raise FileNotFoundError(f"{model} is not a pipeline folder (no model_index.json)")
    staged = out.with_name(out.name + ".tmp")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    if passed:
        for part in PIPELINE_PARTS:
            src = model / part
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, staged / part)
        write_json(staged / "gate.json", decision, indent=1)
        write_json(staged / "bench.json", {"pairs": decision.get("pairs"), "metrics": decision["candidate"]}, indent=1)
    info = {"exported": passed, "model": str(model), "reasons": decision.get("reasons", []), "pairs": decision.get("pairs")}
    write_json(staged / "export.json", info, indent=1)
    replace_dir(staged, out)
    return info


def promote(src: str | Path, dst: str | Path) -> None:
    """Copy the exported model in `src` to the production registry `dst`."""
    src, dst = Path(src), Path(dst)
    info = json.loads((src / "export.json").read_text()) if (src / "export.json").is_file() else {}
    if not info.get("exported") or not (src / "bench.json").is_file():
        raise ValueError(f"{src} holds no exported model (the gate did not pass, or `tavr export` has not run)")
    staged = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(src, staged)
    replace_dir(staged, dst)


def not_exported_reason(directory: str | Path) -> str | None:
    """Why `directory` holds no model when it is an export the gate refused; None otherwise."""
    path = Path(directory) / "export.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    if info.get("exported"):
        return None
    reasons = "; ".join(info.get("reasons", [])) or "no reasons recorded"
    return f"{directory} holds no model: the deployment gate did not pass ({reasons})"
