"""The figures: percentiles, a run's summary, saturation, the comparison, the printed tables."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from orchcost.common import ENGINES, Config

# Project heuristic: a worker count whose successor raises the rate by less than this is where
# the rate stopped rising (run-to-run noise on a shared machine is several percent).
SATURATION_GAIN = 1.10
# The must-show of issue 11: at the largest worker count on PostgreSQL.
MUST_RATIO = 0.8
MUST_P99_MS = 100.0


# -- figures ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarise(
    config: Config,
    *,
    workers: list[dict[str, Any]],
    trials: list[dict[str, Any]],
    go_wall: float,
    elapsed: float,
    cpu: dict[str, float],
) -> dict[str, Any]:
    errors = [w["error"] for w in workers if w.get("error")]
    overhead, answer, sql_n, sql_ms, sampler_ms, cpu_ms = [], [], [], [], [], []
    for worker in workers:
        rows = worker["rows"]
        for a, b in zip(rows, rows[1:], strict=False):
            cycle = b["t"] - a["t"]
            overhead.append(1000 * (cycle - a["answer_s"]))
            answer.append(1000 * a["answer_s"])
            sql_n.append(b["sql_n"] - a["sql_n"])
            sql_ms.append(1000 * (b["sql_s"] - a["sql_s"]))
            sampler_ms.append(1000 * (b["sampler_s"] - a["sampler_s"]))
            cpu_ms.append(1000 * (b["cpu"] - a["cpu"]))
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED", "FAIL")]
    ends = [t["complete"] for t in finished if t["complete"] is not None]
    makespan = max(ends) - go_wall if ends else math.nan
    states: dict[str, int] = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
    workers_cpu = sum(float(w.get("cpu_s", 0.0)) for w in workers)
    cores = os.cpu_count() or 1
    return {
        "engine": config.engine,
        "backend": config.backend,
        "workers": config.workers,
        "trials_budget": config.trials,
        "trials_finished": len(finished),
        "states": states,
        "errors": errors,
        "makespan_s": makespan,
        "trials_per_s": len(finished) / makespan if makespan and makespan > 0 else math.nan,
        "overhead_ms": {
            "p50": percentile(overhead, 50),
            "p99": percentile(overhead, 99),
            "mean": sum(overhead) / len(overhead) if overhead else math.nan,
            "n": len(overhead),
        },
        "answer_ms_p50": percentile(answer, 50),
        # medians per trial of what the overhead is made of (median of each, not a sum)
        "per_trial_p50": {
            "sql_statements": percentile([float(v) for v in sql_n], 50),
            "sql_ms": percentile(sql_ms, 50),
            "sampler_ms": percentile(sampler_ms, 50),
            "cpu_ms": percentile(cpu_ms, 50),
        },
        "cpu": {
            "cores": cores,
            "elapsed_s": elapsed,
            "machine_busy": cpu["busy"] / (cores * elapsed) if elapsed > 0 else math.nan,
            "workers_share": workers_cpu / (cores * elapsed) if elapsed > 0 else math.nan,
            "postgres_share": cpu["postgres"] / (cores * elapsed) if elapsed > 0 else math.nan,
            "others_share": max(0.0, cpu["busy"] - workers_cpu - cpu["postgres"])
            / (cores * elapsed)
            if elapsed > 0
            else math.nan,
        },
    }


def saturation(rates: dict[int, float]) -> int | None:
    """The first worker count whose successor raises the rate by less than ``SATURATION_GAIN``;
    None when the rate still rises at the largest count measured."""
    counts = sorted(rates)
    for here, after in zip(counts, counts[1:], strict=False):
        if not rates[after] >= SATURATION_GAIN * rates[here]:
            return here
    return None


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per storage: rs-search / plain Optuna trial-rate ratios, saturation per engine, and the
    must-show check at the largest worker count."""
    out: dict[str, Any] = {}
    for backend in sorted({r["backend"] for r in runs}):
        mine = [r for r in runs if r["backend"] == backend]
        rates = {
            engine: {r["workers"]: r["trials_per_s"] for r in mine if r["engine"] == engine}
            for engine in ENGINES
        }
        counts = sorted(set(rates["optuna"]) & set(rates["rs-search"]))
        ratios = {str(n): rates["rs-search"][n] / rates["optuna"][n] for n in counts}
        largest = counts[-1] if counts else None
        rs_top = next(
            (r for r in mine if r["engine"] == "rs-search" and r["workers"] == largest), None
        )
        p99 = rs_top["overhead_ms"]["p99"] if rs_top else math.nan
        ratio = ratios.get(str(largest), math.nan)
        out[backend] = {
            "ratio": ratios,
            "saturation": {engine: saturation(rates[engine]) for engine in ENGINES},
            "peak": {
                engine: max(rates[engine].items(), key=lambda kv: kv[1])[0]
                for engine in ENGINES
                if rates[engine]
            },
            "at_largest": {
                "workers": largest,
                "ratio": ratio,
                "rs_p99_ms": p99,
                "met": bool(ratio >= MUST_RATIO and p99 < MUST_P99_MS),
            },
        }
    return out


def calls_text(profiles: list[dict[str, Any]]) -> str:
    lines = []
    for p in profiles:
        lines.append(
            f"{p['engine']} on {p['backend']}, 1 worker, {p['trials']} trials: "
            f"{p['wall_ms_per_trial']:.0f} ms/trial wall, client CPU "
            f"{p['client_cpu_ms_per_trial']:.0f} ms, server CPU "
            f"{p['server_cpu_ms_per_trial']:.0f} ms, {p['sql_statements_per_trial']:.0f} SQL "
            f"statements ({p['sql_ms_per_trial']:.0f} ms), "
            f"sampler {p['sampler_ms_per_trial']:.0f} ms"
        )
        for name, c in p["calls"].items():
            lines.append(
                f"    {name:<28} {c['per_trial']:5.1f} calls/trial "
                f"{c['ms_per_trial']:7.1f} ms/trial"
            )
    return "\n".join(lines)


def table_text(runs: list[dict[str, Any]], comparison: dict[str, Any]) -> str:
    head = (
        f"{'storage':<10} {'workers':>7} {'engine':<9} {'trials':>6} {'trials/s':>8} "
        f"{'ratio':>5} {'p50 ms':>7} {'p99 ms':>7} {'SQL/trial':>9} {'SQL ms':>7} "
        f"{'TPE ms':>7} {'CPU ms':>7} {'busy':>5} {'ours':>5} {'pg':>5} {'others':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        ratio = comparison[r["backend"]]["ratio"].get(str(r["workers"]))
        shown = f"{ratio:.2f}" if r["engine"] == "rs-search" and ratio is not None else ""
        p, c = r["per_trial_p50"], r["cpu"]
        lines.append(
            f"{r['backend']:<10} {r['workers']:>7} {r['engine']:<9} {r['trials_finished']:>6} "
            f"{r['trials_per_s']:>8.1f} {shown:>5} {r['overhead_ms']['p50']:>7.1f} "
            f"{r['overhead_ms']['p99']:>7.1f} {p['sql_statements']:>9.0f} {p['sql_ms']:>7.1f} "
            f"{p['sampler_ms']:>7.1f} {p['cpu_ms']:>7.1f} {c['machine_busy']:>5.0%} "
            f"{c['workers_share']:>5.0%} {c['postgres_share']:>5.0%} {c['others_share']:>6.0%}"
        )
    lines.append("")
    for backend, summary in comparison.items():
        sat = summary["saturation"]
        words = ", ".join(
            f"{e} {'still rising at ' + str(max(summary['ratio'], key=int, default='?')) if sat[e] is None else 'stops rising after ' + str(sat[e])} workers"  # noqa: E501
            for e in ENGINES
        )
        top = summary["at_largest"]
        lines.append(
            f"{backend}: trial rate {words}. At {top['workers']} workers: rs-search "
            f"{top['ratio']:.2f}x plain Optuna's rate, p99 overhead {top['rs_p99_ms']:.0f} ms "
            f"(must-show >= {MUST_RATIO}x and < {MUST_P99_MS:.0f} ms: "
            f"{'met' if top['met'] else 'NOT met'})"
        )
    lines.append(
        "busy: the machine's CPUs in use during the run; ours: the worker processes; pg: every "
        "PostgreSQL server process; others: everything else on the machine"
    )
    return "\n".join(lines)
