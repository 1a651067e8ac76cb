"""Part ``latency``: figures by the protocol the search uses, each in a fresh process, and the
CUDA allocator's peak memory against the latency module's memory figure.

Figures: inference and a training step (forward, backward, SGD step: the paper's speed table)
at each of ``Sizes.latency_batches``, bf16, channels_last, ResNet-RS-50 at 160 px. Each figure
is taken ``latency_repeats`` times, round robin (a deadline leaves every figure measured at
least once before any is repeated), each time by ``device_check.py --latency-figure`` in a new
process: allocator fragmentation, cuDNN's autotuning cache and Dynamo's state from one figure
cannot change the next, as in a latency worker measuring one architecture after another. The
protocol itself (warm-up with cuDNN autotuning, synchronised timing, repetitions until a quiet
window agrees) is ``rs_search.latency.measure``'s, called in :func:`measure_figure`, the one
place that knows its signature (the latency module is being refactored: one line to change).

Memory: after the timing, the same process builds the model again and runs the pass twice with
the allocator's peak counter reset before the second (``torch.cuda.max_memory_allocated``:
weights, input, activations, gradients and momentum buffers as the pass holds them), to set
against the latency module's figure for the same model and batch.
"""

from __future__ import annotations

import inspect
import json
import statistics
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from devcheck.runner import PartContext, Recorder, Skip, write_json
from devcheck.sizes import sizes

MODES = ("inference", "train_step")


def profile_dict(mode: str, batch: int, device: str) -> dict[str, Any]:
    """The hardware profile of one figure (bf16 on CUDA as the paper measured; fp32 on CPU)."""
    cuda = device == "cuda"
    data: dict[str, Any] = {
        "name": f"devcheck-{device}-{'bf16' if cuda else 'fp32'}-{mode}-b{batch}",
        "device": device,
        "batch_size": batch,
        "dtype": "bf16" if cuda else "fp32",
        "channels_last": True,
    }
    if not cuda:
        data["threads"] = 1
    if mode != "inference":
        data["mode"] = mode
    return data


def measure_figure(arch: Any, profile: Any, device: str, protocol: Any, **extra: Any) -> Any:
    """The one call into ``rs_search.latency.measure.measure``: ``device`` is passed when the
    function takes it (the refactored module does), the protocol only when it is not the
    default."""
    from rs_search.latency import measure as latency_measure

    kwargs: dict[str, Any] = dict(extra)
    if protocol is not None:
        kwargs["protocol"] = protocol
    if "device" in inspect.signature(latency_measure.measure).parameters:
        kwargs["device"] = device
    return latency_measure.measure(arch, profile, **kwargs)


def _protocol(knobs: dict[str, Any] | None) -> Any:
    if knobs is None:
        return None
    from rs_search.latency import measure as latency_measure

    base = latency_measure.DEFAULT_PROTOCOL
    known = {f.name for f in fields(base)}
    return replace(base, **{k: v for k, v in knobs.items() if k in known})


def figure_main(spec_path: Path) -> int:
    """``device_check.py --latency-figure SPEC``: one figure in this (fresh) process; the result
    goes to ``spec["result"]``."""
    spec = json.loads(spec_path.read_text())
    result_path = Path(spec["result"])
    try:
        out = _figure(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the part, which records it
        from devcheck.runner import one_line

        out = {"error": one_line(exc)}
    write_json(result_path, out)
    return 0


def _figure(spec: dict[str, Any]) -> dict[str, Any]:
    from rs_search.errors import SpecError
    from rs_search.latency.profiles import HardwareProfile
    from rs_search.specs import ArchSpec

    arch = ArchSpec.from_dict(spec["arch"])
    mode, batch, device = spec["mode"], spec["batch"], spec["device"]
    try:
        profile = HardwareProfile.from_dict(profile_dict(mode, batch, device))
    except SpecError as exc:
        if mode != "inference" and "mode" in str(exc):
            return {"skip": f"this rs_search's latency profiles have no training-step mode ({exc})"}
        raise
    train_memory = mode == "inference" and batch == max(spec["batches"])
    start = time.perf_counter()
    extra = {"train_step_memory": True, "recipe_batch_size": batch} if train_memory else {}
    result = measure_figure(arch, profile, device, _protocol(spec["protocol"]), **extra)
    out: dict[str, Any] = {
        key: getattr(result, key, None)
        for key in (
            "status",
            "error",
            "device_name",
            "median_ms",
            "p90_ms",
            "spread",
            "repeats",
            "iterations",
            "stable",
            "contention",
            "peak_memory_mb",
            "train_peak_memory_mb",
            "batch_size",
        )
    }
    out["measure_s"] = round(time.perf_counter() - start, 2)
    if device == "cuda" and result.status == "ok":
        out["allocator_peak_mb"] = allocator_peak_mb(arch, profile, train=mode != "inference")
        if train_memory:
            out["allocator_train_peak_mb"] = allocator_peak_mb(arch, profile, train=True)
    return out


def allocator_peak_mb(arch: Any, profile: Any, *, train: bool) -> float:
    """``torch.cuda.max_memory_allocated`` over the second of two passes (inference: eval mode in
    the profile's dtype; training: fp32 weights, autocast, SGD with momentum, as a trial trains),
    counted from an empty allocator: everything the pass needs resident."""
    import gc

    import torch

    from rs_search.models import build_model

    device = torch.device("cuda", torch.cuda.current_device())
    gc.collect()
    torch.cuda.empty_cache()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[profile.dtype]
    fmt = torch.channels_last if profile.channels_last else torch.contiguous_format
    res, batch = arch.resolution, profile.batch_size
    if train:
        model = build_model(arch).train().to(device).to(memory_format=fmt)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        images = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=fmt)
        labels = torch.randint(0, arch.num_classes, (batch,), device=device)

        def one() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()

    else:
        model = build_model(arch).eval().to(device=device, dtype=dtype).to(memory_format=fmt)
        images = torch.randn(batch, 3, res, res, device=device, dtype=dtype)
        images = images.contiguous(memory_format=fmt)

        def one() -> None:
            with torch.inference_mode():
                model(images)

    one()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    one()
    torch.cuda.synchronize(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _run_figure(ctx: PartContext, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    folder = ctx.work / "latency"
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{spec['mode']}-b{spec['batch']}-{spec['repeat']}"
    spec_path = folder / f"{tag}.spec.json"
    result_path = folder / f"{tag}.result.json"
    spec = {**spec, "result": str(result_path)}
    write_json(spec_path, spec)
    cmd = [sys.executable, ctx.script, "--latency-figure", str(spec_path)]
    try:  # same process group as this part: the part's deadline ends it too
        subprocess.run(cmd, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the figure's process ran past {timeout:.0f} s") from None
    try:
        out: dict[str, Any] = json.loads(result_path.read_text())
    except (OSError, ValueError):
        raise RuntimeError("the figure's process ended without a result") from None
    return out


def run(ctx: PartContext, rec: Recorder) -> None:
    sz = sizes(ctx.dry_run)
    arch = sz.latency_arch
    rec.put("arch", arch.to_dict())
    rec.put(
        "protocol", "the search's default" if sz.latency_protocol is None else sz.latency_protocol
    )
    plan = [(mode, batch) for mode in MODES for batch in sz.latency_batches]
    runs = [(rep, mode, batch) for rep in range(sz.latency_repeats) for mode, batch in plan]
    results: dict[str, list[dict[str, Any]]] = {}
    unsupported: dict[str, str] = {}
    durations: list[float] = []
    for rep, mode, batch in runs:
        key = f"{mode}_b{batch}"
        name = f"{key}#{rep + 1}"
        if key in unsupported:
            continue
        estimate = min(sz.figure_timeout_s, 1.3 * max(durations, default=15.0))
        if ctx.left() < estimate + 3:
            rec.skip(name, f"the part's budget ran short ({ctx.left():.0f} s left)")
            continue
        spec = {
            "arch": arch.to_dict(),
            "mode": mode,
            "batch": batch,
            "batches": list(sz.latency_batches),
            "device": ctx.device,
            "protocol": sz.latency_protocol,
            "repeat": rep + 1,
        }
        start = time.perf_counter()
        with rec.item(name) as item:
            out = _run_figure(ctx, spec, timeout=min(sz.figure_timeout_s, ctx.left() - 2))
            item.update(out)
            if "skip" in out:
                unsupported[key] = out["skip"]
                raise Skip(out["skip"])
            if "error" in out and out.get("status") is None:
                raise RuntimeError(out["error"])
            results.setdefault(key, []).append(out)
            rec.put("figures", summarise(results, unsupported))
            if out.get("status") != "ok":
                raise RuntimeError(f"latency status {out.get('status')}: {out.get('error')}")
        durations.append(time.perf_counter() - start)
    rec.put("figures", summarise(results, unsupported))


def summarise(
    results: dict[str, list[dict[str, Any]]], unsupported: dict[str, str]
) -> dict[str, Any]:
    """Per figure: the median over processes, their range and spread, the protocol's own
    spreads, and the memory figures side by side."""
    summary: dict[str, Any] = {}
    for key, outs in results.items():
        ok = [o for o in outs if o.get("status") == "ok" and o.get("median_ms") is not None]
        row: dict[str, Any] = {
            "processes": len(outs),
            "statuses": [o.get("status") for o in outs],
        }
        if ok:
            medians = [float(o["median_ms"]) for o in ok]
            mid = statistics.median(medians)
            row.update(
                median_ms=round(mid, 4),
                min_ms=round(min(medians), 4),
                max_ms=round(max(medians), 4),
                between_processes=round((max(medians) - min(medians)) / mid, 4) if mid else None,
                within_process=[round(float(o.get("spread") or 0.0), 4) for o in ok],
                stable=[bool(o.get("stable")) for o in ok],
            )
            first = ok[0]
            for field in (
                "peak_memory_mb",
                "allocator_peak_mb",
                "train_peak_memory_mb",
                "allocator_train_peak_mb",
            ):
                if first.get(field) is not None:
                    row[field] = first[field]
        summary[key] = row
    for key, reason in unsupported.items():
        summary[key] = {"skipped": reason}
    return summary
