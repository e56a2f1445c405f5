"""``python -m worldstereo.conformance DIR``: run every case and print max abs errors."""

from __future__ import annotations

import argparse
import sys

from .runner import case_kind, run_conformance

#: case kinds whose every compared quantity is printed (the end-to-end intermediates), not only failures
_ALWAYS_DETAILED = ("pipeline_camera", "pipeline_memory", "pipeline_dmd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worldstereo.conformance",
        description="Check worldstereo against conformance data computed by the reference implementation.",
    )
    parser.add_argument("directory", help="directory laid out like shared/conformance (one folder per case)")
    parser.add_argument("--case", action="append", dest="cases", help="run only this case (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every compared quantity (always done for the end-to-end pipeline_* cases)")
    args = parser.parse_args(argv)
    try:
        results = run_conformance(args.directory, args.cases)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    if not results:
        print(f"no conformance cases found under {args.directory}")
        return 1
    n_fail = 0
    for case, checks in results.items():
        ok = bool(checks) and all(c.passed for c in checks)
        n_fail += not ok
        worst = max((c.max_abs_err for c in checks), default=float("inf"))
        print(f"{'PASS' if ok else 'FAIL'}  {case:32s} checks={len(checks):3d}  max_abs_err={worst:.3e}")
        detailed = args.verbose or case_kind(case) in _ALWAYS_DETAILED
        for c in checks:
            if detailed or not c.passed:
                mark = "ok " if c.passed else "BAD"
                print(f"    {mark} {c.name:40s} err={c.max_abs_err:.3e} tol={c.tolerance:.1e} {c.detail}")
    print(f"{len(results) - n_fail} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
