"""worldstereo.batch: the jobs-file schema (every line checked before any model work), run_batch's
outputs, batching, resuming and failure isolation, with a tiny random model on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worldstereo.batch import JOB_FIELDS, MANIFEST_NAME, RECORDS_DIR, JobsFileError, load_jobs, run_batch, \
    validate_jobs
from worldstereo.io.image import save_image
from worldstereo.io.video import read_video
from worldstereo.testing import tiny_model

S = 32

pytestmark = pytest.mark.usefixtures("one_thread")


def write_inputs(folder: Path, n: int = 3) -> None:
    """``img{i}.png`` (random 32x32) and ``depth.npy`` (a constant 2 m) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_image(folder / f"img{i}.png", torch.rand(3, S, S, generator=torch.Generator().manual_seed(i)))
    np.save(folder / "depth.npy", np.full((S, S), 2.0, dtype=np.float32))


def job(i: int, **extra) -> dict:
    base = {"image": f"img{i}.png", "trajectory": ["forward", "left", "orbit"][i % 3], "output": f"v{i}",
            "seed": 10 + i, "prompt": "a room", "frames": 4, "height": S, "width": S, "steps": 2, "guidance": 3.0,
            "depth": "depth.npy"}
    base.update(extra)
    return base


def write_jobs(path: Path, jobs: list) -> Path:
    path.write_text("\n".join(j if isinstance(j, str) else json.dumps(j) for j in jobs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model():
    return tiny_model("worldstereo-camera")


# ------------------------------------------------------------------------------------ schema
def test_valid_jobs_resolve_paths_and_defaults(tmp_path):
    write_inputs(tmp_path)
    jobs = load_jobs(write_jobs(tmp_path / "jobs.jsonl", [job(0), "", {"image": "img1.png", "trajectory": "orbit",
                                                                        "preset_args": {"depth": 1.5}}]),
                     defaults={"steps": 7})
    assert [j.line for j in jobs] == [1, 3]
    assert jobs[0].image == str((tmp_path / "img0.png").resolve()) and jobs[0].steps == 2
    assert jobs[1].output == "job-00003" and jobs[1].steps == 7 and jobs[1].seed == 0
    assert jobs[1].trajectory == "orbit" and not jobs[1].trajectory_is_file and jobs[1].preset_args == {"depth": 1.5}
    assert jobs[0].depth == str((tmp_path / "depth.npy").resolve())


def test_every_problem_is_reported_with_line_and_field(tmp_path):
    write_inputs(tmp_path)
    lines = [
        job(0),
        "{not json",
        job(1, seed=-1, steps=0),
        job(2, trajectory="spin"),
        {"trajectory": "forward"},
        job(0, output="v0"),  # duplicate output of line 1
        job(1, output="../escape"),
        job(2, colour="red", height=33),
        job(1, image="missing.png", output="x1"),
        job(2, preset_args={"radius": 1.0}, output="x2"),  # orbit has no radius
        job(0, height=None, output="x3"),
        "[1, 2]",
        job(0, guidance=float("nan"), output="x4"),
    ]
    with pytest.raises(JobsFileError) as info:
        load_jobs(write_jobs(tmp_path / "jobs.jsonl", lines))
    # lines that are not JSON are reported first (NaN is not JSON either)
    assert {(line, field) for line, field, _ in info.value.problems} == {(2, None), (13, None)}
    assert "line 13: non-finite number 'NaN'" in str(info.value)
    assert "line 2: not valid JSON (Expecting property name enclosed in double quotes at column 2)" in str(info.value)
    # after fixing the JSON, every field problem of every line is reported at once
    lines[1] = job(1, output="ok1")
    lines[12] = job(0, guidance=101, output="x4")
    with pytest.raises(JobsFileError) as info:
        load_jobs(write_jobs(tmp_path / "jobs.jsonl", lines))
    problems = {(line, field) for line, field, _ in info.value.problems}
    assert problems == {(3, "seed"), (3, "steps"), (4, "trajectory"), (5, "image"), (6, "output"), (7, "output"),
                        (8, "colour"), (8, "height"), (9, "image"), (10, "preset_args"), (11, "height"), (12, None),
                        (13, "guidance")}
    text = str(info.value)
    assert "jobs.jsonl line 3: field 'seed': expected an integer in [0, 9223372036854775807], got -1" in text
    assert "line 4: field 'trajectory': 'spin' is neither an existing file nor a preset" in text
    assert "line 6: field 'output': 'v0' is already the output of line 1" in text
    assert "line 9: field 'image': image" in text and "missing.png" in text and "does not exist" in text
    assert "line 10: field 'preset_args': preset 'orbit' has no parameter 'radius'" in text
    assert "line 5: field 'image': required" in text


def test_schema_details(tmp_path):
    write_inputs(tmp_path)
    with pytest.raises(JobsFileError, match="line 1: field 'preset_args': only applies to preset"):
        validate_jobs([job(0, trajectory="img1.png", preset_args={"distance": 1})], base_dir=tmp_path)
    with pytest.raises(JobsFileError, match="field 'depth_scale': only applies with 'depth'"):
        validate_jobs([job(0, depth=None, depth_scale=2.0)], base_dir=tmp_path)
    with pytest.raises(JobsFileError, match="one batch runs one model"):
        validate_jobs([job(0, variant="worldstereo-camera"), job(1, variant="worldstereo-memory")],
                      base_dir=tmp_path)
    with pytest.raises(JobsFileError, match="defaults: field 'image': not a field that can have a default"):
        validate_jobs([job(0)], base_dir=tmp_path, defaults={"image": "x.png"})
    with pytest.raises(JobsFileError, match="no jobs"):
        validate_jobs([], base_dir=tmp_path)
    with pytest.raises(JobsFileError, match="line 1: field 'frames'.*2.0001"):
        validate_jobs([job(0, frames=2.0001)], base_dir=tmp_path)
    assert validate_jobs([job(0, frames=4.0)], base_dir=tmp_path)[0].frames == 4
    with pytest.raises(FileNotFoundError, match="JOBS"):
        load_jobs(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="JOBS.*is a directory"):
        load_jobs(tmp_path)
    assert set(JOB_FIELDS) >= {"image", "trajectory", "output", "prompt", "seed", "variant"}


def test_invalid_jobs_fail_before_the_model_is_loaded(tmp_path):
    write_inputs(tmp_path)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(0), job(1, steps="many")])
    with pytest.raises(JobsFileError, match="line 2: field 'steps'"):
        run_batch(jobs, tmp_path / "out", tmp_path / "no-such-model")  # the model path is never looked at
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ running
def truncated_png(path: Path, size: int = 32) -> Path:
    """A PNG whose header is valid (it passes the checks made before the model loads) but whose pixel
    data is cut: the job fails when it decodes the image, and the others go on."""
    save_image(path, torch.rand(3, size, size))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_run_batch_outputs_resume_and_failures(tmp_path, model):
    write_inputs(tmp_path)
    truncated_png(tmp_path / "broken.png")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(0), job(1, image="broken.png"), job(2)])
    out = tmp_path / "out"
    report = run_batch(jobs, out, model, batch_size=2, progress=False)
    assert report.done == ["v0", "v2"] and report.skipped == [] and list(report.failed) == ["v1"]
    assert "broken.png" in report.failed["v1"]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["counts"] == {"done": 2, "failed": 1, "pending": 0}
    entries = {e["output"]: e for e in manifest["jobs"]}
    assert entries["v1"]["status"] == "failed" and "broken.png" in entries["v1"]["error"]
    assert entries["v0"]["line"] == 1 and entries["v0"]["batch_size"] == 2  # v0 and v2 ran as one batch
    for name in ("v0", "v2"):
        folder = out / name
        for f in ("video.mp4", "render.mp4", "render_mask.mp4", "camera.json", "image.png", "points.ply",
                  "summary.json"):
            assert (folder / f).is_file(), f
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["batch_size"] == 2 and summary["num_frames"] == 4 and summary["batch_job"]["output"] == name
        assert set(entries[name]["files"]) == {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        assert len(read_video(folder / "video.mp4")) == 4
    assert not (out / "v1").exists()
    assert sorted(p.name for p in out.iterdir()) == [RECORDS_DIR, MANIFEST_NAME, "v0", "v2"]  # no staging leftovers

    # re-run: finished jobs are skipped (files untouched), the failed one is tried again
    stamp = (out / "v0" / "video.mp4").stat().st_mtime_ns
    (tmp_path / "broken.png").unlink()
    save_image(tmp_path / "broken.png", torch.rand(3, S, S))
    report = run_batch(jobs, out, model, batch_size=2, progress=False)
    assert report.skipped == ["v0", "v2"] and report.done == ["v1"] and report.ok
    assert (out / "v0" / "video.mp4").stat().st_mtime_ns == stamp

    # a changed job runs again; a damaged output runs again; --force runs everything
    write_jobs(jobs, [job(0, seed=99), job(1, image="broken.png"), job(2)])
    (out / "v2" / "camera.json").write_text("{}")
    report = run_batch(jobs, out, model, progress=False)
    assert report.done == ["v0", "v2"] and report.skipped == ["v1"]
    assert json.loads((out / "v0" / "summary.json").read_text())["seed"] == 99
    report = run_batch(jobs, out, model, progress=False, force=True)
    assert report.done == ["v0", "v1", "v2"]
    assert sorted(p.name for p in (out / RECORDS_DIR).iterdir()) == ["v0.json", "v1.json", "v2.json"]


def test_batched_video_equals_a_separate_run(tmp_path, model):
    from worldstereo.camera import CameraTrajectory
    from worldstereo.io.image import load_image
    from worldstereo.pipeline import generate_video

    write_inputs(tmp_path)
    jobs = [job(0), job(1, trajectory="forward", preset_args={"distance": 0.3})]
    # through the Python API with job dicts (relative paths from the working directory)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        report = run_batch(jobs, "out", model, batch_size=2, progress=False)
    assert report.done == ["v0", "v1"]
    summary = json.loads((tmp_path / "out" / "v1" / "summary.json").read_text())
    assert summary["batch_size"] == 2
    # the same job alone: same trajectory and seed
    traj = CameraTrajectory.preset("forward", num_frames=4, height=S, width=S, distance=0.3)
    alone = generate_video(model, load_image(tmp_path / "img1.png"), traj, num_frames=4, height=S, width=S,
                           num_inference_steps=2, guidance_scale=3.0, seed=11, prompt="a room",
                           depth_estimator=torch.full((S, S), 2.0))
    written = read_video(tmp_path / "out" / "v1" / "video.mp4")
    assert written.shape == alone.shape
    assert float((written - alone).abs().mean()) < 0.02  # H.264 round trip of the same frames


def test_existing_foreign_output_folder_is_not_replaced(tmp_path, model):
    write_inputs(tmp_path)
    out = tmp_path / "out"
    (out / "v0").mkdir(parents=True)
    (out / "v0" / "notes.txt").write_text("mine")
    report = run_batch(write_jobs(tmp_path / "jobs.jsonl", [job(0)]), out, model, progress=False)
    assert "contains files that worldstereo did not write" in report.failed["v0"]
    assert (out / "v0" / "notes.txt").read_text() == "mine"


def test_variant_and_option_checks(tmp_path, model):
    write_inputs(tmp_path)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(0, variant="worldstereo-memory")])
    with pytest.raises(ValueError, match="worldstereo-memory.*worldstereo-camera"):
        run_batch(jobs, tmp_path / "out", model, progress=False)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(0)])
    with pytest.raises(ValueError, match="batch_size"):
        run_batch(jobs, tmp_path / "out", model, batch_size=0)
    with pytest.raises(ValueError, match="parallel: expected one of"):
        run_batch(jobs, tmp_path / "out", model, parallel="tensor")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        run_batch(jobs, tmp_path / "file", model)
