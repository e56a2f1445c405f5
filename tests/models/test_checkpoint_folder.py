"""Crash-safe checkpoint folders: the save transaction, recovery, manifest checks, fault injection."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.models._tiny import randomize_, tiny_config
from worldstereo.models import checkpoint_folder as cf
from worldstereo.models.checkpoint import load_transformer, save_transformer
from worldstereo.models.checkpoint_folder import (
    MANIFEST_FILE,
    CheckpointError,
    folder_state,
    read_manifest,
    readable_folder,
    recover_folder,
    verify_manifest,
    write_checkpoint_folder,
)
from worldstereo.models.transformer import WorldStereoTransformer

REPO_ROOT = Path(__file__).resolve().parents[2]


def _writer(files: dict[str, str]):
    def write(out: Path) -> None:
        for rel, text in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(text)
    return write


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _own_leftovers(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if ".worldstereo-" in p.name]


def test_save_writes_manifest_last_and_keeps_unrelated_files(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "thesis.txt").write_text("mine")
    write_checkpoint_folder(folder, _writer({"config.json": "{}", "sub/a.bin": "aaaa", "sub/old.bin": "o"}))
    manifest = read_manifest(folder)
    assert manifest["files"] == {"config.json": 2, "sub/a.bin": 4, "sub/old.bin": 1}
    assert manifest["generation"] == 1 and len(manifest["save_id"]) == 32
    assert verify_manifest(folder) == manifest
    (folder / "sub" / "user.txt").write_text("also mine")
    # second save: own files replaced, an own file the new save does not write removed, user files kept
    write_checkpoint_folder(folder, _writer({"config.json": "{\"v\": 2}", "sub/a.bin": "bb", "new/c.bin": "c"}))
    assert _tree(folder) == {"config.json": "{\"v\": 2}", "new/c.bin": "c", "sub/a.bin": "bb",
                             "sub/user.txt": "also mine", "thesis.txt": "mine", MANIFEST_FILE:
                             (folder / MANIFEST_FILE).read_text()}
    assert read_manifest(folder)["generation"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"] and not _own_leftovers(folder)
    # a folder left empty by the removal of own files goes too, one with a user file stays
    write_checkpoint_folder(folder, _writer({"config.json": "{}"}))
    assert not (folder / "new").exists() and (folder / "sub" / "user.txt").exists()
    assert not (folder / "sub" / "a.bin").exists()


def test_failing_writer_leaves_the_folder_unchanged(tmp_path):
    folder = tmp_path / "ckpt"
    write_checkpoint_folder(folder, _writer({"config.json": "old", "w.bin": "old weights"}))
    before = _tree(folder)

    def broken(out: Path) -> None:
        (out / "config.json").write_text("new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_checkpoint_folder(folder, broken)
    assert _tree(folder) == before and not _own_leftovers(folder)
    with pytest.raises(ValueError, match="not a folder"):
        write_checkpoint_folder(folder / "config.json", broken)


def test_destinations_checked_before_the_commit(tmp_path):
    folder = tmp_path / "ckpt"
    write_checkpoint_folder(folder, _writer({"config.json": "old"}))
    before = _tree(folder)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (folder / "vae").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CheckpointError, match="symbolic link"):
        write_checkpoint_folder(folder, _writer({"config.json": "new", "vae/w.bin": "x"}))
    assert list(outside.iterdir()) == [] and (folder / "config.json").read_text() == "old"
    (folder / "vae").unlink()
    (folder / "w.bin").mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        write_checkpoint_folder(folder, _writer({"config.json": "new", "w.bin": "x"}))
    (folder / "w.bin").rmdir()
    (folder / "text").write_text("a user's file")
    with pytest.raises(CheckpointError, match="is a file"):
        write_checkpoint_folder(folder, _writer({"config.json": "new", "text/w.bin": "x"}))
    assert {k: v for k, v in _tree(folder).items() if k != "text"} == before and not _own_leftovers(folder)


def _interrupt_after_commit(monkeypatch, folder: Path, files: dict[str, str]) -> None:
    """Run a save that dies after its commit point, half-way through installing the files."""
    real_install = cf._install

    def dying_install(folder_, commit, manifest):
        first = sorted(manifest["files"])[0]
        tmp = folder_ / f".{first}.worldstereo-tmp-{manifest['save_id']}"
        os.link(commit / first, tmp)
        os.replace(tmp, folder_ / first)  # the first file is in place, then the process 'dies'
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(cf, "_install", dying_install)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint_folder(folder, _writer(files))
    monkeypatch.setattr(cf, "_install", real_install)


def test_save_interrupted_after_commit_is_read_from_its_copy_and_finished_by_the_next_save(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    write_checkpoint_folder(folder, _writer({"a.json": "old a", "b.json": "old b"}))
    state = folder_state(folder)
    _interrupt_after_commit(monkeypatch, folder, {"a.json": "new a", "b.json": "new b"})
    assert folder_state(folder) != state  # a concurrent reader notices
    src = readable_folder(folder)
    assert src != folder and src.name.startswith(".worldstereo-commit-")
    assert {k: v for k, v in _tree(src).items() if k != MANIFEST_FILE} == {"a.json": "new a", "b.json": "new b"}
    verify_manifest(src)
    # the top level is a mix at this instant; the reader never uses it
    assert (folder / "b.json").read_text() == "old b"
    recover_folder(folder)
    assert readable_folder(folder) == folder and not _own_leftovers(folder)
    assert {k: v for k, v in _tree(folder).items() if k != MANIFEST_FILE} == {"a.json": "new a", "b.json": "new b"}
    assert read_manifest(folder)["generation"] == 2


def test_interrupted_transformer_save_loads_the_new_weights(tmp_path, monkeypatch):
    old = randomize_(WorldStereoTransformer(tiny_config("worldstereo-camera")), seed=1).eval()
    new = randomize_(WorldStereoTransformer(tiny_config("worldstereo-camera")), seed=2).eval()
    folder = tmp_path / "t"
    save_transformer(old, folder)
    real_install = cf._install

    def dying_install(folder_, commit, manifest):
        raise KeyboardInterrupt("killed right after the commit point")

    monkeypatch.setattr(cf, "_install", dying_install)
    with pytest.raises(KeyboardInterrupt):
        save_transformer(new, folder)
    monkeypatch.setattr(cf, "_install", real_install)
    loaded = load_transformer(folder)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in new.state_dict().items())
    save_transformer(old, folder)  # finishes the interrupted save, then writes its own
    assert not _own_leftovers(folder)
    reloaded = load_transformer(folder).state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in old.state_dict().items())


def test_recovery_removes_only_own_leftovers(tmp_path):
    folder = tmp_path / "ckpt"
    write_checkpoint_folder(folder, _writer({"config.json": "{}"}))
    partial = folder / f".worldstereo-partial-{'a' * 32}"
    (partial / "vae").mkdir(parents=True)
    (partial / "vae" / "w.bin").write_text("junk")
    (folder / f".worldstereo-trash-{'b' * 32}").mkdir()
    (folder / f".config.json.worldstereo-tmp-{'c' * 32}").write_text("junk")
    (folder / ".model.safetensors.tmp1234").write_text("junk from the earlier writer")
    keep = [folder / ".worldstereo-partial-notours", folder / ".config.json.worldstereo-tmp-xyz", folder / ".hidden"]
    for p in keep:
        p.write_text("user")
    assert readable_folder(folder) == folder  # partial saves are never read
    legacy_old = tmp_path / ".ckpt.old-0123456789ab"
    legacy_tmp = tmp_path / ".ckpt.tmp-ba9876543210"
    for p in (legacy_old, legacy_tmp):
        (p / "vae").mkdir(parents=True)
    (tmp_path / ".ckpt.old-notours").mkdir()
    write_checkpoint_folder(folder, _writer({"config.json": "{\"v\": 1}"}))
    assert not partial.exists() and not (folder / ".model.safetensors.tmp1234").exists()
    assert sorted(_own_leftovers(folder)) == [".config.json.worldstereo-tmp-xyz", ".worldstereo-partial-notours"]
    assert all(p.read_text() == "user" for p in keep)
    assert not legacy_old.exists() and not legacy_tmp.exists() and (tmp_path / ".ckpt.old-notours").is_dir()


def test_manifest_detects_incomplete_or_modified_folders(tmp_path):
    folder = tmp_path / "ckpt"
    assert verify_manifest(tmp_path) is None  # no manifest: nothing to check (reference layout)
    write_checkpoint_folder(folder, _writer({"config.json": "{}", "vae/w.bin": "weights"}))
    (folder / "vae" / "w.bin").write_text("trunc")
    with pytest.raises(CheckpointError, match=r"incomplete or was modified.*vae/w\.bin has 5 bytes, the manifest "
                                              r"says 7"):
        verify_manifest(folder)
    (folder / "vae" / "w.bin").unlink()
    with pytest.raises(CheckpointError, match=r"vae/w\.bin is missing"):
        verify_manifest(folder)


@pytest.mark.parametrize("content, words", [
    ("{not json", "manifest is not valid JSON"),
    ("[" * 100000 + "]" * 100000, "manifest nested too deeply"),
    ('{"format": "other"}', "not a worldstereo manifest"),
    ('{"format": "worldstereo-manifest", "version": 99}', "unsupported manifest version"),
    ('{"format": "worldstereo-manifest", "version": 1, "generation": true, "save_id": "0", "files": {}}',
     "generation"),
    ('{"format": "worldstereo-manifest", "version": 1, "generation": 1, "save_id": "' + "a" * 32
     + '", "files": {"../outside.txt": 3}}', "not a plain relative path"),
    ('{"format": "worldstereo-manifest", "version": 1, "generation": 1, "save_id": "' + "a" * 32
     + '", "files": {"/etc/passwd": 3}}', "not a plain relative path"),
    ('{"format": "worldstereo-manifest", "version": 1, "generation": 1, "save_id": "' + "a" * 32
     + '", "files": {"a.bin": -1}}', "size of"),
])
def test_hostile_manifest_is_refused_and_never_used_to_delete(tmp_path, content, words):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (tmp_path / "outside.txt").write_text("precious")
    (folder / MANIFEST_FILE).write_text(content)
    with pytest.raises(CheckpointError, match=words):
        read_manifest(folder)
    write_checkpoint_folder(folder, _writer({"config.json": "{}"}))  # the invalid manifest is ignored
    assert (tmp_path / "outside.txt").read_text() == "precious"
    assert read_manifest(folder)["files"] == {"config.json": 2}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_killing_save_pretrained_at_random_points_never_loses_the_checkpoint(tmp_path):
    """SIGKILL a save_pretrained at 30 points spread over the save (see _kill_save.py): after each,
    the folder loads as exactly the old or exactly the new model, the user's file is intact and
    nothing appears next to the folder; a further save leaves no leftovers."""
    folder = tmp_path / "m"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "models" / "_kill_save.py"), str(folder), "30",
                          "0"], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    trials = report["trials"]
    assert len(trials) >= 25 and report["total_calls"] > 100
    for t in trials:
        assert t["found"] in (t["previous"], t["saving"]), t  # never a mix, never nothing
        if not t["killed"]:
            assert t["found"] == t["saving"], t
        assert t["thesis"] == "years of work\n", t
        assert t["siblings"] == ["m"], t
    killed = [t for t in trials if t["killed"]]
    # the kill points cover both sides of the commit point
    assert any(t["found"] == t["previous"] for t in killed) and any(t["found"] == t["saving"] for t in killed)
    assert report["final_found"] == report["final_saved"]
    assert set(report["final_files"]) == set(report["manifest_files"]) | {"thesis.txt", MANIFEST_FILE}
    assert not [d for d in report["final_dirs"] if ".worldstereo-" in d]
