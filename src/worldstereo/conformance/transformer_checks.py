"""Conformance checker of the transformer cases (``transformer_camera``, ``transformer_memory*``).

Works on any directory of that layout: ``config.json`` + ``model.safetensors`` (strict load),
``inputs.safetensors`` (forward keywords; ``timestep`` and ``timestep_int``), ``expected.safetensors``
(``sample``, ``sample_timestep_int``) and, optionally, ``intermediates.safetensors``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from .results import CheckResult, compare

__all__ = ["check_transformer", "TRANSFORMER_TOL"]

logger = logging.getLogger(__name__)

#: Max abs error accepted for transformer outputs and intermediates (conformance README).
TRANSFORMER_TOL = 1e-4

_FORWARD_KEYS = ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_image", "render_latent",
                 "render_mask", "camera_embedding", "reference_latent", "ref_index", "camera_qt", "camera_qt_ref")


def check_transformer(case_dir: Path, intermediates: bool = True) -> list[CheckResult]:
    """Build the model of ``case_dir``, run it in float32 and compare with the reference outputs."""
    from worldstereo.models.transformer import WorldStereoTransformer  # noqa: PLC0415

    case_dir = Path(case_dir)
    model = WorldStereoTransformer.from_reference_dir(case_dir, torch_dtype=torch.float32)
    inputs = load_file(str(case_dir / "inputs.safetensors"))
    expected = load_file(str(case_dir / "expected.safetensors"))
    kwargs = {k: inputs[k] for k in _FORWARD_KEYS if k in inputs}
    unknown = sorted(set(inputs) - set(_FORWARD_KEYS) - {"timestep", "timestep_int"})
    if unknown:
        logger.warning("%s: ignoring unknown input tensors %s", case_dir.name, unknown)
    results: list[CheckResult] = []
    runs = [("sample", "timestep"), ("sample_timestep_int", "timestep_int")]
    inter_path = case_dir / "intermediates.safetensors"
    for out_name, t_name in runs:
        if out_name not in expected or t_name not in inputs:
            continue
        captured: dict[str, torch.Tensor] | None = {} if (intermediates and t_name == "timestep") else None
        with torch.no_grad():
            out = model(timestep=inputs[t_name], return_dict=False, intermediates=captured, **kwargs)[0]
        results.append(compare(out_name, out, expected[out_name], TRANSFORMER_TOL))
        if captured is not None and inter_path.is_file():
            ref = load_file(str(inter_path))
            for name in sorted(ref):
                if name in captured:
                    results.append(compare(f"intermediates/{name}", captured[name], ref[name], TRANSFORMER_TOL))
                else:
                    logger.debug("%s: intermediate %s not produced", case_dir.name, name)
    if not results:
        results.append(CheckResult("<inputs>", float("inf"), TRANSFORMER_TOL, "no sample/timestep pair found"))
    return results
