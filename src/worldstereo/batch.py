"""Batches of generation jobs: a JSON Lines jobs file, spread over ranks, batched, resumable.

:func:`run_batch` (the ``worldstereo batch`` command) runs one video per job into ``OUT/<output>/``
(the files of ``worldstereo generate``: ``video.mp4``, ``render.mp4``, ``render_mask.mp4``,
``camera.json``, ``image.png``, ``points.ply``, ``memory_bank/`` for the memory variants,
``summary.json``).

**Jobs file** — one JSON object per line (blank lines are skipped); relative paths are relative to
the jobs file's folder. Fields (:data:`JOB_FIELDS`):

==========================  ==============================  ==============================================
field                       type (default)                  meaning
==========================  ==============================  ==============================================
``image``                   path (required)                 condition image (frame 0)
``trajectory``              preset name or path (required)  preset (``forward``, ``orbit``, ...) or a
                                                            trajectory file (as ``generate --trajectory``)
``output``                  name (``job-NNNNN``, the line)  folder under OUT: letters, digits, ``._-``,
                                                            not starting with ``.``; unique
``prompt``                  string (``""``)                 text prompt
``negative_prompt``         string or null (model's)        negative prompt of guidance
``seed``                    integer in [0, 2**63) (0)       random seed
``frames``                  integer in [2, 1024]            frames (default: 16 for presets, the file's)
``height``, ``width``       multiples of 16 in [16, 4096]   size (both or neither; default: the reference
                                                            size closest to the image's aspect)
``steps``                   integer in [1, 1000] (40)       UniPC steps (ignored by the DMD variant)
``guidance``                number in [0, 100] (5)          CFG scale, <= 1 disables it (ignored by DMD)
``fov``                     number in (0, 180)              horizontal field of view (degrees) when the
                                                            trajectory has no intrinsics
``preset_args``             object                          preset parameters, e.g. ``{"distance": 0.5}``
``depth``                   path                            depth map of the image (``.npy`` / ``.npz`` /
                                                            16-bit ``.png``); default: the depth model
``depth_scale``             number > 0                      stored depth -> scene units (with ``depth``)
``use_geometric_memory``    bool (true)                     point-cloud render for the ControlNet
``use_spatial_memory``      bool (true)                     frame-bank references (memory variants)
``variant``                 model type                      must match the model (checked before loading)
==========================  ==============================  ==============================================

``null`` means "not given" for the fields without a default value. Unknown fields are errors. **Every line is validated before any model work** (JSON, types, ranges,
files exist, preset names and their parameters, unique outputs); all problems are reported at once by
a :class:`JobsFileError` naming the line and the field. What can only be found by doing the job (an
unreadable image or trajectory file, a depth map of the wrong size) fails that job alone.

**Resuming** — each finished job is recorded in ``OUT/.worldstereo-batch/<output>.json`` (status,
a fingerprint of the job and its settings — fields, input files' size and modification time, model,
dtype, fps — and the size of every written file) and in the merged ``OUT/manifest.json``. A job's folder
is one transaction of :func:`worldstereo.io.output_folder.output_folder` (as every command's
``--out``): written in a hidden staging folder next to it and swapped into place when complete. On a
re-run a job is skipped when its record says done, its fingerprint is unchanged and its files are all
there with their recorded sizes; failed jobs (recorded with their error) and changed jobs run again.
An existing ``OUT/<output>`` that ``worldstereo batch`` did not write is never replaced (that job fails
with a message).

**Batching** — ``batch_size`` > 1 runs compatible jobs (same size, frames, steps, guidance,
reference count and ``ref_index``; see :class:`~worldstereo.pipeline.BatchedGeneration`) through one
batched forward; each video equals the one of a separate run up to float rounding.

**Several processes** — under ``torchrun`` the jobs not yet finished are spread round-robin over
the groups of ranks (data parallelism); each group may itself split a video (``parallel`` mode and
``group_size``, see :mod:`worldstereo.parallel`). The rank 0 of each group writes its jobs' folders
and records; the global rank 0 writes ``manifest.json``. With several machines, ``OUT`` must be on a
file system all of them see. Do not run two batches on the same ``OUT`` at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from . import __version__
from .camera import PRESET_NAMES, assign_scale
from .commands import UsageError
from .commands.generate import (
    REFERENCE_GUIDANCE,
    REFERENCE_STEPS,
    _API_GUIDANCE,
    _API_STEPS,
    CachedDepth,
    StepProgress,
    depth_scale_and_intrinsics,
    write_memory_outputs,
    write_summary,
    write_video_outputs,
)
from .commands.render import (
    check_depth_model_spec,
    check_trajectory_spec,
    preset_trajectory,
    resolve_trajectory,
)
from .depth import DEFAULT_DEPTH_MODEL, UserDepth, get_depth_estimator, load_depth
from .devices import check_device
from .errors import UnavailableError
from .io.atomic import atomic_open
from .io.errors import InputFileError
from .io.files import parse_json_text, read_text_file
from .io.image import load_image, open_image_file, resize_image, save_image
from .io.output_folder import check_output_target, output_folder
from .models.loading import _looks_like_hub_id, resolve_checkpoint
from .parallel import (
    PARALLEL_MODES,
    enable_context_parallel,
    init_distributed,
    launched_by_torchrun,
    parallel_state,
)
from .vram import get_memory_tier

__all__ = [
    "JOB_FIELDS",
    "BatchJob",
    "BatchReport",
    "JobsFileError",
    "load_jobs",
    "validate_jobs",
    "run_batch",
    "MANIFEST_NAME",
    "RECORDS_DIR",
]

logger = logging.getLogger(__name__)

#: merged manifest of a batch output folder
MANIFEST_NAME = "manifest.json"
#: folder of the per-job records (the resume state)
RECORDS_DIR = ".worldstereo-batch"
MANIFEST_FORMAT = "worldstereo.batch"
#: largest jobs file read
MAX_JOBS_FILE_BYTES = 64 * 2**20
#: problems listed in one JobsFileError
_MAX_REPORTED = 20
#: seconds between rewrites of manifest.json during a run (it is always written at the end)
_MANIFEST_INTERVAL_S = 10.0
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VARIANTS = ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd")


class JobsFileError(ValueError):
    """The jobs are invalid; the message lists every problem as ``<source> line N: field 'x': ...``.

    Attributes:
        problems: ``(line, field, message)`` per problem (field None for whole-line problems).
    """

    def __init__(self, source: str, problems: Sequence[tuple[int, str | None, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [(f"{source} line {line}: " if line else f"{source}: ") + (f"field {name!r}: " if name else "") + msg
                 for line, name, msg in self.problems[:_MAX_REPORTED]]
        more = len(self.problems) - _MAX_REPORTED
        if more > 0:
            lines.append(f"... and {more} more problem(s)")
        super().__init__("; ".join(lines) if len(lines) == 1 else "invalid jobs:\n  " + "\n  ".join(lines))


# ----------------------------------------------------------------------------------- the schema
class _FieldError(ValueError):
    pass


def _integer(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise _FieldError(f"expected an integer in [{lo}, {hi}], got {value!r}")
        if not lo <= value <= hi:
            raise _FieldError(f"expected an integer in [{lo}, {hi}], got {value!r}")
        return int(value)
    return check


def _number(lo: float, hi: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[Any], float]:
    text = f"{'(' if low_open else '['}{lo:g}, {hi:g}{')' if high_open else ']'}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _FieldError(f"expected a number in {text}, got {value!r}")
        ok_lo = value > lo if low_open else value >= lo
        ok_hi = value < hi if high_open else value <= hi
        if not (ok_lo and ok_hi):
            raise _FieldError(f"expected a number in {text}, got {value!r}")
        return float(value)
    return check


def _side(value: Any) -> int:
    v = _integer(16, 4096)(value)
    if v % 16:
        raise _FieldError(f"expected a multiple of 16, got {v}")
    return v


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _FieldError(f"expected a string, got {type(value).__name__}")
    if len(value) > 10_000:
        raise _FieldError(f"expected at most 10000 characters, got {len(value)}")
    return value


def _optional_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(f"expected true or false, got {value!r}")
    return value


def _output_name(value: Any) -> str:
    if not isinstance(value, str) or not _OUTPUT_NAME.match(value) or value in (RECORDS_DIR, MANIFEST_NAME):
        raise _FieldError(f"expected a folder name of letters, digits, '.', '_', '-' (1-100 characters, not "
                          f"starting with '.'), got {value!r}")
    return value


def _preset_args(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _FieldError(f"expected an object of preset parameters, got {type(value).__name__}")
    for key, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _FieldError(f"parameter {key!r}: expected a finite number, got {v!r}")
    return dict(value)


def _variant(value: Any) -> str:
    if value not in _VARIANTS:
        raise _FieldError(f"expected one of {list(_VARIANTS)}, got {value!r}")
    return value


#: field name -> (checker, default, description); ``image`` and ``trajectory`` are required
JOB_FIELDS: dict[str, tuple[Callable[[Any], Any], Any, str]] = {
    "image": (_string, None, "condition image path"),
    "trajectory": (_string, None, "preset name or trajectory file path"),
    "output": (_output_name, None, "output folder name under OUT (default job-NNNNN)"),
    "prompt": (_string, "", "text prompt"),
    "negative_prompt": (_optional_string, None, "negative prompt (default: the model's)"),
    "seed": (_integer(0, 2**63 - 1), 0, "random seed"),
    "frames": (_integer(2, 1024), None, "frames (default: 16 for presets, the file's length)"),
    "height": (_side, None, "height, multiple of 16"),
    "width": (_side, None, "width, multiple of 16"),
    "steps": (_integer(1, 1000), None, "UniPC steps (default 40)"),
    "guidance": (_number(0.0, 100.0), None, "guidance scale (default 5)"),
    "fov": (_number(0.0, 180.0, low_open=True, high_open=True), None, "horizontal field of view, degrees"),
    "preset_args": (_preset_args, None, "preset parameters"),
    "depth": (_string, None, "depth map file of the image"),
    "depth_scale": (_number(0.0, 1e12, low_open=True), None, "stored depth -> scene units"),
    "use_geometric_memory": (_boolean, True, "point-cloud render for the ControlNet"),
    "use_spatial_memory": (_boolean, True, "frame-bank references (memory variants)"),
    "variant": (_variant, None, "model type the job is for"),
}
_REQUIRED = ("image", "trajectory")
#: fields a ``defaults`` mapping may set (not the per-job identity)
_DEFAULTABLE = tuple(k for k in JOB_FIELDS if k not in ("image", "trajectory", "output"))


@dataclass(frozen=True)
class BatchJob:
    """One validated job (paths absolute; fields as in :data:`JOB_FIELDS`, defaults applied).

    Attributes:
        line: 1-based line of the jobs file (position for a list of jobs).
        trajectory: a preset name, or the absolute path of a trajectory file (``trajectory_is_file``).
    """

    line: int
    output: str
    image: str
    trajectory: str
    trajectory_is_file: bool
    prompt: str = ""
    negative_prompt: str | None = None
    seed: int = 0
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None
    fov: float | None = None
    preset_args: dict[str, Any] | None = None
    depth: str | None = None
    depth_scale: float | None = None
    use_geometric_memory: bool = True
    use_spatial_memory: bool = True
    variant: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)

    def input_files(self) -> list[str]:
        """The files the job reads."""
        files = [self.image] + ([self.trajectory] if self.trajectory_is_file else [])
        return files + ([self.depth] if self.depth else [])


def _resolve_path(text: str, base: Path) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def _check_file(text: str, base: Path, what: str) -> str:
    p = _resolve_path(text, base)
    if not p.exists():
        raise _FieldError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise _FieldError(f"{what} {str(p)!r} is not a file")
    return str(p.resolve())


def _validate_one(raw: Any, line: int, base: Path, defaults: Mapping[str, Any],
                  problems: list[tuple[int, str | None, str]]) -> BatchJob | None:
    if not isinstance(raw, dict):
        problems.append((line, None, f"expected a JSON object, got {type(raw).__name__}"))
        return None
    n_before = len(problems)
    unknown = sorted(set(raw) - set(JOB_FIELDS))
    for name in unknown:
        problems.append((line, name, f"unknown field; known fields: {', '.join(JOB_FIELDS)}"))
    for name in _REQUIRED:
        if name not in raw:
            problems.append((line, name, "required"))
    values: dict[str, Any] = {}
    for name, (check, default, _) in JOB_FIELDS.items():
        if name in raw and raw[name] is None and default is None:
            values[name] = defaults.get(name)  # null = not given
        elif name in raw:
            try:
                values[name] = check(raw[name])
            except _FieldError as exc:
                problems.append((line, name, str(exc)))
        else:
            values[name] = defaults.get(name, default)
    if len(problems) > n_before:
        return None
    values["output"] = values["output"] or f"job-{line:05d}"
    try:
        values["image"] = _check_file(values["image"], base, "image")
    except _FieldError as exc:
        problems.append((line, "image", str(exc)))
    spec = values["trajectory"]
    path = _resolve_path(spec, base)
    is_file = path.exists() or spec not in PRESET_NAMES and ("/" in spec or "." in spec)
    if is_file:
        try:
            values["trajectory"] = _check_file(spec, base, "trajectory file")
        except _FieldError as exc:
            problems.append((line, "trajectory", str(exc)))
        if raw.get("preset_args"):
            problems.append((line, "preset_args", "only applies to preset trajectories, not to files"))
        values["preset_args"] = None
    elif spec not in PRESET_NAMES:
        problems.append((line, "trajectory", f"{spec!r} is neither an existing file nor a preset; presets: "
                                             f"{', '.join(PRESET_NAMES)}"))
    elif values["preset_args"]:
        try:  # unknown preset parameters fail now, not after loading the model
            preset_trajectory(spec, 2, 64, 64, 60.0, 1.0, values["preset_args"])
        except (UsageError, TypeError, ValueError) as exc:
            problems.append((line, "preset_args", str(exc).replace("--preset-arg: ", "")))
    if (values["height"] is None) != (values["width"] is None):
        problems.append((line, "height" if values["height"] is None else "width",
                         "give both height and width, or neither"))
    if values["depth"] is not None:
        try:
            values["depth"] = _check_file(values["depth"], base, "depth map")
        except _FieldError as exc:
            problems.append((line, "depth", str(exc)))
    elif values["depth_scale"] is not None and "depth_scale" in raw:
        problems.append((line, "depth_scale", "only applies with 'depth'"))
    if len(problems) > n_before:
        return None
    return BatchJob(line=line, trajectory_is_file=is_file, **values)


def _check_job_files(job: BatchJob, images: dict[str, Any], problems: list[tuple[int, str | None, str]]) -> None:
    """The content of a job's files, before any model work: the image is an image (its header:
    format, size within the limits; ``images`` caches the size per path), the trajectory file parses,
    the depth map loads and has the image's size, and the video fits the size budget. Problems are
    appended as ``(line, field, message)``. Pixel data that turns out to be corrupt when the job
    decodes it fails that job alone."""
    def problem(field: str, exc: BaseException) -> None:
        problems.append((job.line, field, " ".join(str(exc).split())))

    if job.image not in images:  # the header only: a batch of many large images is not decoded twice
        try:
            with open_image_file(job.image, "image") as im:
                images[job.image] = (int(im.size[1]), int(im.size[0]))
        except (ValueError, TypeError, OSError) as exc:
            images[job.image] = exc
    size = images[job.image]
    if isinstance(size, BaseException):
        problem("image", size)
        return
    height, width = (job.height, job.width) if job.height is not None else assign_scale(*size)
    try:
        n = check_trajectory_spec(job.trajectory, job.frames, int(height), int(width), size,
                                  None if job.trajectory_is_file else job.preset_args, option="trajectory")
        if n < 2:
            raise UsageError(f"{job.trajectory!r} has a single pose; a video needs at least 2 frames ('frames')")
    except (ValueError, TypeError, OSError) as exc:
        problem("preset_args" if "--preset-arg" in str(exc) else "trajectory",
                ValueError(str(exc).replace("--preset-arg: ", "").replace("--frames/--height/--width: ", "")))
    if job.depth is not None:
        try:
            depth = load_depth(job.depth, job.depth_scale, name="depth")
            if tuple(depth.shape) != size:
                raise ValueError(f"size {tuple(depth.shape)} does not match the image's (height, width) {size}")
        except (ValueError, TypeError, OSError) as exc:
            problem("depth", exc)


def _check_defaults(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    problems = []
    for name, value in (defaults or {}).items():
        if name not in _DEFAULTABLE:
            problems.append((0, name, f"not a field that can have a default; expected some of {list(_DEFAULTABLE)}"))
            continue
        if value is None:
            continue
        try:
            out[name] = JOB_FIELDS[name][0](value)
        except _FieldError as exc:
            problems.append((0, name, str(exc)))
    if problems:
        raise JobsFileError("defaults", problems)
    return out


def validate_jobs(jobs: Sequence[Any], *, base_dir: str | os.PathLike[str] | None = None,
                  defaults: Mapping[str, Any] | None = None, source: str = "jobs",
                  first_line: int = 1, lines: Sequence[int] | None = None) -> list[BatchJob]:
    """Validate job dicts (fields of :data:`JOB_FIELDS`) without touching any model.

    Args:
        jobs: one dict per job.
        base_dir: folder relative paths are resolved against (default: the working directory).
        defaults: values for fields a job leaves out (not ``image``, ``trajectory``, ``output``).
        source: name used in messages (the jobs file).
        first_line / lines: line numbers of the jobs, for messages and default output names.

    Returns:
        The :class:`BatchJob` list, in order.

    Raises:
        JobsFileError: every problem found (line, field, what was expected).
    """
    if isinstance(jobs, (str, bytes, Mapping)) or not isinstance(jobs, Sequence):
        raise TypeError(f"jobs: expected a list of job dicts, got {type(jobs).__name__} (load_jobs reads a jobs file)")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    defs = _check_defaults(defaults)
    problems: list[tuple[int, str | None, str]] = []
    out: list[BatchJob] = []
    for i, raw in enumerate(jobs):
        line = lines[i] if lines is not None else first_line + i
        job = _validate_one(raw, line, base, defs, problems)
        if job is not None:
            out.append(job)
    images: dict[str, Any] = {}
    for job in out:
        _check_job_files(job, images, problems)
    seen: dict[str, int] = {}
    for job in out:
        key = job.output.lower()  # case-insensitive file systems
        if key in seen:
            problems.append((job.line, "output", f"{job.output!r} is already the output of line {seen[key]}"))
        else:
            seen[key] = job.line
    variants = sorted({j.variant for j in out if j.variant is not None})
    if len(variants) > 1:
        first = {v: next(j.line for j in out if j.variant == v) for v in variants}
        problems.append((first[variants[1]], "variant", f"one batch runs one model; jobs ask for {variants} "
                                                        f"(lines {sorted(first.values())})"))
    if not out and not problems:
        problems.append((first_line, None, "no jobs"))
    if problems:
        raise JobsFileError(source, sorted(problems, key=lambda p: p[0]))
    return out


def load_jobs(path: str | os.PathLike[str], *, defaults: Mapping[str, Any] | None = None) -> list[BatchJob]:
    """Read and validate a JSON Lines jobs file (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        InputFileError: not a readable UTF-8 text file of at most :data:`MAX_JOBS_FILE_BYTES`.
        JobsFileError: lines that are not JSON objects, invalid fields (all listed).
    """
    p = Path(path)
    text = read_text_file(p, "JOBS", "jobs file (JSON Lines)", max_bytes=MAX_JOBS_FILE_BYTES)
    raws, lines, problems = [], [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raws.append(parse_json_text(line, what="JSON object"))
            lines.append(n)
        except InputFileError as exc:  # the parser sees one line: its "line 1" is line n
            problems.append((n, None, exc.reason.replace(" at line 1, column ", " at column ")))
    if problems:
        raise JobsFileError(str(p), problems)
    return validate_jobs(raws, base_dir=p.resolve().parent, defaults=defaults, source=str(p), lines=lines)


# --------------------------------------------------------------------------------- the manifest
def _fingerprint(job: BatchJob, settings: Mapping[str, Any]) -> str:
    import hashlib

    files = {}
    for f in job.input_files():
        try:
            st = os.stat(f)
            files[f] = [st.st_size, st.st_mtime_ns]
        except OSError:
            files[f] = None
    fields = {k: v for k, v in job.as_dict().items() if k != "line"}
    doc = json.dumps({"job": fields, "files": files, "settings": dict(settings)}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()


def _record_path(out: Path, name: str) -> Path:
    return out / RECORDS_DIR / f"{name}.json"


def _write_json(path: Path, doc: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, default=str)
        fh.write("\n")


def _read_records(out: Path) -> dict[str, dict[str, Any]]:
    """Per-job records (the resume state), by output name; unreadable records are ignored."""
    records: dict[str, dict[str, Any]] = {}
    folder = out / RECORDS_DIR
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("batch: ignoring the unreadable record %s", path)
            continue
        if isinstance(doc, dict) and isinstance(doc.get("output"), str):
            records[doc["output"]] = doc
    return records


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _is_finished(job: BatchJob, record: Mapping[str, Any] | None, out: Path, fingerprint: str) -> bool:
    if not record or record.get("status") != "done" or record.get("fingerprint") != fingerprint:
        return False
    folder = out / job.output
    files = record.get("files")
    if not isinstance(files, dict) or not files or not folder.is_dir():
        return False
    for name, size in files.items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def _write_manifest(out: Path, jobs: Sequence[BatchJob], settings: Mapping[str, Any], source: str) -> Path:
    records = _read_records(out)
    entries = []
    counts = {"done": 0, "failed": 0, "pending": 0}
    for job in jobs:
        rec = records.get(job.output)
        if rec is None:
            entry = {"output": job.output, "line": job.line, "status": "pending"}
        else:
            entry = {k: v for k, v in rec.items() if k != "job"}
            entry["line"] = job.line
        counts[entry["status"] if entry["status"] in counts else "pending"] += 1
        entries.append(entry)
    path = out / MANIFEST_NAME
    _write_json(path, {"format": MANIFEST_FORMAT, "version": 1, "jobs_file": source, "settings": dict(settings),
                       "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "counts": counts, "jobs": entries})
    return path


# ------------------------------------------------------------------------------------- running
@dataclass
class BatchReport:
    """What :func:`run_batch` did (the same on every rank).

    Attributes:
        done: outputs generated by this run; skipped: outputs already finished (not run again);
        failed: output -> error message; manifest: the path of ``manifest.json``.
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    manifest: Path | None = None

    @property
    def ok(self) -> bool:
        """True when no job failed."""
        return not self.failed


@dataclass
class _Prepared:
    job: BatchJob
    image: Any
    trajectory: Any
    height: int
    width: int
    depth_source: str
    started: float
    bar: Any = None


class _Runner:
    """One rank's part of a batch (see :func:`run_batch`)."""

    def __init__(self, model: Any, out: Path, *, settings: dict[str, Any], depth_model: Any, fps: int,
                 show_progress: bool, device: Any) -> None:
        self.model = model
        self.out = out
        self.settings = settings
        self.depth_model = depth_model
        self.fps = fps
        self.show_progress = show_progress
        self.device = device
        state = parallel_state(model)
        self.writer = state is None or state.is_writer
        self.rank = state.rank if state is not None else 0
        self.records = _read_records(out)
        self._depth: Any = None
        self._prepared: dict[str, _Prepared] = {}

    def fingerprint(self, job: BatchJob) -> str:
        return _fingerprint(job, self.settings)

    # -------------------------------------------------------------- per-job preparation
    def _depth_estimator(self) -> Any:
        if self._depth is None:
            spec = self.depth_model or getattr(self.model, "depth_estimator", None) or DEFAULT_DEPTH_MODEL
            self._depth = get_depth_estimator(spec, device=self.device)
        return self._depth

    def prepare(self, job: BatchJob) -> dict[str, Any]:
        """``generate_video`` keyword arguments of ``job`` (loads its image, depth and trajectory)."""
        started = time.perf_counter()
        image = load_image(job.image, name="image")
        image_size = (int(image.shape[1]), int(image.shape[2]))
        if job.height is not None:
            height, width = int(job.height), int(job.width)  # type: ignore[arg-type]
        else:
            height, width = assign_scale(*image_size)
        if job.depth is not None:
            depth = load_depth(job.depth, job.depth_scale, name="depth")
            if tuple(depth.shape) != image_size:
                raise ValueError(f"depth: size {tuple(depth.shape)} does not match the image's (height, width) "
                                 f"{image_size}")
            estimator: Any = UserDepth(depth)
            prediction = estimator(image)
            source = f"file:{job.depth}"
        else:
            base = self._depth_estimator()
            prediction = base(image)
            estimator = CachedDepth(base, image, prediction)
            source = str(self.depth_model or type(base).__name__)
        median, K = depth_scale_and_intrinsics(prediction, height, width)
        trajectory = resolve_trajectory(job.trajectory, num_frames=job.frames, height=height, width=width,
                                        fov_deg=job.fov, image_size=image_size, median_depth=median, predicted_K=K,
                                        preset_args=None if job.trajectory_is_file else job.preset_args)
        if self.model.is_distilled:  # fixed schedule: the API defaults (no per-job warning; run_batch warns once)
            steps, guidance = _API_STEPS, _API_GUIDANCE
        else:
            steps = job.steps if job.steps is not None else REFERENCE_STEPS
            guidance = job.guidance if job.guidance is not None else REFERENCE_GUIDANCE
        bar = StepProgress(job.output, disable=not self.show_progress)
        self._prepared[job.output] = _Prepared(job, image, trajectory, height, width, source, started, bar)
        return dict(condition_image=image, camera_trajectory=trajectory, num_frames=len(trajectory), height=height,
                    width=width, num_inference_steps=int(steps), guidance_scale=float(guidance), seed=job.seed,
                    prompt=job.prompt, negative_prompt=job.negative_prompt, depth_estimator=estimator,
                    use_geometric_memory=job.use_geometric_memory, use_spatial_memory=job.use_spatial_memory,
                    output_format="tensor", progress_callback=bar)

    # -------------------------------------------------------------- per-job outcome
    def failed(self, job: BatchJob, error: BaseException) -> None:
        prepared = self._prepared.pop(job.output, None)
        if prepared is not None and prepared.bar is not None:
            prepared.bar.close()
        message = f"{type(error).__name__}: {error}"
        logger.error("job %s (line %d) failed: %s", job.output, job.line, message)
        if self.writer:
            self._record(job, {"status": "failed", "error": message})

    def finished(self, job: BatchJob, result: Any) -> None:
        prepared = self._prepared.pop(job.output)
        prepared.bar.close()
        if not self.writer:
            return
        try:
            files = self._write(prepared, result)
        except Exception as exc:  # noqa: BLE001 - recorded as the job's failure
            self.failed(job, exc)
            return
        seconds = time.perf_counter() - prepared.started
        self._record(job, {"status": "done", "files": files, "seconds": round(seconds, 3),
                           "batch_size": result.record.batch_size})
        logger.info("job %s (line %d): %d frames in %.1f s", job.output, job.line, len(prepared.trajectory), seconds)

    def _record(self, job: BatchJob, doc: dict[str, Any]) -> None:
        record = {"output": job.output, "line": job.line, **doc, "fingerprint": self.fingerprint(job),
                  "rank": self.rank, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "job": job.as_dict()}
        path = _record_path(self.out, job.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, record)
        self.records[job.output] = record

    def _write(self, prepared: _Prepared, result: Any) -> dict[str, int]:
        """The job's folder, written as one transaction (:func:`~worldstereo.io.output_folder.output_folder`:
        a staging folder renamed into place when complete); returns its listing (name -> bytes)."""
        job = prepared.job
        t0 = time.perf_counter()
        target = self.out / job.output
        # a job folder the batch recorded as damaged is run again: its own files are replaced
        with output_folder(target, owner="batch", option=f"output {job.output!r}", replace_changed=True) as staged:
            folder = staged.path
            files = write_video_outputs(folder, "", result.video, result.record, prepared.trajectory, fps=self.fps,
                                        extra_json={"trajectory": job.trajectory})
            save_image(folder / "image.png", resize_image(prepared.image, prepared.height, prepared.width).clamp(0, 1))
            files["image"] = "image.png"
            mem_info = write_memory_outputs(folder, result.memory)
            files.update({k: v for k, v in mem_info.items() if k in ("points", "memory_bank")})
            summary: dict[str, Any] = {
                "worldstereo_version": __version__, "batch_job": job.as_dict(),
                "model": self.settings["model"], "variant": self.model.variant, "dtype": self.settings["dtype"],
                "parallel": state.summary() if (state := parallel_state(self.model)) is not None else None,
                "image": job.image, "image_size": [int(prepared.image.shape[1]), int(prepared.image.shape[2])],
                "height": prepared.height, "width": prepared.width, "prompt": job.prompt,
                "negative_prompt": job.negative_prompt, "depth": prepared.depth_source, "fov": job.fov,
                "fps": self.fps,
            }
            summary.update(result.record.summary())
            summary.update({"trajectory": job.trajectory, "num_frames": len(prepared.trajectory),
                            "num_points": mem_info["num_points"], "memory_bank_size": mem_info["memory_bank_size"],
                            "files": dict(sorted(files.items()))})
            summary["timings"] = {**result.record.timings, "write": time.perf_counter() - t0,
                                  "total": time.perf_counter() - prepared.started}
            write_summary(folder, summary)
        return _listing(target)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _load_model(model: Any, variant: str | None, device: torch.device, dtype: torch.dtype, on_device: bool) -> Any:
    from .models.worldstereo import WorldStereo  # lazy: model stack (ftfy, scipy)

    if isinstance(model, nn.Module):
        return model
    try:
        return WorldStereo.from_pretrained(model, variant, torch_dtype=dtype, device=device if on_device else None)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError) as exc:
        raise ValueError(f"model: cannot load {str(model)!r}: {exc}") from exc


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype: expected 'float32', 'float16' or 'bfloat16', got {dtype!r}")
        dtype = getattr(torch, dtype)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype: expected torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    if device.type == "cpu" and dtype != torch.float32:
        logger.warning("dtype %s: half precision is slow or unsupported on the CPU; using float32", dtype)
        return torch.float32
    return dtype


def _check_model_options(model: Any, variant: str | None, memory_tier: str | None, device: torch.device | None,
                         depth_model: Any) -> None:
    """The checks of the model options that read no weight: the checkpoint's layout, configs and
    variant (JSON files only), the memory tier and the depth model name."""
    if isinstance(model, (str, os.PathLike)):
        if Path(model).expanduser().exists() or not _looks_like_hub_id(os.fspath(model)):
            try:
                resolve_checkpoint(model, variant, local_files_only=True)
            except (ValueError, OSError) as exc:
                text = " ".join(str(exc).split())
                raise type(exc)(text if text.startswith(("model", "variant")) else f"model: {text}") from exc
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a checkpoint folder, a Hugging Face id or a WorldStereo model, got "
                        f"{type(model).__name__}")
    if memory_tier is not None:
        tier = get_memory_tier(memory_tier, "memory_tier")
        if tier.needs_accelerator and device is not None and device.type == "cpu":
            raise ValueError(f"memory_tier: {memory_tier!r} needs an accelerator device; on the CPU use resident, fp8, "
                             f"int8 or float8")
    if isinstance(depth_model, str):
        try:
            check_depth_model_spec(depth_model, "depth_model")
        except ValueError as exc:
            raise ValueError(str(exc)) from None


def run_batch(
    jobs: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    out: str | os.PathLike[str],
    model: Any,
    *,
    variant: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 1,
    parallel: str | None = None,
    group_size: int | None = None,
    fsdp: bool = False,
    memory_tier: str | None = None,
    depth_model: Any = None,
    defaults: Mapping[str, Any] | None = None,
    fps: int = 16,
    force: bool = False,
    progress: bool = True,
) -> BatchReport:
    """Run a batch of generation jobs into ``out`` (see the module docstring); resumable.

    Args:
        jobs: a JSON Lines jobs file, or a list of job dicts (relative paths from the working directory).
        out: output folder (created); one sub-folder per job, ``manifest.json``, ``.worldstereo-batch/``.
        model: a checkpoint folder / Hugging Face id, or a loaded :class:`~worldstereo.WorldStereo`
            (then ``variant``, ``device``, ``dtype``, ``memory_tier`` only describe it / are unused).
        variant: model type to load (default: the jobs' ``variant``, else ``worldstereo-memory``).
        device, dtype: where and how to run (default: CUDA + bfloat16 when available, else CPU + float32;
            under ``torchrun`` the device is ``cuda:LOCAL_RANK`` / the CPU).
        batch_size: most compatible jobs per batched forward.
        parallel: a mode of :data:`worldstereo.parallel.PARALLEL_MODES` splitting each video over
            ``group_size`` ranks (needs ``torchrun``); None under ``torchrun``: data parallelism only
            (each rank runs its own jobs).
        group_size: ranks per video (default: every rank with ``parallel``, 1 without).
        fsdp: shard the transformer / text-encoder weights over each group (FSDP2).
        memory_tier: a memory tier for one-process runs (:data:`worldstereo.optimization.MEMORY_TIERS`).
        depth_model: depth source for jobs without a ``depth`` file (default: the model's, else Depth
            Anything V2 Small).
        defaults: values for fields the jobs leave out (e.g. ``{"steps": 20}``).
        fps: frame rate of the written videos.
        force: run every job again, finished or not.
        progress: show progress bars (one for the batch, one per job) on rank 0 of a terminal.

    Returns:
        A :class:`BatchReport`.

    Raises:
        JobsFileError / FileNotFoundError: invalid jobs, before any model work.
        ValueError / RuntimeError: invalid options, a model that cannot be loaded, a variant mismatch.
    """
    # -- everything that needs no model --------------------------------------------------------
    if isinstance(jobs, (str, os.PathLike)):
        job_list = load_jobs(jobs, defaults=defaults)
        source = str(Path(jobs).resolve())
    else:
        if isinstance(jobs, Mapping) or not isinstance(jobs, Sequence):
            raise TypeError(f"jobs: expected a jobs file path or a list of job dicts, got {type(jobs).__name__}")
        job_list = validate_jobs(jobs, defaults=defaults)
        source = "jobs"
    out_dir = check_output_target(out, "out")  # a file, a root, unwritable ...: refused before any work
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 240:
        raise ValueError(f"fps: expected an integer in [1, 240], got {fps!r}")
    if parallel is not None and parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel: expected one of {list(PARALLEL_MODES)}, got {parallel!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size: expected a positive int, got {group_size!r}")
    for name, flag in (("fsdp", fsdp), ("force", force), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {flag!r}")
    if memory_tier is not None and (parallel is not None or launched_by_torchrun()):
        raise ValueError("memory_tier: one-process placement; not with parallel / torchrun (use fsdp to shard)")
    job_variants = {j.variant for j in job_list if j.variant is not None}
    if variant is not None and job_variants and job_variants != {variant}:
        raise ValueError(f"variant: {variant!r} but the jobs ask for {sorted(job_variants)}")
    variant = variant or (next(iter(job_variants)) if job_variants else None)
    if variant is not None and variant not in _VARIANTS:
        raise ValueError(f"variant: expected one of {list(_VARIANTS)}, got {variant!r}")

    # -- processes, device, model ---------------------------------------------------------------
    import torch.distributed as dist

    distributed = parallel is not None or fsdp or launched_by_torchrun() or (dist.is_available() and
                                                                           dist.is_initialized())
    if distributed and not (launched_by_torchrun() or (dist.is_available() and dist.is_initialized())):
        what = "parallel" if parallel is not None else "fsdp"
        raise UnavailableError(f"{what}: splits each video over torchrun processes; start the batch with "
                               f"`torchrun --nproc-per-node N -m worldstereo batch ...` (or drop {what})")
    if distributed and device is not None:
        raise ValueError("device: under torchrun each rank uses cuda:LOCAL_RANK (or the CPU); do not pass device")
    if not distributed:
        dev = check_device(device, "device") if device is not None else \
            torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = _resolve_dtype(dtype, dev)
    else:
        _resolve_dtype(dtype, torch.device("cuda"))  # the name only; the rank's device is known below
    _check_model_options(model, variant, memory_tier, None if distributed else dev, depth_model)
    if distributed:
        dev = init_distributed()
        torch_dtype = _resolve_dtype(dtype, dev)
    loaded = _load_model(model, variant, dev, torch_dtype, on_device=not distributed and memory_tier is None)
    if variant is not None and loaded.variant != variant:
        raise ValueError(f"variant: the jobs / option ask for {variant!r} but the model is {loaded.variant!r}")
    if distributed and parallel_state(loaded) is None:
        enable_context_parallel(loaded, parallel or "none", group_size=group_size if group_size is not None
                                else (None if parallel is not None else 1), fsdp=fsdp, device=dev)
    elif memory_tier is not None:
        from .optimization import enable_memory_tier  # lazy: accelerate, diffusers

        enable_memory_tier(loaded, memory_tier, device=dev)
    state = parallel_state(loaded)
    if loaded.is_distilled and any(j.steps is not None or j.guidance is not None for j in job_list):
        logger.warning("steps / guidance: ignored by the distilled variant %s (fixed %d-step schedule, no guidance)",
                       loaded.variant, loaded.config.dmd_steps)
    settings = {"model": str(model) if not isinstance(model, nn.Module) else f"<{type(model).__name__}>",
                "variant": loaded.variant, "dtype": str(loaded.dtype).replace("torch.", ""), "fps": fps,
                "depth_model": None if depth_model is None else str(depth_model)}

    # -- plan: skip what is finished, spread the rest over the groups -------------------------------
    is_main = state is None or state.rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    _barrier()
    runner = _Runner(loaded, out_dir, settings=settings, depth_model=depth_model, fps=fps,
                     show_progress=progress and is_main, device=dev)
    finished = set() if force else {j.output for j in job_list
                                    if _is_finished(j, runner.records.get(j.output), out_dir, runner.fingerprint(j))}
    _barrier()  # every rank has read the records before any is rewritten
    pending = [j for j in job_list if j.output not in finished]
    if finished:
        logger.info("batch: %d of %d jobs already finished, skipped", len(finished), len(job_list))
    mine = pending[state.data_parallel_rank::state.data_parallel_size] if state is not None else pending
    if state is not None and state.data_parallel_size > 1:
        logger.info("batch: rank %d (group %d of %d) runs %d of %d pending jobs", state.rank,
                    state.data_parallel_rank, state.data_parallel_size, len(mine), len(pending))

    # -- run ----------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    from .pipeline import BatchedGeneration  # lazy: diffusers

    by_name = {j.output: j for j in mine}
    bar = tqdm(total=len(mine), desc="batch", unit="job", disable=True if not (progress and is_main) else None)
    generator = BatchedGeneration(loaded, batch_size, catch_errors=True)

    last_manifest = [time.monotonic()]

    def handle(results: Sequence[Any]) -> None:
        for result in results:
            job = by_name[result.key]
            if result.ok:
                runner.finished(job, result)
            else:
                runner.failed(job, result.error)
            bar.update(1)
        if is_main and results and time.monotonic() - last_manifest[0] > _MANIFEST_INTERVAL_S:
            _write_manifest(out_dir, job_list, settings, source)  # a view of the progress; records are the truth
            last_manifest[0] = time.monotonic()

    try:
        for job in mine:
            try:
                kwargs = runner.prepare(job)
            except Exception as exc:  # noqa: BLE001 - the job fails, the batch goes on
                runner.failed(job, exc)
                bar.update(1)
                continue
            handle(generator.submit(job.output, **kwargs))
        handle(generator.flush())
    finally:
        bar.close()
    _barrier()

    # -- report (the same on every rank) -------------------------------------------------------
    manifest = _write_manifest(out_dir, job_list, settings, source) if is_main else out_dir / MANIFEST_NAME
    _barrier()
    records = _read_records(out_dir)
    report = BatchReport(skipped=[j.output for j in job_list if j.output in finished], manifest=manifest)
    for job in pending:
        rec = records.get(job.output, {})
        if rec.get("status") == "done" and rec.get("fingerprint") == runner.fingerprint(job):
            report.done.append(job.output)
        else:
            report.failed[job.output] = str(rec.get("error", "no record written (the job did not finish)"))
    logger.info("batch: %d done, %d skipped, %d failed -> %s", len(report.done), len(report.skipped),
                len(report.failed), out_dir)
    return report
