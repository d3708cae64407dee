"""Request checking without a server: decoding, resizing, paths, V2 mapping, the model version."""

import base64
import textwrap

import numpy as np
import pytest
from kserve import InferInput, InferRequest

from tavr.config import GenerateConfig, ServeConfig
from tavr.serve.predictor import check_limits, model_version, to_instances
from tavr.serve.requests import RequestError, check_instance, decode_base64, resolve_uri

GEN = GenerateConfig(size=128, reference_frames=9)


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _good(media) -> dict:
    return {"reference_video": _b64(media["ref"]), "target_background": _b64(media["still"]), "driving_audio": _b64(media["audio"])}


def test_a_good_instance_decodes_to_model_sized_arrays(media):
    job = check_instance({**_good(media), "steps": 3, "seed": 5, "guidance": 2}, ServeConfig(), GEN)
    assert job.reference_video.shape == (9, 128, 128, 3)  # capped to reference_frames (4k + 1)
    assert job.target_background.shape == (96, 160, 3)  # a 160x96 still at its size: the pipeline frames it
    assert job.driving_audio.shape == (16000,) and job.reference_audio is not None  # the video's own audio
    kw = job.pipeline_kwargs()
    assert kw["num_steps"] == 3 and kw["seed"] == 5 and kw["reference_guidance"] == kw["audio_guidance"] == 2.0


def test_a_file_uri_may_stand_in_the_media_field(media):
    limits = ServeConfig(allowed_root=str(media["allowed"]))
    fields = {**_good(media), "reference_video": f"file://{media['ref']}"}
    assert check_instance(fields, limits, GEN).reference_video.shape == (9, 128, 128, 3)
    with pytest.raises(RequestError) as err:
        check_instance({**fields, "reference_video": f"file://{media['outside']}"}, limits, GEN)
    assert (err.value.field, err.value.rule) == ("reference_video", "allowed_root")


def test_oversized_or_extreme_frames_are_refused_before_decoding(media, tmp_path):
    from PIL import Image

    from tavr.data.video import write_video

    Image.new("1", (5000, 5000)).save(tmp_path / "huge.png")  # 25 megapixels, a few kB on disk
    write_video(tmp_path / "thin.mp4", np.zeros((5, 16, 240, 3), np.uint8), 25)  # 15:1
    for field, path in (("target_background", "huge.png"), ("target_background", "thin.mp4"), ("reference_video", "thin.mp4")):
        with pytest.raises(RequestError) as err:
            check_instance({**_good(media), field: _b64(tmp_path / path)}, ServeConfig(), GEN)
        assert (err.value.field, err.value.rule) == (field, "frame_size")


def test_base64_may_be_wrapped_or_a_data_uri(media):
    raw = media["audio"].read_bytes()
    plain = base64.b64encode(raw).decode()
    assert decode_base64("f", "\n".join(textwrap.wrap(plain, 76))) == raw
    assert decode_base64("f", "data:audio/wav;base64," + plain) == raw
    for bad in ("", "abc$", 17):
        with pytest.raises(RequestError):
            decode_base64("f", bad)


def test_paths_resolve_only_below_the_allowed_root(media, tmp_path):
    root = str(media["allowed"])
    assert resolve_uri("f", "ref.mp4", root) == media["ref"].resolve()
    assert resolve_uri("f", f"file://{media['ref']}", root) == media["ref"].resolve()
    (media["allowed"] / "escape").mkdir(exist_ok=True)
    link = media["allowed"] / "escape" / "out.mp4"
    if not link.exists():
        link.symlink_to(media["outside"])  # a link inside the root that points outside
    for value, rule in (("../outside.mp4", "allowed_root"), (str(media["outside"]), "allowed_root"),
                        ("escape/out.mp4", "allowed_root"), ("missing.mp4", "exists"), ("http://h/x.mp4", "uri_scheme")):  # fmt: skip
        with pytest.raises(RequestError) as err:
            resolve_uri("f", value, root)
        assert err.value.rule == rule, value
    with pytest.raises(RequestError) as err:
        resolve_uri("f", "ref.mp4", "")
    assert err.value.rule == "allowed_root"


def test_v2_inputs_become_one_instance_per_row():
    req = InferRequest(model_name="tavr", infer_inputs=[
        InferInput("prompt", [2], "BYTES", ["a", "b"]), InferInput("steps", [2], "INT32", [1, 2])])  # fmt: skip
    instances, v2 = to_instances(req, max_instances=2)
    assert v2 is req and [(i["prompt"], int(i["steps"])) for i in instances] == [("a", 1), ("b", 2)]
    bad = InferRequest(model_name="tavr", infer_inputs=[
        InferInput("prompt", [2], "BYTES", ["a", "b"]), InferInput("steps", [1], "INT32", [1])])  # fmt: skip
    with pytest.raises(RequestError) as err:
        to_instances(bad, max_instances=2)
    assert err.value.rule == "shape"
    with pytest.raises(RequestError) as err:
        to_instances(b'{"instances": [{}, {}, {}]}', max_instances=2)
    assert err.value.rule == "count"


def test_the_model_version_follows_the_files(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(np.zeros(10, np.float32).tobytes())
    first = model_version(tmp_path / "m")
    assert first.startswith("m-") and model_version(tmp_path / "m") == first
    (tmp_path / "m" / "w.bin").write_bytes(np.ones(10, np.float32).tobytes())
    assert model_version(tmp_path / "m") != first


def test_unworkable_limits_are_refused():
    check_limits(ServeConfig())
    with pytest.raises(ValueError, match="queue_size"):
        check_limits(ServeConfig(queue_size=-1))
    with pytest.raises(ValueError, match="timeout_s"):
        check_limits(ServeConfig(timeout_s=0))
