"""Conformance runner: checks this implementation against data computed by the reference code.

Usage::

    python -m worldstereo.conformance DIR [--case NAME ...]

``DIR`` is laid out like ``shared/conformance`` (one sub-directory per case). See
:func:`worldstereo.conformance.runner.run_conformance`. The end-to-end ``pipeline_*`` cases run
through the public API (``WorldStereo.from_pretrained`` + ``generate_video`` with pre-rendered
inputs, :mod:`worldstereo.conformance.pipeline_checks`) and print every recorded intermediate.
"""

from .results import CheckResult, compare, compare_exact
from .runner import CASE_CHECKERS, run_case, run_conformance

__all__ = ["CheckResult", "compare", "compare_exact", "CASE_CHECKERS", "run_case", "run_conformance"]
