"""One file with the training targets: reports/train/summary.json (+ curves.png).

    python -m tavr.train.summary [--models models] [--out reports/train]

Reads each stage's metrics.json and writes

    {"vae":    {"seconds", "psnr"},
     "stage1": {"seconds", "loss_first", "loss_last", "identity_heldout", ...},
     "stage2": {same keys},
     "stage3": {"seconds", "reward_first", "reward_last", "identity_heldout", ...},
     "chain_seconds": vae + latents + stage1..3 seconds (latents: reports/train/latents.json),
     "checks": {"loss_drop", "stage2_beats_stage1", "stage3_beats_stage2"}}

loss_first/last and reward_first/last are means over the first and last 10% of steps.
curves.png plots the loss and reward curves logged by dvclive under runs/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tavr.files import write_json
from tavr.train.common import logged_series

KEYS = {
    "vae": ("seconds", "psnr"),
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


def plot_curves(runs: str | Path, path: str | Path) -> None:
    """Loss (stages 1-2) and reward (stage 3) against step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for stage in ("stage1", "stage2"):
        values = logged_series(Path(runs) / stage, "loss")
        ax1.plot(range(1, len(values) + 1), values, label=stage)
    ax1.set(title="flow-matching loss (per log interval)", xlabel="log point", ylabel="loss")
    ax1.legend()
    for name in ("reward_mean", "identity", "lipsync"):
        values = logged_series(Path(runs) / "stage3", name)
        if values:
            ax2.plot(range(1, len(values) + 1), values, label=name)
    ax2.set(title="stage 3 rewards", xlabel="step", ylabel="reward")
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
