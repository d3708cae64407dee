"""Ingest: good videos become face-centred clips, every bad file is quarantined with its reason."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tavr.config import IngestConfig, SynthConfig
from tavr.data import synth
from tavr.data.ingest import COLUMNS, ingest
from tavr.data.pairs import load_pairs, make_pairs
from tavr.data.video import read_audio, read_video, write_video

CFG = IngestConfig(workers=2)
SYN = SynthConfig()


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    """Three good synth clips and one of each kind of bad file, laid out <identity>/<scene>/<file>."""
    root = tmp_path_factory.mktemp("src")
    for spec in (synth.ClipSpec(0, 0, 0, "train"), synth.ClipSpec(0, 1, 0, "train"), synth.ClipSpec(1, 0, 0, "train")):
        synth.write_clip(SYN, spec, root)
    good = (root / "id000/sc00/clip00.mp4").read_bytes()
    bad = root / "bad" / "sc00"
    bad.mkdir(parents=True)
    (bad / "corrupt.mp4").write_bytes(good[: len(good) // 3])
    (bad / "notes.mp4").write_text("this is not a video\n")
    clip = synth.render_clip(SYN, synth.ClipSpec(2, 0, 0, "train"))
    write_video(bad / "silent_film.mp4", clip.frames, 25)
    empty = np.repeat((synth.background(synth.scene(SYN, 0), 128) * 255).astype(np.uint8)[None], 50, axis=0)
    write_video(bad / "empty_room.mp4", empty, 25, clip.audio, 16000)
    write_video(bad / "blink.mp4", clip.frames[:3], 25, clip.audio[:1920], 16000)
    return root


@pytest.fixture(scope="module")
def result(messy, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "clips"
    summary = ingest([messy], out, CFG)
    return out, summary


def test_good_videos_become_clips(result):
    out, summary = result
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns) == COLUMNS
    assert sorted(manifest["clip_id"]) == ["id000/sc00/clip00-00", "id000/sc01/clip00-00", "id001/sc00/clip00-00"]
    assert summary["clips"] == 3 and summary["videos"] == 8
    row = manifest.iloc[0]
    clip = read_video(out / row["path"])
    assert clip.frames.shape == (50, 128, 128, 3) and clip.fps == 25 and len(clip.audio) == 32000
    assert len(read_audio(out / row["audio_path"])) == 32000
    assert row["face_rate"] >= 0.9 and 0.25 < row["face_size_mean"] < 0.95
    assert row["mouth_audio_corr"] > 0.5  # lips follow the synthesized speech
    masks = synth.load_masks(out / row["mask_path"])
    assert masks.shape == (50, 128, 128) and 0.1 < masks.mean() < 0.8


def test_each_bad_file_is_quarantined_with_its_reason(result):
    out, summary = result
    entries = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    reasons = {Path(e["path"]).name: e["reason"] for e in entries}
    assert reasons["corrupt.mp4"].startswith("cannot decode")
    assert reasons["notes.mp4"].startswith("cannot decode")
    assert reasons["silent_film.mp4"] == "no audio stream"
    assert reasons["empty_room.mp4"] == "no face detected"
    assert reasons["blink.mp4"] == "too few frames: 3 < 50 needed for one clip"
    assert len(entries) == 5 and summary["quarantined"] == 5


def test_other_resolution_and_fps_are_resampled_and_the_face_is_centred(tmp_path):
    big = SynthConfig(size=256, fps=30, seconds=2.5)
    spec = synth.ClipSpec(4, 2, 0, "train")
    clip = synth.render_clip(big, spec)
    src = tmp_path / "src" / "anna" / "office"
    write_video(src / "take1.mp4", clip.frames, 30, clip.audio, 16000)
    csv = tmp_path / "list.csv"
    csv.write_text("path,identity,scene,split\nsrc/anna/office/take1.mp4,anna,office,bench\n")
    ingest([csv], tmp_path / "out", CFG)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert manifest["clip_id"].tolist() == ["anna/office/take1-00"]  # 2.5 s -> one 2-s clip
    row = manifest.iloc[0]
    assert row["split"] == "bench" and row["fps"] == 25 and row["frames"] == 50
    out = read_video(tmp_path / "out" / row["path"])
    assert out.frames.shape == (50, 128, 128, 3)
    assert row["face_rate"] >= 0.9
    # the crop is centred on the face: its box centre sits near the middle of the clip
    assert row["face_cx_std"] < 0.05


def test_rerun_replaces_the_output_and_leaves_no_partial_folder(messy, tmp_path):
    from tavr.data.ingest import MARKER

    out = tmp_path / "clips"
    out.mkdir()
    (out / MARKER).write_text("")  # an earlier ingest's output
    (out / "stale.txt").write_text("old run")
    ingest([messy / "id000"], out, CFG)  # identity folder as root: no <identity>/<scene>/<file> layout
    assert not (out / "stale.txt").exists()
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".clips.replaced-*"))
    lines = (out / "quarantine.jsonl").read_text().splitlines()
    assert all("not laid out" in json.loads(line)["reason"] for line in lines) and len(lines) == 2


def test_bench_pairs_are_cross_scene_same_identity_and_balanced():
    rows = []
    for ident in ("a", "b", "c"):
        for scene in ("s1", "s2", "s3"):
            for k in range(2):
                cid = f"{ident}/{scene}/v{k}-00"
                rows.append(dict(clip_id=cid, path=cid + ".mp4", audio_path=cid + ".wav", mask_path=cid + ".mask.npz",
                                 identity=ident, scene=scene, split="bench"))
    rows.append(dict(clip_id="t/s9/v-00", path="x", audio_path="x", mask_path="x", identity="t", scene="s9", split="train"))
    manifest = pd.DataFrame(rows)
    pairs = make_pairs(manifest, 30, seed=0)
    assert len(pairs) == 30 and len({p["pair_id"] for p in pairs}) == 30
    assert len({(p["reference_clip"], p["target_clip"]) for p in pairs}) == 30
    for p in pairs:
        assert p["reference_scene"] != p["target_scene"] and p["identity"] != "t"
        assert p["reference_clip"].split("/")[0] == p["target_clip"].split("/")[0] == p["identity"]
        assert p["driving_audio"] == p["target_clip"] + ".wav"
    counts = pd.Series([p["identity"] for p in pairs]).value_counts()
    assert counts.max() - counts.min() <= 1
    assert make_pairs(manifest, 30, seed=0) == pairs and make_pairs(manifest, 30, seed=1) != pairs
    assert len(make_pairs(manifest, 500)) == 3 * 6 * 4  # every candidate, no more


def test_pairs_file_round_trips(tmp_path):
    from tavr.data.pairs import write_pairs

    pairs = [{"pair_id": "pair000", "reference": "a/b/c-00.mp4"}]
    write_pairs(tmp_path / "data" / "bench_pairs.json", pairs, tmp_path / "data" / "clips")
    root, loaded = load_pairs(tmp_path / "data" / "bench_pairs.json")
    assert root == (tmp_path / "data" / "clips").resolve() and loaded == pairs


def _one_clip_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    synth.write_clip(SYN, synth.ClipSpec(0, 0, 0, "train"), src)
    return src


def test_ingest_refuses_to_replace_what_is_not_its_own(tmp_path):
    """OUT equal to, around or inside a source, or a non-empty folder without the marker: refused,
    nothing deleted. An earlier ingest output is replaced; --force replaces anything else."""
    from tavr.data.ingest import MARKER

    src = _one_clip_source(tmp_path)
    videos = sorted(src.rglob("*.mp4"))
    for out in (src, tmp_path, src / "id000" / "clips"):
        with pytest.raises(ValueError, match="overlaps source"):
            ingest([src], out, CFG)
    assert sorted(src.rglob("*.mp4")) == videos
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("keep me")
    (tmp_path / "mine.old").mkdir()
    with pytest.raises(ValueError, match="not an earlier ingest output"):
        ingest([src], mine, CFG)
    assert (mine / "important.txt").read_text() == "keep me"
    out = tmp_path / "clips"
    ingest([src], out, CFG)
    assert (out / MARKER).is_file()
    ingest([src], out, CFG)  # its own output: replaced
    ingest([src], mine, CFG, force=True)
    assert not (mine / "important.txt").exists() and (mine / "manifest.parquet").is_file()
    assert (tmp_path / "mine.old").is_dir()  # a sibling named like the swap's old folder is not touched


def test_ingest_command_writes_pairs_inside_out_unless_told(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tavr.cli import app

    src = _one_clip_source(tmp_path)
    work = tmp_path / "repo"
    (work / "data").mkdir(parents=True)
    (work / "data" / "bench_pairs.json").write_text('{"count": 158}')
    monkeypatch.chdir(work)
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(src), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "bench_pairs.json").is_file()
    assert (work / "data" / "bench_pairs.json").read_text() == '{"count": 158}'  # the tracked file is left alone
    res = runner.invoke(app, ["ingest", str(src), str(tmp_path / "out2"), "--pairs", str(tmp_path / "p.json")])
    assert res.exit_code == 0 and (tmp_path / "p.json").is_file() and not (tmp_path / "out2" / "bench_pairs.json").exists()
    res = runner.invoke(app, ["ingest", str(src), str(src)])
    assert res.exit_code == 2 and "overlaps source" in " ".join(res.output.split())
