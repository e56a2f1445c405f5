"""Transactional output folders: old or new, never a mix; nothing foreign deleted; kills survived."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from worldstereo.io.output_folder import MANIFEST_NAME, OutputFolderError, output_folder, read_manifest


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _content(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}


def _siblings(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder.parent) if n != folder.name)


def test_new_folder_is_created_with_manifest(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with output_folder(target, owner="render") as staged:
        assert staged.path.parent == target.parent and staged.path.name.startswith(".out.")
        assert not target.exists()  # nothing visible until the commit
        _write(staged.path, {"video.mp4": "v1", "sub/x.json": "{}"})
    assert _content(target) == {"video.mp4": "v1", "sub/x.json": "{}"}
    manifest = read_manifest(target)
    assert manifest["owner"] == "render"
    assert manifest["files"]["video.mp4"] == {"size": 2, "sha256": hashlib.sha256(b"v1").hexdigest()}
    assert _siblings(target) == []  # no staging folder left


def test_earlier_result_is_replaced_as_a_whole(tmp_path):
    target = tmp_path / "out"
    with output_folder(target, owner="multi-view") as staged:
        _write(staged.path, {"video_00.mp4": "old0", "video_01.mp4": "old1", "summary.json": "old"})
    with output_folder(target, owner="multi-view") as staged:
        _write(staged.path, {"video_00.mp4": "new0", "summary.json": "new"})
    # video_01.mp4 of the old run does not survive next to the new summary
    assert _content(target) == {"video_00.mp4": "new0", "summary.json": "new"}
    assert _siblings(target) == []


def test_failure_leaves_the_old_result_untouched(tmp_path):
    target = tmp_path / "out"
    with output_folder(target, owner="demo") as staged:
        _write(staged.path, {"a.txt": "old"})
    with pytest.raises(RuntimeError, match="boom"):
        with output_folder(target, owner="demo") as staged:
            _write(staged.path, {"a.txt": "new", "b.txt": "new"})
            raise RuntimeError("boom")
    assert _content(target) == {"a.txt": "old"}
    assert _siblings(target) == []
    with output_folder(target, owner="demo") as staged:  # discard(): same as a failure
        _write(staged.path, {"a.txt": "discarded"})
        staged.discard()
    assert _content(target) == {"a.txt": "old"}


def test_foreign_content_is_refused_and_kept(tmp_path):
    target = tmp_path / "u"
    target.mkdir()
    (target / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputFolderError, match="thesis.txt"):
        with output_folder(target, owner="render"):
            pytest.fail("the block must not run")
    assert (target / "thesis.txt").read_text() == "years of work"
    assert _siblings(target) == []


def test_other_commands_result_and_added_files_are_refused(tmp_path):
    target = tmp_path / "out"
    with output_folder(target, owner="render") as staged:
        _write(staged.path, {"render.mp4": "r"})
    with pytest.raises(OutputFolderError, match="worldstereo render"):
        with output_folder(target, owner="demo"):
            pass
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="notes.txt"):
        with output_folder(target, owner="render"):
            pass
    assert _content(target) == {"render.mp4": "r", "notes.txt": "mine"}


def test_files_added_during_the_run_stop_the_commit(tmp_path):
    target = tmp_path / "out"
    with output_folder(target, owner="render") as staged:
        _write(staged.path, {"render.mp4": "old"})
    with pytest.raises(OutputFolderError, match="late.txt.*kept in"):
        with output_folder(target, owner="render") as staged:
            _write(staged.path, {"render.mp4": "new"})
            (target / "late.txt").write_text("added meanwhile")
    assert _content(target) == {"render.mp4": "old", "late.txt": "added meanwhile"}
    kept = tmp_path / "out.worldstereo-new-1"
    assert _content(kept) == {"render.mp4": "new"}


def test_existing_file_and_unusable_paths_are_refused_before_work(tmp_path):
    f = tmp_path / "file"
    f.write_text("precious")
    for bad, match in ((f, "not a folder"), (f / "sub", "file is in the way|cannot create"), ("", "empty"),
                       ("/", "root"), (tmp_path / ("x" * 300), "at most 255"), ("a\x00b", "NUL")):
        with pytest.raises(OutputFolderError, match=match):
            with output_folder(bad, owner="render"):
                pytest.fail("the block must not run")
    assert f.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not apply to root")
def test_unwritable_parent_is_refused(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(OutputFolderError, match="permission denied|not writable"):
            with output_folder(parent / "out", owner="render"):
                pass
    finally:
        parent.chmod(0o755)


def test_symlinked_target_is_resolved_not_replaced(tmp_path):
    real = tmp_path / "real"
    link = tmp_path / "link"
    os.symlink(real, link)
    with output_folder(link, owner="render") as staged:
        _write(staged.path, {"a.txt": "1"})
    assert link.is_symlink() and _content(real) == {"a.txt": "1"}
    with output_folder(link, owner="render") as staged:
        _write(staged.path, {"a.txt": "2"})
    assert link.is_symlink() and _content(link) == {"a.txt": "2"}


def test_leftovers_of_dead_runs_are_cleaned_and_an_orphaned_old_result_restored(tmp_path):
    target = tmp_path / "out"
    with output_folder(target, owner="render") as staged:
        _write(staged.path, {"a.txt": "old"})
    prefix = staged.path.name.split(".wsout-")[0] + ".wsout-"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f"{prefix}stage-{dead}-0000"
    stale.mkdir()
    (stale / "partial.mp4").write_text("half")
    alive = tmp_path / f"{prefix}stage-{os.getppid()}-0000"  # a live process: left alone
    alive.mkdir()
    with output_folder(target, owner="render") as staged:
        _write(staged.path, {"a.txt": "new"})
    assert not stale.exists() and alive.exists()
    # the two-rename fallback was killed between its renames: the target is gone, the old result aside
    os.rename(target, tmp_path / f"{prefix}old-{dead}-0001")
    with output_folder(target, owner="render") as staged:
        assert _content(target) == {"a.txt": "new"}  # restored before anything else
        staged.discard()


def test_fallback_without_atomic_exchange(tmp_path, monkeypatch):
    import worldstereo.io.output_folder as of

    monkeypatch.setattr(of, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    for text in ("one", "two"):
        with output_folder(target, owner="render") as staged:
            _write(staged.path, {"a.txt": text})
    assert _content(target) == {"a.txt": "two"} and _siblings(target) == []


# --------------------------------------------------------------------------------- fault injection
_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from worldstereo.io.output_folder import output_folder

    target, n_runs = Path(sys.argv[1]), int(sys.argv[2])
    for run in range(1, n_runs + 1):
        with output_folder(target, owner="probe") as staged:
            for k in range(6):  # a result = 6 files that carry the run number
                (staged.path / f"f{k}.txt").write_text(str(run) * (1 + 4000 * k))
            (staged.path / "sub").mkdir()
            (staged.path / "sub" / "g.txt").write_text(str(run))
        print(run, flush=True)
""")


def _check_invariant(target: Path) -> int | None:
    """The run number of the complete result in ``target`` (None when there is none yet)."""
    if not target.exists():
        return None
    content = _content(target)
    runs = {text[0] for text in content.values()}
    assert set(content) == {f"f{k}.txt" for k in range(6)} | {"sub/g.txt"}, sorted(content)
    assert len(runs) == 1, f"mixed results {content.keys()}"
    manifest = read_manifest(target)
    for rel, text in content.items():  # every file is the complete one the manifest lists
        assert manifest["files"][rel]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    return int(runs.pop())


def test_kill_at_random_points_leaves_old_or_new(tmp_path):
    """SIGKILL a process that commits result after result, at random instants (also during the
    exchange and the deletion of the old folder): the target always holds one complete result and
    the next run cleans every leftover."""
    rng = random.Random(1234)
    target = tmp_path / "out"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for trial in range(12):
        proc = subprocess.Popen([sys.executable, str(script), str(target), "1000"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env)
        assert proc.stdout is not None
        proc.stdout.readline()  # the imports are done and one result committed
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        run = _check_invariant(target)
        assert run is not None and run >= 1
    # one clean run removes every leftover of the killed ones
    subprocess.run([sys.executable, str(script), str(target), "1"], check=True, env=env, capture_output=True)
    assert _check_invariant(target) == 1
    assert _siblings(target) == ["writer.py"]
