"""Do FLOPs predict latency? Measured latency and memory of 16 ResNet-RS variants on this CPU.

Bello et al. 2021 (scaling rule 3): FLOPs and parameter counts do not predict latency or memory;
measure them on the hardware that will run the model. This measures 16 architectures (published
layouts RS-50..200 at small resolutions, and variants of depth, width, resolution, SE and the
ResNet-D stem) with the one protocol the search uses (``rs_search.latency.measure``), prints a
Markdown table with every figure as a ratio to the reference (RS-50 at 128 px) in the same run,
and the Spearman rank correlation of FLOPs and of parameters with latency.

On a shared machine the protocol flags figures taken while other processes held the CPUs; the
benchmark waits for quiet moments (``--patience``) and re-measures flagged figures (``--retries``)
before reporting, and says how many stayed flagged.

``--memory-check`` also checks the memory method (torch's allocator events, see
``rs_search.latency.memory``) against the peak resident set of a fresh process in which glibc
returns freed memory at once (``MALLOC_MMAP_THRESHOLD_``), for a few of the architectures.

    python benchmarks/latency_flops.py [--profile cpu-fp32-b1-t1] [--retries 2] [--memory-check]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from rs_search.latency.measure import measure
from rs_search.latency.profiles import device_name, get_profile, torch_version
from rs_search.latency.result import LatencyResult
from rs_search.latency.runqueue import contention_probe, others_busy_probe
from rs_search.latency.stats import inversions, spearman
from rs_search.models.complexity import count_flops, count_params
from rs_search.specs import NAMED_LAYOUTS, ArchSpec

QUIET = 0.25  # probe shares (waiting, others' CPU use) above which the machine counts as busy


def _rs(depth: int, resolution: int, **kw: object) -> ArchSpec:
    return ArchSpec(layout=NAMED_LAYOUTS[depth], resolution=resolution, **kw)  # type: ignore[arg-type]


ARCHS: dict[str, ArchSpec] = {
    "RS-50 @128 (reference)": _rs(50, 128),
    "RS-50 @160": _rs(50, 160),
    "RS-101 @128": _rs(101, 128),
    "RS-101 @160": _rs(101, 160),
    "RS-152 @128": _rs(152, 128),
    "RS-200 @128": _rs(200, 128),
    "RS-50 no SE @160": _rs(50, 160, se_ratio=0.0),
    "RS-50 no ResNet-D @160": _rs(50, 160, resnet_d=False),
    "RS-50 w0.25 @224": _rs(50, 224, width=0.25),
    "RS-50 w0.5 @224": _rs(50, 224, width=0.5),
    "RS-50 w2 @96": _rs(50, 96, width=2.0),
    "RS-101 w0.5 @128": _rs(101, 128, width=0.5),
    "[2,2,2,2] @224": ArchSpec(layout=(2, 2, 2, 2), resolution=224),
    "[2,2,2,2] w0.25 @320": ArchSpec(layout=(2, 2, 2, 2), width=0.25, resolution=320),
    "[1,1,1,1] w2 @160": ArchSpec(layout=(1, 1, 1, 1), width=2.0, resolution=160),
    "[1,1,1,1] w0.5 @64": ArchSpec(layout=(1, 1, 1, 1), width=0.5, resolution=64),
}
MEMORY_CHECK = ("RS-50 @128 (reference)", "RS-50 w0.5 @224", "[2,2,2,2] w0.25 @320")


@dataclass
class Row:
    name: str
    arch: ArchSpec
    params: int
    flops: int
    result: LatencyResult


def wait_for_quiet(patience_s: float) -> float:
    """Wait (up to ``patience_s``) until a probe sees the CPUs mostly free; the last share."""
    deadline = time.monotonic() + patience_s
    share = max(others_busy_probe(0.3), contention_probe(0.3))
    while share > QUIET and time.monotonic() < deadline:
        time.sleep(2.0)
        share = max(others_busy_probe(0.3), contention_probe(0.3))
    return share


def better(a: LatencyResult, b: LatencyResult) -> LatencyResult:
    """The more trustworthy of two figures: stable first, then less contention, then the faster
    (other processes only add time: the lower of two contended medians is nearer the truth)."""

    def rank(r: LatencyResult) -> tuple[bool, float, float]:
        busy = max(r.contention or 0.0, r.others_busy or 0.0)
        return (not r.stable, round(busy, 1), r.median_ms or 0.0)

    return a if rank(a) <= rank(b) else b


def memory_probe(arch: ArchSpec, batch: int, threads: int) -> dict[str, float]:
    """In a fresh process with mmap for every allocation above 64 KiB (so a free returns the
    pages at once): the allocator-event activation peak and the peak-RSS growth of the same pass."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    cmd = [
        sys.executable,
        __file__,
        "--_probe",
        json.dumps(arch.to_dict()),
        str(batch),
        str(threads),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _probe(arch_json: str, batch: int, threads: int) -> None:
    import gc

    import torch

    from rs_search.latency.memory import mb, track_peak
    from rs_search.models import build_model

    torch.set_num_threads(threads)
    arch = ArchSpec.from_dict(json.loads(arch_json))
    model = build_model(arch).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, arch.resolution, arch.resolution).contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode():
        model(x)  # libraries loaded, kernels chosen
        gc.collect()
        with track_peak(torch.device("cpu")) as tracker:
            model(x)
        gc.collect()
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak RSS to the current RSS
        model(x)
        peak = _status("VmHWM")
    print(
        json.dumps({"allocator_mb": mb(tracker.extra_bytes or 0), "rss_mb": (peak - before) / 1024})
    )


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-fp32-b1-t1")
    parser.add_argument(
        "--retries", type=int, default=2, help="re-measurements of a flagged figure"
    )
    parser.add_argument(
        "--patience", type=float, default=60.0, help="seconds to wait for quiet CPUs"
    )
    parser.add_argument("--memory-check", action="store_true")
    parser.add_argument("--_probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._probe:
        _probe(args._probe[0], int(args._probe[1]), int(args._probe[2]))
        return

    profile = get_profile(args.profile)
    start = time.monotonic()
    print(
        f"machine: {device_name(profile.device)}, torch {torch_version()}, "
        f"load average {os.getloadavg()[0]:.1f}, probe waited {contention_probe(0.5):.0%}",
        file=sys.stderr,
    )
    rows: list[Row] = []
    for name, arch in ARCHS.items():
        wait_for_quiet(args.patience)
        result = measure(arch, profile, device=profile.device)
        print(f"{name}: {result.summary()} (contention {result.contention:.0%})", file=sys.stderr)
        rows.append(Row(name, arch, count_params(arch), count_flops(arch), result))
    for attempt in range(args.retries):
        flagged = [r for r in rows if r.result.ok and not r.result.stable]
        if not flagged:
            break
        print(f"re-measuring {len(flagged)} flagged figures (round {attempt + 1})", file=sys.stderr)
        for row in flagged:
            wait_for_quiet(args.patience)
            again = measure(row.arch, profile, device=profile.device)
            print(f"  {row.name}: {again.summary()}", file=sys.stderr)
            row.result = better(row.result, again)

    ok = [r for r in rows if r.result.ok]
    ref = rows[0]

    def corrected(r: LatencyResult) -> float:
        """Latency in units of the reference kernel timed beside it: machine-speed drift cancels."""
        return (r.median_ms or 0.0) / (r.reference_ms or 1.0)

    print(
        f"\nProfile `{profile.name}`: {profile.describe()}; "
        f"device **{device_name(profile.device)}**, torch {torch_version()}; "
        f"ms per batch of {profile.batch_size}; ratios (x) against {ref.name}; "
        "'speed-corrected' divides each median by the reference kernel timed beside it.\n"
    )
    print(
        "| architecture | params M | GFLOPs | FLOPs x | latency ms | spread | ref kernel ms | "
        "speed-corrected x | ms/GFLOP | CPU ms | peak MB | note |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in sorted(rows, key=lambda r: r.flops):
        r = row.result
        ms = r.median_ms or 0.0
        note = (
            r.status
            if not r.ok
            else "stable"
            if r.stable
            else f"flagged: {r.contention:.0%} waited, others {r.others_busy or 0:.0%}, "
            f"speed drift {r.reference_spread or 0:.0%}"
        )
        print(
            f"| {row.name} | {row.params / 1e6:.2f} | {row.flops / 1e9:.2f} | "
            f"{row.flops / ref.flops:.2f} | {ms:.1f} | {100 * (r.spread or 0):.1f}% | "
            f"{r.reference_ms or 0:.3f} | {corrected(r) / corrected(ref.result):.2f} | "
            f"{ms / (row.flops / 1e9):.1f} | {r.cpu_ms or 0:.1f} | {r.peak_memory_mb or 0:.0f} | "
            f"{note} |"
        )
    flops = [float(r.flops) for r in ok]
    params = [float(r.params) for r in ok]
    ms_all = [float(r.result.median_ms or 0) for r in ok]
    fixed = [corrected(r.result) for r in ok]
    mem = [float(r.result.peak_memory_mb or 0) for r in ok]
    stable = [r for r in ok if r.result.stable]
    print(
        f"\nSpearman rank correlation over {len(ok)} architectures ({len(stable)} stable): "
        f"FLOPs vs latency **{_rho(flops, ms_all)}** (speed-corrected "
        f"**{_rho(flops, fixed)}**), params vs latency {_rho(params, ms_all)} "
        f"({_rho(params, fixed)}); FLOPs vs peak memory {_rho(flops, mem)}, "
        f"params vs peak memory {_rho(params, mem)}."
    )
    noise = [float((r.result.spread or 0) + (r.result.reference_spread or 0)) for r in ok]
    inv = inversions(flops, fixed, noise)
    print(
        "\nPairs where more FLOPs ran faster (speed-corrected) by more than both figures' spread "
        f"plus speed drift: {len(inv)}"
    )
    for v in inv[:10]:
        a, b = ok[v.more_flops], ok[v.fewer_flops]
        print(
            f"- {a.name} has {v.flops_ratio:.2f}x the FLOPs of {b.name} and takes "
            f"{v.latency_ratio:.2f}x its time"
        )
    if args.memory_check:
        print("\nPeak activation memory of one pass, two methods (fresh process each):\n")
        print("| architecture | allocator events MB | peak-RSS growth MB |")
        print("|---|---:|---:|")
        for name in MEMORY_CHECK:
            probe = memory_probe(ARCHS[name], profile.batch_size, profile.threads or 1)
            print(f"| {name} | {probe['allocator_mb']:.1f} | {probe['rss_mb']:.1f} |")
    print(
        f"\n(benchmark took {time.monotonic() - start:.0f} s; load average at the end "
        f"{os.getloadavg()[0]:.1f})"
    )


def _rho(x: list[float], y: list[float]) -> str:
    value = spearman(x, y)
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
