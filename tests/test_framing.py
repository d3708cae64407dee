"""Real footage through generate: a photographed face as a 512x512 reference video and a larger background
are cropped as `tavr ingest` crops, and the generated crop goes back into the background at its size."""

import shutil
import subprocess

import numpy as np
import pytest
from skimage import data as skdata

from tavr.config import GenerateConfig, IngestConfig, ModelConfig
from tavr.data import framing
from tavr.data.video import read_audio, read_video, write_video
from tavr.pipeline import TAVRPipeline

GEN = GenerateConfig(size=128, chunk_frames=9, reference_frames=9, steps=1, sampler="euler", max_output_side=640)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    """scikit-image's astronaut photo (512x512) as a 2-s video with a slow pan, and a 640x480 room without a face."""
    root = tmp_path_factory.mktemp("real")
    photo = skdata.astronaut()
    frames = np.stack([np.roll(photo, k // 5, axis=1) for k in range(50)])
    write_video(root / "astronaut.mp4", frames, 25)
    room = np.asarray(skdata.coffee())  # 400x600, no face
    return {"root": root, "video": root / "astronaut.mp4", "photo": photo, "room": room}


@pytest.fixture(scope="module")
def speech(astronaut):
    """Real speech from espeak-ng when it is installed, else a voiced tone of the same length."""
    path = astronaut["root"] / "speech.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), "Hello, I am talking from a photograph."], check=True)
        return read_audio(path, 16000)[:16000]
    t = np.arange(16000) / 16000
    return (0.3 * np.sin(2 * np.pi * 140 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


def test_the_face_is_found_and_cropped_with_the_ingest_margin(astronaut):
    photo = astronaut["photo"]
    where = framing.face_framing(photo[None], IngestConfig(), True, "reference")
    assert 150 < where.side < 400  # the face, with its margin: not the whole photo, not a 22-px face
    crop = framing.crop(photo[None], where, 128)
    assert crop.shape == (1, 128, 128, 3)
    from tavr.data.faces import detect_faces

    box = detect_faces(np.asarray(crop[0]))
    assert len(box), "the crop holds a face a detector finds"
    with pytest.raises(ValueError, match="no face found in the reference"):
        framing.face_framing(astronaut["room"][None], IngestConfig(), True, "reference")


def test_generate_crops_a_real_reference_and_keeps_the_backgrounds_size(astronaut, speech, tmp_path):
    pipe = TAVRPipeline.from_config(ModelConfig(num_layers=1), GEN, seed=0)
    room = astronaut["room"]
    out = pipe(astronaut["video"], room, speech, num_steps=1, out_path=tmp_path / "out.mp4")
    assert out.frames.shape == (25, 400, 600, 3)  # the background's size, not the model's 128
    side = min(room.shape[:2])
    x0 = (room.shape[1] - side) // 2  # no person in the room: the centred square is generated
    assert np.array_equal(out.frames[:, :, : x0 - 1], np.broadcast_to(room[:, : x0 - 1], (25, 400, x0 - 1, 3)))
    assert not np.array_equal(out.frames[:, :, x0:], np.broadcast_to(room[:, x0:], (25, 400, 600 - x0, 3)))
    assert read_video(tmp_path / "out.mp4").frames.shape == (25, 400, 600, 3)

    big = np.repeat(np.repeat(room, 2, axis=0), 2, axis=1)  # 800x1200: scaled to max_output_side
    assert pipe(astronaut["video"], big, speech[:3200], num_steps=1).frames.shape == (5, 427, 640, 3)


def test_a_wrong_sized_file_is_refused_from_its_header(astronaut, tmp_path):
    pipe = TAVRPipeline.from_config(ModelConfig(num_layers=1), GEN, seed=0)
    thin = np.zeros((5, 16, 512, 3), np.uint8)  # 32:1
    write_video(tmp_path / "thin.mp4", thin, 25)
    with pytest.raises(ValueError, match="8:1"):
        pipe(tmp_path / "thin.mp4", astronaut["room"], np.zeros(3200, np.float32))
