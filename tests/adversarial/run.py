"""Run the whole adversarial probe and print the report: ``python -m tests.adversarial.run [-v] [AREA ...]``."""

from __future__ import annotations

import logging
import os
import resource
import sys
import tempfile
from pathlib import Path

from .setup import build_sandbox


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    areas = [a for a in argv if not a.startswith("-")]
    import torch

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    os.environ["HF_HUB_OFFLINE"] = "1"  # depth models that are not cached fail at once (no download)
    with tempfile.TemporaryDirectory(prefix="ws-adversarial-") as tmp:
        sandbox = build_sandbox(Path(tmp))
        os.chdir(sandbox.root)  # a path that silently means "the current folder" writes into the sandbox
        # a hard ceiling for the whole process: a case that allocates without bound fails, not the machine
        vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize:")).split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (6 << 30), resource.RLIM_INFINITY))
        cases = [c for c in sandbox.cases if not areas or c.area in areas]
        from .harness import heavy_work_guard, run_cases

        with heavy_work_guard():
            report = run_cases([c for c in cases if c.area != "checkpoint"], sandbox.root, verbose=verbose)
        with heavy_work_guard(allow_model_loading=True):
            report.results += run_cases([c for c in cases if c.area == "checkpoint"], sandbox.root,
                                        verbose=verbose).results
        print(report.summary())
        slow = sorted(report.results, key=lambda r: -r.seconds)[:8]
        print("slowest:", ", ".join(f"{r.case.name} {r.seconds:.1f}s" for r in slow))
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
