import json
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from tests.models._tiny import inputs, randomize_, tiny_config
from worldstereo.models.checkpoint import (
    CheckpointError,
    check_finite,
    load_state_dict_file,
    load_transformer,
    parameter_dtype,
    read_safetensors,
    read_safetensors_specs,
    save_transformer,
)
from worldstereo.models.transformer import WorldStereoTransformer



@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only in this module (restored afterwards, so other modules keep autograd)."""
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    model = randomize_(WorldStereoTransformer(tiny_config("worldstereo-memory")), seed=1).eval()
    save_transformer(model, d)
    return d, model


def _case_copy(tmp_path, saved, mutate):
    d, _ = saved
    sd = load_file(str(d / "model.safetensors"))
    mutate(sd)
    out = tmp_path / "case"
    out.mkdir(parents=True)
    save_file(sd, str(out / "model.safetensors"))
    (out / "config.json").write_text((d / "config.json").read_text())
    return out


def test_round_trip_exact(saved):
    d, model = saved
    loaded = load_transformer(d)
    assert not loaded.training
    ref_sd, new_sd = model.state_dict(), loaded.state_dict()
    assert list(ref_sd) == list(new_sd)
    assert all(torch.equal(ref_sd[k], new_sd[k]) for k in ref_sd)
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))
    x = inputs("worldstereo-memory")
    torch.testing.assert_close(loaded(**x).sample, model(**x).sample, atol=0, rtol=0)
    # same through the classmethod used by the pipeline
    again = WorldStereoTransformer.from_reference_dir(d)
    torch.testing.assert_close(again(**x).sample, model(**x).sample, atol=0, rtol=0)


def test_missing_key_reported(tmp_path, saved):
    case = _case_copy(tmp_path, saved, lambda sd: sd.pop("blocks.1.attn1.to_q.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.1\.attn1\.to_q\.weight \[32, 32\]"):
        load_transformer(case)


def test_unexpected_key_reported(tmp_path, saved):
    case = _case_copy(tmp_path, saved, lambda sd: sd.update({"controlnet.extra_layer.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): controlnet\.extra_layer\.weight"):
        load_transformer(case)


def test_misshaped_key_reported(tmp_path, saved):
    case = _case_copy(tmp_path, saved, lambda sd: sd.update({"camera_embedding.0.weight": torch.zeros(16, 6)}))
    with pytest.raises(CheckpointError, match=r"camera_embedding\.0\.weight checkpoint \[16, 6\] vs model \[16, 7\]"):
        load_transformer(case)


def test_all_problems_in_one_error(tmp_path, saved):
    def mutate(sd):
        sd.pop("proj_out.bias")
        sd["bogus"] = torch.zeros(1)
        sd["scale_shift_table"] = torch.zeros(1, 2, 31)

    case = _case_copy(tmp_path, saved, mutate)
    with pytest.raises(CheckpointError) as info:
        load_transformer(case)
    msg = str(info.value)
    assert "proj_out.bias" in msg and "bogus" in msg and "scale_shift_table" in msg


def test_pickle_refused_unless_allowed(tmp_path, saved):
    d, model = saved
    sd = load_file(str(d / "model.safetensors"))
    case = tmp_path / "pickled"
    case.mkdir()
    torch.save(sd, case / "model.bin")
    (case / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(CheckpointError, match="allow_pickle"):
        load_transformer(case)
    with pytest.raises(CheckpointError, match="pickle"):
        load_state_dict_file(case / "model.bin")
    loaded = load_transformer(case, allow_pickle=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())


def test_missing_backbone_config(tmp_path, saved):
    d, model = saved
    raw = json.loads((d / "config.json").read_text())
    backbone = raw.pop("transformer")
    case = tmp_path / "nobackbone"
    case.mkdir()
    (case / "config.json").write_text(json.dumps(raw))
    (case / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="backbone_config"):
        load_transformer(case)
    loaded = load_transformer(case, backbone_config=backbone)
    x = inputs("worldstereo-memory")
    torch.testing.assert_close(loaded(**x).sample, model(**x).sample, atol=0, rtol=0)
    # a local diffusers-style base model directory also works
    base = tmp_path / "base"
    (base / "transformer").mkdir(parents=True)
    (base / "transformer" / "config.json").write_text(json.dumps(dict(backbone, _class_name="WanTransformer3DModel")))
    raw["base_model"] = str(base)
    (case / "config.json").write_text(json.dumps(raw))
    assert load_transformer(case).backbone_config.num_layers == backbone["num_layers"]


def test_dtype_policy_half(saved):
    d, model = saved
    loaded = load_transformer(d, torch_dtype=torch.float16)
    dt = {k: v.dtype for k, v in loaded.state_dict().items()}
    fp32 = ["scale_shift_table", "condition_embedder.time_embedder.linear_1.weight",
            "condition_embedder.time_embedder.linear_2.bias", "condition_embedder.image_embedder.norm1.weight",
            "condition_embedder.image_embedder.norm2.bias", "blocks.0.scale_shift_table", "blocks.1.norm2.weight",
            "controlnet.controlnet_blocks.0.norm1.linear.weight", "controlnet.proj_out.1.weight",
            "camera_embedding.4.weight", "ref_index_embedding.weight"]
    half = ["patch_embedding.weight", "condition_embedder.time_proj.weight", "condition_embedder.text_embedder.linear_1.weight",
            "condition_embedder.image_embedder.ff.net.0.proj.weight", "blocks.0.attn1.to_q.weight",
            "blocks.0.attn2.norm_added_k.weight", "blocks.1.ffn.net.2.weight", "proj_out.weight"]
    assert all(dt[k] == torch.float32 for k in fp32), {k: dt[k] for k in fp32}
    assert all(dt[k] == torch.float16 for k in half), {k: dt[k] for k in half}
    assert loaded.dtype == torch.float16
    # the rule as a function: backbone keep-modules and extras float32, float32/None -> all float32
    assert parameter_dtype("blocks.3.norm2.bias", torch.bfloat16) == torch.float32
    assert parameter_dtype("blocks.3.attn1.norm_q.weight", torch.bfloat16) == torch.bfloat16
    assert parameter_dtype("controlnet.proj_in.weight", torch.bfloat16, keep_extras_fp32=False) == torch.bfloat16
    assert parameter_dtype("blocks.3.attn1.to_q.weight", None) == torch.float32


def test_mixed_precision_forward_close_to_fp32(saved):
    d, model = saved
    loaded = load_transformer(d, torch_dtype=torch.bfloat16)
    x = inputs("worldstereo-memory")
    out = loaded(**x).sample
    ref = model(**x).sample
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.1, err


def test_streaming_reader_matches_safetensors(tmp_path):
    sd = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2).to(torch.bfloat16), "e": torch.zeros(0, 3)}
    save_file(sd, str(tmp_path / "x.safetensors"))
    got = read_safetensors(tmp_path / "x.safetensors")
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    got16 = read_safetensors(tmp_path / "x.safetensors", dtype_for_key=lambda k: torch.float16)
    assert got16["a"].dtype == torch.float16 and got16["b"].dtype == torch.int64
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="header"):
        read_safetensors(tmp_path / "bad.safetensors")


def test_unknown_format_refused(tmp_path):
    p = tmp_path / "weights.npz"
    p.write_bytes(b"0")
    with pytest.raises(CheckpointError, match="unsupported"):
        load_state_dict_file(p)


def _split_checkpoint(tmp_path, saved, backbone_prefixes=("blocks.", "patch_embedding.", "condition_embedder.")):
    """A reference-style checkpoint folder without (part of) the backbone, and a diffusers-style base
    transformer folder holding it; config.json names the base as base_model."""
    d, _ = saved
    full = load_file(str(d / "model.safetensors"))
    ckpt = {k: v for k, v in full.items() if not k.startswith(backbone_prefixes)}
    base = {k: v for k, v in full.items() if k.startswith(backbone_prefixes)}
    case = tmp_path / "ckpt"
    case.mkdir()
    (tmp_path / "base" / "transformer").mkdir(parents=True)
    save_file(ckpt, str(case / "model.safetensors"))
    save_file(base, str(tmp_path / "base" / "transformer" / "diffusion_pytorch_model.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["base_model"] = str(tmp_path / "base")
    (case / "config.json").write_text(json.dumps(cfg))
    return case, full, base


def test_weights_missing_from_the_checkpoint_come_from_the_base_transformer(tmp_path, saved):
    case, full, base = _split_checkpoint(tmp_path, saved)
    assert base and len(base) < len(full)
    loaded = load_transformer(case)
    sd = loaded.state_dict()
    assert set(sd) == set(full) and all(torch.equal(sd[k], full[k]) for k in full)
    # checkpoint keys win over the base (the reference loads the checkpoint on top of the base)
    key = next(iter(base))
    changed = dict(load_file(str(case / "model.safetensors")), **{key: full[key] + 1.0})
    save_file(changed, str(case / "model.safetensors"))
    assert torch.equal(load_transformer(case).state_dict()[key], full[key] + 1.0)


def test_base_transformer_does_not_hide_missing_or_extra_keys(tmp_path, saved):
    case, full, base = _split_checkpoint(tmp_path, saved)
    base_file = tmp_path / "base" / "transformer" / "diffusion_pytorch_model.safetensors"
    lost = "blocks.0.ffn.net.0.proj.weight"
    save_file({k: v for k, v in base.items() if k != lost}, str(base_file))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.0\.ffn\.net\.0\.proj\.weight"):
        load_transformer(case)
    save_file({**base, "blocks.0.unknown.weight": torch.zeros(3)}, str(base_file))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): blocks\.0\.unknown\.weight"):
        load_transformer(case)
    # without a base folder the backbone keys are reported missing
    with pytest.raises(FileNotFoundError, match="base_transformer"):
        load_transformer(case, base_transformer=tmp_path / "nowhere")
    cfg = json.loads((case / "config.json").read_text())
    cfg["base_model"] = str(tmp_path / "no-such-base")
    (case / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_transformer(case)


# ----------------------------------------------------------------------------- malformed files
def _raw_safetensors(path, header, data=b""):
    import struct

    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("header, data, words", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "invalid offset"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "not fully covered"),
    ({"a": {"dtype": "U8", "shape": [10**12], "data_offsets": [0, 10**12]}}, b"\0" * 4, "not fully covered"),
    (b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1e12]}}', b"\0", "invalid JSON"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "invalid shape"),
    ({"a": {"dtype": "XX", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown variant"),
    ({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, "supported"),
    ({"a": 3}, b"", "invalid"),
    (b"[1, 2]", b"", "invalid"),
    (b"{not json", b"", "invalid JSON"),
    (b'{"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}}', b"\0" * 8, "overflow"),
])
def test_malformed_safetensors_is_a_checkpoint_error_naming_the_file(tmp_path, header, data, words):
    """Validated by the safetensors library: never a huge allocation, KeyError or TypeError."""
    path = _raw_safetensors(tmp_path / "w.safetensors", header, data)
    readers = (read_safetensors, load_state_dict_file) if words == "supported" else \
        (read_safetensors, read_safetensors_specs, load_state_dict_file)  # a valid header of another dtype
    for read in readers:
        with pytest.raises(CheckpointError) as info:
            read(path)
        assert str(path) in str(info.value) and words in str(info.value), str(info.value)


@pytest.mark.parametrize("raw", [b"", b"abc", b"\xff" * 8 + b"{}", b"\x02\x00\x00\x00\x00\x00\x00\x00{}extra"])
def test_short_or_garbage_files(tmp_path, raw):
    (tmp_path / "w.safetensors").write_bytes(raw)
    with pytest.raises(CheckpointError, match="w.safetensors"):
        read_safetensors(tmp_path / "w.safetensors")


def test_malformed_weights_in_a_checkpoint_folder(tmp_path, saved):
    d, _ = saved
    case = tmp_path / "case"
    case.mkdir()
    (case / "config.json").write_text((d / "config.json").read_text())
    _raw_safetensors(case / "model.safetensors", {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 10**12]}},
                     b"\0")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_transformer(case)


def test_non_finite_weights_are_refused_with_the_tensor_name(tmp_path, saved):
    key = "blocks.1.ffn.net.0.proj.weight"
    for bad in (float("nan"), float("inf"), float("-inf")):
        case = _case_copy(tmp_path / str(bad), saved, lambda sd: sd[key].view(-1).__setitem__(7, bad))
        with pytest.raises(CheckpointError, match=rf"tensor '{re.escape(key)}' contains non-finite values"):
            load_transformer(case)
    # finite in the file but beyond float16: named as an overflow of the load dtype
    case = _case_copy(tmp_path / "big", saved, lambda sd: sd[key].view(-1).__setitem__(0, 1e6))
    with pytest.raises(CheckpointError, match=rf"{re.escape(key)}' has values beyond the range of torch.float16"):
        load_transformer(case, torch_dtype=torch.float16)
    assert load_transformer(case, torch_dtype=torch.bfloat16).state_dict()[key].view(-1)[0] == 1e6 - 1e6 % 4096


def test_check_finite_names_the_tensor_and_counts():
    t = torch.zeros(4, 6)
    check_finite(t, "x")
    t[3, 5], t[0, 0], t[1, 1] = float("nan"), float("inf"), -float("inf")
    with pytest.raises(CheckpointError, match=r"src: tensor 'x' contains non-finite values \(1 NaN and 2 infinite "
                                              r"of 24\)"):
        check_finite(t, "x", "src")
    check_finite(torch.tensor([1, 2]), "ints")  # integer tensors are not checked


def test_sharded_index_is_validated(tmp_path, saved):
    d, model = saved
    full = load_file(str(d / "model.safetensors"))
    keys = sorted(full)
    case = tmp_path / "sharded"
    case.mkdir()
    (case / "config.json").write_text((d / "config.json").read_text())
    half = len(keys) // 2
    save_file({k: full[k] for k in keys[:half]}, str(case / "part-1.safetensors"))
    save_file({k: full[k] for k in keys[half:]}, str(case / "part-2.safetensors"))
    index = {"weight_map": {k: ("part-1.safetensors" if i < half else "part-2.safetensors") for i, k in enumerate(keys)}}
    (case / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = load_transformer(case)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in full.items())
    bad = dict(index["weight_map"], **{keys[0]: "../../etc/passwd.safetensors"})
    (case / "model.safetensors.index.json").write_text(json.dumps({"weight_map": bad}))
    with pytest.raises(CheckpointError, match="file name in the same folder"):
        load_transformer(case)
    bad = dict(index["weight_map"], **{keys[0]: "part-2.safetensors"})
    (case / "model.safetensors.index.json").write_text(json.dumps({"weight_map": bad}))
    with pytest.raises(CheckpointError, match="the index says"):
        load_transformer(case)
    for content in ("[1]", "{\"weight_map\": 3}", "{\"weight_map\": {\"a\": 5}}", "{{{"):
        (case / "model.safetensors.index.json").write_text(content)
        with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
            load_transformer(case)


def test_parameter_count_reported_before_allocation(tmp_path, saved, monkeypatch):
    """A config describing more layers than the file holds fails on the meta-device comparison with
    the counts first, the key listing truncated, and no tensor read."""
    from worldstereo.models import checkpoint as ck

    d, _ = saved
    cfg = json.loads((d / "config.json").read_text())
    cfg["transformer"]["num_layers"] = 40
    case = tmp_path / "deep"
    case.mkdir()
    (case / "config.json").write_text(json.dumps(cfg))
    (case / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    monkeypatch.setattr(ck, "read_safetensors", lambda *a, **k: pytest.fail("tensor data read before the check"))
    with pytest.raises(CheckpointError) as info:
        load_transformer(case)
    msg = str(info.value)
    assert re.search(r"the config describes [\d,]+ parameters in \d+ tensors, the weight file\(s\) hold [\d,]+", msg)
    assert "missing keys (" in msg and "... and" in msg and len(msg) < 10000


def test_save_transformer_keeps_unrelated_files(tmp_path, saved):
    _, model = saved
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "thesis.txt").write_text("x")
    save_transformer(model, folder)
    save_transformer(model, folder)
    assert (folder / "thesis.txt").read_text() == "x"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "thesis.txt",
                                                        "worldstereo_manifest.json"]


# ----------------------------------------------------------------------------- property-based
def _header_bytes(header) -> bytes:
    import struct

    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


_dtypes = st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "C64", "XX", 3])
_tensor_entry = st.fixed_dictionaries({
    "dtype": _dtypes,
    "shape": st.lists(st.integers(min_value=-2, max_value=2**40), max_size=3) | st.just("x"),
    "data_offsets": st.lists(st.integers(min_value=-5, max_value=10**13), min_size=0, max_size=3)
    | st.lists(st.floats(), max_size=2),
})
_headers = st.dictionaries(st.sampled_from(["a", "b", "proj_out.bias", "__metadata__"]), _tensor_entry
                           | st.integers() | st.text(max_size=5), max_size=3)
_files = st.binary(max_size=300) | st.builds(lambda h, d: _header_bytes(h) + d, _headers, st.binary(max_size=64))


@settings(max_examples=120, deadline=None)
@given(raw=_files)
def test_arbitrary_bytes_as_safetensors_raise_only_checkpoint_errors(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(raw)
    for read in (read_safetensors, read_safetensors_specs):
        try:
            read(path)
        except CheckpointError as exc:
            assert str(path) in str(exc)


@settings(max_examples=40, deadline=None)
@given(raw=_files)
def test_arbitrary_bytes_as_model_weights_raise_only_checkpoint_errors(tmp_path_factory, saved, raw):
    d, _ = saved
    folder = tmp_path_factory.mktemp("ckpt")
    (folder / "config.json").write_text((d / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(raw)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_transformer(folder)


def test_memory_map_fallback_reads_the_same_tensors(saved, monkeypatch):
    """safetensors without the pread backend: memory-mapped reads, the file re-opened every
    MMAP_REOPEN_BYTES; the result is bit-identical."""
    from worldstereo.models import checkpoint as ck

    d, model = saved
    opened = []
    real_open = ck.safe_open

    def old_safe_open(path, framework, device="cpu", **kwargs):
        if "backend" in kwargs:
            raise TypeError("safe_open() got an unexpected keyword argument 'backend'")
        opened.append(path)
        return real_open(path, framework, device=device)

    monkeypatch.setattr(ck, "safe_open", old_safe_open)
    monkeypatch.setattr(ck, "_PREAD", None)
    monkeypatch.setattr(ck, "MMAP_REOPEN_BYTES", 50_000)
    loaded = load_transformer(d)
    assert ck._PREAD is False and len(opened) > 3  # re-opened along the way
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
