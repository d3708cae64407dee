"""tavr.data.video: decode/encode round trips, fps resampling, A/V alignment, bad files."""

from __future__ import annotations

import inspect
import pickle
from fractions import Fraction

import av
import numpy as np
import pytest

from tavr.data import video as video_mod
from tavr.data.video import (Clip, VideoError, iter_video, probe, read_audio, read_video, write_audio,
                             write_video)

SR = 16000


def gradients(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """(n, h, w, 3) uint8: smooth colour gradients drifting over time."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.arange(n, dtype=np.float32)[:, None, None]
    r = 128 + 100 * np.sin((x + 2 * t) / 11)
    g = 128 + 100 * np.cos((y - t) / 9)
    b = 128 + 60 * np.sin((x + y + 3 * t) / 17)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def chirp(seconds: float, rate: int = SR) -> np.ndarray:
    """(N,) float32: 150 Hz -> ~2 kHz sweep, amplitude 0.5."""
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (150 * t + 450 * t**2))).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def best_lag(ref: np.ndarray, got: np.ndarray, max_lag: int = 400) -> tuple[int, float]:
    """Lag (samples, + means `got` is late) maximising normalised correlation, and that value."""
    n = min(len(ref), len(got)) - 2 * max_lag
    a = ref[max_lag:max_lag + n]
    scores = []
    for lag in range(-max_lag, max_lag + 1):
        b = got[max_lag + lag:max_lag + lag + n]
        scores.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    i = int(np.argmax(scores))
    return i - max_lag, scores[i]


def pyav_write(path, vcodec, frames, fps, acodec=None, audio=None, arate=SR, options=None, delay=0):
    """Write a test file directly with PyAV (containers/codecs write_video does not make).
    delay: audio starts `delay` samples after the video (before it when negative)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.options = options or {}
        if acodec:
            as_ = out.add_stream(acodec, rate=arate)
            as_.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i + round(max(0, -delay) / arate * fps), Fraction(1) / fps
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        if acodec:
            step = 960 if acodec == "libopus" else 1024
            for s in range(0, len(audio), step):
                af = av.AudioFrame.from_ndarray(audio[None, s:s + step], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = arate, s + max(0, delay), Fraction(1, arate)
                out.mux(as_.encode(af))
            out.mux(as_.encode(None))


@pytest.fixture(scope="module")
def av_mp4(tmp_path_factory):
    """A 2-s 25 fps 64x48 mp4 with chirp audio, written by write_video."""
    path = tmp_path_factory.mktemp("mp4") / "sub" / "clip.mp4"
    frames, audio = gradients(50), chirp(2.0)
    write_video(path, frames, 25, audio=audio, audio_rate=SR)
    return path, frames, audio


def test_mp4_round_trip(av_mp4):
    path, frames, audio = av_mp4
    clip = read_video(path)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == (50, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == Fraction(25) and isinstance(clip.fps, Fraction)
    assert clip.num_frames == 50 and clip.duration == 2.0
    assert psnr(clip.frames, frames) > 30
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (32000,)
    assert clip.audio_rate == SR
    lag, corr = best_lag(audio, clip.audio)
    assert abs(lag) <= 32 and corr > 0.9  # AAC priming is trimmed (mp4 edit list)
    assert best_lag(audio, clip.audio, max_lag=0)[1] > 0.9
    info = probe(path)
    assert info["width"] == 64 and info["height"] == 48 and info["fps"] == Fraction(25)
    assert info["num_frames"] == 50 and info["has_audio"] and info["codec"] == "h264"
    assert info["duration"] == pytest.approx(2.0, abs=0.05)
    assert not [p for p in path.parent.iterdir() if p.name != "clip.mp4"]  # no tmp left


def test_read_video_other_audio_rate_and_max_seconds(av_mp4):
    path, _, audio = av_mp4
    clip = read_video(path, audio_rate=8000, max_seconds=1.0)
    assert clip.num_frames == 25 and clip.audio.shape == (8000,)
    lag, corr = best_lag(audio[::2][:8000], clip.audio, max_lag=100)
    assert abs(lag) <= 16 and corr > 0.8


def test_fps_resampling_picks_frames_by_time(tmp_path):
    src = np.repeat(np.arange(60, dtype=np.uint8)[:, None, None, None] * 4, 3, axis=-1)
    src = np.ascontiguousarray(np.broadcast_to(src, (60, 16, 16, 3)))
    path = tmp_path / "idx.mp4"
    write_video(path, src, 30, audio=chirp(2.0), crf=0)
    clip = read_video(path, fps=25)
    assert clip.num_frames == 50 and clip.fps == Fraction(25)
    assert clip.audio.shape == (32000,)
    picked = np.round(clip.frames.reshape(50, -1).mean(axis=1) / 4).astype(int)
    assert picked.tolist() == [k * 30 // 25 for k in range(50)]
    same = read_video(path)
    assert same.num_frames == 60 and same.fps == Fraction(30)
    assert read_video(path, fps=30).frames.tobytes() == same.frames.tobytes()
    assert read_video(path, fps=10, max_seconds=1.5).num_frames == 15
    assert read_video(path, fps=29.97).fps == Fraction(2997, 100)
    with pytest.raises(ValueError, match="fps must be positive"):
        read_video(path, fps=0)


def test_ntsc_fps_is_exact(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write_video(path, gradients(6, 16, 16), Fraction(30000, 1001))
    clip = read_video(path)
    assert clip.fps == Fraction(30000, 1001) and clip.num_frames == 6


@pytest.mark.parametrize(
    "name, vcodec, acodec, arate, options",
    [
        ("a.mkv", "libx264", "aac", 16000, {"crf": "18"}),
        ("b.mkv", "libx264", "libopus", 48000, {"crf": "18"}),
        ("c.webm", "libvpx-vp9", "libopus", 48000, {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
        ("d.mov", "libx264", "aac", 44100, {"crf": "18"}),
    ],
)
def test_other_containers(tmp_path, name, vcodec, acodec, arate, options):
    frames = gradients(50)
    path = tmp_path / name
    pyav_write(path, vcodec, frames, 25, acodec, chirp(2.0, arate), arate, options)
    clip = read_video(path)
    assert clip.num_frames == 50 and clip.fps == Fraction(25)
    assert psnr(clip.frames, frames) > 30
    assert clip.audio.shape == (32000,)
    lag, corr = best_lag(chirp(2.0), clip.audio)
    assert abs(lag) <= 32 and corr > 0.9, (lag, corr)
    assert abs(len(read_audio(path)) - 32000) <= 1024


@pytest.mark.parametrize("delay", [3200, -3200])  # audio 0.2 s late / 0.2 s early
def test_audio_is_aligned_to_first_frame(tmp_path, delay):
    path = tmp_path / "offset.mkv"
    audio = chirp(2.0)
    pyav_write(path, "libx264", gradients(50), 25, "aac", audio, SR, {"crf": "18"}, delay=delay)
    clip = read_video(path)
    assert clip.num_frames == 50 and clip.audio.shape == (32000,)
    expected = np.concatenate([np.zeros(delay, np.float32), audio])[:32000] if delay > 0 else audio[-delay:]
    if delay > 0:
        assert np.abs(clip.audio[: delay - 64]).max() < 1e-3  # silence before the audio starts
    else:
        assert np.abs(clip.audio[len(expected) + 1100:]).max() < 1e-3  # padded after it ends
    lag, corr = best_lag(expected, clip.audio[: len(expected)])
    assert abs(lag) <= 32 and corr > 0.9, (lag, corr)


def test_video_without_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    write_video(path, gradients(10), 25)
    clip = read_video(path)
    assert clip.audio is None and clip.num_frames == 10
    assert probe(path)["has_audio"] is False
    with pytest.raises(VideoError) as e:
        read_audio(path)
    assert e.value.reason == "no audio stream" and str(path) in str(e.value)


@pytest.mark.parametrize("kind", ["garbage", "text"])
def test_undecodable_files(tmp_path, kind):
    path = tmp_path / ("x.mp4" if kind == "garbage" else "y.mp4")
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(50_000))
    else:
        path.write_text("this is not a video\n" * 100)
    for fn in (read_video, probe, read_audio):
        with pytest.raises(VideoError) as e:
            fn(path)
        assert e.value.reason.startswith("cannot decode") and e.value.path == str(path)


def test_missing_file_and_no_video_stream(tmp_path):
    with pytest.raises(VideoError, match="file not found"):
        read_video(tmp_path / "nope.mp4")
    wav = tmp_path / "a.wav"
    write_audio(wav, chirp(0.5))
    with pytest.raises(VideoError) as e:
        read_video(wav)
    assert e.value.reason == "no video stream"


@pytest.mark.parametrize("name", ["t.mp4", "t.mkv"])
def test_truncated_file(tmp_path, name):
    full = tmp_path / f"full_{name}"
    if name.endswith(".mp4"):
        write_video(full, gradients(50), 25, audio=chirp(2.0))
    else:
        pyav_write(full, "libx264", gradients(50), 25, "aac", chirp(2.0), SR, {"crf": "18"})
    data = full.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: int(len(data) * 0.3)])
    try:
        clip = read_video(cut)
    except VideoError as e:
        assert e.reason.startswith("cannot decode")
    else:
        assert 0 < clip.num_frames < 50
        assert clip.audio is None or len(clip.audio) == round(clip.duration * SR)


def test_write_video_validates(tmp_path):
    path = tmp_path / "bad.mp4"
    cases = [
        (np.zeros((4, 8, 8), np.float32), "frames must be uint8 (F, H, W, 3); got float32 (4, 8, 8)"),
        (np.zeros((4, 8, 8, 3), np.float32), "frames must be uint8 (F, H, W, 3); got float32 (4, 8, 8, 3)"),
        (np.zeros((4, 8, 8, 4), np.uint8), "frames must be uint8 (F, H, W, 3); got uint8 (4, 8, 8, 4)"),
        (np.zeros((0, 8, 8, 3), np.uint8), "frames must be uint8 (F, H, W, 3); got uint8 (0, 8, 8, 3)"),
        ([[0]], "frames must be uint8 (F, H, W, 3); got list"),
        (np.zeros((4, 9, 8, 3), np.uint8), "frame height and width must be even; got 9x8"),
    ]
    for frames, msg in cases:
        with pytest.raises(ValueError) as e:
            write_video(path, frames, 25)
        assert str(e.value) == msg
    with pytest.raises(ValueError, match="fps must be positive"):
        write_video(path, np.zeros((2, 8, 8, 3), np.uint8), 0)
    with pytest.raises(ValueError, match=r"audio must be float \(N,\); got int16 \(10,\)"):
        write_video(path, np.zeros((2, 8, 8, 3), np.uint8), 25, audio=np.zeros(10, np.int16))
    assert not list(tmp_path.iterdir())


def test_write_video_is_deterministic(tmp_path):
    # x264's mb-tree made ~1-10% of runs differ on AVX-512 CPUs; repeat to catch that.
    frames, audio = gradients(20), chirp(0.8)
    write_video(tmp_path / "ref.mp4", frames, 25, audio=audio)
    ref = (tmp_path / "ref.mp4").read_bytes()
    for i in range(40):
        write_video(tmp_path / "again.mp4", frames, 25, audio=audio)
        assert (tmp_path / "again.mp4").read_bytes() == ref, f"run {i} differs"


def test_audio_round_trip(tmp_path):
    audio = chirp(1.25)
    audio[:10] = [1.5, -1.5, 1, -1, 0, 0.25, -0.25, 0.5, -0.5, 0]  # out of range gets clipped
    path = tmp_path / "deep" / "a.wav"
    write_audio(path, audio)
    got = read_audio(path)
    assert got.dtype == np.float32 and got.shape == audio.shape
    assert np.abs(got - np.clip(audio, -1, 1)).max() < 1e-4
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]
    assert read_audio(path, rate=8000).shape == (10000,)


def test_read_audio_downmixes_stereo_by_averaging(tmp_path):
    path = tmp_path / "stereo.flac"
    left = chirp(0.5)
    with av.open(str(path), "w") as out:
        st = out.add_stream("flac", rate=SR)
        st.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([left, -0.5 * left]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = SR, 0
        out.mux(st.encode(frame))
        out.mux(st.encode(None))
    got = read_audio(path)
    assert got.shape == left.shape and np.abs(got - 0.25 * left).max() < 1e-3


def test_video_error_is_picklable():
    e = pickle.loads(pickle.dumps(VideoError("/x/y.mp4", "no video stream")))
    assert (e.path, e.reason, str(e)) == ("/x/y.mp4", "no video stream", "/x/y.mp4: no video stream")


@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory):
    """A 3.2-s 30 fps 96x128 mp4 with chirp audio (96 frames)."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    frames = gradients(96, 96, 128)
    write_video(path, frames, 30, audio=chirp(3.2))
    return path, frames


def test_iter_video_chunks_are_read_video(long_mp4):
    path, _ = long_mp4
    whole = read_video(path, fps=25)
    assert whole.num_frames == 80
    chunks = list(iter_video(path, 25, chunk_frames=25))
    assert len(chunks) == 3  # 80 frames: the last 5 are dropped
    for c in chunks:
        assert isinstance(c, Clip) and c.fps == Fraction(25) and c.audio_rate == SR
        assert c.frames.shape == (25, 96, 128, 3) and c.frames.dtype == np.uint8
        assert c.audio.shape == (640 * 25,) and c.audio.dtype == np.float32
    assert np.array_equal(np.concatenate([c.frames for c in chunks]), whole.frames[:75])
    np.testing.assert_allclose(np.concatenate([c.audio for c in chunks]), whole.audio[:75 * 640], atol=1e-5)
    # stream rate, and chunks whose audio length is not whole: starts are rounded, no drift
    native = read_video(path)
    got = list(iter_video(path, None, chunk_frames=32))
    assert [c.fps for c in got] == [Fraction(30)] * 3
    assert np.array_equal(np.concatenate([c.frames for c in got]), native.frames)
    ntsc, rate = read_video(path, fps=29.97, audio_rate=8000), Fraction(8000 * 100, 2997)
    got = list(iter_video(path, 29.97, audio_rate=8000, chunk_frames=7))
    assert len(got) == ntsc.num_frames // 7 == 13
    assert np.array_equal(np.concatenate([c.frames for c in got]), ntsc.frames[:91])
    for k, c in enumerate(got):
        start = round(k * 7 * rate)
        assert c.audio.shape == (round(7 * rate),) == (1869,)
        np.testing.assert_allclose(c.audio, ntsc.audio[start:start + 1869], atol=1e-5)


def test_iter_video_is_lazy(long_mp4, monkeypatch):
    path, _ = long_mp4
    decoded = []
    rgb = video_mod._Frames._rgb
    monkeypatch.setattr(video_mod._Frames, "_rgb", lambda self, frame: decoded.append(1) or rgb(self, frame))
    gen = iter_video(path, 25, chunk_frames=10)
    assert inspect.isgenerator(gen) and not decoded  # nothing is opened before the first next()
    first = next(gen)
    assert first.num_frames == 10 and len(decoded) < 30  # of 96 source frames
    gen.close()
    assert len(decoded) < 30


def test_max_side_downscales_while_decoding(long_mp4):
    path, frames = long_mp4
    small = frames.reshape(96, 48, 2, 64, 2, 3).mean(axis=(2, 4))
    clip = read_video(path, max_side=48)
    assert clip.frames.shape == (96, 48, 64, 3)
    assert psnr(clip.frames, small) > 30
    chunk = next(iter_video(path, 25, chunk_frames=20, max_side=48))
    assert chunk.frames.shape == (20, 48, 64, 3)
    assert np.array_equal(chunk.frames, read_video(path, fps=25, max_side=48).frames[:20])
    assert read_video(path, max_side=96).frames.shape == (96, 96, 128, 3)  # not larger: unchanged
    assert read_video(path, max_side=50).frames.shape == (96, 50, 67, 3)  # 128 * 50 / 96 = 66.7
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_side must be a positive int"):
            read_video(path, max_side=bad)
        with pytest.raises(ValueError, match="max_side must be a positive int"):
            iter_video(path, 25, max_side=bad)
    with pytest.raises(ValueError, match="chunk_frames must be a positive int"):
        iter_video(path, 25, chunk_frames=0)


def test_iter_video_without_audio_and_short_file(tmp_path):
    path = tmp_path / "silent.mp4"
    write_video(path, gradients(30), 25)
    chunks = list(iter_video(path, 25, chunk_frames=10))
    assert len(chunks) == 3 and all(c.audio is None for c in chunks)
    assert list(iter_video(path, 25, chunk_frames=31)) == []  # no complete chunk: nothing


def test_iter_video_errors(tmp_path):
    garbage = tmp_path / "x.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(VideoError) as e:
        next(iter_video(garbage, 25))
    assert e.value.reason.startswith("cannot decode") and e.value.path == str(garbage)
    wav = tmp_path / "a.wav"
    write_audio(wav, chirp(0.5))
    with pytest.raises(VideoError) as e:
        next(iter_video(wav, 25))
    assert e.value.reason == "no video stream"
    with pytest.raises(VideoError, match="file not found"):
        next(iter_video(tmp_path / "nope.mp4", 25))
    with pytest.raises(ValueError, match="fps must be positive"):
        iter_video(wav, 0)


def test_read_video_resampling_is_repeatable(long_mp4):
    # read_video used to read the stream's time base after closing the file (garbage
    # memory), so now and then every resampled frame came out as the last one.
    path, _ = long_mp4
    ref = read_video(path).frames
    for _ in range(12):
        assert np.array_equal(read_video(path, fps=30).frames, ref)


def test_audio_of_eight_or_more_channels_is_mixed_down_without_crashing(tmp_path):
    # PyAV 18 misreads planar frames of >= 8 channels (one plane too many): reading such a file
    # once killed the process. Run it in a child so a regression fails this test, not the run.
    import subprocess
    import sys
    import wave

    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    for channels in (8, 12):
        path = tmp_path / f"ch{channels}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(np.repeat(tone[:, None], channels, axis=1).tobytes())
        code = ("from tavr.data.video import read_audio; import sys; "
                f"a = read_audio(sys.argv[1]); b = read_audio(sys.argv[1], max_seconds=0.25); "
                "print(len(a), round(float(abs(a).max()), 3), len(b))")  # fmt: skip
        res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        n, peak, capped = res.stdout.split()
        assert int(n) == 16000 and float(peak) == pytest.approx(0.5, abs=0.01)  # every channel the same tone: the mean is it
        assert 4000 <= int(capped) < 16000  # decoding stopped soon after 0.25 s


def test_max_frames_stops_decoding_a_dense_file(tmp_path):
    frames = np.zeros((100, 32, 32, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(100, dtype=np.uint8)[:, None, None] * 2
    write_video(tmp_path / "dense.mp4", frames, 100)  # 100 frames in one second
    clip = read_video(tmp_path / "dense.mp4", fps=25, max_frames=30)
    assert clip.num_frames == 8  # the first 30 source frames = 0.3 s -> 8 frames at 25 fps
    assert read_video(tmp_path / "dense.mp4", fps=25).num_frames == 25
