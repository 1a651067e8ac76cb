"""Run the parts of the device check, each in a fresh process with its own time budget.

A GPU session is short (15 minutes of device time, one command of at most 10), so one run must
yield everything it can: a part that raises, runs out of memory, hangs or crashes the
interpreter must cost only itself. Hence a process per part: the parent (this module, no torch
import) starts ``device_check.py --child PART``, waits at most the part's budget, and on the
deadline sends SIGTERM to the part's process group (the part's handler records ``timeout`` and
stops its own subprocesses) and SIGKILL ten seconds later. A fresh process also gives every part
a fresh CUDA context and allocator, so one part's cached blocks cannot change another's figures.

The child records as it goes (:class:`Recorder`): every item's status and figures are written
to its result file at once, so a part killed at its deadline still hands back what it measured.
Statuses: ``ok``, ``skipped`` (with the reason: what this machine lacks), ``failed`` (the
exception's one line), ``oom``, ``timeout``, ``not_run`` (the total budget was spent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUSES = ("ok", "skipped", "failed", "oom", "timeout", "not_run")
BAD = frozenset({"failed", "oom", "timeout"})
_KILL_GRACE_S = 10.0  # after SIGTERM, before SIGKILL: time for a part to stop its own children
INJECTIONS = ("raise", "oom", "hang")


class Skip(Exception):  # noqa: N818 - an outcome, not an error
    """Raised in a part or an item that cannot run here; the message is the reason."""


class PartTimeout(BaseException):
    """Raised in a part's process by SIGTERM (its deadline). A BaseException so that the
    ``except Exception`` of an item does not swallow it; items record it and re-raise."""


@dataclass(frozen=True, kw_only=True)
class PartSpec:
    """One part: its name (``--only``), title (the markdown), module (``devcheck.<module>``,
    with ``run(ctx, rec)``) and budgets in seconds on the GPU and in the dry run."""

    name: str
    title: str
    module: str
    budget_s: float
    dry_budget_s: float
    options: dict[str, Any] = field(default_factory=dict)


def stamp(t0: float) -> str:
    """``07:21:05 +12.3s``: wall clock and seconds since the check started."""
    return f"{datetime.now().strftime('%H:%M:%S')} +{time.time() - t0:6.1f}s"


@dataclass(frozen=True, kw_only=True)
class PartContext:
    """What a part gets: its mode, folders, deadline and the records of the parts before it."""

    name: str
    dry_run: bool
    device: str  # cuda | cpu
    work: Path  # scratch space shared by the parts (generated images, checkpoints)
    out: Path  # the --out folder (the JSON, the markdown, the search's SQLite)
    script: str  # device_check.py (parts that start fresh processes run it again)
    t0: float  # time.time() when the check started
    deadline: float  # time.time() by which this part must have ended
    previous: dict[str, Any]
    options: dict[str, Any]

    def left(self) -> float:
        """Seconds until this part's deadline."""
        return self.deadline - time.time()

    def log(self, message: str) -> None:
        print(f"{stamp(self.t0)} {self.name}: {message}", flush=True)

    def earlier(self, part: str, key: str) -> Any:
        """A result of an earlier part, or None when it did not produce it."""
        return self.previous.get(part, {}).get("results", {}).get(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dry_run": self.dry_run,
            "device": self.device,
            "work": str(self.work),
            "out": str(self.out),
            "script": self.script,
            "t0": self.t0,
            "deadline": self.deadline,
            "previous": self.previous,
            "options": self.options,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartContext:
        return cls(
            name=data["name"],
            dry_run=data["dry_run"],
            device=data["device"],
            work=Path(data["work"]),
            out=Path(data["out"]),
            script=data["script"],
            t0=data["t0"],
            deadline=data["deadline"],
            previous=data["previous"],
            options=data["options"],
        )


def write_json(path: Path, data: Any) -> None:
    """Atomically: a reader (the parent, a person) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def is_oom(exc: BaseException) -> bool:
    """CUDA or CPU out-of-memory, without importing torch here (the parent has none)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "out of memory" in text.lower() and isinstance(exc, RuntimeError | MemoryError)


class Recorder:
    """A part's record, rewritten to ``path`` after every change."""

    def __init__(self, path: Path, ctx: PartContext) -> None:
        self.path = path
        self.ctx = ctx
        self.data: dict[str, Any] = {
            "status": "running",
            "reason": None,
            "items": {},
            "results": {},
        }
        self.flush()

    def flush(self) -> None:
        write_json(self.path, self.data)

    def put(self, key: str, value: Any) -> None:
        """A part-level result (what later parts and the markdown read)."""
        self.data["results"][key] = value
        self.flush()

    def skip(self, name: str, reason: str) -> None:
        self.data["items"][name] = {"status": "skipped", "reason": reason}
        self.ctx.log(f"{name}: skipped ({reason})")
        self.flush()

    @contextmanager
    def item(self, name: str) -> Iterator[dict[str, Any]]:
        """Run one item: its figures go into the yielded dict; an exception ends the item (not
        the part), recorded with its one-line reason; ``Skip`` records the reason as skipped."""
        entry: dict[str, Any] = {"status": "running"}
        self.data["items"][name] = entry
        self.flush()
        start = time.perf_counter()
        self.ctx.log(f"{name} ...")
        try:
            yield entry
            entry["status"] = "ok"
        except Skip as exc:
            entry.update(status="skipped", reason=str(exc))
        except PartTimeout:
            entry.update(status="timeout", reason="the part's time budget ended during it")
            raise
        except Exception as exc:  # noqa: BLE001 - the item's failure is its result
            entry.update(status="oom" if is_oom(exc) else "failed", reason=one_line(exc))
            entry["traceback"] = traceback.format_exc().splitlines()[-12:]
            traceback.print_exc()
        finally:
            entry["wall_s"] = round(time.perf_counter() - start, 2)
            note = f" ({entry.get('reason')})" if entry.get("reason") else ""
            self.ctx.log(f"{name}: {entry['status']} in {entry['wall_s']:.1f} s{note}")
            self.flush()


# --------------------------------------------------------------------------- the child side


def child_main(
    spec: PartSpec, ctx: PartContext, result: Path, run: Callable[[PartContext, Recorder], None]
) -> int:
    """Run one part in this process (``device_check.py --child``); the exit status is 0 unless
    the part failed outside its items."""

    def on_term(signum: int, frame: object) -> None:
        raise PartTimeout

    signal.signal(signal.SIGTERM, on_term)
    rec = Recorder(result, ctx)
    data = rec.data
    try:
        _inject(ctx.options.get("inject"))
        run(ctx, rec)
        bad = {k: v for k, v in data["items"].items() if v.get("status") in BAD}
        if bad:
            first = next(iter(bad))
            data["status"] = "failed"
            data["reason"] = (
                f"{len(bad)} of {len(data['items'])} items did not finish: {first}: "
                + (str(bad[first].get("reason") or bad[first]["status"]))
            )
        else:
            data["status"] = "ok"
    except Skip as exc:
        data.update(status="skipped", reason=str(exc))
    except PartTimeout:
        data.update(status="timeout", reason=f"stopped at its deadline ({spec.name})")
    except Exception as exc:  # noqa: BLE001 - recorded; the parent goes on to the next part
        data.update(status="oom" if is_oom(exc) else "failed", reason=one_line(exc))
        data["traceback"] = traceback.format_exc().splitlines()[-15:]
        traceback.print_exc()
    finally:
        rec.flush()
    return 0 if data["status"] in ("ok", "skipped") else 1


def _inject(how: str | None) -> None:
    """``--inject PART=raise|oom|hang``: make a part fail in a chosen way at its start, to see
    that the check records it and goes on (the CI test does)."""
    if how is None:
        return
    if how == "raise":
        raise RuntimeError("injected failure (--inject)")
    if how == "oom":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory (injected by --inject)")
    if how == "hang":
        threading.Event().wait()  # until the deadline's SIGTERM raises PartTimeout
    raise ValueError(f"--inject: unknown kind {how!r}")


# -------------------------------------------------------------------------- the parent side


@dataclass(kw_only=True)
class Plan:
    """What the parent runs: the parts, their budgets, the folders and the overall deadline."""

    parts: list[PartSpec]
    budgets: dict[str, float]
    dry_run: bool
    device: str
    out: Path
    work: Path
    script: str
    total_s: float
    inject: dict[str, str]
    t0: float = field(default_factory=time.time)


def run_parts(
    plan: Plan,
    *,
    on_update: Callable[[dict[str, Any]], None],
    stop: Callable[[str, dict[str, Any]], str | None] | None = None,
) -> dict[str, Any]:
    """Run every part of ``plan`` in order; ``on_update(report)`` after each (the files are
    rewritten then, so a run killed from outside leaves what it had). ``stop(name, record)``,
    after each part, may return a reason to run no further part (``report["stopped"]``).
    Returns the report."""
    report: dict[str, Any] = {
        "schema": 1,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "dry_run": plan.dry_run,
        "device": plan.device,
        "total_budget_s": plan.total_s,
        "command": [Path(plan.script).name, *sys.argv[1:]],
        "parts": {},
    }
    end = plan.t0 + plan.total_s
    for spec in plan.parts:
        record: dict[str, Any] = {"title": spec.title}
        report["parts"][spec.name] = record
        left = end - time.time()
        if report.get("stopped"):
            record.update(status="not_run", reason=report["stopped"])
            continue
        if left < 5:
            record.update(status="not_run", reason="the total time budget was spent before it")
            print(f"{stamp(plan.t0)} {spec.name}: not run (total budget spent)", flush=True)
            on_update(report)
            continue
        budget = min(plan.budgets[spec.name], left)
        record["budget_s"] = round(budget, 1)
        print(f"{stamp(plan.t0)} {spec.name}: start, budget {budget:.0f} s", flush=True)
        previous = {k: v for k, v in report["parts"].items() if k != spec.name}
        ctx = PartContext(
            name=spec.name,
            dry_run=plan.dry_run,
            device=plan.device,
            work=plan.work,
            out=plan.out,
            script=plan.script,
            t0=plan.t0,
            deadline=time.time() + budget - 2,
            previous=previous,
            options={**spec.options, "inject": plan.inject.get(spec.name)},
        )
        record.update(_run_child(spec, ctx, plan, budget))
        print(
            f"{stamp(plan.t0)} {spec.name}: {record['status']} in {record['wall_s']:.1f} s"
            + (f" ({record['reason']})" if record.get("reason") else ""),
            flush=True,
        )
        reason = stop(spec.name, record) if stop is not None else None
        if reason:
            report["stopped"] = reason
        on_update(report)
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["wall_s"] = round(time.time() - plan.t0, 1)
    on_update(report)
    return report


def _run_child(spec: PartSpec, ctx: PartContext, plan: Plan, budget: float) -> dict[str, Any]:
    folder = plan.work / "parts"
    folder.mkdir(parents=True, exist_ok=True)
    context_file = folder / f"{spec.name}.context.json"
    result_file = folder / f"{spec.name}.result.json"
    result_file.unlink(missing_ok=True)
    write_json(context_file, ctx.to_json())
    cmd = [
        sys.executable,
        plan.script,
        "--child",
        spec.name,
        "--context",
        str(context_file),
        "--result",
        str(result_file),
    ]
    start = time.perf_counter()
    # A session of its own: the deadline's signals reach the part and everything it started
    # (loader processes, latency figures) and nothing else.
    proc = subprocess.Popen(cmd, start_new_session=True)
    timed_out = False
    try:
        code = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        timed_out = True
        code = _stop(proc)
    _reap_group(proc.pid)
    wall = time.perf_counter() - start
    try:
        record: dict[str, Any] = json.loads(result_file.read_text())
    except (OSError, ValueError):
        record = {"status": "failed", "items": {}, "results": {}}
    if timed_out:
        record["status"] = "timeout"
        record["reason"] = f"ran past its budget of {budget:.0f} s"
    elif record.get("status") in (None, "running"):
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        record.update(status="failed", reason=f"the part's process ended without a record ({how})")
    for entry in record.get("items", {}).values():
        if entry.get("status") == "running":
            entry.update(status="timeout" if timed_out else "failed", reason="did not finish")
    record["exit_code"] = code
    record["wall_s"] = round(wall, 1)
    return record


def _reap_group(pgid: int) -> None:
    """Whatever the part left behind in its group (a loader process) goes with it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the part's process group, SIGKILL after the grace period."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()
