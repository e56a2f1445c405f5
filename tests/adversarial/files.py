"""Bad (and a few good) input files for the adversarial probe, written into one sandbox folder."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

H, W = 32, 48
EYE = np.eye(4).tolist()
K_OK = [[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]]


def _npy_header(shape: Any, descr: str = "<f4") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int, bit_depth: int = 8, color: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + _png_chunk(b"IEND", b""))


def _ply_ascii(n: int, rows: list[str], extra_header: str = "", props: str = "xyz_rgb") -> str:
    header = ["ply", "format ascii 1.0", extra_header, f"element vertex {n}", "property float x",
              "property float y", "property float z"]
    if props == "xyz_rgb":
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    return "\n".join(h for h in header if h) + "\n" + "\n".join(rows) + "\n"


def _zip_with(members: dict[str, bytes]) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return b.getvalue()


def _npz(**arrays: Any) -> bytes:
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


def make_files(d: Path) -> dict[str, Path]:
    """Write every probe file into ``d``; returns name -> path."""
    f: dict[str, Path] = {"dir": d}

    def put(name: str, data: bytes | str) -> Path:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            p.write_text(data, encoding="utf-8")
        else:
            p.write_bytes(data)
        f[name] = p
        return p

    def js(name: str, obj: Any) -> Path:
        return put(name, json.dumps(obj))

    # ---------------------------------------------------------------------------- images
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "img.png")
    f["img.png"] = d / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (H, 2 * H, 3), dtype=np.uint8)).save(d / "pano.png")
    f["pano.png"] = d / "pano.png"
    put("img_empty.png", b"")
    put("img_text.png", "hello, I am not a picture")
    good = (d / "img.png").read_bytes()
    put("img_trunc.png", good[: len(good) // 3])
    put("img_header_only.png", good[:40])
    put("img_bomb.png", _png_declaring(100_000, 100_000))
    put("img_wide.png", _png_declaring(2**31 - 1, 1))
    put("img_zero.png", _png_declaring(0, 0))
    put("img_badbits.png", _png_declaring(16, 16, bit_depth=3))
    put("img_garbage.jpg", os.urandom(2048) if False else bytes(range(256)) * 8)
    put("img_jpeg_trunc.jpg", _jpeg(rgb)[:200])
    Image.fromarray(np.full((H, W), 5.0, np.float32), mode="F").save(d / "img_float_big.tif")
    f["img_float_big.tif"] = d / "img_float_big.tif"
    Image.fromarray(np.full((H, W), np.nan, np.float32), mode="F").save(d / "img_float_nan.tif")
    f["img_float_nan.tif"] = d / "img_float_nan.tif"
    Image.fromarray(np.full((H, W), -7, np.int32), mode="I").save(d / "img_int_neg.tif")
    f["img_int_neg.tif"] = d / "img_int_neg.tif"
    Image.new("1", (1, 1)).save(d / "img_1x1.png")
    f["img_1x1.png"] = d / "img_1x1.png"
    Image.new("RGB", (1, 5000)).save(d / "img_thin.png")
    f["img_thin.png"] = d / "img_thin.png"
    (d / "img_dir.png").mkdir()
    f["img_dir.png"] = d / "img_dir.png"
    os.symlink("/etc/passwd", d / "img_link_passwd.png")
    f["img_link_passwd.png"] = d / "img_link_passwd.png"
    os.symlink(d / "img_selfloop.png", d / "img_selfloop.png")
    f["img_selfloop.png"] = d / "img_selfloop.png"
    os.symlink(d / "nowhere.png", d / "img_dangling.png")
    f["img_dangling.png"] = d / "img_dangling.png"
    put("img.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>")
    gif = io.BytesIO()
    Image.new("P", (W, H)).save(gif, format="GIF")
    put("img_anim.gif", gif.getvalue())
    put("img_tiff_garbage.tif", b"II*\x00" + b"\xff" * 200)
    put("img_bmp_lying.bmp", b"BM" + struct.pack("<IHHI", 100, 0, 0, 54) +
        struct.pack("<IiiHHIIiiII", 40, 1_000_000, 1_000_000, 1, 24, 0, 0, 0, 0, 0, 0))

    # ------------------------------------------------------------------------ trajectory JSON
    js("traj_ok.json", {"extrinsic": [EYE, EYE, EYE], "intrinsic": K_OK, "width": W, "height": H})
    put("traj_bom.json", "\ufeff" + json.dumps({"extrinsic": [EYE, EYE], "intrinsic": K_OK, "width": W, "height": H}))
    put("traj_dupkeys.json", '{"extrinsic": 5, "extrinsic": [' + json.dumps(EYE) + "]}")
    put("traj_bigint.json", '{"extrinsic": [[[1' + "0" * 5000 + ', 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]}')
    put("traj_deep_dict.json", '{"a":' * 100000 + "1" + "}" * 100000)
    put("traj_unicode.json", json.dumps({"extrinsic": [EYE], "intrinsic": K_OK, "width": "４８", "height": H}))
    put("traj_surrogate.json", '{"extrinsic": "\\ud800"}')
    put("traj_ws.json", "   \n\t  ")
    put("traj_null.json", "null")
    put("traj_number.json", "3")
    js("traj_empty_dict.json", {})
    js("traj_empty_list.json", {"extrinsic": []})
    js("traj_3x4.json", {"extrinsic": [[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]]})
    js("traj_K_str.json", {"extrinsic": [EYE], "intrinsic": "K", "width": W, "height": H})
    js("traj_K_zero.json", {"extrinsic": [EYE], "intrinsic": [[0, 0, 24], [0, 0, 16], [0, 0, 1]], "width": W, "height": H})
    js("traj_K_nested.json", {"extrinsic": [EYE], "intrinsic": [[[[K_OK]]]], "width": W, "height": H})
    js("traj_K_many.json", {"extrinsic": [EYE], "intrinsic": [K_OK] * 5, "width": W, "height": H})
    js("traj_neg_size.json", {"extrinsic": [EYE], "intrinsic": K_OK, "width": -48, "height": H})
    js("traj_zero_size.json", {"extrinsic": [EYE], "intrinsic": K_OK, "width": 0, "height": 0})
    js("traj_bool_size.json", {"extrinsic": [EYE], "intrinsic": K_OK, "width": True, "height": H})
    js("traj_huge_t.json", {"extrinsic": [[[1, 0, 0, 1e300], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]] * 2,
                            "intrinsic": K_OK, "width": W, "height": H})
    js("traj_scale.json", {"extrinsic": [[[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]]})
    js("traj_reflect.json", {"extrinsic": [[[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]})
    js("traj_bottom.json", {"extrinsic": [[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1]]]})
    js("traj_strings.json", {"extrinsic": [[["1", "0", "0", "0"], ["0", "1", "0", "0"], ["0", "0", "1", "0"],
                                            ["0", "0", "0", "1"]]]})
    js("traj_nulls.json", {"extrinsic": [[[None] * 4] * 4]})
    js("traj_bank_mixed.json", {"0": {"extrinsic": EYE, "intrinsic": K_OK}, "1": {"extrinsic": "x"}})
    js("traj_bank_empty.json", {"0": {}})
    # our format
    ours = {"format": "worldstereo.camera_trajectory", "version": 1,
            "convention": {"extrinsics": "world_to_camera", "axes": "opencv", "intrinsics": "pixels"},
            "w2c": [EYE, EYE], "K": [K_OK, K_OK], "height": H, "width": W}
    js("ours_ok.json", ours)
    js("ours_units.json", {**ours, "units": "furlongs"})
    js("ours_conv.json", {**ours, "convention": {"extrinsics": "camera_to_world", "axes": "opengl",
                                                  "intrinsics": "normalized"}})
    js("ours_conv_str.json", {**ours, "convention": "opencv"})
    js("ours_version_str.json", {**ours, "version": "1"})
    js("ours_version_float.json", {**ours, "version": 1.5})
    js("ours_format_list.json", {**ours, "format": ["worldstereo.camera_trajectory"]})
    js("ours_K_count.json", {**ours, "K": [K_OK] * 3})
    js("ours_no_w2c.json", {k: v for k, v in ours.items() if k != "w2c"})
    js("ours_fov_flag.json", {**ours, "fov_intrinsics": "yes"})
    js("ours_height_only.json", {**ours, "width": None})
    # transforms.json
    tr = {"fl_x": 40, "fl_y": 40, "cx": 24, "cy": 16, "w": W, "h": H,
          "frames": [{"file_path": "a.png", "transform_matrix": EYE}, {"file_path": "b.png", "transform_matrix": EYE}]}
    js("tr_ok.json", tr)
    js("tr_frames_dicts_missing.json", {**tr, "frames": [{"file_path": "a.png"}]})
    js("tr_frames_not_dicts.json", {**tr, "frames": [1, 2]})
    js("tr_fl_nan_str.json", {**tr, "fl_x": "NaN"})
    js("tr_fl_neg.json", {**tr, "fl_x": -40})
    js("tr_w_float.json", {**tr, "w": 47.5})
    js("tr_w_huge.json", {**tr, "w": 10**9, "h": 10**9})
    js("tr_no_intr.json", {"frames": [{"transform_matrix": EYE}]})
    js("tr_angle_nan.json", {"camera_angle_x": None, "frames": [{"transform_matrix": EYE}]})
    js("tr_angle_pi.json", {"camera_angle_x": 3.2, "w": W, "h": H, "frames": [{"transform_matrix": EYE}]})
    js("tr_per_frame_bad.json", {"w": W, "h": H, "frames": [{"transform_matrix": EYE, "fl_x": "x", "fl_y": 4,
                                                               "cx": 1, "cy": 1}]})
    js("tr_matrix_3x3.json", {**tr, "frames": [{"transform_matrix": np.eye(3).tolist()}]})
    js("tr_path_escape.json", {**tr, "frames": [{"file_path": "../../../../etc/passwd", "transform_matrix": EYE}]})
    # RealEstate10K
    put("re10k_ok.txt", "https://youtube\n0 0.8 1.2 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n"
                         "1 0.8 1.2 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n")
    put("re10k_short_row.txt", "url\n0 0.8 1.2 0.5 0.5 0 0\n")
    put("re10k_words.txt", "url\n0 a b c d e f g h i j k l m n o p q r\n")
    put("re10k_inf.txt", "url\n0 inf 1.2 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n")
    put("re10k_neg_f.txt", "url\n0 -0.8 1.2 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n")
    put("re10k_singular.txt", "url\n0 0.8 1.2 0.5 0.5 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
    put("re10k_only_url.txt", "https://youtube\n")
    put("re10k_long_line.txt", "url\n" + "1 " * 3_000_000 + "\n")
    put("re10k_crlf_nul.txt", "url\r\n0\x00 0.8\r\n")
    # npz cameras
    put("npz_ok.npz", _npz(w2c=np.stack([np.eye(4)] * 2), intrinsics=np.stack([np.array(K_OK)] * 2),
                           image_height=np.array(H), image_width=np.array(W)))
    put("npz_w2c_1d.npz", _npz(w2c=np.arange(16.0)))
    put("npz_w2c_nan.npz", _npz(w2c=np.full((2, 4, 4), np.nan)))
    put("npz_w2c_int8.npz", _npz(w2c=np.stack([np.eye(4, dtype=np.int8)] * 2)))
    put("npz_w2c_complex.npz", _npz(w2c=np.stack([np.eye(4, dtype=np.complex64)] * 2)))
    put("npz_w2c_str.npz", _npz(w2c=np.array(["a"] * 16).reshape(1, 4, 4)))
    put("npz_w2c_bool.npz", _npz(w2c=np.stack([np.eye(4, dtype=bool)] * 2)))
    put("npz_K_shape.npz", _npz(w2c=np.stack([np.eye(4)] * 2), intrinsics=np.ones((2, 2, 2)),
                                image_height=np.array(H), image_width=np.array(W)))
    put("npz_size_arr.npz", _npz(w2c=np.stack([np.eye(4)] * 2), intrinsics=np.stack([np.array(K_OK)] * 2),
                                 image_height=np.array([H, H]), image_width=np.array(W)))
    put("npz_zipbomb.npz", _zip_with({"w2c.npy": _npy_header((2, 4, 4), "<f8") + b"\x00" * (200 << 20)}))
    put("npz_empty_zip.npz", _zip_with({}))
    put("npz_not_npy_member.npz", _zip_with({"w2c.npy": b"not an npy"}))
    put("npz_fortran_trunc.npz", _zip_with({"w2c.npy": _npy_header((1, 4, 4), "<f8")[:-1] + b"\n" + b"\x00" * 8}))
    put("npz_big_endian.npz", _npz(w2c=np.stack([np.eye(4)] * 2).astype(">f8")))
    put("npz_trunc.npz", (d / "npz_ok.npz").read_bytes()[:-30])

    # ------------------------------------------------------------------------------ depth files
    np.save(d / "depth_ok.npy", np.full((H, W), 2.0, np.float32))
    f["depth_ok.npy"] = d / "depth_ok.npy"
    for name, arr in {
        "depth_int.npy": np.full((H, W), 2, np.int64),
        "depth_bool.npy": np.ones((H, W), bool),
        "depth_complex.npy": np.ones((H, W), np.complex64),
        "depth_f16_inf.npy": np.full((H, W), np.inf, np.float16),
        "depth_0d.npy": np.array(2.0),
        "depth_1d.npy": np.ones(H * W, np.float32),
        "depth_4d.npy": np.ones((1, 1, H, W), np.float32),
        "depth_partial_nan.npy": np.where(np.arange(H * W).reshape(H, W) % 2, np.nan, 2.0).astype(np.float32),
        "depth_empty.npy": np.zeros((0, W), np.float32),
        "depth_transposed.npy": np.full((W, H), 2.0, np.float32),
        "depth_huge_finite.npy": np.full((H, W), 3e38, np.float32),
        "depth_tiny.npy": np.full((H, W), 1e-30, np.float32),
        "depth_struct.npy": np.zeros((H, W), dtype=[("a", "<f4"), ("b", "<f4")]),
    }.items():
        np.save(d / name, arr)
        f[name] = d / name
    put("depth_ok.npz", _npz(depth=np.full((H, W), 2.0, np.float32)))
    put("depth_wrongkey.npz", _npz(foo=np.full((H, W), 2.0, np.float32)))
    put("depth_twokeys.npz", _npz(a=np.full((H, W), 2.0, np.float32), b=np.full((H, W), 3.0, np.float32)))
    put("depth_lying.npy", _npy_header((10**7, 10**7)) + b"\x00" * 64)
    put("depth_neg_shape.npy", _npy_header((-1, 5)) + b"\x00" * 64)
    put("depth_header_garbage.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': eval('1')}      \n")
    Image.fromarray(np.full((H, W), 2000, np.uint16)).save(d / "depth16.png")
    f["depth16.png"] = d / "depth16.png"
    Image.fromarray(np.zeros((H, W), np.uint16)).save(d / "depth16_zero.png")
    f["depth16_zero.png"] = d / "depth16_zero.png"
    Image.fromarray(np.full((H, W), 200, np.uint8)).save(d / "depth8.png")
    f["depth8.png"] = d / "depth8.png"
    put("depth.exr", b"v/1\x01" + b"\x00" * 100)
    put("depth.pfm", "Pf\n48 32\n-1.0\n")

    # ------------------------------------------------------------------------------------ PLY
    put("ply_ok.ply", _ply_ascii(2, ["0 0 1 255 0 0", "1 0 1 0 255 0"]))
    put("ply_empty.ply", "")
    put("ply_magic_only.ply", "ply\n")
    put("ply_no_end.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n")
    put("ply_huge_count.ply", _ply_ascii(10**12, ["0 0 1 1 2 3"]))
    put("ply_neg_count.ply", _ply_ascii(-5, []))
    put("ply_few_rows.ply", _ply_ascii(5, ["0 0 1 1 2 3"]))
    put("ply_words.ply", _ply_ascii(1, ["a b c d e f"]))
    put("ply_nan.ply", _ply_ascii(1, ["nan 0 1 1 2 3"]))
    put("ply_color_300.ply", _ply_ascii(1, ["0 0 1 300 2 3"]))
    put("ply_no_xyz.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float q\nend_header\n1\n")
    put("ply_bad_type.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n1\n")
    put("ply_bad_format.ply", "ply\nformat ebcdic 9.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    put("ply_binary_short.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\n"
                                b"property float y\nproperty float z\nend_header\n" + b"\x00" * 12)
    put("ply_binary_list.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                               b"property float y\nproperty float z\nelement face 1\n"
                               b"property list uint int vertex_indices\nend_header\n" + b"\x00" * 12 +
                               struct.pack("<I", 4_000_000_000))
    put("ply_dup_prop.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float x\n"
                            "property float y\nproperty float z\nend_header\n1 1 1 1\n")
    put("ply_header_huge.ply", "ply\nformat ascii 1.0\n" + "comment " + "x" * (20 << 20) + "\n")
    put("ply_binary_garbage.ply", b"ply\n" + bytes(range(256)) * 16)

    # ---------------------------------------------------------------------------------- videos
    put("vid_empty.mp4", b"")
    put("vid_garbage.mp4", bytes(range(256)) * 64)
    put("vid_ftyp_only.mp4", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
    put("vid_text.mp4", "I am a video, honest")
    _write_video(d / "vid_ok.mp4", 3, H, W)
    f["vid_ok.mp4"] = d / "vid_ok.mp4"
    _write_video(d / "vid_2f.mp4", 2, H, W)
    f["vid_2f.mp4"] = d / "vid_2f.mp4"
    _write_video(d / "vid_other_size.mp4", 3, 16, 16)
    f["vid_other_size.mp4"] = d / "vid_other_size.mp4"
    put("vid_trunc.mp4", (d / "vid_ok.mp4").read_bytes()[:300])
    _write_audio_only(d / "vid_audio_only.mp4")
    f["vid_audio_only.mp4"] = d / "vid_audio_only.mp4"

    # ---------------------------------------------------------------------------- COLMAP models
    def colmap(name: str, cameras: str, images: str, points: str | None = None) -> Path:
        folder = d / name
        folder.mkdir()
        (folder / "cameras.txt").write_text(cameras)
        (folder / "images.txt").write_text(images)
        if points is not None:
            (folder / "points3D.txt").write_text(points)
        f[name] = folder
        return folder

    cam_ok = "1 PINHOLE 48 32 40 40 24 16\n"
    img_rows = "".join(f"{i + 1} 1 0 0 0 0 0 {i * 0.01} 1 {i:03d}.png\n\n" for i in range(3))
    colmap("colmap_ok", cam_ok, img_rows)
    colmap("colmap_model_unknown", "1 FISHEYE_9000 48 32 40\n", img_rows)
    colmap("colmap_params_missing", "1 PINHOLE 48 32 40\n", img_rows)
    colmap("colmap_cam_ref_missing", cam_ok, "".join(f"{i + 1} 1 0 0 0 0 0 0 7 {i:03d}.png\n\n" for i in range(3)))
    colmap("colmap_dup_ids", cam_ok, "1 1 0 0 0 0 0 0 1 a.png\n\n1 1 0 0 0 0 0 0 1 b.png\n\n1 1 0 0 0 0 0 0 1 c.png\n\n")
    colmap("colmap_huge_id", "99999999999999999999999 PINHOLE 48 32 40 40 24 16\n", img_rows)
    colmap("colmap_name_escape", cam_ok, "".join(f"{i + 1} 1 0 0 0 0 0 0 1 ../../../x{i}.png\n\n" for i in range(3)))
    colmap("colmap_points_bad", cam_ok, img_rows, "1 a b c 1 2 3 0.5\n")
    colmap("colmap_size_neg", "1 PINHOLE -48 32 40 40 24 16\n", img_rows)
    colmap("colmap_binary", "\x00\x01\x02", "\xff\xfe")
    (d / "colmap_bin_only").mkdir()
    (d / "colmap_bin_only" / "cameras.bin").write_bytes(b"\x00" * 32)
    f["colmap_bin_only"] = d / "colmap_bin_only"

    # ------------------------------------------------------------------------- WorldMirror banks
    def worldmirror(name: str, doc: Any, images: dict[str, bytes] | None = None) -> Path:
        folder = d / name
        (folder / "images").mkdir(parents=True)
        (folder / "cameras.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
        for img_name, data in (images or {}).items():
            (folder / "images" / img_name).write_bytes(data)
        f[name] = folder
        return folder

    png = (d / "img.png").read_bytes()
    wm_ok = {"num_cameras": 1, "extrinsics": [{"camera_id": "a", "matrix": EYE}],
             "intrinsics": [{"camera_id": "a", "matrix": K_OK}]}
    worldmirror("wm_ok", wm_ok, {"a.png": png})
    worldmirror("wm_missing_image", wm_ok)
    worldmirror("wm_num_lies", {**wm_ok, "num_cameras": 10**9}, {"a.png": png})
    worldmirror("wm_ids_mismatch", {**wm_ok, "intrinsics": [{"camera_id": "b", "matrix": K_OK}]}, {"a.png": png})
    worldmirror("wm_abs_id", {"num_cameras": 1, "extrinsics": [{"camera_id": "/etc/passwd", "matrix": EYE}],
                              "intrinsics": [{"camera_id": "/etc/passwd", "matrix": K_OK}]}, {"a.png": png})
    worldmirror("wm_nul_id", {"num_cameras": 1, "extrinsics": [{"camera_id": "a\x00b", "matrix": EYE}],
                              "intrinsics": [{"camera_id": "a\x00b", "matrix": K_OK}]}, {"a.png": png})
    worldmirror("wm_matrix_bad", {**wm_ok, "extrinsics": [{"camera_id": "a", "matrix": [[1, 2], [3, 4]]}]},
                {"a.png": png})
    worldmirror("wm_id_int", {**wm_ok, "extrinsics": [{"camera_id": 5, "matrix": EYE}],
                              "intrinsics": [{"camera_id": 5, "matrix": K_OK}]}, {"a.png": png})
    worldmirror("wm_garbage_image", wm_ok, {"a.png": b"not a png"})
    worldmirror("wm_list_doc", [1, 2, 3])

    # --------------------------------------------------------------------------- jobs files
    img = str(d / "img.png")
    job = {"image": img, "trajectory": "orbit", "output": "a"}
    put("jobs_ok.jsonl", json.dumps(job) + "\n")
    put("jobs_empty.jsonl", "")
    put("jobs_blank_lines.jsonl", "\n\n   \n")
    put("jobs_garbage.jsonl", "{not json\n")
    put("jobs_list_line.jsonl", "[1, 2]\n")
    put("jobs_nan.jsonl", '{"image": "' + img + '", "trajectory": "orbit", "seed": NaN}\n')
    put("jobs_unknown_field.jsonl", json.dumps({**job, "colour": "red"}) + "\n")
    put("jobs_missing_image.jsonl", json.dumps({"trajectory": "orbit"}) + "\n")
    put("jobs_image_missing_file.jsonl", json.dumps({**job, "image": str(d / "nope.png")}) + "\n")
    put("jobs_image_dir.jsonl", json.dumps({**job, "image": str(d)}) + "\n")
    put("jobs_output_escape.jsonl", json.dumps({**job, "output": "../escape"}) + "\n")
    put("jobs_output_abs.jsonl", json.dumps({**job, "output": "/tmp/escape"}) + "\n")
    put("jobs_output_dup.jsonl", json.dumps(job) + "\n" + json.dumps({**job, "output": "A"}) + "\n")
    put("jobs_output_records.jsonl", json.dumps({**job, "output": ".worldstereo-batch"}) + "\n")
    put("jobs_seed_neg.jsonl", json.dumps({**job, "seed": -1}) + "\n")
    put("jobs_seed_float.jsonl", json.dumps({**job, "seed": 1.5}) + "\n")
    put("jobs_frames_huge.jsonl", json.dumps({**job, "frames": 10**9}) + "\n")
    put("jobs_height_odd.jsonl", json.dumps({**job, "height": 40, "width": 48}) + "\n")
    put("jobs_height_only.jsonl", json.dumps({**job, "height": 32}) + "\n")
    put("jobs_preset_unknown.jsonl", json.dumps({**job, "trajectory": "sideways"}) + "\n")
    put("jobs_preset_arg_bad.jsonl", json.dumps({**job, "preset_args": {"warp": 9}}) + "\n")
    put("jobs_preset_arg_nan.jsonl", '{"image": "' + img + '", "trajectory": "orbit", "preset_args": {"azimuth_deg": 1e999}}\n')
    put("jobs_preset_arg_huge.jsonl", json.dumps({**job, "preset_args": {"azimuth_deg": 1e300}}) + "\n")
    put("jobs_traj_file_bad.jsonl", json.dumps({**job, "trajectory": str(d / "traj_scale.json")}) + "\n")
    put("jobs_traj_file_missing.jsonl", json.dumps({**job, "trajectory": "./nope.json"}) + "\n")
    put("jobs_depth_missing.jsonl", json.dumps({**job, "depth": str(d / "nope.npy")}) + "\n")
    put("jobs_depth_bad.jsonl", json.dumps({**job, "depth": str(d / "depth_lying.npy")}) + "\n")
    put("jobs_variant_mix.jsonl", json.dumps({**job, "variant": "worldstereo-camera"}) + "\n" +
        json.dumps({**job, "output": "b", "variant": "worldstereo-memory"}) + "\n")
    put("jobs_binary.jsonl", bytes(range(256)) * 4)
    put("jobs_deep.jsonl", "[" * 100000 + "]" * 100000 + "\n")
    put("jobs_huge_line.jsonl", json.dumps({**job, "prompt": "x" * (2 << 20)}) + "\n")
    put("jobs_bool_for_int.jsonl", json.dumps({**job, "frames": True}) + "\n")
    put("jobs_guidance_str.jsonl", json.dumps({**job, "guidance": "5"}) + "\n")
    put("jobs_utf16.jsonl", (json.dumps(job) + "\n").encode("utf-16"))
    put("jobs_many_errors.jsonl", "".join(json.dumps({**job, "output": f"j{i}", "seed": -i - 1}) + "\n"
                                          for i in range(500)))
    put("jobs_image_garbage.jsonl", json.dumps({**job, "image": str(d / "img_text.png")}) + "\n")
    put("jobs_fov_zero.jsonl", json.dumps({**job, "fov": 0}) + "\n")
    put("jobs_dup_key.jsonl", '{"image": "' + img + '", "trajectory": "orbit", "seed": 1, "seed": -3}\n')

    # ----------------------------------------------------------------- reference example folders
    def example(name: str, files: dict[str, bytes | str]) -> Path:
        root = d / name
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, str):
                p.write_text(data)
            else:
                p.write_bytes(data)
        root.mkdir(exist_ok=True)
        f[name] = root
        return root

    cam = (d / "traj_ok.json").read_text()
    vid = (d / "vid_ok.mp4").read_bytes()
    example("ex_images_ok", {"image.png": png, "prompt.json": '{"long caption": "a room"}', "camera.json": cam})
    example("ex_prompt_str", {"image.png": png, "prompt.json": '"just a string"', "camera.json": cam})
    example("ex_prompt_caption_int", {"image.png": png, "prompt.json": '{"long caption": 5}', "camera.json": cam})
    example("ex_camera_bad", {"image.png": png, "prompt.json": '{"long caption": "a"}',
                              "camera.json": (d / "traj_scale.json").read_text()})
    example("ex_camera_dir", {"image.png": png, "prompt.json": '{"long caption": "a"}', "camera.json/x": "1"})
    example("ex_image_bad", {"image.png": b"nope", "prompt.json": '{"long caption": "a"}', "camera.json": cam})
    example("ex_empty", {})
    recon_traj = {"camera.json": cam, "render.mp4": vid, "render_mask.mp4": vid}
    example("ex_recon_vid_garbage", {"image.png": png, "prompt.json": '{"long caption": "a"}',
                                     **{f"renders/traj_eloop/{k}": (v if k == "camera.json" else b"\x00" * 64)
                                        for k, v in recon_traj.items()}})
    example("ex_recon_frames_mismatch", {"image.png": png, "prompt.json": '{"long caption": "a"}',
                                         "renders/traj_eloop/camera.json": cam,
                                         "renders/traj_eloop/render.mp4": (d / "vid_2f.mp4").read_bytes(),
                                         "renders/traj_eloop/render_mask.mp4": vid})
    example("ex_recon_no_mask", {"image.png": png, "prompt.json": '{"long caption": "a"}',
                                 "renders/traj_eloop/camera.json": cam, "renders/traj_eloop/render.mp4": vid})
    example("ex_pano_bad_cams", {"pano_bank/images/0.png": png, "pano_bank/cameras.json": '{"num_cameras": "many"}',
                                 "view0/traj0/camera.json": cam, "view0/traj0/render.mp4": vid,
                                 "view0/traj0/render_mask.mp4": vid, "view0/traj0/traj_caption.json": '{"a": 1}',
                                 "view0/start_frame.png": png})
    os.symlink("/etc", d / "ex_link_out")
    f["ex_link_out"] = d / "ex_link_out"
    ex_sym = example("ex_images_symlink_img", {"prompt.json": '{"long caption": "a"}', "camera.json": cam})
    os.symlink("/etc/hostname", ex_sym / "image.png")

    # ------------------------------------------------------------------------ model folders
    model_dir = d / "model_configs"
    model_dir.mkdir()
    f["model_configs"] = model_dir

    # ------------------------------------------------------------------------ output folders
    put("out_is_file", "precious")
    (d / "out_foreign").mkdir()
    (d / "out_foreign" / "thesis.txt").write_text("precious")
    f["out_foreign"] = d / "out_foreign"
    (d / "out_dotfile").mkdir()
    (d / "out_dotfile" / ".bashrc").write_text("precious")
    f["out_dotfile"] = d / "out_dotfile"
    (d / "out_fake_manifest").mkdir()
    (d / "out_fake_manifest" / ".worldstereo-output.json").write_text("{garbage")
    (d / "out_fake_manifest" / "notes.txt").write_text("precious")
    f["out_fake_manifest"] = d / "out_fake_manifest"
    (d / "out_lying_manifest").mkdir()
    (d / "out_lying_manifest" / ".worldstereo-output.json").write_text(json.dumps(
        {"format": "worldstereo.output_folder", "version": 1, "owner": "render",
         "files": {"notes.txt": {"size": 8}, "../../etc/passwd": {"size": 1}}}))
    (d / "out_lying_manifest" / "notes.txt").write_text("precious")
    f["out_lying_manifest"] = d / "out_lying_manifest"
    os.symlink("/etc", d / "out_link_etc")
    f["out_link_etc"] = d / "out_link_etc"
    os.symlink(d / "out_loop", d / "out_loop")
    f["out_loop"] = d / "out_loop"
    return f


def _jpeg(rgb: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, format="JPEG")
    return b.getvalue()


def _write_video(path: Path, frames: int, h: int, w: int) -> None:
    import torch

    from worldstereo.io.video import write_video

    g = torch.Generator().manual_seed(frames)
    write_video(path, torch.rand(frames, 3, h, w, generator=g), fps=4)


def _write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
