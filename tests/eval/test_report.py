"""The report over real scored results: two methods scored from real videos, one missing."""

import json
import shutil

from PIL import Image

from tavr.eval.benchmark import METRICS, score_dir
from tavr.eval.report import build_report


def test_the_report_puts_every_method_side_by_side(bench, tmp_path):
    pairs = bench / "bench_pairs.json"
    for method, clip in (("truth", "tgt"), ("copy_ref", "ref")):  # the answer, and the reference pasted as output
        pred = tmp_path / "pred" / method
        pred.mkdir(parents=True)
        for k in range(2):
            shutil.copy(bench / "clips" / f"id{k}" / f"{clip}.mp4", pred / f"pair{k:03d}.mp4")
        score_dir(pred, pairs, tmp_path / "report" / method, method=method, identity_frames=1)
        shutil.copytree(pred, tmp_path / "report" / method / "videos")
    summary = build_report(tmp_path / "report", ["truth", "copy_ref", "absent"], pairs, grid_pairs=1)

    assert summary["pairs"] == 2 and list(summary["methods"]) == ["truth", "copy_ref"]
    assert set(summary["methods"]["truth"]) == set(METRICS)
    assert summary["scored"] == {"truth": 2, "copy_ref": 2} and summary["protocols"]["truth"] == "external"
    assert json.loads((tmp_path / "report/summary.json").read_text()) == summary
    truth, copy = summary["methods"]["truth"], summary["methods"]["copy_ref"]
    assert truth["bg_psnr"] > copy["bg_psnr"]  # the reference's scene is not the target's

    page = (tmp_path / "report/index.html").read_text()
    assert "Not benchmarked:</b> absent" in page
    assert f"<b>{truth['bg_psnr']:.3f}</b>" in page  # the best background PSNR is marked
    assert "truth/videos/pair001.mp4" in page and "plots/pair000.png" in page and "plots/pair001.png" not in page
    grid = Image.open(tmp_path / "report/plots/pair000.png")
    assert grid.size == (4 * 128, 128 + 14)  # reference | target background | two methods
    assert Image.open(tmp_path / "report/plots/metrics.png").size[0] > 600
    table = (tmp_path / "report/summary.md").read_text().splitlines()
    assert table[2].startswith("| method | protocol | pairs scored | id_top1") and table[4].startswith("| truth | external | 2/2 |")
    # identification with its interval; truth against the reference copied into the target scene
    assert summary["ci"]["truth"]["id_top1"]["mean"] == 1.0 and summary["ci"]["truth"]["id_top1"]["n"] == 2
    lo, hi = summary["ci"]["truth"]["identity"]["ci"]
    assert lo <= truth["identity"] <= hi
    assert summary["differences"]["truth - copy_ref"]["identity"]["n"] == 2
    assert any("confidence intervals" in line for line in table)
    assert summary["coverage"]["truth"] == {"asked": 2, "scored": 2, "missing": 0, "failed": 0, "short": 0}
