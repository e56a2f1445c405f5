"""Bad command lines for every command and option (each must exit 2 with one ``error:`` line naming
the option or file, before any model is loaded or depth estimated)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .harness import Case


def make_demo_folders(f: dict[str, Path], demo_dir: Path) -> None:
    """Broken copies of a real ``demo`` output folder (inputs of ``reconstruct OUTPUT_DIR``)."""
    d = f["dir"]

    def copy(name: str) -> Path:
        dst = d / name
        shutil.copytree(demo_dir, dst)
        (dst / ".worldstereo-output.json").unlink(missing_ok=True)
        f[name] = dst
        return dst

    copy("demo_ok")
    (copy("demo_depths_garbage") / "depths.npz").write_bytes(b"PK\x03\x04garbage")
    (copy("demo_camera_nan") / "camera.json").write_text('{"extrinsic": [[[NaN,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]]}')
    cam = json.loads((demo_dir / "camera.json").read_text())
    cam["extrinsic"] = cam["extrinsic"][:2]
    (copy("demo_camera_short") / "camera.json").write_text(json.dumps(cam))
    v = (demo_dir / "render.mp4").read_bytes()
    (copy("demo_video_trunc") / "render.mp4").write_bytes(v[: len(v) // 3])
    (copy("demo_video_missing") / "render.mp4").unlink()
    shutil.copy(f["vid_other_size.mp4"], copy("demo_video_other_size") / "render.mp4")
    import numpy as np

    np.savez(copy("demo_depths_shape") / "depths.npz", depth=np.ones((2, 5, 5), np.float32))
    np.savez(copy("demo_depths_nan") / "depths.npz", depth=np.full((3, 32, 48), np.nan, np.float32),
             hole_mask=np.zeros((3, 32, 48), bool))
    (copy("demo_camera_dir") / "camera.json").unlink()
    (f["demo_camera_dir"] / "camera.json").mkdir()
    mv = copy("demo_multi_gap")
    for name in ("camera", "render", "render_mask", "depths"):
        src = next(mv.glob(f"{name}.*"))
        src.rename(mv / f"{name}_00{src.suffix}")
    shutil.copy(mv / "camera_00.json", mv / "camera_01.json")  # camera_01 without its video


def cli_cases(f: dict[str, Path], model_dir: Path) -> list[Case]:
    cases: list[Case] = []
    d = f["dir"]
    out = str(d / "new_out")
    img = str(f["img.png"])
    m = str(model_dir)

    def add(area: str, name: str, argv: list, *expect: str) -> None:
        cases.append(Case(name=name, argv=[str(x) for x in argv], expect=tuple(expect), area=area))

    depth = str(f["depth_ok.npy"])
    render = ["render", img, "--trajectory", "orbit", "--out", out, "--depth", depth]
    demo = ["demo", "--out", out, "--height", "32", "--width", "48", "--frames", "3", "--supersample", "1"]
    gen = ["generate", img, "--model", m, "--trajectory", "orbit", "--out", out, "--depth", depth, "--device", "cpu"]
    mv = ["multi-view", img, "--model", m, "--trajectory", "orbit", "--trajectory", "left", "--out", out, "--depth",
          depth, "--device", "cpu"]
    rec = ["reconstruct", str(f["demo_ok"]), "--out", out]
    batch = ["batch", str(f["jobs_ok.jsonl"]), "--model", m, "--out", out, "--device", "cpu"]

    # --- options with values outside their range, in combinations the other probe leaves out ----------
    a = "cli-options"
    add(a, "generate --frames 1 (a video needs 2)", [*gen, "--frames", "1"], "--frames")
    add(a, "multi-view --frames 1", [*mv, "--frames", "1"], "--frames")
    add(a, "generate --height 17 --width 48", [*gen, "--height", "17", "--width", "48"], "--height")
    add(a, "generate --width only", [*gen, "--width", "64"], "--height", "--width")
    add(a, "generate --height 4096 --width 4096 (fine) + --frames 1000 (huge latent)",
        [*gen, "--height", "4096", "--width", "4096", "--frames", "1000", "--steps", "1000"], "--frames", "--height",
        "--width", "memory", "too large")
    add(a, "generate --seed 1.5", [*gen, "--seed", "1.5"], "--seed")
    add(a, "generate --seed 0x10", [*gen, "--seed", "0x10"], "--seed")
    add(a, "generate --guidance 1e400", [*gen, "--guidance", "1e400"], "--guidance")
    add(a, "generate --guidance -0.0001", [*gen, "--guidance", "-0.0001"], "--guidance")
    add(a, "generate --steps 2.0", [*gen, "--steps", "2.0"], "--steps")
    add(a, "generate --fps 0.5", [*gen, "--fps", "0.5"], "--fps")
    add(a, "generate --depth-scale 1e-400", [*gen, "--depth-scale", "1e-400"], "--depth-scale")
    add(a, "generate --depth-scale 1e300", [*gen, "--depth-scale", "1e300"], "--depth-scale", "--depth")
    add(a, "generate --fov 179.99", [*gen, "--fov", "179.99"], "--fov")
    add(a, "generate --variant mismatch", [*gen, "--variant", "worldstereo-camera"], "--variant", "variant")
    add(a, "generate --dtype float16 --device cpu --memory-tier int8", [*gen, "--memory-tier", "group_offload"],
        "--memory-tier")
    add(a, "generate --memory-tier + --vram", [*gen, "--memory-tier", "resident", "--vram", "24"], "--vram",
        "--memory-tier")
    add(a, "generate --vram 1e-9", [*gen[:-2], "--device", "cpu", "--vram", "1e-9"], "--vram")
    add(a, "generate --vram on cpu", [*gen, "--vram", "24"], "--vram")
    add(a, "generate --vram 1e400", [*gen, "--vram", "1e400"], "--vram")
    add(a, "generate --memory-tier empty", [*gen, "--memory-tier", ""], "--memory-tier")
    add(a, "generate --device cuda", [*gen[:-2], "--device", "cuda"], "--device")
    add(a, "generate --device cuda:-1", [*gen[:-2], "--device", "cuda:-1"], "--device")
    add(a, "generate --device empty", [*gen[:-2], "--device", ""], "--device")
    add(a, "generate --device meta", [*gen[:-2], "--device", "meta"], "--device")
    add(a, "generate --device mps", [*gen[:-2], "--device", "mps"], "--device")
    add(a, "generate --parallel without torchrun", [*gen, "--parallel", "ulysses"], "--parallel")
    add(a, "generate --parallel bogus", [*gen, "--parallel", "sideways"], "--parallel")
    add(a, "generate --fsdp without torchrun", [*gen, "--fsdp"], "--fsdp", "torchrun")
    add(a, "generate --parallel ring on cpu", [*gen, "--parallel", "ring"], "--parallel", "torchrun")
    add(a, "multi-view --parallel cfg without torchrun", [*mv, "--parallel", "cfg"], "--parallel")
    add(a, "generate --fit-trajectory 0", [*gen, "--fit-trajectory", "0"], "--fit-trajectory")
    add(a, "generate --fit-trajectory 1.5", [*gen, "--fit-trajectory", "1.5"], "--fit-trajectory")
    add(a, "generate --fit-trajectory nan", [*gen, "--fit-trajectory", "nan"], "--fit-trajectory")
    add(a, "generate --fit-trajectory -0.5", [*gen, "--fit-trajectory=-0.5"], "--fit-trajectory")
    add(a, "render --fit-trajectory abc", [*render, "--fit-trajectory", "abc"], "--fit-trajectory")
    add(a, "demo --fit-trajectory 2", [*demo, "--fit-trajectory", "2"], "--fit-trajectory")
    add(a, "--threads 1.5", ["--threads", "1.5", *demo], "--threads")
    add(a, "--threads nan", ["--threads", "nan", *demo], "--threads")
    add(a, "--threads -3 after command", [*demo, "--threads", "-3"], "--threads", "unrecognized")
    add(a, "--threads 257", ["--threads", "257", *demo], "--threads")
    add(a, "--threads 10**30", ["--threads", str(10**30), *demo], "--threads")
    add(a, "no command", [])
    add(a, "unknown command", ["explode"], "explode", "invalid choice")
    add(a, "render unknown option", [*render, "--colour", "red"], "--colour")
    add(a, "render --preset-arg azimuth_deg=1e300", [*render, "--preset-arg", "azimuth_deg=1e300"], "--preset-arg",
        "azimuth")
    add(a, "render --preset-arg num_frames=5", [*render, "--preset-arg", "num_frames=5"], "--preset-arg", "num_frames")
    add(a, "render --preset-arg height=9999999", [*render, "--preset-arg", "height=9999999"], "--preset-arg", "height")
    add(a, "render --preset-arg depth=0", [*render, "--preset-arg", "depth=0"], "--preset-arg", "depth")
    add(a, "render --preset-arg azimuth_deg=true", [*render, "--preset-arg", "azimuth_deg=true"], "--preset-arg",
        "azimuth")
    add(a, "render --preset-arg azimuth_deg=1e309", [*render, "--preset-arg", "azimuth_deg=1e309"], "--preset-arg")
    add(a, "render --preset-arg fov_deg=0", [*render, "--preset-arg", "fov_deg=0"], "--preset-arg", "fov")
    add(a, "render --preset-arg distance=1e300 forward", [*render[:2], "--trajectory", "forward", "--out", out, "--depth",
                                                          depth, "--preset-arg", "distance=1e300"], "--preset-arg",
        "distance")
    add(a, "render --preset-arg revolutions=1e15 spiral", [*render[:2], "--trajectory", "spiral", "--out", out, "--depth",
                                                           depth, "--preset-arg", "revolutions=1e15"], "--preset-arg",
        "revolutions")
    add(a, "demo --trajectory file", [*demo, "--trajectory", str(f["traj_ok.json"])], "--trajectory")
    add(a, "demo --trajectory forward far", [*demo, "--trajectory", "forward", "--preset-arg", "distance=100"],
        "--trajectory", "--preset-arg", "room", "distance")
    add(a, "demo --height 4096 --width 4096 --frames 1000 --supersample 8", [
        "demo", "--out", out, "--height", "4096", "--width", "4096", "--frames", "1000", "--supersample", "8"],
        "--frames", "--height", "--supersample", "memory", "too large")
    add(a, "demo --seed 1e3", [*demo, "--seed", "1e3"], "--seed")
    add(a, "render --height 4096 --width 4096 --frames 1000 (tiny image)",
        [*render, "--height", "4096", "--width", "4096", "--frames", "1000"], "--frames", "--height", "memory",
        "too large", "--depth")
    add(a, "reconstruct --voxel-size 1e-30", [*rec, "--voxel-size", "1e-30"], "--voxel-size")
    add(a, "reconstruct --voxel-size 1e-30 mesh", [*rec, "--voxel-size", "1e-30", "--method", "mesh"], "--voxel-size")
    add(a, "reconstruct --formats empty", [*rec, "--formats", ""], "--formats")
    add(a, "reconstruct --formats ,,", [*rec, "--formats", ",,"], "--formats")
    add(a, "reconstruct --formats mesh_glb for point cloud", [*rec, "--formats", "mesh_glb"], "--formats", "mesh")
    add(a, "reconstruct --formats gaussians for mesh", [*rec, "--method", "mesh", "--formats", "gaussians"], "--formats",
        "gaussians")
    add(a, "reconstruct --device bogus with depth model", [*rec, "--depth", "depth-anything/x", "--device", "quantum"],
        "--device")
    add(a, "reconstruct --depth-model-like id without network", [*rec, "--depth", "nobody/nothing"], "--depth",
        "nobody/nothing")
    add(a, "batch --batch-size 0", [*batch, "--batch-size", "0"], "--batch-size")
    add(a, "batch --group-size 0", [*batch, "--group-size", "0"], "--group-size")
    add(a, "batch --group-size 3 without torchrun", [*batch, "--group-size", "3"], "--group-size", "torchrun")
    add(a, "batch --fps 0", [*batch, "--fps", "0"], "--fps")
    add(a, "batch --frames 1", [*batch, "--frames", "1"], "--frames")
    add(a, "batch --height 17", [*batch, "--height", "17", "--width", "32"], "--height")
    add(a, "batch --height only", [*batch, "--height", "32"], "--height", "--width")
    add(a, "batch --guidance nan", [*batch, "--guidance", "nan"], "--guidance")
    add(a, "batch --steps 0", [*batch, "--steps", "0"], "--steps")
    add(a, "batch --fov 180", [*batch, "--fov", "180"], "--fov")
    add(a, "batch --memory-tier bogus", [*batch, "--memory-tier", "huge"], "--memory-tier")
    add(a, "batch --memory-tier offload on cpu", [*batch, "--memory-tier", "model_offload"], "--memory-tier")
    add(a, "batch --device cuda", [*batch[:-2], "--device", "cuda"], "--device")
    add(a, "batch --device bogus", [*batch[:-2], "--device", "quantum"], "--device")
    add(a, "batch --dtype int8", [*batch, "--dtype", "int8"], "--dtype")
    add(a, "batch --variant mismatch", [*batch, "--variant", "worldstereo-camera"], "--variant", "variant")
    add(a, "batch --parallel without torchrun", [*batch, "--parallel", "ulysses"], "--parallel")
    add(a, "batch --depth-model bad id", [*batch, "--depth-model", "bad id!"], "--depth-model")
    add(a, "batch --model missing", ["batch", str(f["jobs_ok.jsonl"]), "--model", str(d / "nope"), "--out", out],
        "--model")
    add(a, "batch --model a file", ["batch", str(f["jobs_ok.jsonl"]), "--model", img, "--out", out], "--model")

    # --- output folders -------------------------------------------------------------------------------
    a = "cli-out"
    for base in (render, demo, gen, rec, batch):
        i = base.index("--out")
        head, tail = base[:i], base[i + 2:]
        for key, exp in (("out_is_file", "--out"), ("out_foreign", "thesis.txt"), ("out_dotfile", ".bashrc"),
                         ("out_fake_manifest", "--out"), ("out_lying_manifest", "--out"), ("out_loop", "--out"),
                         ("img_dir.png", "--out")):
            if base is batch and key not in ("out_is_file", "out_loop"):
                continue  # batch writes into a folder that may hold other files (never replaces them)
            target = f[key]
            if key == "img_dir.png":  # an empty folder that is the input's folder: the input folder itself
                target = d
                exp = "--out"
            add(a, f"{base[0]} --out={key}", [*head, "--out", target, *tail], exp)
        add(a, f"{base[0]} --out=''", [*head, "--out", "", *tail], "--out")
        add(a, f"{base[0]} --out=NUL", [*head, "--out", str(d / "a\x00b"), *tail], "--out")
        add(a, f"{base[0]} --out=/", [*head, "--out", "/", *tail], "--out")
        add(a, f"{base[0]} --out=under a file", [*head, "--out", str(f["out_is_file"] / "x"), *tail], "--out")
        add(a, f"{base[0]} --out=/proc/x", [*head, "--out", "/proc/self/x", *tail], "--out")
        add(a, f"{base[0]} --out=/dev/null", [*head, "--out", "/dev/null", *tail], "--out")
        add(a, f"{base[0]} --out=300 bytes", [*head, "--out", str(d / ("é" * 150)), *tail], "--out")
        add(a, f"{base[0]} --out=4100-byte path", [*head, "--out", str(d / "/".join(["x" * 200] * 21)), *tail],
            "--out")
    add(a, "reconstruct --out = its input folder", ["reconstruct", str(f["demo_ok"]), "--out", str(f["demo_ok"])],
        "--out")
    add(a, "reconstruct --out inside its input", ["reconstruct", str(f["demo_ok"]), "--out", str(f["demo_ok"] / "3d")],
        "--out", "input")
    add(a, "generate --out = the folder holding IMAGE (non empty)", [*gen[:5], "--out", str(d), *gen[7:]], "--out")
    add(a, "generate --inputs with --out inside the inputs", ["generate", "--inputs", str(f["ex_images_ok"]), "--model", m,
                                                             "--out", str(f["ex_images_ok"] / "out")], "--out", "inputs")
    add(a, "render --out /etc via symlink", [*render[:5], "--out", str(f["out_link_etc"]), *render[7:]], "--out")

    # --- image / trajectory / depth files not covered elsewhere ---------------------------------------
    a = "cli-files"
    for key in ("img_float_nan.tif", "img_int_neg.tif", "img_wide.png", "img_zero.png", "img_badbits.png",
                "img_jpeg_trunc.jpg", "img.svg", "img_tiff_garbage.tif", "img_bmp_lying.bmp", "img_dangling.png",
                "img_link_passwd.png", "ply_ok.ply"):
        add(a, f"render IMAGE={key}", ["render", f[key], "--trajectory", "orbit", "--out", out, "--depth", depth], key)
        add(a, f"generate IMAGE={key}", ["generate", f[key], "--model", m, "--trajectory", "orbit", "--out", out], key)
    add(a, "render IMAGE 1x1 with its depth", ["render", f["img_1x1.png"], "--trajectory", "orbit", "--out", out,
                                               "--depth", depth], "--depth")
    add(a, "render IMAGE 1x5000 (working size)", ["render", f["img_thin.png"], "--trajectory", "orbit", "--out", out],
        "img_thin.png", "IMAGE", "--height", "aspect")
    traj_files = ["traj_bigint.json", "traj_deep_dict.json", "traj_unicode.json",
                  "traj_surrogate.json", "traj_ws.json", "traj_null.json", "traj_number.json", "traj_empty_dict.json",
                  "traj_empty_list.json", "traj_3x4.json", "traj_K_str.json", "traj_K_zero.json", "traj_K_nested.json",
                  "traj_K_many.json", "traj_neg_size.json", "traj_zero_size.json", "traj_bool_size.json",
                  "traj_huge_t.json", "traj_scale.json", "traj_reflect.json", "traj_bottom.json", "traj_strings.json",
                  "traj_nulls.json", "traj_bank_mixed.json", "traj_bank_empty.json", "ours_units.json",
                  "ours_conv.json", "ours_conv_str.json", "ours_version_str.json", "ours_version_float.json",
                  "ours_format_list.json", "ours_K_count.json", "ours_no_w2c.json", "ours_fov_flag.json",
                  "ours_height_only.json", "tr_frames_dicts_missing.json", "tr_frames_not_dicts.json",
                  "tr_fl_nan_str.json", "tr_fl_neg.json", "tr_w_float.json", "tr_w_huge.json", "tr_angle_nan.json",
                  "tr_angle_pi.json", "tr_per_frame_bad.json", "tr_matrix_3x3.json", "re10k_short_row.txt",
                  "re10k_words.txt", "re10k_inf.txt", "re10k_neg_f.txt", "re10k_singular.txt", "re10k_only_url.txt",
                  "re10k_long_line.txt", "re10k_crlf_nul.txt", "npz_w2c_1d.npz",
                  "npz_w2c_complex.npz", "npz_w2c_str.npz", "npz_w2c_bool.npz", "npz_K_shape.npz", "npz_size_arr.npz",
                  "npz_zipbomb.npz", "npz_empty_zip.npz", "npz_not_npy_member.npz", "npz_fortran_trunc.npz",
                  "npz_trunc.npz", "img_selfloop.png"]
    for key in traj_files:
        add(a, f"render --trajectory={key}", ["render", img, "--trajectory", f[key], "--out", out, "--depth", depth], key)
    for key in traj_files[::3]:
        add(a, f"generate --trajectory={key}", [*gen[:5], f[key], *gen[6:]], key)
        add(a, f"multi-view 2nd --trajectory={key}", [*mv[:7], f[key], *mv[8:]], key)
    add(a, "render --trajectory with huge translation (1e300)", ["render", img, "--trajectory", f["traj_huge_t.json"],
                                                                  "--out", out, "--depth", depth], "traj_huge_t.json")
    for key in ("depth_bool.npy", "depth_complex.npy", "depth_f16_inf.npy", "depth_0d.npy",
                "depth_1d.npy", "depth_partial_nan.npy", "depth_empty.npy", "depth_transposed.npy",
                "depth_huge_finite.npy", "depth_tiny.npy", "depth_struct.npy",
                "depth_twokeys.npz", "depth_neg_shape.npy", "depth_header_garbage.npy", "depth16_zero.png",
                "depth.exr", "depth.pfm", "npz_zipbomb.npz", "img_dangling.png"):
        add(a, f"render --depth={key}", [*render[:-2], "--depth", f[key]], "--depth")
        add(a, f"generate --depth={key}", [*gen[:-4], "--depth", f[key], "--device", "cpu"], "--depth")

    # --- reconstruct inputs ----------------------------------------------------------------------------
    a = "cli-reconstruct"
    for key in ("demo_depths_garbage", "demo_camera_nan", "demo_camera_short", "demo_video_trunc", "demo_video_missing",
                "demo_video_other_size", "demo_depths_shape", "demo_depths_nan", "demo_camera_dir", "demo_multi_gap"):
        add(a, f"reconstruct {key}", ["reconstruct", f[key], "--out", out], key)
    cams = str(f["traj_ok.json"])
    for key in ("vid_empty.mp4", "vid_garbage.mp4", "vid_ftyp_only.mp4", "vid_text.mp4", "vid_trunc.mp4",
                "vid_audio_only.mp4", "vid_2f.mp4", "img_selfloop.png", "img_link_passwd.png", "ex_link_out"):
        add(a, f"reconstruct INPUT={key}", ["reconstruct", f[key], "--cameras", cams, "--out", out, "--depth",
                                            str(f["demo_ok"] / "depths.npz")], key, "input")
    for key in ("colmap_model_unknown", "colmap_params_missing", "colmap_cam_ref_missing", "colmap_dup_ids",
                "colmap_huge_id", "colmap_points_bad", "colmap_size_neg", "colmap_binary",
                "colmap_bin_only", "wm_num_lies", "wm_ids_mismatch", "wm_abs_id", "wm_nul_id", "wm_matrix_bad",
                "wm_id_int", "wm_list_doc", "ex_empty", "tr_path_escape.json", "re10k_ok.txt", "npz_ok.npz"):
        cam_path = f[key] / "cameras.json" if key.startswith("wm_") else f[key]
        add(a, f"reconstruct --cameras={key}", ["reconstruct", f["demo_ok"] / "render.mp4", "--cameras", cam_path,
                                                "--out", out, "--depth", str(f["demo_ok"] / "depths.npz")], key,
            "--cameras")
    add(a, "reconstruct --cameras folder of frames", ["reconstruct", f["demo_ok"] / "render.mp4", "--cameras", d,
                                                      "--out", out], "--cameras")
    add(a, "reconstruct --depth folder of bad files", ["reconstruct", f["demo_ok"] / "render.mp4", "--cameras",
                                                       f["demo_ok"] / "camera.json", "--out", out, "--depth",
                                                       f["colmap_ok"]], "--depth")
    add(a, "reconstruct --depth transposed", ["reconstruct", f["demo_ok"] / "render.mp4", "--cameras",
                                              f["demo_ok"] / "camera.json", "--out", out, "--depth",
                                              f["depth_transposed.npy"]], "--depth")
    add(a, "reconstruct --depth nan everywhere", ["reconstruct", f["demo_ok"], "--out", out, "--depth",
                                                  f["demo_depths_nan"] / "depths.npz"], "--depth")

    # --- generate --inputs -----------------------------------------------------------------------------
    a = "cli-inputs"
    for key in ("ex_prompt_str", "ex_prompt_caption_int", "ex_camera_bad", "ex_camera_dir", "ex_image_bad", "ex_empty",
                "ex_recon_vid_garbage", "ex_recon_frames_mismatch", "ex_recon_no_mask", "ex_pano_bad_cams",
                "ex_link_out", "ex_images_symlink_img", "traj_ok.json"):
        add(a, f"generate --inputs={key}", ["generate", "--inputs", f[key], "--model", m, "--out", out], key, "--inputs")
    add(a, "generate --inputs with --trajectory", ["generate", "--inputs", f["ex_images_ok"], "--model", m, "--out", out,
                                                   "--trajectory", "orbit"], "--inputs", "--trajectory")
    add(a, "generate --inputs --frames 1", ["generate", "--inputs", f["ex_images_ok"], "--model", m, "--out", out,
                                            "--frames", "1"], "--frames")
    add(a, "generate --inputs --height 17", ["generate", "--inputs", f["ex_images_ok"], "--model", m, "--out", out,
                                             "--height", "17", "--width", "48"], "--height")
    add(a, "generate --inputs --depth bad", ["generate", "--inputs", f["ex_images_ok"], "--model", m, "--out", out,
                                             "--depth", f["depth_lying.npy"]], "--depth")
    add(a, "generate --inputs --preset-arg", ["generate", "--inputs", f["ex_images_ok"], "--model", m, "--out", out,
                                              "--preset-arg", "distance=1"], "--preset-arg")

    # --- batch jobs files -------------------------------------------------------------------------------
    a = "cli-batch"
    for key in ("jobs_empty", "jobs_blank_lines", "jobs_garbage", "jobs_list_line", "jobs_nan", "jobs_unknown_field",
                "jobs_missing_image", "jobs_image_missing_file", "jobs_image_dir", "jobs_output_escape",
                "jobs_output_abs", "jobs_output_dup", "jobs_output_records", "jobs_seed_neg", "jobs_frames_huge",
                "jobs_height_odd", "jobs_preset_unknown", "jobs_preset_arg_bad", "jobs_preset_arg_nan",
                "jobs_preset_arg_huge", "jobs_traj_file_bad", "jobs_traj_file_missing", "jobs_depth_missing",
                "jobs_depth_bad", "jobs_variant_mix", "jobs_binary", "jobs_deep", "jobs_utf16", "jobs_many_errors",
                "jobs_image_garbage", "jobs_dup_key"):
        add(a, f"batch {key}", ["batch", f[f"{key}.jsonl"], "--model", m, "--out", out, "--device", "cpu"],
            f"{key}.jsonl")
    add(a, "batch JOBS is a folder", ["batch", d, "--model", m, "--out", out], "JOBS", str(d.name))
    add(a, "batch JOBS missing", ["batch", d / "nope.jsonl", "--model", m, "--out", out], "nope.jsonl")
    add(a, "batch JOBS /dev/zero", ["batch", "/dev/zero", "--model", m, "--out", out], "/dev/zero")
    return cases
