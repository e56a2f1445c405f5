import re

import pytest
import torch
from diffusers import WanTransformer3DModel

from tests.models._tiny import inputs, randomize_, shared_docs_dir, tiny_config
from worldstereo.models.transformer import WorldStereoTransformer



@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only in this module (restored afterwards, so other modules keep autograd)."""
    with torch.no_grad():
        yield


def _reference_listing(model_class: str) -> list[tuple[str, list[int]]]:
    """(key, shape) rows of PART A (tiny) of reference-state-dict-keys.txt for one reference class."""
    path = shared_docs_dir() / "reference-state-dict-keys.txt"
    if not path.is_file():
        pytest.skip("reference-state-dict-keys.txt not available")
    rows, active = [], False
    for line in path.read_text().splitlines():
        if line.startswith("########## PART B"):
            break
        if line.startswith("# "):
            m = re.match(r"# (\w+) \(", line)
            if m:
                active = m.group(1) == model_class
            continue
        if active and "\t" in line:
            key, shape, _ = line.split("\t")
            rows.append((key, [int(s) for s in shape.strip("[]").split(",") if s.strip()]))
    assert rows, f"no rows for {model_class}"
    return rows


@pytest.mark.parametrize("model_type, ref_class", [("worldstereo-camera", "WorldStereoModel"),
                                                    ("worldstereo-memory", "WorldStereoRefSModel")])
def test_state_dict_keys_equal_reference_listing(model_type, ref_class):
    model = WorldStereoTransformer(tiny_config(model_type))
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == _reference_listing(ref_class)


def test_release_initialisation():
    model = WorldStereoTransformer(tiny_config("worldstereo-memory"))
    cn = model.controlnet
    assert all(float(p.weight.abs().sum()) == 0 for p in cn.proj_out)
    assert float(cn.controlnet_mask_embedding.mask_zero_proj.weight.abs().sum()) == 0
    assert torch.equal(cn.controlnet_patch_embedding.weight, model.patch_embedding.weight)
    assert float(model.camera_embedding[4].weight.abs().sum()) == 0


def test_camera_model_with_zero_controlnet_equals_diffusers_wan():
    """With the release's zero-initialised ControlNet outputs the camera model is exactly the Wan backbone."""
    model = randomize_(WorldStereoTransformer(tiny_config()), seed=1)
    for proj in model.controlnet.proj_out:
        proj.weight.zero_()
        proj.bias.zero_()
    wan = WanTransformer3DModel(**model.backbone_config.to_diffusers_kwargs()).eval()
    backbone_sd = {k: v for k, v in model.state_dict().items() if not k.startswith("controlnet.")}
    wan.load_state_dict(backbone_sd, strict=True)
    x = inputs()
    ours = model(**x).sample
    ref = wan(x["hidden_states"], x["timestep"], x["encoder_hidden_states"], x["encoder_hidden_states_image"],
              return_dict=False)[0]
    assert ours.shape == (1, 16, 3, 4, 6)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)
    # and the ControlNet does change the output once its projections are non-zero
    randomize_(model.controlnet, seed=2)
    assert (model(**x).sample - ref).abs().max() > 1e-2


@pytest.mark.parametrize("model_type", ["worldstereo-camera", "worldstereo-memory"])
def test_batch_elements_are_independent(model_type):
    model = randomize_(WorldStereoTransformer(tiny_config(model_type)), seed=3).eval()
    x0, x1 = inputs(model_type, seed=10), inputs(model_type, seed=11)
    x1["timestep"] = torch.tensor([250.25])
    batch = {k: (torch.cat([x0[k], x1[k]]) if k != "ref_index" else x0[k]) for k in x0}
    out = model(**batch, return_dict=False)[0]
    if "ref_index" in x0:
        x1["ref_index"] = x0["ref_index"]
    torch.testing.assert_close(out[0:1], model(**x0).sample, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:2], model(**x1).sample, atol=1e-5, rtol=0)


def test_reference_order_does_not_matter_but_placement_does():
    """Dense joint attention is permutation invariant over references if their RoPE slots move with them."""
    model = randomize_(WorldStereoTransformer(tiny_config("worldstereo-memory")), seed=4).eval()
    x = inputs("worldstereo-memory", F=4, R=3)
    x["ref_index"] = torch.tensor([0, 2, 1])
    out = model(**x).sample
    perm = torch.tensor([2, 0, 1])
    y = dict(x, reference_latent=x["reference_latent"][:, :, perm], ref_index=x["ref_index"][perm],
             camera_qt_ref=x["camera_qt_ref"][:, perm])
    torch.testing.assert_close(model(**y).sample, out, atol=1e-5, rtol=0)
    moved = dict(x, ref_index=torch.tensor([1, 2, 0]))
    assert (model(**moved).sample - out).abs().max() > 1e-4


def test_update_ref_flag_changes_output_only_through_reference_stream():
    cfg_true = tiny_config("worldstereo-memory", update_ref=True)
    cfg_false = tiny_config("worldstereo-memory", update_ref=False)
    m_true = randomize_(WorldStereoTransformer(cfg_true), seed=5).eval()
    m_false = WorldStereoTransformer(cfg_false).eval()
    m_false.load_state_dict(m_true.state_dict())
    x = inputs("worldstereo-memory")
    cap_t, cap_f = {}, {}
    out_t = m_true(**x, intermediates=cap_t).sample
    out_f = m_false(**x, intermediates=cap_f).sample
    assert (out_t - out_f).abs().max() > 1e-5
    torch.testing.assert_close(cap_t["block_1_ref_in"], cap_t["block_0_ref_out"])
    torch.testing.assert_close(cap_f["block_1_ref_in"], cap_f["block_0_ref_in"])


def test_timesteps_float_embedded_as_given_and_int_converted():
    model = randomize_(WorldStereoTransformer(tiny_config()), seed=6).eval()
    x = inputs()
    out_int = model(**dict(x, timestep=torch.tensor([937]))).sample
    out_f937 = model(**dict(x, timestep=torch.tensor([937.0]))).sample
    out_f9375 = model(**dict(x, timestep=torch.tensor([937.5]))).sample
    torch.testing.assert_close(out_int, out_f937, atol=0, rtol=0)
    assert (out_f9375 - out_f937).abs().max() > 1e-4
    # scalar timestep broadcast
    torch.testing.assert_close(model(**dict(x, timestep=937.5)).sample, out_f9375, atol=0, rtol=0)


def test_return_dict_and_ignored_kwargs():
    model = randomize_(WorldStereoTransformer(tiny_config("worldstereo-memory")), seed=7).eval()
    x = inputs("worldstereo-memory")
    out = model(**x).sample
    tup = model(**x, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 1
    torch.testing.assert_close(tup[0], out, atol=0, rtol=0)
    torch.testing.assert_close(model(**x, point_map_latent=None, point_map_ref_latent=None).sample, out,
                               atol=0, rtol=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        model(**x, not_a_kwarg=1)


def test_camera_model_ignores_extrinsics_intrinsics():
    model = randomize_(WorldStereoTransformer(tiny_config()), seed=8).eval()
    x = inputs()
    out = model(**x).sample
    e = torch.eye(4).repeat(3, 1, 1)
    torch.testing.assert_close(model(**x, extrinsics=e, intrinsics=torch.eye(3).repeat(3, 1, 1)).sample, out,
                               atol=0, rtol=0)
    e[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="extrinsics"):
        model(**x, extrinsics=e)


@pytest.fixture(scope="module")
def memory_model():
    return randomize_(WorldStereoTransformer(tiny_config("worldstereo-memory")), seed=9).eval()


@pytest.mark.parametrize(
    "change, exc, pattern",
    [
        (lambda x: x.update(ref_index=torch.tensor([0, 2])), ValueError, r"ref_index.*\[0, F-2\]"),  # F=3: max 1
        (lambda x: x.update(ref_index=torch.tensor([-1, 0])), ValueError, "ref_index"),
        (lambda x: x.update(ref_index=torch.tensor([0.0, 1.0])), TypeError, "ref_index.*integer"),
        (lambda x: x.update(ref_index=torch.tensor([0])), ValueError, r"ref_index.*\[2\]"),
        (lambda x: x.update(ref_index=None), ValueError, "ref_index"),
        (lambda x: x.update(reference_latent=None), ValueError, "reference_latent"),
        (lambda x: x.update(reference_latent=torch.zeros(1, 36, 2, 4, 4)), ValueError, "reference_latent"),
        (lambda x: x.update(camera_qt=torch.zeros(1, 2, 7)), ValueError, "camera_qt"),
        (lambda x: x.update(render_mask=torch.zeros(1, 1, 3, 4, 6)), ValueError, "render_mask.*full pixel"),
        (lambda x: x.update(render_latent=torch.zeros(1, 16, 2, 4, 6)), ValueError, "render_latent"),
        (lambda x: x.update(camera_embedding=None), ValueError, "camera_embedding"),
        (lambda x: x.update(hidden_states=torch.zeros(1, 16, 3, 4, 6)), ValueError, "hidden_states"),
        (lambda x: x.update(hidden_states=torch.zeros(1, 36, 3, 5, 6)), ValueError, "hidden_states"),
        (lambda x: x.update(timestep=torch.zeros(3)), ValueError, "timestep"),
        (lambda x: x.update(encoder_hidden_states=torch.zeros(1, 77, 24)), ValueError, "512"),
        (lambda x: x.update(encoder_hidden_states_image=None), ValueError, "encoder_hidden_states_image"),
    ],
)
def test_input_validation(memory_model, change, exc, pattern):
    x = inputs("worldstereo-memory")
    change(x)
    with pytest.raises(exc, match=pattern):
        memory_model(**x)


def test_camera_model_rejects_references():
    model = WorldStereoTransformer(tiny_config())
    x = inputs("worldstereo-memory")
    with pytest.raises(ValueError, match="camera model"):
        model(**x)


def test_ref_index_list_accepted(memory_model):
    x = inputs("worldstereo-memory")
    out = memory_model(**x).sample
    torch.testing.assert_close(memory_model(**dict(x, ref_index=x["ref_index"].tolist())).sample, out,
                               atol=0, rtol=0)


def test_mask_downsample_4_runs_on_81_style_frames():
    model = randomize_(WorldStereoTransformer(tiny_config(mask_downsample=4)), seed=12).eval()
    x = inputs(F=3)
    x["render_mask"] = torch.zeros(1, 1, 9, 32, 48)  # (9 + 3) / 4 = 3 latent frames
    x["camera_embedding"] = torch.zeros(1, 6, 9, 32, 48)
    assert model(**x).sample.shape == (1, 16, 3, 4, 6)
    with pytest.raises(ValueError, match="mask_downsample"):
        model(**dict(x, render_mask=torch.zeros(1, 1, 3, 32, 48), camera_embedding=torch.zeros(1, 6, 3, 32, 48)))


def test_attention_backend_selection():
    model = WorldStereoTransformer(tiny_config())
    assert model.attention_backend == "sdpa"
    with pytest.raises(ValueError, match="backend"):
        model.set_attention_backend("flash9")
    try:
        import xformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="xformers"):
            model.set_attention_backend("xformers")
        assert model.attention_backend == "sdpa"
    else:  # pragma: no cover - only where xformers is installed
        model.set_attention_backend("xformers")
        assert all(p.backend == "xformers" for p in model.attention_processors())


def test_mask_only_controlnet_and_small_heads():
    """add_channels=1 (mask only), a 4-wide ControlNet head and mid_channels not a multiple of 8."""
    model = randomize_(WorldStereoTransformer(tiny_config(add_channels=1, mid_channels=12, dim=8, num_heads=2)),
                       seed=13).eval()
    assert model.controlnet.controlnet_mask_embedding.mask_proj[0].weight.shape == (12, 1, 1, 8, 8)
    x = inputs()
    x.pop("camera_embedding")
    out = model(**x).sample
    assert out.shape == (1, 16, 3, 4, 6) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="add_channels=1"):
        model(**inputs())
