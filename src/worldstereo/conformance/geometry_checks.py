"""Conformance checker of the ``point_lifting`` case (reference ``get_points3d_and_colors``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..geometry.lifting import get_points3d_and_colors, get_points3d_and_colors_detailed
from .results import CheckResult, compare, compare_exact

__all__ = ["check_point_lifting"]

_TOL = 1e-5


def check_point_lifting(case_dir: Path) -> list[CheckResult]:
    """Run the lifting on every scene of ``case_dir/data.safetensors`` and compare with the reference.

    Scenes are discovered from the ``<scene>_points`` keys; a scene uses its ``<scene>_mask`` as the
    invalid mask when any pixel is set (the reference passed ``mask=None`` for an all-zero mask,
    which is equivalent). ``sobel_threshold`` / ``contract`` come from ``meta.json`` when present.
    Compared: points and colours (1e-5), the contracted depth (1e-5), and exactly the edge mask,
    keep mask and point count; plus the all-zero-depth early exit.
    """
    case_dir = Path(case_dir)
    data = load_file(str(case_dir / "data.safetensors"))
    meta_path = case_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    sobel = float(meta.get("sobel_threshold", 0.35))
    contract = float(meta.get("contract", 8.0))
    K, w2c, image = data["K"], data["w2c"], data["image"]
    scenes = sorted(k[: -len("_points")] for k in data if k.endswith("_points"))
    if not scenes:
        raise ValueError(f"case_dir: {case_dir} has no '<scene>_points' tensors")
    results: list[CheckResult] = []
    for s in scenes:
        depth = data[f"{s}_depth"].clone()
        mask_u8 = data.get(f"{s}_mask")
        mask = mask_u8.bool() if mask_u8 is not None and bool(mask_u8.any()) else None
        res = get_points3d_and_colors_detailed(K, w2c, depth, image, mask, sobel, contract)
        if res is None or res.points is None:
            results.append(CheckResult(f"{s}/points", float("inf"), _TOL, "lifting returned None"))
            continue
        results.append(compare(f"{s}/points", res.points, data[f"{s}_points"], _TOL))
        results.append(compare(f"{s}/colors", res.colors, data[f"{s}_colors"], _TOL))
        exp_depth = data.get(f"{s}_depth_after_contraction")
        if exp_depth is not None:
            results.append(compare(f"{s}/depth_after_contraction", res.depth.reshape(exp_depth.shape),
                                   exp_depth, _TOL))
        if f"{s}_edge_mask" in data:
            results.append(compare_exact(f"{s}/edge_mask", res.edge_mask.to(torch.uint8), data[f"{s}_edge_mask"]))
        if f"{s}_keep_mask" in data:
            results.append(compare_exact(f"{s}/keep_mask", res.keep_mask.to(torch.uint8), data[f"{s}_keep_mask"]))
        n_exp = meta.get(s, {}).get("n_points", data[f"{s}_points"].shape[0])
        results.append(compare_exact(f"{s}/n_points", res.points.shape[0], n_exp))
        # public wrapper: same outputs, caller's depth untouched unless in_place=True
        before = depth.clone()
        pts, _ = get_points3d_and_colors(K, w2c, depth, image, mask, sobel, contract)
        results.append(compare_exact(f"{s}/public_points", pts, res.points))
        results.append(compare_exact(f"{s}/depth_not_mutated", depth, before))
        get_points3d_and_colors(K, w2c, depth, image, mask, sobel, contract, in_place=True)
        if exp_depth is not None:
            results.append(compare(f"{s}/in_place_contraction", depth, exp_depth, _TOL))
    # all-zero depth -> (None, None)
    zero = torch.zeros_like(data[f"{scenes[0]}_depth"])
    out = get_points3d_and_colors(K, w2c, zero, image, None, sobel, contract)
    ok = out[0] is None and out[1] is None
    results.append(CheckResult("all_zero_depth_returns_none", 0.0 if ok else float("inf"), 0.0,
                               "" if ok else "expected (None, None)"))
    return results
