"""``worldstereo generate --inputs FOLDER``: run a folder in the reference implementation's example
layout as the reference scripts (``run_camera_control.py``, ``run_multi_traj.py``) would.

Folder kinds (read by :mod:`worldstereo.io.reference_inputs`):

* ``images/<scene>`` — ``worldstereo generate`` on ``image.png`` along ``camera.json`` (subsampled
  with ``np.linspace`` to the model's ``nframe`` keyframes) with the ``"long caption"`` of
  ``prompt.json``; the render comes from the image's depth (``--depth`` / ``--depth-model``). The
  outputs are those of ``worldstereo generate``.
* ``reconstruction/<scene>`` and ``panorama/<scene>`` — one video per trajectory, in the reference
  order, each conditioned on the folder's own ``render.mp4`` / ``render_mask.mp4`` (no depth, no
  point cloud), with one frame bank shared by all trajectories (memory variants): it starts with
  ``image.png`` at the identity camera (reconstruction; K = ``traj_eloop``'s first intrinsic) or with
  the ``pano_bank`` crops and their cameras (panorama), and every generated video adds
  ``frames_per_update`` frames named ``<view>/<traj>/<frame>``. References are retrieved from it per
  trajectory (frustum overlap, with the reference's panorama shortcuts). Outputs in the
  ``worldstereo multi-view`` layout: ``video_NN.mp4``, ``render_NN.mp4`` / ``render_mask_NN.mp4``
  (the ControlNet inputs actually used), ``camera_NN.json``, ``image_NN.png`` (condition view of
  video NN), ``image.png`` (that of video 00), ``memory_bank/`` and ``summary.json`` whose
  ``inputs`` records the folder, its kind and, per video, the files used.

Generation size and keyframe count follow the reference: the model's ``scale_map`` entry closest to
the condition image's aspect (``--height``/``--width`` override) and the model's ``nframe``
(``--frames`` overrides). Deliberate differences from the reference scripts: generated frames enter
the bank (and seed ``reconstruct*/traj1``) directly instead of through a re-read MP4, and an
iterative trajectory's intrinsics are scaled from the size its ``camera.json`` states.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from worldstereo import __version__
from worldstereo.camera import assign_scale, trajectory_subsample_linspace
from worldstereo.commands import UsageError, final_path
from worldstereo.commands.generate import (
    StepProgress,
    _check_model_spec,
    generate_one,
    load_model,
    resolve_run_device,
    sampling_settings,
    write_memory_outputs,
    write_summary,
    write_video_outputs,
)
from worldstereo.io.image import rescale_intrinsics, save_image
from worldstereo.io.reference_inputs import (
    image_size,
    read_condition_image,
    read_pano_bank,
    read_reference_inputs,
    read_render,
    read_trajectory_camera,
)
from worldstereo.memory import SpatialStereoMemory
from worldstereo.parallel import is_writer
from worldstereo.models.loading import resolve_checkpoint
from worldstereo.pipeline import SceneMemory, generate_video

__all__ = ["run_inputs_folder", "model_settings"]

logger = logging.getLogger(__name__)


def model_settings(args: argparse.Namespace) -> tuple[int, list[list[int]] | None]:
    """``(nframe, scale_map)`` of the ``--model`` checkpoint, read from its ``config.json`` without
    loading weights (the reference's keyframe count and generation-size map)."""

    try:
        resolved = resolve_checkpoint(args.model, args.variant)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError) as exc:
        raise UsageError(f"--model: cannot load {args.model!r}: {exc}") from exc
    nframe = resolved.config.get("nframe", 21)
    if isinstance(nframe, bool) or not isinstance(nframe, int) or nframe < 2:
        raise UsageError(f"--model: config.json 'nframe' must be an integer >= 2, got {nframe!r}")
    return nframe, resolved.config.get("scale_map")


def _generation_size(args: argparse.Namespace, image_size: tuple[int, int],
                     scale_map: list[list[int]] | None) -> tuple[int, int]:

    if (args.height is None) != (args.width is None):
        raise UsageError("--height/--width: give both or neither")
    if args.height is not None:
        if args.height % 16 or args.width % 16:
            raise UsageError(f"--height/--width: must be multiples of 16, got {args.height}x{args.width}")
        return int(args.height), int(args.width)
    height, width = assign_scale(*image_size, scale_map=scale_map)
    if height % 16 or width % 16:
        raise UsageError(f"--model: the scale_map size {height}x{width} is not a multiple of 16; pass --height/--width")
    return height, width


def run_inputs_folder(args: argparse.Namespace) -> int:
    """Run ``args.inputs`` (see the module docstring); returns the exit status."""
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out: {str(args.out)!r} exists and is not a folder")
    inputs = read_reference_inputs(args.inputs)
    nframe, scale_map = model_settings(args)
    frames = args.frames if args.frames is not None else nframe
    if frames < 2:
        raise UsageError(f"--frames: expected at least 2 frames, got {frames}")
    note: dict[str, Any] = {"folder": str(inputs.root), "kind": inputs.kind, "frames": frames}
    prompt_override = args.prompt != ""
    if inputs.kind == "images":
        height, width = _generation_size(args, image_size(inputs.image), scale_map)
        args.image, args.trajectory, args.frames = inputs.image, str(inputs.camera), frames
        args.height, args.width = height, width
        if not prompt_override:
            args.prompt = inputs.prompt
        note.update(image=str(inputs.image), camera=str(inputs.camera),
                    prompt=("--prompt" if prompt_override else f"{inputs.prompt_file} ['long caption']"))
        return generate_one(args, inputs_note=note)
    for option in ("depth", "depth_model", "depth_scale", "fov", "preset_arg", "fit_trajectory"):
        if getattr(args, option, None) is not None:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag}: not used by {inputs.kind} inputs (their renders are given); drop it")
    first = inputs.trajectories[0].condition_image
    height, width = _generation_size(args, image_size(first), scale_map)
    return _run_trajectories(args, inputs, frames, height, width, note)


def _initial_bank(model: Any, inputs: Any, height: int, width: int) -> Any:
    """The frame bank before the first video, as the reference's ``SimpleMemoryBank`` builds it."""
    bank = SpatialStereoMemory(**model.spatial_memory_config)
    if inputs.kind == "panorama":
        images, w2c, K, keys = read_pano_bank(inputs.pano_bank)
        bank.add(images, w2c, K, names=[f"pano_bank/{k}" for k in keys], pin=True)
        return bank
    # reconstruction: image.png at the identity camera with traj_eloop's first intrinsic (the reference
    # registers the start image at the identity although trajectory frame 0 is not the identity)
    K0 = read_trajectory_camera(inputs.bank_camera, inputs.image).K[0].double()
    K0 = rescale_intrinsics(K0, image_size(inputs.image), (height, width))
    image = read_condition_image(inputs.image, height, width)
    bank.add(image[None], torch.eye(4, dtype=torch.float64)[None], K0[None], names=["renders/pano_bank/image.png"],
             pin=True)
    return bank


def _load_clip(traj_in: Any, frames: int, height: int, width: int,
               last_frames: dict[str, Any]) -> tuple[Any, Any, Any, Any, list[int]]:
    """One trajectory's inputs as the reference's loader prepares them: ``(condition image (3, H, W),
    trajectory at (H, W), render (F, 3, h, w), hole mask (F, 1, h, w), kept pose indices)``; poses
    and render frames beyond ``frames`` are subsampled with ``np.linspace``."""
    trajectory = read_trajectory_camera(traj_in.camera, traj_in.condition_image)
    n = len(trajectory)
    keep = trajectory_subsample_linspace(n, frames) if n > frames else list(range(n))
    render, mask = read_render(traj_in.render, traj_in.render_mask)
    if render.shape[0] != n:
        raise ValueError(f"inputs: {traj_in.name} has {n} cameras in {str(traj_in.camera)!r} but {render.shape[0]} "
                         f"frames in {str(traj_in.render)!r}")
    render, mask = render[keep], mask[keep]
    if traj_in.iterative_source is not None:
        image = last_frames[traj_in.iterative_source]
        mask[0] = 0.0  # the reference clears the first mask frame of iterative trajectories
    else:
        image = read_condition_image(traj_in.condition_image, height, width)
    return image, trajectory[keep].resized(height, width), render, mask, keep


def _run_trajectories(args: argparse.Namespace, inputs: Any, frames: int, height: int, width: int,
                      note: dict[str, Any]) -> int:
    """Reconstruction / panorama: one video per trajectory with the given renders and a shared bank."""
    t0 = time.perf_counter()
    device, dtype_name = resolve_run_device(args)
    _check_model_spec(args.model, args.variant)
    model, load_seconds = load_model(args, device, dtype_name)
    writer = is_writer(model)  # under --parallel every rank generates; rank 0 writes
    steps, guidance = sampling_settings(args, model)
    bank = _initial_bank(model, inputs, height, width) if model.is_memory else None
    memory = SceneMemory(spatial=bank)  # history of the videos; the bank is read and updated here
    out = Path(args.out)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    last_frames: dict[str, Any] = {}
    videos = []
    write_time = 0.0
    n = len(inputs.trajectories)
    for i, traj_in in enumerate(inputs.trajectories):
        image, sized, render, mask, keep = _load_clip(traj_in, frames, height, width, last_frames)
        kwargs: dict[str, Any] = {}
        ref_names: list[str] = []
        if bank is not None:
            refs = bank.retrieve(sized.w2c, sized.K, height, width, view_id=traj_in.view_id, traj_id=traj_in.traj_id)
            kwargs.update(reference_images=refs.images, reference_w2c=refs.w2c, ref_index=refs.ref_index)
            ref_names = list(refs.names)
        prompt = args.prompt if args.prompt != "" else traj_in.prompt
        logger.info("video %d/%d: %s, %d frames at %dx%d", i + 1, n, traj_in.name, len(sized), height, width)
        bar = StepProgress(f"{traj_in.name} ({i + 1}/{n})", disable=args.no_progress)
        try:
            video = generate_video(
                model, image, sized, num_frames=len(sized), height=height, width=width, num_inference_steps=steps,
                guidance_scale=guidance, seed=int(args.seed), prompt=prompt, negative_prompt=args.negative_prompt,
                render_video=render, render_mask=mask, use_spatial_memory=False, memory=memory,
                progress_callback=bar, output_format="tensor", **kwargs)
        finally:
            bar.close()
        if bank is not None:
            bank.update_from_clip(video, sized, prefix=traj_in.name)
        last_frames[traj_in.name] = video[-1]
        record = memory.history[-1]
        if bank is not None:  # retrieved here from the shared bank (given to generate_video)
            record.reference_names = ref_names
            record.conditioning["references"] = "retrieved"
        if not writer:
            continue
        t1 = time.perf_counter()
        files = write_video_outputs(out, f"_{i:02d}", video, record, sized, fps=args.fps,
                                    extra_json={"trajectory": traj_in.name, "video_index": i})
        save_image(out / f"image_{i:02d}.png", image)
        files["image"] = f"image_{i:02d}.png"
        if i == 0:
            save_image(out / "image.png", image)
        write_time += time.perf_counter() - t1
        inputs_used = traj_in.describe()
        inputs_used["prompt"] = "--prompt" if args.prompt != "" else inputs_used["prompt_file"]
        videos.append({"index": i, "trajectory": traj_in.name, "num_frames": len(sized),
                       "frame_indices": keep, **record.summary(),
                       "inputs": inputs_used, "files": files})
    if not writer:
        return 0
    t2 = time.perf_counter()
    mem_info = write_memory_outputs(out, memory)
    write_time += time.perf_counter() - t2
    note["trajectories"] = [v["trajectory"] for v in videos]
    if inputs.kind == "panorama":
        note["initial_bank"] = str(inputs.pano_bank)
    elif bank is not None:
        note["initial_bank"] = f"{inputs.image} at the identity camera, K from {inputs.bank_camera}"
    summary = {
        "worldstereo_version": __version__, "model": str(args.model), "variant": model.variant, "device": device,
        "dtype": dtype_name, "height": height, "width": width, "prompt": args.prompt or None,
        "negative_prompt": args.negative_prompt, "fps": args.fps, "seed": int(args.seed), "steps": steps,
        "guidance_scale": guidance, "shared_memory": bank is not None, "num_videos": n,
        "transformer_calls": sum(v["transformer_calls"] for v in videos), "num_points": 0,
        "memory_bank_size": mem_info["memory_bank_size"], "inputs": note,
        "files": {"image": "image.png", **{k: v for k, v in mem_info.items() if k == "memory_bank"}},
        "videos": videos,
        "timings": {"load_model": load_seconds, "write": write_time, "total": time.perf_counter() - t0},
    }
    write_summary(out, summary)
    logger.info("wrote %s (%d videos, %d transformer calls, %.1f s)", final_path(args, out), n, summary["transformer_calls"],
                summary["timings"]["total"])
    return 0
