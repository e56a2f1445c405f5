"""Helpers of the multi-process tests: start ``nprocs`` processes of ``fn`` and wait for them."""

from __future__ import annotations

import time

import pytest
import torch.multiprocessing as mp


def spawn(fn, args: tuple, nprocs: int, timeout: float = 900.0) -> None:
    """``torch.multiprocessing`` spawn of ``fn(rank, *args)``; fails the test (and kills the workers)
    when they do not finish within ``timeout`` seconds; a worker's exception is raised here."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{nprocs} worker processes did not finish within {timeout} s")
