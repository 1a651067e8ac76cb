"""``rs-search latency`` and ``rs-search latency-worker``: thin wrappers over ``rs_search.latency``.

- ``latency --config FILE`` measures one candidate and prints its figures with the device name;
  with ``--storage`` (or ``$RS_SEARCH_STORAGE``) the figure goes through the latency cache.
- ``latency --space FILE --sample N`` measures N sampled architectures and prints FLOPs, params,
  latency and memory with the Spearman rank correlation between FLOPs and latency.
- ``latency-worker --study NAME --storage URL [--hardware NAME]`` fills the cache for a study.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rs_search.errors import RsSearchError

if TYPE_CHECKING:
    from rs_search.latency.cache import LatencyCache
    from rs_search.latency.profiles import HardwareProfile
    from rs_search.latency.result import LatencyResult
    from rs_search.specs import ArchSpec

DEFAULT_HARDWARE = "cpu-fp32-b1"

HardwareOpt = Annotated[
    str | None,
    typer.Option(
        "--hardware",
        help="Hardware profile name (built-in or the space's target); "
        f"default: the space's target, else {DEFAULT_HARDWARE}.",
    ),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="SQLAlchemy URL of the study database holding the latency cache "
        "(default: $RS_SEARCH_STORAGE).",
    ),
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def latency(
    config: Annotated[
        Path | None, typer.Option("--config", help="Candidate YAML to measure.")
    ] = None,
    space: Annotated[
        Path | None, typer.Option("--space", help="Space YAML to sample from.")
    ] = None,
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, help="Architectures to sample from --space.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed for --sample.")] = 0,
    hardware: HardwareOpt = None,
    storage: StorageOpt = None,
    train_memory: Annotated[
        bool,
        typer.Option(
            "--train-memory",
            help="Also measure one training step's peak memory at the recipe's batch "
            "size (--config).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result(s) as JSON.")] = False,
) -> None:
    """Measure latency and peak memory on this machine's hardware (eval mode, random weights)."""
    if (config is None) == (space is None):
        raise RsSearchError("give exactly one of --config FILE or --space FILE --sample N")
    if config is not None and sample is not None:
        raise RsSearchError("--sample goes with --space, not --config")
    cache = _cache(storage)
    try:
        if config is not None:
            _one(config, hardware, cache, train_memory=train_memory, as_json=as_json)
        else:
            assert space is not None
            _many(space, sample or 12, seed, hardware, cache, as_json=as_json)
    finally:
        if cache is not None:
            cache.close()


def _cache(storage: str | None) -> LatencyCache | None:
    """The cache when a storage is named (flag or environment); None: measure without storing."""
    from rs_search.storage.url import ENV_STORAGE

    if storage is None and not os.environ.get(ENV_STORAGE):
        return None
    from rs_search.latency.cache import LatencyCache

    return LatencyCache(storage)


def _one(
    config: Path,
    hardware: str | None,
    cache: LatencyCache | None,
    *,
    train_memory: bool,
    as_json: bool,
) -> None:
    from rs_search.latency.measure import measure
    from rs_search.latency.profiles import get_profile
    from rs_search.specs import Candidate

    candidate = Candidate.from_yaml_file(config)
    profile = get_profile(hardware or DEFAULT_HARDWARE)
    arch = candidate.arch
    batch = candidate.recipe.batch_size if train_memory else None
    _err(f"measuring {_label(arch)} [{arch.key()}] on {profile.describe()}")
    if cache is not None:
        before = cache.get(arch, profile)
        result = cache.get_or_measure(
            arch, profile, train_step_memory=train_memory, recipe_batch_size=batch, progress=_err
        )
        source = (
            "cache" if before is not None and result == before else "measured, stored in the cache"
        )
    else:
        result = measure(
            arch, profile, train_step_memory=train_memory, recipe_batch_size=batch, progress=_err
        )
        source = "measured"
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print_one(arch, profile, result, source)


def _print_one(
    arch: ArchSpec, profile: HardwareProfile, result: LatencyResult, source: str
) -> None:
    from rs_search.models.complexity import count_flops, count_params

    lines = [
        ("architecture", f"{_label(arch)} [{arch.key()}]"),
        (
            "params / FLOPs",
            f"{count_params(arch) / 1e6:.2f} M / {count_flops(arch) / 1e9:.3f} GFLOPs per image",
        ),
        ("profile", profile.describe()),
        (
            "device",
            f"{result.device_name} (torch {result.torch_version}, {_threads(result.threads)})",
        ),
        ("status", result.status + ("" if result.ok else f": {result.error}")),
    ]
    if result.ok:
        assert (
            result.median_ms is not None and result.p90_ms is not None and result.spread is not None
        )
        stable = "yes" if result.stable else "NO (machine busy or noisy: treat with care)"
        lines += [
            (
                "latency",
                f"{result.median_ms:.3f} ms per batch of {result.batch_size} (median), "
                f"p90 {result.p90_ms:.3f} ms",
            ),
            ("per image", f"{result.median_ms / result.batch_size:.3f} ms"),
            (
                "spread",
                f"{100 * result.spread:.1f}% over {result.repeats} repetitions, "
                f"{result.iterations} timed passes",
            ),
            ("stable", stable),
            ("contention", _contention(result)),
            (
                "CPU time",
                "-"
                if result.cpu_ms is None
                else f"{result.cpu_ms:.3f} ms per pass and "
                "thread (a diagnostic: far below the latency means other processes held the CPUs)",
            ),
            (
                "peak memory",
                "-"
                if result.peak_memory_mb is None
                else f"{result.peak_memory_mb:.1f} MB (inference)",
            ),
        ]
        if result.train_peak_memory_mb is not None:
            lines.append(("train step", f"{result.train_peak_memory_mb:.1f} MB peak"))
        elif result.error:
            lines.append(("train step", result.error))
    lines.append(("source", f"{source}, measured at {result.measured_at}"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        typer.echo(f"{key:<{width}}  {value}")


def _many(
    space_path: Path,
    n: int,
    seed: int,
    hardware: str | None,
    cache: LatencyCache | None,
    *,
    as_json: bool,
) -> None:
    import optuna

    from rs_search.latency.measure import measure
    from rs_search.latency.profiles import HardwareProfile, get_profile
    from rs_search.latency.stats import inversions, spearman
    from rs_search.models.complexity import count_flops, count_params
    from rs_search.space import load_space

    space = load_space(space_path)
    target = HardwareProfile.from_dict(space.target.to_dict(), where=f"{space_path}: target")
    profile = get_profile(hardware or target.name, extra={target.name: target})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs: dict[str, ArchSpec] = {}
    for _ in range(50 * n):
        if len(archs) == n:
            break
        arch = space.sample(study.ask(), epochs=1).arch
        archs.setdefault(arch.key(), arch)
    if len(archs) < n:
        _err(f"the space has only {len(archs)} distinct architectures reachable by sampling")
    _err(f"measuring {len(archs)} architectures on {profile.describe()}")
    rows = []
    for i, arch in enumerate(archs.values(), 1):
        _err(f"[{i}/{len(archs)}] {_label(arch)}")
        if cache is not None:
            result = cache.get_or_measure(arch, profile, progress=_err)
        else:
            result = measure(arch, profile, progress=_err)
        rows.append((arch, count_params(arch), count_flops(arch), result))
    ok = [r for r in rows if r[3].ok]
    rho = (
        spearman([float(r[2]) for r in ok], [float(r[3].median_ms or 0) for r in ok])
        if len(ok) >= 3
        else float("nan")
    )
    rho_params = (
        spearman([float(r[1]) for r in ok], [float(r[3].median_ms or 0) for r in ok])
        if len(ok) >= 3
        else float("nan")
    )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "profile": profile.to_dict(),
                    "spearman_flops_latency": rho,
                    "spearman_params_latency": rho_params,
                    "results": [
                        {"arch": a.to_dict(), "params": p, "flops": f, **r.to_dict()}
                        for a, p, f, r in rows
                    ],
                },
                indent=2,
            )
        )
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    device = rows[0][3].device_name if rows else "-"
    typer.echo(f"{profile.describe()} on {device}; ms per batch of {profile.batch_size}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("arch", "params M", "GFLOPs", "ms", "p90 ms", "spread", "mem MB", "note"):
        table.add_column(col, justify="left" if col in ("arch", "note") else "right", no_wrap=True)
    for arch, params, flops, r in sorted(rows, key=lambda row: row[2]):
        note = r.status if not r.ok else ("" if r.stable else "busy" if _busy(r) else "noisy")
        table.add_row(
            _label(arch),
            f"{params / 1e6:.2f}",
            f"{flops / 1e9:.3f}",
            _f(r.median_ms),
            _f(r.p90_ms),
            "-" if r.spread is None else f"{100 * r.spread:.1f}%",
            _f(r.peak_memory_mb, 1),
            note,
        )
    Console(highlight=False).print(table)
    flagged = sum(not r[3].stable for r in ok)
    typer.echo(
        f"Spearman rank correlation over {len(ok)} measured: FLOPs vs latency {rho:.3f}, "
        f"params vs latency {rho_params:.3f}"
        + (f" ({flagged} figures flagged busy/noisy)" if flagged else "")
    )
    stable = [r for r in ok if r[3].stable]  # claims about single pairs need trustworthy figures
    inv = inversions(
        [float(r[2]) for r in stable],
        [float(r[3].median_ms or 0) for r in stable],
        [float(r[3].spread or 0) for r in stable],
    )
    if inv:
        worst = inv[0]
        a, b = stable[worst.more_flops][0], stable[worst.fewer_flops][0]
        typer.echo(
            f"FLOPs mislead in {len(inv)} pair(s); e.g. {_label(a)} has {worst.flops_ratio:.2f}x "
            f"the FLOPs of {_label(b)} but takes {worst.latency_ratio:.2f}x its time"
        )


def latency_worker(
    study: Annotated[str, typer.Option("--study", help="Study name.")],
    storage: StorageOpt = None,
    hardware: Annotated[
        str | None,
        typer.Option(
            "--hardware", help="Hardware profile to measure (default: the study's target)."
        ),
    ] = None,
    poll: Annotated[
        float, typer.Option("--poll", min=0.1, help="Seconds between looks for new architectures.")
    ] = 10.0,
    once: Annotated[
        bool, typer.Option("--once", help="Exit when nothing is left to measure.")
    ] = False,
    claim_timeout: Annotated[
        float,
        typer.Option(
            "--claim-timeout",
            min=1.0,
            help="Seconds after which a dead worker's claim is taken over.",
        ),
    ] = 600.0,
) -> None:
    """Measure every architecture of a study lacking a figure for this hardware (until stopped)."""
    from rs_search.latency.cache import LatencyCache, default_worker_id
    from rs_search.latency.profiles import device_name
    from rs_search.latency.worker import LatencyWorker, load_study, study_profile
    from rs_search.storage.url import mask_url, resolve_storage_url

    study_obj = load_study(study, storage)
    profile = study_profile(study_obj, hardware)
    worker_id = default_worker_id()
    cache = LatencyCache(storage, claim_timeout_s=claim_timeout)
    try:
        where = mask_url(resolve_storage_url(storage))
        typer.echo(
            f"latency worker {worker_id}: study {study!r} in {where}, "
            f"{profile.describe()} on {device_name(profile.device)}"
        )
        worker = LatencyWorker(
            study=study_obj,
            cache=cache,
            profile=profile,
            poll_s=poll,
            once=once,
            worker_id=worker_id,
            echo=typer.echo,
        )
        with worker.signals():
            stats = worker.run()
    finally:
        cache.close()
    counts = ", ".join(f"{v} {k}" for k, v in sorted(stats.by_status.items())) or "nothing"
    typer.echo(
        f"{'stopped' if stats.interrupted or not once else 'finished'}: measured "
        f"{len(stats.measured)} ({counts})"
    )


def _threads(threads: int | None) -> str:
    return "GPU" if threads is None else f"{threads} thread{'s' if threads != 1 else ''}"


def _contention(result: LatencyResult) -> str:
    if result.contention is None:
        return "-"
    text = f"{100 * result.contention:.0f}% of timed passes waited for a CPU"
    if result.others_busy is not None:
        text += f"; other processes used {100 * result.others_busy:.0f}% of the CPUs"
    return text if result.load_avg is None else f"{text} (load average {result.load_avg:.1f})"


def _label(arch: ArchSpec) -> str:
    from rs_search.latency.worker import arch_label

    return arch_label(arch)


def _busy(result: LatencyResult) -> bool:
    from rs_search.latency.measure import protocol_from_env

    protocol = protocol_from_env()
    return (result.contention or 0.0) > protocol.max_delayed or (
        result.others_busy or 0.0
    ) > protocol.max_others_busy


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def register(app: typer.Typer) -> None:
    """Add ``latency`` and ``latency-worker`` to ``app``."""
    app.command("latency")(latency)
    app.command("latency-worker")(latency_worker)
