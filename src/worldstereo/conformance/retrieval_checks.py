"""Conformance checker for the ``retrieval`` case (frustum-overlap retrieval, reference list,
camera selector). Works on any directory of the same layout: sizes, frame counts and scenario
names are read from ``meta.json`` and ``data.safetensors``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from ..memory.retrieval import CameraSelector, fov_overlap_scores, find_closest_camera, retrieve
from .results import CheckResult, compare, compare_exact

__all__ = ["check_retrieval", "SCORE_TOL", "ANGLE_TOL_DEG"]

#: Retrieval scores (IoU, penalised, quality): conformance README threshold.
SCORE_TOL = 1e-5
#: Angles are O(100) degrees stored in float32 (1 ulp = 7.6e-6 .. 1.5e-5) and the reference computes
#: them in float32 (arccos amplifies the rounding of the dot product): we compute in float64 and
#: observe <= 7e-5 degrees on the DEV set.
ANGLE_TOL_DEG = 2e-4
#: Reference w2c matrices are gathered by index: any error means a wrong entry.
POSE_TOL = 1e-6


def _structure_result(name: str, ok: bool, detail: str) -> CheckResult:
    return CheckResult(name, 0.0 if ok else float("inf"), 0.0, "" if ok else detail)


def _check_score_dict(name: str, actual: dict[int, dict[int, dict[str, float]]], expected: dict[str, Any]) -> list[CheckResult]:
    exp = {int(s): {int(f): v for f, v in frames.items()} for s, frames in expected.items()}
    act_keys = {s: sorted(fr) for s, fr in actual.items()}
    exp_keys = {s: sorted(fr) for s, fr in exp.items()}
    out = [_structure_result(f"{name}/keys", act_keys == exp_keys, f"slots/frames {act_keys} != expected {exp_keys}")]
    if act_keys == exp_keys:
        pairs = [(s, f) for s in sorted(exp) for f in sorted(exp[s])]
        out.append(compare(f"{name}/score", [actual[s][f]["score"] for s, f in pairs], [exp[s][f]["score"] for s, f in pairs], SCORE_TOL))
        out.append(
            compare(f"{name}/angle_diff", [actual[s][f]["angle_diff"] for s, f in pairs], [exp[s][f]["angle_diff"] for s, f in pairs], ANGLE_TOL_DEG)
        )
    return out


def check_retrieval(case_dir: Path) -> list[CheckResult]:
    """Check per-frame scores, shortcut scoring, every retrieval scenario and the camera selector.

    Args:
        case_dir: directory holding ``meta.json`` and ``data.safetensors`` of a retrieval case.

    Returns:
        One :class:`CheckResult` per compared quantity.
    """
    case_dir = Path(case_dir)
    meta = json.loads((case_dir / "meta.json").read_text())
    data = load_file(str(case_dir / "data.safetensors"))
    W, H = int(meta["image_width"]), int(meta["image_height"])
    nframe = int(meta["nframe"])
    names = list(meta["bank_fnames"])
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    tw2c_full, tK_full = t["target_w2c_full"], t["target_K_full"]
    bw2c, bK = t["bank_w2c"], t["bank_K"]
    results: list[CheckResult] = []

    # per-frame scores of the used trajectory (no shortcut)
    plain = retrieve(tw2c_full, tK_full, bw2c, bK, target_size=(W, H), nframe=nframe, max_references=len(names))
    used = plain.frame_indices
    if "n_target_used" in meta:
        results.append(compare_exact("n_target_used", len(used), int(meta["n_target_used"])))
    sel = torch.tensor(used)
    pair = fov_overlap_scores(tw2c_full[sel], tK_full[sel], bw2c, bK, (W, H), (W, H))
    if "frame_overlap_raw" in data:
        results.append(compare("frame_overlap_raw", pair.overlap[1:], data["frame_overlap_raw"], SCORE_TOL))
    if "frame_angle_deg" in data:
        results.append(compare("frame_angle_deg", pair.angle_deg[1:], data["frame_angle_deg"], ANGLE_TOL_DEG))
    if "frame_best_index" in data:
        results.append(compare_exact("frame_best_index", np.asarray(plain.retrieved, dtype=np.int64), data["frame_best_index"]))
    if "frame_best_score" in data:
        results.append(compare("frame_best_score", plain.scores, data["frame_best_score"], SCORE_TOL))
    if "frame_best_angle_deg" in data:
        results.append(compare("frame_best_angle_deg", plain.angles, data["frame_best_angle_deg"], ANGLE_TOL_DEG))

    selector = CameraSelector()
    for sc_name, sc in meta.get("scenarios", {}).items():
        if "shortcut_index" in sc:  # a single find_closest call with a forced index
            f = used[int(sc["target_frame"])]
            idx, score, angle = find_closest_camera(tw2c_full[f], tK_full[f], bw2c, bK, W, H, shortcut_index=int(sc["shortcut_index"]))
            results.append(compare_exact(f"{sc_name}/best_index", idx, int(sc["best_index"])))
            results.append(compare(f"{sc_name}/best_score", score, float(sc["best_score"]), SCORE_TOL))
            results.append(compare(f"{sc_name}/angle_deg", angle, float(sc["angle_deg"]), ANGLE_TOL_DEG))
        elif "retrieved_bank_index" in sc:  # a full retrieval call
            r = retrieve(
                tw2c_full, tK_full, bw2c, bK, target_size=(W, H), nframe=nframe,
                max_references=int(sc["max_reference"]), bank_names=names,
                view_id=sc.get("view_id"), traj_id=sc.get("traj_id"),
                bank_images=data["bank_images"], bank_features=data.get("bank_features"), selector=selector,
            )
            results.append(compare_exact(f"{sc_name}/retrieved_bank_index", r.retrieved, sc["retrieved_bank_index"]))
            results.append(compare_exact(f"{sc_name}/ref_index", r.ref_index, sc["ref_index"]))
            if "ref_bank_index" in sc:
                results.append(compare_exact(f"{sc_name}/ref_bank_index", r.ref_bank_indices, sc["ref_bank_index"]))
            if f"{sc_name}_ref_w2cs" in data:
                results.append(compare(f"{sc_name}/ref_w2cs", r.ref_w2c, data[f"{sc_name}_ref_w2cs"], POSE_TOL))
            if "ref_index_dict" in sc:
                results.extend(_check_score_dict(f"{sc_name}/ref_index_dict", r.score_dict, sc["ref_index_dict"]))
            if "selector" in sc:
                s = sc["selector"]
                ran = r.selected_positions is not None
                results.append(_structure_result(f"{sc_name}/selector_ran", ran, "the camera selector did not run"))
                if "candidate_bank_index" in s:
                    results.append(compare_exact(f"{sc_name}/selector/candidate_bank_index", r.initial_retrieved, s["candidate_bank_index"]))
                if ran and "selected_positions" in s:
                    results.append(compare_exact(f"{sc_name}/selector/selected_positions", r.selected_positions, s["selected_positions"]))
                if "quality_scores" in s:
                    q = selector.quality_scores(data["bank_images"][np.asarray(r.initial_retrieved, dtype=np.int64)])
                    results.append(compare(f"{sc_name}/selector/quality_scores", q, s["quality_scores"], SCORE_TOL))
        elif "indices" in sc and "selector_w2c" in data:  # standalone select()
            idx = selector.select(data["selector_w2c"], data["selector_images"], int(sc["topk"]), image_features=data["selector_features"])
            results.append(compare_exact(f"{sc_name}/indices", idx, sc["indices"]))
            if "selector_indices" in data:
                results.append(compare_exact(f"{sc_name}/selector_indices", idx, data["selector_indices"]))
            q = selector.quality_scores(data["selector_images"])
            results.append(compare(f"{sc_name}/quality_scores", q, data.get("selector_quality_scores", np.asarray(sc["quality_scores"])), SCORE_TOL))
            if "selector_camera_features" in data:
                results.append(compare(f"{sc_name}/camera_features", selector.camera_features(data["selector_w2c"]), data["selector_camera_features"], SCORE_TOL))
    return results
