"""The markdown summary of a device check's JSON (torch-free: the parent process writes it after
every part). Every figure is read with ``.get``: a part that failed or ran out of time leaves
holes, and the summary shows what there is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Lines = list[str]


def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> Lines:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return out + [""]


def _machine(part: dict[str, Any]) -> Lines:
    res = part.get("results", {})
    m = res.get("machine", {})
    pk = m.get("packages", {})
    lines = [
        f"- GPU: {m.get('gpu', 'none')} ({_f(m.get('gpu_memory_gib'))} GiB, capability "
        f"{m.get('capability', '-')}, {m.get('gpus', 0)} visible); nvidia-smi: "
        f"{m.get('nvidia_smi') or '-'}",
        f"- CPU: {m.get('cpus', '-')} x {m.get('cpu', '-')}; load average "
        f"{_f(m.get('load_avg'), 2)}",
        f"- torch {pk.get('torch', '-')} (CUDA {m.get('torch_cuda') or '-'}, cuDNN "
        f"{m.get('cudnn') or '-'}), torchvision {pk.get('torchvision', '-')}, timm "
        f"{pk.get('timm', '-')}, optuna {pk.get('optuna', '-')}; Python {m.get('python', '-')}; "
        f"rs_search {m.get('rs_search_commit') or '(no git)'}",
        f"- dense bf16 peak: {_f(m.get('peak_bf16_tflops'), 0, ' TFLOP/s')} "
        f"({m.get('peak_source', '-')})",
        f"- measured matrix product: {_f(res.get('matmul_tflops'), 1, ' TFLOP/s')}",
    ]
    return lines + [""]


def _train(part: dict[str, Any]) -> Lines:
    res = part.get("results", {})
    rates = res.get("rates", {})
    rows = []
    for name in ("ours", "timm"):
        r = rates.get(name)
        if not r:
            continue
        rows.append(
            [
                name,
                _f(r.get("images_per_s")),
                f"{_f(r.get('min'))} .. {_f(r.get('max'))}",
                _f(r.get("tflops"), 1),
                _pct(r.get("fraction_of_peak")),
                _pct(r.get("fraction_of_matmul")),
            ]
        )
    gflop = res.get("train_gflop_per_image", {})
    ours = res.get("models", {}).get("ours", {})
    lines = [
        f"Ours: layout {ours.get('layout', '-')}, width {ours.get('width', '-')}; timm: "
        f"`{res.get('models', {}).get('timm', '-')}`. "
        f"Batch {res.get('batch', '-')} ({res.get('batch_from', '-')}), "
        f"{res.get('resolution', '-')} px, bf16 autocast, channels_last"
        + (
            f", torch.compile backend {res['compile_backend']}"
            if res.get("compile_backend")
            else ""
        )
        + f"; training GFLOP per image: ours {_f(gflop.get('ours'), 2)}, timm "
        f"{_f(gflop.get('timm'), 2)}; memory used {_pct(res.get('memory_used_fraction'))}.",
        "",
    ]
    lines += _table(
        [
            "model",
            "images/s (median)",
            "range over rounds",
            "TFLOP/s",
            "of datasheet peak",
            "of matmul",
        ],
        rows,
    )
    ratio = rates.get("ratio")
    if ratio:
        lines.append(
            f"**ours/timm = {ratio['median']:.3f}** (per-round ratios {ratio['min']:.3f} .. "
            f"{ratio['max']:.3f} over {len(rates.get('rounds', {}).get('ours', []))} rounds)"
        )
        lines.append("")
    for name in ("warmup_ours", "warmup_timm"):
        item = part.get("items", {}).get(name, {})
        if item.get("warmup_s") is not None:
            lines.append(f"- {name}: {item['warmup_s']} s (compilation included when compiled)")
    return lines + [""]


def _datapath(part: dict[str, Any]) -> Lines:
    res = part.get("results", {})
    j = res.get("jpegs", {})
    per = res.get("per_image_ms", {})
    lines = [
        f"{j.get('images', '-')} JPEGs, mean {j.get('mean_width', '-')}x{j.get('mean_height', '-')}"
        f" px, {_f(j.get('mean_kb'))} KB ({_f(j.get('bytes_per_pixel'), 2)} bytes/pixel); crop "
        f"{res.get('crop', '-')} px, RandAugment {res.get('randaug', '-')}, batch "
        f"{res.get('loader_batch', '-')}.",
        f"One process, ms per image: decode {_f(per.get('decode'), 2)}, crop+flip "
        f"{_f(per.get('crop_flip'), 2)}, RandAugment {_f(per.get('randaugment'), 2)}.",
        "",
    ]
    rows = [
        [n, _f(rate), _f(rate / max(int(n), 1) if rate else None)]
        for n, rate in sorted(res.get("loader_images_per_s", {}).items(), key=lambda kv: int(kv[0]))
    ]
    lines += _table(["loader processes", "images/s", "per process"], rows)
    lines.append(
        f"GPU step rate (train_eager, ours, batch {res.get('gpu_step_batch', '-')}): "
        f"{_f(res.get('gpu_step_images_per_s'))} images/s; the loader keeps up: "
        f"{_f(res.get('loader_keeps_up'))}; processes needed at the measured per-process rate: "
        f"{res.get('processes_needed', '-')}."
    )
    gpu = res.get("gpu_path")
    if gpu:
        lines.append(
            f"GPU path (nvJPEG decode + on-device crop/flip/RandAugment): "
            f"{_f(gpu.get('images_per_s'))} images/s; ms per batch: {gpu.get('ms_per_batch')}."
        )
    else:
        item = part.get("items", {}).get("gpu_path", {})
        lines.append(f"GPU path: {item.get('status', 'not run')} ({item.get('reason', '-')}).")
    return lines + [""]


def _latency(part: dict[str, Any]) -> Lines:
    res = part.get("results", {})
    figures = res.get("figures", {})
    rows, memory = [], []
    for key, row in figures.items():
        if "skipped" in row:
            rows.append([key, "-", "skipped: " + row["skipped"], "-", "-", "-"])
            continue
        rows.append(
            [
                key,
                str(row.get("processes", 0)),
                _f(row.get("median_ms"), 3),
                f"{_f(row.get('min_ms'), 3)} .. {_f(row.get('max_ms'), 3)}",
                _pct(row.get("between_processes")),
                ", ".join(_pct(s) for s in row.get("within_process", [])),
            ]
        )
        for ours, theirs, label in (
            ("peak_memory_mb", "allocator_peak_mb", key),
            ("train_peak_memory_mb", "allocator_train_peak_mb", f"{key} (training step)"),
        ):
            if row.get(ours) is not None or row.get(theirs) is not None:
                a, b = row.get(ours), row.get(theirs)
                ratio = _f(a / b, 3) if a and b else "-"
                memory.append([label, _f(a), _f(b), ratio])
    lines = [f"Protocol: {res.get('protocol', '-')}; arch {res.get('arch', {})}.", ""]
    lines += _table(
        ["figure", "processes", "median ms", "range", "between processes", "within each"], rows
    )
    if memory:
        lines.append("Peak memory, MB: the latency module's figure against the CUDA allocator's.")
        lines.append("")
        lines += _table(["figure", "latency module", "allocator", "ratio"], memory)
    return lines


def _checks(part: dict[str, Any]) -> Lines:
    rows = []
    for name, item in part.get("items", {}).items():
        figures = {
            k: v
            for k, v in item.items()
            if k not in ("status", "reason", "wall_s", "traceback", "sites", "expectation_met")
        }
        text = ", ".join(f"{k}={v}" for k, v in figures.items())
        rows.append(
            [
                name,
                item.get("status", "-"),
                _f(item.get("expectation_met")) if "expectation_met" in item else "-",
                item.get("reason") or text[:400],
            ]
        )
    lines = _table(["check", "status", "as expected", "figures / reason"], rows)
    sync = part.get("items", {}).get("sync_debug_epoch", {})
    if sync.get("sites"):
        lines.append("Sync warnings by place (count):")
        lines += [f"- `{site}`: {count}" for site, count in sync["sites"].items()]
        lines.append("")
    return lines


def _search(part: dict[str, Any]) -> Lines:
    res = part.get("results", {})
    lines = [
        f"`{res.get('command', '-')}`",
        "",
        f"Wall time {_f(res.get('wall_s'))} s; trials {res.get('trials', '-')}.",
        "",
    ]
    rows = [
        [
            str(t.get("trial")),
            ", ".join(_f(v, 3) for v in t.get("values") or []),
            str(t.get("params")),
        ]
        for t in res.get("front", [])
    ]
    return lines + _table(["trial", "top-1 %, latency ms", "params"], rows)


RENDER: dict[str, Callable[[dict[str, Any]], Lines]] = {
    "machine": _machine,
    "train_eager": _train,
    "train_compile": _train,
    "datapath": _datapath,
    "latency": _latency,
    "checks": _checks,
    "search": _search,
}


def markdown(report: dict[str, Any]) -> str:
    parts: dict[str, Any] = report.get("parts", {})
    mode = "CPU dry run (tiny sizes: code paths, not figures)" if report.get("dry_run") else "GPU"
    lines = [
        "# Device check",
        "",
        f"{mode}; started {report.get('started', '-')}, wall {_f(report.get('wall_s'))} s of a "
        f"{_f(report.get('total_budget_s'), 0)} s budget; `{' '.join(report.get('command', []))}`",
        "",
    ]
    lines += _table(
        ["part", "status", "wall s", "budget s", "reason"],
        [
            [
                name,
                p.get("status", "-"),
                _f(p.get("wall_s")),
                _f(p.get("budget_s"), 0),
                (p.get("reason") or "")[:300],
            ]
            for name, p in parts.items()
        ],
    )
    for name, part in parts.items():
        lines.append(f"## {part.get('title', name)} (`{name}`: {part.get('status', '-')})")
        lines.append("")
        render = RENDER.get(name)
        try:
            lines += render(part) if render else []
        except Exception as exc:  # noqa: BLE001 - a hole in the figures must not lose the rest
            lines += [f"(summary unavailable: {type(exc).__name__}: {exc})", ""]
        bad = [
            (item_name, item)
            for item_name, item in part.get("items", {}).items()
            if item.get("status") not in ("ok", None)
        ]
        for item_name, item in bad:
            lines.append(f"- {item_name}: {item.get('status')} ({item.get('reason', '-')})")
        if bad:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
