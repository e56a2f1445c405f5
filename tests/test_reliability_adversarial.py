"""The adversarial probe (``tests/adversarial``) and full-disk faults, run from the test suite.

* :func:`test_adversarial_probe` runs ``python -m tests.adversarial.run`` in a subprocess (it
  changes the working folder and sets a memory ceiling, which must not leak into pytest): over a
  thousand bad inputs of the Python API and the command line, each of which must be refused with a
  ``ValueError`` / ``TypeError`` (exit status 2 and one ``error:`` line for the CLI) naming the
  culprit, before any model is loaded or run, within the time and memory limits of the harness, and
  without changing the file system.
* The full-disk tests make every write beyond a small size fail — on a real 300 KB tmpfs when the
  tests run as root, else with ``RLIMIT_FSIZE`` (writes past the limit fail with ``EFBIG``) — and
  check that a command answers with one line, keeps the previous result whole and leaves no staging
  folder behind, and that ``save_pretrained`` raises an ``OSError`` and leaves no partial checkpoint.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adversarial.faults import complete_result, mount_tmpfs, umount

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-m", "worldstereo.cli", "-q", "--threads", "1"]
SMALL = ["--height", "32", "--width", "48", "--frames", "3", "--no-progress"]
LIMIT_BYTES = 300 * 1024


def test_adversarial_probe():
    res = subprocess.run([sys.executable, "-m", "tests.adversarial.run"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=900)
    match = re.search(r"(\d+)/(\d+) bad inputs answered cleanly", res.stdout)
    assert match, res.stdout[-2000:] + res.stderr[-2000:]
    answered, total = int(match.group(1)), int(match.group(2))
    assert total >= 1000, res.stdout
    assert res.returncode == 0 and answered == total, res.stdout[-4000:]


@pytest.fixture
def small_disk(tmp_path):
    """``(folder, preexec)``: a folder where writes past ~300 KB fail, and the ``preexec_fn`` a
    subprocess needs for that (None on a real tmpfs)."""
    folder = tmp_path / "small"
    if mount_tmpfs(folder, f"{LIMIT_BYTES // 1024}k"):
        yield folder, None
        umount(folder)
        return

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))

    yield folder, limit


def _run(argv, preexec=None):
    return subprocess.run(CLI + argv, env=ENV, capture_output=True, text=True, preexec_fn=preexec, timeout=600)


def test_a_command_on_a_full_disk_keeps_the_previous_result(small_disk, tmp_path):
    folder, preexec = small_disk
    out = folder / "demo"
    first = _run(["demo", "--out", str(out), *SMALL, "--supersample", "1"])  # small: fits
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    big = _run(["demo", "--out", str(out), "--height", "256", "--width", "384", "--frames", "24", "--no-progress"],
               preexec)
    lines = [ln for ln in big.stderr.splitlines() if ln.strip()]
    assert big.returncode != 0
    assert len(lines) == 1 and "Traceback" not in big.stderr, big.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old result, whole
    assert complete_result(out) is None
    assert sorted(p.name for p in folder.iterdir()) == ["demo"]  # no staging folder left behind


@pytest.mark.parametrize("saved", ["model", "model.transformer"])  # our layout; diffusers' format
def test_save_pretrained_on_a_full_disk_raises_and_leaves_nothing(small_disk, saved):
    folder, preexec = small_disk
    target = folder / "ckpt"
    script = ("import sys, torch\ntorch.set_num_threads(1)\nfrom worldstereo.testing import tiny_model\n"
              "model = tiny_model('worldstereo-camera')\n"
              f"try:\n    {saved}.save_pretrained(sys.argv[1])\n"
              "except OSError as exc:\n    print('OSError', exc.errno, exc.filename); sys.exit(3)\n")
    res = subprocess.run([sys.executable, "-c", script, str(target)], env=ENV, capture_output=True, text=True,
                         preexec_fn=preexec, timeout=600)
    assert res.returncode == 3, res.stdout + res.stderr[-2000:]
    errno_name = res.stdout.split()[1]
    assert errno_name in ("28", "27"), res.stdout  # ENOSPC (tmpfs) or EFBIG (RLIMIT_FSIZE)
    left = sorted(p.name for p in folder.iterdir())
    assert left in ([], ["ckpt"]), left
    if left:  # the folder may stay (created first), empty of partial files
        assert list(target.iterdir()) == [], list(target.iterdir())
