"""Conformance checker of the end-to-end ``pipeline_*`` cases (``PIPELINE.md`` of the conformance data).

A case runs one reference pipeline class whole, from a PNG, a pre-rendered render video and hole
mask, cameras, reference images and prompts to the decoded video. The checker runs the SAME inputs
through the public entry point: :meth:`WorldStereo.from_pretrained` on the case folder (it is both
the checkpoint and the base-model folder) and :func:`~worldstereo.pipeline.generate_video` with
``render_video`` / ``render_mask`` / ``reference_images`` / ``reference_w2c`` / ``ref_index`` /
``latents``. Like the reference data, every intermediate is recorded without changing anything:
forward hooks on the transformer (text / image embeddings, I2V condition, render and reference
latents, mask, camera inputs, per-step latents, timesteps and velocities) and a wrapper around the
model's keyframe decode (final latents, decoded video).

Everything (sizes, frame counts, seeds, steps, guidance, prompts) is read from ``meta.json`` and the
tensor files; nothing depends on the DEV set's values.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..camera import CameraTrajectory
from .results import CheckResult, compare, compare_exact

__all__ = ["check_pipeline", "PipelineRecorder", "TOL_CONDITIONING", "TOL_LATENTS", "TOL_CAMERA"]

logger = logging.getLogger(__name__)

#: PIPELINE.md: conditioning tensors and decoded video 1e-4, latents 5e-4, camera tensors 1e-5
TOL_CONDITIONING = 1e-4
TOL_LATENTS = 5e-4
TOL_CAMERA = 1e-5
#: per-step velocities come from latents that already carry up to TOL_LATENTS of drift
TOL_VELOCITY = 5e-4
#: the output video is the decoded video mapped to [0, 1] (half its error)
TOL_OUTPUT = 1e-4

#: transformer keywords constant across the steps of a run (checked identical in every call)
_CONSTANT_KWARGS = ("encoder_hidden_states_image", "render_latent", "render_mask", "camera_embedding",
                    "reference_latent", "ref_index", "camera_qt", "camera_qt_ref")


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _clone(x: Any) -> Any:
    return x.detach().clone().cpu() if isinstance(x, Tensor) else x


class PipelineRecorder:
    """Records what a model's components receive and return during one generation (nothing changed).

    * a forward pre-hook and a forward hook on ``model.transformer`` give, per call, its keyword
      inputs (``calls[i]``) and its output velocity (``calls[i]["velocity"]``);
    * a wrapper around ``model.decode_latents`` gives its input (``decoded_input``, the final
      latents) and output (``decoded_video``, ``[B, 3, F, H, W]`` in [-1, 1]).

    Use as a context manager; the hooks and the wrapper are removed on exit.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[dict[str, Any]] = []
        self.decoded_input: Tensor | None = None
        self.decoded_video: Tensor | None = None
        self._handles: list[Any] = []

    def _pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        self.calls.append({k: _clone(v) for k, v in kwargs.items()})

    def _hook(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else getattr(output, "sample", output)
        self.calls[-1]["velocity"] = _clone(out)

    def __enter__(self) -> "PipelineRecorder":
        transformer = self.model.transformer
        self._handles.append(transformer.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        self._handles.append(transformer.register_forward_hook(self._hook, with_kwargs=True))
        decode = self.model.decode_latents

        def recording_decode(latents: Tensor) -> Tensor:
            video = decode(latents)
            self.decoded_input, self.decoded_video = _clone(latents), _clone(video)
            return video

        self.model.decode_latents = recording_decode  # instance attribute shadows the method
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.model.__dict__.pop("decode_latents", None)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the weight-loading progress bars of transformers while the case loads."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load_case_model(case_dir: Path) -> Any:
    from ..models.worldstereo import WorldStereo  # lazy: model stack (ftfy, scipy)

    with _quiet_transformers():
        return WorldStereo.from_pretrained(case_dir, base_model=case_dir, torch_dtype=torch.float32, device="cpu")


def _to_frames(video: Tensor) -> Tensor:
    """[1, C, F, H, W] -> (F, C, H, W)."""
    return video[0].permute(1, 0, 2, 3).contiguous()


def run_pipeline_case(case_dir: Path, model: Any | None = None) -> tuple[PipelineRecorder, Tensor, Any]:
    """Run the inputs of a pipeline case through :func:`generate_video`; returns the recorder, the
    output video ``(F, 3, H, W)`` and the model."""
    from ..pipeline import generate_video  # lazy: diffusers

    meta = _read_json(case_dir / "meta.json")
    inputs = load_file(str(case_dir / "inputs.safetensors"))
    model = model if model is not None else _load_case_model(case_dir)
    if meta.get("model_type") and meta["model_type"] != model.variant:
        raise ValueError(f"case_dir: meta.json model_type {meta['model_type']!r} but the checkpoint is {model.variant!r}")
    height, width = int(meta["height"]), int(meta["width"])
    render = _to_frames(inputs["render_video"])
    num_frames = int(render.shape[0])
    trajectory = CameraTrajectory(inputs["extrinsics"], inputs["intrinsics"], height, width)
    kwargs: dict[str, Any] = {
        # the reference's videos are in [-1, 1]; the library's in [0, 1]
        "render_video": (render + 1.0) / 2.0,
        "render_mask": _to_frames(inputs["render_mask"]),
        "latents": inputs["latents_init"],
        "prompt": meta.get("prompt") or "",
        "seed": int(meta.get("seed", 0)),
    }
    if model.is_distilled:
        if meta.get("num_inference_steps") is not None:
            logger.debug("%s: num_inference_steps ignored by the distilled variant", case_dir.name)
    else:
        kwargs["num_inference_steps"] = int(meta["num_inference_steps"])
        kwargs["guidance_scale"] = float(meta["guidance_scale"])
        kwargs["negative_prompt"] = meta.get("negative_prompt") or ""
    if "reference_video" in inputs:
        kwargs["reference_images"] = (_to_frames(inputs["reference_video"]) + 1.0) / 2.0
        kwargs["reference_w2c"] = inputs["ref_w2c"]
        kwargs["ref_index"] = inputs["ref_index"]
    with PipelineRecorder(model) as recorder:
        video = generate_video(model, case_dir / "image.png", trajectory, num_frames=num_frames, height=height,
                               width=width, use_spatial_memory=False, output_format="tensor", **kwargs)
    return recorder, video, model


def _same_in_every_call(calls: list[dict[str, Any]], key: str) -> CheckResult:
    values = [c.get(key) for c in calls]
    first = values[0]
    ok = all((v is None and first is None) or (isinstance(v, Tensor) and isinstance(first, Tensor)
                                                and torch.equal(v, first)) for v in values)
    return CheckResult(f"constant/{key}", 0.0 if ok else float("inf"), 0.0,
                       "" if ok else "differs between transformer calls")


def _stack_or_empty(tensors: list[Tensor]) -> Tensor:
    return torch.stack(tensors) if tensors else torch.empty(0)


def check_pipeline(case_dir: Path) -> list[CheckResult]:
    """Run a ``pipeline_*`` case through the public API and compare every recorded intermediate."""
    case_dir = Path(case_dir)
    meta = _read_json(case_dir / "meta.json")
    inputs = load_file(str(case_dir / "inputs.safetensors"))
    expected = load_file(str(case_dir / "expected.safetensors"))
    recorder, video, model = run_pipeline_case(case_dir)
    calls = recorder.calls
    results: list[CheckResult] = []
    if not calls:
        return [CheckResult("transformer_calls", float("inf"), 0.0, "the transformer was never called")]
    if "transformer_calls" in meta:
        results.append(compare_exact("transformer_calls", torch.tensor(len(calls)), torch.tensor(meta["transformer_calls"])))

    cfg = "velocity_cond_0" in expected
    cond_calls, uncond_calls = (calls[0::2], calls[1::2]) if cfg else (calls, [])
    latent_ch = int(expected["latents_final"].shape[1])

    # -- text ----------------------------------------------------------------------------------
    results.append(compare("prompt_embeds", cond_calls[0]["encoder_hidden_states"], expected["prompt_embeds"],
                           TOL_CONDITIONING))
    text_ok = all(torch.equal(c["encoder_hidden_states"], cond_calls[0]["encoder_hidden_states"]) for c in cond_calls)
    if "negative_prompt_embeds" in expected:
        actual = uncond_calls[0]["encoder_hidden_states"] if uncond_calls else torch.empty(0)
        results.append(compare("negative_prompt_embeds", actual, expected["negative_prompt_embeds"], TOL_CONDITIONING))
        text_ok = text_ok and bool(uncond_calls) and all(
            torch.equal(c["encoder_hidden_states"], uncond_calls[0]["encoder_hidden_states"]) for c in uncond_calls)
    results.append(CheckResult("constant/encoder_hidden_states", 0.0 if text_ok else float("inf"), 0.0,
                               "" if text_ok else "text embeddings differ between steps of one pass"))
    if "probe_prompt_embeds" in expected and meta.get("probe_prompt") is not None:
        with torch.no_grad():
            probe = model.encode_prompt(meta["probe_prompt"])
        results.append(compare("probe_prompt_embeds", probe, expected["probe_prompt_embeds"], TOL_CONDITIONING))

    # -- conditioning (first call; every call checked identical) -----------------------------------
    first = calls[0]
    results.append(compare("image_embeds", first["encoder_hidden_states_image"], expected["image_embeds"],
                           TOL_CONDITIONING))
    results.append(compare("condition", first["hidden_states"][:, latent_ch:], expected["condition"], TOL_CONDITIONING))
    results.append(compare("render_latent", first["render_latent"], expected["render_latent"], TOL_CONDITIONING))
    if "reference_latent" in expected:
        results.append(compare("reference_latent", first.get("reference_latent", torch.empty(0)),
                               expected["reference_latent"], TOL_CONDITIONING))
    results.append(compare_exact("render_mask", first["render_mask"], inputs["render_mask"]))
    results.append(compare("camera_embedding", first["camera_embedding"], inputs["camera_embedding"], TOL_CAMERA))
    for key in ("camera_qt", "camera_qt_ref"):
        if key in inputs:
            results.append(compare(key, first.get(key, torch.empty(0)), inputs[key], TOL_CAMERA))
    if "ref_index" in inputs:
        results.append(compare_exact("ref_index", first.get("ref_index", torch.empty(0)), inputs["ref_index"]))
    for key in _CONSTANT_KWARGS:
        if key in first:
            results.append(_same_in_every_call(calls, key))
    cond_ok = all(torch.equal(c["hidden_states"][:, latent_ch:], first["hidden_states"][:, latent_ch:]) for c in calls)
    results.append(CheckResult("constant/condition", 0.0 if cond_ok else float("inf"), 0.0,
                               "" if cond_ok else "the I2V condition differs between calls"))

    # -- sampling trajectory -------------------------------------------------------------------
    n_steps = int(expected["timesteps"].shape[0])
    timesteps = _stack_or_empty([c["timestep"] for c in cond_calls])
    results.append(compare_exact("timesteps", timesteps, expected["timesteps"]))
    ok = timesteps.dtype == expected["timesteps"].dtype
    results.append(CheckResult("timesteps_dtype", 0.0 if ok else float("inf"), 0.0,
                               "" if ok else f"{timesteps.dtype} != expected {expected['timesteps'].dtype}"))
    for i in range(n_steps):
        key = f"latents_step_{i}"
        if key in expected:
            actual = cond_calls[i]["hidden_states"][:, :latent_ch] if i < len(cond_calls) else torch.empty(0)
            results.append(compare(key, actual, expected[key], TOL_LATENTS))
        names = (("velocity_cond", cond_calls), ("velocity_uncond", uncond_calls)) if cfg else (("velocity", cond_calls),)
        for name, group in names:
            key = f"{name}_{i}"
            if key in expected:
                actual = group[i]["velocity"] if i < len(group) else torch.empty(0)
                results.append(compare(key, actual, expected[key], TOL_VELOCITY))
    results.append(compare("latents_final", recorder.decoded_input if recorder.decoded_input is not None
                           else torch.empty(0), expected["latents_final"], TOL_LATENTS))

    # -- decode and output -----------------------------------------------------------------------
    results.append(compare("decoded_video", recorder.decoded_video if recorder.decoded_video is not None
                           else torch.empty(0), expected["decoded_video"], TOL_CONDITIONING))
    results.append(compare("output_video", video[None], expected["output_video"], TOL_OUTPUT))
    return results
