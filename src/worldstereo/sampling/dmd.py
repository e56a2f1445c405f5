"""Few-step DMD flow scheduler (test-mode equivalent of the reference ``FlowGeneratorScheduler``).

The distilled ``worldstereo-memory-dmd`` variant samples with a handful of plain Euler steps on the
flow-matching ODE ``dx/dsigma = v`` (reference-implementation.md §4.5):

* timesteps: ``t = linspace(start_timesteps, num_train_timesteps, dmd_steps)`` (float32), reversed;
  ``u = t / num_train_timesteps``; ``u = shift * u / (1 + (shift - 1) * u)``;
  ``t = u * num_train_timesteps`` (float32). E.g. (250, 1000, 4 steps, shift 5) gives
  ``[1000, 937.5, 833.33, 625]``. Timesteps are **floats** and must reach the model unrounded.
* sigmas: ``sigma_i = t_i / num_train_timesteps`` and ``sigma_n = 0`` after the last step.
* step ``i``: ``x <- x + (sigma_{i+1} - sigma_i) * v`` (the last step yields the x0 estimate).

Only the deterministic "test" mode of the reference is provided (its default "train" mode draws a
random truncated schedule and is not meant for inference); no process group is needed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..io.atomic import atomic_write
from worldstereo.errors import MissingPathError

__all__ = ["DMDScheduler", "DMDSchedulerOutput", "dmd_timesteps"]

logger = logging.getLogger(__name__)

_CONFIG_NAME = "scheduler_config.json"


def dmd_timesteps(start_timesteps: float, num_train_timesteps: float, shift: float, dmd_steps: int) -> Tensor:
    """Test-mode DMD timesteps, float32, shape ``(dmd_steps,)``, decreasing from ``num_train_timesteps``.

    Computed in float32 exactly as the reference: linspace, reverse, normalise by
    ``num_train_timesteps``, shift map ``s*u / (1 + (s-1)*u)``, rescale.

    Raises:
        ValueError: a parameter is out of range (see :class:`DMDScheduler`).
    """
    _validate(start_timesteps, num_train_timesteps, shift, dmd_steps)
    t = torch.linspace(float(start_timesteps), float(num_train_timesteps), int(dmd_steps), dtype=torch.float32)
    t = t.flip(0)
    u = t / float(num_train_timesteps)
    u = shift * u / (1 + (shift - 1) * u)
    return u * float(num_train_timesteps)


def _validate(start_timesteps: float, num_train_timesteps: float, shift: float, dmd_steps: int) -> None:
    if isinstance(dmd_steps, bool) or not isinstance(dmd_steps, int) or dmd_steps < 1:
        raise ValueError(f"dmd_steps: expected a positive int, got {dmd_steps!r}")
    for name, val in (("start_timesteps", start_timesteps), ("num_train_timesteps", num_train_timesteps),
                      ("shift", shift)):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise ValueError(f"{name}: expected a finite number, got {val!r}")
    if num_train_timesteps <= 0:
        raise ValueError(f"num_train_timesteps: expected > 0, got {num_train_timesteps!r}")
    if not 0 <= start_timesteps <= num_train_timesteps:
        raise ValueError(
            f"start_timesteps: expected 0 <= start_timesteps <= num_train_timesteps ({num_train_timesteps}), "
            f"got {start_timesteps!r}")
    if shift <= 0:
        raise ValueError(f"shift: expected > 0, got {shift!r}")


@dataclass
class DMDSchedulerOutput:
    """Result of :meth:`DMDScheduler.step`: ``prev_sample`` has the shape of the input sample."""

    prev_sample: Tensor


class DMDScheduler:
    """Few-step Euler flow scheduler with float timesteps (DMD distilled sampling, test mode).

    A diffusers-like interface: ``set_timesteps``, ``timesteps`` (float32, ``(n,)``), ``sigmas``
    (float32, ``(n+1,)``, last value 0), ``step(model_output, timestep, sample)``, ``config`` (a plain
    dict), ``from_config`` / ``save_pretrained`` / ``from_pretrained`` (``scheduler_config.json``).

    The state (the index of the next step) is reset by :meth:`set_timesteps`; steps must be taken in
    order. The model output is a flow velocity ``v`` (``x_t = (1 - sigma) x0 + sigma * noise`` with
    ``v = noise - x0``).

    Args:
        start_timesteps: lowest timestep of the schedule before shifting (reference ``dmd_start_steps``).
        num_train_timesteps: highest timestep and normaliser (reference ``dmd_end_steps``).
        shift: flow shift (reference ``gen_shift``); 1 = no shift.
        dmd_steps: number of sampling steps (model evaluations).
    """

    order = 1

    def __init__(self, start_timesteps: float = 250, num_train_timesteps: float = 1000, shift: float = 5.0,
                 dmd_steps: int = 4) -> None:
        _validate(start_timesteps, num_train_timesteps, shift, dmd_steps)
        self._config: dict[str, Any] = {
            "start_timesteps": start_timesteps,
            "num_train_timesteps": num_train_timesteps,
            "shift": float(shift),
            "dmd_steps": int(dmd_steps),
        }
        self.timesteps: Tensor = torch.empty(0)
        self.sigmas: Tensor = torch.empty(0)
        self._step_index: int | None = None
        self.set_timesteps()

    # ------------------------------------------------------------------ configuration
    @property
    def config(self) -> dict[str, Any]:
        """A copy of the constructor arguments."""
        return dict(self._config)

    @property
    def num_inference_steps(self) -> int:
        return int(self._config["dmd_steps"])

    @property
    def default_num_inference_steps(self) -> int:
        """Number of steps used when :meth:`set_timesteps` is called without one (``dmd_steps``)."""
        return int(self._config["dmd_steps"])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable configuration (with ``_class_name``)."""
        return {"_class_name": type(self).__name__, **self._config}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "DMDScheduler":
        """Build from a configuration dict; unknown keys (e.g. diffusers' ``_class_name``) are ignored.

        The reference config names (``dmd_start_steps``, ``dmd_end_steps``, ``gen_shift``) are accepted
        too.

        Raises:
            TypeError: ``config`` is not a mapping.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict, got {type(config).__name__}")
        aliases = {"dmd_start_steps": "start_timesteps", "dmd_end_steps": "num_train_timesteps",
                   "gen_shift": "shift"}
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            key = aliases.get(key, key)
            if key in ("start_timesteps", "num_train_timesteps", "shift", "dmd_steps"):
                kwargs[key] = value
        return cls(**kwargs)

    from_config = from_dict

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """Write ``scheduler_config.json`` into ``save_directory`` (created if needed), atomically.

        Returns:
            The path of the written file.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _CONFIG_NAME
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> "DMDScheduler":
        """Load from a directory holding ``scheduler_config.json`` (or from that file itself).

        Raises:
            FileNotFoundError: no configuration file there.
        """
        path = Path(directory)
        if path.is_dir():
            path = path / _CONFIG_NAME
        if not path.is_file():
            raise MissingPathError(f"directory: no {_CONFIG_NAME} found at {str(path)!r}")
        return cls.from_dict(json.loads(path.read_text()))

    # ------------------------------------------------------------------ schedule
    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None) -> None:
        """Compute the test-mode schedule and reset the step counter.

        Args:
            num_inference_steps: must be ``None`` or equal to ``dmd_steps`` (the distilled model is
                tied to its schedule; a different value raises).
            device: where ``timesteps`` live (``sigmas`` stay on the CPU, as in diffusers).

        Raises:
            ValueError: ``num_inference_steps`` differs from ``dmd_steps``.
        """
        if num_inference_steps is not None and int(num_inference_steps) != self._config["dmd_steps"]:
            raise ValueError(
                f"num_inference_steps: the DMD schedule has a fixed number of steps "
                f"(dmd_steps={self._config['dmd_steps']}), got {num_inference_steps!r}")
        c = self._config
        t = dmd_timesteps(c["start_timesteps"], c["num_train_timesteps"], c["shift"], c["dmd_steps"])
        sig = t / float(c["num_train_timesteps"])
        self.sigmas = torch.cat([sig, torch.zeros(1, dtype=torch.float32)])
        self.timesteps = t.to(device) if device is not None else t
        self._step_index = None

    @property
    def step_index(self) -> int | None:
        """Index of the next step, ``None`` before the first one."""
        return self._step_index

    def _index_for(self, timestep: float | Tensor) -> int:
        value = float(timestep.reshape(-1)[0].item()) if isinstance(timestep, Tensor) else float(timestep)
        matches = (self.timesteps.detach().cpu().double() - value).abs() <= 1e-4 * max(1.0, abs(value))
        idx = torch.nonzero(matches).flatten()
        if idx.numel() == 0:
            raise ValueError(f"timestep: {value} is not in the schedule {self.timesteps.tolist()}")
        return int(idx[0])

    def step(self, model_output: Tensor, timestep: float | Tensor, sample: Tensor,
             return_dict: bool = True) -> DMDSchedulerOutput | tuple[Tensor]:
        """One Euler step ``x + (sigma_{i+1} - sigma_i) * v``, computed in float32.

        Args:
            model_output: flow velocity ``v``, same shape as ``sample``.
            timestep: the current timestep (a schedule value; used to find the first step index).
            sample: current latents ``x`` (any shape, e.g. ``(B, 16, F, h, w)``).
            return_dict: ``False`` returns a 1-tuple like diffusers.

        Returns:
            The next sample, in ``sample``'s dtype.

        Raises:
            ValueError: shapes differ, or all steps have been taken already.
        """
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output: expected shape {tuple(sample.shape)} (the sample's), "
                             f"got {tuple(model_output.shape)}")
        if self._step_index is None:
            self._step_index = self._index_for(timestep)
        i = self._step_index
        n = self.timesteps.numel()
        if i >= n:
            raise ValueError(f"step: all {n} steps were taken; call set_timesteps() to start again")
        sigma = self.sigmas[i].to(sample.device)
        sigma_next = self.sigmas[i + 1].to(sample.device)
        prev = sample.to(torch.float32) + (sigma_next - sigma) * model_output.to(torch.float32)
        prev = prev.to(sample.dtype)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return DMDSchedulerOutput(prev_sample=prev)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._config.items())})"
