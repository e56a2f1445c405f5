"""PLY round trips, ASCII/big-endian reading, and errors on corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worldstereo.io.atomic import atomic_open, atomic_write
from worldstereo.io.ply import PlyFormatError, read_ply, write_ply


def _cloud(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "xyz": rng.normal(size=(n, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, size=(n, 3), dtype=np.uint8),
        "normals": rng.normal(size=(n, 3)).astype(np.float32),
    }


def test_round_trip_all_fields(tmp_path: Path) -> None:
    c = _cloud()
    extra = {"opacity": np.linspace(-1, 1, 50), "f_dc": np.arange(150, dtype=np.float32).reshape(50, 3),
             "label": np.arange(50, dtype=np.int32)}
    faces = np.array([[0, 1, 2], [3, 4, 5], [49, 48, 47]])
    f = tmp_path / "a.ply"
    write_ply(f, c["xyz"], c["rgb"], c["normals"], extra=extra, faces=faces)
    r = read_ply(f)
    np.testing.assert_array_equal(r["xyz"], c["xyz"])
    np.testing.assert_array_equal(r["rgb"], c["rgb"])
    assert r["rgb"].dtype == np.uint8
    np.testing.assert_array_equal(r["normals"], c["normals"])
    np.testing.assert_allclose(r["opacity"], extra["opacity"].astype(np.float32))
    assert r["opacity"].dtype == np.float64  # float64 extras are kept as double
    for j in range(3):
        np.testing.assert_array_equal(r[f"f_dc_{j}"], extra["f_dc"][:, j])
    np.testing.assert_array_equal(r["label"], extra["label"])
    np.testing.assert_array_equal(r["faces"], faces)
    assert not list(tmp_path.glob(".*")), "temporary file left behind"


def test_float_colours_and_tensors(tmp_path: Path) -> None:
    xyz = torch.rand(10, 3)
    rgb = torch.tensor([[0.0, 0.5, 1.0]] * 10)
    write_ply(tmp_path / "b.ply", xyz, rgb)
    r = read_ply(tmp_path / "b.ply")
    np.testing.assert_array_equal(r["rgb"][0], [0, 128, 255])
    np.testing.assert_array_equal(r["xyz"], xyz.numpy())
    assert "normals" not in r and "faces" not in r


def test_empty_cloud(tmp_path: Path) -> None:
    write_ply(tmp_path / "e.ply", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    r = read_ply(tmp_path / "e.ply")
    assert r["xyz"].shape == (0, 3) and r["rgb"].shape == (0, 3)


def test_header_is_standard(tmp_path: Path) -> None:
    write_ply(tmp_path / "h.ply", np.zeros((2, 3)), np.zeros((2, 3), np.uint8))
    head = (tmp_path / "h.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in head
    assert "element vertex 2" in head
    assert "property double x" in head and "property uchar red" in head
    # body size: 3 doubles + 3 uchar per vertex
    assert len((tmp_path / "h.ply").read_bytes().split(b"end_header\n")[1]) == 2 * (24 + 3)


def test_read_ascii_with_polygons(tmp_path: Path) -> None:
    text = """ply
format ascii 1.0
comment hand written
element vertex 4
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
element face 2
property list uchar int vertex_indices
end_header
0 0 0 255 0 0
1 0 0 0 255 0
1 1 0 0 0 255
0 1 0.5 10 20 30
3 0 1 2
4 0 1 2 3
"""
    (tmp_path / "a.ply").write_text(text)
    r = read_ply(tmp_path / "a.ply")
    np.testing.assert_allclose(r["xyz"][3], [0, 1, 0.5])
    np.testing.assert_array_equal(r["rgb"][3], [10, 20, 30])
    assert isinstance(r["faces"], list)
    np.testing.assert_array_equal(r["faces"][1], [0, 1, 2, 3])


def test_read_big_endian_and_variable_faces(tmp_path: Path) -> None:
    xyz = np.arange(12, dtype=">f4").reshape(4, 3)
    header = (b"ply\nformat binary_big_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
              b"property float z\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n")
    faces = (np.array([3], ">u1").tobytes() + np.array([0, 1, 2], ">i4").tobytes()
             + np.array([4], ">u1").tobytes() + np.array([0, 1, 2, 3], ">i4").tobytes())
    (tmp_path / "be.ply").write_bytes(header + xyz.tobytes() + faces)
    r = read_ply(tmp_path / "be.ply")
    np.testing.assert_array_equal(r["xyz"], xyz.astype(np.float32))
    assert [f.tolist() for f in r["faces"]] == [[0, 1, 2], [0, 1, 2, 3]]


@pytest.mark.parametrize(
    "content, match",
    [
        (b"hello world", "magic"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n", "end_header"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
         b"property float z\nend_header\n" + b"\x00" * 20, "truncated"),
        (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
         b"property float z\nend_header\n1 2 3\n4 5\n", "truncated"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float q\nend_header\n\0\0\0\0", "x/y/z"),
        (b"ply\nformat weird 1.0\nelement vertex 0\nend_header\n", "format"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quux x\nend_header\n1\n", "type"),
    ],
)
def test_corrupt_files_name_the_path(tmp_path: Path, content: bytes, match: str) -> None:
    f = tmp_path / "bad.ply"
    f.write_bytes(content)
    with pytest.raises(PlyFormatError, match=match) as info:
        read_ply(f)
    assert "bad.ply" in str(info.value)


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_ply(tmp_path / "nope.ply")
    with pytest.raises(ValueError, match="xyz"):
        write_ply(tmp_path / "x.ply", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="rgb"):
        write_ply(tmp_path / "x.ply", np.zeros((3, 3)), rgb=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="faces"):
        write_ply(tmp_path / "x.ply", np.zeros((3, 3)), faces=np.array([[0, 1, 5]]))
    with pytest.raises(ValueError, match="extra"):
        write_ply(tmp_path / "x.ply", np.zeros((3, 3)), extra={"x": np.zeros(3)})
    assert not (tmp_path / "x.ply").exists()


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    f = tmp_path / "out.txt"
    f.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(f) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert f.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_open(f, "w", encoding="utf-8") as fh:
        fh.write("new")
    assert f.read_text() == "new"
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "missing" / "x.txt"):
            pass
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(f, "a"):
            pass


def test_comment_newline_cannot_inject_header_lines(tmp_path: Path) -> None:
    p = tmp_path / "c.ply"
    with pytest.raises(ValueError, match="line break"):
        write_ply(p, np.zeros((2, 3)), comments=["ok\nelement vertex 999\nproperty float evil"])
    with pytest.raises(ValueError, match="line break|non-ASCII"):
        write_ply(p, np.zeros((2, 3)), comments=["é"])
    with pytest.raises(TypeError, match="list"):
        write_ply(p, np.zeros((2, 3)), comments="one string")
    with pytest.raises(ValueError, match="property names"):
        write_ply(p, np.zeros((2, 3)), extra={"a\nb": np.zeros(2)})
    assert not p.exists()
    write_ply(p, np.zeros((2, 3)), comments=["fine: a comment"])
    assert read_ply(p)["xyz"].shape == (2, 3)


def test_colours_out_of_range_are_refused_not_wrapped(tmp_path: Path) -> None:
    p = tmp_path / "c.ply"
    for rgb in (np.full((2, 3), 300), np.full((2, 3), -1), np.full((2, 3), 1.5), np.full((2, 3), 255.0)):
        with pytest.raises(ValueError, match="rgb"):
            write_ply(p, np.zeros((2, 3)), rgb=rgb)
    write_ply(p, np.zeros((2, 3)), rgb=np.full((2, 3), 1.0 + 5e-4))  # rounding excess: clipped
    assert (read_ply(p)["rgb"] == 255).all()
    ascii_ply = ("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
                 "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n0 0 0 {} 0 0\n")
    for bad in ("300", "-1", "2.5", "nan"):
        (tmp_path / "a.ply").write_text(ascii_ply.format(bad))
        with pytest.raises(PlyFormatError, match="red"):
            read_ply(tmp_path / "a.ply")
    (tmp_path / "a.ply").write_text(ascii_ply.format("255"))
    assert read_ply(tmp_path / "a.ply")["rgb"].tolist() == [[255, 0, 0]]


def test_point_cloud_colours_from_files(tmp_path: Path) -> None:
    from worldstereo.geometry import PointCloud
    from worldstereo.io.errors import InputFileError

    head = "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
    p = tmp_path / "p.ply"
    p.write_text(head + "property int red\nproperty int green\nproperty int blue\nend_header\n0 0 1 300 0 0\n")
    with pytest.raises(InputFileError, match="red/green/blue"):
        PointCloud.load_ply(p)
    p.write_text(head + "property float red\nproperty float green\nproperty float blue\nend_header\n0 0 1 -3 0 0\n")
    with pytest.raises(InputFileError, match="float colours"):
        PointCloud.load_ply(p)
    p.write_text(head + "property float red\nproperty float green\nproperty float blue\nend_header\n0 0 1 255 51 0\n")
    cloud = PointCloud.load_ply(p)  # float 0-255 colours: converted (with a logged warning)
    assert torch.allclose(cloud.rgb, torch.tensor([[1.0, 0.2, 0.0]]))
    p.write_text(head + "end_header\n0 0 3e39\n")
    with pytest.raises(InputFileError, match="float32"):
        PointCloud.load_ply(p)
    p.write_text(head.replace("float", "double") + "end_header\n0 0 3e39\n")  # fits a double, not float32
    with pytest.raises(InputFileError, match="float32"):
        PointCloud.load_ply(p)


@pytest.mark.parametrize("header, tail, match", [
    ("element vertex 1000000000000\nproperty float x\nproperty float y\nproperty float z\n", b"\0" * 12, "truncated"),
    ("element vertex 1\nproperty float x\nproperty float y\nproperty float z\nelement face 1000000000000\n"
     "property list uchar int vertex_indices\n", b"\0" * 12 + b"\3" + b"\0" * 12, "truncated"),
    ("element vertex 1\nproperty float x\nproperty float x\nproperty float z\n", b"\0" * 12, "twice"),
    ("element vertex 1\nproperty float x\nproperty float y\nproperty float z\nelement vertex 1\n", b"", "twice"),
    ("element vertex 1\nproperty float x\nproperty float y\nproperty float z\nelement empty 5\n", b"\0" * 12,
     "no properties"),
    ("element vertex 1\nproperty float x\nproperty float y\nproperty float z\nelement face 1\n"
     "property list float int vertex_indices\n", b"\0" * 20, "count type"),
    ("element vertex 1\nproperty float x\nproperty float y\nproperty float z\nelement face 1\n"
     "property list char int vertex_indices\n", b"\0" * 12 + b"\xff" + b"\0" * 12, "negative list length"),
])
def test_hostile_headers(tmp_path: Path, header: str, tail: bytes, match: str) -> None:
    p = tmp_path / "h.ply"
    p.write_bytes(f"ply\nformat binary_little_endian 1.0\n{header}end_header\n".encode() + tail)
    with pytest.raises(PlyFormatError, match=match) as info:
        read_ply(p)
    assert str(p) in str(info.value)
