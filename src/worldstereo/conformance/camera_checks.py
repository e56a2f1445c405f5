"""Conformance checkers for the ``camera_embedding`` and ``misc`` cases.

Shapes, frame counts and image sizes are read from the case files (the HOLDOUT set differs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.torch import load_file

from ..camera.embedding import (
    camera_center_normalization,
    camera_qt_tokens,
    plucker_embedding,
    unified_camera_normalization,
)
from ..camera.keyframes import sample_align_nframe, trajectory_subsample_linspace
from ..camera.resolution import assign_scale
from ..camera.rotations import matrix_to_quaternion
from .results import CheckResult, compare, compare_exact

__all__ = ["check_camera_embedding", "check_misc"]

CAMERA_TOL = 1e-5

_NORM_KEY = re.compile(r"^(?P<traj>traj[A-Za-z0-9]+)_norm_isw2c_(?P<isw2c>true|false)_scale(?P<scale>[0-9.]+)$")


def check_camera_embedding(case_dir: Path) -> list[CheckResult]:
    """Camera normalisations, Plücker maps, quaternions and camera tokens against ``data.safetensors``."""
    case_dir = Path(case_dir)
    data = load_file(str(case_dir / "data.safetensors"))
    meta_path = case_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    results: list[CheckResult] = []

    # camera_center_normalization, every stored variant
    for key in sorted(data):
        m = _NORM_KEY.match(key)
        if not m:
            continue
        w2c = data[f"{m['traj']}_w2c"]
        out = camera_center_normalization(w2c, w2c.shape[0], camera_scale=float(m["scale"]),
                                          is_w2c=m["isw2c"] == "true")
        results.append(compare(key, out, data[key], CAMERA_TOL))

    # Plücker maps
    for key in sorted(data):
        if not key.endswith("_plucker"):
            continue
        traj = key[: -len("_plucker")]
        w2c, K = data[f"{traj}_w2c"], data[f"{traj}_K"]
        H = int(meta.get("H", data[key].shape[-2]))
        W = int(meta.get("W", data[key].shape[-1]))
        results.append(compare(key, plucker_embedding(K, w2c, H, W, normalize=True), data[key], CAMERA_TOL))
        if f"{key}_unnormalized" in data:
            results.append(compare(f"{key}_unnormalized", plucker_embedding(K, w2c, H, W, normalize=False),
                                   data[f"{key}_unnormalized"], CAMERA_TOL))

    # quaternion extraction
    if "quat_rotations" in data:
        results.append(compare("quat_expected", matrix_to_quaternion(data["quat_rotations"]),
                               data["quat_expected"], CAMERA_TOL))

    # unified normalisation
    if "unified_target_w2c" in data:
        tgt, ref = unified_camera_normalization(data["unified_target_w2c"], data["unified_ref_w2c"], 2.0)
        results.append(compare("unified_target_w2c_normalized", tgt, data["unified_target_w2c_normalized"],
                               CAMERA_TOL))
        results.append(compare("unified_ref_w2c_normalized", ref, data["unified_ref_w2c_normalized"], CAMERA_TOL))
        qt, qt_ref = camera_qt_tokens(data["unified_target_w2c"], data["unified_ref_w2c"])
        if "camera_qt" in data:
            results.append(compare("camera_qt", qt, data["camera_qt"], CAMERA_TOL))
            results.append(compare("camera_qt_ref", qt_ref, data["camera_qt_ref"], CAMERA_TOL))
        if "singleview_camera_qt" in data:
            tgt_w2c = data["unified_target_w2c"]
            sv, sv_ref = camera_qt_tokens(tgt_w2c, tgt_w2c[0:1])
            results.append(compare("singleview_camera_qt", sv, data["singleview_camera_qt"], CAMERA_TOL))
            results.append(compare("singleview_camera_qt_ref", sv_ref, data["singleview_camera_qt_ref"], CAMERA_TOL))
    for key in sorted(data):
        m = re.match(r"^unified_(?P<traj>traj[A-Za-z0-9]+)_ref_w2c$", key)
        if not m:
            continue
        traj = m["traj"]
        tgt, ref = unified_camera_normalization(data[f"{traj}_w2c"], data[key], 2.0)
        results.append(compare(f"unified_{traj}_target_w2c_normalized", tgt,
                               data[f"unified_{traj}_target_w2c_normalized"], CAMERA_TOL))
        results.append(compare(f"unified_{traj}_ref_w2c_normalized", ref,
                               data[f"unified_{traj}_ref_w2c_normalized"], CAMERA_TOL))
    if not results:
        raise ValueError(f"case_dir: no recognised tensors in {case_dir / 'data.safetensors'}")
    return results


def check_misc(case_dir: Path) -> list[CheckResult]:
    """``assign_scale``, ``sample_align_nframe`` (incl. its ValueError) and the linspace subsampling,
    exact match against ``data.json``."""
    case_dir = Path(case_dir)
    data = json.loads((case_dir / "data.json").read_text())
    results: list[CheckResult] = []
    for i, e in enumerate(data.get("assign_scale", [])):
        got = assign_scale(e["h"], e["w"], e.get("scale_map"))
        results.append(compare_exact(f"assign_scale[{i}] {e['h']}x{e['w']}", list(got), e["result_hw"]))
    for i, e in enumerate(data.get("sample_align_nframe", [])):
        got = sample_align_nframe(e["N"], e["n"])
        results.append(compare_exact(f"sample_align_nframe[{i}] ({e['N']},{e['n']})", got, e["indices"]))
    for key, value in data.items():
        m = re.match(r"^sample_align_nframe\((\d+),\s*(\d+)\)$", key)
        if not m:
            continue
        try:
            got_exc = repr(sample_align_nframe(int(m[1]), int(m[2])))
        except Exception as exc:  # noqa: BLE001 - the expected outcome is an exception name
            got_exc = type(exc).__name__
        ok = got_exc == value
        detail = "" if ok else f"got {got_exc}, expected {value}"
        results.append(CheckResult(key, 0.0 if ok else float("inf"), 0.0, detail))
    for i, e in enumerate(data.get("trajectory_subsample_linspace", [])):
        got = trajectory_subsample_linspace(e["n"], e["nframe"])
        results.append(compare_exact(f"trajectory_subsample_linspace[{i}] ({e['n']},{e['nframe']})", got,
                                     e["indices"]))
    if not results:
        raise ValueError(f"case_dir: no recognised entries in {case_dir / 'data.json'}")
    return results
