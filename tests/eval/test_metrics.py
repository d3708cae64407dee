"""Benchmark metrics on cases whose answer is known."""

import numpy as np
import pytest

from tavr.config import SynthConfig
from tavr.data import synth
from tavr.eval import metrics
from tavr.rl.rewards import face_track

HOP = 640  # audio samples per frame at 16 kHz, 25 fps


@pytest.fixture(scope="module")
def clips():
    specs = synth.plan(SynthConfig())
    a = synth.render_clip(SynthConfig(), specs[0])
    other = next(s for s in specs if s.identity != specs[0].identity)
    return a, synth.render_clip(SynthConfig(), other)


def test_identity_is_higher_for_the_same_person(clips):
    a, b = clips
    same, found = metrics.identity(a.frames[:25], a.frames[25:], frames=3)
    other, _ = metrics.identity(b.frames[:25], a.frames[25:], frames=3)
    assert found == 3 and same > other and same > 0.97
    blank = np.full((10, 128, 128, 3), 127, np.uint8)
    assert metrics.identity(blank, a.frames, frames=3) == (0.0, 0)
    with pytest.raises(ValueError, match="reference"):
        metrics.identity(a.frames, blank, frames=3)


@pytest.mark.parametrize("k", [-2, 0, 2])
def test_audio_shifted_by_k_frames_gives_offset_k(clips, k):
    a, _ = clips
    _, mouth = face_track(a.frames)
    audio = np.roll(a.audio, k * HOP)  # the audio k frames later (earlier for k < 0) than the mouth
    corr, offset = metrics.lipsync(mouth, audio, 16000, 25, max_offset=3)
    assert offset == -k  # the mouth now leads the audio by k frames
    assert corr > 0.5


def test_lipsync_needs_faces():
    assert metrics.lipsync(np.full(20, np.nan, np.float32), np.ones(16000, np.float32), 16000, 25) == (0.0, None)


def test_background_fidelity_ignores_the_person_and_matches_a_known_error(clips):
    a, b = clips
    target = np.clip(a.frames, 0, 240).astype(np.uint8)
    person = a.masks
    assert metrics.background(target, target, person) == (100.0, pytest.approx(1.0))
    pasted = target.copy()
    pasted[person] = b.frames[person]  # a different person: outside the mask nothing changed
    assert metrics.background(pasted, target, person) == (100.0, pytest.approx(1.0))
    brighter = np.where(person[..., None], target, target + 10).astype(np.uint8)  # +10 on every background pixel
    psnr, ssim = metrics.background(brighter, target, person)
    assert psnr == pytest.approx(10 * np.log10(255**2 / 100), abs=1e-6)
    assert 0 < ssim < 1
    with pytest.raises(ValueError, match="sizes"):
        metrics.background(target[:, :64], target, person)


def test_person_psnr_reads_the_person_and_only_the_person(clips):
    a, b = clips
    target = np.clip(a.frames, 0, 240).astype(np.uint8)
    person = a.masks
    assert metrics.person_psnr(target, target, person) == 100.0
    new_background = np.where(person[..., None], target, 255 - target).astype(np.uint8)
    assert metrics.person_psnr(new_background, target, person) == 100.0  # the background does not count
    brighter = np.where(person[..., None], target + 10, target).astype(np.uint8)  # +10 on every person pixel
    assert metrics.person_psnr(brighter, target, person) == pytest.approx(10 * np.log10(255**2 / 100), abs=1e-6)
    other = target.copy()
    other[person] = b.frames[person]  # another person in the same place scores lower
    assert metrics.person_psnr(other, target, person) < 40
    assert metrics.person_psnr(target, target, np.zeros_like(person)) is None


def test_stability_measures_change_inside_the_face_box():
    still = np.full((6, 32, 32, 3), 100, np.uint8)
    boxes = np.tile(np.array([[8, 8, 24, 24]], np.float32), (6, 1))
    assert metrics.stability(still, boxes) == 0.0
    flicker = still.copy()
    flicker[1::2, 8:24, 8:24] += 8  # inside the box only
    assert metrics.stability(flicker, boxes) == pytest.approx(8.0)
    outside = still.copy()
    outside[1::2, :4] += 50  # changes outside the box do not count
    assert metrics.stability(outside, boxes) == 0.0
    boxes[:] = np.nan
    assert metrics.stability(flicker, boxes) is None


def test_score_video_of_the_target_itself(clips):
    a, _ = clips
    scores = metrics.score_video(a.frames, a.frames, a.frames, a.masks, a.audio, 16000, 25, identity_frames=2)
    assert set(scores) == {"id_top1", "id_margin", "identity", "lipsync", "lipsync_offset", "bg_psnr", "bg_ssim", "person_psnr",
                           "stability", "face_rate", "fid", "fvd"}
    assert scores["id_top1"] is None and scores["id_margin"] is None  # no gallery given: nobody to identify against
    assert scores["face_rate"] == 1.0 and scores["identity"] > 0.99 and scores["bg_psnr"] == 100.0
    assert scores["person_psnr"] == 100.0
    assert scores["lipsync"] > 0.5 and scores["lipsync_offset"] == 0
    assert scores["stability"] > 0 and scores["fid"] is None and scores["fvd"] is None


def test_gallery_identification_and_margin_on_known_embeddings():
    from tavr.eval.metrics import Gallery

    rng = np.random.default_rng(0)
    common = rng.normal(size=128) * 5  # what every face shares: raw cosines are all near 1
    people = rng.normal(size=(4, 128))
    g = Gallery(("a", "b", "c", "d"), (common + people).astype(np.float32))
    probe = common + people[2] + 0.3 * rng.normal(size=128)
    raw = [float(np.dot(probe, e) / np.linalg.norm(probe) / np.linalg.norm(e)) for e in g.embeddings]
    assert min(raw) > 0.9  # the raw cosine barely tells them apart ...
    right, wrong = g.identify(probe, "c"), g.identify(probe, "a")
    assert right["id_top1"] == 1.0 and right["id_margin"] > 0.3  # ... the centred one does
    assert wrong["id_top1"] == 0.0 and wrong["id_margin"] < 0
    assert g.identify(None, "c") == {"id_top1": 0.0, "id_margin": None}
    with pytest.raises(ValueError, match="not in the gallery"):
        g.identify(probe, "z")
