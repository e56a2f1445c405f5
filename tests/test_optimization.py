import pytest
import torch
from torch import nn

import worldstereo.optimization as opt
from worldstereo.optimization import enable_model_cpu_offload, enable_xformers_memory_efficient_attention


# ------------------------------------------------------------------ stub model
class Recorder:
    """Remembers, during each component's forward, which components were on the device and where the
    module's own parameters were."""

    def __init__(self):
        self.handle = None
        self.log = []

    def note(self, name, module):
        on = sorted(self.handle.on_device) if self.handle is not None else None
        self.log.append((name, on, {p.device.type for p in module.parameters(recurse=False)}))


class ControlNet(nn.Module):
    def __init__(self, rec):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.rec = rec

    def embed(self, x):
        self.rec.note("controlnet.embed", self.proj)
        return self.proj(x)

    def forward(self, x):
        self.rec.note("controlnet", self.proj)
        return self.proj(x) * 2


class Transformer(nn.Module):
    def __init__(self, rec):
        super().__init__()
        self.inp = nn.Linear(4, 4)
        self.out = nn.Linear(4, 4)
        self.controlnet = ControlNet(rec)
        self.rec = rec
        self.backend = None

    def set_attention_backend(self, backend):
        self.backend = backend

    def forward(self, x):
        self.rec.note("transformer.start", self.inp)
        h = self.inp(x) + self.controlnet(self.controlnet.embed(x))
        self.rec.note("transformer.end", self.out)
        return self.out(h)


class Vae(nn.Module):
    def __init__(self, rec):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.rec = rec

    def encode(self, x):
        self.rec.note("vae.encode", self.lin)
        return self.lin(x)

    def decode(self, z):
        self.rec.note("vae.decode", self.lin)
        return self.lin(z) - 1


class Encoder(nn.Module):
    def __init__(self, rec, name):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.rec, self.name = rec, name

    def forward(self, x):
        self.rec.note(self.name, self.lin)
        return self.lin(x)


class FakeWorldStereo(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rec = Recorder()
        self.text_encoder = Encoder(self.rec, "text_encoder")
        self.image_encoder = Encoder(self.rec, "image_encoder")
        self.vae = Vae(self.rec)
        self.transformer = Transformer(self.rec)

    def run(self, x):
        t = self.text_encoder(x)
        i = self.image_encoder(x)
        z = self.vae.encode(x)
        y = self.transformer(z + t + i)
        return self.vae.decode(y)


@pytest.fixture
def fake_accelerator(monkeypatch):
    monkeypatch.setattr(opt, "_accelerator_available", lambda: True)


# ------------------------------------------------------------------ offload
def test_offload_requires_an_accelerator(monkeypatch):
    monkeypatch.setattr(opt, "_accelerator_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA"):
        enable_model_cpu_offload(FakeWorldStereo())
    with pytest.raises(TypeError, match="model"):
        enable_model_cpu_offload("model")


def test_offload_one_component_at_a_time(fake_accelerator):
    model = FakeWorldStereo()
    x = torch.randn(3, 4)
    expected = model.run(x)
    handle = enable_model_cpu_offload(model, device="cpu")
    model.rec.handle = handle
    assert set(handle.components) == {"text_encoder", "image_encoder", "vae", "transformer", "controlnet"}
    assert handle.on_device == set()
    torch.testing.assert_close(model.run(x), expected, rtol=0, atol=0)
    on = {name: on for name, on, _ in model.rec.log}
    assert on == {
        "text_encoder": ["text_encoder"], "image_encoder": ["image_encoder"], "vae.encode": ["vae"],
        "transformer.start": ["transformer"], "controlnet.embed": ["controlnet"], "controlnet": ["controlnet"],
        "transformer.end": ["transformer"], "vae.decode": ["vae"],
    }
    # the transformer is reloaded after each nested ControlNet call
    hist = list(handle.history)
    i = hist.index(("load", "controlnet"))
    assert hist[i - 1] == ("offload", "transformer") and ("load", "transformer") in hist[i + 1:]
    # a second run starts from the VAE left resident
    assert handle.on_device == {"vae"}


def test_offload_keep_outer_resident(fake_accelerator):
    model = FakeWorldStereo()
    handle = enable_model_cpu_offload(model, device="cpu", keep_outer_resident=True)
    model.rec.handle = handle
    model.run(torch.randn(2, 4))
    on = {name: on for name, on, _ in model.rec.log}
    assert on["controlnet"] == ["controlnet", "transformer"]
    assert on["transformer.end"] == ["transformer"]  # ControlNet swapped out again


def test_offload_remove_restores_methods_and_reinstall_replaces(fake_accelerator):
    model = FakeWorldStereo()
    h1 = enable_model_cpu_offload(model, device="cpu")
    assert "decode" in model.vae.__dict__
    h2 = enable_model_cpu_offload(model, device="cpu")  # replaces h1
    model.rec.handle = h2
    model.run(torch.randn(2, 4))
    assert not h1.history and h2.history
    h2.remove()
    assert "decode" not in model.vae.__dict__ and "embed" not in model.transformer.controlnet.__dict__
    n = len(h2.history)
    model.run(torch.randn(2, 4))
    assert len(h2.history) == n and h2.on_device == set()


def test_offload_bare_transformer_and_exception_safety(fake_accelerator):
    rec = Recorder()
    tr = Transformer(rec)
    handle = enable_model_cpu_offload(tr, device="cpu")
    rec.handle = handle
    assert set(handle.components) == {"transformer", "controlnet"}

    def boom(x):
        raise RuntimeError("boom")

    tr.controlnet.forward = boom
    with pytest.raises(RuntimeError, match="boom"):
        tr(torch.randn(1, 4))
    assert handle._active == []  # post-hooks ran despite the exception
    del tr.controlnet.forward
    tr(torch.randn(1, 4))
    assert handle.on_device == {"transformer"}


def test_move_module_excludes_subtree():
    rec = Recorder()
    tr = Transformer(rec)
    opt._move_module(tr, torch.device("meta"), exclude=(tr.controlnet,))
    assert tr.inp.weight.device.type == "meta" and tr.out.bias.device.type == "meta"
    assert tr.controlnet.proj.weight.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offload_moves_parameters_on_cuda():
    model = FakeWorldStereo()
    x = torch.randn(3, 4)
    expected = model.run(x)
    handle = enable_model_cpu_offload(model)
    model.rec.handle = handle
    assert all(p.device.type == "cpu" for p in model.parameters())
    out = model.run(x)
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=1e-5)
    assert all(devs == {"cuda"} for _, _, devs in model.rec.log)
    assert {p.device.type for p in model.transformer.controlnet.parameters()} == {"cpu"}
    assert {p.device.type for p in model.vae.parameters()} == {"cuda"}
    handle.remove()
    assert all(p.device.type == "cpu" for p in model.parameters())


# ------------------------------------------------------------------ attention backend
def test_xformers_absent_falls_back_to_sdpa_with_one_warning(monkeypatch):
    monkeypatch.setattr(opt, "_xformers_usable", lambda: False)
    model = FakeWorldStereo()
    with pytest.warns(UserWarning, match="scaled_dot_product_attention") as record:
        assert enable_xformers_memory_efficient_attention(model) == "sdpa"
    assert len(record) == 1
    assert model.transformer.backend == "sdpa"


def test_xformers_present_sets_backend_on_bare_transformer_and_processors(monkeypatch, recwarn):
    monkeypatch.setattr(opt, "_xformers_usable", lambda: True)
    tr = Transformer(Recorder())
    assert enable_xformers_memory_efficient_attention(tr) == "xformers"
    assert tr.backend == "xformers"

    class Proc:
        backend = "sdpa"

        def set_backend(self, b):
            self.backend = b

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.processor = Proc()

    plain = nn.Sequential(Attn(), nn.Linear(2, 2), Attn())
    enable_xformers_memory_efficient_attention(plain)
    assert [plain[0].processor.backend, plain[2].processor.backend] == ["xformers", "xformers"]
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    with pytest.raises(TypeError, match="model"):
        enable_xformers_memory_efficient_attention(object())


def test_attention_backend_on_real_transformer(conformance_dir, monkeypatch):
    from worldstereo.models.transformer import WorldStereoTransformer

    case = conformance_dir / "transformer_camera"
    if not case.is_dir():
        pytest.skip("transformer_camera case absent")
    tr = WorldStereoTransformer.from_reference_dir(case, torch_dtype=torch.float32)
    monkeypatch.setattr(opt, "_xformers_usable", lambda: False)
    with pytest.warns(UserWarning):
        assert enable_xformers_memory_efficient_attention(tr) == "sdpa"
    assert tr.attention_backend == "sdpa"
    calls = []
    monkeypatch.setattr(type(tr), "set_attention_backend", lambda self, b: calls.append(b))
    monkeypatch.setattr(opt, "_xformers_usable", lambda: True)
    assert enable_xformers_memory_efficient_attention(tr) == "xformers"
    assert calls == ["xformers"]


def test_offload_hooks_on_real_transformer(conformance_dir, fake_accelerator):
    from safetensors.torch import load_file

    from worldstereo.models.transformer import WorldStereoTransformer

    case, sampling = conformance_dir / "transformer_camera", conformance_dir / "sampling_unipc_camera"
    if not case.is_dir() or not sampling.is_dir():
        pytest.skip("conformance cases absent")
    tr = WorldStereoTransformer.from_reference_dir(case, torch_dtype=torch.float32).eval()
    inp = load_file(str(sampling / "inputs.safetensors"))
    kwargs = dict(hidden_states=torch.cat([inp["latents_init"], inp["condition"]], 1),
                  timestep=torch.tensor([999] * inp["latents_init"].shape[0]),
                  encoder_hidden_states=inp["prompt_embeds"], encoder_hidden_states_image=inp["image_embeds"],
                  render_latent=inp["render_latent"], render_mask=inp["render_mask"],
                  camera_embedding=inp["camera_embedding"], return_dict=False)
    with torch.no_grad():
        expected = tr(**kwargs)[0]
        handle = enable_model_cpu_offload(tr, device="cpu")
        out = tr(**kwargs)[0]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    hist = list(handle.history)
    assert hist[0] == ("load", "transformer") and ("load", "controlnet") in hist
    assert handle.on_device == {"transformer"} and handle._active == []
