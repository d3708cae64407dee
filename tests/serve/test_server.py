"""The predictor over HTTP, in a real server process: answers, every 400, the queue's 503s, timeouts."""

import base64
import concurrent.futures
import io

import httpx
import pytest

from tavr.data.video import read_video

pytestmark = pytest.mark.slow


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _instance(media, **over):
    fields = {"reference_video": b64(media["ref"]), "target_background": b64(media["bg"]),
              "driving_audio": b64(media["audio"]), "steps": 1, "seed": 0}  # fmt: skip
    fields.update(over)
    return {k: v for k, v in fields.items() if v is not None}


def _v1(server, instance, timeout=120):
    return httpx.post(f"{server['url']}/v1/models/tavr:predict", json={"instances": [instance]}, timeout=timeout)


def _ready(server) -> bool:
    return httpx.get(f"{server['url']}/v2/models/tavr/ready", timeout=10).status_code == 200


def _video(answer_b64: str, tmp_path):
    path = tmp_path / "answer.mp4"
    path.write_bytes(base64.b64decode(answer_b64))
    return read_video(path)


def test_v1_answer_is_a_playable_mp4_as_long_as_the_audio(server, media, tmp_path):
    res = _v1(server, _instance(media, prompt="a person talking"))
    assert res.status_code == 200, res.text
    (pred,) = res.json()["predictions"]
    clip = _video(pred["video"], tmp_path)
    assert clip.num_frames == 25 and clip.fps == 25  # 1.00 s of driving audio at 25 fps
    assert clip.frames.shape[1:] == (128, 128, 3)
    assert clip.audio is not None and len(clip.audio) == 16000
    assert pred["duration_s"] == pytest.approx(1.0)
    assert pred["seconds"] > 0 and pred["model_version"].startswith("model-")


def test_v2_carries_the_same_fields_and_answers_named_outputs(server, media, tmp_path):
    inputs = [
        {"name": "reference_video", "shape": [1], "datatype": "BYTES", "data": [b64(media["ref"])]},
        {"name": "target_background", "shape": [1], "datatype": "BYTES", "data": [b64(media["still"])]},
        {"name": "driving_audio", "shape": [1], "datatype": "BYTES", "data": [b64(media["audio"])]},
        {"name": "steps", "shape": [1], "datatype": "INT32", "data": [1]},
        {"name": "keep_ratio", "shape": [1], "datatype": "FP32", "data": [0.5]},
    ]
    res = httpx.post(f"{server['url']}/v2/models/tavr/infer", json={"id": "r1", "inputs": inputs}, timeout=120)
    assert res.status_code == 200, res.text
    body = res.json()
    outputs = {o["name"]: o for o in body["outputs"]}
    assert body["id"] == "r1" and set(outputs) == {"video", "duration_s", "seconds", "model_version"}
    assert outputs["video"]["datatype"] == "BYTES" and outputs["duration_s"]["datatype"] == "FP32"
    assert outputs["duration_s"]["data"] == [pytest.approx(1.0)]
    assert _video(outputs["video"]["data"][0], tmp_path).num_frames == 25


def test_a_path_inside_the_allowed_root_is_read(server, media):
    res = _v1(server, _instance(media, reference_video=None, reference_video_uri="ref.mp4"))
    assert res.status_code == 200, res.text


BAD = {
    "bad base64": ({"reference_video": "this is *not* base64"}, "reference_video", "base64"),
    "undecodable video": ({"reference_video": base64.b64encode(b"\x00\x01junk" * 300).decode()}, "reference_video", "decodable"),
    "undecodable audio": ({"driving_audio": base64.b64encode(b"RIFF....WAVEjunk" * 50).decode()}, "driving_audio", "decodable"),
    "no face": ({"reference_video": "noface"}, "reference_video", "face"),
    "audio too long": ({"driving_audio": "long"}, "driving_audio", "max_duration"),
    "path outside the root": ({"reference_video": None, "reference_video_uri": "../outside.mp4"}, "reference_video_uri", "allowed_root"),
    "absolute path outside": ({"reference_video": None, "reference_video_uri": "file:///etc/passwd"}, "reference_video_uri", "allowed_root"),
    "remote uri": ({"reference_video": None, "reference_video_uri": "s3://bucket/ref.mp4"}, "reference_video_uri", "uri_scheme"),
    "missing field": ({"driving_audio": None}, "driving_audio", "required"),
    "unknown field": ({"refrence_video": "x"}, "refrence_video", "known_field"),
    "steps too many": ({"steps": 1000}, "steps", "range"),
    "steps as text": ({"steps": "4"}, "steps", "integer"),
    "keep_ratio zero": ({"keep_ratio": 0}, "keep_ratio", "range"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_400_naming_field_and_rule(server, media, case):
    over, field, rule = BAD[case]
    over = {k: (b64(media[v]) if isinstance(v, str) and v in media else v) for k, v in over.items()}
    res = _v1(server, _instance(media, **over))
    assert res.status_code == 400, res.text
    body = res.json()
    assert body["field"] == field and body["rule"] == rule and field in body["error"]
    assert _ready(server)


def test_malformed_bodies_are_400s(server, media):
    url = f"{server['url']}/v1/models/tavr:predict"
    too_big = {"instances": [_instance(media, prompt="x" * (2 * 2**20))]}  # over the 1-MiB limit of the test server
    for kwargs, field in (
        ({"json": too_big}, "body"),
        ({"json": {"inputs": []}}, "instances"),
        ({"json": {"instances": [_instance(media)] * 3}}, "instances"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, "body"),
        ({"content": b"{not json", "headers": {"content-type": "text/plain"}}, "body"),
    ):
        res = httpx.post(url, timeout=60, **kwargs)
        assert res.status_code == 400, res.text
        assert res.json().get("field") == field, res.text
    bad_v2 = {"inputs": [{"name": "steps", "shape": [1], "datatype": "INT32"}]}  # no data
    res = httpx.post(f"{server['url']}/v2/models/tavr/infer", json=bad_v2, timeout=60)
    assert res.status_code == 400 and res.json()["rule"] == "schema"
    assert _ready(server)


def _raw(server, path, body: bytes, **headers):
    return httpx.post(f"{server['url']}{path}", content=body, headers=headers, timeout=60)


V1 = "/v1/models/tavr:predict"
V2 = "/v2/models/tavr/infer"


def test_hostile_bodies_are_400s_and_the_server_survives(server, media, tmp_path):
    plain = {"content-type": "text/plain"}  # kserve hands such bodies to the model unparsed
    cases = [
        (V1, b"[" * 100000 + b"]" * 100000, plain, "body", "json"),  # nesting past the recursion limit
        (V1, b'{"instances": [{"steps": ' + b"9" * 5000 + b"}]}", plain, "body", "json"),  # a 5000-digit number
        (V1, b'{"instances": [{"\\ud800": 1}]}', plain, "\\ud800", "known_field"),  # a lone surrogate as a field name
        (V2, b"{}xx", {"content-type": "application/octet-stream", "inference-header-content-length": "2"}, "body", "json"),
    ]
    for path, body, headers, field, rule in cases:
        res = _raw(server, path, body, **headers)
        assert res.status_code == 400, (body[:60], res.text)
        assert (res.json()["field"], res.json()["rule"]) == (field, rule), res.text
    prompt = '{"instances": [{"prompt": "\\ud800", "reference_video": "x", "target_background": "x", "driving_audio": "x"}]}'
    res = _raw(server, V1, prompt.encode(), **plain)
    assert res.status_code == 400 and res.json()["rule"] == "utf-8"
    loop = media["allowed"] / "loop1"
    if not loop.is_symlink():
        loop.symlink_to(media["allowed"] / "loop2")
        (media["allowed"] / "loop2").symlink_to(loop)
    for uri, rule in (("ref.mp4\x00x", "path"), ("a" * 5000, "path"), ("loop1", "path"), ("file://evil/ref.mp4", "uri_scheme")):
        res = _v1(server, _instance(media, reference_video=None, reference_video_uri=uri))
        assert res.status_code == 400 and res.json()["rule"] == rule, (uri[:20], res.text)

    def chunks():
        yield b'{"instances": [{"prompt": "'
        for _ in range(20):
            yield b"x" * 2**17  # 2.5 MiB in all, past the 1-MiB limit, with no content-length
        yield b'"}]}'

    res = httpx.post(f"{server['url']}{V2}", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert res.status_code == 400 and res.json()["rule"] == "max_request_mb", res.text
    assert _ready(server) and server["process"].poll() is None


def test_v2_inputs_must_match_their_declared_type_and_shape(server, media):
    base = [{"name": "reference_video", "shape": [1], "datatype": "BYTES", "data": [b64(media["ref"])]},
            {"name": "target_background", "shape": [1], "datatype": "BYTES", "data": [b64(media["still"])]},
            {"name": "driving_audio", "shape": [1], "datatype": "BYTES", "data": [b64(media["audio"])]}]  # fmt: skip
    for extra, rule in (
        ({"name": "steps", "shape": [1], "datatype": "BYTES", "data": ["2"]}, "datatype"),
        ({"name": "steps", "shape": [2], "datatype": "INT32", "data": [2]}, "shape"),
        (base[0], "duplicate"),
    ):
        res = httpx.post(f"{server['url']}{V2}", json={"inputs": base + [extra]}, timeout=60)
        assert res.status_code == 400 and res.json()["rule"] == rule, res.text


def test_audio_of_eight_channels_is_mixed_down(server, media, tmp_path):
    import wave

    import numpy as np

    tone = (np.sin(np.arange(16000) * 0.1) * 8000).astype(np.int16)
    path = tmp_path / "ch8.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(8)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.repeat(tone[:, None], 8, axis=1).tobytes())
    res = _v1(server, _instance(media, driving_audio=b64(path)))
    assert res.status_code == 200, res.text
    assert res.json()["predictions"][0]["duration_s"] == pytest.approx(1.0)


def test_a_generation_past_its_timeout_is_cancelled(server, media):
    res = _v1(server, _instance(media, steps=8, timeout_s=0.05))
    assert res.status_code == 504 and res.json()["rule"] == "timeout"
    assert _ready(server)
    assert _v1(server, _instance(media)).status_code == 200  # the next one runs normally


def test_a_burst_over_the_queue_gets_503s_and_the_server_stays_ready(server, media):
    body = {"instances": [_instance(media, steps=4)]}
    url = f"{server['url']}/v1/models/tavr:predict"
    bad = {"instances": [_instance(media, steps=0)]}
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        answers = list(pool.map(lambda i: httpx.post(url, json=bad if i == 4 else body, timeout=300), range(9)))
    assert answers[4].status_code == 400 and answers[4].json()["field"] == "steps"  # bad input is a 400 even when busy
    answers = answers[:4] + answers[5:]
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {200, 503}, [a.text[:200] for a in answers]
    assert 1 <= codes.count(200) <= 3 + 2 and codes.count(503) >= 3  # queue 2 + the running one admitted at once
    busy = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "7" and "busy" in a.json()["error"] for a in busy)
    assert _ready(server)
    assert server["process"].poll() is None
    assert _v1(server, _instance(media)).status_code == 200


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_client_command_writes_the_answer(server, media, tmp_path, protocol):
    from typer.testing import CliRunner

    from tavr.cli import app

    args = ["client", "generate", "--url", server["url"], "--reference", str(media["ref"]), "--background", str(media["bg"]),
            "--audio", str(media["audio"]), "--out", str(tmp_path / "out.mp4"), "--steps", "1", "--protocol", protocol]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert read_video(tmp_path / "out.mp4").num_frames == 25
    res = CliRunner().invoke(app, args[:-4] + ["--steps", "99"])
    assert res.exit_code == 1 and "steps" in res.output


def test_serve_refuses_a_missing_model(tmp_path):
    from typer.testing import CliRunner

    from tavr.cli import app

    res = CliRunner().invoke(app, ["serve", "--model-dir", str(tmp_path / "nothing"), "--port", "9"])
    assert res.exit_code == 2 and "model_index.json" in res.output


def test_serve_names_a_truncated_weight_file_and_listens_where_told(server, tmp_path):
    from typer.testing import CliRunner

    from tavr.cli import app
    from tavr.config import GenerateConfig, ModelConfig
    from tavr.pipeline import TAVRPipeline

    gen = GenerateConfig(size=128, chunk_frames=9, reference_frames=9, steps=1, sampler="euler")
    TAVRPipeline.from_config(ModelConfig(num_layers=1), gen, seed=0).save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "transformer" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a copy that stopped short
    res = CliRunner().invoke(app, ["serve", "--model-dir", str(tmp_path / "model"), "--port", "9"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "is truncated" in text and "model.safetensors" in text, res.output
    assert "Traceback" not in res.output
    # the fixture's server was started without --host: it listens on loopback only
    log = server["log"].read_text()
    assert "http://127.0.0.1:" in log and "0.0.0.0" not in log
