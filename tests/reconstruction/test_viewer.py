import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from worldstereo.reconstruction.viewer import viewer_html

from ._scene import ring_cameras


def _data(html):
    return json.loads(re.search(r"const DATA = (\{.*?\});\n", html).group(1))


def test_viewer_embeds_points_and_frusta():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3))
    cols = rng.uniform(size=(500, 3))
    html = viewer_html(pts, cols, ring_cameras(3, size=32), max_points=200)
    assert "http" not in html.split("<script>")[1]  # no external resources
    d = _data(html)
    xyz = np.frombuffer(base64.b64decode(d["xyz"]), "<f4").reshape(-1, 3)
    assert xyz.shape == (200, 3)
    # every embedded point is one of the input points
    assert np.min(np.linalg.norm(pts[None] - xyz[:, None].astype(np.float64), axis=-1), axis=1).max() < 1e-6
    assert len(d["frusta"]) == 3 and np.asarray(d["frusta"]).shape == (3, 5, 3)
    with pytest.raises(ValueError, match="points"):
        viewer_html(np.zeros((0, 3)), np.zeros((0, 3)))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_viewer_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    pts = rng.normal(size=(3000, 3))
    html = tmp_path / "v.html"
    html.write_text(viewer_html(pts, np.tile([1.0, 0.8, 0.1], (3000, 1)), ring_cameras(3, size=32)))
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--screenshot={shot}", "--window-size=400,300", html.as_uri()], check=True, timeout=60,
                   capture_output=True)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    yellow = (img[..., 0] > 200) & (img[..., 1] > 150) & (img[..., 2] < 80)
    assert yellow.sum() > 200


_NODE_HARNESS = r"""
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const script = html.split("<script>")[1].split("</script>")[0];
const calls = {rect: 0, line: 0, styles: new Set()};
const ctx = {
  set fillStyle(v) { calls.styles.add(v); }, get fillStyle() { return ""; },
  strokeStyle: "", lineWidth: 1,
  fillRect(x, y, w, h) {
    if (w >= 100) return;  // the background clear
    calls.rect++;
    if (x >= 0 && x < 800 && y >= 0 && y < 600) calls.inside = (calls.inside || 0) + 1;
  },
  beginPath() {}, moveTo() {}, lineTo() { calls.line++; }, stroke() {},
};
const canvas = {width: 0, height: 0, getContext: () => ctx, addEventListener() {}};
global.window = {innerWidth: 800, innerHeight: 600, addEventListener() {}};
global.document = {getElementById: () => canvas};
new Function(script)();
console.log(JSON.stringify({rect: calls.rect, inside: calls.inside || 0, line: calls.line, styles: calls.styles.size}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_viewer_script_runs_and_draws(tmp_path):
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(400, 3))
    html = tmp_path / "v.html"
    html.write_text(viewer_html(pts, rng.uniform(size=(400, 3)), ring_cameras(4, size=32)))
    harness = tmp_path / "harness.js"
    harness.write_text(_NODE_HARNESS)
    res = subprocess.run(["node", str(harness), str(html)], check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["rect"] == 400 and out["inside"] > 300  # every point drawn, most on screen
    assert out["line"] == 4 * 8  # 4 frusta x (4 edges from the apex + 4 rectangle edges)
    assert out["styles"] > 300  # per-point colours
