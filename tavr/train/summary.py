"""One file with the training targets: reports/train/summary.json (+ curves.png).

    python -m tavr.train.summary [--models models] [--out reports/train]

Reads each stage's metrics.json and writes

    {"codec":  {"seconds", "psnr"},
     "stage1": {"seconds", "loss_first", "loss_last", "identity_heldout", ...},
     "stage2": {same keys},
     "stage3": {"seconds", "reward_first", "reward_last", "identity_heldout", ...},
     "chain_seconds": codec + latents + stage1..3 seconds (latents: reports/train/latents.json),
     "checks": {"loss_drop", "stage2_beats_stage1", "stage3_beats_stage2"}}

loss_first/last are means over the first and last 10% of steps, reward_first/last over the first and last quarter.
curves.png plots the loss and reward curves logged by dvclive under runs/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tavr.files import write_json

KEYS = {
    "codec": ("seconds", "psnr_bench"),
    "stage1": ("seconds", "loss_first", "loss_last", "identity_heldout", "heldout_face_rate", "val_loss"),
    "stage2": ("seconds", "loss_first", "loss_last", "identity_heldout", "heldout_face_rate", "val_loss"),
    "stage3": ("seconds", "reward_first", "reward_last", "identity_heldout", "heldout_face_rate"),
}


def summarize(models: str | Path = "models", latents_seconds: float | None = None) -> dict:
    models = Path(models)
    out: dict = {}
    for stage, keys in KEYS.items():
        path = models / stage / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run the {stage} stage first (dvc repro {stage})")
        metrics = json.loads(path.read_text())
        out[stage] = {k: metrics.get(k) for k in keys}
    out["codec"]["psnr"] = out["codec"].pop("psnr_bench")  # reconstruction PSNR (dB) on 25-frame bench windows
    seconds = [out[s]["seconds"] for s in KEYS] + ([latents_seconds] if latents_seconds is not None else [])
    out["chain_seconds"] = float(sum(s for s in seconds if s is not None))
    s1, s2, s3 = out["stage1"], out["stage2"], out["stage3"]

    def gt(a, b):
        return None if a is None or b is None else bool(a > b)

    out["checks"] = {
        "loss_drop": None if not s1["loss_first"] else 1 - s1["loss_last"] / s1["loss_first"],
        "stage2_beats_stage1": gt(s2["identity_heldout"], s1["identity_heldout"]),
        "stage3_beats_stage2": gt(s3["identity_heldout"], s2["identity_heldout"]),
    }
    return out


def _curve(run_dir: Path, name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one dvclive metric; empty when it was never logged."""
    path = run_dir / "dvclive" / "plots" / "metrics" / f"{name}.tsv"
    if not path.is_file():
        return [], []
    import pandas as pd

    table = pd.read_csv(path, sep="\t").sort_values("step")
    return table["step"].tolist(), table[name].tolist()


def plot_curves(runs: str | Path, path: str | Path) -> None:
    """Loss of stages 1-2 on one step axis (stage 2 continues where stage 1 ended), stage-3 rewards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = Path(runs)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    offset = 0
    for stage in ("stage1", "stage2"):
        steps, values = _curve(runs / stage, "loss")
        ax1.plot([offset + s for s in steps], values, label=stage)
        offset += steps[-1] if steps else 0
    ax1.set(title="flow-matching loss", xlabel="step (stage 2 continues stage 1)", ylabel="loss")
    ax1.legend()
    for name in ("reward_mean", "identity", "lipsync"):
        steps, values = _curve(runs / "stage3", name)
        if steps:
            ax2.plot(steps, values, marker="o", label=name)
    ax2.set(title="stage 3 rewards (mean over the rollout)", xlabel="step", ylabel="reward")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Collect the training stages' metrics into one summary.")
    ap.add_argument("--models", default="models")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--latents-timing", default="reports/train/latents.json", help="written by tavr.train.latents")
    ap.add_argument("--out", default="reports/train")
    args = ap.parse_args(argv)
    timing = Path(args.latents_timing)
    latents_seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
    summary = summarize(args.models, latents_seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    plot_curves(args.runs, out / "curves.png")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
