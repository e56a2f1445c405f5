"""The denoising loop shared by the UniPC (+CFG) and DMD samplers (reference-implementation.md §4.4-4.5).

Per step ``t`` (from ``scheduler.timesteps``):

1. model input = ``cat([latents, condition], dim=1)`` cast to the transformer dtype
   (``(B, 16 + C_cond, F, h, w)``; 36 channels for Wan I2V);
2. timestep tensor = ``t`` repeated ``B`` times (shape ``(B,)``; int64 for UniPC, float32 for DMD —
   whatever dtype the scheduler's timesteps have; float timesteps are never rounded);
3. conditional pass ``v_c = transformer(hidden_states=input, timestep=..., encoder_hidden_states=
   prompt_embeds, **model_kwargs, return_dict=False)[0]``;
4. if ``guidance_scale > 1`` and negative embeddings are given: a **separate** unconditional pass that
   differs only in ``encoder_hidden_states`` (= ``negative_prompt_embeds``), and
   ``v = v_u + guidance_scale * (v_c - v_u)``; otherwise ``v = v_c`` (one pass per step, DMD);
5. ``latents = scheduler.step(v, t, latents)``; latents stay float32 between steps.

Each pass runs inside ``transformer.cache_context("cond")`` / ``("uncond")`` when the transformer has
one (diffusers' ``CacheMixin``), so the caching hooks of ``enable_cache`` (FirstBlockCache, MagCache,
TaylorSeer, ...) keep one state per guidance branch.

CFG parallelism (``cfg_parallel``, see :class:`worldstereo.parallel.CFGParallel`): two processes
run this loop together; each computes only its branch's pass (``cfg_parallel.branch``) and
``cfg_parallel.gather(v)`` returns ``(v_cond, v_uncond)`` from both, so step 4's arithmetic and the
result are those of one process.

Non-finite values never pass silently: NaN/inf in the inputs are refused before the first model
call (``ValueError`` naming the input), and the loop stops at the first step whose model output or
latents are not finite with a :class:`NonFiniteLatentsError` naming the step and its timestep.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, ContextManager, Mapping

import torch
from torch import Tensor

from worldstereo.finite import all_finite, count_nonfinite

__all__ = ["denoise", "ProgressCallback", "NonFiniteLatentsError"]

logger = logging.getLogger(__name__)

#: ``progress_callback(step, total_steps, latents)``: ``step`` = number of finished steps (1..total),
#: ``latents`` = float32 latents after that step, ``(B, 16, F, h, w)``.
ProgressCallback = Callable[[int, int, Tensor], None]

_RESERVED = ("hidden_states", "timestep", "encoder_hidden_states", "return_dict")


class NonFiniteLatentsError(FloatingPointError):
    """Sampling produced NaN or infinite values; the message names the step (1-based), its
    timestep and whether the model output or the scheduler update went non-finite.

    Attributes:
        step: the failing step (1-based); total_steps: the number of steps; timestep: its value.
    """

    def __init__(self, message: str, step: int, total_steps: int, timestep: float) -> None:
        super().__init__(message)
        self.step = step
        self.total_steps = total_steps
        self.timestep = timestep


def _check_finite_input(name: str, t: Tensor | None) -> None:
    if t is not None and not all_finite(t):
        bad = sum(count_nonfinite(t))
        raise ValueError(f"{name}: contains {bad} non-finite value(s) (NaN or inf); expected finite values")


def _nonfinite_error(what: str, t: Tensor, step: int, total: int, timestep: Tensor) -> NonFiniteLatentsError:
    bad = sum(count_nonfinite(t))
    ts = float(timestep.reshape(-1)[0]) if isinstance(timestep, Tensor) else float(timestep)
    return NonFiniteLatentsError(
        f"denoise: {what} became non-finite at step {step}/{total} (timestep {ts:g}): {bad} of {t.numel()} values "
        f"are NaN or inf. Sampling stopped; check the weights and the inputs, and prefer bfloat16 over float16 "
        f"(float16 overflows)", step, total, ts)


def _module_dtype(module: Any) -> torch.dtype:
    dtype = getattr(module, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    params = getattr(module, "parameters", None)
    if callable(params):
        for p in params():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


def _first_output(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    sample = getattr(out, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    raise TypeError(f"transformer: expected a tensor, a tuple whose first item is a tensor or an output with "
                    f".sample, got {type(out).__name__}")


def _cache_context(transformer: Any, name: str) -> ContextManager[Any]:
    """``transformer.cache_context(name)`` when the transformer has one (diffusers ``CacheMixin``)."""
    make = getattr(transformer, "cache_context", None)
    return make(name) if callable(make) else contextlib.nullcontext()


def denoise(
    transformer: Callable[..., Any],
    latents: Tensor,
    condition: Tensor,
    *,
    scheduler: Any,
    prompt_embeds: Tensor,
    negative_prompt_embeds: Tensor | None = None,
    guidance_scale: float = 1.0,
    num_inference_steps: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    progress_callback: ProgressCallback | None = None,
    cfg_parallel: Any | None = None,
) -> Tensor:
    """Run the flow-matching sampling loop and return the final latents.

    Args:
        transformer: the WorldStereo transformer (or any callable with the same keyword interface);
            called as ``transformer(hidden_states=..., timestep=..., encoder_hidden_states=...,
            **model_kwargs, return_dict=False)`` and must return ``(velocity,)`` (a tensor or an
            object with ``.sample`` is accepted too), velocity ``(B, 16, F, h, w)``.
        latents: initial noise ``x_T``, ``(B, C_lat, F, h, w)``; converted to float32.
        condition: ``(B, C_cond, F, h, w)`` (Wan I2V: 20 = 4 frame-mask + 16 image-latent channels).
        scheduler: a scheduler with ``set_timesteps``, ``timesteps`` and ``step(v, t, x)`` (a
            :class:`~worldstereo.sampling.unipc.FlowUniPCMultistepScheduler` or
            :class:`~worldstereo.sampling.dmd.DMDScheduler`). ``set_timesteps`` is always called here,
            so a scheduler can be reused across calls.
        prompt_embeds: text embeddings ``(B, L, text_dim)``, cast to the transformer dtype.
        negative_prompt_embeds: negative text embeddings (same shape) for classifier-free guidance.
        guidance_scale: CFG scale; guidance (two passes per step) runs only when it is > 1 and
            ``negative_prompt_embeds`` is given.
        num_inference_steps: passed to ``scheduler.set_timesteps``; ``None`` uses the scheduler's
            ``default_num_inference_steps`` (DMD: its fixed step count).
        model_kwargs: every other transformer keyword that is constant across steps and identical for
            both guidance passes (``encoder_hidden_states_image``, ``render_latent``,
            ``render_mask``, ``camera_embedding``, ``reference_latent``, ``ref_index``,
            ``camera_qt``, ``camera_qt_ref``, ...), passed unchanged.
        progress_callback: ``progress_callback(step, total_steps, latents)`` after every step,
            ``step`` counting finished steps from 1.
        cfg_parallel: CFG parallelism: an object with ``branch`` (``"cond"`` or ``"uncond"``: the pass
            this process runs) and ``gather(v) -> (v_cond, v_uncond)`` (a
            :class:`~worldstereo.parallel.CFGParallel`). Used only when guidance runs; without guidance
            every process runs the conditional pass.

    Returns:
        Float32 latents after the last step, shape of ``latents``.

    Raises:
        ValueError / TypeError: inconsistent shapes, bad guidance scale, missing step count, a
            reserved keyword in ``model_kwargs``, or NaN/inf in ``latents``, ``condition``, the
            prompt embeddings or a tensor of ``model_kwargs`` — all before the first model call.
        NonFiniteLatentsError: the model output or the latents became NaN/inf at some step
            (sampling stops there; the message names the step and its timestep).
    """
    if not isinstance(latents, Tensor) or latents.ndim != 5:
        raise ValueError(f"latents: expected a (B, C, F, h, w) tensor, got "
                         f"{tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__}")
    if not isinstance(condition, Tensor) or condition.ndim != 5:
        raise ValueError("condition: expected a (B, C_cond, F, h, w) tensor")
    if condition.shape[0] != latents.shape[0] or condition.shape[2:] != latents.shape[2:]:
        fhw = ", ".join(map(str, latents.shape[2:]))
        raise ValueError(f"condition: expected shape (B={latents.shape[0]}, C, {fhw}) matching latents, "
                         f"got {tuple(condition.shape)}")
    if not isinstance(prompt_embeds, Tensor) or prompt_embeds.ndim != 3:
        raise ValueError("prompt_embeds: expected a (B, L, D) tensor")
    if prompt_embeds.shape[0] != latents.shape[0]:
        raise ValueError(f"prompt_embeds: batch {prompt_embeds.shape[0]} != latents batch {latents.shape[0]}")
    if negative_prompt_embeds is not None and (not isinstance(negative_prompt_embeds, Tensor)
                                               or negative_prompt_embeds.shape != prompt_embeds.shape):
        raise ValueError(f"negative_prompt_embeds: expected shape {tuple(prompt_embeds.shape)} (that of prompt_embeds)")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
            or not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale: expected a finite number, got {guidance_scale!r}")
    kwargs = dict(model_kwargs or {})
    clash = [k for k in _RESERVED if k in kwargs]
    if clash:
        raise ValueError(f"model_kwargs: {clash} are set by the loop itself and must not be given")
    _check_finite_input("latents", latents)
    _check_finite_input("condition", condition)
    _check_finite_input("prompt_embeds", prompt_embeds)
    _check_finite_input("negative_prompt_embeds", negative_prompt_embeds)
    for key, value in kwargs.items():
        if isinstance(value, Tensor):
            _check_finite_input(f"model_kwargs[{key!r}]", value)
    if num_inference_steps is None:
        num_inference_steps = getattr(scheduler, "default_num_inference_steps", None)
        if num_inference_steps is None:
            raise ValueError(f"num_inference_steps: required for a {type(scheduler).__name__}")

    do_cfg = guidance_scale > 1 and negative_prompt_embeds is not None
    if guidance_scale > 1 and negative_prompt_embeds is None:
        logger.warning("guidance_scale=%s > 1 but no negative_prompt_embeds: running without guidance",
                       guidance_scale)

    device = latents.device
    dtype = _module_dtype(transformer)
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    total = len(timesteps)
    batch = latents.shape[0]
    cond_embeds = prompt_embeds.to(device=device, dtype=dtype)
    uncond_embeds = negative_prompt_embeds.to(device=device, dtype=dtype) if do_cfg else None
    condition = condition.to(device)
    latents = latents.to(torch.float32)

    if cfg_parallel is not None and getattr(cfg_parallel, "branch", None) not in ("cond", "uncond"):
        raise ValueError("cfg_parallel: expected an object with branch 'cond' or 'uncond' and gather(v)")
    split_cfg = do_cfg and cfg_parallel is not None

    def velocity(model_input: Tensor, timestep: Tensor, branch: str) -> Tensor:
        embeds = cond_embeds if branch == "cond" else uncond_embeds
        with _cache_context(transformer, branch):
            return _first_output(transformer(hidden_states=model_input, timestep=timestep,
                                             encoder_hidden_states=embeds, **kwargs, return_dict=False))

    with torch.no_grad():
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents, condition.to(latents.dtype)], dim=1).to(dtype)
            timestep = t.reshape(()).expand(batch).to(device)
            if split_cfg:
                v, v_u = cfg_parallel.gather(velocity(model_input, timestep, cfg_parallel.branch))
                v = v_u + guidance_scale * (v - v_u)
            else:
                v = velocity(model_input, timestep, "cond")
                if do_cfg:
                    v_u = velocity(model_input, timestep, "uncond")
                    v = v_u + guidance_scale * (v - v_u)
            if not all_finite(v):
                raise _nonfinite_error("the transformer output", v, i + 1, total, t)
            latents = _first_output(scheduler.step(v, t, latents, return_dict=False)).to(torch.float32)
            if not all_finite(latents):
                raise _nonfinite_error("the latents (scheduler update)", latents, i + 1, total, t)
            if progress_callback is not None:
                progress_callback(i + 1, total, latents)
    return latents
