"""diffusers-format checkpoints of our models, held to the guarantees of :class:`~worldstereo.WorldStereo`.

:class:`CheckpointFolderMixin` goes before diffusers' ``ModelMixin`` in the bases of
:class:`~worldstereo.models.WorldStereoTransformer` and :class:`~worldstereo.models.WanXControlNet`:

* ``save_pretrained(folder)`` runs diffusers' own ``save_pretrained`` into a staging folder and
  commits it with :func:`~worldstereo.models.checkpoint_folder.write_checkpoint_folder`: the folder
  holds either the complete old checkpoint or the complete new one at every instant (also when the
  process is killed), files the save did not write are kept, and leftovers of an interrupted save are
  cleaned by the next one. diffusers' keywords (``safe_serialization``, ``variant``,
  ``max_shard_size``, ...) are passed through; ``is_main_process=False`` writes nothing, as in
  diffusers.
* ``from_pretrained`` refuses weights holding NaN or ±inf, naming the tensor (as the reference-layout
  loader does), after diffusers has loaded them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import check_finite
from .checkpoint_folder import write_checkpoint_folder

__all__ = ["CheckpointFolderMixin", "check_module_finite"]


def check_module_finite(module: nn.Module, source: str) -> None:
    """Raise :class:`~worldstereo.models.checkpoint_folder.CheckpointError` (see
    :func:`~worldstereo.models.checkpoint.check_finite`) naming the first parameter or buffer of
    ``module`` that holds NaN or ±inf (``source``: where it was loaded from).
    Plain tensors are checked; tensor subclasses of quantization libraries are not."""
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        data = tensor.detach()
        if data.device.type == "meta" or type(data) is not torch.Tensor:  # quantized tensor subclasses: not checked
            continue
        check_finite(data, name, source)


class CheckpointFolderMixin:
    """Crash-safe ``save_pretrained`` and a finite-weights ``from_pretrained`` for a diffusers
    ``ModelMixin`` (put it before ``ModelMixin`` in the bases; see the module docstring)."""

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True,
                        push_to_hub: bool = False, **kwargs: Any) -> Path | None:
        """diffusers' ``save_pretrained`` as one crash-safe transaction into ``save_directory``.

        Returns:
            The folder, or None when ``is_main_process`` is False (nothing written).
        Raises:
            ValueError: ``push_to_hub=True`` (save, then upload the folder with
                ``huggingface_hub.upload_folder``); the errors of
                :func:`~worldstereo.models.checkpoint_folder.write_checkpoint_folder`.
        """
        if push_to_hub:
            raise ValueError("push_to_hub: not supported by this crash-safe save; save the folder, then upload it "
                             "with huggingface_hub.upload_folder(folder_path=...)")
        if not is_main_process:
            return None
        save = super().save_pretrained  # type: ignore[misc]
        return write_checkpoint_folder(save_directory, lambda staging: save(staging, **kwargs))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """diffusers' ``from_pretrained``, then every weight checked for NaN / ±inf."""
        result = super().from_pretrained(pretrained_model_name_or_path, **kwargs)  # type: ignore[misc]
        model = result[0] if isinstance(result, tuple) else result
        check_module_finite(model, repr(os.fspath(pretrained_model_name_or_path)))
        return result
