"""WorldStereo wrapper: building, conditioning helpers, save/load round trip, checkpoint layouts."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from worldstereo.models.config import WorldStereoConfig
from worldstereo.models.loading import MARKER_FILE, resolve_checkpoint
from worldstereo.models.worldstereo import (
    DEFAULT_GLOBAL_MEMORY_CONFIG,
    DEFAULT_SPATIAL_MEMORY_CONFIG,
    WorldStereo,
    resolve_memory_config,
)
from worldstereo.sampling import DMDScheduler
from worldstereo.testing import tiny_model, tiny_tokenizer, tiny_vdm_config

VARIANTS = ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd")


@pytest.fixture(scope="module")
def models():
    return {v: tiny_model(v, seed=0) for v in VARIANTS}


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    return {v: models[v].save_pretrained(root / v) for v in VARIANTS}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def _public(cfg) -> dict:
    return {k: v for k, v in dict(cfg).items() if not k.startswith("_")}


def _forward(model: WorldStereo, F: int = 3, seed: int = 0) -> torch.Tensor:
    """One transformer call with inputs made by the model's own conditioning helpers (48x64 px)."""
    g = torch.Generator().manual_seed(seed)
    H, W = 48, 64
    image = torch.rand(1, 3, H, W, generator=g)
    text = model.encode_prompt("a camera moving forward in the garden")
    clip = model.encode_image(image)
    cond = model.prepare_image_condition(image * 2 - 1, F)
    render = model.encode_video(torch.rand(1, 3, F, H, W, generator=g) * 2 - 1)
    noise = torch.randn(1, 16, F, H // 8, W // 8, generator=g)
    kwargs = dict(
        render_latent=render,
        render_mask=(torch.rand(1, 1, F, H, W, generator=g) > 0.5).float(),
        camera_embedding=torch.randn(1, 6, F, H, W, generator=g),
    )
    if model.is_memory:
        R = 2
        from worldstereo.models.conditioning import prepare_reference_latent

        kwargs.update(reference_latent=prepare_reference_latent(model.encode_video(
            torch.rand(1, 3, R, H, W, generator=g) * 2 - 1)), ref_index=torch.tensor([0, 1]),
            camera_qt=torch.randn(1, F, 7, generator=g), camera_qt_ref=torch.randn(1, R, 7, generator=g))
    with torch.no_grad():
        return model.transformer(torch.cat([noise, cond], 1), torch.tensor([500.0]), text, clip,
                                 return_dict=False, **kwargs)[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_model_runs_a_transformer_forward(models, variant):
    model = models[variant]
    assert model.variant == variant and isinstance(model.config, WorldStereoConfig)
    assert model.is_memory == (variant != "worldstereo-camera")
    assert isinstance(model.scheduler, DMDScheduler) == (variant == "worldstereo-memory-dmd")
    assert model.global_memory_config == DEFAULT_GLOBAL_MEMORY_CONFIG
    assert model.spatial_memory_config == DEFAULT_SPATIAL_MEMORY_CONFIG
    assert not model.training
    out = _forward(model)
    assert out.shape == (1, 16, 3, 6, 8) and torch.isfinite(out).all()
    # every nn.Module component is registered (so .to()/.half() reach them)
    names = {n for n, _ in model.named_children()}
    assert names == {"transformer", "vae", "text_encoder", "image_encoder"}


def test_helpers_delegate(models):
    model = models["worldstereo-camera"]
    text = model.encode_prompt(["sky", "a red car"])
    assert text.shape == (2, 512, 24)
    assert torch.count_nonzero(text[0, 2:]) == 0 and torch.count_nonzero(text[1, 4:]) == 0
    latents = torch.randn(1, 16, 2, 2, 3)
    assert model.decode_latents(latents).shape == (1, 3, 2, 16, 24)
    sched = model.make_scheduler()
    assert sched is not model.scheduler and _public(sched.config) == _public(model.scheduler.config)


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_load_round_trip_is_bit_exact(models, saved, variant):
    folder = saved[variant]
    assert (folder / MARKER_FILE).is_file()
    assert not list(folder.parent.glob(".*tmp*"))  # temp dir renamed away
    loaded = WorldStereo.from_pretrained(folder)
    orig = models[variant]
    assert loaded.variant == variant
    _assert_same_weights(orig, loaded)
    assert loaded.config.to_dict() == orig.config.to_dict()
    assert type(loaded.scheduler) is type(orig.scheduler)
    assert _public(loaded.scheduler.config) == _public(orig.scheduler.config)
    assert loaded.image_processor.to_dict() == orig.image_processor.to_dict()
    prompt = "A camera moves left in the city at night, zzz"
    assert loaded.tokenizer(prompt).input_ids == orig.tokenizer(prompt).input_ids
    assert torch.equal(loaded.encode_prompt(prompt), orig.encode_prompt(prompt))


def test_memory_configs_are_saved_and_overridable(tmp_path):
    model = WorldStereo(vdm_config=tiny_vdm_config("worldstereo-camera"),
                        global_memory_config={"max_points": 5000, "update_frequency": "manual"},
                        spatial_memory_config={"memory_size": 12, "num_correspondences": 32},
                        components={"tokenizer": tiny_tokenizer()})
    assert model.global_memory_config["max_points"] == 5000
    assert model.global_memory_config["point_radius"] == DEFAULT_GLOBAL_MEMORY_CONFIG["point_radius"]
    assert model.spatial_memory_config["max_references"] == 8
    folder = model.save_pretrained(tmp_path / "m")
    loaded = WorldStereo.from_pretrained(folder)
    assert loaded.global_memory_config == model.global_memory_config
    assert loaded.spatial_memory_config == model.spatial_memory_config
    loaded = WorldStereo.from_pretrained(folder, spatial_memory_config={"retrieval": "correspondence"})
    assert loaded.spatial_memory_config["retrieval"] == "correspondence"
    assert loaded.spatial_memory_config["memory_size"] == DEFAULT_SPATIAL_MEMORY_CONFIG["memory_size"]


def test_memory_config_validation():
    with pytest.raises(ValueError, match="global_memory_config: unknown keys \\['max_pts'\\]"):
        resolve_memory_config("global", {"max_pts": 3})
    with pytest.raises(ValueError, match="update_frequency"):
        resolve_memory_config("global", {"update_frequency": "sometimes"})
    with pytest.raises(ValueError, match="spatial_memory_config.max_references"):
        resolve_memory_config("spatial", {"max_references": 0})
    with pytest.raises(ValueError, match="retrieval"):
        resolve_memory_config("spatial", {"retrieval": "nearest"})
    with pytest.raises(ValueError, match="spatial_memory_config.image_feature_model"):
        resolve_memory_config("spatial", {"image_feature_model": 3})
    assert resolve_memory_config("spatial", {"image_feature_model": "facebook/dinov2-base"})["image_feature_model"] \
        == "facebook/dinov2-base"


def test_constructor_errors():
    with pytest.raises(ValueError, match="vdm_config"):
        WorldStereo()
    cfg = tiny_vdm_config("worldstereo-camera")
    cfg["text_encoder"]["d_model"] = 16
    with pytest.raises(ValueError, match="text_encoder.d_model"):
        WorldStereo(vdm_config=cfg, components={"tokenizer": tiny_tokenizer()})
    cfg = tiny_vdm_config("worldstereo-camera")
    with pytest.raises(ValueError, match="tokenizer"):  # no tokenizer and no local base model
        WorldStereo(vdm_config=cfg)
    with pytest.raises(ValueError, match="components"):
        WorldStereo(vdm_config=cfg, components={"tokeniser": tiny_tokenizer()})


def test_save_into_existing_folder_keeps_unrelated_files(models, tmp_path):
    """Like diffusers: only the checkpoint's own files are written; a user's file stays, and saving
    another variant over the folder replaces the checkpoint and removes files only the old save had."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    (folder / "vae").mkdir()
    (folder / "vae" / "notes.md").write_text("mine")
    models["worldstereo-camera"].save_pretrained(folder)
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert (folder / "vae" / "notes.md").read_text() == "mine"
    assert (folder / MARKER_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing next to the folder
    assert not [p for p in folder.rglob("*") if "worldstereo-" in p.name and p.name != "worldstereo_config.json"
                and p.name != "worldstereo_manifest.json"]
    _assert_same_weights(models["worldstereo-camera"], WorldStereo.from_pretrained(folder))
    # a file of the first save that the second one does not write is removed; the user's files stay
    (folder / "text_encoder" / "extra_own.json").write_text("{}")
    manifest = json.loads((folder / "worldstereo_manifest.json").read_text())
    manifest["files"]["text_encoder/extra_own.json"] = 2
    (folder / "worldstereo_manifest.json").write_text(json.dumps(manifest))
    models["worldstereo-memory"].save_pretrained(folder)
    assert not (folder / "text_encoder" / "extra_own.json").exists()
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert (folder / "vae" / "notes.md").read_text() == "mine"
    _assert_same_weights(models["worldstereo-memory"], WorldStereo.from_pretrained(folder))


# ----------------------------------------------------------------------------- reference layouts
def _make_base(saved, tmp_path: Path) -> Path:
    """A diffusers Wan I2V style base folder made of the tiny model's components."""
    base = tmp_path / "wan-base"
    src = saved["worldstereo-camera"]
    for comp in ("vae", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler"):
        shutil.copytree(src / comp, base / comp)
    (base / "transformer").mkdir()
    cfg0 = json.loads((src / "config.json").read_text())
    (base / "transformer" / "config.json").write_text(json.dumps(cfg0["transformer"]))
    return base


def _make_reference_layout(saved, tmp_path: Path) -> tuple[Path, Path]:
    """A diffusers-style base folder + a reference checkpoint root with the three sub-folders
    (config.json without the 'transformer' object, base_model pointing at the base folder)."""
    base = _make_base(saved, tmp_path)
    root = tmp_path / "WorldStereo"
    for v in VARIANTS:
        (root / v).mkdir(parents=True)
        cfg = json.loads((saved[v] / "config.json").read_text())
        del cfg["transformer"]
        cfg["base_model"] = str(base)
        (root / v / "config.json").write_text(json.dumps(cfg))
        shutil.copy(saved[v] / "model.safetensors", root / v / "model.safetensors")
    return root, base


def test_reference_root_and_subfolder_layouts(models, saved, tmp_path):
    root, base = _make_reference_layout(saved, tmp_path)
    m = WorldStereo.from_pretrained(root)  # default variant
    assert m.variant == "worldstereo-memory"
    _assert_same_weights(models["worldstereo-memory"], m)
    m = WorldStereo.from_pretrained(root, variant="worldstereo-memory-dmd")
    assert isinstance(m.scheduler, DMDScheduler)
    _assert_same_weights(models["worldstereo-memory-dmd"], m)
    m = WorldStereo.from_pretrained(root / "worldstereo-camera")  # one sub-folder
    assert m.variant == "worldstereo-camera"
    _assert_same_weights(models["worldstereo-camera"], m)
    with pytest.raises(ValueError, match="variant"):
        WorldStereo.from_pretrained(root / "worldstereo-camera", variant="worldstereo-memory")
    with pytest.raises(ValueError, match="variant"):
        WorldStereo.from_pretrained(root, variant="worldstereo-giant")
    shutil.rmtree(root / "worldstereo-camera")
    with pytest.raises(FileNotFoundError, match="worldstereo-camera"):
        WorldStereo.from_pretrained(root, variant="worldstereo-camera")
    # base_model override: config's base_model broken, override points at the real one
    sub = root / "worldstereo-memory"
    cfg = json.loads((sub / "config.json").read_text())
    cfg["base_model"] = str(tmp_path / "nowhere")
    (sub / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="base_model"):
        WorldStereo.from_pretrained(sub)
    m = WorldStereo.from_pretrained(sub, base_model=base, torch_dtype=torch.bfloat16)
    assert m.transformer.patch_embedding.weight.dtype == torch.bfloat16
    assert m.vae.dtype == torch.bfloat16 and m.text_encoder.dtype == torch.float32


def test_constructor_takes_missing_components_from_a_local_base_model(models, saved, tmp_path):
    base = _make_base(saved, tmp_path)
    cfg = {k: v for k, v in tiny_vdm_config("worldstereo-memory").items()
           if k not in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")}
    cfg["base_model"] = str(base)
    model = WorldStereo(vdm_config=cfg)
    ref = models["worldstereo-camera"]  # the base folder holds its components
    _assert_same_weights(ref.vae, model.vae)
    _assert_same_weights(ref.text_encoder, model.text_encoder)
    assert model.config.transformer.to_dict() == ref.config.transformer.to_dict()
    assert _public(model.scheduler.config) == _public(ref.scheduler.config)
    # image_encoder was given as a config: random, not the base one
    assert not torch.equal(model.image_encoder.state_dict()["embeddings.patch_embedding.weight"],
                           ref.image_encoder.state_dict()["embeddings.patch_embedding.weight"])
    with pytest.raises(TypeError, match="tokenizer"):
        WorldStereo(vdm_config={**cfg, "tokenizer": {"vocab": 3}})


def test_resolution_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a WorldStereo checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        resolve_checkpoint(str(tmp_path / "missing" / "dir"))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        resolve_checkpoint(tmp_path / "f.txt")
    with pytest.raises(ValueError, match="variant"):
        resolve_checkpoint(tmp_path, variant="camera")


def test_hub_id_goes_through_snapshot_download(saved, monkeypatch):
    """Layout 4 without network: snapshot_download is replaced by a fake returning a local folder."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(saved["worldstereo-camera"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = WorldStereo.from_pretrained("someone/worldstereo-tiny", variant="worldstereo-camera",
                                        local_files_only=True)
    assert model.variant == "worldstereo-camera"
    (repo_id, kwargs), = calls
    assert repo_id == "someone/worldstereo-tiny" and kwargs["local_files_only"] is True
    ignored = kwargs["ignore_patterns"]
    assert "*.bin" in ignored and "worldstereo-memory/*" in ignored and "worldstereo-camera/*" not in ignored

    def failing(repo_id, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub"):
        resolve_checkpoint("nobody-xyz/no-such-worldstereo", local_files_only=True)


# ----------------------------------------------------------------------------- strict loading
def _copy_and_edit_weights(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    edit(state)
    save_file(state, dst / "model.safetensors")
    (dst / "worldstereo_manifest.json").unlink()  # edited by hand: the save's manifest no longer applies
    return dst


def test_strict_loading_names_the_bad_key(saved, tmp_path):
    src = saved["worldstereo-camera"]
    key = "blocks.0.attn1.to_q.weight"
    bad = _copy_and_edit_weights(src, tmp_path / "missing", lambda s: s.pop(key))
    with pytest.raises(ValueError, match=r"missing.*blocks\.0\.attn1\.to_q\.weight"):
        WorldStereo.from_pretrained(bad)
    bad = _copy_and_edit_weights(src, tmp_path / "extra", lambda s: s.update({"bogus.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"unexpected.*bogus\.weight"):
        WorldStereo.from_pretrained(bad)
    bad = _copy_and_edit_weights(src, tmp_path / "shape", lambda s: s.update({key: torch.zeros(3, 3)}))
    with pytest.raises(ValueError, match=r"blocks\.0\.attn1\.to_q\.weight checkpoint \[3, 3\]"):
        WorldStereo.from_pretrained(bad)
    # a component's weights are checked strictly too
    bad = tmp_path / "vae_extra"
    shutil.copytree(src, bad)
    vae_file = bad / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(vae_file)
    state["bogus.vae"] = torch.zeros(1)
    save_file(state, vae_file)
    (bad / "worldstereo_manifest.json").unlink()
    with pytest.raises(ValueError, match="bogus.vae"):
        WorldStereo.from_pretrained(bad)


def test_pickle_refused_unless_opted_in(saved, tmp_path):
    bad = tmp_path / "pickled"
    shutil.copytree(saved["worldstereo-camera"], bad)
    state = load_file(bad / "model.safetensors")
    (bad / "model.safetensors").unlink()
    torch.save(state, bad / "model.bin")
    with pytest.raises(ValueError, match=r"incomplete or was modified.*model\.safetensors is missing"):
        WorldStereo.from_pretrained(bad)
    (bad / "worldstereo_manifest.json").unlink()
    with pytest.raises(ValueError, match="allow_pickle"):
        WorldStereo.from_pretrained(bad)
    m = WorldStereo.from_pretrained(bad, allow_pickle=True)
    assert torch.equal(m.transformer.state_dict()["proj_out.weight"], state["proj_out.weight"])


@pytest.mark.parametrize("case", ["transformer_camera", "transformer_memory"])
def test_conformance_case_loads_as_a_subfolder(conformance_dir, tmp_path, case):
    """A conformance case directory is a reference sub-folder (config.json + model.safetensors with a
    placeholder base_model); loaded through WorldStereo.from_pretrained with a base_model override, the
    transformer reproduces the reference output."""
    case_dir = conformance_dir / case
    with pytest.raises(FileNotFoundError, match="base_model"):
        WorldStereo.from_pretrained(case_dir)  # placeholder base model
    cfg = json.loads((case_dir / "config.json").read_text())
    # tiny base components whose widths match the case's backbone (the HOLDOUT set has other sizes)
    vdm = tiny_vdm_config("worldstereo-camera")
    vdm["transformer"] = cfg["transformer"]
    vdm["controlnet_cfg"].update(time_embed_dim=cfg["controlnet_cfg"]["time_embed_dim"],
                                 conv_out_dim=cfg["controlnet_cfg"]["conv_out_dim"],
                                 num_layers=min(2, cfg["transformer"]["num_layers"]))
    vdm["text_encoder"]["d_model"] = cfg["transformer"]["text_dim"]
    vdm["image_encoder"].update(hidden_size=cfg["transformer"]["image_dim"], num_attention_heads=1,
                                projection_dim=cfg["transformer"]["image_dim"])
    donor = WorldStereo(vdm_config=vdm, components={"tokenizer": tiny_tokenizer()})
    base = _make_base({"worldstereo-camera": donor.save_pretrained(tmp_path / "donor")}, tmp_path)
    model = WorldStereo.from_pretrained(case_dir, base_model=base)
    assert model.variant == cfg["model_type"]
    inputs = load_file(case_dir / "inputs.safetensors")
    expected = load_file(case_dir / "expected.safetensors")["sample"]
    inputs.pop("timestep_int", None)
    if "ref_index" in inputs:
        inputs["ref_index"] = inputs["ref_index"].long()
    with torch.no_grad():
        out = model.transformer(**inputs, return_dict=False)[0]
    assert (out - expected).abs().max().item() < 1e-4


def test_checkpoint_without_backbone_takes_it_from_the_base_model(models, saved, tmp_path, monkeypatch):
    """Reference behaviour: the base Wan transformer is loaded first and the checkpoint on top, so a
    checkpoint that carries only the new modules (+ some blocks) loads from base + checkpoint; with a
    Hub base id the transformer weights are fetched only then."""
    from safetensors.torch import load_file, save_file

    root, base = _make_reference_layout(saved, tmp_path)
    sub = root / "worldstereo-memory"
    full = load_file(str(sub / "model.safetensors"))
    in_base = {k: v for k, v in full.items() if k.startswith(("blocks.1.", "blocks.2.", "condition_embedder."))}
    save_file({k: v for k, v in full.items() if k not in in_base}, str(sub / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys .*blocks\.1\."):
        WorldStereo.from_pretrained(sub)  # the base folder has no transformer weights yet
    save_file(in_base, str(base / "transformer" / "diffusion_pytorch_model.safetensors"))
    _assert_same_weights(models["worldstereo-memory"], WorldStereo.from_pretrained(sub))

    # a Hub base id: the first resolution skips transformer weights, the second asks for them
    import worldstereo.models.worldstereo as ws_module

    calls = []

    def fake_resolve_base_model(name, *, local_files_only=False, need_transformer_weights=False):
        calls.append(need_transformer_weights)
        if need_transformer_weights:
            return base
        light = tmp_path / "light-base"
        if not light.exists():
            shutil.copytree(base, light, ignore=shutil.ignore_patterns("*.safetensors"))
        return light

    monkeypatch.setattr(ws_module, "resolve_base_model", fake_resolve_base_model)
    cfg = json.loads((sub / "config.json").read_text())
    cfg["base_model"] = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
    (sub / "config.json").write_text(json.dumps(cfg))
    _assert_same_weights(models["worldstereo-memory"], WorldStereo.from_pretrained(sub))
    assert calls == [False, True]


# ----------------------------------------------------------------------------- non-finite values, bounds
def test_decoding_non_finite_latents_is_an_error_not_a_black_video(models):
    model = models["worldstereo-camera"]
    with pytest.raises(ValueError, match=r"latents: 96 of 96 values are NaN or inf"):
        model.decode_latents(torch.full((1, 16, 2, 1, 3), float("nan")))
    latents = torch.zeros(1, 16, 2, 1, 3)
    latents[0, 3, 1, 0, 2] = float("inf")
    with pytest.raises(ValueError, match=r"latents: 1 of 96"):
        model.decode_latents(latents)


@pytest.mark.parametrize("component, file, key", [
    ("transformer", "model.safetensors", "blocks.0.attn1.to_q.weight"),
    ("vae", "vae/diffusion_pytorch_model.safetensors", None),
    ("text_encoder", "text_encoder/model.safetensors", None),
])
def test_nan_weights_are_refused_at_load_with_the_tensor_name(saved, tmp_path, component, file, key):
    bad = tmp_path / "nan"
    shutil.copytree(saved["worldstereo-camera"], bad)
    state = load_file(bad / file)
    key = key or next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key].view(-1)[0] = float("nan")
    save_file(state, bad / file)
    (bad / "worldstereo_manifest.json").unlink()  # edited by hand
    with pytest.raises(ValueError, match=rf"{re.escape(key)}' contains non-finite values"):
        WorldStereo.from_pretrained(bad)


def test_memory_config_bounds():
    cases = [("global", "max_points", 10**12, "[1, 1000000000]"), ("global", "point_radius", float("nan"), "finite"),
             ("global", "point_radius", 5.0, "(0.0, 0.5]"), ("global", "points_per_pixel", True, "integer"),
             ("spatial", "memory_size", 10**9, "[1, 65536]"), ("spatial", "num_correspondences", 2.5, "integer"),
             ("spatial", "max_references", 1000, "[1, 64]")]
    for kind, key, value, words in cases:
        with pytest.raises(ValueError, match=re.escape(f"{kind}_memory_config.{key}")) as info:
            resolve_memory_config(kind, {key: value})
        assert words in str(info.value)


def test_saved_memory_config_is_validated_before_loading_weights(saved, tmp_path, monkeypatch):
    import worldstereo.models.worldstereo as ws_module

    bad = tmp_path / "bad_marker"
    shutil.copytree(saved["worldstereo-camera"], bad)
    marker = json.loads((bad / MARKER_FILE).read_text())
    marker["spatial_memory_config"]["memory_size"] = 10**12
    (bad / MARKER_FILE).write_text(json.dumps(marker))
    (bad / "worldstereo_manifest.json").unlink()
    monkeypatch.setattr(ws_module, "_load_transformer", lambda *a, **k: pytest.fail("weights read first"))
    with pytest.raises(ValueError, match=r"worldstereo_config\.json.*spatial_memory_config\.memory_size"):
        WorldStereo.from_pretrained(bad)


def test_random_model_larger_than_memory_is_refused_before_allocation(monkeypatch):
    import worldstereo.models.component_checks as component_checks

    monkeypatch.setattr(component_checks, "physical_memory_bytes", lambda: 10_000)
    with pytest.raises(ValueError, match=r"vdm_config\['(transformer|vae|text_encoder|image_encoder)'\]: the config describes a \w+ of"):
        WorldStereo(vdm_config=tiny_vdm_config("worldstereo-camera"), components={"tokenizer": tiny_tokenizer()})
