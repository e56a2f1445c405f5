"""The harness of the adversarial probe: run one bad input, classify the answer.

A *case* is a bad input (a call of the Python API, or a command line) and what its answer must
name. Each case runs in this process (fast) under guards:

* **heavy work**: loading a WorldStereo checkpoint, building a depth model, and any forward of a
  model component raise :class:`HeavyWork` (a ``BaseException``, so that no ``except Exception`` of
  the library swallows it); a case that reaches them was not refused *before* heavy work;
* **time**: ``SIGALRM`` after :data:`TIME_LIMIT_S` seconds raises :class:`Hang`;
* **memory**: the peak resident size (``VmHWM``, reset before each case through
  ``/proc/self/clear_refs``) may not grow by more than :data:`MEMORY_LIMIT_BYTES`;
* **file system**: the sandbox folder must be unchanged afterwards (nothing created, nothing lost).

A Python case is answered well when it raises a ``ValueError`` / ``TypeError`` subclass whose
message contains the expected name; a command line when :func:`worldstereo.cli.main` returns 2 with
one ``error: ...`` line (no traceback) naming the expected option or file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: seconds a case may take
TIME_LIMIT_S = 20
#: growth of the peak resident memory a case may cause
MEMORY_LIMIT_BYTES = 768 << 20


class HeavyWork(BaseException):
    """Raised by the guards when a case reaches model loading, depth models or a model forward."""


class Hang(BaseException):
    """Raised by SIGALRM when a case runs longer than :data:`TIME_LIMIT_S`."""


@dataclass
class Case:
    """One bad input.

    Attributes:
        name: what is wrong, for the report.
        run: Python cases: a callable that should raise; CLI cases: None.
        argv: CLI cases: the command line (without the program name).
        expect: substrings of which at least one must appear in the message (the parameter, option,
            field or file the error is about); empty = any message.
        allow: extra exception types accepted besides ValueError / TypeError (e.g. IndexError for
            sequence indexing, FileNotFoundError for a missing path).
        area: the part of the surface, for the per-area summary.
    """

    name: str
    run: Callable[[], Any] | None = None
    argv: Sequence[str] | None = None
    expect: tuple[str, ...] = ()
    allow: tuple[type[BaseException], ...] = ()
    area: str = ""


@dataclass
class Result:
    case: Case
    ok: bool
    why: str = ""
    seconds: float = 0.0
    peak_growth: int = 0


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        n = len(self.results)
        good = n - len(self.failures)
        by_area: dict[str, list[int]] = {}
        for r in self.results:
            tot = by_area.setdefault(r.case.area, [0, 0])
            tot[0] += r.ok
            tot[1] += 1
        lines = [f"{good}/{n} bad inputs answered cleanly ({100.0 * good / max(n, 1):.1f} %)"]
        lines += [f"  {area or '-'}: {a}/{b}" for area, (a, b) in sorted(by_area.items())]
        lines += [f"  FAIL [{r.case.area}] {r.case.name}: {r.why}" for r in self.failures]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- guards
def _vm_hwm() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _vm_rss() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _alarm(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise Hang(f"still running after {TIME_LIMIT_S} s")


def _heavy(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise HeavyWork(what)
    return refuse


@contextlib.contextmanager
def heavy_work_guard(*, allow_model_loading: bool = False) -> Iterator[None]:
    """Make model loading, depth models and model forwards raise :class:`HeavyWork`."""
    import torch

    from worldstereo.depth import moge_backend
    from worldstereo.models import worldstereo as ws

    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, obj.__dict__[name] if name in obj.__dict__ else getattr(obj, name)))
        setattr(obj, name, value)

    import transformers

    # the depth models' weights: their cache / Hub checks run, loading the model is heavy work
    patch(transformers.AutoModelForDepthEstimation, "from_pretrained", classmethod(_heavy("depth model")))
    patch(transformers.AutoImageProcessor, "from_pretrained", classmethod(_heavy("depth model processor")))
    patch(moge_backend.MoGeDepthEstimator, "__init__", _heavy("MoGe depth model"))
    if not allow_model_loading:
        patch(ws.WorldStereo, "from_pretrained", classmethod(_heavy("WorldStereo.from_pretrained")))
    original_call = torch.nn.Module.__call__
    tagged = _TAGGED

    def guarded_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if tagged and id(self) in tagged:
            raise HeavyWork(f"forward of {tagged[id(self)]}")
        return original_call(self, *args, **kwargs)

    torch.nn.Module.__call__ = guarded_call  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.__call__ = original_call  # type: ignore[method-assign]
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


#: id(module) -> name of the model components whose forward counts as heavy work
_TAGGED: dict[int, str] = {}


def tag_heavy_modules(model: Any) -> None:
    """Register the components of a WorldStereo model whose forward is heavy work."""
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        module = getattr(model, name, None)
        if module is not None:
            _TAGGED[id(module)] = name


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with (size, mtime_ns); symlinks are not followed."""
    out: dict[str, tuple[int, int]] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[os.path.relpath(p, folder)] = (st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns)
    return out


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = []
    if added:
        parts.append(f"created {added[:4]}")
    if removed:
        parts.append(f"removed {removed[:4]}")
    if changed:
        parts.append(f"changed {changed[:4]}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------- classifiers
_RAW = (KeyError, IndexError, AttributeError, ZeroDivisionError, RuntimeError, OverflowError, AssertionError,
        RecursionError, UnicodeError, MemoryError, OSError, NotImplementedError, StopIteration)


def _judge_exception(case: Case, exc: BaseException) -> tuple[bool, str]:
    if isinstance(exc, HeavyWork):
        return False, f"reached heavy work ({exc}) before refusing"
    if isinstance(exc, Hang):
        return False, str(exc)
    text = " ".join(str(exc).split())
    if isinstance(exc, (ValueError, TypeError)) or isinstance(exc, case.allow):
        if type(exc).__module__ == "builtins" and isinstance(exc, (ValueError, TypeError)) and \
                not case.expect and not text:
            return False, f"{type(exc).__name__} without a message"
        if case.expect and not any(e.lower() in text.lower() for e in case.expect):
            return False, f"{type(exc).__name__} does not name {case.expect}: {text[:200]!r}"
        return True, ""
    return False, f"raw {type(exc).__name__}: {text[:200]!r}"


def _judge_cli(case: Case, code: int, err: str) -> tuple[bool, str]:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if "Traceback" in err:
        return False, f"traceback (exit {code}): {lines[-1] if lines else ''}"
    if code != 2:
        return False, f"exit {code}: {(lines[-1] if lines else '')[:200]!r}"
    if not lines:
        return False, "exit 2 without a message"
    last = lines[-1]
    if lines[0].startswith("usage:") and not case.expect and not any(ln.startswith("error:") for ln in lines):
        return True, ""  # no command: the help, exit 2
    if not (last.startswith("error:") or ": error: " in last):
        return False, f"unexpected last line {last[:200]!r}"
    msgs = [ln for ln in lines if ln.startswith("error:") or ": error: " in ln]
    if len(msgs) > 1:
        return False, f"{len(msgs)} error lines"
    if case.expect and not any(e.lower() in err.lower() for e in case.expect):
        return False, f"does not name {case.expect}: {last[:200]!r}"
    return True, ""


# ------------------------------------------------------------------------------------- running
def run_case(case: Case, sandbox: Path) -> Result:
    """Run one case under the guards (SIGALRM, memory, file-system snapshot)."""
    before = snapshot(sandbox)
    _reset_hwm()
    base = _vm_rss()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    t0 = time.perf_counter()
    ok, why = True, ""
    try:
        if case.argv is not None:
            ok, why = _run_cli(case)
        else:
            try:
                assert case.run is not None
                case.run()
            except BaseException as exc:  # noqa: BLE001 - classified
                if isinstance(exc, KeyboardInterrupt):
                    raise
                ok, why = _judge_exception(case, exc)
            else:
                ok, why = False, "accepted without an error"
    except Hang as exc:
        ok, why = False, str(exc)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - t0
    growth = max(0, _vm_hwm() - base)
    if ok and growth > MEMORY_LIMIT_BYTES:
        ok, why = False, f"peak memory grew by {growth >> 20} MiB"
    after = snapshot(sandbox)
    changes = _diff(before, after)
    if ok and changes:
        ok, why = False, f"file system changed: {changes}"
    _remove_added(sandbox, before, after)  # a case that wrote must not spoil the next ones
    return Result(case, ok, why, seconds, growth)


def _remove_added(sandbox: Path, before: dict[str, Any], after: dict[str, Any]) -> None:
    import shutil

    for rel in sorted(set(after) - set(before), key=len):
        p = sandbox / rel
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _run_cli(case: Case) -> tuple[bool, str]:
    from worldstereo.cli import main

    logging.getLogger("worldstereo").handlers.clear()
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(["-q", "--threads", "1", *case.argv])
        except HeavyWork as exc:
            return False, f"reached heavy work ({exc}) before refusing"
        except SystemExit as exc:
            return False, f"SystemExit {exc.code!r} escaped main()"
        except Hang:
            raise
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            return False, f"main() raised {type(exc).__name__}: {exc}"
    return _judge_cli(case, code, err.getvalue())


def run_cases(cases: Sequence[Case], sandbox: Path, *, verbose: bool = False) -> Report:
    report = Report()
    for case in cases:
        r = run_case(case, sandbox)
        report.results.append(r)
        if verbose:
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.seconds:6.2f}s [{case.area}] {case.name} {r.why}", file=sys.__stderr__,
                  flush=True)
    return report
