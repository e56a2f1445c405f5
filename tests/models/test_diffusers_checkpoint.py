"""diffusers-format save / load of the transformer and the ControlNet: crash-safe, user files kept,
non-finite weights refused (``worldstereo.models.diffusers_checkpoint``)."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.modeling_utils import ModelMixin
from safetensors.torch import load_file, save_file

from worldstereo.models.checkpoint_folder import MANIFEST_FILE, CheckpointError
from worldstereo.models.controlnet import WanXControlNet
from worldstereo.models.transformer import WorldStereoTransformer

from ._tiny import randomize_, tiny_config

WEIGHTS = "diffusion_pytorch_model.safetensors"


def _model(seed: int = 3) -> WorldStereoTransformer:
    return randomize_(WorldStereoTransformer(tiny_config("worldstereo-memory")), seed=seed).eval()


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_save_keeps_the_users_files_and_replaces_its_own(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "thesis.txt").write_text("mine")
    first, second = _model(seed=1), _model(seed=2)
    assert first.save_pretrained(folder) == folder
    assert (folder / MANIFEST_FILE).is_file() and (folder / WEIGHTS).is_file()
    second.save_pretrained(folder)
    assert (folder / "thesis.txt").read_text() == "mine"
    assert _same_state(WorldStereoTransformer.from_pretrained(folder), second)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_a_failing_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    old = _model(seed=1)
    old.save_pretrained(folder)
    before = _tree(folder)
    real = ModelMixin.save_pretrained

    def half_then_disk_full(self, save_directory, **kwargs):
        real(self, save_directory, **kwargs)  # the complete new files, in the staging folder ...
        raise OSError(28, "No space left on device")  # ... then the disk fills up

    monkeypatch.setattr(ModelMixin, "save_pretrained", half_then_disk_full)
    with pytest.raises(OSError, match="No space"):
        _model(seed=2).save_pretrained(folder)
    monkeypatch.undo()
    assert _tree(folder) == before
    assert _same_state(WorldStereoTransformer.from_pretrained(folder), old)


def test_diffusers_keywords_pass_through_and_unsupported_ones_say_so(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "v", variant="fp16bits", max_shard_size="20KB")
    names = {p.name for p in (tmp_path / "v").iterdir()}
    assert all("fp16bits" in n for n in names if n.endswith(".safetensors")), names
    assert len([n for n in names if n.endswith(".safetensors")]) > 1  # sharded
    assert _same_state(WorldStereoTransformer.from_pretrained(tmp_path / "v", variant="fp16bits"), model)
    assert model.save_pretrained(tmp_path / "other", is_main_process=False) is None
    assert not (tmp_path / "other").exists()
    with pytest.raises(ValueError, match="push_to_hub"):
        model.save_pretrained(tmp_path / "hub", push_to_hub=True)
    assert not (tmp_path / "hub").exists()


@pytest.mark.parametrize("what", ["transformer", "controlnet"])
def test_non_finite_weights_are_refused_with_the_tensor_name(tmp_path, what):
    model = _model()
    module = model if what == "transformer" else model.controlnet
    cls = WorldStereoTransformer if what == "transformer" else WanXControlNet
    module.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / WEIGHTS
    sd = load_file(str(path))
    name = sorted(k for k, v in sd.items() if v.is_floating_point())[0]
    sd[name] = sd[name].clone()
    sd[name].view(-1)[0] = float("nan")
    save_file(sd, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' contains non-finite values \(1 NaN"):
        cls.from_pretrained(tmp_path / "m")


def test_controlnet_save_is_transactional_too(tmp_path):
    cn = _model().controlnet
    folder = tmp_path / "cn"
    folder.mkdir()
    (folder / "notes.md").write_text("keep")
    cn.save_pretrained(folder)
    assert (folder / MANIFEST_FILE).is_file() and (folder / "notes.md").read_text() == "keep"
    assert _same_state(WanXControlNet.from_pretrained(folder), cn)
