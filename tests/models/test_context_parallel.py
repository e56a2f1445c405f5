"""Context parallelism of the transformer through diffusers' hooks (``enable_parallelism``).

Two gloo processes on the CPU run Ulysses attention with the model's ``_cp_plan``; the output must equal
the single-process output (within 1e-5: attention over the all-to-all gathered keys sums them in another
order) for the camera model and the memory model (references, ``ref_index``, camera tokens), with and
without ``update_ref``. Checks that need no process group run in-process.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

from tests._distributed import spawn
from worldstereo.models.transformer import WorldStereoTransformer, context_parallel_plan

from ._tiny import inputs, randomize_, tiny_config

CASES = [("worldstereo-camera", {}), ("worldstereo-memory", {"update_ref": True}),
         ("worldstereo-memory", {"update_ref": False})]


def _model(model_type: str, overrides: dict, seed: int = 3) -> WorldStereoTransformer:
    return randomize_(WorldStereoTransformer(tiny_config(model_type, **overrides)), seed=seed).eval()


def _inputs(model_type: str) -> dict:
    # F=4, 4x6 latent -> 2x3 tokens per frame: 24 target tokens, 2 references -> 12 reference tokens
    return inputs(model_type, F=4, h=4, w=6, R=2, seed=5)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for i, (model_type, overrides) in enumerate(CASES):
            model = _model(model_type, overrides)
            model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
            with torch.no_grad():
                out = model(**_inputs(model_type)).sample
            torch.save(out, Path(out_dir) / f"case{i}_rank{rank}.pt")
        # 3 frames of 1x1 tokens: 3 target tokens cannot be split over 2 ranks
        odd = inputs("worldstereo-camera", F=3, h=2, w=2)
        try:
            with torch.no_grad():
                model = _model("worldstereo-camera", {})
                model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
                model(**odd)
        except ValueError as exc:
            (Path(out_dir) / f"odd_rank{rank}.txt").write_text(str(exc))
    finally:
        dist.destroy_process_group()


def test_ulysses_two_gloo_ranks_equal_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        spawn(_worker, (2, str(Path(tmp) / "init"), tmp), nprocs=2)
        for i, (model_type, overrides) in enumerate(CASES):
            with torch.no_grad():
                expected = _model(model_type, overrides)(**_inputs(model_type)).sample
            for rank in range(2):
                out = torch.load(Path(tmp) / f"case{i}_rank{rank}.pt")
                assert out.shape == expected.shape
                torch.testing.assert_close(out, expected, atol=1e-5, rtol=0,
                                           msg=lambda m: f"{model_type} {overrides} rank {rank}: {m}")
        for rank in range(2):
            msg = (Path(tmp) / f"odd_rank{rank}.txt").read_text()
            assert "not divisible by 2" in msg and "target tokens" in msg


def test_plan_splits_every_token_stream():
    cam = _model("worldstereo-camera", {})._cp_plan
    assert set(cam) == {"rope", "controlnet_rope", "controlnet.proj_in", "blocks.0", "proj_out"}
    assert set(cam["rope"]) == {0, 1} and all(v.split_output and v.split_dim == 1 for v in cam["rope"].values())
    assert set(cam["blocks.0"]) == {"hidden_states"}
    assert isinstance(cam["controlnet.proj_in"]["input"], ContextParallelInput)
    assert isinstance(cam["proj_out"], ContextParallelOutput) and cam["proj_out"].gather_dim == 1
    mem = _model("worldstereo-memory", {"update_ref": True})._cp_plan
    assert set(mem["rope"]) == {0, 1, 2, 3} and set(mem["blocks.0"]) == {"hidden_states", "ref_states"}
    # without update_ref every block receives the original reference tokens: split at every block
    mem_fixed = context_parallel_plan(is_memory=True, update_ref=False)
    assert set(mem_fixed["blocks.0"]) == {"hidden_states"} and set(mem_fixed["blocks.*"]) == {"ref_states"}


def test_ring_attention_without_lse_backend_is_a_clear_error():
    model = _model("worldstereo-camera", {})
    with pytest.raises(NotImplementedError, match="log-sum-exp"):
        model.enable_parallelism(config=ContextParallelConfig(ring_degree=2))
    assert model._parallel_config is None  # nothing applied


def test_ulysses_degree_must_divide_heads():
    model = _model("worldstereo-camera", {})  # 2 backbone heads, 2 ControlNet heads
    with pytest.raises(ValueError, match="ulysses_degree: 4 must divide"):
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=4))


def test_parallelism_needs_a_process_group():
    if dist.is_available() and dist.is_initialized():  # pragma: no cover - only inside a launcher
        pytest.skip("a process group is initialised")
    model = _model("worldstereo-camera", {})
    with pytest.raises(RuntimeError, match="torch.distributed"):
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2))
