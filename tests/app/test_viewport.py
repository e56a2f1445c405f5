"""The viewport payload (points, frusta, view), the pose it sends back, and the coverage plot."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

from worldstereo.app.coverage_plot import coverage_summary, coverage_svg
from worldstereo.app.viewport import CameraGroup, frusta, parse_view_pose, viewport_payload
from worldstereo.camera import CameraTrajectory
from worldstereo.geometry import PointCloud


def _cloud(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return PointCloud(torch.randn(n, 3, generator=g) + torch.tensor([0.0, 0.0, 3.0]), torch.rand(n, 3, generator=g))


def test_payload_points_decode_to_a_subset_of_the_cloud():
    cloud = _cloud(500)
    payload = viewport_payload(cloud, [], fov_deg=60, aspect=4 / 3, median_depth=3.0, scene="a", max_points=200)
    json.dumps(payload)  # JSON-able
    xyz = np.frombuffer(base64.b64decode(payload["points"]["xyz"]), "<f4").reshape(-1, 3)
    rgb = np.frombuffer(base64.b64decode(payload["points"]["rgb"]), np.uint8).reshape(-1, 3)
    assert payload["points"]["count"] == len(xyz) == len(rgb) == 200
    full = cloud.xyz.numpy()
    index = [int(np.argmin(np.abs(full - p).sum(1))) for p in xyz]
    assert np.allclose(full[index], xyz)  # every sent point is a point of the cloud, with its colour
    assert np.allclose(np.round(cloud.rgb.numpy()[index] * 255), rgb, atol=1)
    assert payload["view"]["home"] == {"target": [0.0, 0.0, 3.0], "distance": 3.0}
    small = viewport_payload(cloud, [], fov_deg=60, aspect=1.0, median_depth=3.0, scene="a")
    assert small["points"]["count"] == 500
    with pytest.raises(ValueError, match="median_depth"):
        viewport_payload(cloud, [], fov_deg=60, aspect=1.0, median_depth=0.0, scene="a")


def test_frusta_corners_project_onto_the_image_corners():
    traj = CameraTrajectory.orbit(40, num_frames=30, height=48, width=64).in_scene_units(2.0)
    fr = torch.tensor(frusta(traj, 0.5, max_frusta=5), dtype=torch.float64)
    assert fr.shape == (5, 5, 3)
    chosen = traj[[0, 7, 14, 22, 29]]  # round(linspace(0, 29, 5))
    assert torch.allclose(fr[:, 0], chosen.centers.double(), atol=1e-4)  # apex = camera centre
    for i in range(5):
        w2c, K = chosen.w2c[i].double(), chosen.K[i].double()
        cam = fr[i, 1:] @ w2c[:3, :3].T + w2c[:3, 3]
        assert torch.allclose(cam[:, 2], torch.full((4,), 0.5, dtype=torch.float64), atol=1e-4)  # at depth 0.5
        uv = (cam @ K.T)[:, :2] / cam[:, 2:]
        assert torch.allclose(uv, torch.tensor([[0, 0], [64, 0], [64, 48], [0, 48]], dtype=torch.float64), atol=1e-3)
    groups = [CameraGroup(traj, "#ff8c00", "path")]
    payload = viewport_payload(None, groups, fov_deg=60, aspect=4 / 3, median_depth=2.0, scene="b")
    assert payload["points"]["count"] == 0 and len(payload["cameras"][0]["path"]) == 30


def test_view_pose_round_trip_and_errors():
    w2c = CameraTrajectory.look_at([1.0, -0.5, 0.2], [0.0, 0.0, 3.0]).w2c[0].double()
    assert torch.allclose(parse_view_pose(json.dumps({"w2c": w2c.flatten().tolist(), "fov_deg": 60})), w2c)
    for bad in ("", "{}", '{"w2c": [1, 2]}', json.dumps({"w2c": [float("nan")] * 16}),
                json.dumps({"w2c": torch.ones(16).tolist()})):
        with pytest.raises(ValueError):
            parse_view_pose(bad)


def test_coverage_plot_marks_the_frames_below_the_threshold():
    coverage = [1.0, 0.8, 0.5, 0.25, 0.1]
    svg = coverage_svg(coverage)
    circles = re.findall(r'<circle[^>]*fill="(#[0-9a-f]+)" data-frame="(\d+)" data-coverage="([0-9.]+)"', svg)
    assert [int(f) for _, f, _ in circles] == [0, 1, 2, 3, 4]
    assert [float(c) for _, _, c in circles] == coverage
    assert [col == "#d33" for col, _, _ in circles] == [False, False, False, True, True]  # below 30 %
    text = coverage_summary(coverage)
    assert "frame 3" in text and "Warning" in text and "lowest 10%" in text
    assert "Warning" not in coverage_summary([1.0, 0.9])
    assert coverage_summary([]) == ""
