"""worldstereo.parallel with four gloo processes: the combined meshes.

* ``cfg+ulysses`` with FSDP (memory variant, UniPC + guidance): the two guidance passes on two
  groups of two ranks, each pass split 2-way with Ulysses, weights sharded over all four;
* ``ulysses`` with ``group_size=2``: two data-parallel groups of two ranks each.

Every rank returns the single-process video (within 1e-5); only each group's rank 0 writes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests._distributed import spawn
from tests.test_parallel import _calls, _generate
from worldstereo.parallel import enable_context_parallel
from worldstereo.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: name -> (variant, mode, keyword arguments of enable_context_parallel)
CASES = {
    "cfg+ulysses+fsdp": ("worldstereo-memory", "cfg+ulysses", {"fsdp": True}),
    "2 groups x ulysses": ("worldstereo-camera", "ulysses", {"group_size": 2}),
}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    out = Path(out_dir)
    try:
        results = {}
        for i, (name, (variant, mode, kwargs)) in enumerate(CASES.items()):
            model = tiny_model(variant)
            state = enable_context_parallel(model, mode, **kwargs)
            calls = _calls(model)
            video = _generate(model, save_path=str(out / f"case{i}_rank{rank}.mp4"))
            results[name] = {"video": video, "calls": len(calls), "group_rank": state.group_rank,
                             "dp_rank": state.data_parallel_rank, "degrees": (state.cfg_degree, state.ulysses_degree)}
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_combined_meshes_equal_one_process():
    expected = {v: _generate(tiny_model(v)) for v in dict.fromkeys(v for v, _, _ in CASES.values())}
    with tempfile.TemporaryDirectory() as tmp:
        spawn(_worker, (4, str(Path(tmp) / "init"), tmp), nprocs=4)
        results = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(4)]
        written = {(i, r): (Path(tmp) / f"case{i}_rank{r}.mp4").exists() for i in range(len(CASES)) for r in range(4)}
    for rank, res in enumerate(results):
        for name, (variant, _, _) in CASES.items():
            torch.testing.assert_close(res[name]["video"], expected[variant], atol=1e-5, rtol=0,
                                       msg=lambda m: f"{name} rank {rank}: {m}")
        # cfg+ulysses: one guidance pass per step on each rank (2 steps); 4 ranks = one group of 4
        assert res["cfg+ulysses+fsdp"]["calls"] == 2 and res["cfg+ulysses+fsdp"]["degrees"] == (2, 2)
        assert res["cfg+ulysses+fsdp"]["group_rank"] == rank and res["cfg+ulysses+fsdp"]["dp_rank"] == 0
        # two groups of two consecutive ranks, both passes on each rank
        assert res["2 groups x ulysses"]["calls"] == 4 and res["2 groups x ulysses"]["degrees"] == (1, 2)
        assert (res["2 groups x ulysses"]["dp_rank"], res["2 groups x ulysses"]["group_rank"]) == divmod(rank, 2)
    assert [written[(0, r)] for r in range(4)] == [True, False, False, False]
    assert [written[(1, r)] for r in range(4)] == [True, False, True, False]  # each group's rank 0
