"""Conformance checkers of the ``schedulers/``, ``sampling_dmd/`` and ``sampling_unipc*/`` cases.

Everything (settings, step counts, shapes, the list of transformer keywords) is read from the case
files, so the checkers work on any directory of the same layout.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..models.transformer import WorldStereoTransformer
from ..sampling.dmd import DMDScheduler
from ..sampling.loop import denoise
from ..sampling.unipc import make_unipc_scheduler
from .results import CheckResult, compare, compare_exact

__all__ = ["check_schedulers", "check_sampling_dmd", "check_sampling_unipc", "load_reference_transformer"]

logger = logging.getLogger(__name__)

TOL_SCHED_CHAIN = 1e-5
TOL_SIGMAS = 1e-6
TOL_DMD_TIMESTEPS = 1e-4  # float32 timesteps of magnitude <= 1000: about one ulp
TOL_VELOCITY = 1e-4
TOL_LATENTS = 5e-4

# inputs.safetensors names that are not transformer keywords of the same name
_LOOP_INPUTS = ("latents_init", "condition", "prompt_embeds", "negative_prompt_embeds")
_RENAMED = {"image_embeds": "encoder_hidden_states_image"}


def _read_json(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def _dtype_result(name: str, actual: torch.dtype, expected: torch.dtype) -> CheckResult:
    ok = actual == expected
    return CheckResult(name, 0.0 if ok else float("inf"), 0.0, "" if ok else f"dtype {actual} != expected {expected}")


# ---------------------------------------------------------------------------------------- schedulers
def check_schedulers(case_dir: Path) -> list[CheckResult]:
    """Check DMD and UniPC schedules and full solver chains of a ``schedulers/`` case."""
    case_dir = Path(case_dir)
    meta = _read_json(case_dir / "meta.json")
    data = load_file(str(case_dir / "data.safetensors"))
    results: list[CheckResult] = []

    for setting in meta.get("dmd", []):
        k = setting["index"]
        sched = DMDScheduler(start_timesteps=setting["start_timesteps"],
                             num_train_timesteps=setting["num_train_timesteps"],
                             shift=setting["shift"], dmd_steps=setting["dmd_steps"])
        expected_t = data[f"dmd{k}_timesteps"]
        results.append(compare(f"dmd{k}/timesteps", sched.timesteps, expected_t, TOL_DMD_TIMESTEPS))
        results.append(compare(f"dmd{k}/timesteps_meta", sched.timesteps, torch.tensor(setting["timesteps"]),
                               TOL_DMD_TIMESTEPS))
        results.append(_dtype_result(f"dmd{k}/timesteps_dtype", sched.timesteps.dtype, expected_t.dtype))
        x = data[f"dmd{k}_sample_init"]
        for i, t in enumerate(sched.timesteps):
            x = sched.step(data[f"dmd{k}_velocity_{i}"], t, x).prev_sample
            results.append(compare(f"dmd{k}/sample_after_{i}", x, data[f"dmd{k}_sample_after_{i}"], TOL_SCHED_CHAIN))

    unipc = meta.get("unipc")
    if unipc:
        for run in unipc.get("runs", []):
            k, n = run["index"], run["num_inference_steps"]
            sched = make_unipc_scheduler(unipc.get("config"))
            sched.set_timesteps(n)
            expected_t = data[f"unipc{k}_timesteps"]
            results.append(compare_exact(f"unipc{k}/timesteps", sched.timesteps, expected_t))
            results.append(compare_exact(f"unipc{k}/timesteps_meta", sched.timesteps, torch.tensor(run["timesteps"])))
            results.append(_dtype_result(f"unipc{k}/timesteps_dtype", sched.timesteps.dtype, expected_t.dtype))
            results.append(compare(f"unipc{k}/sigmas", sched.sigmas, data[f"unipc{k}_sigmas"], TOL_SIGMAS))
            x = data[f"unipc{k}_sample_init"]
            for i, t in enumerate(sched.timesteps):
                x = sched.step(data[f"unipc{k}_model_output_{i}"], t, x).prev_sample
                results.append(compare(f"unipc{k}/sample_after_{i}", x, data[f"unipc{k}_sample_after_{i}"],
                                       TOL_SCHED_CHAIN))
    if not results:
        raise ValueError(f"case_dir: {str(case_dir)!r} has no 'dmd' or 'unipc' settings in meta.json")
    return results


# ---------------------------------------------------------------------------------------- transformer
def load_reference_transformer(model_weights: str | os.PathLike[str], model_config: str | os.PathLike[str],
                               torch_dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load a WorldStereo transformer from a reference ``config.json`` + ``model.safetensors`` pair.

    ``WorldStereoTransformer.from_reference_dir`` reads a directory holding both files under those
    names; when the given files are named or placed differently they are linked into a temporary
    directory first. The model is returned in eval mode.

    Raises:
        FileNotFoundError: a file does not exist.
    """
    weights, config = Path(model_weights), Path(model_config)
    for name, p in (("model_weights", weights), ("model_config", config)):
        if not p.is_file():
            raise FileNotFoundError(f"{name}: file {str(p)!r} does not exist")
    if weights.parent.resolve() == config.parent.resolve() and weights.name == "model.safetensors" \
            and config.name == "config.json":
        model = WorldStereoTransformer.from_reference_dir(weights.parent, torch_dtype=torch_dtype)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            os.symlink(weights.resolve(), Path(tmp) / "model.safetensors")
            os.symlink(config.resolve(), Path(tmp) / "config.json")
            model = WorldStereoTransformer.from_reference_dir(tmp, torch_dtype=torch_dtype)
    return model.eval()


@dataclass
class _RecordingTransformer:
    """Wraps a transformer and records every call (first 16 input channels, timestep, text, output)."""

    model: torch.nn.Module
    latent_channels: int
    calls: list[dict[str, Tensor]] = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __call__(self, **kwargs: Any) -> Any:
        out = self.model(**kwargs)
        sample = out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)
        self.calls.append({
            "latents": kwargs["hidden_states"][:, : self.latent_channels].detach().clone(),
            "timestep": kwargs["timestep"].detach().clone(),
            "text": kwargs["encoder_hidden_states"],
            "velocity": sample.detach().clone(),
        })
        return out


def _run_sampling_case(case_dir: Path, scheduler: Any, num_inference_steps: int | None,
                       guidance_scale: float) -> tuple[list[CheckResult], _RecordingTransformer, dict[str, Tensor],
                                                       dict[str, Any], Tensor, list[Tensor]]:
    meta = _read_json(case_dir / "meta.json")
    inputs = load_file(str(case_dir / "inputs.safetensors"))
    for key in ("latents_init", "condition", "prompt_embeds"):
        if key not in inputs:
            raise ValueError(f"case_dir: inputs.safetensors of {str(case_dir)!r} lacks {key!r}")
    model = load_reference_transformer(case_dir / meta["model_weights"], case_dir / meta["model_config"])
    allowed = set(meta.get("transformer_call_kwargs", []))
    model_kwargs: dict[str, Any] = {}
    for name, tensor in inputs.items():
        if name in _LOOP_INPUTS:
            continue
        kw = _RENAMED.get(name, name)
        if allowed and kw not in allowed:
            logger.debug("input %s is not a transformer keyword of this case; skipped", name)
            continue
        model_kwargs[kw] = tensor
    latents_init = inputs["latents_init"]
    recorder = _RecordingTransformer(model, latent_channels=latents_init.shape[1])
    after: list[Tensor] = []
    final = denoise(recorder, latents_init, inputs["condition"], scheduler=scheduler,
                    prompt_embeds=inputs["prompt_embeds"],
                    negative_prompt_embeds=inputs.get("negative_prompt_embeds"),
                    guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                    model_kwargs=model_kwargs, progress_callback=lambda s, n, x: after.append(x.clone()))
    results: list[CheckResult] = []
    if "n_transformer_calls" in meta:
        results.append(compare_exact("n_transformer_calls", torch.tensor(len(recorder.calls)),
                                     torch.tensor(meta["n_transformer_calls"])))
    return results, recorder, inputs, meta, final, after


def _compare_common(results: list[CheckResult], expected: dict[str, Tensor], step_calls: list[dict[str, Tensor]],
                    final: Tensor, n_steps: int) -> None:
    exp_t = expected["timesteps"]
    act_t = torch.stack([c["timestep"] for c in step_calls]) if step_calls else torch.empty(0)
    results.append(compare_exact("timesteps", act_t, exp_t))
    if step_calls:
        results.append(_dtype_result("timesteps_dtype", act_t.dtype, exp_t.dtype))
    for i in range(n_steps):
        key = f"latents_step_{i}"
        if key in expected:
            actual = step_calls[i]["latents"] if i < len(step_calls) else torch.empty(0)
            results.append(compare(key, actual, expected[key], TOL_LATENTS))
    results.append(compare("latents_final", final, expected["latents_final"], TOL_LATENTS))


def _n_steps(expected: dict[str, Tensor]) -> int:
    return int(expected["timesteps"].shape[0])


def check_sampling_dmd(case_dir: Path) -> list[CheckResult]:
    """Run the DMD loop of a ``sampling_dmd/`` case with the reference transformer and compare."""
    case_dir = Path(case_dir)
    meta = _read_json(case_dir / "meta.json")
    expected = load_file(str(case_dir / "expected.safetensors"))
    scheduler = DMDScheduler(start_timesteps=meta["dmd_start_steps"], num_train_timesteps=meta["dmd_end_steps"],
                             shift=meta["gen_shift"], dmd_steps=meta["dmd_steps"])
    results = [compare("scheduler_timesteps", scheduler.timesteps, torch.tensor(meta["timesteps"]),
                       TOL_DMD_TIMESTEPS)]
    run_results, rec, _, _, final, _ = _run_sampling_case(case_dir, scheduler, None, 1.0)
    results += run_results
    n = _n_steps(expected)
    _compare_common(results, expected, rec.calls, final, n)
    for i in range(n):
        actual = rec.calls[i]["velocity"] if i < len(rec.calls) else torch.empty(0)
        results.append(compare(f"velocity_{i}", actual, expected[f"velocity_{i}"], TOL_VELOCITY))
    return results


def check_sampling_unipc(case_dir: Path) -> list[CheckResult]:
    """Run the UniPC + CFG loop of a ``sampling_unipc*/`` case with the reference transformer and compare."""
    case_dir = Path(case_dir)
    meta = _read_json(case_dir / "meta.json")
    expected = load_file(str(case_dir / "expected.safetensors"))
    scheduler = make_unipc_scheduler(meta.get("scheduler_config"))
    n = int(meta.get("num_inference_steps", _n_steps(expected)))
    results: list[CheckResult] = []
    run_results, rec, inputs, _, final, _ = _run_sampling_case(case_dir, scheduler, n,
                                                               float(meta.get("guidance_scale", 5.0)))
    results += run_results
    if "sigmas" in expected:
        results.append(compare("sigmas", scheduler.sigmas, expected["sigmas"], TOL_SIGMAS))
    if "timesteps" in meta:
        results.append(compare_exact("scheduler_timesteps", scheduler.timesteps,
                                     torch.tensor(meta["timesteps"], dtype=torch.float64).to(torch.int64)))
    # the loop evaluates the conditional pass first, then the unconditional one, at every step
    cond, uncond = rec.calls[0::2], rec.calls[1::2]
    if "negative_prompt_embeds" in inputs:
        text_ok = all(torch.equal(c["text"].float(), inputs["prompt_embeds"].float()) for c in cond) and all(
            torch.equal(c["text"].float(), inputs["negative_prompt_embeds"].float()) for c in uncond)
        results.append(CheckResult("guidance_passes_text", 0.0 if text_ok else float("inf"), 0.0,
                                   "" if text_ok else "cond/uncond passes did not get prompt/negative embeddings"))
    n_steps = _n_steps(expected)
    _compare_common(results, expected, cond, final, n_steps)
    for i in range(n_steps):
        for name, calls in (("velocity_cond", cond), ("velocity_uncond", uncond)):
            key = f"{name}_{i}"
            if key in expected:
                actual = calls[i]["velocity"] if i < len(calls) else torch.empty(0)
                results.append(compare(key, actual, expected[key], TOL_VELOCITY))
    return results
