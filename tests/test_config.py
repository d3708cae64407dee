"""The config tree: params.yaml loads, presets apply under the file, bad keys and types raise."""

import subprocess
import sys
from pathlib import Path

import pytest

from tavr.config import PRESETS, ConfigError, TAVRConfig, build_config, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_loads_and_matches_defaults_where_unset():
    cfg = load_config(ROOT / "params.yaml")
    assert isinstance(cfg, TAVRConfig)
    assert cfg.synth.identities == 48 and cfg.synth.scenes == 12
    assert cfg.ingest.bench_pairs == 158
    assert cfg.qa.size == cfg.ingest.size == cfg.synth.size


def test_unknown_key_names_its_dotted_path(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("ingest:\n  fpz: 30\n")
    with pytest.raises(ConfigError, match=r"unknown key 'ingest\.fpz'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown key 'colour'"):
        build_config({"colour": 1})


def test_wrong_type_names_its_path():
    with pytest.raises(ConfigError, match=r"synth\.identities: expected an integer"):
        build_config({"synth": {"identities": "many"}})
    with pytest.raises(ConfigError, match=r"qa\.fps: expected a number"):
        build_config({"qa": {"fps": True}})
    with pytest.raises(ConfigError, match=r"^synth: expected a mapping"):
        build_config({"synth": [1, 2]})


def test_ints_widen_to_floats_and_tree_is_frozen():
    cfg = build_config({"qa": {"fps": 30}})
    assert cfg.qa.fps == 30.0 and isinstance(cfg.qa.fps, float)
    with pytest.raises(Exception):
        cfg.qa.fps = 25.0  # frozen


def test_preset_applies_under_file_values():
    cfg = build_config({"preset": "small"})
    assert cfg.ingest.size == PRESETS["small"]["ingest"]["size"] == 256
    cfg = build_config({"preset": "small", "ingest": {"size": 192}})
    assert cfg.ingest.size == 192 and cfg.qa.size == 256
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        build_config({"preset": "huge"})


def test_to_dict_round_trips():
    cfg = build_config({"preset": "1.3b", "synth": {"seed": 3}})
    assert build_config(to_dict(cfg)) == cfg


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_partial_nested_section_keeps_its_own_defaults():
    cfg = build_config({"vae": {"run": {"tracker": "none"}}})
    assert cfg.vae.run.tracker == "none"
    assert cfg.vae.run.steps == TAVRConfig().vae.run.steps  # the stage's default, not RunConfig's
    assert cfg.vae.run.lr == TAVRConfig().vae.run.lr != 1e-4
    with pytest.raises(ConfigError, match=r"unknown key 'vae\.run\.stepz'"):
        build_config({"vae": {"run": {"stepz": 3}}})


def test_a_params_file_that_was_asked_for_must_exist(tmp_path, monkeypatch):
    """A missing --params never falls back to the defaults (which would overwrite the stage's outputs)."""
    import subprocess
    import sys

    from tavr.config import params_path

    monkeypatch.chdir(tmp_path)
    assert params_path(None) is None  # no ./params.yaml: the defaults
    (tmp_path / "params.yaml").write_text("{}\n")
    assert params_path(None) == Path("params.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        params_path("missing.yaml")
    for module in ("tavr.train.stage1", "tavr.train.latents", "tavr.train.stage0_codec", "tavr.train.pretrain"):
        res = subprocess.run([sys.executable, "-m", module, "--params", "missing.yaml"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "missing.yaml does not exist" in res.stderr, module
    assert not (tmp_path / "models").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("section, value, message", [
    ({"stage1": {"run": {"steps": 0}}}, None, "stage1.run.steps: must be >= 1, got 0"),
    ({"stage2": {"run": {"steps": -5}}}, None, "stage2.run.steps: must be >= 1"),
    ({"stage1": {"run": {"lr": -1e-4}}}, None, "stage1.run.lr: must be > 0"),
    ({"stage1": {"run": {"lr": float("nan")}}}, None, "stage1.run.lr: must be a finite number"),
    ({"stage1": {"run": {"batch_size": 0}}}, None, "stage1.run.batch_size: must be >= 1"),
    ({"stage3": {"run": {"checkpoint_every": 0}}}, None, "stage3.run.checkpoint_every: must be >= 1"),
    ({"generate": {"keep_ratio": 0.0}}, None, "generate.keep_ratio: must be in (0.0, 1.0]"),
    ({"latents": {"window_frames": 8}}, None, "latents.window_frames: must be 4k + 1"),
    ({"model": {"prediction": "epsilon"}}, None, "model.prediction: must be one of velocity, sample"),
    ({"stage1": {"run": {"lr": "3e-4"}}}, None, "write 3.0e-4"),
])  # fmt: skip
def test_values_out_of_their_range_are_config_errors_naming_key_and_rule(section, value, message):
    with pytest.raises(ConfigError) as e:
        build_config(section)
    assert message in str(e.value)


def test_bad_yaml_and_an_empty_section_are_config_errors_and_tavr_config_says_so(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1:\n  run: {steps: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("stage1:\n")
    with pytest.raises(ConfigError, match="stage1: expected a mapping"):
        load_config(empty)
    zero = tmp_path / "zero.yaml"
    zero.write_text("stage1:\n  run:\n    steps: 0\n")
    out = subprocess.run([sys.executable, "-m", "tavr.cli", "config", "--params", str(zero)], capture_output=True, text=True)
    assert out.returncode != 0 and "stage1.run.steps" in out.stdout + out.stderr
    stage = subprocess.run([sys.executable, "-m", "tavr.train.stage1", "--params", str(bad)], capture_output=True, text=True)
    assert stage.returncode == 2 and "not valid YAML" in stage.stderr and "Traceback" not in stage.stderr
