"""Shared fixture of the evaluation tests: a two-pair bench file laid out as ingest writes it."""

import pytest

from tavr.config import SynthConfig
from tavr.data import synth
from tavr.data.pairs import write_pairs
from tavr.data.video import write_audio, write_video


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """Two cross-scene pairs of two people, laid out as ingest writes them."""
    root = tmp_path_factory.mktemp("bench")
    clips = root / "clips"
    cfg = SynthConfig()
    specs = synth.plan(cfg)
    pairs = []
    for k, person in enumerate(sorted({s.identity for s in specs})[:2]):
        mine = [s for s in specs if s.identity == person]
        ref_spec = mine[0]
        tgt_spec = next(s for s in mine if s.scene != ref_spec.scene)
        ref, tgt = synth.render_clip(cfg, ref_spec), synth.render_clip(cfg, tgt_spec)
        folder = clips / f"id{k}"
        folder.mkdir(parents=True)
        write_video(folder / "ref.mp4", ref.frames, 25, ref.audio, 16000)
        write_video(folder / "tgt.mp4", tgt.frames, 25, tgt.audio, 16000)
        synth.save_masks(folder / "tgt.mask.npz", tgt.masks)
        synth.save_masks(folder / "ref.mask.npz", ref.masks)
        write_audio(folder / "tgt.wav", tgt.audio, 16000)
        pairs.append({"pair_id": f"pair{k:03d}", "identity": f"id{k}", "reference": f"id{k}/ref.mp4",
                      "reference_mask": f"id{k}/ref.mask.npz", "target": f"id{k}/tgt.mp4",
                      "target_mask": f"id{k}/tgt.mask.npz", "driving_audio": f"id{k}/tgt.wav"})  # fmt: skip
    write_pairs(root / "bench_pairs.json", pairs, clips)
    return root
