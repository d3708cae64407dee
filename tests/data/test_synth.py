"""TAVR-Synth: deterministic, varied, and faces that dlib finds with lips that follow the audio."""

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from tavr.config import SynthConfig
from tavr.data import faces, synth
from tavr.data.synth.speech import per_frame
from tavr.data.video import read_video

CFG = SynthConfig()


def _detect(frame: np.ndarray) -> np.ndarray:
    big = np.asarray(Image.fromarray(frame).resize((256, 256), Image.BILINEAR))
    return big, faces.detect_faces(big)


def test_plan_holds_out_identities_and_scenes():
    specs = synth.plan(CFG)
    train = [s for s in specs if s.split == "train"]
    bench = [s for s in specs if s.split == "bench"]
    assert {s.identity for s in train}.isdisjoint({s.identity for s in bench})
    assert {s.scene for s in train}.isdisjoint({s.scene for s in bench})
    assert len({s.identity for s in bench}) == CFG.bench_identities
    assert len({s.scene for s in specs}) == CFG.scenes and len({s.identity for s in specs}) == CFG.identities
    # every bench identity is filmed in at least two bench scenes: cross-scene pairs exist
    per_id = {i: {s.scene for s in bench if s.identity == i} for i in {s.identity for s in bench}}
    assert min(len(v) for v in per_id.values()) >= 2
    pairs = sum(len([1 for a in bench for b in bench if a.identity == b.identity == i and a.scene != b.scene]) for i in per_id)
    assert pairs >= 158
    assert len({s.clip_id for s in specs}) == len(specs)


def test_render_is_deterministic_by_seed():
    spec = synth.plan(CFG)[5]
    a, b = synth.render_clip(CFG, spec, frames=[0, 20]), synth.render_clip(CFG, spec, frames=[0, 20])
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and a.meta == b.meta
    other = synth.render_clip(SynthConfig(seed=1), spec, frames=[0, 20])
    assert not np.array_equal(a.frames, other.frames)


def test_written_clip_is_byte_identical_across_runs(tmp_path):
    spec = synth.plan(CFG)[0]
    synth.write_clip(CFG, spec, tmp_path / "a")
    synth.write_clip(CFG, spec, tmp_path / "b")
    for suffix in (".mp4", ".mask.npz", ".json"):
        rel = "/".join(spec.names) + suffix
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), suffix
    clip = read_video(tmp_path / "a" / ("/".join(spec.names) + ".mp4"))
    assert clip.frames.shape == (50, 128, 128, 3) and clip.fps == 25 and len(clip.audio) == 32000
    masks = synth.load_masks(tmp_path / "a" / ("/".join(spec.names) + ".mask.npz"))
    assert masks.shape == (50, 128, 128) and masks.dtype == bool


def test_identities_differ_in_at_least_six_attributes():
    idents = [synth.identity(CFG, i).attributes() for i in range(CFG.identities)]
    keys = [k for k in idents[0] if k != "pitch"]
    varied = [k for k in keys if len({json.dumps(d[k]) for d in idents}) > 1]
    assert len(varied) >= 6
    for a, b in itertools.combinations(idents, 2):
        assert sum(a[k] != b[k] for k in varied) >= 6


def test_scenes_vary_and_a_fifth_are_photographs():
    scenes = [synth.scene(CFG, j) for j in range(CFG.scenes)]
    assert sum(s.kind == "photo" for s in scenes) >= CFG.scenes / 5
    assert len({s.kind for s in scenes}) >= 3
    for field in ("tint", "light_angle", "face_scale", "offset"):
        assert len({json.dumps(getattr(s, field)) for s in scenes}) == CFG.scenes
    bgs = [synth.background(s, 64) for s in scenes]
    means = np.array([b.mean(axis=(0, 1)) for b in bgs])
    assert np.ptp(means, axis=0).max() > 0.2  # colours differ


def test_dlib_finds_the_face_in_95_percent_of_frames_over_all_identities_and_scenes():
    """Every identity in every scene (576 combinations), two frames each."""
    rng = np.random.default_rng(0)
    hits = []
    for i, j in itertools.product(range(CFG.identities), range(CFG.scenes)):
        spec = synth.ClipSpec(i, j, 0, "train")
        clip = synth.render_clip(CFG, spec, frames=sorted(rng.choice(50, 2, replace=False).tolist()))
        for frame in clip.frames:
            hits.append(len(_detect(frame)[1]) > 0)
    assert np.mean(hits) >= 0.95, f"face found in {np.mean(hits):.1%} of frames"


def test_mouth_from_dlib_landmarks_follows_the_audio_envelope():
    specs = synth.plan(CFG)
    rng = np.random.default_rng(1)
    corrs = []
    for k in rng.choice(len(specs), 12, replace=False):
        clip = synth.render_clip(CFG, specs[k])
        mouth = []
        for frame in clip.frames:
            big, boxes = _detect(frame)
            mouth.append(faces.mouth_opening(faces.landmarks(big, boxes[0])) if len(boxes) else np.nan)
        mouth = np.asarray(mouth)
        mouth = np.where(np.isnan(mouth), np.nanmean(mouth), mouth)
        env = faces.audio_envelope(clip.audio, CFG.audio_rate, CFG.fps, len(mouth))
        corrs.append(faces.best_lag_correlation(mouth, env, 3)[0])
    assert np.mean(corrs) >= 0.6, corrs


def test_speech_has_syllable_rhythm_and_the_mouth_and_eyes_move():
    clip = synth.render_clip(CFG, synth.plan(CFG)[3], frames=[0])
    env = per_frame(np.abs(clip.audio), CFG.audio_rate, CFG.fps, 50)
    loud = env > 0.3 * env.max()
    assert 4 <= np.sum(np.diff(loud.astype(int)) == 1) <= 16  # syllable onsets in 2 s
    assert loud.mean() < 0.9  # gaps between syllables
    spectrum = np.abs(np.fft.rfft(clip.audio))
    freqs = np.fft.rfftfreq(len(clip.audio), 1 / CFG.audio_rate)
    assert spectrum[(freqs > 80) & (freqs < 4000)].sum() > 0.8 * spectrum.sum()  # speech band
    mouth, eyes = np.array(clip.meta["mouth"]), np.array(clip.meta["eyes"])
    assert mouth.max() > 0.5 and mouth.min() < 0.1
    assert eyes.min() < 0.2 and eyes.max() == 1.0  # at least one blink


def test_person_mask_covers_the_person_only():
    clip = synth.render_clip(CFG, synth.plan(CFG)[7], frames=[0, 10])
    for frame, mask in zip(clip.frames, clip.masks):
        _, boxes = _detect(frame)
        x0, y0, x1, y1 = (boxes[0, :4] / 2).astype(int)  # detection ran at 2x
        assert mask[y0:y1, x0:x1].mean() > 0.95  # the face is inside the mask
        assert not mask[:8, :8].any() and not mask[:8, -8:].any()  # top corners are background
        assert 0.15 < mask.mean() < 0.7


@pytest.mark.parametrize("ids,scenes,bench", [(3, 4, (1, 2)), (2, 2, (0, 0)), (48, 12, (10, 3))])
def test_resized_keeps_a_valid_split(ids, scenes, bench):
    cfg = synth.resized(CFG, ids, scenes)
    assert (cfg.bench_identities, cfg.bench_scenes) == bench
    assert synth.plan(cfg)


def test_bad_plan_raises():
    with pytest.raises(ValueError, match="at least one training identity"):
        synth.plan(SynthConfig(identities=3, bench_identities=3))
    with pytest.raises(ValueError, match="at least 2 bench scenes"):
        synth.plan(SynthConfig(bench_scenes=1))


MEASURES = {"face_width": (0.66, 0.82), "jaw": (0.15, 0.45), "eye_size": (0.85, 1.2), "eye_spacing": (0.28, 0.36),
            "brow_thickness": (0.035, 0.07), "brow_tilt": (-0.25, 0.25), "nose_length": (0.85, 1.2),
            "nose_width": (0.8, 1.3), "mouth_width": (0.2, 0.28), "pitch": (95, 230)}  # fmt: skip


def test_shifted_people_lie_outside_every_training_range_and_unshifted_inside():
    import dataclasses

    shifted = dataclasses.replace(CFG, seed=7, shift=0.3)
    for i in range(20):
        train, other = synth.identity(CFG, i).attributes(), synth.identity(shifted, i).attributes()
        for key, (lo, hi) in MEASURES.items():
            width = (hi - lo) * 0.3
            assert lo <= train[key] <= hi, (key, train[key])
            assert lo - width <= other[key] < lo or hi < other[key] <= hi + width, (key, other[key])
