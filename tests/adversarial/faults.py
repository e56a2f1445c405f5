"""Injected faults for the adversarial probe: SIGKILL of command-line runs and of ``save_pretrained``
at random instants, and full disks (``ENOSPC``), with the invariants checked after each.

Invariants:

* ``--out`` holds the complete previous result or the complete new one (every file matching its
  manifest's size and SHA-256), never a mix, never nothing once a result existed;
* a file of the user next to the output (or inside a checkpoint folder) is never touched;
* nothing appears next to the output but the hidden leftovers of the killed run, and the next run
  removes them;
* a checkpoint folder always loads as exactly the old or exactly the new model;
* a failed write (full disk) leaves the previous result and no staging leftover, and the command
  answers with one line (no traceback).

``python -m tests.adversarial.faults [--tmpfs DIR]`` runs everything and prints a report (about two
minutes). ``--tmpfs`` names a small tmpfs mount point (created and mounted when running as root,
skipped otherwise) for real full-disk runs. ``tests/test_reliability_adversarial.py`` runs the
full-disk cases in the test suite (tmpfs as root, else ``RLIMIT_FSIZE``); the kill cases are tested
there by ``tests/test_reliability_cli.py`` and ``tests/models/test_checkpoint_folder.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
CLI = [sys.executable, "-m", "worldstereo.cli", "-q", "--threads", "1"]
SMALL = ["--height", "32", "--width", "48", "--frames", "3", "--no-progress"]


@dataclass
class FaultReport:
    trials: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.trials += 1
        if not ok:
            self.violations.append(what)


# ---------------------------------------------------------------------------------- invariants
def complete_result(folder: Path) -> str | None:
    """None when ``folder`` holds one complete result (files = manifest, hashes match), else why not."""
    from worldstereo.io.output_folder import MANIFEST_NAME, read_manifest

    if not folder.is_dir():
        return "missing"
    manifest = read_manifest(folder)
    if manifest is None:
        return "no manifest"
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    if on_disk != set(manifest["files"]):
        return f"files {sorted(on_disk ^ set(manifest['files']))[:4]} differ from the manifest"
    for rel, info in manifest["files"].items():
        data = (folder / rel).read_bytes()
        if len(data) != info["size"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
            return f"{rel} does not match its hash"
    return None


def result_id(folder: Path) -> str:
    from worldstereo.io.output_folder import read_manifest

    manifest = read_manifest(folder) or {}
    return hashlib.sha256(json.dumps(manifest.get("files", {}), sort_keys=True).encode()).hexdigest()[:12]


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + argv, env=ENV, capture_output=True, text=True, **kw)


def _kill_at(argv: list[str], delay: float) -> None:
    proc = subprocess.Popen(CLI + argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------------------------- kill tests
def kill_command(report: FaultReport, root: Path, name: str, make_argv: Any, kills: int, seed: int) -> None:
    """Run ``make_argv(out, k)`` once to completion, then ``kills`` times killed at random instants;
    after each kill check the invariants; a final run must succeed and clean up."""
    work = root / f"kill-{name}"
    work.mkdir()
    out = work / "out"
    (work / "thesis.txt").write_text("precious")
    t0 = time.perf_counter()
    first = _run(make_argv(out, 0))
    duration = time.perf_counter() - t0
    report.check(first.returncode == 0, f"{name}: the first run failed: {first.stderr.strip()[-300:]}")
    if first.returncode != 0:
        return
    rng = random.Random(seed)
    seen = {result_id(out)}
    for k in range(1, kills + 1):
        _kill_at(make_argv(out, k), rng.uniform(0.2, 1.05) * duration)
        why = complete_result(out)
        report.check(why is None, f"{name}: after kill {k}: --out is not one complete result ({why})")
        seen.add(result_id(out))
        report.check((work / "thesis.txt").read_text() == "precious", f"{name}: the user's file changed")
        extra = [n for n in siblings(out) if n not in ("out", "thesis.txt") and ".wsout-" not in n]
        report.check(not extra, f"{name}: after kill {k}: unexpected files next to --out: {extra}")
    last = _run(make_argv(out, kills + 1))
    report.check(last.returncode == 0, f"{name}: the run after the kills failed: {last.stderr.strip()[-300:]}")
    report.check(complete_result(out) is None, f"{name}: the final result is incomplete")
    report.check(siblings(out) == ["out", "thesis.txt"], f"{name}: leftovers after a clean run: {siblings(out)}")


def kill_batch(report: FaultReport, root: Path, model_dir: Path, image: Path, depth: Path, kills: int,
               seed: int) -> None:
    """Kill ``worldstereo batch`` at random instants: every job folder present is complete (its
    record and files), the user's file in OUT is kept, and a re-run finishes the rest."""
    work = root / "kill-batch"
    work.mkdir()
    out = work / "out"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    jobs = work / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"image": str(image), "depth": str(depth), "trajectory": "orbit",
                                        "output": f"j{i}", "seed": i,
                                        "frames": 3, "height": 32, "width": 48, "steps": 1}) + "\n" for i in range(3)))
    argv = ["batch", str(jobs), "--model", str(model_dir), "--out", str(out), "--device", "cpu", "--no-progress"]
    t0 = time.perf_counter()
    first = _run(argv + ["--force"])
    duration = time.perf_counter() - t0
    report.check(first.returncode == 0, f"batch: the first run failed: {first.stderr.strip()[-300:]}")
    rng = random.Random(seed)
    for k in range(kills):
        _kill_at(argv + ["--force"], rng.uniform(0.2, 1.0) * duration)
        for job in out.iterdir():
            if job.is_dir() and job.name.startswith("j"):
                files = {p.name for p in job.iterdir()}
                report.check({"video.mp4", "summary.json", "camera.json"} <= files,
                             f"batch: after kill {k}: job folder {job.name} is incomplete: {sorted(files)}")
        report.check((out / "notes.txt").read_text() == "precious", "batch: the user's file changed")
    done = _run(argv)
    report.check(done.returncode == 0, f"batch: the run after the kills failed: {done.stderr.strip()[-300:]}")
    stray = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".worldstereo-batch"]
    report.check(not stray, f"batch: leftovers after a clean run: {stray}")


def kill_save(report: FaultReport, root: Path, kills: int, seed: int) -> None:
    """SIGKILL a process saving a tiny model over another one at random instants (wall clock)."""
    work = root / "kill-save"
    work.mkdir()
    folder = work / "ckpt"
    script = work / "save.py"
    script.write_text(
        "import sys, torch\ntorch.set_num_threads(1)\nfrom worldstereo.testing import tiny_model\n"
        "tiny_model('worldstereo-camera', seed=int(sys.argv[2])).save_pretrained(sys.argv[1])\n")
    states = {}
    import torch

    from worldstereo import WorldStereo
    from worldstereo.testing import tiny_model

    for s in (0, 1):
        states[s] = {k: v.clone() for k, v in tiny_model("worldstereo-camera", seed=s).state_dict().items()}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(script), str(folder), "0"], env=ENV, check=True, capture_output=True)
    duration = time.perf_counter() - t0
    (folder / "thesis.txt").write_text("precious")
    rng = random.Random(seed)
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, str(script), str(folder), str((k + 1) % 2)], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.05) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            sd = WorldStereo.from_pretrained(folder).state_dict()
            found = [s for s, ref in states.items() if all(torch.equal(sd[n], t) for n, t in ref.items())]
            report.check(len(found) == 1, f"save_pretrained: after kill {k}: the folder is neither model")
        except Exception as exc:  # noqa: BLE001
            report.check(False, f"save_pretrained: after kill {k}: does not load: {type(exc).__name__}: {exc}")
        report.check((folder / "thesis.txt").read_text() == "precious", "save_pretrained: the user's file changed")
        report.check(siblings(folder) == ["ckpt", "save.py"], f"save_pretrained: files next to it: {siblings(folder)}")
    subprocess.run([sys.executable, str(script), str(folder), "1"], env=ENV, check=True, capture_output=True)
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    report.check(not leftovers, f"save_pretrained: leftovers after a clean save: {leftovers}")


# ------------------------------------------------------------------------------- full disks
def full_disk_cli(report: FaultReport, small: Path, argv_for: Any, name: str) -> None:
    """A command writing into a (nearly) full file system: one-line failure, old result kept, no
    staging leftover filling the disk."""
    out = small / f"{name}-out"
    res = _run(argv_for(out))
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    report.check(res.returncode != 0, f"{name} on a full disk: exit 0")
    report.check("Traceback" not in res.stderr and len(lines) == 1,
                 f"{name} on a full disk: not a one-line message: {lines[-3:]}")
    report.check(not out.exists() or complete_result(out) is None, f"{name} on a full disk: half a result")
    stray = [p.name for p in small.iterdir() if ".wsout-" in p.name]
    report.check(not stray, f"{name} on a full disk: staging leftovers {stray}")


def full_disk_save(report: FaultReport, small: Path) -> None:
    from worldstereo.testing import tiny_model

    folder = small / "ckpt"
    try:
        tiny_model("worldstereo-camera").save_pretrained(folder)
        report.check(False, "save_pretrained on a full disk: no error")
    except OSError as exc:
        report.check("No space" in str(exc) or getattr(exc, "errno", None) == 28,
                     f"save_pretrained on a full disk: unexpected {type(exc).__name__}: {exc}")
    leftovers = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    report.check(not any(n.startswith(".worldstereo-partial") for n in leftovers),
                 f"save_pretrained on a full disk: staging left behind: {leftovers}")


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def main(argv: list[str]) -> int:
    import tempfile

    from worldstereo.testing import save_tiny_model

    report = FaultReport()
    with tempfile.TemporaryDirectory(prefix="ws-faults-") as tmp:
        root = Path(tmp)
        model_dir = save_tiny_model(root / "model", "worldstereo-memory")
        demo = root / "demo"
        assert _run(["demo", "--out", str(demo), *SMALL, "--supersample", "1"]).returncode == 0
        image, depth = demo / "image.png", demo / "depth.npy"
        kill_command(report, root, "demo", lambda out, k: ["demo", "--out", str(out), *SMALL, "--supersample", "1",
                                                           "--seed", str(k)], 6, 1)
        kill_command(report, root, "render", lambda out, k: ["render", str(image), "--trajectory", "orbit", "--depth",
                                                             str(depth), "--out", str(out), *SMALL, "--preset-arg",
                                                             f"azimuth_deg={10 + k}"], 6, 2)
        kill_command(report, root, "reconstruct", lambda out, k: ["reconstruct", str(demo), "--out", str(out),
                                                                  "--voxel-size", str(0.02 + 0.001 * k)], 6, 3)
        kill_command(report, root, "generate", lambda out, k: ["generate", str(image), "--model", str(model_dir),
                                                               "--trajectory", "orbit", "--depth", str(depth),
                                                               "--out", str(out), *SMALL, "--steps", "1", "--seed",
                                                               str(k), "--device", "cpu"], 4, 4)
        kill_batch(report, root, model_dir, image, depth, 4, 5)
        kill_save(report, root, 6, 6)
        big_demo = root / "big-demo"
        assert _run(["demo", "--out", str(big_demo), "--height", "128", "--width", "192", "--frames", "8",
                     "--no-progress"]).returncode == 0
        small = root / "small"
        if "--tmpfs" in argv and mount_tmpfs(small, "300k"):
            try:
                # outputs larger than the 300 KB disk
                full_disk_cli(report, small, lambda out: ["demo", "--out", str(out), "--height", "256", "--width",
                                                          "384", "--frames", "24", "--no-progress"], "demo")
                full_disk_cli(report, small, lambda out: ["reconstruct", str(big_demo), "--out", str(out)],
                              "reconstruct")
                full_disk_save(report, small)
            finally:
                umount(small)
    print(f"faults: {report.trials - len(report.violations)}/{report.trials} checks held")
    for v in report.violations:
        print("  VIOLATION", v)
    return 0 if not report.violations else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
