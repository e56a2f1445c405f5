import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("WORLDSTEREO_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """Root of the reference conformance data (``../shared/conformance``); skips when absent."""
    d = Path(os.environ.get("WORLDSTEREO_CONFORMANCE_DIR", _shared_dir() / "conformance"))
    if not d.is_dir():
        pytest.skip(f"conformance data not found at {d}")
    return d


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """Root of the reference-format example inputs (``../shared/examples``); skips when absent."""
    d = _shared_dir() / "examples"
    if not d.is_dir():
        pytest.skip(f"examples not found at {d}")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """torch on one CPU thread for a test module (tiny models: more threads only contend on a busy
    machine); the previous count is restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
