from pathlib import Path

import pytest

from worldstereo.conformance import run_case


def assert_case_passes(conformance_dir: Path, case: str, required: set[str] | None = None) -> None:
    """Run ``case`` of the conformance data (skip when absent): every check passes and, when given,
    every name of ``required`` was compared."""
    case_dir = conformance_dir / case
    if not case_dir.is_dir():
        pytest.skip(f"conformance case {case} absent")
    results = run_case(case_dir)
    assert results, f"{case}: checker returned no results"
    bad = [f"{r.name}: err={r.max_abs_err:.3e} tol={r.tolerance:.1e} {r.detail}" for r in results if not r.passed]
    assert not bad, f"{case} failed:\n" + "\n".join(bad)
    missing = sorted((required or set()) - {r.name for r in results})
    assert not missing, f"{case}: the checker did not compare {missing}"
