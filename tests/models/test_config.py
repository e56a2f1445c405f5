import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.models._tiny import config_dict
from worldstereo.config_checks import ConfigError, ConfigTypeError
from worldstereo.models.config import BACKBONE_LIMITS, ControlNetConfig, WanBackboneConfig, WorldStereoConfig


@pytest.mark.parametrize("case", ["transformer_camera", "transformer_memory", "transformer_memory_update_ref"])
def test_conformance_configs_parse_and_round_trip(conformance_dir, case):
    path = conformance_dir / case / "config.json"
    if not path.is_file():
        pytest.skip(f"{case} absent")
    raw = json.loads(path.read_text())
    cfg = WorldStereoConfig.from_json_file(path)
    assert cfg.model_type == raw["model_type"]
    assert cfg.is_memory == (raw["model_type"] != "worldstereo-camera")
    assert cfg.transformer is not None and cfg.transformer.inner_dim == 32
    assert cfg.controlnet_cfg.dim == raw["controlnet_cfg"]["dim"]
    again = WorldStereoConfig.from_dict(cfg.to_dict())
    assert again == cfg
    for key, value in raw["controlnet_cfg"].items():
        assert getattr(cfg.controlnet_cfg, key) == value


def test_defaults_and_flags():
    d = config_dict("worldstereo-memory-dmd")
    cfg = WorldStereoConfig.from_dict(d)
    assert cfg.is_memory and cfg.is_dmd
    assert (cfg.dmd_start_steps, cfg.dmd_end_steps, cfg.gen_shift, cfg.dmd_steps) == (250, 1000, 1.0, 4)
    cn = ControlNetConfig.from_dict({k: d["controlnet_cfg"][k] for k in ControlNetConfig.MANDATORY})
    assert (cn.add_channels, cn.mid_channels, cn.mask_downsample, cn.interp) == (1, 64, 4, False)
    assert not cn.main_camera_embedding and not cn.ref_embedding
    # Wan2.1-I2V-14B backbone defaults
    assert WanBackboneConfig().inner_dim == 5120


def test_without_backbone_object_and_with_backbone():
    d = config_dict()
    backbone = d.pop("transformer")
    cfg = WorldStereoConfig.from_dict(d)
    assert cfg.transformer is None
    cfg2 = cfg.with_backbone(backbone)
    assert cfg2.transformer.num_layers == backbone["num_layers"]
    cfg3 = WorldStereoConfig.from_dict(d, backbone_config=backbone)
    assert cfg3 == cfg2


def _mutate(fn):
    d = config_dict("worldstereo-memory")
    fn(d)
    return d


@pytest.mark.parametrize(
    "mutate, exc, words",
    [
        (lambda d: d.update(model_type="worldstereo-foo"), ValueError, ["model_type", "worldstereo-foo"]),
        (lambda d: d.pop("model_type"), ValueError, ["model_type"]),
        (lambda d: d.pop("controlnet_cfg"), ValueError, ["controlnet_cfg"]),
        (lambda d: d.pop("base_model"), ValueError, ["base_model"]),
        (lambda d: d.pop("nframe"), ValueError, ["nframe"]),
        (lambda d: d["controlnet_cfg"].pop("dim"), ValueError, ["controlnet_cfg", "dim"]),
        (lambda d: d["controlnet_cfg"].pop("update_ref"), ValueError, ["update_ref"]),
        (lambda d: d["controlnet_cfg"].update(time_embed_dim=64), ValueError, ["time_embed_dim", "32"]),
        (lambda d: d["controlnet_cfg"].update(conv_out_dim=16), ValueError, ["conv_out_dim", "32"]),
        (lambda d: d["controlnet_cfg"].update(num_heads=3), ValueError, ["num_heads", "dim"]),
        (lambda d: d["controlnet_cfg"].update(mid_channels=4), ValueError, ["mid_channels"]),
        (lambda d: d["controlnet_cfg"].update(mid_channels=17), ValueError, ["mid_channels"]),
        (lambda d: d["controlnet_cfg"].update(dim=18, num_heads=2), ValueError, ["head dim"]),
        (lambda d: d["transformer"].update(attention_head_dim=15), ValueError, ["attention_head_dim"]),
        (lambda d: d["controlnet_cfg"].update(num_layers=5), ValueError, ["num_layers"]),
        (lambda d: d["controlnet_cfg"].update(camera_embedding_dim=None), ValueError, ["camera_embedding_dim"]),
        (lambda d: d["controlnet_cfg"].update(dim="24"), TypeError, ["controlnet_cfg.dim"]),
        (lambda d: d.update(nframe="21"), TypeError, ["nframe"]),
        (lambda d: d.update(latent_cond_mode="half"), ValueError, ["latent_cond_mode"]),
        (lambda d: d.update(scale_map=[[480]]), ValueError, ["scale_map"]),
        (lambda d: d.update(dmd_start_steps=2000), ValueError, ["dmd_start_steps"]),
        (lambda d: d["transformer"].update(in_channels=16), ValueError, ["in_channels"]),
        (lambda d: d["transformer"].update(added_kv_proj_dim=16), ValueError, ["added_kv_proj_dim"]),
        (lambda d: d["transformer"].update(num_layers=0), ValueError, ["num_layers"]),
    ],
)
def test_validation_errors_name_the_key(mutate, exc, words):
    with pytest.raises(exc) as info:
        WorldStereoConfig.from_dict(_mutate(mutate))
    for w in words:
        assert w in str(info.value)


def test_unknown_keys_are_kept_not_fatal():
    d = config_dict()
    d["some_future_key"] = 1
    d["transformer"]["_class_name"] = "WanTransformer3DModel"
    cfg = WorldStereoConfig.from_dict(d)
    assert cfg.extra == {"some_future_key": 1}
    assert cfg.transformer.extra == {"_class_name": "WanTransformer3DModel"}


def test_json_file_round_trip(tmp_path):
    cfg = WorldStereoConfig.from_dict(config_dict("worldstereo-memory"))
    cfg.to_json_file(tmp_path / "config.json")
    assert WorldStereoConfig.from_json_file(tmp_path) == cfg
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        WorldStereoConfig.from_json_file(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        WorldStereoConfig.from_json_file(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- bounds and types
@pytest.mark.parametrize("where, key, value, words, exc", [
    ("transformer", "num_layers", 1_000_000_000, "transformer.num_layers: expected an integer in [1, 256]", ConfigError),
    ("transformer", "ffn_dim", 10**7, "transformer.ffn_dim: expected an integer in [1, 262144]", ConfigError),
    ("transformer", "num_attention_heads", 10**6, "transformer.num_attention_heads", ConfigError),
    ("transformer", "rope_max_seq_len", 10**9, "transformer.rope_max_seq_len", ConfigError),
    ("transformer", "text_dim", -3, "transformer.text_dim", ConfigError),
    ("transformer", "eps", float("nan"), "transformer.eps: expected a finite number", ConfigError),
    ("transformer", "eps", float("inf"), "transformer.eps", ConfigError),
    ("transformer", "num_layers", True, "transformer.num_layers", ConfigTypeError),
    ("transformer", "num_layers", 2.0, "transformer.num_layers", ConfigTypeError),
    ("transformer", "patch_size", [1, 2, 10**6], "transformer.patch_size[2]", ConfigError),
    ("transformer", "patch_size", "122", "transformer.patch_size", ConfigError),
    ("transformer", "cross_attn_norm", 1, "transformer.cross_attn_norm: expected true or false", ConfigTypeError),
    ("controlnet_cfg", "num_layers", 10**9, "controlnet_cfg.num_layers: expected an integer in [1, 256]", ConfigError),
    ("controlnet_cfg", "mid_channels", 10**9, "controlnet_cfg.mid_channels", ConfigError),
    ("controlnet_cfg", "camera_embedding_dim", 10**9, "controlnet_cfg.camera_embedding_dim", ConfigError),
    ("controlnet_cfg", "interp", "yes", "controlnet_cfg.interp", ConfigTypeError),
    ("config", "nframe", 10**9, "config.nframe: expected an integer in [1, 1024]", ConfigError),
    ("config", "gen_shift", float("nan"), "config.gen_shift: expected a finite number", ConfigError),
    ("config", "dmd_end_steps", float("inf"), "config.dmd_end_steps", ConfigError),
    ("config", "dmd_steps", False, "config.dmd_steps", ConfigTypeError),
    ("config", "scale_map", [[480, 10**9]], "config.scale_map", ConfigError),
    ("config", "negative_prompt", "x" * 200_000, "config.negative_prompt: expected at most", ConfigError),
    ("config", "base_model", 5, "config.base_model: expected a string", ConfigTypeError),
])
def test_every_field_has_a_type_and_bounds(where, key, value, words, exc):
    d = config_dict("worldstereo-memory")
    target = d if where == "config" else d[where]
    target[key] = value
    with pytest.raises(ValueError) as info:  # ConfigError, or ConfigTypeError (also a TypeError)
        WorldStereoConfig.from_dict(d)
    assert words in str(info.value), str(info.value)
    assert type(info.value) is exc


def test_type_errors_are_both_type_and_value_errors():
    d = config_dict()
    d["transformer"]["num_layers"] = True
    with pytest.raises(TypeError) as info:
        WorldStereoConfig.from_dict(d)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigTypeError)


def test_huge_config_fails_before_anything_is_built(tmp_path, monkeypatch):
    """config.json with transformer.num_layers = 1e9: refused at once, the model never built."""
    from worldstereo.models import checkpoint as ck
    from worldstereo.models.checkpoint import load_transformer

    d = config_dict()
    d["transformer"]["num_layers"] = 1_000_000_000
    (tmp_path / "config.json").write_text(json.dumps(d))
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(ck, "meta_transformer", lambda *a: pytest.fail("model built before validation"))
    with pytest.raises(ValueError, match=r"config\.json'?: transformer\.num_layers: expected an integer in "
                                         r"\[1, 256\], got 1000000000"):
        load_transformer(tmp_path)


def test_nan_literal_in_config_json_is_refused_naming_the_field(tmp_path):
    text = json.dumps(dict(config_dict(), gen_shift=float("nan")))
    assert '"gen_shift": NaN' in text
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=r"config\.json.*config\.gen_shift: expected a finite number"):
        WorldStereoConfig.from_json_file(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="not UTF-8"):
        WorldStereoConfig.from_json_file(tmp_path)
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="config.json"):
        WorldStereoConfig.from_json_file(tmp_path)


# ----------------------------------------------------------------------------- property-based
_json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_FIELDS = [("config", k) for k in config_dict("worldstereo-memory") if k not in ("transformer", "controlnet_cfg")] + \
    [("transformer", k) for k in config_dict()["transformer"]] + \
    [("controlnet_cfg", k) for k in config_dict("worldstereo-memory")["controlnet_cfg"]] + \
    [("config", "transformer"), ("config", "controlnet_cfg"), ("config", "dmd_start_steps"), ("config", "gen_shift")]


def _only_documented_errors(data) -> None:
    try:
        cfg = WorldStereoConfig.from_dict(data)
    except ValueError:  # ConfigError and ConfigTypeError (the latter also a TypeError)
        return
    # accepted: the values are within the documented bounds and round-trip
    assert WorldStereoConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.transformer is None or cfg.transformer.num_layers <= BACKBONE_LIMITS["num_layers"][1]


@settings(max_examples=150, deadline=None)
@given(data=_json_values)
def test_arbitrary_json_config_raises_only_documented_errors(data):
    _only_documented_errors(data)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(_FIELDS), value=_json_values, model_type=st.sampled_from(
    ["worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd"]))
def test_one_arbitrary_field_raises_only_documented_errors(field, value, model_type):
    d = config_dict(model_type)
    where, key = field
    (d if where == "config" else d[where])[key] = value
    _only_documented_errors(d)


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=200) | _json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_config_file_raises_only_documented_errors(tmp_path_factory, raw):
    from worldstereo.models.checkpoint import read_checkpoint_config

    folder = tmp_path_factory.mktemp("cfg")
    (folder / "config.json").write_bytes(raw)
    try:
        read_checkpoint_config(folder)
    except ValueError as exc:
        assert "config.json" in str(exc)
