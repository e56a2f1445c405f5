"""Conformance runner: checks this implementation against data computed by the reference code.

Usage::

    python -m worldstereo.conformance DIR [--case NAME ...]

``DIR`` is laid out like ``shared/conformance`` (one sub-directory per case). See
:func:`worldstereo.conformance.runner.run_conformance`.
"""

from .results import CheckResult, compare, compare_exact
from .runner import CASE_CHECKERS, run_case, run_conformance

__all__ = ["CheckResult", "compare", "compare_exact", "CASE_CHECKERS", "run_case", "run_conformance"]
