"""RL rewards: dlib identity similarity and lip-sync correlation on TAVR-Synth clips."""

import numpy as np
from PIL import Image
import pytest

from tavr.config import SynthConfig
from tavr.data import synth
from tavr.rl import rewards

CFG = SynthConfig()
SPECS = synth.plan(CFG)
HOP = CFG.audio_rate // CFG.fps  # audio samples per video frame (640)


def _clip(spec: synth.ClipSpec, frames: int | None = None) -> synth.SynthClip:
    """A clip, or only `frames` evenly sampled frames of it (embeddings are slow: keep counts small)."""
    n = int(round(CFG.seconds * CFG.fps))
    return synth.render_clip(CFG, spec, None if frames is None else rewards.sample_indices(n, frames))


def _cond(refs=None, audios=None) -> dict:
    return {"reference_frames": refs, "audio": audios, "audio_rate": CFG.audio_rate, "fps": float(CFG.fps)}


def _triples(count: int) -> list[tuple[synth.ClipSpec, synth.ClipSpec, synth.ClipSpec]]:
    """(reference, same identity in another scene, another identity) for the first `count` identities."""
    out = []
    for i in range(count):
        mine = [s for s in SPECS if s.identity == i and s.clip == 0]
        other = next(s for s in SPECS if s.identity == i + 1 and s.clip == 0 and s.scene != mine[0].scene)
        out.append((mine[0], mine[1], other))
    return out


@pytest.fixture(scope="module")
def clip() -> synth.SynthClip:
    return _clip(SPECS[0])


def test_sample_indices_are_evenly_spaced():
    assert rewards.sample_indices(50, 4) == [0, 16, 33, 49]
    assert rewards.sample_indices(3, 4) == [0, 1, 2]
    assert rewards.sample_indices(7, 1) == [0]
    with pytest.raises(ValueError):
        rewards.sample_indices(0, 4)


def test_identity_of_a_clip_with_its_own_frames_is_near_one(clip):
    scores, info = rewards.identity_reward(frames=4)([clip.frames], _cond(refs=[clip.frames[::-1].copy()]))
    assert scores.shape == (1,) and scores.dtype == np.float32
    assert scores[0] > 0.9, scores
    assert info["distance"][0] < 0.6 and info["faces"][0] == 4


def test_identity_ranks_the_same_person_above_another_person():
    reward = rewards.identity_reward(frames=3)
    for ref, same, other in _triples(3):
        r = _clip(ref, 3).frames
        scores, info = reward([_clip(same, 3).frames, _clip(other, 3).frames], _cond(refs=[r, r]))
        assert scores[0] > scores[1], (ref, same, other, scores)
        assert info["distance"][0] < info["distance"][1]


def test_identity_without_a_face_scores_zero(clip):
    gray = np.full((4, CFG.size, CFG.size, 3), 128, np.uint8)
    scores, info = rewards.identity_reward(frames=2)([gray], _cond(refs=[clip.frames]))
    assert scores[0] == 0.0 and np.isnan(info["distance"][0]) and info["faces"][0] == 0
    with pytest.raises(ValueError, match="no face"):
        rewards.identity_reward(frames=2)([clip.frames], _cond(refs=[gray]))


def test_identity_embeds_a_shared_reference_once_per_group(clip, monkeypatch):
    calls = []
    embed = rewards.face_embedding

    def counting(frame, *args, **kwargs):  # a spy: counts calls, behaves the same
        calls.append(frame)
        return embed(frame, *args, **kwargs)

    monkeypatch.setattr(rewards, "face_embedding", counting)
    g, frames = 3, 2
    ref = _clip(SPECS[1], frames).frames
    videos = [clip.frames[k::7] for k in range(g)]
    scores, _ = rewards.identity_reward(frames=frames)(videos, _cond(refs=[ref] * g))
    assert len(calls) == frames * (g + 1)  # g videos + one reference, not g references
    assert (scores > 0.9).all()


def test_lipsync_follows_the_audio_and_reports_its_lag(clip):
    other = _clip(SPECS[37]).audio
    audios = [clip.audio, np.roll(clip.audio, 2 * HOP), np.roll(clip.audio, -2 * HOP), other]
    scores, info = rewards.lipsync_reward(max_lag=3)([clip.frames] * 4, _cond(audios=audios))
    assert scores[0] > 0.6 and abs(info["lag"][0]) <= 1, (scores, info)
    # audio delayed by 2 frames: the mouth now leads it, and a positive lag means the mouth follows
    assert info["lag"][1] == -2 and info["lag"][2] == 2, info["lag"]
    assert scores[1] > 0.6 and scores[2] > 0.6
    assert scores[3] < scores[0] - 0.2, scores
    assert (info["face_rate"] == 1.0).all()


def test_lipsync_without_faces_scores_zero(clip):
    gray = np.full((10, CFG.size, CFG.size, 3), 128, np.uint8)
    scores, info = rewards.lipsync_reward()([gray], _cond(audios=[clip.audio]))
    assert scores[0] == 0.0 and info["face_rate"][0] == 0.0


def test_combined_is_the_weighted_sum_of_its_components(clip):
    videos = [clip.frames[:12], clip.frames[20:32]]
    cond = _cond(refs=[clip.frames] * 2, audios=[clip.audio, clip.audio[20 * HOP :]])
    weights = {"identity": 1.0, "lipsync": 0.5}
    total, info = rewards.combined(weights, identity={"frames": 2})(videos, cond)
    ident, _ = rewards.identity_reward(frames=2)(videos, cond)
    lip, _ = rewards.lipsync_reward()(videos, cond)
    np.testing.assert_allclose(total, ident + 0.5 * lip, rtol=1e-6)
    np.testing.assert_allclose(info["reward"], total)
    np.testing.assert_allclose(info["identity"], ident)
    assert "lipsync/lag" in info and "identity/distance" in info
    with pytest.raises(ValueError, match="unknown"):
        rewards.combined({"sharpness": 1.0})
    with pytest.raises(ValueError, match="without a weight"):
        rewards.combined({"identity": 1.0}, lipsync={"max_lag": 2})


def test_face_reward_orders_a_face_above_a_blur_above_nothing(clip):
    face = clip.frames[:8]
    blur = np.asarray([np.asarray(Image.fromarray(f).resize((16, 16)).resize(f.shape[1::-1], Image.BILINEAR)) for f in face])
    flat = np.full_like(face, 127)
    scores, info = rewards.face_reward(frames=2)([face, blur, flat], {})
    assert scores[0] > 0.6 and info["faces"][0] == 2  # a real face: a detection score near +1
    assert scores[2] == 0.0 and info["faces"][2] == 0  # nothing face-like: the floor
    assert scores[0] > scores[1] >= scores[2] and scores.dtype == np.float32


def test_rewards_are_listed_by_name():
    assert set(rewards.REWARDS) == {"identity", "lipsync", "face"}
