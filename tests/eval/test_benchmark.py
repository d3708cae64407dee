"""The benchmark on a two-pair bench file: the ground truth scored as a method, missing videos, generation."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tavr.config import GenerateConfig, ModelConfig
from tavr.data.synth import load_masks
from tavr.data.video import read_video
from tavr.eval.adapt import place
from tavr.eval.benchmark import METRICS, generate, score_dir
from tavr.pipeline import TAVRPipeline


def test_the_target_clips_themselves_score_as_an_upper_bound(bench, tmp_path):
    pred = tmp_path / "truth"
    pred.mkdir()
    for k in range(2):
        shutil.copy(bench / "clips" / f"id{k}" / "tgt.mp4", pred / f"pair{k:03d}.mp4")
    summary = score_dir(pred, bench / "bench_pairs.json", tmp_path / "out", method="truth", identity_frames=2)
    m = summary["metrics"]
    assert summary["scored"] == 2 and summary["missing"] == []
    assert m["face_rate"] == 1.0 and m["identity"] > 0.97  # the same person, another scene
    assert m["bg_psnr"] > 30 and m["bg_ssim"] > 0.9  # the target itself, up to H.264 losses
    assert m["lipsync"] > 0.5 and m["lipsync_offset"] == 0
    assert m["id_top1"] == 1.0 and m["id_margin"] > 0.2  # each target is identified as its own person
    table = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert list(table["pair_id"]) == ["pair000", "pair001"] and set(METRICS) <= set(table.columns)
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary

    # another person's video in place of pair 1, pair 0 missing
    (pred / "pair000.mp4").unlink()
    shutil.copy(bench / "clips" / "id0" / "tgt.mp4", pred / "pair001.mp4")
    other = score_dir(pred, bench / "bench_pairs.json", tmp_path / "out2", identity_frames=2)
    assert other["missing"] == ["pair000"] and other["scored"] == 1
    assert other["metrics"]["identity"] < table["identity"][1]
    assert other["metrics"]["id_top1"] == 0.0 and other["metrics"]["id_margin"] < 0  # identified as the other person
    assert other["metrics"]["bg_psnr"] < table["bg_psnr"][1]


def test_unreadable_and_short_videos_are_recorded_and_the_rest_scored(bench, tmp_path):
    """A corrupt mp4 is a failed pair with its reason; a video shorter than its audio is listed as short."""
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "pair000.mp4").write_text("not a video")
    frames = read_video(bench / "clips" / "id1" / "tgt.mp4").frames
    from tavr.data.video import write_video

    write_video(pred / "pair001.mp4", frames[:3], 25)
    summary = score_dir(pred, bench / "bench_pairs.json", tmp_path / "out", identity_frames=1)
    assert summary["pairs"] == 2 and summary["scored"] == 1 and summary["missing"] == []
    assert [f["pair_id"] for f in summary["failed"]] == ["pair000"] and summary["failed"][0]["reason"]
    assert summary["short"] == ["pair001"]
    row = pd.read_csv(tmp_path / "out" / "pairs.csv").iloc[0]
    assert row["frames"] == 3 and row["audio_frames"] == len(frames)
    (pred / "pair001.mp4").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="could not be read"):
        score_dir(pred, bench / "bench_pairs.json", tmp_path / "out2")


def test_scoring_an_empty_folder_is_an_error(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="none of the 2 pairs"):
        score_dir(tmp_path, bench / "bench_pairs.json", tmp_path / "out")


def test_generate_writes_videos_csv_and_summary(bench, tmp_path):
    pipe = TAVRPipeline.from_config(ModelConfig(num_layers=2), GenerateConfig(chunk_frames=9, reference_frames=9, sampler="euler"))
    seen = []
    summary = generate(pipe, bench / "bench_pairs.json", tmp_path, steps=1, identity_frames=1, progress=lambda d, n: seen.append(d))
    assert seen == [1, 2] and summary["scored"] == 2 and summary["method"] == "tavr"
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["pair000.mp4", "pair001.mp4"]
    row = pd.read_csv(tmp_path / "pairs.csv").iloc[0]
    assert np.isfinite(row["bg_psnr"]) and row["seconds"] > 0


def test_image_protocols_give_one_frame_raw_or_adapted(bench, tmp_path):
    image = GenerateConfig(chunk_frames=9, reference_frames=1, min_reference_frames=1, reference_audio=False, sampler="euler")
    pipe = TAVRPipeline.from_config(ModelConfig(num_layers=2), image)
    raw = generate(pipe, bench / "bench_pairs.json", tmp_path / "raw", steps=1, identity_frames=1, method="image_raw", protocol="raw")
    adapted = generate(pipe, bench / "bench_pairs.json", tmp_path / "adapted", steps=1, identity_frames=1, protocol="adapted")
    assert raw["protocol"] == "raw" and adapted["protocol"] == "adapted" and adapted["scored"] == 2
    reference = read_video(bench / "clips/id0/ref.mp4").frames[0]
    given_raw = np.asarray(Image.open(tmp_path / "raw/inputs/pair000.png"))
    given_adapted = np.asarray(Image.open(tmp_path / "adapted/inputs/pair000.png"))
    assert np.array_equal(given_raw, reference)  # the first frame, untouched
    assert np.abs(given_adapted.astype(int) - reference).mean() > 5  # moved into the other scene
    target = read_video(bench / "clips/id0/tgt.mp4").frames[0]
    person, target_person = load_masks(bench / "clips/id0/ref.mask.npz")[0], load_masks(bench / "clips/id0/tgt.mask.npz")[0]
    _, placed = place(reference, person, target_person)
    outside = ~target_person & ~placed
    assert outside.mean() > 0.3 and np.array_equal(given_adapted[outside], target[outside])  # the target scene around
    # the two protocols differ only in the reference, so the same noise gives different videos
    a = read_video(tmp_path / "raw/videos/pair000.mp4").frames
    b = read_video(tmp_path / "adapted/videos/pair000.mp4").frames
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_a_video_model_refuses_a_single_frame_and_unknown_protocols_are_errors(bench, tmp_path):
    pipe = TAVRPipeline.from_config(ModelConfig(num_layers=2), GenerateConfig(chunk_frames=9, reference_frames=9, sampler="euler"))
    with pytest.raises(ValueError, match="at least 5 are needed"):
        generate(pipe, bench / "bench_pairs.json", tmp_path, steps=1, protocol="raw")
    with pytest.raises(ValueError, match="protocol"):
        generate(pipe, bench / "bench_pairs.json", tmp_path, steps=1, protocol="sketch")


def test_the_gallery_is_written_once_and_refused_for_another_pairs_file(bench, tmp_path):
    from tavr.eval.benchmark import write_gallery
    from tavr.eval.metrics import Gallery

    info = write_gallery(bench / "bench_pairs.json", tmp_path / "gallery.npz", identity_frames=1)
    gallery, source = Gallery.load(tmp_path / "gallery.npz")
    assert info["people"] == len(gallery.people) == 2 and len(source) == 64
    pred = tmp_path / "truth"
    pred.mkdir()
    for k in range(2):
        shutil.copy(bench / "clips" / f"id{k}" / "tgt.mp4", pred / f"pair{k:03d}.mp4")
    first = score_dir(pred, bench / "bench_pairs.json", tmp_path / "a", identity_frames=1, gallery_file=tmp_path / "gallery.npz")
    assert first["metrics"]["id_top1"] == 1.0
    # every scored pair's reference embedding is in the file, read instead of computed: the same scores ...
    assert info["references"] == 2 and set(gallery.references) == {"id0/ref.mp4", "id1/ref.mp4"}
    fresh = score_dir(pred, bench / "bench_pairs.json", tmp_path / "c", identity_frames=1)
    assert fresh["metrics"] == first["metrics"]
    # ... and a different stored embedding is what the raw identity is measured against
    swapped = dataclasses.replace(gallery, references={"id0/ref.mp4": gallery.references["id1/ref.mp4"],
                                                       "id1/ref.mp4": gallery.references["id1/ref.mp4"]})  # fmt: skip
    swapped.save(tmp_path / "swapped.npz", source)
    worse = score_dir(pred, bench / "bench_pairs.json", tmp_path / "d", identity_frames=1, gallery_file=tmp_path / "swapped.npz")
    assert worse["metrics"]["identity"] < first["metrics"]["identity"] and worse["metrics"]["id_top1"] == 1.0
    other = bench / "other_pairs.json"  # beside the original: its clips root is relative to the file
    other.write_text((bench / "bench_pairs.json").read_text().replace('"count"', '"count" ', 1))  # other bytes, same pairs
    try:
        with pytest.warns(UserWarning, match="another pairs file"):
            score_dir(pred, other, tmp_path / "b", identity_frames=1, gallery_file=tmp_path / "gallery.npz")
    finally:
        other.unlink()


def test_the_validation_slice_is_never_scored_and_ablations_score_fewer_pairs(bench, tmp_path):
    from tavr.config import ConfigError, load_config
    from tavr.eval.benchmark import report_pairs

    pairs = [{"pair_id": f"pair{i:03d}"} for i in range(100)]
    ids = [p["pair_id"] for p in report_pairs(pairs, 40, (10, 40))]
    assert ids[:10] == [f"pair{i:03d}" for i in range(10)] and ids[10:] == [f"pair{i:03d}" for i in range(40, 70)]
    assert len(report_pairs(pairs, 0, (10, 40))) == 70 and len(report_pairs(pairs, 0, None)) == 100
    cfg = load_config(None, {"bench": {"limit": 40, "ablation_limit": 10}}).bench
    assert cfg.limit_for("tavr") == 40 and cfg.limit_for("tavr_keep025") == 10 and cfg.limit_for("upper_bound") == 40
    assert load_config(None, {"bench": {"limit": 5}}).bench.limit_for("tavr_stage1") == 5
    with pytest.raises(ConfigError, match=r"bench\.validation"):
        load_config(None, {"bench": {"validation": [40, 10]}})

    # scoring honours the slice: pair 0 kept for validation leaves pair 1 alone
    pred = tmp_path / "truth"
    pred.mkdir()
    shutil.copy(bench / "clips" / "id1" / "tgt.mp4", pred / "pair001.mp4")
    summary = score_dir(pred, bench / "bench_pairs.json", tmp_path / "out", identity_frames=1, validation=(0, 1))
    assert summary["pairs"] == 1 and summary["scored"] == 1 and summary["missing"] == []
    with pytest.raises(ValueError, match="outside the validation slice"):
        score_dir(pred, bench / "bench_pairs.json", tmp_path / "out2", identity_frames=1, validation=(0, 2))
