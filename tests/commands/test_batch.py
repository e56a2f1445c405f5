"""``worldstereo batch`` and ``--parallel`` end to end, in-process and under ``torchrun`` with two
gloo ranks on the CPU (tiny random models saved to disk, no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_batch import job, truncated_png, write_inputs, write_jobs
from worldstereo.cli import main
from worldstereo.io.image import save_image
from worldstereo.io.video import read_video
from worldstereo.testing import save_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def memory_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "memory", "worldstereo-memory")


def torchrun(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m worldstereo ARGS`` (gloo on the CPU, a free port)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "worldstereo", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_batch_one_process(tmp_path, memory_model_dir, capsys):
    write_inputs(tmp_path)
    truncated_png(tmp_path / "broken.png")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(0), job(1, image="broken.png"), job(2, steps=None)])
    out = tmp_path / "out"
    code = main(["batch", str(jobs), "--out", str(out), "--model", str(memory_model_dir), "--batch-size", "2",
                 "--steps", "1", "--no-progress"])
    assert code == 1  # one job failed, the others ran
    manifest = json.loads((out / "manifest.json").read_text())
    status = {e["output"]: e["status"] for e in manifest["jobs"]}
    assert status == {"v0": "done", "v1": "failed", "v2": "done"}
    assert json.loads((out / "v2" / "summary.json").read_text())["steps"] == 1  # --steps filled the gap
    assert json.loads((out / "v0" / "summary.json").read_text())["steps"] == 2
    assert (out / "v0" / "memory_bank").is_dir()
    err = capsys.readouterr().err
    assert "failed: v1:" in err and "broken.png" in err


def test_cli_batch_rejects_invalid_jobs_before_loading(tmp_path, capsys):
    write_inputs(tmp_path)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(0), job(1, width=40)])
    code = main(["batch", str(jobs), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "missing-model")])
    assert code == 2
    assert "line 2: field 'width': expected a multiple of 16, got 40" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_batch_defaults_name_their_option(tmp_path, capsys):
    write_inputs(tmp_path)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(0, height=None, width=None)])
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out"), "--model", "x/y", "--height", "40",
                 "--width", "48"]) == 2
    assert "--height: expected a multiple of 16, got 40" in capsys.readouterr().err
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out"), "--model", "x/y", "--guidance", "-1"]) == 2
    assert "--guidance" in capsys.readouterr().err


def test_parallel_needs_torchrun(tmp_path, memory_model_dir, capsys):
    write_inputs(tmp_path, 1)
    code = main(["generate", str(tmp_path / "img0.png"), "--trajectory", "forward", "--model", str(memory_model_dir),
                 "--out", str(tmp_path / "out"), "--parallel", "ulysses", "--frames", "4", "--height", "32",
                 "--width", "32", "--depth", str(tmp_path / "depth.npy")])
    assert code == 2 and "torchrun" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_torchrun_batch_over_two_ranks_resumed_with_a_failing_job(tmp_path, memory_model_dir):
    write_inputs(tmp_path, 5)
    truncated_png(tmp_path / "broken.png")
    lines = [job(0), job(1), job(2, image="broken.png"), job(3), job(4)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", lines)
    args = ("batch", str(jobs), "--out", "out", "--model", str(memory_model_dir), "--batch-size", "2")
    run = torchrun(*args, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr  # the broken job failed; the others finished
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {e["output"]: e for e in manifest["jobs"]}
    assert {k: e["status"] for k, e in entries.items()} == {"v0": "done", "v1": "done", "v2": "failed", "v3": "done",
                                                           "v4": "done"}
    assert "broken.png" in entries["v2"]["error"]
    # spread round-robin over the two ranks (data parallel): v0, v2, v4 on rank 0; v1, v3 on rank 1
    assert {k: e["rank"] for k, e in entries.items()} == {"v0": 0, "v1": 1, "v2": 0, "v3": 1, "v4": 0}
    assert entries["v0"]["batch_size"] == 2 and entries["v4"]["batch_size"] == 2  # rank 0 batched v0 with v4
    for name in ("v0", "v1", "v3", "v4"):
        assert len(read_video(out / name / "video.mp4")) == 4
    first = {name: (out / name / "video.mp4").stat().st_mtime_ns for name in ("v0", "v1", "v3", "v4")}

    # resumed: the finished jobs are skipped, the fixed one runs
    (tmp_path / "broken.png").unlink()
    save_image(tmp_path / "broken.png", torch.rand(3, 32, 32))
    run = torchrun(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 5, "failed": 0, "pending": 0}
    assert {name: (out / name / "video.mp4").stat().st_mtime_ns for name in first} == first
    assert "4 skipped" in run.stderr and "1 done" in run.stderr
    # one set of logs and bars: rank 1 stays quiet
    assert run.stderr.count("manifest:") == 1


def test_torchrun_generate_ulysses_writes_once_and_equals_one_process(tmp_path, memory_model_dir):
    write_inputs(tmp_path, 1)
    common = ["img0.png", "--trajectory", "orbit", "--model", str(memory_model_dir), "--frames", "4", "--height",
              "32", "--width", "32", "--steps", "2", "--guidance", "3", "--depth", "depth.npy", "--seed", "3",
              "--no-progress"]
    run = torchrun("generate", *common, "--out", "parallel", "--parallel", "ulysses", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["generate", *common, "--out", "single"]) == 0
    finally:
        os.chdir(cwd)
    parallel, single = tmp_path / "parallel", tmp_path / "single"
    assert sorted(p.name for p in parallel.iterdir()) == sorted(p.name for p in single.iterdir())
    a, b = read_video(parallel / "video.mp4"), read_video(single / "video.mp4")
    assert float((a - b).abs().max()) <= 1 / 255 + 1e-6  # same frames up to the 8-bit rounding of ~1e-6 changes
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (parallel, single))
    for key in ("seed", "steps", "transformer_calls", "ref_index", "num_references", "num_points"):
        assert sa[key] == sb[key], key
    assert sb["parallel"] is None
    assert sa["parallel"] == {"mode": "ulysses", "world_size": 2, "group_size": 2, "data_parallel_size": 1, "cfg": 1,
                              "ring": 1, "ulysses": 2, "fsdp": False}
