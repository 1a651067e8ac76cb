"""Part ``machine``: what ran the check (GPU, driver, CPUs, packages), the GPU's dense bf16 peak
from its datasheet, and a plain matrix product's rate as the ceiling this machine reaches.

Achieved training TFLOP/s are reported as a fraction of the datasheet peak; a GPU missing from
:data:`PEAKS` gets no fraction rather than a guessed one.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcheck.runner import PartContext, Recorder


@dataclass(frozen=True)
class Peak:
    """Dense (no 2:4 sparsity) bf16 tensor-core TFLOP/s of GPUs whose name matches ``pattern``
    (``torch.cuda.get_device_name``, matched whole)."""

    pattern: str
    tflops: float
    source: str


# NVIDIA's datasheets give bf16 "with sparsity"; the dense figure is half of it.
PEAKS: tuple[Peak, ...] = (
    Peak(
        r"NVIDIA H200",  # the SXM part; the PCIe "H200 NVL" is slower and not listed
        989.0,
        "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: BFLOAT16 Tensor Core 1,979 TFLOPS "
        "with sparsity",
    ),
    Peak(
        r"NVIDIA H100 80GB HBM3",
        989.0,
        "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: BFLOAT16 Tensor Core 1,979 TFLOPS "
        "with sparsity",
    ),
    Peak(
        r"NVIDIA H100 PCIe",
        756.0,
        "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe: BFLOAT16 Tensor Core 1,513 TFLOPS "
        "with sparsity",
    ),
    Peak(
        r"NVIDIA A100[- ].*",
        312.0,
        "NVIDIA A100 Tensor Core GPU datasheet: BFLOAT16 Tensor Core 312 TFLOPS (624 with "
        "sparsity)",
    ),
)


def dense_bf16_peak(gpu_name: str) -> Peak | None:
    """The datasheet peak of ``gpu_name``, or None for a GPU not in :data:`PEAKS`."""
    for peak in PEAKS:
        if re.fullmatch(peak.pattern, gpu_name.strip()):
            return peak
    return None


_PACKAGES = ("torch", "torchvision", "timm", "optuna", "sqlalchemy", "alembic", "typer", "pillow")


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _nvidia_smi() -> str | None:
    query = "name,driver_version,clocks.max.sm,power.limit"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def run(ctx: PartContext, rec: Recorder) -> None:
    import torch

    from rs_search.latency.profiles import cpu_model

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "packages": _versions(),
        "rs_search_commit": _git_commit(),
        "cpu": cpu_model(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        peak = dense_bf16_peak(props.name)
        info.update(
            gpu=props.name,
            gpus=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
            nvidia_smi=_nvidia_smi(),
            peak_bf16_tflops=peak.tflops if peak else None,
            peak_source=peak.source if peak else "not in the peak table: fractions omitted",
        )
    rec.put("machine", info)
    ctx.log(
        f"{info.get('gpu', 'no GPU')}; {info['cpus']} x {info['cpu']}; torch "
        f"{info['packages']['torch']} (CUDA {info['torch_cuda']})"
    )
    if ctx.device == "cuda" and not torch.cuda.is_available():
        return  # the parent stops here with one line: a GPU run needs a GPU
    with rec.item("matmul") as item:
        item.update(_matmul_rate(torch.device(ctx.device)))
        rec.put("matmul_tflops", item["tflops"])


def _matmul_rate(device: Any) -> dict[str, Any]:
    """A square matrix product's rate: bf16 8192^3 on CUDA (a tensor-core ceiling to set the
    training figures against), fp32 256^3 on the CPU (the code path only)."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (256, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    seconds = (time.perf_counter() - start) / reps
    return {
        "n": n,
        "dtype": str(dtype),
        "ms": round(1e3 * seconds, 3),
        "tflops": 2 * n**3 / seconds / 1e12,
    }
