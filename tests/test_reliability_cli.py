"""Transactional commands: ``--out`` is checked before any work, outputs appear all at once, a kill
at any instant leaves the complete old result or the complete new one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worldstereo.cli import main
from worldstereo.io.output_folder import MANIFEST_NAME, read_manifest

DEMO = ["demo", "--height", "32", "--width", "48", "--frames", "3", "--supersample", "1", "--sheet-columns", "2",
        "--no-progress"]
DEMO_FILES = {"camera.json", "contact_sheet.png", "depth.npy", "depths.npz", "image.png", "metrics.json", "points.ply",
              "render.mp4", "render_mask.mp4", "summary.json"}


def _main(*argv: str) -> int:
    logging.getLogger("worldstereo").handlers.clear()
    return main(["-q", "--threads", "1", *argv])


def _complete(folder: Path) -> dict:
    """Check that ``folder`` holds one complete demo result and return its manifest."""
    names = {p.name for p in folder.iterdir()}
    assert names == DEMO_FILES | {MANIFEST_NAME}, sorted(names)
    manifest = read_manifest(folder)
    assert manifest is not None and manifest["owner"] == "demo"
    assert set(manifest["files"]) == DEMO_FILES
    for rel, info in manifest["files"].items():
        data = (folder / rel).read_bytes()
        assert len(data) == info["size"] and hashlib.sha256(data).hexdigest() == info["sha256"], rel
    return manifest


@pytest.fixture
def no_work(monkeypatch):
    """Make every command's ``run`` fail loudly: the tests check that they are never reached
    (``main`` builds its parser per call, so ``register`` picks up the patched ``run``)."""
    import worldstereo.commands.demo as demo
    import worldstereo.commands.generate as generate
    import worldstereo.commands.render as render

    calls = []

    def forbidden(args):
        calls.append(args.command)
        raise AssertionError("the command started work")

    for module in (demo, generate, render):
        monkeypatch.setattr(module, "run", forbidden)
    return calls


def test_out_is_checked_before_any_work(tmp_path, capsys, no_work):
    precious = tmp_path / "results.txt"
    precious.write_text("precious")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("years of work")
    cases = [
        (precious, "exists and is not a folder"),
        (precious / "sub", "cannot create"),
        (foreign, "thesis.txt"),
        (Path("/proc/worldstereo-test/out"), "--out"),
        (tmp_path / ("n" * 300), "at most 255"),
    ]
    for out, match in cases:
        code = _main(*DEMO, "--out", str(out))
        err = capsys.readouterr().err.strip()
        assert code == 2, (out, err)
        assert err.startswith("error: --out") and match in err and "\n" not in err, err
    assert no_work == []
    assert precious.read_text() == "precious" and (foreign / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "results.txt"]


def test_unexpected_failures_are_one_line_and_leave_the_old_result(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _main(*DEMO, "--out", str(out)) == 0
    first = _complete(out)
    import worldstereo.commands.demo as demo

    def crash(args):
        (Path(args.out) / "render.mp4").write_bytes(b"half a video")
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(demo, "run", crash)
    capsys.readouterr()
    assert _main(*DEMO, "--out", str(out)) == 1
    err = capsys.readouterr().err.strip()
    assert err == "failed: RuntimeError: disk on fire second line (run with -v for the traceback)"
    assert _complete(out) == first  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # staging folder removed


def test_rerun_replaces_the_whole_result_and_other_results_are_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert _main(*DEMO, "--seed", "0", "--out", str(out)) == 0
    m0 = _complete(out)
    assert _main(*DEMO, "--seed", "1", "--out", str(out)) == 0
    m1 = _complete(out)
    assert m1["files"]["image.png"]["sha256"] != m0["files"]["image.png"]["sha256"]
    assert json.loads((out / "metrics.json").read_text())["median_depth"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # the demo result is not a render result: refused, kept
    capsys.readouterr()
    assert _main("render", str(out / "image.png"), "--trajectory", "orbit", "--depth", str(out / "depth.npy"),
                 "--out", str(out)) == 2
    assert "worldstereo demo" in capsys.readouterr().err
    assert _complete(out) == m1


def test_killed_demo_leaves_old_or_new(tmp_path):
    """SIGKILL ``worldstereo demo`` at random instants of a run (a subprocess): ``--out`` holds the
    complete previous result or the complete new one, never a mix, and the next run cleans up."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "worldstereo.cli", "-q", "--threads", "1", *DEMO, "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--seed", "0"], check=True, env=env, capture_output=True)
    duration = time.perf_counter() - t0
    rng = random.Random(7)
    for trial in range(4):
        proc = subprocess.Popen([*cmd, "--seed", str(trial + 1)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.1) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _complete(out)  # the previous result or this run's, each complete
    # a normal run afterwards succeeds and removes every leftover of the killed runs
    subprocess.run([*cmd, "--seed", "9"], check=True, env=env, capture_output=True)
    _complete(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
