"""``worldstereo app`` in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The test starts the real command (``python -m worldstereo.cli app --model <tiny checkpoint>``) on a free
loopback port and walks through the app as a user would, with the tiny model and a depth file: upload
a view of the procedural room, choose a preset, orbit the 3D view and add a keyframe there, preview
(render + hole mask videos, coverage plot), generate, reconstruct, download the zip and check its
files. Every request the page makes must go to the app's own server (nothing fetched from outside).

Screenshots of each step go to ``$WORLDSTEREO_APP_SCREENSHOTS`` when set (``docs/images/app`` for the
documentation; quantised to 256 colours to stay small), else into the test's temporary folder.

Skipped, with the reason, where Playwright, Gradio or the ``chromium`` executable are missing
(``bash scripts/bootstrap.sh test`` installs all three where it can: see ``docs/app.md``).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch

from .conftest import GEN_SIZE

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: frames of the path the test authors (keyframes at frames 0 and 7)
FRAMES = 8
STEP_TIMEOUT_MS = 120_000


def _chromium() -> str | None:
    for candidate in (os.environ.get("WORLDSTEREO_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _requirements() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for module, hint in (("playwright", "pip install playwright"), ("gradio", "pip install 'worldstereo[app]'")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed ({hint}; `bash scripts/bootstrap.sh test` does it)"
    if _chromium() is None:
        return ("no chromium executable (Debian: apt-get install -y chromium; `bash scripts/bootstrap.sh test` installs "
                "it when run as root with apt-get)")
    return None


pytestmark = pytest.mark.skipif(_requirements() is not None, reason=str(_requirements()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """The app, started by its command, on a free loopback port; yields its address."""
    root = tmp_path_factory.mktemp("app-server")
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TMPDIR=str(root), GRADIO_TEMP_DIR=str(root / "gradio"),
               PYTHONUNBUFFERED="1")
    log = open(root / "server.log", "w+", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "worldstereo.cli", "app", "--model", str(tiny_checkpoint),
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"worldstereo app exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("worldstereo app did not answer within 120 s")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Shots:
    """Numbered screenshots of the page (quantised PNGs when they are for the docs)."""

    def __init__(self, page, folder: Path, for_docs: bool) -> None:
        self.page, self.folder, self.for_docs = page, folder, for_docs
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> Path:
        path = self.folder / f"{name}.png"
        data = self.page.screenshot()
        if self.for_docs:
            from PIL import Image

            image = Image.open(io.BytesIO(data)).convert("RGB")
            image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
            image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        else:
            path.write_bytes(data)
        return path


def _wait_text(page, selector: str, text: str, timeout: int = STEP_TIMEOUT_MS) -> str:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && "
                               "e.innerText.includes(t); }", arg=[selector, text], timeout=timeout)
    except PlaywrightTimeout:
        shown = page.evaluate("() => document.body.innerText.slice(0, 3000)")
        raise AssertionError(f"{text!r} never appeared in {selector}; the page shows:\n{shown}") from None
    return page.locator(selector).inner_text()


def _set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def test_from_a_photo_to_the_3d_in_the_browser(server, browser, room_files, tmp_path):
    screenshots = os.environ.get("WORLDSTEREO_APP_SCREENSHOTS")
    page = browser.new_page(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    shot = Shots(page, Path(screenshots) if screenshots else tmp_path / "screenshots", bool(screenshots))

    page.goto(server)
    page.wait_for_selector("#ws-viewport canvas")
    assert "No scene yet" in page.locator("#ws-status").inner_text()
    shot("01-start")

    # 1. scene: the room photo and its exact depth
    t0 = time.perf_counter()
    page.locator("#ws-image input[type=file]").set_input_files(str(room_files["image"]))
    page.wait_for_selector("#ws-image img", timeout=30_000)  # the upload has arrived
    page.locator("#ws-depth input[type=file]").set_input_files(str(room_files["depth"]))
    page.wait_for_selector("#ws-depth a, #ws-depth .file-name, #ws-depth table", timeout=30_000)
    page.get_by_role("button", name="Load scene").click()
    status = _wait_text(page, "#ws-status", "Scene:")
    assert "room.png" in status and "depth: depth file" in status
    canvas = page.locator("#ws-viewport canvas")
    page.wait_for_function("document.querySelector('#ws-viewport canvas').dataset.points > 0")
    assert int(canvas.get_attribute("data-frusta")) > 0  # condition view and path drawn
    shot("02-scene")

    # 2. camera path: generation size and frame count, a preset, then a keyframe placed in the 3D view
    page.get_by_role("tab", name="2 · Camera path").click()
    page.get_by_role("button", name="Generation size").click()
    _set_number(page, "ws-height", GEN_SIZE[0])
    _set_number(page, "ws-width", GEN_SIZE[1])
    page.get_by_role("button", name="Apply size").click()
    _wait_text(page, "#ws-status", f"{GEN_SIZE[1]}×{GEN_SIZE[0]}")
    page.locator("#ws-preset input").click()
    page.get_by_role("option", name="spiral").click()
    _wait_text(page, "#ws-path-info", "preset spiral")
    _set_number(page, "ws-frames", FRAMES)
    page.locator("#ws-frames input[type=range]").dispatch_event("pointerup")
    _wait_text(page, "#ws-path-info", f"{FRAMES} frames")

    # the view's camera is the library's look-at camera: home = the condition view, then orbit it
    page.evaluate("window.worldstereoViewports.scene.home()")
    home = json.loads(page.evaluate("window.worldstereoViewports.scene.pose()"))
    assert torch.allclose(torch.tensor(home["w2c"], dtype=torch.float64).reshape(4, 4), torch.eye(4, dtype=torch.float64),
                          atol=1e-9)
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 40, cy - 10, steps=4)  # drag: orbit about the point at the median depth
    page.mouse.up()
    pose = json.loads(page.evaluate("window.worldstereoViewports.scene.pose()"))
    w2c = torch.tensor(pose["w2c"], dtype=torch.float64).reshape(4, 4)
    median = float(room_files["depth_map"][room_files["depth_map"] > 0].median())
    from worldstereo.camera import CameraTrajectory

    eye = -w2c[:3, :3].T @ w2c[:3, 3]
    assert float((eye - torch.tensor([0.0, 0.0, median], dtype=torch.float64)).norm()) == pytest.approx(median, rel=1e-6)
    expected = CameraTrajectory.look_at(eye, [0.0, 0.0, median]).w2c[0].double()
    assert torch.allclose(w2c, expected, atol=1e-6)
    assert float(eye.norm()) > 0.05 * median  # the drag moved the camera
    page.get_by_role("button", name="Add keyframe").click()
    info = _wait_text(page, "#ws-path-info", "1 keyframe")
    assert f"{FRAMES} frames" in info
    assert page.locator("#ws-mode input[value=keyframes]").is_checked()
    shot("03-camera-path")
    seconds_to_path = time.perf_counter() - t0

    # 3. preview: render + hole mask videos and the coverage plot
    page.get_by_role("tab", name="3 · Preview").click()
    page.get_by_role("button", name="Preview", exact=True).click()
    page.wait_for_selector("#ws-coverage svg circle", timeout=STEP_TIMEOUT_MS)
    assert page.locator("#ws-coverage svg circle").count() == FRAMES
    assert float(page.locator("#ws-coverage svg circle").first.get_attribute("data-coverage")) == 1.0
    assert "Coverage: lowest" in page.locator("#ws-coverage-text").inner_text()
    for video in ("#ws-render video", "#ws-mask video"):
        page.wait_for_function("(s) => { const v = document.querySelector(s); return v && v.readyState >= 1 && "
                               "v.duration > 0; }", arg=video, timeout=30_000)  # the browser decodes the H.264
    seconds_to_preview = time.perf_counter() - t0
    shot("04-preview")

    # 4. generate with the tiny model (2 denoising steps)
    page.get_by_role("tab", name="4 · Generate").click()
    assert "loaded on first Generate" in _wait_text(page, "#ws-model-info", "Checkpoint")  # nothing loaded yet
    assert page.get_by_role("button", name="Generate", exact=True).is_enabled()
    page.get_by_role("button", name="Sampling").click()
    _set_number(page, "ws-steps", 2)
    page.locator("#ws-steps input[type=range]").dispatch_event("pointerup")
    page.get_by_role("button", name="Generate", exact=True).click()
    gen = _wait_text(page, "#ws-gen-status", "Generated")
    assert f"{FRAMES} frames at {GEN_SIZE[1]}×{GEN_SIZE[0]}" in gen
    page.wait_for_function("(s) => { const v = document.querySelector(s); return v && v.readyState >= 1; }",
                           arg="#ws-result video", timeout=30_000)
    assert "memory tier resident" in page.locator("#ws-model-info").inner_text()
    shot("05-generate")

    # 5. 3D: reconstruct, view, download the zip
    page.get_by_role("tab", name="5 · 3D").click()
    page.get_by_role("button", name="Reconstruct").click()
    recon = _wait_text(page, "#ws-recon-status", "points")
    assert "colmap" in recon and "transforms" in recon
    page.wait_for_function("document.querySelector('#ws-result-viewport canvas').dataset.points > 0")
    shot("06-3d")
    with page.expect_download() as download:
        page.locator("#ws-download a").first.click()
    archive = tmp_path / "result.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        for name in ("generation/video.mp4", "generation/render.mp4", "generation/render_mask.mp4",
                     "generation/camera.json", "reconstruction/points.ply", "reconstruction/colmap/cameras.txt",
                     "reconstruction/colmap/images.txt", "reconstruction/nerfstudio/transforms.json",
                     "reconstruction/viewer.html", "trajectory/trajectory.json", "trajectory/camera.json"):
            assert f"worldstereo-result/{name}" in names, name
        transforms = json.loads(zf.read("worldstereo-result/reconstruction/nerfstudio/transforms.json"))
        ply_header = zf.read("worldstereo-result/reconstruction/points.ply")[:400].decode("latin-1")
        trajectory = json.loads(zf.read("worldstereo-result/trajectory/trajectory.json"))
    assert len(transforms["frames"]) == FRAMES
    vertices = int(ply_header.split("element vertex ")[1].split()[0])
    assert vertices > 100
    # the path ends at the keyframe placed in the view
    assert trajectory["num_frames"] == FRAMES
    last = torch.tensor(trajectory["w2c"][-1], dtype=torch.float64)
    assert torch.allclose(last, w2c, atol=1e-5)

    external = [u for u in requests if not u.startswith(server) and not u.startswith(("data:", "blob:"))]
    assert external == [], external
    assert errors == [], errors
    print(f"\nbrowser: photo -> previewed path in {seconds_to_preview:.1f} s (path authored after "
          f"{seconds_to_path:.1f} s); {len(requests)} requests, all to the app")
    assert math.isfinite(seconds_to_preview)
