"""Shared synthetic-scene fixtures for the reconstruction tests (exact depth from a ray caster)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ._scene import ground_truth_points, render_views, ring_cameras


@pytest.fixture(scope="module")
def scene():
    """8 views (80x80) of the analytic scene: frames (T,3,H,W), depth (T,H,W), cameras, GT points, tau."""
    cams = ring_cameras(8, size=80)
    frames, depth = render_views(cams)
    gt = ground_truth_points(cams, factor=2)
    tau = 0.01 * float(np.linalg.norm(gt.max(0) - gt.min(0)))
    return {"cams": cams, "frames": torch.from_numpy(frames).float(), "depth": torch.from_numpy(depth).float(),
            "gt": gt, "tau": tau}


@pytest.fixture(scope="session")
def numpy_baseline():
    """The NumPy reconstruction before the PyTorch port (``benchmarks/_reconstruction_numpy.py``)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "_reconstruction_numpy.py"
    if "_reconstruction_numpy" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_reconstruction_numpy", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["_reconstruction_numpy"] = module  # its dataclasses resolve annotations through it
        spec.loader.exec_module(module)
    return sys.modules["_reconstruction_numpy"]
