"""The adapted image reference: placement, colour transfer and no trace of the target person."""

import numpy as np
import pytest

from tavr.eval.adapt import adapt_reference, fill, match_colour, place


def _scene(seed: int, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    """A textured 64x64 background, optionally tinted (a change of lighting)."""
    rng = np.random.default_rng(seed)
    base = np.full((64, 64, 3), (90, 140, 110), np.float64) + rng.normal(0, 20, (64, 64, 3))
    return np.clip(base * np.array(tint), 0, 255).astype(np.uint8)


def _person(frame: np.ndarray, box: tuple[int, int, int, int], colour=(200, 150, 120), tint=(1.0, 1.0, 1.0)):
    y0, x0, y1, x1 = box
    out, mask = frame.copy(), np.zeros(frame.shape[:2], bool)
    mask[y0:y1, x0:x1] = True
    out[mask] = np.clip(np.array(colour) * np.array(tint), 0, 255).astype(np.uint8)
    return out, mask


def test_a_frame_adapted_to_itself_is_unchanged():
    frame, mask = _person(_scene(0), (16, 20, 56, 44))
    out = adapt_reference(frame, mask, frame, mask)
    assert np.abs(out.astype(int) - frame).max() <= 1


def test_the_person_is_moved_onto_the_target_persons_box_and_nothing_of_the_target_person_remains():
    ref, ref_mask = _person(_scene(0), (4, 4, 24, 16))  # small, top left
    target, tgt_mask = _person(_scene(1), (20, 16, 60, 40), colour=(255, 0, 255))  # large, magenta
    moved, placed = place(ref, ref_mask, tgt_mask)
    rows, cols = np.flatnonzero(placed.any(1)), np.flatnonzero(placed.any(0))
    assert abs(rows[0] - 20) <= 1 and abs(rows[-1] - 59) <= 1  # the target's height and place
    assert abs((cols[0] + cols[-1]) / 2 - 27.5) <= 1 and abs((cols[-1] - cols[0] + 1) - 24) <= 2  # scaled by 2
    out = adapt_reference(ref, ref_mask, target, tgt_mask)
    magenta = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] > 200)
    assert not magenta.any()
    assert np.array_equal(out[~tgt_mask], target[~tgt_mask])  # the scene outside the target person is untouched


def test_colour_matching_undoes_a_change_of_lighting():
    tint = (1.3, 0.8, 0.7)
    ref, ref_mask = _person(_scene(0, tint), (16, 20, 56, 44), tint=tint)  # filmed under warm light
    target, tgt_mask = _person(_scene(0), (16, 20, 56, 44))  # the same scene and person under neutral light
    out = adapt_reference(ref, ref_mask, target, tgt_mask)
    true = np.array((200, 150, 120))
    before = np.abs(ref[ref_mask].mean(0) - true).mean()
    after = np.abs(out[tgt_mask].mean(0) - true).mean()
    assert after < 0.7 * before
    same = match_colour(ref[ref_mask], ref[~ref_mask], ref[~ref_mask])  # no change of scene: no change
    assert np.abs(same.astype(int) - ref[ref_mask]).max() <= 1


def test_fill_leaves_pixels_outside_the_hole_alone():
    frame = _scene(2)
    hole = np.zeros((64, 64), bool)
    hole[10:30, 10:30] = True
    frame[hole] = 255
    out = fill(frame, hole)
    assert np.array_equal(out[~hole], frame[~hole]) and out[hole].mean() < 200


def test_bad_inputs_are_errors():
    frame, mask = _person(_scene(0), (16, 20, 56, 44))
    with pytest.raises(ValueError, match="some but not all"):
        adapt_reference(frame, np.zeros_like(mask), frame, mask)
    with pytest.raises(ValueError, match="one size"):
        adapt_reference(frame, mask, frame[:32], mask[:32])
