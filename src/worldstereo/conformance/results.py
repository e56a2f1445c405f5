"""Result records of conformance checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["CheckResult", "compare", "compare_exact"]


@dataclass(frozen=True)
class CheckResult:
    """Outcome of comparing one computed quantity with the reference value.

    Attributes:
        name: what was compared, e.g. ``"sample"`` or ``"trajA/plucker"``.
        max_abs_err: maximum absolute difference (``inf`` on a shape mismatch or a failure to run).
        tolerance: largest accepted ``max_abs_err`` (0 for exact comparisons).
        detail: optional human-readable note (shape mismatch, exception text).
    """

    name: str
    max_abs_err: float
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_err)) and self.max_abs_err <= self.tolerance


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def compare(name: str, actual: Any, expected: Any, tol: float) -> CheckResult:
    """Compare ``actual`` with ``expected`` elementwise: max abs error against ``tol``.

    Shapes must match exactly; a mismatch gives ``max_abs_err = inf`` with the shapes in ``detail``.
    """
    a = _as_numpy(actual)
    e = _as_numpy(expected)
    if a.shape != e.shape:
        return CheckResult(name, float("inf"), tol, f"shape {a.shape} != expected {e.shape}")
    if a.size == 0:
        return CheckResult(name, 0.0, tol)
    diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
    if np.isnan(diff).any():
        both_nan = np.isnan(a.astype(np.float64)) & np.isnan(e.astype(np.float64))
        if (np.isnan(diff) & ~both_nan).any():
            return CheckResult(name, float("inf"), tol, "NaN mismatch")
        diff = np.where(both_nan, 0.0, diff)
    return CheckResult(name, float(diff.max()), tol)


def compare_exact(name: str, actual: Any, expected: Any) -> CheckResult:
    """Exact comparison (integers, indices, masks, counts): tolerance 0."""
    return compare(name, actual, expected, 0.0)
