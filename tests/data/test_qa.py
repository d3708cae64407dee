"""The great-expectations QA gate over the ingest manifest."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tavr.config import QAConfig
from tavr.data.qa import QAReport, format_failures, run_qa

CFG = QAConfig()


def clean_manifest() -> pd.DataFrame:
    """12 clips: 3 train identities x 2 train scenes, 1 bench identity x 2 bench scenes x 3."""
    rows = []
    layout = [(f"id{i}", ["sc0", "sc1"], "train", 1) for i in range(3)] + [("id9", ["sc8", "sc9"], "bench", 3)]
    for identity, scenes, split, per_scene in layout:
        for scene in scenes:
            for k in range(per_scene):
                rows.append({
                    "clip_id": f"{identity}/{scene}/clip{k:02d}", "path": f"{identity}/{scene}/clip{k:02d}.mp4",
                    "audio_path": f"{identity}/{scene}/clip{k:02d}.wav",
                    "mask_path": f"{identity}/{scene}/clip{k:02d}.mask.npz", "source": "synth",
                    "identity": identity, "scene": scene, "split": split, "start_s": 2.0 * k,
                    "fps": 25.0, "frames": 50, "width": 128, "height": 128, "duration_s": 2.0,
                    "has_audio": True, "audio_rate": 16000, "face_rate": 0.97, "face_size_mean": 0.5,
                    "face_size_std": 0.01, "face_cx_std": 0.01, "face_cy_std": 0.01,
                    "mouth_open_mean": 0.2, "mouth_open_std": 0.1, "mouth_audio_corr": 0.6,
                })
    return pd.DataFrame(rows)


def failures_about(report: QAReport, needle: str) -> list[str]:
    return [line for line in report.failed if needle in line]


def test_clean_manifest_passes_and_writes_reports(tmp_path):
    df = clean_manifest()
    report = run_qa(df, CFG, tmp_path)
    assert report.success, report.failed
    assert report.failed == [] and format_failures(report) == ""
    assert report.n_clips == 12
    assert list(df.columns) == list(clean_manifest().columns)  # the caller's frame is untouched

    payload = json.loads((tmp_path / "qa.json").read_text())
    assert payload["success"] is True and payload["n_clips"] == 12 and payload["failed"] == []
    assert payload["data_docs"] == "data_docs/index.html"
    assert (tmp_path / payload["data_docs"]).is_file()
    checked = {(e["expectation"], e["column"]) for e in payload["expectations"]}
    for key in [
        ("expect_column_values_to_be_between", "fps"),
        ("expect_column_values_to_be_unique", "clip_id"),
        ("expect_column_values_to_be_in_set", "identity_in_both_splits"),
        ("expect_column_values_to_be_in_set", "scene_in_both_splits"),
        ("expect_table_row_count_to_be_between", None),
    ]:
        assert key in checked
    assert all(e["success"] for e in payload["expectations"])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_identity_in_both_splits_fails_naming_it(tmp_path):
    df = clean_manifest()
    df.loc[df["split"] == "bench", "identity"] = ["id1"] + ["id9"] * 5  # id1 leaks into bench
    report = run_qa(df, CFG, tmp_path)
    assert not report.success
    assert len(report.failed) == 1, report.failed
    (line,) = report.failed
    assert "expect_column_values_to_be_in_set(identity_in_both_splits" in line and "'id1'" in line
    assert "id1" in format_failures(report)
    payload = json.loads((tmp_path / "qa.json").read_text())
    assert payload["success"] is False and payload["failed"] == report.failed
    (entry,) = [e for e in payload["expectations"] if e["column"] == "identity_in_both_splits"]
    assert entry["leaked"] == ["id1"] and entry["unexpected_count"] == 3  # two train clips + one bench clip


def test_scene_in_both_splits_fails_naming_it(tmp_path):
    df = clean_manifest()
    df.loc[0, "scene"] = "sc8"  # a train clip filmed in a bench scene
    report = run_qa(df, CFG, tmp_path)
    assert not report.success
    (line,) = report.failed
    assert "scene_in_both_splits" in line and "'sc8'" in line


def test_wrong_fps_fails_naming_fps(tmp_path):
    df = clean_manifest()
    df.loc[:2, "fps"] = 30.0
    report = run_qa(df, CFG, tmp_path)
    assert not report.success
    (line,) = report.failed
    assert line.startswith("expect_column_values_to_be_between(fps")
    assert "3 of 12 rows fail" in line and df.loc[0, "clip_id"] in line


def test_duplicate_clip_ids_fail(tmp_path):
    df = clean_manifest()
    df.loc[1, "clip_id"] = df.loc[0, "clip_id"]
    report = run_qa(df, CFG, tmp_path)
    assert not report.success
    (line,) = report.failed
    assert "expect_column_values_to_be_unique(clip_id" in line and df.loc[0, "clip_id"] in line


@pytest.mark.parametrize("column", ["face_rate", "split"])
def test_missing_column_fails_naming_it(tmp_path, column):
    report = run_qa(clean_manifest().drop(columns=[column]), CFG, tmp_path)
    assert not report.success
    lines = failures_about(report, "missing required columns")
    assert len(lines) == 1 and f"'{column}'" in lines[0]
    assert json.loads((tmp_path / "qa.json").read_text())["success"] is False


def test_too_few_clips_fails(tmp_path):
    report = run_qa(clean_manifest(), QAConfig(min_clips=100), tmp_path)
    assert not report.success
    assert failures_about(report, "expect_table_row_count_to_be_between")


def test_parquet_path_matches_dataframe(tmp_path):
    df = clean_manifest()
    df.loc[df["split"] == "bench", "identity"] = ["id1"] + ["id9"] * 5
    df.loc[0, "fps"] = 24.0
    path = tmp_path / "manifest.parquet"
    df.to_parquet(path, index=False)
    from_frame = run_qa(df, CFG, tmp_path / "frame")
    from_file = run_qa(path, CFG, tmp_path / "file")
    assert not from_file.success
    assert from_file.failed == from_frame.failed and len(from_file.failed) == 2
    assert from_file.n_clips == from_frame.n_clips == 12
    assert (tmp_path / "file" / "data_docs" / "index.html").is_file()
