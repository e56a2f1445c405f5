from pathlib import Path

import pytest

from worldstereo.conformance import run_case


def assert_case_passes(conformance_dir: Path, case: str) -> None:
    case_dir = conformance_dir / case
    if not case_dir.is_dir():
        pytest.skip(f"conformance case {case} absent")
    results = run_case(case_dir)
    assert results, f"{case}: checker returned no results"
    bad = [f"{r.name}: err={r.max_abs_err:.3e} tol={r.tolerance:.1e} {r.detail}" for r in results if not r.passed]
    assert not bad, f"{case} failed:\n" + "\n".join(bad)
