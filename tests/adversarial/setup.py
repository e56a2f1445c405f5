"""Build the probe's sandbox: bad files, a tiny saved model, a demo output folder, and the cases."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases_api import all_api_cases, checkpoint_api_cases
from .cases_cli import cli_cases, make_demo_folders
from .files import make_files
from .harness import Case, tag_heavy_modules


@dataclass
class Sandbox:
    root: Path
    files: dict[str, Path]
    model: Any
    model_dir: Path
    cases: list[Case]


def build_sandbox(tmp: Path) -> Sandbox:
    from worldstereo.cli import main
    from worldstereo.testing import tiny_model

    root = tmp / "sandbox"
    root.mkdir()
    files = make_files(root)
    model = tiny_model("worldstereo-memory")
    model_dir = tmp / "tiny-model"  # outside the sandbox: the CLI's --model
    model.save_pretrained(model_dir)
    demo_dir = tmp / "demo"
    logging.getLogger("worldstereo").handlers.clear()
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["-q", "--threads", "1", "demo", "--out", str(demo_dir), "--height", "32", "--width", "48",
                     "--frames", "3", "--supersample", "1", "--no-progress"])
    assert code == 0, "the demo did not run"
    make_demo_folders(files, demo_dir)
    tag_heavy_modules(model)
    cases = all_api_cases(files, model, model_dir) + cli_cases(files, model_dir) + \
        checkpoint_api_cases(files, model, model_dir)
    return Sandbox(root, files, model, model_dir, cases)
