"""Fault injection for ``WorldStereo.save_pretrained`` (run by test_checkpoint_folder.py in a subprocess).

Usage: ``python _kill_save.py FOLDER N_KILLS SEED`` — prints one JSON object.

Two tiny models A and B (same architecture, different random weights) are built once. A is saved
into FOLDER next to a user file ``thesis.txt``. Then, N_KILLS times, a forked child saves the model
that is *not* currently in FOLDER and kills itself with SIGKILL at its k-th file-system operation
(``open``, ``write``, ``os.replace``, ``os.link``, ``os.unlink``, ``os.rmdir``, ``os.mkdir``,
``os.fsync``, the safetensors writer...), k spread over the whole save. After every kill this
process checks, with ``WorldStereo.from_pretrained``, that FOLDER holds exactly A or exactly B
(every weight of every component equal) and that ``thesis.txt`` is untouched, and that nothing
was written next to FOLDER. Saves start by finishing or removing what the previous kill left, so
recovery is killed too. Finally one save runs to completion and the folder is listed for leftovers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from pathlib import Path

import torch
import tqdm

torch.set_num_threads(1)
# tqdm's default lock is a multiprocessing semaphore shared across fork: a child killed while
# holding it would block this process forever. A per-process lock and no monitor thread instead.
tqdm.tqdm.set_lock(threading.RLock())
tqdm.tqdm.monitor_interval = 0

from worldstereo.models.worldstereo import WorldStereo  # noqa: E402
from worldstereo.testing import tiny_model  # noqa: E402

_FS_CALLS = {"open", "write", "replace", "rename", "link", "unlink", "remove", "rmdir", "mkdir", "fsync",
             "serialize_file", "copyfile", "makedirs"}


def _save_in_child(model: WorldStereo, folder: Path, kill_at: int | None) -> int:
    """Fork; the child saves and (if ``kill_at``) SIGKILLs itself at that file-system call. Returns
    the number of file-system calls the child made (when not killed) or -1 (killed)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        count = 0

        def profile(frame, event, arg):  # noqa: ANN001
            nonlocal count
            if event == "c_call" and getattr(arg, "__name__", None) in _FS_CALLS:
                count += 1
                if kill_at is not None and count >= kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        try:
            sys.setprofile(profile)
            model.save_pretrained(folder)
            sys.setprofile(None)
            os.write(write_fd, str(count).encode())
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001
            sys.setprofile(None)
            os.write(write_fd, f"error {type(exc).__name__}: {exc}".encode())
            os._exit(1)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    out = os.read(read_fd, 100000).decode()
    os.close(read_fd)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return -1
    if os.WEXITSTATUS(status) != 0:
        raise RuntimeError(f"save failed in the child: {out}")
    return int(out)


def _which(model: WorldStereo, candidates: dict[str, dict[str, torch.Tensor]]) -> str | None:
    sd = model.state_dict()
    for name, ref in candidates.items():
        if sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref):
            return name
    return None


def main() -> None:
    folder, n_kills, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    models = {"A": tiny_model("worldstereo-camera", seed=0), "B": tiny_model("worldstereo-camera", seed=1)}
    states = {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in models.items()}
    folder.mkdir(parents=True)
    (folder / "thesis.txt").write_text("years of work\n")
    models["A"].save_pretrained(folder)
    current = "A"
    total = _save_in_child(models["B"], folder, None)  # count the file-system calls of one save
    current = "B"
    rng = random.Random(seed)
    # half of the kill points over the whole save, half over its last quarter (commit point,
    # install of the files, manifest, retirement of the staging copy), jittered
    half = n_kills // 2
    points = [round(total * (i + 0.5) / (n_kills - half)) for i in range(n_kills - half)]
    points += [round(total * (0.75 + 0.25 * (i + 0.5) / half)) for i in range(half)]
    points = sorted({max(1, p + rng.randint(-2, 2)) for p in points})
    rng.shuffle(points)
    trials = []
    for k in points:
        other = "A" if current == "B" else "B"
        killed = _save_in_child(models[other], folder, k) == -1
        loaded = WorldStereo.from_pretrained(folder)
        found = _which(loaded, states)
        trials.append({"kill_at": k, "killed": killed, "previous": current, "saving": other, "found": found,
                       "thesis": (folder / "thesis.txt").read_text() if (folder / "thesis.txt").exists() else None,
                       "siblings": sorted(p.name for p in folder.parent.iterdir())})
        if found is not None:
            current = found
    final = "A" if current == "B" else "B"
    models[final].save_pretrained(folder)
    found = _which(WorldStereo.from_pretrained(folder), states)
    listing = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    manifest = json.loads((folder / "worldstereo_manifest.json").read_text())
    print(json.dumps({"total_calls": total, "trials": trials, "final_saved": final, "final_found": found,
                      "final_files": listing, "manifest_files": sorted(manifest["files"]),
                      "final_dirs": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir())}))


if __name__ == "__main__":
    main()
