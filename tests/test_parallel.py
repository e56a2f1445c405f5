"""worldstereo.parallel: generation spread over 2 gloo processes on the CPU equals one process.

One spawn of two ranks runs every case (process start-up dominates: keep it to one): for the camera
and memory variants with UniPC + classifier-free guidance and the distilled DMD variant, in the modes
the CPU supports — Ulysses context parallelism, CFG parallelism and FSDP2 sharding (alone and with
Ulysses) — both ranks return the single-process video within 1e-5, and only rank 0 writes
``save_path``. The modes needing an accelerator or more ranks fail with clear errors.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests._distributed import spawn
from worldstereo.camera import CameraTrajectory
from worldstereo.parallel import PARALLEL_MODES, enable_context_parallel, is_writer, parallel_state
from worldstereo.pipeline import SceneMemory, generate_video
from worldstereo.testing import tiny_model

H = W = 32
F = 4  # 4 frames of 2x2 tokens: 16 target tokens, 4 per reference -> divisible by 2

#: (variant, mode, fsdp); guidance 3 for the UniPC variants (the DMD variant ignores it)
CASES = [
    ("worldstereo-camera", "ulysses", False),
    ("worldstereo-camera", "cfg", False),
    ("worldstereo-camera", "none", True),
    ("worldstereo-memory", "ulysses", False),
    ("worldstereo-memory", "cfg", False),
    ("worldstereo-memory", "ulysses", True),
    ("worldstereo-memory-dmd", "ulysses", False),
    ("worldstereo-memory-dmd", "cfg", False),
    ("worldstereo-memory-dmd", "none", True),
]

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(seed: int = 0) -> tuple[torch.Tensor, CameraTrajectory]:
    image = torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed))
    return image, CameraTrajectory.preset("orbit", num_frames=F, height=H, width=W, depth=2.0)


def _generate(model, save_path=None, memory=None) -> torch.Tensor:
    image, trajectory = _inputs()
    kwargs = {} if model.is_distilled else {"num_inference_steps": 2, "guidance_scale": 3.0}
    return generate_video(model, image, trajectory, num_frames=F, height=H, width=W, seed=5, prompt="a room",
                          depth_estimator=torch.full((H, W), 2.0), save_path=save_path, memory=memory, **kwargs)


def _calls(model) -> list[int]:
    """Records the batch size of every transformer call (one per guidance pass and step)."""
    calls: list[int] = []
    model.transformer.register_forward_pre_hook(
        lambda m, a, kw: calls.append(int(kw["hidden_states"].shape[0])), with_kwargs=True)
    return calls


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    out = Path(out_dir)
    try:
        for i, (variant, mode, fsdp) in enumerate(CASES):
            model = tiny_model(variant)
            state = enable_context_parallel(model, mode, fsdp=fsdp)
            calls = _calls(model)
            memory = SceneMemory()
            video = _generate(model, save_path=str(out / f"case{i}_rank{rank}.mp4"), memory=memory)
            torch.save({"video": video, "calls": len(calls), "writer": is_writer(model),
                        "group_rank": state.group_rank, "cfg": state.cfg_degree,
                        "record": memory.history[-1].summary()}, out / f"case{i}_rank{rank}.pt")
        errors = {}
        for name, mode, kwargs in (("cfg_ulysses_2", "cfg+ulysses", {}), ("group_3", "ulysses", {"group_size": 3}),
                                   ("twice", "ulysses", {})):
            model = tiny_model("worldstereo-camera")
            try:
                enable_context_parallel(model, mode, **kwargs)
                if name == "twice":
                    enable_context_parallel(model, mode)
            except (ValueError, RuntimeError) as exc:
                errors[name] = str(exc)
        model = tiny_model("worldstereo-camera")  # 3 frames of 2x2 tokens: 12 tokens split fine; 3x1x1 not
        enable_context_parallel(model, "ulysses")
        image, _ = _inputs()
        try:
            generate_video(model, image, CameraTrajectory.preset("forward", num_frames=3, height=16, width=16),
                           num_frames=3, height=16, width=16, num_inference_steps=1, seed=0,
                           depth_estimator=torch.full((H, W), 2.0))
        except ValueError as exc:
            errors["odd_tokens"] = str(exc)
        torch.save(errors, out / f"errors_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        spawn(_worker, (2, str(Path(tmp) / "init"), tmp), nprocs=2)
        results = {(i, r): torch.load(Path(tmp) / f"case{i}_rank{r}.pt") for i in range(len(CASES)) for r in (0, 1)}
        written = {(i, r): (Path(tmp) / f"case{i}_rank{r}.mp4").exists() for i in range(len(CASES)) for r in (0, 1)}
        errors = [torch.load(Path(tmp) / f"errors_rank{r}.pt") for r in (0, 1)]
        yield results, written, errors


@pytest.fixture(scope="module")
def single_process():
    out = {}
    for variant in dict.fromkeys(v for v, _, _ in CASES):
        model = tiny_model(variant)
        calls = _calls(model)
        out[variant] = (_generate(model), len(calls))
    return out


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{v}-{m}{'-fsdp' if f else ''}" for v, m, f in CASES])
def test_two_ranks_equal_one_process(two_ranks, single_process, index):
    results, written, _ = two_ranks
    variant, mode, fsdp = CASES[index]
    expected, single_calls = single_process[variant]
    for rank in (0, 1):
        got = results[(index, rank)]
        assert got["video"].shape == expected.shape == (F, 3, H, W)
        torch.testing.assert_close(got["video"], expected, atol=1e-5, rtol=0,
                                   msg=lambda m: f"{variant} {mode} fsdp={fsdp} rank {rank}: {m}")
        assert got["writer"] == (rank == 0)
        assert got["record"]["seed"] == 5
    # only rank 0 wrote save_path
    assert written[(index, 0)] and not written[(index, 1)]
    # CFG parallelism: each rank runs one of the two guidance passes per step
    guided = variant != "worldstereo-memory-dmd"
    per_rank = results[(index, 0)]["calls"]
    if mode == "cfg" and guided:
        assert single_calls == 2 * per_rank == 4
    else:
        assert per_rank == single_calls == (4 if guided else 4)
    assert results[(index, 0)]["cfg"] == (2 if mode == "cfg" else 1)


def test_modes_that_do_not_fit_say_why(two_ranks):
    _, _, errors = two_ranks
    for rank_errors in errors:
        assert "needs at least 4 ranks per group" in rank_errors["cfg_ulysses_2"]
        assert "3 does not divide the world size 2" in rank_errors["group_3"]
        assert "already enabled" in rank_errors["twice"]
        assert "not divisible by 2" in rank_errors["odd_tokens"] and "target tokens" in rank_errors["odd_tokens"]


def test_ring_needs_an_accelerator():
    model = tiny_model("worldstereo-camera")
    for mode in ("ring", "cfg+ring"):
        with pytest.raises(NotImplementedError, match="ring attention needs an accelerator.*ulysses"):
            enable_context_parallel(model, mode, device="cpu")
    assert parallel_state(model) is None


def test_needs_a_process_group_and_checks_arguments():
    if dist.is_available() and dist.is_initialized():  # pragma: no cover - only inside a launcher
        pytest.skip("a process group is initialised")
    model = tiny_model("worldstereo-camera")
    with pytest.raises(RuntimeError, match="torchrun"):
        enable_context_parallel(model, "ulysses")
    with pytest.raises(ValueError, match="mode: expected one of"):
        enable_context_parallel(model, "tensor")
    with pytest.raises(TypeError, match="pass the WorldStereo model"):
        enable_context_parallel(model.transformer, "cfg")
    with pytest.raises(ValueError, match="group_size"):
        enable_context_parallel(model, "ulysses", group_size=0)
    assert set(PARALLEL_MODES) >= {"ulysses", "ring", "cfg"}
    assert is_writer(model)  # no parallelism: this process writes
