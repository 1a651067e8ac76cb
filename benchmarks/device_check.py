"""One prepared device check: everything a GPU session must show, in one short run (issue 14).

    python benchmarks/device_check.py --out DIR            # a GPU machine: at most ~8 minutes
    python benchmarks/device_check.py --dry-run --out DIR  # a CPU: the same code, tiny sizes

Parts, in order (each in a fresh process with its own time budget, see devcheck/runner.py):
machine (GPU, peak, matmul rate), train_eager (ours vs timm's resnetrs50 images/s at 160 px,
bf16, channels_last, a batch that fills the GPU), datapath (image-folder loader images/s
against the GPU's step rate; a GPU-side decode/augment path when the loader falls short),
latency (batch 1 and 128, inference and training step, a fresh process per figure, and the
CUDA allocator's peak against the latency module's memory figure), checks (sync-free steps,
uint8 normalisation on the device, micro-batching in bf16, the CUDA RNG in a checkpoint),
search (4 trials of rs-search start end to end) and train_compile (as train_eager, compiled).

DIR gets device_check.json (every figure, every part's status and reason) and
device_check.md (a summary), rewritten after each part, so a run stopped from outside still
leaves what it measured; the search part adds search.db (its study) and search.log. A part
that raises, runs out of memory or passes its budget is recorded as such and the next part
runs; the exit status is 0 when every part is ok or skipped (with its reason), 1 otherwise,
2 for bad arguments or a GPU run on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):  # rs_search from this tree, devcheck beside this file
    if path not in sys.path:
        sys.path.insert(0, path)

from devcheck.report import markdown  # noqa: E402
from devcheck.runner import (  # noqa: E402
    INJECTIONS,
    PartContext,
    PartSpec,
    Plan,
    child_main,
    run_parts,
    write_json,
)

PARTS: tuple[PartSpec, ...] = (
    PartSpec(name="machine", title="Machine", module="machine", budget_s=40, dry_budget_s=300),
    PartSpec(
        name="train_eager",
        title="Training images/s, ours vs timm (eager)",
        module="train_rate",
        budget_s=80,
        dry_budget_s=300,
        options={"compiled": False},
    ),
    PartSpec(
        name="datapath",
        title="Data path: image-folder loader images/s vs the GPU's step rate",
        module="datapath",
        budget_s=75,
        dry_budget_s=300,
    ),
    PartSpec(
        name="latency",
        title="Latency and peak memory by the search's protocol, a fresh process per figure",
        module="latency",
        budget_s=110,
        dry_budget_s=400,
    ),
    PartSpec(
        name="checks",
        title="Engine checks: sync-free steps, uint8 on the device, micro-batches, RNG",
        module="engine_checks",
        budget_s=60,
        dry_budget_s=400,
    ),
    PartSpec(
        name="search",
        title="rs-search start: 4 trials end to end",
        module="search_e2e",
        budget_s=80,
        dry_budget_s=400,
    ),
    PartSpec(
        name="train_compile",
        title="Training images/s, ours vs timm (torch.compile)",
        module="train_rate",
        budget_s=200,
        dry_budget_s=300,
        options={"compiled": True},
    ),
)
TOTAL_S = 470.0  # a GPU session's command may run 10 minutes; the device time is 15 in all
DRY_TOTAL_S = 2400.0  # a loaded 2-core CI machine


class UsageError(Exception):
    pass


def _pairs(text: str | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not value:
            raise UsageError(f"{flag} {text!r}: expected NAME=VALUE[,NAME=VALUE...]")
        out[name] = value
    return out


def _names(text: str | None, flag: str) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    known = [p.name for p in PARTS]
    for name in names:
        if name not in known:
            raise UsageError(f"{flag}: unknown part {name!r}; parts: {', '.join(known)}")
    return names


def _plan(args: argparse.Namespace) -> Plan:
    only, skip = _names(args.only, "--only"), _names(args.skip, "--skip")
    parts = [p for p in PARTS if (not only or p.name in only) and p.name not in skip]
    if not parts:
        raise UsageError("no part left to run (--only/--skip)")
    budgets = {p.name: p.dry_budget_s if args.dry_run else p.budget_s for p in parts}
    for name, value in _pairs(args.part_budget, "--part-budget").items():
        _names(name, "--part-budget")
        try:
            budgets[name] = float(value)
        except ValueError:
            raise UsageError(f"--part-budget {name}={value!r}: not a number of seconds") from None
        if budgets[name] <= 0:
            raise UsageError(f"--part-budget {name}={value}: must be > 0")
    inject = _pairs(args.inject, "--inject")
    for name, kind in inject.items():
        _names(name, "--inject")
        if kind not in INJECTIONS:
            raise UsageError(f"--inject {name}={kind!r}: allowed: {', '.join(INJECTIONS)}")
    total = args.total_budget or (DRY_TOTAL_S if args.dry_run else TOTAL_S)
    if total <= 0:
        raise UsageError(f"--total-budget {total}: must be > 0")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="devcheck-"))
    return Plan(
        parts=parts,
        budgets=budgets,
        dry_run=args.dry_run,
        device="cpu" if args.dry_run else "cuda",
        out=out.resolve(),
        work=work,
        script=str(Path(__file__).resolve()),
        total_s=float(total),
        inject=inject,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device_check.py",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="parts: " + ", ".join(f"{p.name} ({p.budget_s:.0f} s)" for p in PARTS),
    )
    parser.add_argument("--out", help="folder for device_check.json and device_check.md")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--only", help="comma-separated parts to run (default: all)")
    parser.add_argument("--skip", help="comma-separated parts to leave out")
    parser.add_argument(
        "--total-budget",
        type=float,
        default=None,
        help=f"seconds for the whole check (default {TOTAL_S:.0f}; dry run {DRY_TOTAL_S:.0f})",
    )
    parser.add_argument("--part-budget", help="NAME=SECONDS[,...]: override a part's budget")
    parser.add_argument(
        "--inject",
        help="NAME=raise|oom|hang[,...]: make a part fail that way (tests the recording)",
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the scratch folder (generated images)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--latency-figure", help=argparse.SUPPRESS)
    return parser


def _child(args: argparse.Namespace) -> int:
    spec = next(p for p in PARTS if p.name == args.child)
    ctx = PartContext.from_json(json.loads(Path(args.context).read_text()))
    module = importlib.import_module(f"devcheck.{spec.module}")
    return child_main(spec, ctx, Path(args.result), module.run)


def _no_cuda(name: str, record: dict[str, Any]) -> str | None:
    """After ``machine`` in a GPU run: a machine without CUDA ends the check (exit 2)."""
    if name != "machine":
        return None
    machine = record.get("results", {}).get("machine", {})
    if machine and not machine.get("cuda_available", False):
        torch_version = machine.get("packages", {}).get("torch", "?")
        return (
            f"no CUDA device is visible to torch {torch_version}; run with --dry-run on a "
            "machine without a GPU"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    if args.latency_figure:
        from devcheck.latency import figure_main

        return figure_main(Path(args.latency_figure))
    if not args.out:
        print("error: --out DIR is required", file=sys.stderr)
        return 2
    try:
        plan = _plan(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Subprocesses (parts, latency figures, rs-search's workers) import this tree's rs_search.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    json_path, md_path = plan.out / "device_check.json", plan.out / "device_check.md"

    def save(report: dict[str, Any]) -> None:
        write_json(json_path, report)
        tmp = md_path.with_name(md_path.name + ".tmp")
        tmp.write_text(markdown(report))
        os.replace(tmp, md_path)

    mode = "dry run on the CPU" if plan.dry_run else "GPU run"
    print(
        f"device check ({mode}): {', '.join(p.name for p in plan.parts)}; budget "
        f"{plan.total_s:.0f} s; writing {json_path} and {md_path.name}",
        flush=True,
    )
    try:
        report = run_parts(plan, on_update=save, stop=None if plan.dry_run else _no_cuda)
    finally:
        if not args.keep_work:
            shutil.rmtree(plan.work, ignore_errors=True)
    stopped = report.get("stopped")
    if stopped:
        print(f"error: {stopped}", file=sys.stderr)
        return 2
    statuses = {name: p.get("status") for name, p in report["parts"].items()}
    print(
        f"done in {report['wall_s']:.0f} s: " + ", ".join(f"{k} {v}" for k, v in statuses.items())
    )
    return 0 if all(s in ("ok", "skipped") for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
