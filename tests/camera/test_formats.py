"""Pose-file converters: exact round trips, the reference example files, and analytic conversions."""

import json
import math

import numpy as np
import pytest
import torch

from worldstereo.camera import CameraTrajectory
from worldstereo.camera.formats import (
    TRAJECTORY_SCHEMA_PATH,
    read_npz,
    read_realestate10k,
    read_reference_json,
    read_transforms_json,
    validate_trajectory_document,
)


def _example_cameras(examples_dir):
    files = sorted(examples_dir.glob("**/camera*.json"))
    assert files, "no camera files in the examples"
    return files


def _traj():
    t = CameraTrajectory.orbit(azimuth_deg=40.0, num_frames=6, elevation_deg=15.0, depth=1.5, height=96, width=160)
    K = t.K.clone()
    K[:, 0, 0] *= torch.linspace(1.0, 1.3, 6)  # per-frame intrinsics
    K[:, 1, 1] *= torch.linspace(1.0, 1.2, 6)
    return CameraTrajectory(t.w2c, K, 96, 160)


def test_every_reference_camera_json_round_trips_exactly(examples_dir, tmp_path):
    for f in _example_cameras(examples_dir):
        original = json.loads(f.read_text())
        t = CameraTrajectory.from_reference_json(f, dtype=torch.float64)
        bank = "extrinsic" not in original
        n = len(original) if bank else len(original["extrinsic"])
        assert len(t) == n, f
        out_path = tmp_path / "camera.json"
        out = t.to_reference_json(out_path, layout="bank" if bank else "trajectory")
        reread = json.loads(out_path.read_text())
        assert reread == out
        if bank:
            for k in original:
                assert reread[k]["extrinsic"] == original[k]["extrinsic"], (f, k)
                assert reread[k]["intrinsic"] == original[k]["intrinsic"], (f, k)
        else:
            assert reread["extrinsic"] == original["extrinsic"], f
            assert reread["intrinsic"] == original["intrinsic"], f
        # float32 loading (default) agrees to float32 precision, and sizes come out right
        t32 = CameraTrajectory.from_reference_json(f)
        assert t32.w2c.dtype == torch.float32
        torch.testing.assert_close(t32.w2c.double(), t.w2c, atol=1e-6, rtol=0)
        if "width" in original:
            assert (t.height, t.width) == (original["height"], original["width"])


def test_image_size_comes_from_the_image_file(examples_dir):
    from PIL import Image

    f = sorted(examples_dir.glob("images/*/camera.json"))[0]
    w, h = Image.open(f.parent / "image.png").size
    t = CameraTrajectory.from_reference_json(f)
    assert (t.height, t.width) == (h, w)
    # the principal point of the examples is the image centre
    assert float(t.K[0, 0, 2]) == w / 2 and float(t.K[0, 1, 2]) == h / 2
    t2 = CameraTrajectory.from_reference_json(json.loads(f.read_text()), image_path=f.parent / "image.png")
    assert t2.allclose(t, atol=0)
    t3 = CameraTrajectory.from_reference_json(json.loads(f.read_text()), height=2 * h, width=2 * w)
    assert (t3.height, t3.width) == (2 * h, 2 * w)
    with pytest.raises(ValueError, match="height/width"):
        CameraTrajectory.from_reference_json(json.loads(f.read_text()))  # a dict: no image to look at
    bank = next(examples_dir.glob("panorama/*/pano_bank/cameras.json"))
    tb = CameraTrajectory.from_reference_json(bank)
    assert (tb.height, tb.width) == (480, 832) and len(tb) == 27
    assert tb.centers.abs().max() < 1e-6  # all bank cameras at the origin


def test_reference_json_first_pose_is_translated_identity(examples_dir):
    f = sorted(examples_dir.glob("images/*/camera.json"))[0]
    t = CameraTrajectory.from_reference_json(f)
    torch.testing.assert_close(t.w2c[0, :3, :3], torch.eye(3))
    d = float(t.w2c[0, 2, 3])
    assert d > 0 and abs(float(t.centers[0, 2]) + d) < 1e-6  # world origin at depth d in front


def test_reference_json_bad_input(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match="source"):
        CameraTrajectory.from_reference_json(p)
    p.write_text(json.dumps({"extrinsic": [[[1, 0, 0], [0, 1, 0]]], "intrinsic": [], "width": 4, "height": 4}))
    with pytest.raises(ValueError, match="extrinsic"):
        CameraTrajectory.from_reference_json(p)
    with pytest.raises(FileNotFoundError, match="source"):
        CameraTrajectory.from_reference_json(tmp_path / "missing.json")


def test_transforms_json_round_trip_and_opengl_convention(tmp_path):
    t = _traj()
    path = tmp_path / "transforms.json"
    doc = t.to_transforms_json(path)
    assert "fl_x" in doc["frames"][0]  # per-frame intrinsics because they differ
    back = CameraTrajectory.from_transforms_json(path)
    assert back.allclose(t, atol=1e-6)
    # analytic: an OpenGL camera at (1, 2, 3) looking down -z (identity rotation) is an OpenCV camera
    # with flipped y/z axes
    doc = {"fl_x": 100.0, "fl_y": 110.0, "cx": 60.0, "cy": 40.0, "w": 120, "h": 80,
           "frames": [{"file_path": "a.png", "transform_matrix": [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3],
                                                                  [0, 0, 0, 1]]}]}
    s = CameraTrajectory.from_transforms_json(doc)
    torch.testing.assert_close(s.centers[0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(s.c2w[0, :3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])))
    assert (s.height, s.width) == (80, 120) and float(s.K[0, 1, 1]) == 110.0
    # instant-ngp: camera_angle_x
    ngp = {"camera_angle_x": math.radians(90.0), "w": 200, "h": 100, "frames": doc["frames"]}
    assert abs(float(CameraTrajectory.from_transforms_json(ngp).K[0, 0, 0]) - 100.0) < 1e-4
    with pytest.raises(ValueError, match="source"):
        CameraTrajectory.from_transforms_json({"frames": []})
    with pytest.raises(ValueError, match="focal"):
        CameraTrajectory.from_transforms_json({"w": 4, "h": 4, "frames": doc["frames"]})


def test_realestate10k_round_trip_and_parsing(tmp_path):
    t = _traj()
    path = tmp_path / "cams.txt"
    text = t.to_realestate10k(path, url="https://www.youtube.com/watch?v=abc", timestamps=range(0, 600, 100))
    assert path.read_text() == text and text.startswith("https://")
    back = CameraTrajectory.from_realestate10k(path, height=96, width=160)
    assert back.allclose(t, atol=1e-6)
    line = "33400 0.5 0.8 0.5 0.5 0 0 1 0 0 0.1 0 1 0 0.2 0 0 1 0.3"
    one = CameraTrajectory.from_realestate10k("url\n" + line + "\n", height=100, width=200)
    torch.testing.assert_close(one.K[0], torch.tensor([[100.0, 0, 100], [0, 80.0, 50], [0, 0, 1]]))
    torch.testing.assert_close(one.w2c[0, :3, 3], torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="source"):
        CameraTrajectory.from_realestate10k("url\n1 2 3\n", height=10, width=10)


def test_npz_round_trip(tmp_path):
    t = _traj().to(dtype=torch.float64)
    path = tmp_path / "cams.npz"
    t.to_npz(path)
    with np.load(path) as z:
        assert set(z.files) == {"w2c", "intrinsics", "image_height", "image_width"}
    back = CameraTrajectory.from_npz(path)
    assert back.w2c.dtype == torch.float64 and back.allclose(t, atol=0)
    no_k = CameraTrajectory(t.w2c)
    no_k.to_npz(path)
    assert not CameraTrajectory.from_npz(path).has_intrinsics


def test_own_json_round_trip_is_exact_and_self_describing(tmp_path):
    for t in (_traj(), _traj().to(dtype=torch.float64), CameraTrajectory(_traj().w2c)):
        path = tmp_path / "traj.json"
        t.save(path)
        doc = json.loads(path.read_text())
        assert doc["convention"] == {"extrinsics": "world_to_camera", "axes": "opencv", "intrinsics": "pixels"}
        back = CameraTrajectory.load(path)
        assert back.w2c.dtype == t.w2c.dtype and back.allclose(t, atol=0)
        assert torch.equal(back.w2c, t.w2c)
    assert not list(tmp_path.glob(".traj.json*"))  # no temporary files left behind


def test_schema_file_is_shipped_and_consistent(tmp_path):
    schema = json.loads(TRAJECTORY_SCHEMA_PATH.read_text())
    assert schema["properties"]["format"]["const"] == "worldstereo.camera_trajectory"
    path = tmp_path / "t.json"
    _traj().save(path)
    doc = json.loads(path.read_text())
    assert set(doc) <= set(schema["properties"]) and set(schema["required"]) <= set(doc)
    for key, bad in [("format", "other"), ("convention", {"extrinsics": "camera_to_world", "axes": "opencv",
                                                           "intrinsics": "pixels"}),
                     ("w2c", [[1, 2]]), ("K", [[[1, 0, 0]]]), ("height", -3), ("num_frames", 99)]:
        broken = dict(doc, **{key: bad})
        with pytest.raises(ValueError, match=key):
            validate_trajectory_document(broken)
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=key):
            CameraTrajectory.load(path)


def test_failed_write_leaves_existing_file(tmp_path):
    path = tmp_path / "traj.json"
    _traj().save(path)
    before = path.read_text()
    with pytest.raises(ValueError, match="intrinsics"):
        CameraTrajectory(_traj().w2c).to_reference_json(path)
    assert path.read_text() == before


# ------------------------------------------------------------------------------ hostile files
_EYE = np.eye(4).tolist()
_K = [[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("text, field, match", [
    (json.dumps({"extrinsic": [_EYE], "intrinsic": _K, "width": 48.5, "height": 32}), "width", "fractional"),
    (json.dumps({"extrinsic": [_EYE], "intrinsic": _K, "width": "48", "height": 32}), "width", "expected an integer"),
    (json.dumps({"extrinsic": [_EYE], "intrinsic": _K, "width": 10**9, "height": 32}), "width", "<= 65536"),
    ('{"extrinsic": [[[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]}', None, "NaN"),
    (json.dumps({"extrinsic": [[[1, 0], [0]]]}), "extrinsic", "matrices"),
    ("[" * 50000 + "]" * 50000, None, "nested too deeply"),
])
def test_reference_json_refuses_silent_changes(tmp_path, text, field, match):
    from worldstereo.io.errors import InputFileError

    p = tmp_path / "camera.json"
    p.write_text(text)
    with pytest.raises(InputFileError, match=match) as info:
        read_reference_json(p)
    assert str(p) in str(info.value) and (field is None or info.value.field == field)


def test_transforms_json_hostile_values(tmp_path):
    from worldstereo.io.errors import InputFileError

    base = {"w": 48, "h": 32, "frames": [{"transform_matrix": _EYE}]}
    for extra, match in (({"camera_angle_x": 0}, "field of view"), ({"fl_x": -5}, "positive"),
                         ({"fl_x": 40, "w": 4.5}, "fractional"), ({"fl_x": 40, "cx": "mid"}, "expected a number"),
                         ({"fl_x": 40, "frames": [{"transform_matrix": [[0] * 4] * 4}]}, "last row|rotation|rigid"),
                         ({"fl_x": 40, "frames": [1]}, "transform_matrix")):
        p = tmp_path / "transforms.json"
        p.write_text(json.dumps({**base, **extra}))
        with pytest.raises(InputFileError, match=match):
            read_transforms_json(p)
        with pytest.raises(InputFileError, match=f"source.*({match})"):  # an in-memory dict names 'source'
            read_transforms_json({**base, **extra})


def test_realestate10k_and_npz_hostile_values(tmp_path):
    from worldstereo.io.errors import InputFileError

    p = tmp_path / "cams.txt"
    for line in (" ".join(["nan"] * 19), " ".join(["1e999"] * 19), "0 " * 19):
        p.write_text("url\n" + line + "\n")
        with pytest.raises(InputFileError, match="line 2"):
            read_realestate10k(p, height=32, width=48)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputFileError, match="UTF-8"):
        read_realestate10k(p, height=32, width=48)
    z = tmp_path / "cams.npz"
    np.savez(z, w2c=np.eye(4)[None], intrinsics=np.array(_K)[None], image_height=np.array(32.5), image_width=48)
    with pytest.raises(InputFileError, match="image_height.*fractional"):
        read_npz(z)
    np.savez(z, w2c=np.array([{"pickled": True}], dtype=object))
    with pytest.raises(InputFileError, match="pickle"):
        read_npz(z)
