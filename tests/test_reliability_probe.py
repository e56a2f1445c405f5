"""Adversarial probe of the command line: many bad invocations, each must be answered with exit
status 2 and a one-line ``error: ...`` message naming the culprit — before any heavy work (no model
is ever loaded here, no depth model is downloaded: every case fails on its own input first) — and
must leave the file system as it was (no stray output folder, no staging leftovers).

Every case runs :func:`worldstereo.cli.main` in-process (fast); ``test_probe_share`` reports the
share of cases answered cleanly, and the other tests require all of them to be.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldstereo.cli import main


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    expect: str = ""  # a substring the message must contain (the option / file it names)


def _png(path: Path, size=(48, 32), mode="RGB", value=128) -> Path:
    Image.new(mode, size, value if mode != "RGB" else (value, 60, 200)).save(path)
    return path


def _npy_header(shape, descr="<f4") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe")
    f: dict[str, Path] = {"dir": d}
    f["img"] = _png(d / "img.png")
    f["tiny"] = _png(d / "tiny.png", size=(1, 1))
    f["img16"] = d / "img16.png"
    Image.fromarray(np.full((32, 48), 40000, np.uint16)).save(f["img16"])
    f["empty"] = d / "empty.png"
    f["empty"].write_bytes(b"")
    f["text_png"] = d / "text.png"
    f["text_png"].write_text("not an image")
    good = d / "good.png"
    _png(good, size=(96, 64))
    f["truncated"] = d / "truncated.png"
    f["truncated"].write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    f["bomb"] = d / "bomb.png"  # a valid PNG header declaring 60000 x 60000 pixels
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = lambda t, data: struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data))  # noqa: E731
    f["bomb"].write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
                          + chunk(b"IEND", b""))
    f["float_tif"] = d / "float.tif"
    Image.fromarray(np.full((32, 48), 3.5, np.float32), mode="F").save(f["float_tif"])
    f["int32_tif"] = d / "int32.tif"
    Image.fromarray(np.full((32, 48), 10**7, np.int32), mode="I").save(f["int32_tif"])
    # trajectories
    eye = np.eye(4).tolist()
    f["traj_ok"] = d / "traj.json"
    f["traj_ok"].write_text(json.dumps({"extrinsic": [eye, eye], "intrinsic": [[40, 0, 24], [0, 40, 16], [0, 0, 1]],
                                        "width": 48, "height": 32}))
    def js(name, obj=None, text=None):
        p = d / name
        p.write_text(text if text is not None else json.dumps(obj))
        return p
    f["j_empty"] = js("j_empty.json", text="")
    f["j_garbage"] = js("j_garbage.json", text="{not json")
    f["j_list"] = js("j_list.json", [1, 2, 3])
    f["j_deep"] = js("j_deep.json", text="[" * 200000 + "]" * 200000)
    f["j_nan"] = js("j_nan.json", text='{"extrinsic": [[[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]}')
    f["j_inf"] = js("j_inf.json", text='{"extrinsic": [[[1e999, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]}')
    f["j_ragged"] = js("j_ragged.json", {"extrinsic": [[[1, 0], [0]]]})
    f["j_types"] = js("j_types.json", {"extrinsic": "identity"})
    f["j_badrot"] = js("j_badrot.json", {"extrinsic": [[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]})
    f["j_fracw"] = js("j_fracw.json", {"extrinsic": [eye], "intrinsic": [[40, 0, 24], [0, 40, 16], [0, 0, 1]],
                                       "width": 48.5, "height": 32})
    f["j_strw"] = js("j_strw.json", {"extrinsic": [eye], "intrinsic": [[40, 0, 24], [0, 40, 16], [0, 0, 1]],
                                     "width": "48", "height": 32})
    f["j_hugew"] = js("j_hugew.json", {"extrinsic": [eye], "intrinsic": [[40, 0, 24], [0, 40, 16], [0, 0, 1]],
                                       "width": 10**12, "height": 32})
    f["j_negK"] = js("j_negK.json", {"extrinsic": [eye], "intrinsic": [[-40, 0, 24], [0, 40, 16], [0, 0, 1]],
                                     "width": 48, "height": 32})
    f["j_tr_angle0"] = js("j_tr_angle0.json", {"camera_angle_x": 0, "w": 48, "h": 32,
                                               "frames": [{"transform_matrix": eye}]})
    f["j_tr_noframes"] = js("j_tr_noframes.json", {"frames": []})
    f["j_tr_frames_str"] = js("j_tr_frames_str.json", {"frames": "all"})
    f["j_tr_w"] = js("j_tr_w.json", {"fl_x": 40, "w": [48], "h": 32, "frames": [{"transform_matrix": eye}]})
    f["j_tr_sing"] = js("j_tr_sing.json", {"fl_x": 40, "w": 48, "h": 32, "frames": [{"transform_matrix": [[0] * 4] * 4}]})
    f["j_ours_bad"] = js("j_ours_bad.json", {"format": "worldstereo.camera_trajectory", "version": 99})
    f["j_ours_w"] = js("j_ours_w.json", {"format": "worldstereo.camera_trajectory", "version": 1,
                                         "convention": {"extrinsics": "world_to_camera", "axes": "opencv",
                                                        "intrinsics": "pixels"}, "w2c": "x"})
    f["j_bank_bad"] = js("j_bank_bad.json", {"0000": {"extrinsic": [1, 2, 3]}})
    f["j_utf16"] = d / "j_utf16.json"
    f["j_utf16"].write_bytes(json.dumps({"extrinsic": [eye]}).encode("utf-16"))
    f["j_binary"] = d / "j_binary.json"
    f["j_binary"].write_bytes(bytes(range(256)) * 4)
    f["t_txt_bad"] = d / "t_bad.txt"
    f["t_txt_bad"].write_text("url\n1 2 3\n")
    f["t_txt_nan"] = d / "t_nan.txt"
    f["t_txt_nan"].write_text("url\n" + " ".join(["nan"] * 19) + "\n")
    f["t_txt_empty"] = d / "t_empty.txt"
    f["t_txt_empty"].write_text("")
    f["t_txt_bin"] = d / "t_bin.txt"
    f["t_txt_bin"].write_bytes(b"\xff\xfe\x00\x01" * 100)
    f["n_garbage"] = d / "n_garbage.npz"
    f["n_garbage"].write_bytes(b"PK\x03\x04 not a zip at all")
    b = io.BytesIO()
    np.savez(b, w2c=np.eye(4)[None], intrinsics=np.array([[40, 0, 24], [0, 40, 16], [0, 0, 1.0]])[None],
             image_height=np.array(32.5), image_width=np.array(48))
    f["n_frac"] = d / "n_frac.npz"
    f["n_frac"].write_bytes(b.getvalue())
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("w2c.npy", _npy_header((10**12, 4, 4)) + b"\x00" * 64)
    f["n_lying"] = d / "n_lying.npz"
    f["n_lying"].write_bytes(b.getvalue())
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("w2c.npy", _npy_header((4,), "|O") + b"\x00" * 64)
    f["n_pickle"] = d / "n_pickle.npz"
    f["n_pickle"].write_bytes(b.getvalue())
    b = io.BytesIO()
    np.savez(b, nothing=np.zeros(3))
    f["n_now2c"] = d / "n_now2c.npz"
    f["n_now2c"].write_bytes(b.getvalue())
    f["yaml"] = d / "traj.yaml"
    f["yaml"].write_text("a: 1")
    f["subdir"] = d / "sub"
    f["subdir"].mkdir()
    f["loop"] = d / "loop.json"
    os.symlink(d / "loop.json", f["loop"])
    # depth maps
    f["d_ok"] = d / "d_ok.npy"
    np.save(f["d_ok"], np.full((32, 48), 2.0, np.float32))
    f["d_size"] = d / "d_size.npy"
    np.save(f["d_size"], np.full((5, 7), 2.0, np.float32))
    f["d_nan"] = d / "d_nan.npy"
    np.save(f["d_nan"], np.full((32, 48), np.nan, np.float32))
    f["d_neg"] = d / "d_neg.npy"
    np.save(f["d_neg"], np.full((32, 48), -1.0, np.float32))
    f["d_zero"] = d / "d_zero.npy"
    np.save(f["d_zero"], np.zeros((32, 48), np.float32))
    f["d_huge"] = d / "d_huge.npy"
    np.save(f["d_huge"], np.full((32, 48), 1e300, np.float64))
    f["d_obj"] = d / "d_obj.npy"
    np.save(f["d_obj"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    f["d_str"] = d / "d_str.npy"
    np.save(f["d_str"], np.array(["a", "b"]))
    f["d_lying"] = d / "d_lying.npy"
    f["d_lying"].write_bytes(_npy_header((10**6, 10**6)) + b"\x00" * 64)
    f["d_garbage"] = d / "d_garbage.npy"
    f["d_garbage"].write_bytes(b"\x93NUMPY garbage")
    f["d_txt"] = d / "d.txt"
    f["d_txt"].write_text("1 2 3")
    f["d_rgb_png"] = _png(d / "d_rgb.png")
    f["d_3d"] = d / "d_3d.npy"
    np.save(f["d_3d"], np.ones((2, 32, 48), np.float32))
    # output folders
    f["out_file"] = d / "out_file"
    f["out_file"].write_text("precious")
    f["out_foreign"] = d / "out_foreign"
    f["out_foreign"].mkdir()
    (f["out_foreign"] / "thesis.txt").write_text("precious")
    f["out_other"] = d / "out_other"
    f["out_other"].mkdir()
    (f["out_other"] / "image.png").write_bytes(b"x")
    (f["out_other"] / ".worldstereo-output.json").write_text(json.dumps(
        {"format": "worldstereo.output_folder", "version": 1, "owner": "demo", "files": {"image.png": {}}}))
    # reconstruct inputs
    f["frames"] = d / "frames"
    f["frames"].mkdir()
    for i in range(3):
        _png(f["frames"] / f"{i:03d}.png")
    f["frames_mixed"] = d / "frames_mixed"
    f["frames_mixed"].mkdir()
    _png(f["frames_mixed"] / "0.png")
    _png(f["frames_mixed"] / "1.png", size=(20, 20))
    f["frames_bad"] = d / "frames_bad"
    f["frames_bad"].mkdir()
    (f["frames_bad"] / "0.png").write_text("nope")
    f["frames_empty"] = d / "frames_empty"
    f["frames_empty"].mkdir()
    f["video_bad"] = d / "v.mp4"
    f["video_bad"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    f["cams3"] = d / "cams3.json"
    f["cams3"].write_text(json.dumps({"extrinsic": [eye] * 3, "intrinsic": [[40, 0, 24], [0, 40, 16], [0, 0, 1]],
                                      "width": 48, "height": 32}))
    f["colmap_bad"] = d / "colmap_bad"
    f["colmap_bad"].mkdir()
    (f["colmap_bad"] / "cameras.txt").write_text("1 PINHOLE ten 10 5 5 5 5\n")
    (f["colmap_bad"] / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    f["colmap_cam"] = d / "colmap_cam"
    f["colmap_cam"].mkdir()
    (f["colmap_cam"] / "cameras.txt").write_text("1 PINHOLE 48 32 40 40 24 16\n")
    (f["colmap_cam"] / "images.txt").write_text("1 1 0 0 0 0 0 0 7 a.png\n\n")
    f["colmap_q"] = d / "colmap_q"
    f["colmap_q"].mkdir()
    (f["colmap_q"] / "cameras.txt").write_text("1 PINHOLE 48 32 40 40 24 16\n")
    (f["colmap_q"] / "images.txt").write_text("1 0 0 0 0 0 0 0 1 a.png\n\n")
    f["colmap_empty"] = d / "colmap_empty"
    f["colmap_empty"].mkdir()
    (f["colmap_empty"] / "cameras.txt").write_text("")
    (f["colmap_empty"] / "images.txt").write_text("")
    f["wm_escape"] = d / "wm" / "cameras.json"
    f["wm_escape"].parent.mkdir()
    (f["wm_escape"].parent / "images").mkdir()
    f["wm_escape"].write_text(json.dumps({"extrinsics": [{"camera_id": "../../../etc/x", "matrix": eye}],
                                          "intrinsics": [{"camera_id": "../../../etc/x", "matrix": np.eye(3).tolist()}]}))
    f["depth3"] = d / "depth3.npy"
    np.save(f["depth3"], np.ones((3, 32, 48), np.float32))
    f["depth2"] = d / "depth2.npy"
    np.save(f["depth2"], np.ones((2, 32, 48), np.float32))
    f["depth3_str"] = d / "depth3_str.npy"
    np.save(f["depth3_str"], np.array([["a"]]))
    f["model_dir"] = d / "model_empty"
    f["model_dir"].mkdir()
    # generate --inputs folders in the reference example layout, each broken in one way
    def example(name, *, prompt='{"long caption": "a room"}', camera=None, image=True):
        root = d / name
        root.mkdir()
        if image:
            _png(root / "image.png")
        (root / "prompt.json").write_text(prompt)
        (root / "camera.json").write_text(camera if camera is not None else f["traj_ok"].read_text())
        return root
    f["ex_prompt_garbage"] = example("ex_prompt_garbage", prompt="{oops")
    f["ex_prompt_list"] = example("ex_prompt_list", prompt="[1, 2]")
    f["ex_prompt_nan"] = example("ex_prompt_nan", prompt='{"long caption": NaN}')
    f["ex_prompt_binary"] = example("ex_prompt_binary", prompt="\x00\x01")
    f["ex_no_prompt"] = example("ex_no_prompt")
    (f["ex_no_prompt"] / "prompt.json").unlink()
    f["ex_layout"] = example("ex_layout", image=False)
    rec = d / "ex_recon"
    (rec / "renders" / "traj_up").mkdir(parents=True)
    _png(rec / "image.png")
    (rec / "prompt.json").write_text('{"prompt": "x"}')
    (rec / "renders" / "traj_up" / "camera.json").write_text(f["j_nan"].read_text())
    (rec / "renders" / "traj_up" / "render.mp4").write_bytes(b"\x00" * 100)
    (rec / "renders" / "traj_up" / "render_mask.mp4").write_bytes(b"\x00" * 100)
    f["ex_recon"] = rec
    pano = d / "ex_pano"
    (pano / "pano_bank" / "images").mkdir(parents=True)
    (pano / "pano_bank" / "cameras.json").write_text("[" * 10000)
    f["ex_pano"] = pano
    return f


def _cases(f: dict[str, Path]) -> list[Case]:
    out = str(f["dir"] / "new_out")
    img = str(f["img"])
    cases: list[Case] = []

    def add(name, *argv, expect=""):
        cases.append(Case(name, tuple(str(a) for a in argv), expect))

    # --- numbers of every command ------------------------------------------------------------
    render = ("render", img, "--trajectory", "orbit", "--out", out, "--depth", f["d_ok"])
    demo = ("demo", "--out", out)
    gen = ("generate", img, "--model", f["model_dir"], "--trajectory", "orbit", "--out", out, "--depth", f["d_ok"])
    mv = ("multi-view", img, "--model", f["model_dir"], "--trajectory", "orbit", "--out", out, "--depth", f["d_ok"])
    rec = ("reconstruct", f["frames"], "--cameras", f["cams3"], "--out", out, "--depth", f["depth3"])
    numeric = {
        "--frames": ["0", "-1", "nan", "1e3", "abc", "", "99999999999", "2.5"],
        "--fps": ["0", "-5", "nan", "inf", "1000000"],
        "--height": ["0", "-16", "nan", "100000", "17", "1e9"],
        "--width": ["0", "-16", "nan", "100000", "33"],
        "--fov": ["0", "-10", "nan", "inf", "180", "1e309"],
        "--point-radius": ["0", "-1", "nan", "inf", "5"],
        "--points-per-pixel": ["0", "-1", "1000"],
        "--preset-arg": ["distance=nan", "distance=inf", "distance", "=5", "nonexistent=1", "distance=abc",
                         "distance=-1e999"],
    }
    for opt, values in numeric.items():
        for v in values:
            for base in (render, demo):
                if opt in ("--height", "--width") and base is render and v in ("17", "33"):
                    continue  # render: size checks pair --height/--width (covered below)
                add(f"{base[0]} {opt}={v}", *base, opt, v, expect=opt.split("=")[0] if opt != "--preset-arg" else "")
    for opt, values in {"--seed": ["-1", "abc", "1e5", str(2**64)], "--supersample": ["0", "100"],
                        "--sheet-columns": ["0", "1000"]}.items():
        for v in values:
            add(f"demo {opt}={v}", *demo, opt, v, expect=opt)
    for opt, values in {"--steps": ["0", "-1", "nan", "100000"], "--guidance": ["-1", "nan", "inf", "1e9"],
                        "--seed": ["-1", "abc", str(2**64)], "--frames": ["0", "nan"], "--fps": ["0"],
                        "--fov": ["nan", "0"], "--depth-scale": ["0", "-1", "nan", "inf"],
                        "--height": ["0", "nan"], "--dtype": ["float8", "int"], "--variant": ["nope"],
                        "--memory-tier": ["bogus"], "--vram": ["nan", "-1", "0", "inf"]}.items():
        for v in values:
            for base in (gen, mv):
                add(f"{base[0]} {opt}={v}", *base, opt, v, expect=opt)
    for opt, values in {"--voxel-size": ["0", "-1", "nan", "inf"], "--field-iterations": ["0", "-5", "1e9", "x"],
                        "--method": ["voxels"], "--scale-anchor": ["middle"], "--formats": ["ply,bogus", "mesh_glb",
                                                                                            "gaussians"]}.items():
        for v in values:
            add(f"reconstruct {opt}={v}", *rec, opt, v, expect=opt)
    for v in ("0", "-1", "abc", "100000"):
        add(f"--threads={v}", "--threads", v, *demo, expect="--threads")
    add("render odd height", *render, "--height", "40", "--width", "48", expect="--height")
    add("render height only", *render, "--height", "32", expect="--height")
    add("demo odd size", *demo, "--height", "40", expect="--height")
    add("demo preset not at identity", *demo, "--trajectory", "nope", expect="--trajectory")

    # --- IMAGE -------------------------------------------------------------------------------
    for key in ("empty", "text_png", "truncated", "bomb", "float_tif", "int32_tif", "subdir", "loop"):
        add(f"render IMAGE={key}", "render", f[key], "--trajectory", "orbit", "--out", out, "--depth", f["d_ok"],
            expect=f[key].name)
        add(f"generate IMAGE={key}", "generate", f[key], "--model", f["model_dir"], "--trajectory", "orbit",
            "--out", out, expect=f[key].name)
    add("render IMAGE missing", "render", f["dir"] / "missing.png", "--trajectory", "orbit", "--out", out,
        expect="missing.png")
    add("generate IMAGE missing", "generate", f["dir"] / "missing.png", "--model", f["model_dir"], "--trajectory",
        "orbit", "--out", out, expect="missing.png")

    # --- --trajectory files -----------------------------------------------------------------------
    traj_keys = ["j_empty", "j_garbage", "j_list", "j_deep", "j_nan", "j_inf", "j_ragged", "j_types", "j_badrot",
                 "j_fracw", "j_strw", "j_hugew", "j_negK", "j_tr_angle0", "j_tr_noframes", "j_tr_frames_str",
                 "j_tr_w", "j_tr_sing", "j_ours_bad", "j_ours_w", "j_bank_bad", "j_utf16", "j_binary", "t_txt_bad",
                 "t_txt_nan", "t_txt_empty", "t_txt_bin", "n_garbage", "n_frac", "n_lying", "n_pickle", "n_now2c",
                 "yaml", "subdir", "loop"]
    for key in traj_keys:
        add(f"render --trajectory={key}", *render[:2], "--trajectory", f[key], "--out", out, "--depth", f["d_ok"],
            expect="--trajectory" if key in ("yaml", "subdir") else f[key].name)
        add(f"generate --trajectory={key}", *gen[:2], "--model", f["model_dir"], "--trajectory", f[key], "--out", out,
            "--depth", f["d_ok"], expect="--trajectory" if key in ("yaml", "subdir") else f[key].name)
    add("render unknown preset", *render[:2], "--trajectory", "sideways", "--out", out, expect="--trajectory")
    add("multi-view one bad trajectory", *mv, "--trajectory", f["j_nan"], expect=f["j_nan"].name)
    add("render preset-arg with a file", *render[:2], "--trajectory", f["traj_ok"], "--out", out,
        "--preset-arg", "distance=1", "--depth", f["d_ok"], expect="--preset-arg")

    # --- --depth -------------------------------------------------------------------------------
    for key in ("d_size", "d_nan", "d_neg", "d_zero", "d_huge", "d_obj", "d_str", "d_lying", "d_garbage", "d_txt",
                "d_rgb_png", "d_3d", "subdir", "text_png"):
        add(f"render --depth={key}", *render[:-2], "--depth", f[key], expect="--depth")
        add(f"generate --depth={key}", *gen[:-2], "--depth", f[key], expect="--depth")
    add("render --depth missing", *render[:-2], "--depth", f["dir"] / "nope.npy", expect="--depth")
    add("render --depth-scale without --depth", *render[:-2], "--depth-scale", "2", "--depth-model", "x",
        expect="--depth-scale")
    add("render --depth and --depth-model", *render, "--depth-model", "x", expect="--depth")
    for spec in (str(f["img"]), str(f["subdir"]), "./no/such/model", "a/b/c", "bad id!"):
        add(f"render --depth-model={spec}", *render[:-2], "--depth-model", spec, expect="--depth-model")
        add(f"generate --depth-model={spec}", *gen[:-2], "--depth-model", spec, expect="--depth-model")

    # --- --out -------------------------------------------------------------------------------------
    for base in (render, gen, mv, rec):
        head = base[: base.index("--out")]
        tail = base[base.index("--out") + 2:]
        add(f"{base[0]} --out=file", *head, "--out", f["out_file"], *tail, expect="--out")
        add(f"{base[0]} --out=under file", *head, "--out", f["out_file"] / "sub", *tail, expect="--out")
        add(f"{base[0]} --out=foreign", *head, "--out", f["out_foreign"], *tail, expect="thesis.txt")
        add(f"{base[0]} --out=other command", *head, "--out", f["out_other"], *tail, expect="--out")
        add(f"{base[0]} --out=empty", *head, "--out", "", *tail, expect="--out")
        add(f"{base[0]} --out=root", *head, "--out", "/", *tail, expect="--out")
        add(f"{base[0]} --out=proc", *head, "--out", "/proc/worldstereo-probe/out", *tail, expect="--out")
    add("demo --out=file", *demo[:1], "--out", f["out_file"], expect="--out")
    add("demo --out=foreign", *demo[:1], "--out", f["out_foreign"], expect="thesis.txt")
    add("demo --out=long name", *demo[:1], "--out", f["dir"] / ("x" * 300), expect="")

    # --- generate: model / device ------------------------------------------------------------
    add("generate --model missing", *gen[:2], "--model", "./no/such/model", *gen[4:], expect="--model")
    add("generate --model file", *gen[:2], "--model", f["img"], *gen[4:], expect="--model")
    add("generate --model bad id", *gen[:2], "--model", "a/b/c", *gen[4:], expect="--model")
    add("generate --device bogus", *gen, "--device", "quantum", expect="--device")
    add("generate --device cuda:99", *gen, "--device", "cuda:99", expect="--device")

    # --- reconstruct inputs ------------------------------------------------------------------
    rtail = ("--cameras", f["cams3"], "--out", out, "--depth", f["depth3"])
    for key in ("frames_mixed", "frames_bad", "frames_empty", "video_bad", "img", "text_png"):
        add(f"reconstruct input={key}", "reconstruct", f[key], *rtail, expect="input" if key != "frames_bad" else "0.png")
    add("reconstruct input missing", "reconstruct", f["dir"] / "nope", *rtail, expect="input")
    for key in ("j_empty", "j_garbage", "j_deep", "j_nan", "j_types", "t_txt_bad", "n_garbage", "n_pickle",
                "colmap_bad", "colmap_cam", "colmap_q", "colmap_empty", "wm_escape", "yaml", "traj_ok", "subdir"):
        add(f"reconstruct --cameras={key}", "reconstruct", f["frames"], "--cameras", f[key], "--out", out,
            "--depth", f["depth3"], expect="")
    add("reconstruct --cameras missing", "reconstruct", f["frames"], "--cameras", f["dir"] / "nope.json", "--out",
        out, "--depth", f["depth3"], expect="--cameras")
    for key in ("depth2", "depth3_str", "d_obj", "d_lying", "d_garbage", "n_garbage", "d_ok", "d_txt"):
        add(f"reconstruct --depth={key}", "reconstruct", f["frames"], "--cameras", f["cams3"], "--out", out,
            "--depth", f[key], expect="--depth")
    add("reconstruct --depth missing file", "reconstruct", f["frames"], "--cameras", f["cams3"], "--out", out,
        "--depth", f["dir"] / "nope.npz", expect="--depth")
    # --- generate --inputs (reference example folders) -----------------------------------------
    for key in ("ex_prompt_garbage", "ex_prompt_list", "ex_prompt_nan", "ex_prompt_binary", "ex_no_prompt", "ex_layout",
                "ex_recon", "ex_pano", "img", "subdir"):
        add(f"generate --inputs={key}", "generate", "--inputs", f[key], "--model", f["model_dir"], "--out", out,
            expect="inputs")
    add("generate --inputs missing", "generate", "--inputs", f["dir"] / "nope", "--model", f["model_dir"], "--out",
        out, expect="inputs")
    add("generate --inputs with IMAGE", "generate", img, "--inputs", f["ex_layout"], "--model", f["model_dir"],
        "--out", out, expect="--inputs")
    return cases


def _run(case: Case, capsys) -> tuple[int, str]:
    logging.getLogger("worldstereo").handlers.clear()
    code = main(["-q", *case.argv])
    err = capsys.readouterr().err
    return code, err


def _clean(code: int, err: str, case: Case) -> str | None:
    """None when the case was answered as required, else why not."""
    if code != 2:
        return f"exit {code}"
    if "Traceback" in err:
        return "traceback"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if not lines:
        return "no message"
    last = lines[-1]
    if last.startswith("usage:") or not (last.startswith("error:") or ": error: " in last):
        return f"unexpected message {last!r}"
    if case.expect and case.expect not in err:
        return f"message does not name {case.expect!r}: {last!r}"
    if len([ln for ln in lines if not ln.startswith(("usage:", " "))]) > 1:
        return f"more than one message line: {lines!r}"
    return None


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_probe_cases_fail_cleanly(files, capsys):
    cases = _cases(files)
    assert len(cases) >= 300
    before = _snapshot(files["dir"])
    precious = {k: files[k] for k in ("out_file",)}
    failures = []
    for case in cases:
        code, err = _run(case, capsys)
        why = _clean(code, err, case)
        if why:
            failures.append(f"{case.name}: {why}")
    share = 1 - len(failures) / len(cases)
    print(f"probe: {len(cases) - len(failures)}/{len(cases)} bad inputs answered cleanly ({100 * share:.1f}%)")
    assert not failures, "\n".join(failures)
    # nothing created, nothing lost (the staging folders of refused runs are gone too)
    assert _snapshot(files["dir"]) == before
    assert precious["out_file"].read_text() == "precious"
    assert (files["out_foreign"] / "thesis.txt").read_text() == "precious"
