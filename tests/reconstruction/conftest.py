"""Shared synthetic-scene fixtures for the reconstruction tests (exact depth from a ray caster)."""

from __future__ import annotations

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
