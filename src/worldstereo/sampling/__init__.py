"""Schedulers (flow UniPC, few-step DMD) and the denoising loop."""

from .dmd import DMDScheduler, DMDSchedulerOutput, dmd_timesteps
from .loop import NonFiniteLatentsError, ProgressCallback, denoise
from .unipc import DEFAULT_UNIPC_CONFIG, FlowUniPCMultistepScheduler, make_unipc_scheduler, reference_flow_sigmas

__all__ = [
    "DEFAULT_UNIPC_CONFIG",
    "DMDScheduler",
    "DMDSchedulerOutput",
    "FlowUniPCMultistepScheduler",
    "NonFiniteLatentsError",
    "ProgressCallback",
    "denoise",
    "dmd_timesteps",
    "make_unipc_scheduler",
    "reference_flow_sigmas",
]
