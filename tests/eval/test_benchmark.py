"""The benchmark on a two-pair bench file: the ground truth scored as a method, missing videos, generation."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tavr.config import GenerateConfig, ModelConfig, SynthConfig
from tavr.data import synth
from tavr.data.pairs import write_pairs
from tavr.data.video import write_audio, write_video
from tavr.eval.benchmark import METRICS, generate, score_dir
from tavr.pipeline import TAVRPipeline


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Two cross-scene pairs of two people, laid out as ingest writes them."""
    root = tmp_path_factory.mktemp("bench")
    clips = root / "clips"
    cfg = SynthConfig()
    specs = synth.plan(cfg)
    pairs = []
    for k, person in enumerate(sorted({s.identity for s in specs})[:2]):
        ref_spec, tgt_spec = [s for s in specs if s.identity == person][:2]
        ref, tgt = synth.render_clip(cfg, ref_spec), synth.render_clip(cfg, tgt_spec)
        folder = clips / f"id{k}"
        folder.mkdir(parents=True)
        write_video(folder / "ref.mp4", ref.frames, 25, ref.audio, 16000)
        write_video(folder / "tgt.mp4", tgt.frames, 25, tgt.audio, 16000)
        synth.save_masks(folder / "tgt.mask.npz", tgt.masks)
        write_audio(folder / "tgt.wav", tgt.audio, 16000)
        pairs.append({"pair_id": f"pair{k:03d}", "identity": f"id{k}", "reference": f"id{k}/ref.mp4", "target": f"id{k}/tgt.mp4",
                      "target_mask": f"id{k}/tgt.mask.npz", "driving_audio": f"id{k}/tgt.wav"})  # fmt: skip
    write_pairs(root / "bench_pairs.json", pairs, clips)
    return root


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
    table = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert list(table["pair_id"]) == ["pair000", "pair001"] and set(METRICS) <= set(table.columns)
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary

    # another person's video in place of pair 1, pair 0 missing
    (pred / "pair000.mp4").unlink()
    shutil.copy(bench / "clips" / "id0" / "tgt.mp4", pred / "pair001.mp4")
    other = score_dir(pred, bench / "bench_pairs.json", tmp_path / "out2", identity_frames=2)
    assert other["missing"] == ["pair000"] and other["scored"] == 1
    assert other["metrics"]["identity"] < table["identity"][1]
    assert other["metrics"]["bg_psnr"] < table["bg_psnr"][1]


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
