"""``worldstereo app``: a browser app to load a scene, author a camera path in 3D, preview what the
model will see, generate and take the 3D home (see ``docs/app.md``).

* :mod:`~worldstereo.app.session` — the state and actions of one browser session (no Gradio:
  testable without a browser), each a thin layer over the library;
* :mod:`~worldstereo.app.model` — the checkpoint and depth model, loaded when first needed;
* :mod:`~worldstereo.app.viewport` and ``static/viewport.js`` — the 3D view (point cloud + camera
  frusta on a 2D canvas, shipped in the package: nothing is fetched);
* :mod:`~worldstereo.app.coverage_plot` — the per-frame coverage plot;
* :mod:`~worldstereo.app.ui` — the Gradio layout and :func:`launch` with its safe defaults.

Gradio is an optional dependency: ``pip install 'worldstereo[app]'``.
"""

from .model import AppModels, ModelSpec, checkpoint_defaults
from .session import AppSession, GenerationCancelled

__all__ = ["AppModels", "AppSession", "GenerationCancelled", "ModelSpec", "build_app", "checkpoint_defaults",
           "launch"]


def build_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """:func:`worldstereo.app.ui.build_app` (imports Gradio)."""
    from .ui import build_app as _build  # lazy: gradio (optional extra)

    return _build(*args, **kwargs)


def launch(*args, **kwargs):  # type: ignore[no-untyped-def]
    """:func:`worldstereo.app.ui.launch` (imports Gradio)."""
    from .ui import launch as _launch  # lazy: gradio (optional extra)

    return _launch(*args, **kwargs)
