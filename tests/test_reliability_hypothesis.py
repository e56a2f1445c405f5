"""Property-based tests (hypothesis) over every file parser of the library.

For arbitrary bytes, arbitrary JSON, near-valid documents (the right keys with arbitrary values)
and randomly corrupted valid files, every reader either returns a result or raises its documented
error: :class:`worldstereo.io.errors.InputFileError` (the CLI helpers may also raise their
``UsageError``). Never a ``KeyError``, ``TypeError``, ``ZeroDivisionError``, ``RecursionError``,
``UnicodeDecodeError``, ``BadZipFile``, numpy error or a crash.

The examples are derandomised (the same on every run) and few per parser, to keep the suite fast.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worldstereo.commands import UsageError
from worldstereo.io.errors import InputFileError

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(SETTINGS, max_examples=15)

_DIR = Path(tempfile.mkdtemp(prefix="ws-hypothesis-"))


def _file(name: str, data: bytes) -> Path:
    p = _DIR / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _expect_documented(fn: Callable[[], Any], *extra: type[BaseException]) -> None:
    try:
        fn()
    except (InputFileError, *extra):
        pass


# ------------------------------------------------------------------------------------ strategies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)
EYE4 = np.eye(4).tolist()
EYE3 = [[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]]


def _near(keys: dict[str, Any]) -> st.SearchStrategy[dict]:
    """Documents with the expected keys, each either its valid value or an arbitrary JSON value."""
    return st.fixed_dictionaries({k: st.one_of(st.just(v), json_values) for k, v in keys.items()})


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8")


reference_docs = _near({"extrinsic": [EYE4], "intrinsic": EYE3, "width": 48, "height": 32})
transforms_docs = _near({"fl_x": 40.0, "w": 48, "h": 32, "camera_angle_x": 1.0,
                         "frames": [{"transform_matrix": EYE4, "file_path": "a.png"}]})
frame_docs = st.fixed_dictionaries({
    "w": st.one_of(st.just(48), json_values), "h": st.one_of(st.just(32), json_values),
    "frames": st.lists(_near({"transform_matrix": EYE4, "fl_x": 40.0, "cx": 24.0, "cy": 16.0, "file_path": "x"}),
                       max_size=3)})
trajectory_docs = _near({"format": "worldstereo.camera_trajectory", "version": 1,
                         "convention": {"extrinsics": "world_to_camera", "axes": "opencv", "intrinsics": "pixels"},
                         "num_frames": 1, "height": 32, "width": 48, "dtype": "float32", "w2c": [EYE4], "K": [EYE3]})
worldmirror_docs = _near({"num_cameras": 1, "extrinsics": [{"camera_id": "a", "matrix": EYE4}],
                          "intrinsics": [{"camera_id": "a", "matrix": EYE3}]})
any_json = st.one_of(json_values.map(_dumps), reference_docs.map(_dumps), transforms_docs.map(_dumps),
                     frame_docs.map(_dumps), trajectory_docs.map(_dumps), worldmirror_docs.map(_dumps),
                     st.binary(max_size=300))


# ------------------------------------------------------------------------------------ camera files
@SETTINGS
@given(blob=any_json)
def test_camera_json_readers(blob):
    from worldstereo.camera import formats
    from worldstereo.commands.reconstruct import load_cameras
    from worldstereo.commands.render import load_trajectory_file
    from worldstereo.reconstruction import export

    p = _file("cams/camera.json", blob)
    _expect_documented(lambda: formats.read_reference_json(p, height=32, width=48))
    _expect_documented(lambda: formats.read_reference_json(p))
    _expect_documented(lambda: formats.read_transforms_json(p))
    _expect_documented(lambda: formats.load_trajectory(p))
    _expect_documented(lambda: export.read_transforms_json(p))
    _expect_documented(lambda: export.read_worldmirror_cameras(p))
    _expect_documented(lambda: export.read_worldmirror_cameras(p, height=32, width=48))
    _expect_documented(lambda: load_trajectory_file(p, image_size=(32, 48)), UsageError)
    _expect_documented(lambda: load_cameras(p, 32, 48), UsageError)


@SETTINGS
@given(doc=st.one_of(reference_docs, transforms_docs, frame_docs, trajectory_docs, json_values))
def test_camera_readers_of_parsed_documents(doc):
    """The readers that also take an already parsed dict raise InputFileError (option 'source')."""
    from worldstereo.camera import formats

    if isinstance(doc, dict):
        _expect_documented(lambda: formats.read_reference_json(doc, height=32, width=48))
        _expect_documented(lambda: formats.read_transforms_json(doc))


lines = st.lists(st.one_of(
    st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(["nan", "x", "1e999"])),
             min_size=17, max_size=21).map(" ".join),
    st.text(max_size=40)), max_size=5).map("\n".join)


@SETTINGS
@given(text=st.one_of(lines, st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_realestate10k(text):
    from worldstereo.camera import formats

    p = _file("re10k/cams.txt", text.encode("utf-8", "surrogateescape"))
    _expect_documented(lambda: formats.read_realestate10k(p, height=32, width=48))
    if "\n" in text:
        _expect_documented(lambda: formats.read_realestate10k(text, height=32, width=48))


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


arrays = st.one_of(
    st.just(np.eye(4)[None]), st.just(np.zeros((2, 2))), st.just(np.array(["a", "b"])), st.just(np.array(1.5)),
    st.just(np.full((1, 4, 4), np.nan)), st.just(np.ones((1, 3, 3))), st.just(np.array(32)),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20).map(np.array))
npz_blobs = st.one_of(
    st.dictionaries(st.sampled_from(["w2c", "intrinsics", "image_height", "image_width", "depth", "other"]), arrays,
                    max_size=4).map(_npz),
    st.binary(max_size=200))


def _corrupt(data: st.DataObject, blob: bytes) -> bytes:
    """Truncate the blob or overwrite a few random bytes."""
    b = bytearray(blob)
    if data.draw(st.booleans()):
        return bytes(b[: data.draw(st.integers(0, len(b)))])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    return bytes(b)


@SETTINGS
@given(blob=npz_blobs, data=st.data())
def test_npz_readers(blob, data):
    from worldstereo.camera import formats
    from worldstereo.commands.reconstruct import load_depth_input
    from worldstereo.depth.user import load_depth

    if blob and data.draw(st.booleans()):
        blob = _corrupt(data, blob)
    p = _file("npz/cams.npz", blob)
    _expect_documented(lambda: formats.read_npz(p))
    _expect_documented(lambda: load_depth(p))
    _expect_documented(lambda: load_depth_input(str(p), 2, None), UsageError)
    q = _file("npz/depth.npy", blob[:200] if blob.startswith(b"PK") else blob)
    _expect_documented(lambda: load_depth(q))


# ------------------------------------------------------------------------------------ PLY
def _valid_ply(fmt: str) -> bytes:
    from worldstereo.io.ply import write_ply

    p = _DIR / f"valid_{fmt}.ply"
    rng = np.random.default_rng(0)
    write_ply(p, rng.normal(size=(5, 3)), rng.integers(0, 255, (5, 3)).astype(np.uint8),
              faces=np.array([[0, 1, 2], [2, 3, 4]]))
    if fmt == "binary":
        return p.read_bytes()
    from worldstereo.io.ply import read_ply

    d = read_ply(p)
    head = ["ply", "format ascii 1.0", "element vertex 5", "property float x", "property float y", "property float z",
            "property uchar red", "property uchar green", "property uchar blue", "element face 2",
            "property list uchar int vertex_indices", "end_header"]
    rows = [" ".join([*map(str, d["xyz"][i]), *map(str, d["rgb"][i])]) for i in range(5)]
    return ("\n".join(head + rows + ["3 0 1 2", "3 2 3 4"]) + "\n").encode()


header_lines = st.lists(st.one_of(
    st.sampled_from(["format ascii 1.0", "format binary_little_endian 1.0", "format binary_big_endian 1.0",
                     "element vertex 3", "element vertex 1000000000000", "element face 2", "element vertex -1",
                     "property float x", "property float y", "property float z", "property uchar red",
                     "property list uchar int vertex_indices", "property list float int vertex_indices",
                     "property list char int vertex_indices", "property float x", "comment hi", "obj_info x",
                     "element empty 7"]),
    st.text(max_size=20)), max_size=12)


@SETTINGS
@given(choice=st.sampled_from(["ascii", "binary", "header"]), lines_=header_lines, tail=st.binary(max_size=200),
       data=st.data())
def test_ply_reader(choice, lines_, tail, data):
    from worldstereo.geometry import PointCloud
    from worldstereo.io.ply import read_ply

    if choice == "header":
        blob = ("ply\n" + "\n".join(lines_) + "\nend_header\n").encode("utf-8", "surrogateescape") + tail
    else:
        blob = _corrupt(data, _valid_ply(choice))
    p = _file("ply/x.ply", blob)
    _expect_documented(lambda: read_ply(p))
    _expect_documented(lambda: PointCloud.load_ply(p))


# ------------------------------------------------------------------------------------ images, video
def _valid_image(fmt: str, mode: str) -> bytes:
    from PIL import Image

    size = (12, 8)
    if mode == "F":
        img = Image.fromarray(np.linspace(0, 1, 96, dtype=np.float32).reshape(8, 12), mode="F")
    elif mode == "I;16":
        img = Image.fromarray(np.arange(96, dtype=np.uint16).reshape(8, 12) * 600)
    else:
        img = Image.new(mode, size)
    b = io.BytesIO()
    img.save(b, format=fmt)
    return b.getvalue()


@SETTINGS
@given(kind=st.sampled_from([("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "LA"), ("PNG", "I;16"),
                             ("JPEG", "RGB"), ("JPEG", "CMYK"), ("TIFF", "F"), ("TIFF", "RGB"), ("BMP", "RGB"),
                             ("GIF", "P"), ("WEBP", "RGB")]), data=st.data())
def test_image_reader(kind, data):
    from worldstereo.depth.user import load_depth
    from worldstereo.io.image import load_image

    blob = _corrupt(data, _valid_image(*kind)) if data.draw(st.booleans()) else data.draw(st.binary(max_size=300))
    p = _file("img/x.png", blob)
    _expect_documented(lambda: load_image(p))
    _expect_documented(lambda: load_depth(p))


_VIDEO: dict[str, bytes] = {}


def _valid_video() -> bytes:
    if "mp4" not in _VIDEO:
        from worldstereo.io.video import write_video

        p = _DIR / "valid.mp4"
        write_video(p, np.zeros((3, 16, 16, 3), np.uint8) + 100)
        _VIDEO["mp4"] = p.read_bytes()
    return _VIDEO["mp4"]


@FEW
@given(data=st.data())
def test_video_reader(data):
    from worldstereo.io.video import read_video

    blob = _corrupt(data, _valid_video()) if data.draw(st.booleans()) else data.draw(st.binary(max_size=400))
    p = _file("vid/x.mp4", blob)
    _expect_documented(lambda: read_video(p))


# ------------------------------------------------------------------------------------ COLMAP, memory bank
colmap_lines = st.lists(st.one_of(
    st.sampled_from(["# comment", "", "1 PINHOLE 48 32 40 40 24 16", "1 SIMPLE_RADIAL 48 32 40 24 16 0.1",
                     "2 WEIRD 1 1", "1 1 0 0 0 0 0 0 1 a.png", "1 0 0 0 0 0 0 0 1 a.png", "1 1 0 0 0 0 0 0 9 b.png",
                     "1 0.1 0.2 0.3 255 255 255 0", "1 nan 0 0 0 0 0 0 1 a.png", "1 PINHOLE 48.5 32 1 1 1 1"]),
    st.text(max_size=30)), max_size=6).map("\n".join)


@SETTINGS
@given(cams=colmap_lines, images=colmap_lines, points=colmap_lines)
def test_colmap_reader(cams, images, points):
    from worldstereo.reconstruction.export import read_colmap_text

    d = _DIR / "colmap"
    _file("colmap/cameras.txt", cams.encode("utf-8", "surrogateescape"))
    _file("colmap/images.txt", images.encode("utf-8", "surrogateescape"))
    _file("colmap/points3D.txt", points.encode("utf-8", "surrogateescape"))
    _expect_documented(lambda: read_colmap_text(d))


@SETTINGS
@given(blob=any_json, memory=st.one_of(st.none(), json_values.map(lambda v: {"entries": v})))
def test_memory_bank_reader(blob, memory):
    from worldstereo.memory import SpatialStereoMemory

    d = _DIR / "bank"
    (d / "images").mkdir(parents=True, exist_ok=True)
    _file("bank/cameras.json", blob)
    mem_path = d / "memory.json"
    if memory is None:
        mem_path.unlink(missing_ok=True)
    else:
        mem_path.write_text(json.dumps(memory, allow_nan=True))
    _expect_documented(lambda: SpatialStereoMemory.load_worldmirror(d))


@pytest.mark.parametrize("reader", ["reference", "transforms", "trajectory", "realestate", "npz", "ply", "image",
                                    "video", "colmap", "depth"])
def test_missing_files_raise_file_not_found(reader, tmp_path):
    from worldstereo.camera import formats
    from worldstereo.depth.user import load_depth
    from worldstereo.io.image import load_image
    from worldstereo.io.ply import read_ply
    from worldstereo.io.video import read_video
    from worldstereo.reconstruction.export import read_colmap_text

    missing = tmp_path / "missing"
    call = {"reference": lambda: formats.read_reference_json(missing), "transforms": lambda: formats.read_transforms_json(missing),
            "trajectory": lambda: formats.load_trajectory(missing),
            "realestate": lambda: formats.read_realestate10k(missing, height=2, width=2),
            "npz": lambda: formats.read_npz(missing), "ply": lambda: read_ply(missing), "image": lambda: load_image(missing),
            "video": lambda: read_video(missing), "colmap": lambda: read_colmap_text(missing),
            "depth": lambda: load_depth(tmp_path / "missing.npy")}[reader]
    with pytest.raises(FileNotFoundError, match="missing"):
        call()


@SETTINGS
@given(prompt=any_json, cams=any_json)
def test_reference_example_folder_readers(prompt, cams):
    """The readers of ``generate --inputs`` folders (prompt.json, camera.json, pano_bank)."""
    from PIL import Image

    from worldstereo.io.reference_inputs import read_pano_bank, read_prompt, read_reference_inputs

    root = _DIR / "example"
    if not (root / "image.png").exists():
        root.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 8)).save(root / "image.png")
        (root / "pano_bank" / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 8)).save(root / "pano_bank" / "images" / "0000.png")
    _file("example/prompt.json", prompt)
    _file("example/camera.json", cams)
    _file("example/pano_bank/cameras.json", cams)
    _expect_documented(lambda: read_prompt(root / "prompt.json", "long caption"))
    _expect_documented(lambda: read_pano_bank(root / "pano_bank"))
    _expect_documented(lambda: read_reference_inputs(root), FileNotFoundError)  # a file of the layout missing
