"""Discovers the cases of a conformance directory and runs the matching checkers."""

from __future__ import annotations

import importlib
import logging
import traceback
from pathlib import Path
from typing import Callable

from .results import CheckResult

__all__ = ["CASE_CHECKERS", "case_kind", "checker_for", "run_case", "run_conformance"]

logger = logging.getLogger(__name__)

#: case-directory name -> "module:function"; the function takes the case directory and returns
#: a list of CheckResult. Cases are recognised by name (the DEV and HOLDOUT sets share names).
CASE_CHECKERS: dict[str, str] = {
    "camera_embedding": "worldstereo.conformance.camera_checks:check_camera_embedding",
    "misc": "worldstereo.conformance.camera_checks:check_misc",
    "point_lifting": "worldstereo.conformance.geometry_checks:check_point_lifting",
    "retrieval": "worldstereo.conformance.retrieval_checks:check_retrieval",
    "transformer_camera": "worldstereo.conformance.transformer_checks:check_transformer",
    "transformer_memory": "worldstereo.conformance.transformer_checks:check_transformer",
    "transformer_memory_update_ref": "worldstereo.conformance.transformer_checks:check_transformer",
    "schedulers": "worldstereo.conformance.sampling_checks:check_schedulers",
    "sampling_dmd": "worldstereo.conformance.sampling_checks:check_sampling_dmd",
    "sampling_unipc": "worldstereo.conformance.sampling_checks:check_sampling_unipc",
    "sampling_unipc_camera": "worldstereo.conformance.sampling_checks:check_sampling_unipc",
    "pipeline_camera": "worldstereo.conformance.pipeline_checks:check_pipeline",
    "pipeline_memory": "worldstereo.conformance.pipeline_checks:check_pipeline",
    "pipeline_dmd": "worldstereo.conformance.pipeline_checks:check_pipeline",
}


def case_kind(case_dir: str | Path) -> str | None:
    """Name under which ``case_dir`` is registered: its own name, or the longest registered prefix
    (so ``transformer_memory_seed7`` is checked like ``transformer_memory``); None if unknown."""
    name = Path(case_dir).name
    if name in CASE_CHECKERS:
        return name
    prefixes = [k for k in CASE_CHECKERS if name.startswith(k + "_")]
    return max(prefixes, key=len) if prefixes else None


def checker_for(case_dir: Path) -> Callable[[Path], list[CheckResult]] | None:
    kind = case_kind(case_dir)
    if kind is None:
        return None
    module_name, func_name = CASE_CHECKERS[kind].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def run_case(case_dir: str | Path) -> list[CheckResult]:
    """Run the checker of one case directory; an exception becomes a failed result."""
    case_dir = Path(case_dir)
    checker = checker_for(case_dir)
    if checker is None:
        raise ValueError(f"case_dir: no checker for a case named {case_dir.name!r}; known: {sorted(CASE_CHECKERS)}")
    try:
        return list(checker(case_dir))
    except Exception as exc:  # report, do not abort the whole run
        logger.debug("case %s raised", case_dir, exc_info=True)
        return [CheckResult("<run>", float("inf"), 0.0, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")]


def run_conformance(root: str | Path, cases: list[str] | None = None) -> dict[str, list[CheckResult]]:
    """Run every recognised case under ``root`` (or only ``cases``); returns case name -> results.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: a name in ``cases`` is not a sub-directory of ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root: conformance directory {str(root)!r} does not exist")
    if cases:
        missing = [c for c in cases if not (root / c).is_dir()]
        if missing:
            raise ValueError(f"cases: {missing} are not case directories of {str(root)!r}")
        dirs = [root / c for c in cases]
    else:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and case_kind(p) is not None)
    return {d.name: run_case(d) for d in dirs}
