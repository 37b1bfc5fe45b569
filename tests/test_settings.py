"""One typed settings mechanism (neurospeech/_settings.py): every config file is a pydantic model.

Each example config in deploy/configs loads through its loader and validates against the JSON Schema that
``neurospeech config-schema KIND`` writes; a file with an unknown key, an out-of-bounds value or a string
where a boolean belongs is refused through the real CLI with exit code 2 and a message naming the key, the
value and what is allowed. The wm-rnn and noise-limits file models declare the keys of the dataclasses that
run the work: their names and defaults must agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from neurospeech.cli import CONFIG_MODELS, cli, main
from neurospeech.errors import ConfigError
from neurospeech.resources import EXAMPLE_CONFIGS, example_config

TORCH_FREE = ("serve", "wm-rnn", "noise-limits")


def _schema(kind: str) -> dict:
    r = CliRunner().invoke(cli, ["config-schema", kind])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _exit_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


# ------------------------------------------------------------------------------------------------ schemas
def test_every_example_config_has_a_model():
    assert set(CONFIG_MODELS) == set(EXAMPLE_CONFIGS)


@pytest.mark.parametrize("kind", TORCH_FREE)
def test_example_config_validates_against_its_schema(kind):
    schema = _schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = tomllib.loads(example_config(kind).read_text())
    jsonschema.validate(doc, schema)
    # the schema closes the file: a misspelt key or section is refused by it too
    section = next(iter(doc))
    with pytest.raises(jsonschema.ValidationError, match="misspelt"):
        jsonschema.validate({**doc, section: {**doc[section], "misspelt": 1}}, schema)
    with pytest.raises(jsonschema.ValidationError, match="misspelt"):
        jsonschema.validate({**doc, "misspelt": {}}, schema)


def test_schema_refuses_a_text_boolean_and_an_out_of_bounds_value():
    schema = _schema("serve")
    with pytest.raises(jsonschema.ValidationError, match="'no' is not of type 'boolean'"):
        jsonschema.validate({"publish": {"nodrop": "no"}}, schema)
    with pytest.raises(jsonschema.ValidationError, match="less than the minimum"):
        jsonschema.validate({"decode": {"status_interval": 1e-6}}, schema)


def test_config_schema_writes_a_file(tmp_path):
    out = tmp_path / "wm.schema.json"
    assert _exit_code(["config-schema", "wm-rnn", "--out", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert set(schema["properties"]) == {"task", "train", "run"}
    assert schema["additionalProperties"] is False


def test_example_configs_load_through_their_loaders():
    from neurospeech.models.wm_rnn._cli import load_config
    from neurospeech.service.config import load_settings
    from neurospeech.tools.analyses._noise_cli import _read_config

    s = load_settings(example_config("serve"))
    assert s.hop == 0.25 and s.publish["sndhwm"] == 1000 and s.model.name == "model.onnx"
    wm = load_config(example_config("wm-rnn"))
    assert wm["train"]["batch_size"] == 32 and wm["run"]["seeds"] == [0, 1, 2, 3, 4]
    assert _read_config(example_config("noise-limits"))["n_boot"] == 200


# ------------------------------------------------------------------------------------------------ refusals
SERVE_BAD = {
    "unknown key": ("[decode]\nhopp = 0.1\n", ["hopp", "[decode]", "allowed"]),
    "out of bounds": ("[acquisition]\nloss_timeout = 5.0\n", ["loss_timeout", "5.0", "[0.2, 2]"]),
    "text boolean": ('[publish]\nnodrop = "no"\n', ["nodrop", "'no'", "true or false"]),
}


@pytest.mark.parametrize("case", sorted(SERVE_BAD))
def test_bad_serve_config_exits_2_naming_the_key(tmp_path, case, capsys):
    text, words = SERVE_BAD[case]
    cfg = tmp_path / "serve.toml"
    cfg.write_text(text)
    args = ["decode-file", str(tmp_path / "rec.fif"), "--config", str(cfg), "--out", str(tmp_path / "d.jsonl")]
    assert _exit_code(args) == ConfigError.exit_code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err


WM_BAD = {
    "unknown key": ("[train]\nlearning_rate = 0.1\n", ["learning_rate", "[train]"]),
    "out of bounds": ("[task]\ncue_validity = 1.5\n", ["cue_validity", "1.5", "[0, 1]"]),
    "text boolean": ("[run]\nn_jobs = true\n", ["n_jobs", "True", "integer"]),
    "unknown section": ("[trian]\nlr = 0.1\n", ["[trian]", "allowed"]),
}


@pytest.mark.parametrize("case", sorted(WM_BAD))
def test_bad_wm_rnn_config_exits_2_naming_the_key(tmp_path, case, capsys):
    text, words = WM_BAD[case]
    cfg = tmp_path / "wm.toml"
    cfg.write_text(text)
    assert _exit_code(["wm-rnn", "train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "o").exists()


def test_wm_rnn_options_are_checked_like_the_file(tmp_path, capsys):
    assert _exit_code(["wm-rnn", "train", "--out", str(tmp_path / "o"), "--cue-validity", "2"]) == 2
    assert "cue_validity = 2.0" in capsys.readouterr().err


NOISE_BAD = {
    "unknown key": ("[noise_limits]\nn_boots = 100\n", ["n_boots", "[noise_limits]"]),
    "out of bounds": ("[noise_limits]\nci = 1.5\n", ["ci", "1.5", "(0, 1)"]),
    "text boolean": ('[noise_limits]\nwhiten = "yes"\n', ["whiten", "'yes'", "true or false"]),
}


@pytest.mark.parametrize("case", sorted(NOISE_BAD))
def test_bad_noise_limits_config_exits_2_naming_the_key(tmp_path, case, capsys):
    text, words = NOISE_BAD[case]
    cfg = tmp_path / "nl.toml"
    cfg.write_text(text)
    table = tmp_path / "t.csv"
    table.write_text("y,f0,f1\n" + "".join(f"{i % 2},{i},{i * 2}\n" for i in range(12)))
    args = ["analyze", "noise-limits", str(table), "--out", str(tmp_path / "o"), "--config", str(cfg)]
    assert _exit_code(args) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err


# ------------------------------------------------------------------------------------------------ messages
def test_messages_name_key_value_and_fix():
    from neurospeech.service.config import ServeSettings

    with pytest.raises(ConfigError) as exc:
        ServeSettings(status_interval=1e-6)
    msg = str(exc.value)
    assert "status_interval = 1e-06" in msg and "[decode]" in msg and "[0.05, 1]" in msg
    assert "heartbeats per second" in msg  # the field's meaning: why the bound
    with pytest.raises(ConfigError, match=r"topk = 10\.5 .*an integer in \[1, 1000\]"):
        ServeSettings(topk=10.5)
    with pytest.raises(ConfigError, match="hop = nan"):
        ServeSettings(hop=math.nan)
    with pytest.raises(ConfigError, match=r"^2 invalid serve settings:\n  - hop .*\n  - topk"):
        ServeSettings(hop=0, topk=0)


def test_serve_settings_keep_their_attribute_interface(tmp_path):
    from neurospeech.service.config import SECTIONS, ServeSettings, load_settings

    s = ServeSettings(model=str(tmp_path / "m.onnx"), stream_name="amp", hop=1)
    assert isinstance(s.model, Path) and s.hop == 1.0 and isinstance(s.hop, float)
    assert s.marker_stream_name == "amp-markers"
    t = s.replace(topk=3, hop=None)
    assert t.topk == 3 and t.hop == 1.0 and s.topk == 10
    with pytest.raises(ConfigError, match="unknown setting"):
        s.replace(hopp=1)
    with pytest.raises(ConfigError, match="topk"):
        s.replace(topk=0)
    assert set(SECTIONS["decode"]) == {"hop", "topk", "status_interval", "send_latent", "lsl_outlet"}
    assert {k for keys in SECTIONS.values() for k in keys} | {"publish"} == set(ServeSettings.model_fields)
    # command-line overrides win over the file and are checked the same way
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[decode]\ntopk = 5\n[publish]\nsndhwm = 10\n')
    s = load_settings(cfg, topk=7, publish={"encoding": "msgpack"})
    assert s.topk == 7 and s.publish == {"sndhwm": 10, "encoding": "msgpack"}
    with pytest.raises(ConfigError, match="intra_op_threads = 0"):
        load_settings(cfg, intra_op_threads=0)


# ------------------------------------------------------------------------------------------------ drift
def _defaults(dc) -> dict:
    out = {}
    for f in dataclasses.fields(dc):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _model_defaults(model) -> dict:
    return {k: f.get_default(call_default_factory=True) for k, f in model.model_fields.items()}


def test_noise_limits_file_keys_are_the_settings_fields():
    from neurospeech.tools.analyses._noise_cli import NoiseLimitsTable
    from neurospeech.tools.analyses.noise_limits import NoiseLimitSettings

    assert _model_defaults(NoiseLimitsTable) == _defaults(NoiseLimitSettings)


def test_wm_rnn_task_keys_are_the_task_fields():
    from neurospeech.models.wm_rnn._cli import TaskSection
    from neurospeech.models.wm_rnn.task import TaskConfig

    assert _model_defaults(TaskSection) == _defaults(TaskConfig)


@pytest.mark.torch
def test_wm_rnn_train_keys_are_the_train_fields():
    from neurospeech.models.wm_rnn._cli import TrainSection
    from neurospeech.models.wm_rnn.train import TrainConfig

    want = _defaults(TrainConfig)
    want.pop("task")
    assert _model_defaults(TrainSection) == want


# ------------------------------------------------------------------------------------------------ train (torch)
@pytest.mark.torch
def test_train_example_validates_and_bad_train_config_exits_2(tmp_path, capsys):
    from neurospeech.models.train import TrainConfig

    schema = _schema("train")
    jsonschema.validate(tomllib.loads(example_config("train").read_text()), schema)
    cfg = TrainConfig.from_toml(example_config("train"))
    assert cfg.to_dict()["features"] == "whisper" and cfg.replace(lr=0.1).lr == 0.1
    assert TrainConfig(score_dim=0, lr=0).score_dim is None  # TOML has no null: 0 means unset
    for text, words in (
        ("[train]\nbatchsize = 3\n", ["batchsize", "[train]", "batch_size"]),
        ("[train]\nbatch_size = 1\n", ["batch_size = 1", ">= 2"]),
        ('[train]\nresume = "no"\n', ["resume", "'no'", "true or false"]),
        ("[train]\nlr = 0.1\n[model]\nx = 1\n", ["[model]", "allowed"]),
    ):
        bad = tmp_path / "train.toml"
        bad.write_text(text)
        assert _exit_code(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        for w in words:
            assert w in err, err
    # --set values are checked with their key as well
    assert _exit_code(["train", "--set", "progress=maybe", "--out", str(tmp_path / "run")]) == 2
    assert "progress = 'maybe'" in capsys.readouterr().err
