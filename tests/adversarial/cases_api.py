"""Bad calls of the Python API (each must raise a ValueError / TypeError naming what is wrong,
before any heavy work)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .files import EYE, H, K_OK, W
from .harness import Case


class Api:
    """Collects cases; ``add(area, name, fn, *expect, allow=())``."""

    def __init__(self) -> None:
        self.cases: list[Case] = []

    def add(self, area: str, name: str, fn: Callable[[], Any], *expect: str,
            allow: tuple[type[BaseException], ...] = ()) -> None:
        self.cases.append(Case(name=name, run=fn, expect=tuple(expect), allow=allow, area=area))


def trajectory_cases(api: Api, f: dict[str, Path]) -> None:
    from worldstereo import CameraTrajectory as CT
    from worldstereo.camera import intrinsics_from_fov

    a = "trajectory"
    eye = torch.eye(4)
    ok = CT.orbit(num_frames=3, height=H, width=W)
    add = api.add
    add(a, "w2c string", lambda: CT("identity"), "w2c")
    add(a, "w2c None", lambda: CT(None), "w2c")
    add(a, "w2c dict", lambda: CT({"a": 1}), "w2c")
    add(a, "w2c ragged lists", lambda: CT([[1, 0], [0]]), "w2c")
    add(a, "w2c 3x3", lambda: CT(torch.eye(3)), "w2c")
    add(a, "w2c empty", lambda: CT(torch.zeros(0, 4, 4)), "w2c")
    add(a, "w2c 5-d", lambda: CT(torch.zeros(1, 1, 1, 4, 4)), "w2c")
    add(a, "w2c nan", lambda: CT(torch.full((4, 4), float("nan"))), "w2c")
    add(a, "w2c scaled rotation", lambda: CT(torch.eye(4) * 2), "w2c")
    add(a, "w2c complex", lambda: CT(torch.eye(4, dtype=torch.complex64)), "w2c")
    add(a, "w2c bool", lambda: CT(torch.eye(4, dtype=torch.bool)), "w2c")
    add(a, "w2c object array", lambda: CT(np.array([object()] * 16).reshape(4, 4)), "w2c")
    add(a, "w2c huge translation overflow f32", lambda: CT(torch.tensor(
        [[1, 0, 0, 1e300], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)).to(dtype=torch.float32)
        .fit_to_scene(torch.rand(10, 3), torch.tensor(K_OK), height=H, width=W), "w2c", "finite", "trajectory")
    add(a, "K without size", lambda: CT(eye, K_OK), "height")
    add(a, "K wrong count", lambda: CT(torch.stack([eye] * 2), torch.tensor([K_OK] * 3), H, W), "K")
    add(a, "K negative focal", lambda: CT(eye, [[-1, 0, 24], [0, 1, 16], [0, 0, 1]], H, W), "K")
    add(a, "K nan", lambda: CT(eye, torch.full((3, 3), float("nan")), H, W), "K")
    add(a, "K principal point outside", lambda: CT(eye, [[40, 0, 4800], [0, 40, 16], [0, 0, 1]], H, W), "K")
    add(a, "height float", lambda: CT(eye, K_OK, 32.0, 48), "height")
    add(a, "height str", lambda: CT(eye, K_OK, "32", 48), "height")
    add(a, "height bool", lambda: CT(eye, K_OK, True, 48), "height")
    add(a, "height zero", lambda: CT(eye, K_OK, 0, 48), "height")
    add(a, "width only", lambda: CT(eye, None, None, 48), "height", "width")
    add(a, "units bad", lambda: CT(eye, units="metres"), "units")
    add(a, "units list", lambda: CT(eye, units=["scene"]), "units")
    add(a, "fov_intrinsics without K", lambda: CT(eye, fov_intrinsics=True), "fov_intrinsics")
    add(a, "fov_intrinsics str", lambda: CT(eye, fov_intrinsics="yes"), "fov_intrinsics")
    # presets
    for name, kw, exp in [
        ("forward", {"distance": float("nan")}, "distance"),
        ("forward", {"distance": float("inf")}, "distance"),
        ("forward", {"distance": "far"}, "distance"),
        ("forward", {"distance": 1e300}, "distance"),
        ("forward", {"num_frames": 0}, "num_frames"),
        ("forward", {"num_frames": -3}, "num_frames"),
        ("forward", {"num_frames": 2.5}, "num_frames"),
        ("forward", {"num_frames": 10**9}, "num_frames"),
        ("forward", {"num_frames": 10**12}, "num_frames"),
        ("left", {"height": 0}, "height"),
        ("left", {"height": 10**12, "width": 10**12}, "height"),
        ("left", {"fov_deg": 0}, "fov"),
        ("left", {"fov_deg": 180}, "fov"),
        ("left", {"fov_deg": float("nan")}, "fov"),
        ("left", {"fov_deg": "60"}, "fov"),
        ("pan_left", {"angle_deg": float("nan")}, "angle"),
        ("pan_left", {"angle_deg": 1e308}, "angle"),
        ("tilt_up", {"angle_deg": None}, "angle"),
        ("roll", {"angle_deg": [30]}, "angle"),
        ("zoom_in", {"factor": 0}, "factor"),
        ("zoom_in", {"factor": -2}, "factor"),
        ("zoom_in", {"factor": float("inf")}, "factor"),
        ("zoom_out", {"factor": 1e-300}, "factor"),
        ("dolly_zoom", {"distance": 5.0, "subject_depth": 1.0}, "distance", ),
        ("dolly_zoom", {"subject_depth": 0.0}, "subject_depth"),
        ("dolly_zoom", {"subject_depth": float("nan")}, "subject_depth"),
        ("orbit", {"azimuth_deg": float("nan")}, "azimuth"),
        ("orbit", {"elevation_deg": float("inf")}, "elevation"),
        ("orbit", {"depth": -1.0}, "depth"),
        ("orbit", {"depth": 0.0}, "depth"),
        ("spiral", {"radius": float("nan")}, "radius"),
        ("spiral", {"revolutions": 1e12, "num_frames": 16}, "revolutions"),
        ("spiral", {"focus_depth": 0}, "focus_depth"),
        ("eloop", {"radius_y": float("nan")}, "radius_y"),
        ("eloop", {"depth": 0}, "depth"),
    ]:
        add(a, f"preset {name} {kw}", (lambda n=name, k=kw: CT.preset(n, **k)), exp)
    add(a, "preset unknown", lambda: CT.preset("sideways"), "name", "preset")
    add(a, "preset name None", lambda: CT.preset(None), "name", "preset")
    add(a, "preset unknown kwarg", lambda: CT.preset("orbit", warp=9), "warp")
    # methods
    add(a, "resample 0", lambda: ok.resample(0), "num_frames")
    add(a, "resample huge", lambda: ok.resample(10**10), "num_frames")
    add(a, "resample float", lambda: ok.resample(3.0), "num_frames")
    add(a, "resized negative", lambda: ok.resized(-1, 5), "height")
    add(a, "at_size zero", lambda: ok.at_size(0, 0), "height")
    add(a, "at_size huge", lambda: ok.at_size(10**15, 10**15), "height")
    add(a, "at_size no intrinsics", lambda: CT(eye).at_size(32, 48), "intrinsics")
    add(a, "with_intrinsics bad fov", lambda: ok.with_intrinsics(height=H, width=W, fov_deg=-5), "fov")
    add(a, "with_intrinsics K garbage", lambda: ok.with_intrinsics("K", height=H, width=W), "K")
    add(a, "relative_to out of range", lambda: ok.relative_to(99), "index", allow=(IndexError,))
    add(a, "relative_to str", lambda: ok.relative_to("0"), "index")
    add(a, "scaled nan", lambda: ok.scaled(float("nan")), "factor")
    add(a, "scaled zero", lambda: ok.scaled(0), "factor")
    add(a, "scaled huge", lambda: ok.scaled(1e308), "factor")
    add(a, "in_scene_units negative", lambda: ok.in_scene_units(-1.0), "median_depth", "factor")
    add(a, "in_scene_units nan", lambda: ok.in_scene_units(float("nan")), "median_depth", "factor")
    add(a, "getitem float", lambda: ok[1.5], "index")
    add(a, "getitem out of range", lambda: ok[10], "index", allow=(IndexError,))
    add(a, "getitem str", lambda: ok["a"], "index")
    add(a, "getitem empty slice", lambda: ok[5:], "index", allow=(IndexError,))
    add(a, "cat empty", lambda: CT.cat([]), "trajectories")
    add(a, "cat non-trajectory", lambda: CT.cat([ok, 5]), "trajectories")
    add(a, "cat mixed units", lambda: CT.cat([ok, ok.in_scene_units(2.0)]), "units", "trajector")
    add(a, "add non-trajectory", lambda: ok + 5, "trajector", "other")
    add(a, "from_poses convention", lambda: CT.from_poses(eye, convention="c2w_directx"), "convention")
    add(a, "from_poses 2x4", lambda: CT.from_poses(torch.zeros(2, 4)), "poses")
    add(a, "from_poses singular", lambda: CT.from_poses(torch.zeros(1, 3, 4)), "poses")
    add(a, "from_poses fov nan", lambda: CT.from_poses(eye, height=H, width=W, fov_deg=float("nan")), "fov")
    add(a, "look_at same point", lambda: CT.look_at([0, 0, 0], [0, 0, 0]), "eye", "target")
    add(a, "look_at parallel up", lambda: CT.look_at([0, 0, 0], [0, 1, 0]), "up")
    add(a, "look_at nan eye", lambda: CT.look_at([float("nan"), 0, 0], [0, 0, 1]), "eye")
    add(a, "look_at shape", lambda: CT.look_at([0, 0], [0, 0, 1]), "eye")
    add(a, "look_at up zero", lambda: CT.look_at([0, 0, 0], [0, 0, 1], up=[0, 0, 0]), "up")
    add(a, "intrinsics_from_fov bool", lambda: intrinsics_from_fov(H, W, True), "fov")
    add(a, "intrinsics_from_fov str size", lambda: intrinsics_from_fov("32", W), "height")
    add(a, "to device bogus", lambda: ok.to("quantum"), "device")
    add(a, "to dtype int", lambda: ok.to(dtype=torch.int64), "dtype")
    # converters
    add(a, "from_reference_json missing file", lambda: CT.from_reference_json(f["dir"] / "nope.json"), "nope.json",
        allow=(FileNotFoundError,))
    add(a, "from_reference_json dict bad", lambda: CT.from_reference_json({"extrinsic": "x"}), "extrinsic")
    add(a, "from_reference_json int", lambda: CT.from_reference_json(5), "source")
    add(a, "from_reference_json size float", lambda: CT.from_reference_json(f["traj_ok.json"], height=32.5, width=48),
        "height")
    add(a, "from_reference_json list", lambda: CT.from_reference_json([1, 2]), "source", "camera")
    add(a, "from_transforms_json None", lambda: CT.from_transforms_json(None), "source")
    add(a, "from_transforms_json frames missing", lambda: CT.from_transforms_json({"fl_x": 4}), "frames")
    add(a, "from_realestate10k no size", lambda: CT.from_realestate10k(f["re10k_ok.txt"], height=0, width=0),
        "height")
    add(a, "from_realestate10k dir", lambda: CT.from_realestate10k(f["dir"], height=H, width=W), str(f["dir"].name))
    add(a, "from_npz txt file", lambda: CT.from_npz(f["re10k_ok.txt"]), "re10k_ok.txt")
    add(a, "load yaml", lambda: CT.load(f["traj_ws.json"]), "traj_ws.json")
    add(a, "save to dir", lambda: ok.save(f["img_dir.png"]), "img_dir.png", "path")
    add(a, "save bad suffix", lambda: ok.save(f["dir"] / "no_such_folder" / "t.json"), "no_such_folder", "path",
        allow=(FileNotFoundError,))
    add(a, "to_reference_json layout", lambda: ok.to_reference_json(layout="sideways"), "layout")
    add(a, "to_transforms_json paths count", lambda: ok.to_transforms_json(file_paths=["a"]), "file_paths")
    add(a, "to_npz into missing folder", lambda: ok.to_npz(f["dir"] / "nope" / "t.npz"), "nope", "path",
        allow=(FileNotFoundError,))
    # fit_to_scene
    pts = torch.rand(50, 3) + torch.tensor([0, 0, 2.0])
    add(a, "fit points empty", lambda: ok.fit_to_scene(torch.zeros(0, 3)), "points")
    add(a, "fit points nan", lambda: ok.fit_to_scene(torch.full((10, 3), float("nan"))), "points")
    add(a, "fit points shape", lambda: ok.fit_to_scene(torch.rand(10, 4)), "points")
    add(a, "fit points str", lambda: ok.fit_to_scene("cloud.ply"), "points")
    add(a, "fit min_coverage 2", lambda: ok.fit_to_scene(pts, min_coverage=2.0), "min_coverage")
    add(a, "fit min_coverage nan", lambda: ok.fit_to_scene(pts, min_coverage=float("nan")), "min_coverage")
    add(a, "fit max_scale neg", lambda: ok.fit_to_scene(pts, max_scale=-1.0), "max_scale")
    add(a, "fit unknown kw", lambda: ok.fit_to_scene(pts, colour="red"), "colour")
    add(a, "fit no intrinsics", lambda: CT(torch.stack([eye] * 3)).fit_to_scene(pts), "K", "intrinsics")
    add(a, "fit K wrong", lambda: ok.fit_to_scene(pts, torch.eye(2), height=H, width=W), "K")
    add(a, "fit huge size", lambda: ok.fit_to_scene(pts, height=10**6, width=10**6), "height", "width")
    add(a, "fit points_per_pixel huge", lambda: ok.fit_to_scene(pts, points_per_pixel=10**6), "points_per_pixel")


def pointcloud_cases(api: Api, f: dict[str, Path]) -> None:
    from worldstereo import PointCloud

    a = "pointcloud"
    add = api.add
    pc = PointCloud.from_tensor(torch.rand(10, 3))
    add(a, "init xyz str", lambda: PointCloud("xyz", torch.rand(3, 3)), "xyz")
    add(a, "init xyz shape", lambda: PointCloud(torch.rand(10, 2), torch.rand(10, 3)), "xyz")
    add(a, "init rgb mismatch", lambda: PointCloud(torch.rand(10, 3), torch.rand(9, 3)), "rgb")
    add(a, "init nan xyz", lambda: PointCloud(torch.full((3, 3), float("nan")), torch.rand(3, 3)), "xyz")
    add(a, "init rgb out of range", lambda: PointCloud(torch.rand(3, 3), torch.full((3, 3), 7.0)), "rgb")
    add(a, "init normals shape", lambda: PointCloud(torch.rand(3, 3), torch.rand(3, 3), torch.rand(2, 3)), "normals")
    add(a, "from_tensor (N,4)", lambda: PointCloud.from_tensor(torch.rand(5, 4)), "points")
    add(a, "from_tensor bool", lambda: PointCloud.from_tensor(torch.ones(5, 3, dtype=torch.bool)), "points")
    add(a, "from_tensor colors -5", lambda: PointCloud.from_tensor(torch.cat([torch.rand(5, 3), -5 * torch.ones(5, 3)], 1)),
        "colo")
    add(a, "from_tensor colors 300", lambda: PointCloud.from_tensor(torch.rand(5, 3), torch.full((5, 3), 300.0)), "colo")
    add(a, "from_tensor str", lambda: PointCloud.from_tensor("points"), "points")
    add(a, "from_tensor nested ragged", lambda: PointCloud.from_tensor([[1, 2, 3], [4]]), "points")
    add(a, "from_tensor inf xyz", lambda: PointCloud.from_tensor(torch.tensor([[float("inf"), 0, 0]])), "points", "xyz")
    add(a, "voxel 0", lambda: pc.voxel_down_sample(0.0), "voxel_size")
    add(a, "voxel nan", lambda: pc.voxel_down_sample(float("nan")), "voxel_size")
    add(a, "voxel tiny", lambda: PointCloud.from_tensor(torch.rand(10, 3) * 1e30).voxel_down_sample(1e-30), "voxel_size")
    add(a, "random n negative", lambda: pc.random_down_sample(-1), "n")
    add(a, "random n float", lambda: pc.random_down_sample(2.5), "n")
    add(a, "crop shapes", lambda: pc.crop([0, 0], [1, 1, 1]), "min_xyz")
    add(a, "crop nan", lambda: pc.crop([float("nan")] * 3, [1, 1, 1]), "min_xyz")
    add(a, "getitem float", lambda: pc[1.5], "idx", "index")
    add(a, "getitem out of range", lambda: pc[100], "idx", "index", allow=(IndexError,))
    add(a, "cat empty", lambda: PointCloud.cat([]), "clouds")
    add(a, "merge non cloud", lambda: pc.merge(5), "clouds", "others")
    add(a, "to bogus device", lambda: pc.to("quantum"), "device")
    add(a, "save_ply to dir", lambda: pc.save_ply(f["img_dir.png"]), "img_dir.png", "path")
    add(a, "save_ply missing folder", lambda: pc.save_ply(f["dir"] / "nope" / "p.ply"), "nope",
        allow=(FileNotFoundError,))
    add(a, "save_ply suffix txt", lambda: pc.save_ply(f["dir"] / "dir_for_ply_test" / "x"), "dir_for_ply_test",
        allow=(FileNotFoundError,))
    for name in ("ply_empty.ply", "ply_magic_only.ply", "ply_no_end.ply", "ply_huge_count.ply", "ply_neg_count.ply",
                 "ply_few_rows.ply", "ply_words.ply", "ply_nan.ply", "ply_color_300.ply", "ply_no_xyz.ply",
                 "ply_bad_type.ply", "ply_bad_format.ply", "ply_binary_short.ply", "ply_binary_list.ply",
                 "ply_dup_prop.ply", "ply_header_huge.ply", "ply_binary_garbage.ply", "img.png", "img_dir.png",
                 "img_selfloop.png"):
        add(a, f"load_ply {name}", (lambda n=name: PointCloud.load_ply(f[n])), name)
    add(a, "load_ply missing", lambda: PointCloud.load_ply(f["dir"] / "nope.ply"), "nope.ply",
        allow=(FileNotFoundError,))


def memory_cases(api: Api, f: dict[str, Path]) -> None:
    from worldstereo import GlobalGeometricMemory as G
    from worldstereo import SpatialStereoMemory as S

    a = "memory"
    add = api.add
    for kw, exp in [({"max_points": 0}, "max_points"), ({"max_points": 2.5}, "max_points"),
                    ({"max_points": True}, "max_points"), ({"update_frequency": "daily"}, "update_frequency"),
                    ({"point_radius": float("nan")}, "point_radius"), ({"point_radius": 0}, "point_radius"),
                    ({"point_radius": float("inf")}, "point_radius"), ({"point_radius": 1e6}, "point_radius"),
                    ({"points_per_pixel": 0}, "points_per_pixel"), ({"points_per_pixel": 10**6}, "points_per_pixel"),
                    ({"keyframes_per_update": 0}, "keyframes_per_update"),
                    ({"min_overlap_pixels": "many"}, "min_overlap_pixels"),
                    ({"min_overlap_pixels": -5}, "min_overlap_pixels"),
                    ({"sobel_threshold": float("nan")}, "sobel_threshold"), ({"contract": -1.0}, "contract"),
                    ({"renderer": "fast"}, "renderer"), ({"seed": "x"}, "seed"), ({"new_points_only": "no"}, "new_points_only")]:
        add(a, f"GlobalGeometricMemory {kw}", (lambda k=kw: G(**k)), *([exp] if isinstance(exp, str) else exp))
    for kw, exp in [({"memory_size": 0}, "memory_size"), ({"memory_size": 10**12}, "memory_size"),
                    ({"max_references": -1}, "max_references"), ({"frames_per_update": 1.5}, "frames_per_update"),
                    ({"retrieval": "magic"}, "retrieval"), ({"num_correspondences": 10**12}, "num_correspondences"),
                    ({"nframe": 1}, "nframe"), ({"nframe": True}, "nframe"), ({"seed": "x"}, "seed"),
                    ({"image_feature_model": 5}, "image_feature_model")]:
        add(a, f"SpatialStereoMemory {kw}", (lambda k=kw: S(**k)), exp)
    s = S()
    add(a, "spatial add bad image", lambda: s.add(torch.rand(5, 5), torch.eye(4), torch.tensor(K_OK)), "image")
    add(a, "spatial add nan w2c", lambda: s.add(torch.rand(3, H, W), torch.full((4, 4), float("nan")),
                                                 torch.tensor(K_OK)), "w2c")
    add(a, "spatial add K garbage", lambda: s.add(torch.rand(3, H, W), torch.eye(4), "K"), "K")
    add(a, "spatial add image > 1", lambda: s.add(torch.full((3, H, W), 9.0), torch.eye(4), torch.tensor(K_OK)), "image")
    for name in ("wm_missing_image", "wm_num_lies", "wm_ids_mismatch", "wm_abs_id", "wm_nul_id", "wm_matrix_bad",
                 "wm_id_int", "wm_garbage_image", "wm_list_doc", "img.png", "ex_empty"):
        add(a, f"load_worldmirror {name}", (lambda n=name: S.load_worldmirror(f[n])), name,
            allow=(FileNotFoundError,))
    add(a, "export_worldmirror onto a file", lambda: _bank_one().export_worldmirror(f["out_is_file"]), "out_is_file")
    g = G()
    add(a, "geometric update wrong shapes", lambda: g.update(torch.rand(2, 3, H, W), torch.rand(2, H, W),
                                                             torch.eye(4)[None], torch.tensor(K_OK)[None]), "w2c", "K")
    add(a, "geometric initialize nan depth", lambda: g.initialize(torch.rand(3, H, W), torch.full((H, W), float("nan")),
                                                                  torch.tensor(K_OK), torch.eye(4)), "depth")
    add(a, "geometric render huge size", lambda: _geo_one().render(torch.eye(4)[None], torch.tensor(K_OK)[None],
                                                                  10**6, 10**6), "height", "width")


def _bank_one() -> Any:
    from worldstereo import SpatialStereoMemory

    s = SpatialStereoMemory()
    s.add(torch.rand(3, H, W), torch.eye(4), torch.tensor(K_OK))
    return s


def _geo_one() -> Any:
    from worldstereo import GlobalGeometricMemory, PointCloud

    g = GlobalGeometricMemory()
    g.points = PointCloud.from_tensor(torch.rand(20, 3) + torch.tensor([0, 0, 2.0]))
    return g


def generation_cases(api: Api, f: dict[str, Path], model: Any, model_dir: Path) -> None:
    from worldstereo import (CameraTrajectory, SceneMemory, WorldStereoPipeline, generate_multi_view, generate_video,
                             generate_videos, reconstruct_3d)

    a = "generate_video"
    add = api.add
    img = torch.rand(3, H, W)
    tr = CameraTrajectory.orbit(num_frames=3, height=H, width=W)
    depth = torch.full((H, W), 2.0)
    base = dict(num_frames=3, height=H, width=W, num_inference_steps=1, depth_estimator=depth, seed=0)

    def gv(**over: Any) -> Callable[[], Any]:
        kw = {**base, **over}
        image = kw.pop("image", img)
        traj = kw.pop("trajectory", tr)
        m = kw.pop("model", model)
        return lambda: generate_video(m, image, traj, **kw)

    for key, value, exp in [
        ("num_frames", 4, "num_frames"), ("num_frames", 1, "num_frames"), ("num_frames", 3.0, "num_frames"),
        ("height", 17, "height"), ("height", 0, "height"), ("height", -16, "height"), ("height", "32", "height"),
        ("height", 16 * 10**6, "height"), ("width", 10**9 * 16, "width"), ("height", True, "height"),
        ("num_inference_steps", 0, "num_inference_steps"), ("num_inference_steps", 10**9, "num_inference_steps"),
        ("num_inference_steps", 2.0, "num_inference_steps"), ("guidance_scale", float("nan"), "guidance_scale"),
        ("guidance_scale", -1, "guidance_scale"), ("guidance_scale", float("inf"), "guidance_scale"),
        ("guidance_scale", 1e300, "guidance_scale"), ("guidance_scale", "5", "guidance_scale"),
        ("seed", -1, "seed"), ("seed", 2**64, "seed"), ("seed", 1.5, "seed"), ("seed", "0", "seed"),
        ("output_format", "gif", "output_format"), ("output_format", None, "output_format"),
        ("output_format", ["tensor"], "output_format"), ("output_format", "video", "save_path"),
        ("save_path", str(f["dir"] / "v.avi"), "save_path"), ("save_path", str(f["dir"] / "nope" / "v.mp4"), "save_path"),
        ("save_path", str(f["img_dir.png"]), "save_path"), ("save_path", 5, "save_path"),
        ("save_path", str(f["dir"] / "v\x00.mp4"), "save_path"), ("save_path", "", "save_path"),
        ("progress_callback", 5, "progress_callback"), ("prompt", None, "prompt"), ("prompt", 5, "prompt"),
        ("prompt", b"bytes", "prompt"), ("negative_prompt", 5, "negative_prompt"),
        ("use_geometric_memory", "no", "use_geometric_memory"), ("use_spatial_memory", 0, "use_spatial_memory"),
        ("panorama", "yes", "panorama"), ("panorama", True, "panorama"),
        ("memory", {"a": 1}, "memory"), ("point_cloud", torch.rand(5, 4), "point_cloud"),
        ("point_cloud", torch.zeros(0, 3), "point_cloud"), ("point_cloud", torch.full((5, 3), float("nan")), "point_cloud"),
        ("point_cloud", "cloud.ply", "point_cloud"), ("point_cloud", [[1, 2]], "point_cloud"),
        ("point_cloud", torch.cat([torch.rand(5, 3), 9 * torch.ones(5, 3)], 1) * 100, "point_cloud"),
        ("depth_estimator", torch.full((5, 5), 2.0), "depth"), ("depth_estimator", torch.full((H, W), float("nan")), "depth"),
        ("depth_estimator", torch.full((H, W), -1.0), "depth"), ("depth_estimator", torch.zeros(H, W), "depth"),
        ("depth_estimator", 5, "depth"), ("depth_estimator", str(f["depth_lying.npy"]), "depth_lying.npy"),
        ("depth_estimator", str(f["dir"] / "nope.npy"), "nope.npy"), ("depth_estimator", str(f["img_dir.png"]), "depth"),
        ("depth_estimator", np.full((H, W), 2.0, dtype=object), "depth"),
        ("depth_estimator", torch.full((H, W), 3e38), "depth"),
        ("render_video", torch.rand(2, 3, H, W), "render_video"), ("render_video", torch.rand(3, 3, H, W) * 5, "render_video"),
        ("render_video", str(f["vid_garbage.mp4"]), ("vid_garbage.mp4", "render_mask")), ("render_video", str(f["vid_2f.mp4"]), "render_video"),
        ("render_video", 5, "render_video"),
        ("render_mask", torch.rand(3, 1, H, W), ("render_video", "render_mask")),
        ("reference_images", torch.rand(2, 3, H, W), "reference_w2c"),
        ("reference_w2c", torch.eye(4)[None], "reference_images"),
        ("latents", torch.randn(1, 16, 3, 2, 2), "latents"), ("latents", torch.full((1, 16, 3, 4, 6), float("nan")), "latents"),
        ("latents", "noise", "latents"),
        ("ref_index", [0], ("ref_index", "reference")),
        ("image", "no_such_image.png", "no_such_image.png"), ("image", str(f["img_text.png"]), "img_text.png"),
        ("image", str(f["img_bomb.png"]), "img_bomb.png"), ("image", str(f["img_float_big.tif"]), "img_float_big.tif"),
        ("image", torch.rand(4, 4), ("condition_image", "depth")), ("image", torch.rand(3, H, W) * 3, "condition_image"),
        ("image", torch.full((3, H, W), float("nan")), "condition_image"), ("image", None, "condition_image"),
        ("image", 42, "condition_image"), ("image", np.zeros((H, W, 3), np.float64) - 1, "condition_image"),
        ("image", torch.rand(2, 3, H, W), "condition_image"), ("image", torch.rand(3, 0, W), "condition_image"),
        ("image", str(f["img_dir.png"]), "img_dir.png"), ("image", str(f["img_selfloop.png"]), "img_selfloop.png"),
        ("image", str(f["img_link_passwd.png"]), "img_link_passwd.png"),
        ("trajectory", "orbit", "camera_trajectory"), ("trajectory", None, "camera_trajectory"),
        ("model", None, "model"), ("model", "path/to/model", "model"), ("model", torch.nn.Linear(2, 2), "model"),
        ("unknown_kwarg", 1, "unknown_kwarg"),
    ]:
        add(a, f"{key}={_short(value)}", gv(**{key: value}), *((exp,) if isinstance(exp, str) else exp))
    add(a, "render_mask without render", gv(render_mask=torch.zeros(3, 1, H, W)), "render_video", "render_mask")
    add(a, "render with point_cloud", gv(render_video=torch.rand(3, 3, H, W), render_mask=torch.zeros(3, 1, H, W),
                                         point_cloud=torch.rand(5, 3)), "point_cloud")
    add(a, "render mask values 5", gv(render_video=torch.rand(3, 3, H, W), render_mask=torch.full((3, 1, H, W), 5.0)),
        "render_mask")
    add(a, "render mask nan", gv(render_video=torch.rand(3, 3, H, W), render_mask=torch.full((3, 1, H, W), float("nan"))),
        "render_mask")
    add(a, "ref_index out of range", gv(reference_images=torch.rand(1, 3, H, W), reference_w2c=torch.eye(4)[None],
                                         ref_index=[7]), "ref_index")
    add(a, "ref_index float", gv(reference_images=torch.rand(1, 3, H, W), reference_w2c=torch.eye(4)[None],
                                  ref_index=[0.5]), "ref_index")
    add(a, "reference_w2c nan", gv(reference_images=torch.rand(1, 3, H, W),
                                    reference_w2c=torch.full((1, 4, 4), float("nan"))), "reference_w2c")
    add(a, "reference_images > 1", gv(reference_images=torch.full((1, 3, H, W), 4.0), reference_w2c=torch.eye(4)[None]),
        "reference_images")
    add(a, "reference count mismatch", gv(reference_images=torch.rand(2, 3, H, W), reference_w2c=torch.eye(4)[None].repeat(3, 1, 1)),
        "reference")
    add(a, "too many references", gv(reference_images=torch.rand(500, 3, 4, 4), reference_w2c=torch.eye(4)[None].repeat(500, 1, 1),
                                     ref_index=[0] * 500), "reference")
    add(a, "panorama on 3:2 image", gv(panorama=True), "panorama", "condition_image")
    add(a, "panorama image trajectory huge height", gv(image=str(f["pano.png"]), height=4096, width=8192 * 2),
        "height", "width")
    add(a, "memory from another model", gv(memory=SceneMemory(geometric="x")), "memory")

    # generate_videos
    a = "generate_videos"
    job = {"condition_image": img, "camera_trajectory": tr, **{k: v for k, v in base.items()}}
    add(a, "jobs not a list", lambda: generate_videos(model, 5), "jobs")
    add(a, "jobs str", lambda: generate_videos(model, "jobs.jsonl"), "jobs")
    add(a, "job not a dict", lambda: generate_videos(model, [5]), "jobs[0]")
    add(a, "job missing image", lambda: generate_videos(model, [{"camera_trajectory": tr}]), "jobs[0]")
    add(a, "job bad height", lambda: generate_videos(model, [job, {**job, "height": 17}]), "jobs[1]")
    add(a, "batch_size 0", lambda: generate_videos(model, [job], batch_size=0), "batch_size")
    add(a, "batch_size float", lambda: generate_videos(model, [job], batch_size=1.5), "batch_size")
    add(a, "return_exceptions str", lambda: generate_videos(model, [job], return_exceptions="yes"), "return_exceptions")
    add(a, "job unknown key", lambda: generate_videos(model, [{**job, "colour": 1}]), "colour")
    add(a, "job save_path dir", lambda: generate_videos(model, [{**job, "save_path": str(f["img_dir.png"])}]), "save_path")

    # generate_multi_view
    a = "generate_multi_view"
    mv = {k: v for k, v in base.items() if k != "num_frames"}
    add(a, "trajectories empty", lambda: generate_multi_view(model, img, [], **mv), "trajectories")
    add(a, "trajectories one trajectory", lambda: generate_multi_view(model, img, tr, **mv), "trajectories")
    add(a, "trajectories str", lambda: generate_multi_view(model, img, "orbit", **mv), "trajectories")
    add(a, "trajectories with None", lambda: generate_multi_view(model, img, [tr, None], **mv), "trajectories[1]")
    add(a, "shared_memory str", lambda: generate_multi_view(model, img, [tr], shared_memory="yes", **mv), "shared_memory")
    add(a, "save_path list short", lambda: generate_multi_view(model, img, [tr, tr], save_path=["a.mp4"], **mv),
        "save_path")
    add(a, "save_path int", lambda: generate_multi_view(model, img, [tr, tr], save_path=5, **mv), "save_path")
    add(a, "save_path avi", lambda: generate_multi_view(model, img, [tr, tr], save_path=str(f["dir"] / "x.avi"), **mv),
        "save_path")
    add(a, "save_path list with dir", lambda: generate_multi_view(
        model, img, [tr, tr], save_path=[str(f["dir"] / "a.mp4"), str(f["img_dir.png"])], **mv), "save_path")
    add(a, "num_frames mismatch", lambda: generate_multi_view(model, img, [tr], num_frames=5, **mv), "num_frames")
    add(a, "height bad", lambda: generate_multi_view(model, img, [tr, tr], **{**mv, "height": 17}), "height")
    add(a, "image missing", lambda: generate_multi_view(model, "nope.png", [tr], **mv), "nope.png")
    add(a, "memory wrong type", lambda: generate_multi_view(model, img, [tr], memory="mem", **mv), "memory")
    add(a, "unknown kwarg", lambda: generate_multi_view(model, img, [tr], colour=1, **mv), "colour")
    add(a, "model None", lambda: generate_multi_view(None, img, [tr], **mv), "model")

    # reconstruct_3d
    a = "reconstruct_3d"
    rk = {k: v for k, v in base.items() if k not in ("num_frames", "depth_estimator")}
    add(a, "method bad", lambda: reconstruct_3d(model, img, tr, "voxels", 3, **rk), "reconstruction_method")
    add(a, "method list", lambda: reconstruct_3d(model, img, tr, ["mesh"], 3, **rk), "reconstruction_method")
    add(a, "output_format pil", lambda: reconstruct_3d(model, img, tr, "mesh", 3, output_format="pil", **rk),
        "output_format")
    add(a, "fixed depth without model estimator", lambda: reconstruct_3d(model, img, tr, "point_cloud", 3,
                                                                       depth_estimator=depth, **rk), "depth_estimator")
    add(a, "num_frames mismatch", lambda: reconstruct_3d(model, img, tr, "mesh", 5, depth_estimator=depth, **rk),
        "num_frames", "depth_estimator")
    add(a, "height bad", lambda: reconstruct_3d(model, img, tr, "mesh", 3, **{**rk, "height": 7}), "height")
    add(a, "memory wrong type", lambda: reconstruct_3d(model, img, tr, "mesh", 3, memory=5, **rk), "memory")
    add(a, "depth_estimator int", lambda: reconstruct_3d(model, img, tr, "mesh", 3, depth_estimator=5, **rk), "depth")
    add(a, "model None", lambda: reconstruct_3d(None, img, tr, "mesh", 3, **rk), "model")
    add(a, "trajectory None", lambda: reconstruct_3d(model, img, None, "mesh", 3, **rk), "camera_trajectory")

    # WorldStereoPipeline
    a = "pipeline"
    add(a, "model_path int", lambda: WorldStereoPipeline(5, device="cpu"), "model_path")
    add(a, "device bogus", lambda: WorldStereoPipeline(str(model_dir), device="quantum"), "device")
    add(a, "device cuda", lambda: WorldStereoPipeline(str(model_dir), device="cuda"), "device")
    add(a, "device cuda:7", lambda: WorldStereoPipeline(str(model_dir), device="cuda:7"), "device")
    add(a, "device int", lambda: WorldStereoPipeline(str(model_dir), device=3.5), "device")
    add(a, "dtype str", lambda: WorldStereoPipeline(str(model_dir), device="cpu", torch_dtype="float16"), "torch_dtype")
    add(a, "dtype int8", lambda: WorldStereoPipeline(str(model_dir), device="cpu", torch_dtype=torch.int8), "torch_dtype")
    add(a, "xformers str", lambda: WorldStereoPipeline(str(model_dir), device="cpu", enable_xformers="no"),
        "enable_xformers")
    add(a, "offload int", lambda: WorldStereoPipeline(str(model_dir), device="cpu", enable_cpu_offload=1),
        "enable_cpu_offload")
    add(a, "memory_tier bogus", lambda: WorldStereoPipeline(str(model_dir), device="cpu", memory_tier="huge"),
        "memory_tier")
    add(a, "memory_tier offload on cpu", lambda: WorldStereoPipeline(str(model_dir), device="cpu",
                                                                     memory_tier="group_offload"), "memory_tier")
    add(a, "memory_tier auto on cpu", lambda: WorldStereoPipeline(str(model_dir), device="cpu", memory_tier="auto"),
        "memory_tier")
    add(a, "memory_tier + offload", lambda: WorldStereoPipeline(str(model_dir), device="cpu", memory_tier="resident",
                                                                enable_cpu_offload=True), "memory_tier")
    add(a, "memory_tier int", lambda: WorldStereoPipeline(str(model_dir), device="cpu", memory_tier=3), "memory_tier")
    add(a, "variant bogus", lambda: WorldStereoPipeline(str(model_dir), device="cpu", variant="v2"), "variant")
    add(a, "model_path missing", lambda: WorldStereoPipeline(str(f["dir"] / "nope"), device="cpu"), "nope",
        allow=(FileNotFoundError,))
    add(a, "unknown kwarg", lambda: WorldStereoPipeline(str(model_dir), device="cpu", colour=1), "colour")


def checkpoint_cases(api: Api, f: dict[str, Path], model: Any, model_dir: Path) -> None:
    """from_pretrained on broken folders (these cases may load: the check must come first)."""
    from worldstereo import WorldStereo

    a = "checkpoint"
    add = api.add
    root = f["model_configs"]
    cfg = json.loads((model_dir / "config.json").read_text())

    def variant_dir(name: str, mutate: Callable[[Path], None]) -> Path:
        d = root / name
        shutil.copytree(model_dir, d, symlinks=True)
        manifest = d / "worldstereo_manifest.json"
        if manifest.exists():
            manifest.unlink()  # hand-edited copies are loaded as they are
        mutate(d)
        return d

    def set_config(path: str, value: Any, *, remove: bool = False) -> Callable[[Path], None]:
        def mutate(d: Path) -> None:
            doc = json.loads((d / "config.json").read_text())
            node = doc
            keys = path.split(".")
            for k in keys[:-1]:
                node = node[k]
            if remove:
                node.pop(keys[-1], None)
            else:
                node[keys[-1]] = value
            (d / "config.json").write_text(json.dumps(doc))
        return mutate

    cases = [
        ("layers 1e9", set_config("transformer.num_layers", 10**9), "num_layers"),
        ("layers -1", set_config("transformer.num_layers", -1), "num_layers"),
        ("layers 2.5", set_config("transformer.num_layers", 2.5), "num_layers"),
        ("layers str", set_config("transformer.num_layers", "3"), "num_layers"),
        ("heads 0", set_config("transformer.num_attention_heads", 0), "num_attention_heads"),
        ("ffn huge", set_config("transformer.ffn_dim", 10**8), "ffn_dim"),
        ("eps nan-ish", set_config("transformer.eps", -1.0), "eps"),
        ("patch_size str", set_config("transformer.patch_size", "1,2,2"), "patch_size"),
        ("patch_size long", set_config("transformer.patch_size", [1, 2, 2, 2]), "patch_size"),
        ("qk_norm bogus", set_config("transformer.qk_norm", "magic"), "qk_norm"),
        ("model_type bogus", set_config("model_type", "worldstereo-v9"), "model_type"),
        ("nframe 0", set_config("nframe", 0), "nframe"),
        ("scale_map bad", set_config("scale_map", [[1, 2, 3]]), "scale_map"),
        ("scale_map dict", set_config("scale_map", {"a": 1}), "scale_map"),
        ("controlnet dim huge", set_config("controlnet_cfg.dim", 10**6), "dim"),
        ("controlnet layers 1e6", set_config("controlnet_cfg.num_layers", 10**6), "num_layers"),
        ("controlnet missing", set_config("controlnet_cfg", None, remove=True), "controlnet_cfg"),
        ("transformer missing", set_config("transformer", None, remove=True), "transformer"),
        ("transformer list", set_config("transformer", [1, 2]), "transformer"),
        ("negative_prompt int", set_config("negative_prompt", 5), "negative_prompt"),
        ("text_dim mismatch", set_config("transformer.text_dim", 32), "text_dim"),
        ("in_channels 1e6", set_config("transformer.in_channels", 10**6), "in_channels"),
    ]
    for name, mutate, exp in cases:
        d = variant_dir(name.replace(" ", "_"), mutate)
        add(a, f"config {name}", (lambda p=d: WorldStereo.from_pretrained(p)), exp, "config.json")

    def write(rel: str, data: bytes | str) -> Callable[[Path], None]:
        def mutate(d: Path) -> None:
            p = d / rel
            if isinstance(data, str):
                p.write_text(data)
            else:
                p.write_bytes(data)
        return mutate

    st = (model_dir / "model.safetensors").read_bytes()
    import struct as _struct

    n = _struct.unpack("<Q", st[:8])[0]
    header = json.loads(st[8:8 + n])
    first = next(k for k in header if k != "__metadata__")

    def header_with(**changes: Any) -> bytes:
        h = json.loads(json.dumps(header))
        h[first].update(changes)
        raw = json.dumps(h).encode()
        return _struct.pack("<Q", len(raw)) + raw + st[8 + n:]

    for name, mutate, exp in [
        ("config.json empty", write("config.json", ""), "config.json"),
        ("config.json binary", write("config.json", bytes(range(256))), "config.json"),
        ("config.json list", write("config.json", "[1]"), "config.json"),
        ("config.json NaN", write("config.json", json.dumps(cfg).replace('"eps": 1e-06', '"eps": NaN')), "config.json"),
        ("config.json deep", write("config.json", "[" * 100000 + "]" * 100000), "config.json"),
        ("safetensors empty", write("model.safetensors", b""), "model.safetensors"),
        ("safetensors truncated", write("model.safetensors", st[: len(st) // 2]), "model.safetensors"),
        ("safetensors header huge", write("model.safetensors", _struct.pack("<Q", 2**62) + b"{}"), "model.safetensors"),
        ("safetensors garbage", write("model.safetensors", bytes(range(256)) * 10), "model.safetensors"),
        ("safetensors offsets 1e12", write("model.safetensors", header_with(data_offsets=[0, 10**12])), "model.safetensors"),
        ("safetensors dtype bogus", write("model.safetensors", header_with(dtype="F128")), "model.safetensors"),
        ("safetensors shape wrong", write("model.safetensors", header_with(shape=[1, 2, 3])), "model.safetensors"),
        ("safetensors NaN weights", _nan_weights, "model.safetensors"),
        ("safetensors missing", lambda d: (d / "model.safetensors").unlink(), "model.safetensors"),
        ("safetensors is dir", lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors").mkdir()),
         "model.safetensors"),
        ("safetensors symlink loop", lambda d: ((d / "model.safetensors").unlink(),
                                                (d / "model.safetensors").symlink_to(d / "model.safetensors")),
         "model.safetensors"),
        ("pickle only", lambda d: ((d / "model.safetensors").unlink(), (d / "pytorch_model.bin").write_bytes(b"x")),
         ("pickle", "allow_pickle")),
        ("worldstereo_config garbage", write("worldstereo_config.json", "{oops"), "worldstereo_config.json"),
        ("worldstereo_config memory bad", write("worldstereo_config.json", json.dumps(
            {**json.loads((model_dir / "worldstereo_config.json").read_text()),
             "spatial_memory_config": {"memory_size": -3}})), "memory_size"),
        ("vae config garbage", write("vae/config.json", "{"), "vae"),
        ("vae weights garbage", write("vae/diffusion_pytorch_model.safetensors", b"\x00" * 100), "vae"),
        ("text_encoder config huge", write("text_encoder/config.json", json.dumps(
            {**json.loads((model_dir / "text_encoder" / "config.json").read_text()), "d_model": 10**7,
             "num_layers": 10**5})), "text_encoder"),
        ("image_encoder missing", lambda d: shutil.rmtree(d / "image_encoder"), "image_encoder"),
        ("tokenizer garbage", write("tokenizer/tokenizer.json", "{garbage"), "tokenizer"),
        ("scheduler bad shift", write("scheduler/scheduler_config.json", json.dumps({"flow_shift": -3})), "flow_shift"),
        ("scheduler config list", write("scheduler/scheduler_config.json", "[]"), "scheduler"),
    ]:
        d = variant_dir(name.replace(" ", "_").replace(".", "_"), mutate)
        add(a, name, (lambda p=d: WorldStereo.from_pretrained(p)), *((exp,) if isinstance(exp, str) else exp))
    add(a, "from_pretrained int", lambda: WorldStereo.from_pretrained(5), "name_or_path")
    add(a, "from_pretrained None", lambda: WorldStereo.from_pretrained(None), "name_or_path")
    add(a, "from_pretrained empty str", lambda: WorldStereo.from_pretrained(""), "name_or_path")
    add(a, "from_pretrained missing dir", lambda: WorldStereo.from_pretrained(f["dir"] / "nope"), "nope",
        allow=(FileNotFoundError,))
    add(a, "from_pretrained file", lambda: WorldStereo.from_pretrained(f["img.png"]), "img.png")
    add(a, "from_pretrained bad hub id", lambda: WorldStereo.from_pretrained("a/b/c/d", local_files_only=True), "a/b/c/d",
        allow=(FileNotFoundError,))
    add(a, "from_pretrained hub id offline", lambda: WorldStereo.from_pretrained("nobody/nothing", local_files_only=True),
        "nobody/nothing", allow=(FileNotFoundError,))
    add(a, "from_pretrained variant bogus", lambda: WorldStereo.from_pretrained(model_dir, "worldstereo-v9"), "variant")
    add(a, "from_pretrained variant mismatch", lambda: WorldStereo.from_pretrained(model_dir, "worldstereo-camera"),
        "variant")
    add(a, "from_pretrained dtype str", lambda: WorldStereo.from_pretrained(model_dir, torch_dtype="float16"),
        "torch_dtype")
    add(a, "from_pretrained dtype int", lambda: WorldStereo.from_pretrained(model_dir, torch_dtype=torch.int32),
        "torch_dtype")
    add(a, "from_pretrained device bogus", lambda: WorldStereo.from_pretrained(model_dir, device="quantum"), "device")
    add(a, "from_pretrained device cuda", lambda: WorldStereo.from_pretrained(model_dir, device="cuda:3"), "device")
    add(a, "from_pretrained memory config bad", lambda: WorldStereo.from_pretrained(
        model_dir, global_memory_config={"max_points": -1}), "max_points")
    add(a, "from_pretrained memory config unknown", lambda: WorldStereo.from_pretrained(
        model_dir, spatial_memory_config={"colour": 1}), "colour")
    add(a, "from_pretrained memory config list", lambda: WorldStereo.from_pretrained(
        model_dir, spatial_memory_config=[1]), "spatial_memory_config")
    add(a, "from_pretrained base_model missing", lambda: WorldStereo.from_pretrained(
        model_dir, base_model=f["dir"] / "nope"), "base_model", "nope", allow=(FileNotFoundError,))
    add(a, "from_pretrained allow_pickle str", lambda: WorldStereo.from_pretrained(model_dir, allow_pickle="yes"),
        "allow_pickle")
    add(a, "save_pretrained onto a file", lambda: model.save_pretrained(f["out_is_file"]), "out_is_file", "folder")
    add(a, "save_pretrained int", lambda: model.save_pretrained(5), "folder")
    add(a, "save_pretrained None", lambda: model.save_pretrained(None), "folder")
    add(a, "save_pretrained under a file", lambda: model.save_pretrained(f["out_is_file"] / "sub"), "out_is_file", "folder")
    add(a, "save_pretrained NUL", lambda: model.save_pretrained(str(f["dir"] / "a\x00b")), "folder")
    add(a, "save_pretrained empty str", lambda: model.save_pretrained(""), "folder")
    add(a, "save_pretrained self loop link", lambda: model.save_pretrained(f["out_loop"]), "out_loop", "folder")
    add(a, "WorldStereo() no config", lambda: WorldStereo(), "vdm_config")
    add(a, "WorldStereo(vdm_config=list)", lambda: WorldStereo(vdm_config=[1]), "vdm_config")
    add(a, "WorldStereo huge vae config", lambda: WorldStereo(vdm_config={**cfg, "vae": {"base_dim": 10**6}}), "vae")
    add(a, "WorldStereo components unknown", lambda: WorldStereo(vdm_config=cfg, components={"gpu": 1}), "components")


def _nan_weights(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    k = next(iter(sd))
    sd[k] = torch.full_like(sd[k], float("nan"))
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})


def reconstruction_cases(api: Api, f: dict[str, Path]) -> None:
    from worldstereo import CameraTrajectory
    from worldstereo.reconstruction import (read_colmap_text, read_transforms_json, read_worldmirror_cameras,
                                            reconstruct, save_reconstruction, write_colmap_text, write_mesh,
                                            write_points_ply, write_transforms_json, write_viewer, write_worldmirror)

    a = "reconstruct"
    add = api.add
    T = 3
    frames = torch.rand(T, 3, H, W)
    tr = CameraTrajectory(torch.eye(4)[None].repeat(T, 1, 1), torch.tensor(K_OK), H, W)
    depth = torch.full((T, H, W), 2.0)

    def rc(**over: Any) -> Callable[[], Any]:
        kw = dict(frames=frames, trajectory=tr, method="point_cloud", depth=depth, progress=False, compute_metrics=False)
        kw.update(over)
        return lambda: reconstruct(kw.pop("frames"), kw.pop("trajectory"), **kw)

    for key, value, exp in [
        ("method", "voxels", "method"), ("method", None, "method"), ("mesh_method", "marching", "mesh_method"),
        ("voxel_size", 0.0, "voxel_size"), ("voxel_size", float("nan"), "voxel_size"), ("voxel_size", -1, "voxel_size"),
        ("outlier_std_ratio", float("nan"), "outlier_std_ratio"), ("outlier_std_ratio", -1, "outlier_std_ratio"),
        ("field_iterations", -1, "field_iterations"), ("field_iterations", 10**12, "field_iterations"),
        ("field_iterations", 2.5, "field_iterations"), ("field_kwargs", [1], "field_kwargs"),
        ("field_kwargs", {"init": {"max_points": -5}}, "max_points"), ("field_kwargs", {"lr": float("nan")}, "lr"),
        ("scale_anchor", "middle", "scale_anchor"), ("align_depth", "yes", "align_depth"),
        ("compute_metrics", 1, "compute_metrics"), ("progress", "no", "progress"),
        ("reference_points", torch.zeros(0, 3), "reference_points"),
        ("reference_points", torch.full((4, 3), float("nan")), "reference_points"),
        ("reference_points", "points.ply", "reference_points"),
        ("frames", torch.rand(T, 4, H, W), "frames"), ("frames", torch.rand(T, 3, H, W) * 7, "frames"),
        ("frames", torch.full((T, 3, H, W), float("nan")), "frames"), ("frames", "video.mp4", "frames"),
        ("frames", torch.rand(0, 3, H, W), "frames"), ("frames", torch.rand(3, H, W), "frames"),
        ("frames", torch.rand(T, 3, 1, 1), "frames"),
        ("trajectory", None, "trajectory"), ("trajectory", tr[:2], "trajectory"), ("trajectory", "cams.json", "trajectory"),
        ("trajectory", CameraTrajectory(torch.eye(4)[None].repeat(T, 1, 1)), "trajectory"),
        ("depth", torch.full((T, H, W), float("nan")), "depth"), ("depth", torch.full((T, H, W), -2.0), "depth"),
        ("depth", torch.zeros(T, H, W), "depth"), ("depth", torch.full((2, H, W), 2.0), "depth"),
        ("depth", torch.full((T, 5), 2.0), "depth"), ("depth", "depth.npz", "depth"), ("depth", 5, "depth"),
        ("depth", torch.full((T, H, W), 3e38), "depth"),
        ("depth", torch.full((T, H, W), 1e-30), "depth"),
    ]:
        add(a, f"{key}={_short(value)}", rc(**{key: value}), exp)
    add(a, "neural field unknown kw", rc(method="neural_field", field_kwargs={"colour": 1}, field_iterations=1), "colour")
    add(a, "depth huge translation cameras", rc(trajectory=CameraTrajectory(torch.tensor(
        [[1, 0, 0, 1e30], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])[None].repeat(T, 1, 1), torch.tensor(K_OK), H, W),
        method="mesh"), "trajectory", "voxel", "bounds")

    a = "exporters"
    xyz = torch.rand(10, 3)
    add(a, "write_points_ply nan", lambda: write_points_ply(f["dir"] / "new.ply", torch.full((3, 3), float("nan"))),
        "xyz", "finite")
    add(a, "write_points_ply rgb 300", lambda: write_points_ply(f["dir"] / "new.ply", xyz, torch.full((10, 3), 300.0)),
        "rgb", "colo")
    add(a, "write_points_ply shape", lambda: write_points_ply(f["dir"] / "new.ply", torch.rand(10, 2)), "xyz")
    add(a, "write_points_ply rgb count", lambda: write_points_ply(f["dir"] / "new.ply", xyz, torch.rand(5, 3)), "rgb")
    add(a, "write_points_ply onto dir", lambda: write_points_ply(f["img_dir.png"], xyz), "img_dir.png", "path")
    add(a, "write_mesh not a mesh", lambda: write_mesh(f["dir"] / "m.glb", "mesh"), "mesh")
    add(a, "write_mesh bad suffix", lambda: write_mesh(f["dir"] / "m.xyz", _tiny_mesh()), "suffix", "m.xyz", "format")
    add(a, "write_transforms_json onto file", lambda: write_transforms_json(f["out_is_file"], tr), "out_is_file")
    add(a, "write_transforms_json frames count", lambda: write_transforms_json(f["dir"] / "newtr", tr, torch.rand(2, 3, H, W)),
        "frames")
    add(a, "write_transforms_json cameras None", lambda: write_transforms_json(f["dir"] / "newtr", None), "cameras")
    add(a, "write_colmap_text onto file", lambda: write_colmap_text(f["out_is_file"], tr), "out_is_file")
    add(a, "write_colmap_text names count", lambda: write_colmap_text(f["dir"] / "newcol", tr, names=["a"]), "names")
    add(a, "write_colmap_text points nan", lambda: write_colmap_text(f["dir"] / "newcol", tr,
                                                                     torch.full((3, 3), float("nan"))), "points")
    add(a, "write_worldmirror frames > 1", lambda: write_worldmirror(f["dir"] / "newwm", tr, torch.full((T, 3, H, W), 5.0)),
        "frames")
    add(a, "write_viewer not a recon", lambda: write_viewer(f["dir"] / "v.html", "rec"), "rec")
    add(a, "write_viewer max_points 0", lambda: write_viewer(f["dir"] / "v.html", {"points": xyz, "colors": xyz},
                                                             max_points=0), "max_points")
    add(a, "save_reconstruction formats bogus", lambda: save_reconstruction(
        {"points": xyz, "colors": xyz, "cameras": tr}, f["dir"] / "newrec", formats=["stl"]), "formats")
    add(a, "save_reconstruction formats str", lambda: save_reconstruction(
        {"points": xyz, "colors": xyz, "cameras": tr}, f["dir"] / "newrec", formats="ply"), "formats")
    add(a, "save_reconstruction not a recon", lambda: save_reconstruction(5, f["dir"] / "newrec"), "rec")
    add(a, "save_reconstruction onto file", lambda: save_reconstruction(
        {"points": xyz, "colors": xyz, "cameras": tr}, f["out_is_file"]), "out_is_file")
    for name in ("colmap_model_unknown", "colmap_params_missing", "colmap_cam_ref_missing", "colmap_dup_ids",
                 "colmap_huge_id", "colmap_points_bad", "colmap_size_neg", "colmap_binary", "colmap_bin_only", "img.png",
                 "ex_empty"):
        add(a, f"read_colmap_text {name}", (lambda n=name: read_colmap_text(f[n])), name, allow=(FileNotFoundError,))
    for name in ("tr_frames_dicts_missing", "tr_frames_not_dicts", "tr_fl_nan_str", "tr_fl_neg", "tr_w_float",
                 "tr_w_huge", "tr_no_intr", "tr_angle_nan", "tr_angle_pi", "tr_per_frame_bad", "tr_matrix_3x3",
                 "traj_null", "traj_number", "traj_deep_dict", "img_empty.png"):
        key = f"{name}.json" if not name.endswith(".png") else name
        add(a, f"read_transforms_json {name}", (lambda k=key: read_transforms_json(f[k])), key)
    for name in ("wm_num_lies", "wm_ids_mismatch", "wm_abs_id", "wm_nul_id", "wm_matrix_bad", "wm_id_int", "wm_list_doc"):
        add(a, f"read_worldmirror_cameras {name}", (lambda n=name: read_worldmirror_cameras(f[n] / "cameras.json")),
            name, "cameras.json")


def _tiny_mesh() -> Any:
    import trimesh

    return trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], faces=[[0, 1, 2]])


def reader_cases(api: Api, f: dict[str, Path]) -> None:
    """Every file reader on every bad file of its kind."""
    from worldstereo import CameraTrajectory as CT
    from worldstereo.depth import load_depth
    from worldstereo.io import load_image, read_ply, read_video
    from worldstereo.io.reference_inputs import read_reference_inputs

    add = api.add
    a = "readers"
    for name in ("img_empty.png", "img_text.png", "img_trunc.png", "img_header_only.png", "img_bomb.png", "img_wide.png",
                 "img_zero.png", "img_badbits.png", "img_garbage.jpg", "img_jpeg_trunc.jpg", "img_float_big.tif",
                 "img_float_nan.tif", "img_int_neg.tif", "img_dir.png", "img_selfloop.png", "img_dangling.png",
                 "img.svg", "img_tiff_garbage.tif", "img_bmp_lying.bmp", "img_link_passwd.png", "ply_ok.ply"):
        add(a, f"load_image {name}", (lambda n=name: load_image(f[n])), name, allow=(FileNotFoundError,))
    for name in ("traj_bigint", "traj_deep_dict", "traj_unicode", "traj_surrogate", "traj_ws",
                 "traj_null", "traj_number", "traj_empty_dict", "traj_empty_list", "traj_3x4", "traj_K_str",
                 "traj_K_zero", "traj_K_nested", "traj_K_many", "traj_neg_size", "traj_zero_size", "traj_bool_size",
                 "traj_scale", "traj_reflect", "traj_bottom", "traj_strings", "traj_nulls", "traj_bank_mixed",
                 "traj_bank_empty"):
        add(a, f"from_reference_json {name}", (lambda n=name: CT.from_reference_json(f[f"{n}.json"])), f"{name}.json")
    for name in ("ours_units", "ours_conv", "ours_conv_str", "ours_version_str", "ours_version_float",
                 "ours_format_list", "ours_K_count", "ours_no_w2c", "ours_fov_flag", "ours_height_only", "traj_ok"):
        add(a, f"CameraTrajectory.load {name}", (lambda n=name: CT.load(f[f"{n}.json"])), f"{name}.json")
    for name in ("re10k_short_row", "re10k_words", "re10k_inf", "re10k_neg_f", "re10k_singular", "re10k_only_url",
                 "re10k_long_line", "re10k_crlf_nul"):
        add(a, f"from_realestate10k {name}", (lambda n=name: CT.from_realestate10k(f[f"{n}.txt"], height=H, width=W)),
            f"{name}.txt")
    for name in ("npz_w2c_1d", "npz_w2c_nan", "npz_w2c_complex", "npz_w2c_str", "npz_w2c_bool",
                 "npz_K_shape", "npz_size_arr", "npz_zipbomb", "npz_empty_zip", "npz_not_npy_member", "npz_fortran_trunc",
                 "npz_trunc"):
        add(a, f"from_npz {name}", (lambda n=name: CT.from_npz(f[f"{n}.npz"])), f"{name}.npz")
    for name in ("depth_bool.npy", "depth_complex.npy", "depth_f16_inf.npy", "depth_0d.npy",
                 "depth_1d.npy", "depth_partial_nan.npy", "depth_empty.npy", "depth_huge_finite.npy", "depth_tiny.npy",
                 "depth_struct.npy", "depth_twokeys.npz", "depth_lying.npy",
                 "depth_neg_shape.npy", "depth_header_garbage.npy", "depth16_zero.png", "depth.exr",
                 "depth.pfm", "img.png", "npz_zipbomb.npz", "img_dir.png"):
        add(a, f"load_depth {name}", (lambda n=name: _depth_ok(load_depth(f[n]))), name)
    add(a, "load_depth scale 0", lambda: load_depth(f["depth_ok.npy"], 0.0), "scale")
    add(a, "load_depth scale nan", lambda: load_depth(f["depth_ok.npy"], float("nan")), "scale")
    add(a, "load_depth scale str", lambda: load_depth(f["depth_ok.npy"], "1"), "scale")
    for name in ("ply_empty.ply", "ply_huge_count.ply", "ply_neg_count.ply", "ply_binary_list.ply", "ply_header_huge.ply",
                 "ply_dup_prop.ply", "ply_binary_garbage.ply"):
        add(a, f"read_ply {name}", (lambda n=name: read_ply(f[n])), name)
    for name in ("vid_empty.mp4", "vid_garbage.mp4", "vid_ftyp_only.mp4", "vid_text.mp4", "vid_trunc.mp4",
                 "vid_audio_only.mp4", "img_dir.png"):
        add(a, f"read_video {name}", (lambda n=name: read_video(f[n])), name)
    add(a, "read_video max_bytes tiny", lambda: read_video(f["vid_ok.mp4"], max_bytes=10), "vid_ok.mp4")
    for name in ("ex_prompt_str", "ex_prompt_caption_int", "ex_camera_dir", "ex_empty",
                 "ex_recon_vid_garbage", "ex_recon_frames_mismatch", "ex_recon_no_mask", "ex_pano_bad_cams",
                 "ex_link_out", "img.png"):
        add(a, f"read_reference_inputs {name}", (lambda n=name: read_reference_inputs(f[n])), name, "inputs")


def _depth_ok(depth: Any) -> None:
    """A loaded depth that is entirely invalid is still a silent wrong result: report it."""
    t = torch.as_tensor(depth)
    if t.ndim != 2 or not bool((t > 0).any()) or not bool(torch.isfinite(t).all()):
        raise AssertionError(f"load_depth returned an unusable depth {tuple(t.shape)} without an error")


def misc_cases(api: Api, f: dict[str, Path], model: Any, model_dir: Path) -> None:
    from worldstereo import optimization, parallel
    from worldstereo.batch import load_jobs, run_batch, validate_jobs

    add = api.add
    a = "optimization"
    add(a, "tier bogus", lambda: optimization.enable_memory_tier(model, "huge"), "tier")
    add(a, "tier None", lambda: optimization.enable_memory_tier(model, None), "tier")
    add(a, "tier int", lambda: optimization.enable_memory_tier(model, 3), "tier")
    add(a, "tier offload on cpu", lambda: optimization.enable_memory_tier(model, "group_offload", device="cpu"),
        "tier", "device", "group_offload")
    add(a, "tier device bogus", lambda: optimization.enable_memory_tier(model, "resident", device="quantum"), "device")
    add(a, "tier device cuda", lambda: optimization.enable_memory_tier(model, "model_offload", device="cuda"), "device",
        "cuda")
    add(a, "tier model None", lambda: optimization.enable_memory_tier(None, "resident"), "model")
    add(a, "tier model Linear", lambda: optimization.enable_memory_tier(torch.nn.Linear(2, 2), "resident"), "model")
    add(a, "suggest nan", lambda: optimization.suggest_memory_tier(float("nan"), "worldstereo-memory"), "vram", "gb",
        "memory")
    add(a, "suggest negative", lambda: optimization.suggest_memory_tier(-1, "worldstereo-memory"), "vram", "gb", "memory")
    add(a, "suggest str", lambda: optimization.suggest_memory_tier("24", "worldstereo-memory"), "vram", "gb", "memory")
    add(a, "suggest variant bogus", lambda: optimization.suggest_memory_tier(24, "v9"), "variant")
    add(a, "suggest tiny vram", lambda: optimization.suggest_memory_tier(0.001, "worldstereo-memory"), "vram", "gb",
        "memory")
    add(a, "get_memory_tier bogus", lambda: optimization.get_memory_tier("huge"), "huge", "tier")
    add(a, "cpu offload model None", lambda: optimization.enable_model_cpu_offload(None), "model")
    add(a, "cpu offload device bogus", lambda: optimization.enable_model_cpu_offload(model, device="quantum"), "device")
    add(a, "xformers model None", lambda: optimization.enable_xformers_memory_efficient_attention(None), "model")

    a = "parallel"
    add(a, "enable_context_parallel no process group", lambda: parallel.enable_context_parallel(model, "ulysses"),
        "process group", "init_distributed", "torch.distributed")
    add(a, "enable_context_parallel mode bogus", lambda: parallel.enable_context_parallel(model, "sideways"), "mode")
    add(a, "enable_context_parallel group_size 0", lambda: parallel.enable_context_parallel(model, "ulysses", group_size=0),
        "group_size", "process group", "init_distributed")
    add(a, "enable_context_parallel model None", lambda: parallel.enable_context_parallel(None, "ulysses"), "model",
        "process group", "init_distributed")
    add(a, "init_distributed not under torchrun", lambda: parallel.init_distributed(), "torchrun", "RANK", "WORLD_SIZE")
    add(a, "init_distributed backend bogus", lambda: parallel.init_distributed("carrier-pigeon"), "backend", "torchrun")
    add(a, "shard_model without mesh", lambda: parallel.shard_model(model, None), "mesh")
    add(a, "decode_split bad state", lambda: parallel.decode_split(lambda x: x, torch.zeros(1), None), "state")

    a = "batch"
    for name in ("jobs_empty", "jobs_blank_lines", "jobs_garbage", "jobs_list_line", "jobs_nan", "jobs_unknown_field",
                 "jobs_missing_image", "jobs_image_missing_file", "jobs_image_dir", "jobs_output_escape",
                 "jobs_output_abs", "jobs_output_dup", "jobs_output_records", "jobs_seed_neg", "jobs_seed_float",
                 "jobs_frames_huge", "jobs_height_odd", "jobs_height_only", "jobs_preset_unknown", "jobs_preset_arg_bad",
                 "jobs_preset_arg_nan", "jobs_preset_arg_huge", "jobs_traj_file_bad", "jobs_traj_file_missing",
                 "jobs_depth_missing", "jobs_depth_bad", "jobs_variant_mix", "jobs_binary", "jobs_deep",
                 "jobs_bool_for_int", "jobs_guidance_str", "jobs_utf16", "jobs_many_errors", "jobs_image_garbage",
                 "jobs_fov_zero", "jobs_dup_key"):
        add(a, f"load_jobs {name}", (lambda n=name: load_jobs(f[f"{n}.jsonl"])), f"{name}.jsonl")
    add(a, "load_jobs dir", lambda: load_jobs(f["dir"]), str(f["dir"].name), "jobs")
    add(a, "load_jobs missing", lambda: load_jobs(f["dir"] / "nope.jsonl"), "nope.jsonl", allow=(FileNotFoundError,))
    add(a, "load_jobs defaults bad", lambda: load_jobs(f["jobs_ok.jsonl"], defaults={"seed": -1}), "seed")
    add(a, "load_jobs defaults unknown", lambda: load_jobs(f["jobs_ok.jsonl"], defaults={"colour": 1}), "colour")
    add(a, "load_jobs defaults output", lambda: load_jobs(f["jobs_ok.jsonl"], defaults={"output": "x"}), "output")
    add(a, "validate_jobs not a list", lambda: validate_jobs(5), "jobs")
    add(a, "validate_jobs dict", lambda: validate_jobs([{"image": 5}]), "image")
    add(a, "run_batch out is file", lambda: run_batch(f["jobs_ok.jsonl"], f["out_is_file"], str(f["dir"])), "out_is_file",
        "out")
    add(a, "run_batch batch_size 0", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir), batch_size=0),
        "batch_size")
    add(a, "run_batch model missing", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(f["dir"] / "nope")),
        "model", "nope", allow=(FileNotFoundError,))
    add(a, "run_batch dtype bogus", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir), dtype="int8"),
        "dtype")
    add(a, "run_batch device bogus", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir),
                                                       device="quantum"), "device")
    add(a, "run_batch device cuda", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir), device="cuda"),
        "device", "cuda")
    add(a, "run_batch fps 0", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir), fps=0), "fps")
    add(a, "run_batch memory_tier bogus", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir),
                                                            memory_tier="huge"), "memory_tier")
    add(a, "run_batch parallel bogus", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir),
                                                         parallel="sideways"), "parallel")
    add(a, "run_batch parallel without torchrun", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir),
                                                                    parallel="ulysses"), "parallel", "torchrun")
    add(a, "run_batch group_size 0", lambda: run_batch(f["jobs_ok.jsonl"], f["dir"] / "bo", str(model_dir), group_size=0),
        "group_size")
    add(a, "run_batch jobs missing", lambda: run_batch(f["dir"] / "nope.jsonl", f["dir"] / "bo", str(f["dir"])),
        "nope.jsonl", allow=(FileNotFoundError,))
    add(a, "run_batch out inside /proc", lambda: run_batch(f["jobs_ok.jsonl"], Path("/proc/nope/out"), str(f["dir"])),
        "out", "/proc")
    add(a, "run_batch out empty str", lambda: run_batch(f["jobs_ok.jsonl"], "", str(f["dir"])), "out")


def _must_raise(value: Any) -> None:
    raise AssertionError(f"returned {value!r}")


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


def all_api_cases(f: dict[str, Path], model: Any, model_dir: Path) -> list[Case]:
    api = Api()
    trajectory_cases(api, f)
    pointcloud_cases(api, f)
    memory_cases(api, f)
    generation_cases(api, f, model, model_dir)
    reconstruction_cases(api, f)
    reader_cases(api, f)
    misc_cases(api, f, model, model_dir)
    return api.cases


def checkpoint_api_cases(f: dict[str, Path], model: Any, model_dir: Path) -> list[Case]:
    api = Api()
    checkpoint_cases(api, f, model, model_dir)
    return api.cases
