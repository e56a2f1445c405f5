"""The Gradio interface of ``worldstereo app``: layout and event wiring only (the actions are
:class:`~worldstereo.app.session.AppSession` methods).

Safe defaults (:func:`launch`): binds to 127.0.0.1, no share link, no analytics / telemetry /
version check, no server-side rendering process, uploads capped in size, a queue that runs the GPU
work (generation, reconstruction) one at a time, per-session temporary folders removed when the
session ends. The page loads nothing from outside the server (the 3D view is ``static/viewport.js``,
shipped in the package; fonts are Gradio's local ones).
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from worldstereo.camera import PRESET_NAMES, CameraTrajectory
from worldstereo.geometry import PointCloud

from .coverage_plot import coverage_summary, coverage_svg
from .model import AppModels
from .session import (
    APP_MAX_FRAMES,
    APP_MAX_SIDE,
    EXAMPLES,
    PRESET_PARAMETER_RANGES,
    AppSession,
    GenerationCancelled,
    preset_parameters,
)
from .viewport import CameraGroup, parse_view_pose, viewport_payload

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_MAX_UPLOAD_MB", "build_app", "launch", "viewport_js"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: largest uploaded file, in megabytes
DEFAULT_MAX_UPLOAD_MB = 50
#: preset parameter sliders shown at most (spiral has four)
PARAMETER_SLOTS = 4
#: seconds a session's state (and its temporary folder) lives after its last use
SESSION_TTL_S = 6 * 3600

_VIEWPORT_TEMPLATE = ('<div class="ws-viewport"><canvas class="ws-canvas" data-viewport="{name}" tabindex="0" '
                      'style="width:100%;display:block;outline:none;cursor:grab;border-radius:6px"></canvas></div>')
#: the "Add keyframe" button's browser side: the view camera's pose replaces the hidden input
_POSE_JS = ("(pose, session) => { const v = (window.worldstereoViewports || {})['scene']; "
            "return [v ? v.pose() : '', session]; }")
_CSS = """
#ws-viewport-col { position: sticky; top: 8px; align-self: flex-start; }
.ws-legend { font-size: 0.85em; color: #666; }
"""

_NO_SCENE = ("**No scene yet.** Upload a photo or a 2:1 panorama (and its depth map, if you have one), or load "
             "an example.")

_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError,
                                            ImportError)


@functools.lru_cache(maxsize=1)
def viewport_js() -> str:
    """The viewport's browser code (``static/viewport.js``, shipped in the package)."""
    return resources.files("worldstereo.app").joinpath("static/viewport.js").read_text(encoding="utf-8")


def _gradio() -> Any:
    try:
        import gradio as gr
    except ImportError as exc:
        raise ImportError("worldstereo app needs Gradio: pip install 'worldstereo[app]'") from exc
    return gr


# ------------------------------------------------------------------------------- view helpers
def _empty_viewport() -> dict[str, Any]:
    return {"points": {"xyz": "", "rgb": "", "count": 0}, "point_size": 0.0, "cameras": [], "view": {}}


def _scene_viewport(session: AppSession) -> dict[str, Any]:
    """Points, condition camera, keyframes, the path and the set of paths."""
    scene = session.scene
    if scene is None:
        return _empty_viewport()
    memory = session.memory_geometry()
    groups = [CameraGroup(session.trajectory()[0], "#3ddc84", "condition view", width=2.5, show_path=False)]
    for i, view in enumerate(session.views):
        groups.append(CameraGroup(view, "#6fa8dc", f"set path {i + 1} ({len(view)} frames)", width=1.0,
                                  max_frusta=8))
    path = session.trajectory()
    label = {"preset": f"path: {session.path.preset}", "keyframes": "path: keyframes",
             "file": f"path: {session.imported_name}"}[session.path.mode]
    groups.append(CameraGroup(path, "#ff8c00", f"{label} ({len(path)} frames)"))
    if session.keyframes:
        import torch


        keys = CameraTrajectory(torch.stack(session.keyframes), session.condition_K(), session.height, session.width)
        groups.append(CameraGroup(keys, "#ffd400", f"keyframes ({len(session.keyframes)})", width=2.5,
                                  show_path=False))
    return viewport_payload(memory.points, groups, fov_deg=session.path.fov_deg,
                            aspect=session.width / session.height, median_depth=scene.median_depth,
                            scene=scene.key)


def _result_viewport(session: AppSession) -> dict[str, Any]:
    rec = session.reconstruction
    if rec is None:
        return _empty_viewport()
    r = rec.reconstruction
    if r.mesh is not None:
        import numpy as np
        import torch

        cloud = PointCloud(torch.as_tensor(np.asarray(r.mesh.vertices), dtype=torch.float32),
                           torch.as_tensor(np.asarray(r.mesh.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32))
    else:
        cloud = PointCloud(r.points.float().cpu(), r.colors.float().cpu())
    cams = r.cameras
    median = session.scene.median_depth if session.scene is not None else 1.0
    return viewport_payload(cloud, [CameraGroup(cams, "#ff8c00", f"generated cameras ({len(cams)})", max_frusta=16)],
                            fov_deg=session.path.fov_deg, aspect=session.width / session.height,
                            median_depth=median, scene=f"result-{id(rec)}")


def _status(session: AppSession) -> str:
    scene = session.scene
    if scene is None:
        return _NO_SCENE
    memory = session.memory_geometry()
    kind = "2:1 panorama" if scene.panorama else "photo"
    return (f"**Scene:** {scene.name} ({kind}, {scene.source.shape[-1]}×{scene.source.shape[-2]}); depth: "
            f"{scene.depth_source}; median depth {scene.median_depth:.3g}; {len(memory.points):,} points at the "
            f"generation size {session.width}×{session.height}.")


def _path_info(session: AppSession) -> str:
    if session.scene is None:
        return ""
    traj = session.trajectory()
    spec = session.path
    if spec.mode == "preset":
        params = ", ".join(f"{k}={v:g}" for k, v in spec.params.items())
        what = f"preset **{spec.preset}** ({params}; lengths in median depths)"
    elif spec.mode == "keyframes":
        what = f"**{len(session.keyframes)} keyframe(s)** after the condition view, smooth (Catmull-Rom) interpolation"
    else:
        what = f"file **{session.imported_name}**"
    fit = f"; fitted to the scene: motion ×{session.fit_scale:.3g}" if session.fit_scale else ""
    travel = float(traj.centers.double().diff(dim=0).norm(dim=1).sum()) if len(traj) > 1 else 0.0
    views = f" Set of paths to generate together: {len(session.views)}." if session.views else ""
    return (f"Camera path: {what}; {len(traj)} frames, {spec.fov_deg:.0f}° field of view, camera travel "
            f"{travel:.3g} scene units{fit}.{views}")


def _slider_updates(gr: Any, preset: str, values: dict[str, float] | None = None) -> list[Any]:
    params = preset_parameters(preset)
    if values:
        params.update({k: v for k, v in values.items() if k in params})
    updates = []
    names = list(params)
    for i in range(PARAMETER_SLOTS):
        if i < len(names):
            lo, hi, step = PRESET_PARAMETER_RANGES.get(names[i], (-10.0, 10.0, 0.05))
            value = min(max(params[names[i]], lo), hi)
            updates.append(gr.update(visible=True, label=names[i], minimum=lo, maximum=hi, step=step, value=value))
        else:
            updates.append(gr.update(visible=False))
    return updates


def _guard(fn: Any) -> Any:
    """Report the library's errors as Gradio errors (a message in the page, not a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gr = _gradio()
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except _ERRORS as exc:
            logger.debug("app action failed", exc_info=True)
            raise gr.Error(" ".join(str(exc).split()) or type(exc).__name__) from exc

    return wrapper


# ---------------------------------------------------------------------------------- the app
def build_app(models: AppModels | None = None, *, scale_map: list[list[int]] | None = None,
              default_frames: int = 21, max_frames: int = APP_MAX_FRAMES, title: str = "WorldStereo") -> Any:
    """Build the interface (a ``gradio.Blocks``); :func:`launch` serves it.

    Args:
        models: the checkpoint / depth model holder (default: none; preview only).
        scale_map: generation sizes by aspect ratio (the checkpoint's).
        default_frames: frames of a new camera path (the checkpoint's ``nframe``).
        max_frames: most frames of a path.
    """
    gr = _gradio()
    models = models or AppModels()
    default_frames = max(2, min(int(default_frames), max_frames))

    def new_session() -> AppSession:
        return AppSession(models, scale_map=scale_map, default_frames=default_frames, max_frames=max_frames)

    with gr.Blocks(title=title, analytics_enabled=False, fill_width=True) as demo:
        session = gr.State(new_session, time_to_live=SESSION_TTL_S, delete_callback=AppSession.close)
        gr.Markdown(f"# {title}\nFrom one photo to a camera-controlled video and its 3D: load a scene, author a "
                    "camera path in the 3D view, preview what the model will see, generate, reconstruct.")
        status = gr.Markdown(_NO_SCENE, elem_id="ws-status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=380):
                with gr.Tabs():
                    with gr.Tab("1 · Scene", id="scene"):
                        image = gr.Image(label="Photo or 2:1 panorama", type="filepath", sources=["upload"],
                                         elem_id="ws-image", height=220)
                        depth_file = gr.File(label="Depth map (optional): .npy / .npz z-depth, or 16-bit .png in mm",
                                             file_types=[".npy", ".npz", ".png"], elem_id="ws-depth", height=90)
                        load_btn = gr.Button("Load scene", variant="primary", elem_id="ws-load")
                        with gr.Row():
                            example = gr.Dropdown(list(EXAMPLES), value=next(iter(EXAMPLES)), label="Example",
                                                  elem_id="ws-example", scale=3)
                            example_btn = gr.Button("Load example", elem_id="ws-load-example", scale=1)
                        gr.Markdown("Without a depth map the depth is estimated (Depth Anything V2 Small, loaded "
                                    "the first time; offline it must be in the Hugging Face cache).",
                                    elem_classes=["ws-legend"])
                    with gr.Tab("2 · Camera path", id="path"):
                        mode = gr.Radio(["preset", "keyframes", "file"], value="preset", label="Path from",
                                        elem_id="ws-mode")
                        preset = gr.Dropdown(list(PRESET_NAMES), value="orbit", label="Preset", elem_id="ws-preset")
                        initial = _slider_updates(gr, "orbit")
                        sliders = []
                        for i in range(PARAMETER_SLOTS):
                            u = initial[i]
                            sliders.append(gr.Slider(minimum=u.get("minimum", 0), maximum=u.get("maximum", 1),
                                                     step=u.get("step", 0.01), value=u.get("value", 0),
                                                     label=u.get("label", f"parameter {i + 1}"),
                                                     visible=u.get("visible", False), elem_id=f"ws-param-{i}"))
                        with gr.Row():
                            frames = gr.Slider(2, max_frames, value=default_frames, step=1, label="Frames",
                                               elem_id="ws-frames")
                            fov = gr.Slider(20, 120, value=60, step=1, label="Field of view (°, horizontal)",
                                            elem_id="ws-fov")
                        with gr.Row():
                            add_kf = gr.Button("Add keyframe", elem_id="ws-add-keyframe")
                            undo_kf = gr.Button("Remove last keyframe", elem_id="ws-undo-keyframe")
                            clear_kf = gr.Button("Clear keyframes", elem_id="ws-clear-keyframes")
                        pose = gr.Textbox(visible=False, elem_id="ws-pose")
                        traj_file = gr.File(label="Import a trajectory: ours .json, camera.json, transforms.json, "
                                                  ".npz, RealEstate10K .txt", file_types=[".json", ".npz", ".txt"],
                                            elem_id="ws-trajectory-file", height=90)
                        with gr.Row():
                            min_cov = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="Fit: least coverage per frame",
                                                scale=3)
                            fit_btn = gr.Button("Fit to scene", elem_id="ws-fit", scale=1)
                        with gr.Row():
                            add_view = gr.Button("Add path to the set", elem_id="ws-add-view")
                            clear_views = gr.Button("Clear the set", elem_id="ws-clear-views")
                            export_btn = gr.Button("Export trajectory", elem_id="ws-export")
                        export_files = gr.File(label="Trajectory in every format", file_count="multiple",
                                               elem_id="ws-export-files", visible=False)
                        with gr.Accordion("Generation size", open=False):
                            with gr.Row():
                                height = gr.Number(value=480, precision=0, step=16, minimum=16, maximum=APP_MAX_SIDE,
                                                   label="Height", elem_id="ws-height")
                                width = gr.Number(value=832, precision=0, step=16, minimum=16, maximum=APP_MAX_SIDE,
                                                  label="Width", elem_id="ws-width")
                                size_btn = gr.Button("Apply size", elem_id="ws-apply-size")
                        path_info = gr.Markdown(elem_id="ws-path-info")
                    with gr.Tab("3 · Preview", id="preview"):
                        preview_btn = gr.Button("Preview", variant="primary", elem_id="ws-preview")
                        with gr.Row():
                            render_video = gr.Video(label="Point-cloud render (what the model is conditioned on)",
                                                    elem_id="ws-render", autoplay=True, loop=True, interactive=False)
                            mask_video = gr.Video(label="Hole mask (white = not covered)", elem_id="ws-mask",
                                                  autoplay=True, loop=True, interactive=False)
                        coverage_plot = gr.HTML(elem_id="ws-coverage")
                        coverage_text = gr.Markdown(elem_id="ws-coverage-text")
                    with gr.Tab("4 · Generate", id="generate"):
                        model_info = gr.Markdown(models.describe(), elem_id="ws-model-info")
                        prompt = gr.Textbox(label="Prompt (optional)", elem_id="ws-prompt")
                        with gr.Accordion("Sampling", open=False):
                            negative = gr.Textbox(label="Negative prompt (default: the checkpoint's)")
                            with gr.Row():
                                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="ws-seed")
                                steps = gr.Slider(1, 100, value=40, step=1, label="Denoising steps (reference: 40)",
                                                  elem_id="ws-steps")
                                guidance = gr.Slider(0.0, 15.0, value=5.0, step=0.5, label="Guidance (reference: 5)")
                        with gr.Row():
                            gen_btn = gr.Button("Generate", variant="primary", elem_id="ws-generate",
                                                interactive=models.has_checkpoint)
                            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="ws-cancel")
                        gen_status = gr.Markdown(elem_id="ws-gen-status")
                        with gr.Row():
                            result_video = gr.Video(label="Generated video", elem_id="ws-result", autoplay=True,
                                                    loop=True, interactive=False)
                            result_render = gr.Video(label="Its point-cloud render", elem_id="ws-result-render",
                                                     autoplay=True, loop=True, interactive=False)
                    with gr.Tab("5 · 3D", id="3d"):
                        with gr.Row():
                            method = gr.Radio(["point_cloud", "mesh", "neural_field"], value="point_cloud",
                                              label="Reconstruction", elem_id="ws-method")
                            frame_depth = gr.Radio([("render depth (no model)", "render"),
                                                    ("depth model per frame", "model")], value="render",
                                                   label="Depth of the frames", elem_id="ws-frame-depth")
                        recon_btn = gr.Button("Reconstruct", variant="primary", elem_id="ws-reconstruct")
                        recon_status = gr.Markdown(elem_id="ws-recon-status")
                        result_view = gr.HTML(_empty_viewport(), html_template=_VIEWPORT_TEMPLATE.format(name="result"),
                                              js_on_load=viewport_js(), elem_id="ws-result-viewport")
                        download = gr.File(label="Download: PLY, GLB (mesh), 3DGS PLY (neural field), COLMAP, "
                                                 "transforms.json, videos (zip)", elem_id="ws-download")
            with gr.Column(scale=7, min_width=420, elem_id="ws-viewport-col"):
                viewport = gr.HTML(_empty_viewport(), html_template=_VIEWPORT_TEMPLATE.format(name="scene"),
                                   js_on_load=viewport_js(), elem_id="ws-viewport")
                gr.Markdown("Green: condition view · orange: camera path · yellow: keyframes · blue: set of paths. "
                            "Move the view (drag, shift-drag, wheel, W/A/S/D/R/F) and press **Add keyframe** to "
                            "place a camera where the view is.", elem_classes=["ws-legend"])

        # ------------------------------------------------------------------------- handlers
        path_outputs = [viewport, path_info]
        scene_outputs = [viewport, status, path_info, mode, preset, *sliders, frames, fov, height, width,
                         render_video, mask_video, coverage_plot, coverage_text]

        def scene_updates(s: AppSession) -> list[Any]:
            return [_scene_viewport(s), _status(s), _path_info(s), s.path.mode, s.path.preset,
                    *_slider_updates(gr, s.path.preset, s.path.params), s.path.num_frames, s.path.fov_deg,
                    s.height, s.width, None, None, "", ""]

        def path_updates(s: AppSession) -> list[Any]:
            return [_scene_viewport(s), _path_info(s)]

        @_guard
        def on_load(s: AppSession, image_path: str | None, depth_path: Any, progress: Any = gr.Progress()) -> list[Any]:
            if not image_path:
                raise gr.Error("Upload a photo or a 2:1 panorama first (or load an example).")
            s.load_scene(image_path, _file_path(depth_path), progress=lambda f, d: progress(f, desc=d))
            return scene_updates(s)

        @_guard
        def on_example(s: AppSession, name: str, progress: Any = gr.Progress()) -> list[Any]:
            s.load_example(name, progress=lambda f, d: progress(f, desc=d))
            return scene_updates(s)

        @_guard
        def on_path(s: AppSession, mode_value: str, preset_value: str, *rest: Any) -> list[Any]:
            values, n, fov_value = rest[:PARAMETER_SLOTS], rest[PARAMETER_SLOTS], rest[PARAMETER_SLOTS + 1]
            names = list(preset_parameters(s.path.preset))
            params = {k: float(v) for k, v in zip(names, values) if v is not None} if preset_value == s.path.preset \
                else None
            s.set_path(mode=mode_value, preset=preset_value, params=params, num_frames=int(n), fov_deg=float(fov_value))
            return path_updates(s)

        @_guard
        def on_preset(s: AppSession, preset_value: str) -> list[Any]:
            s.set_path(mode="preset", preset=preset_value)
            return [*path_updates(s), "preset", *_slider_updates(gr, preset_value)]

        @_guard
        def on_add_keyframe(pose_json: str, s: AppSession) -> list[Any]:
            if not pose_json:
                raise gr.Error("The 3D view did not report its camera; reload the page.")
            count = s.add_keyframe(parse_view_pose(pose_json))
            gr.Info(f"Keyframe {count} added.")
            return [*path_updates(s), s.path.mode, s.path.num_frames]

        @_guard
        def on_undo_keyframe(s: AppSession) -> list[Any]:
            s.remove_last_keyframe()
            return [*path_updates(s), s.path.mode]

        @_guard
        def on_clear_keyframes(s: AppSession) -> list[Any]:
            s.clear_keyframes()
            return [*path_updates(s), s.path.mode]

        @_guard
        def on_import(s: AppSession, file: Any) -> list[Any]:
            path = _file_path(file)
            if path is None:
                return [*path_updates(s), s.path.mode, s.path.num_frames]
            s.import_trajectory(path)
            return [*path_updates(s), s.path.mode, s.path.num_frames]

        @_guard
        def on_fit(s: AppSession, min_coverage: float, progress: Any = gr.Progress()) -> list[Any]:
            progress(0.1, desc="fitting the path to the scene")
            scale, cov, reached = s.fit(float(min_coverage))
            if not reached:
                gr.Warning(f"No scale of this path keeps {100 * min_coverage:.0f}% of every frame covered; the best "
                           f"(motion ×{scale:.3g}) keeps {100 * min(cov):.0f}%: its rotations turn away from the scene.")
            return path_updates(s)

        @_guard
        def on_export(s: AppSession) -> Any:
            return gr.update(value=[str(p) for p in s.export_trajectory()], visible=True)

        @_guard
        def on_add_view(s: AppSession) -> list[Any]:
            count = s.add_view()
            gr.Info(f"{count} path(s) in the set: Generate makes one video per path, with shared memory.")
            return path_updates(s)

        @_guard
        def on_clear_views(s: AppSession) -> list[Any]:
            s.clear_views()
            return path_updates(s)

        @_guard
        def on_size(s: AppSession, h: float, w: float) -> list[Any]:
            s.set_size(int(h or 0), int(w or 0))
            return [_scene_viewport(s), _status(s), _path_info(s)]

        @_guard
        def on_preview(s: AppSession, progress: Any = gr.Progress()) -> list[Any]:
            p = s.render_preview(progress=lambda f, d: progress(f, desc=d))
            text = coverage_summary(p.coverage)
            if "Warning" in text:
                gr.Warning("Coverage collapses along this path: see the plot.")
            return [str(p.render_path), str(p.mask_path), coverage_svg(p.coverage),
                    f"{text} Rendered {len(p.coverage)} frames at {s.width}×{s.height} in {p.seconds:.1f} s."]

        @_guard
        def on_generate(s: AppSession, prompt_value: str, negative_value: str, seed_value: float, steps_value: float,
                        guidance_value: float, progress: Any = gr.Progress()) -> list[Any]:
            try:
                g = s.generate(prompt=prompt_value or "", negative_prompt=negative_value or None,
                               seed=int(seed_value or 0), steps=int(steps_value), guidance=float(guidance_value),
                               progress=lambda f, d: progress(f, desc=d))
            except GenerationCancelled as exc:
                return [gr.update(), gr.update(), f"Cancelled ({exc}).", models.describe()]
            what = f"{len(g.videos)} videos with shared memory" if len(g.videos) > 1 else "1 video"
            return [str(g.video_paths[-1]), str(g.render_paths[-1]),
                    f"Generated {what} ({len(g.videos[0])} frames at {s.width}×{s.height}) in {g.seconds:.1f} s. "
                    "Next: 3D.", models.describe()]

        def on_cancel(s: AppSession) -> str:
            s.request_cancel()
            return "Cancelling after the current denoising step…"

        @_guard
        def on_reconstruct(s: AppSession, method_value: str, depth_value: str,
                           progress: Any = gr.Progress(track_tqdm=True)) -> list[Any]:
            r = s.reconstruct(method_value, depth=depth_value, progress=lambda f, d: progress(f, desc=d))
            archive = s.download_zip()
            m = r.reconstruction.quality_metrics
            psnr = m.get("reprojection_psnr")
            quality = f", re-projection PSNR {psnr:.1f} dB" if psnr is not None and psnr == psnr else ""
            return [_result_viewport(s),
                    f"{method_value.replace('_', ' ')}: {int(m.get('num_points', 0)):,} points{quality} "
                    f"({r.seconds:.1f} s). Files: {', '.join(sorted(r.files))}.", str(archive)]

        load_btn.click(on_load, [session, image, depth_file], scene_outputs)
        example_btn.click(on_example, [session, example], scene_outputs)
        path_inputs = [session, mode, preset, *sliders, frames, fov]
        mode.input(on_path, path_inputs, path_outputs)
        preset.input(on_preset, [session, preset], [*path_outputs, mode, *sliders])
        for control in (*sliders, frames, fov):
            control.release(on_path, path_inputs, path_outputs)
        add_kf.click(on_add_keyframe, [pose, session], [*path_outputs, mode, frames], js=_POSE_JS)
        undo_kf.click(on_undo_keyframe, [session], [*path_outputs, mode])
        clear_kf.click(on_clear_keyframes, [session], [*path_outputs, mode])
        traj_file.upload(on_import, [session, traj_file], [*path_outputs, mode, frames])
        fit_btn.click(on_fit, [session, min_cov], path_outputs)
        export_btn.click(on_export, [session], [export_files])
        add_view.click(on_add_view, [session], path_outputs)
        clear_views.click(on_clear_views, [session], path_outputs)
        size_btn.click(on_size, [session, height, width], [viewport, status, path_info])
        preview_btn.click(on_preview, [session], [render_video, mask_video, coverage_plot, coverage_text])
        generation = gen_btn.click(on_generate, [session, prompt, negative, seed, steps, guidance],
                                   [result_video, result_render, gen_status, model_info],
                                   concurrency_limit=1, concurrency_id="gpu")
        cancel_btn.click(on_cancel, [session], [gen_status], cancels=[generation], queue=False)
        recon_btn.click(on_reconstruct, [session, method, frame_depth], [result_view, recon_status, download],
                        concurrency_limit=1, concurrency_id="gpu")
    return demo


def _file_path(value: Any) -> str | None:
    """The server path Gradio gives for an uploaded file (a path string or a file object)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    return getattr(value, "name", None) or getattr(value, "path", None)


def launch(models: AppModels | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
           max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, prevent_thread_lock: bool = False, quiet: bool = False,
           **build_kwargs: Any) -> Any:
    """Build and serve the app with the safe defaults of the module docstring; returns the Blocks
    (``demo.close()`` stops a server started with ``prevent_thread_lock=True``).

    Args:
        host: address to bind (``127.0.0.1``: this machine only; ``0.0.0.0`` exposes the app to the
            network, without authentication).
        port: TCP port.
        max_upload_mb: largest uploaded file.
        **build_kwargs: passed to :func:`build_app`.
    """
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port: expected an integer in [1, 65535], got {port!r}")
    if not isinstance(max_upload_mb, int) or not 1 <= max_upload_mb <= 10_000:
        raise ValueError(f"max_upload_mb: expected an integer in [1, 10000], got {max_upload_mb!r}")
    demo = build_app(models, **build_kwargs)
    demo.queue(default_concurrency_limit=4, max_size=64)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, max_file_size=f"{max_upload_mb}mb",
                ssr_mode=False, footer_links=[], run_history=False, enable_monitoring=False, mcp_server=False,
                pwa=False, show_error=True, quiet=quiet, prevent_thread_lock=prevent_thread_lock, css=_CSS)
    return demo
