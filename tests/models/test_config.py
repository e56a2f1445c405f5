import json

import pytest

from tests.models._tiny import config_dict
from worldstereo.models.config import ControlNetConfig, WanBackboneConfig, WorldStereoConfig


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
