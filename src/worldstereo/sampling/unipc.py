"""UniPC flow scheduler of the Wan2.1 I2V base model (reference-implementation.md §4.4).

The non-distilled variants sample with diffusers' ``UniPCMultistepScheduler`` configured for flow
matching (``prediction_type="flow_prediction"``, ``use_flow_sigmas=True``, ``flow_shift=3.0``, order
2, ``bh2``, ``predict_x0``, ``lower_order_final``). The reference ran diffusers 0.36, whose flow
sigmas are ``s = 1 - linspace(1, 1/N, n+1)``, shifted ``shift*s / (1 + (shift-1)*s)``, flipped and
the last value dropped; newer diffusers releases build the grid differently
(``linspace(1, 1/N, n+1)[:-1]``, e.g. 3 steps give timesteps 999, 857, 600 instead of the
reference's 999, 856, 599). :class:`FlowUniPCMultistepScheduler` keeps the reference grid whatever
the installed diffusers version; the solver steps are diffusers' own.

Timesteps are int64, obtained by truncating ``sigma * num_train_timesteps`` (856.95 -> 856).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler

from worldstereo.config_checks import ConfigError, ConfigTypeError, check_bool, check_choice, check_float, check_int

__all__ = ["DEFAULT_UNIPC_CONFIG", "FlowUniPCMultistepScheduler", "make_unipc_scheduler", "reference_flow_sigmas",
           "validate_unipc_config"]

logger = logging.getLogger(__name__)

#: Scheduler configuration of the Wan2.1 I2V 14B 480P diffusers checkpoint (as in the conformance
#: ``schedulers/meta.json``). Only ``prediction_type``, ``use_flow_sigmas`` and ``flow_shift`` differ
#: from the diffusers defaults. Copy before modifying (``make_unipc_scheduler`` never mutates it).
DEFAULT_UNIPC_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "solver_order": 2,
    "prediction_type": "flow_prediction",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "predict_x0": True,
    "solver_type": "bh2",
    "lower_order_final": True,
    "disable_corrector": [],
    "solver_p": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "final_sigmas_type": "zero",
    "rescale_betas_zero_snr": False,
}


def reference_flow_sigmas(num_inference_steps: int, num_train_timesteps: int = 1000,
                          flow_shift: float = 3.0) -> np.ndarray:
    """Shifted flow sigmas of the reference (diffusers 0.36) UniPC grid, float64, shape ``(n,)``.

    ``s = 1 - linspace(1, 1/num_train_timesteps, n+1)``; ``s = shift*s / (1 + (shift-1)*s)``;
    flipped (decreasing) and the last (zero) value dropped. All values lie in (0, 1).

    Raises:
        ValueError: ``num_inference_steps`` < 1 or ``flow_shift`` <= 0.
    """
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
            or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps: expected a positive int, got {num_inference_steps!r}")
    if not flow_shift > 0:
        raise ValueError(f"flow_shift: expected > 0, got {flow_shift!r}")
    alphas = np.linspace(1, 1 / num_train_timesteps, int(num_inference_steps) + 1)
    s = 1.0 - alphas
    s = flow_shift * s / (1 + (flow_shift - 1) * s)
    return np.flip(s)[:-1].copy()


class FlowUniPCMultistepScheduler(UniPCMultistepScheduler):
    """diffusers ``UniPCMultistepScheduler`` whose default flow-sigma grid is the reference's.

    Identical to the parent except that ``set_timesteps(n)`` with ``use_flow_sigmas=True`` (and no
    custom ``sigmas``, dynamic shifting, Karras/exponential/beta sigmas or terminal stretch) uses
    :func:`reference_flow_sigmas`: ``timesteps`` int64 ``(n,)`` (truncated ``sigma*N``), ``sigmas``
    float32 ``(n+1,)`` ending with 0 (or the last sigma for ``final_sigmas_type="sigma_min"``).
    """

    def _uses_reference_grid(self, sigmas: Any, mu: Any) -> bool:
        c = self.config
        return bool(
            sigmas is None and c.use_flow_sigmas and not getattr(c, "use_dynamic_shifting", False)
            and not c.use_karras_sigmas and not c.use_exponential_sigmas and not c.use_beta_sigmas
            and not getattr(c, "shift_terminal", None))

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, mu: float | None = None) -> None:
        """Set the ``num_inference_steps`` sampling grid and reset the multistep state.

        Raises:
            ValueError: ``num_inference_steps`` is missing or not positive on the reference grid.
        """
        if not self._uses_reference_grid(sigmas, mu):
            super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu)
            return
        if num_inference_steps is None:
            raise ValueError("num_inference_steps: required (a positive int)")
        # Let diffusers reset its whole solver state, then replace the grid with the reference one.
        super().set_timesteps(num_inference_steps, device=device)
        s = reference_flow_sigmas(num_inference_steps, self.config.num_train_timesteps, self.config.flow_shift)
        if np.fabs(s[0] - 1) < 1e-6:  # same guard as diffusers: avoids log(alpha=0) in the solver
            s[0] -= 1e-6
        timesteps = (s * self.config.num_train_timesteps).astype(np.int64)
        last = s[-1] if self.config.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = torch.from_numpy(np.concatenate([s, [last]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(timesteps)


#: Bounds of the numeric scheduler settings read from ``scheduler_config.json`` (Wan value in the comment).
UNIPC_LIMITS: dict[str, tuple[float, float]] = {
    "num_train_timesteps": (1, 100_000),     # 1000 (diffusers allocates arrays of this length)
    "beta_start": (0.0, 1.0),                # 0.0001
    "beta_end": (0.0, 1.0),                  # 0.02
    "solver_order": (1, 3),                  # 2
    "dynamic_thresholding_ratio": (0.0, 1.0),  # 0.995
    "sample_max_value": (0.0, 1e6),          # 1.0
    "flow_shift": (0.0, 1000.0),             # 3.0 (exclusive lower bound)
    "steps_offset": (0, 1000),               # 0
}
_UNIPC_CHOICES: dict[str, tuple[Any, ...]] = {
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "prediction_type": ("epsilon", "sample", "v_prediction", "flow_prediction"),
    "solver_type": ("bh1", "bh2"),
    "timestep_spacing": ("linspace", "leading", "trailing"),
    "final_sigmas_type": ("zero", "sigma_min"),
    "time_shift_type": ("exponential",),
}
_UNIPC_FLAGS = ("thresholding", "predict_x0", "lower_order_final", "use_karras_sigmas", "use_exponential_sigmas",
                "use_beta_sigmas", "use_flow_sigmas", "rescale_betas_zero_snr", "use_dynamic_shifting")


def validate_unipc_config(config: dict[str, Any]) -> None:
    """Check the type and bounds of every UniPC setting this library knows (:data:`UNIPC_LIMITS`,
    the allowed strings, flags as booleans); other numbers must be finite.

    Raises:
        ConfigError (ValueError) / ConfigTypeError (TypeError and ValueError) naming
        ``scheduler.<key>``.
    """
    for key, value in config.items():
        name = f"scheduler.{key}"
        if key in ("num_train_timesteps", "solver_order", "steps_offset"):
            check_int(name, value, *UNIPC_LIMITS[key])
        elif key in UNIPC_LIMITS:
            check_float(name, value, *UNIPC_LIMITS[key], lo_exclusive=key in ("flow_shift", "sample_max_value"))
        elif key in _UNIPC_CHOICES:
            check_choice(name, value, _UNIPC_CHOICES[key])
        elif key in _UNIPC_FLAGS:
            check_bool(name, value)
        elif key in ("sigma_min", "sigma_max"):
            check_float(name, value, 0.0, 1e6, allow_none=True)
        elif key == "shift_terminal":
            check_float(name, value, 0.0, 1.0, lo_exclusive=True, allow_none=True)
        elif key == "trained_betas":
            if value is not None:
                raise ConfigError(f"{name}: only null is supported (betas from beta_start/beta_end), got "
                                  f"{type(value).__name__}")
        elif key == "solver_p":
            if value is not None:
                raise ConfigError(f"{name}: only null is supported, got {type(value).__name__}")
        elif key == "disable_corrector":
            if not isinstance(value, list) or len(value) > 100_000:
                raise ConfigTypeError(f"{name}: expected a list of step indices, got {type(value).__name__}")
            for i, v in enumerate(value):
                check_int(f"{name}[{i}]", v, 0, 100_000)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if config.get("beta_start", 0.0) > config.get("beta_end", 1.0):
        raise ConfigError(f"scheduler.beta_start: must not exceed beta_end, got {config['beta_start']} > "
                          f"{config['beta_end']}")


def make_unipc_scheduler(config: dict[str, Any] | None = None) -> FlowUniPCMultistepScheduler:
    """Build the base model's UniPC flow scheduler.

    Args:
        config: a diffusers scheduler configuration (e.g. the ``scheduler_config.json`` of a Wan
            checkpoint); keys missing from it take the values of :data:`DEFAULT_UNIPC_CONFIG`.
            ``None`` gives exactly the default configuration. Keys starting with ``_`` are ignored.

    Returns:
        A fresh scheduler; call ``set_timesteps(n, device=...)`` before sampling.

    Raises:
        TypeError: ``config`` is not a dict; ConfigError / ConfigTypeError (ValueError): a setting of
            the wrong type or out of bounds (:func:`validate_unipc_config`).
    """
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config: expected a dict or None, got {type(config).__name__}")
    merged = dict(DEFAULT_UNIPC_CONFIG)
    merged["disable_corrector"] = list(merged["disable_corrector"])
    if config:
        merged.update({k: v for k, v in config.items() if not (isinstance(k, str) and k.startswith("_"))})
    validate_unipc_config(merged)
    return FlowUniPCMultistepScheduler.from_config(merged)
