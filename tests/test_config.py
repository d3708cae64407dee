"""The config tree: params.yaml loads, presets apply under the file, bad keys and types raise."""

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
