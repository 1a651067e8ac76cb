"""``rs-search latency`` and ``rs-search latency-worker``: thin wrappers over ``rs_search.latency``.

- ``latency --config FILE`` measures one candidate and prints its figures with the device name;
  the figure goes through the latency cache of the study database (``--storage``, else
  ``$RS_SEARCH_STORAGE``, else ``./rs-search.db``, as every command resolves it).
- ``latency --space FILE --sample N`` measures N sampled architectures and prints FLOPs, params,
  latency and memory with the Spearman rank correlation between FLOPs and latency
  (``rs_search.latency.survey``).
- ``latency-worker --study NAME --storage URL [--hardware NAME]`` fills the cache for a study.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from rs_search.errors import RsSearchError

if TYPE_CHECKING:
    from rs_search.latency.cache import LatencyCache
    from rs_search.latency.profiles import HardwareProfile
    from rs_search.latency.result import LatencyResult
    from rs_search.latency.window import Protocol
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
        "(default: $RS_SEARCH_STORAGE, else sqlite:///rs-search.db).",
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
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="Device to measure on: cpu, cuda or cuda:<index>, of the profile's type "
            "(default: the profile's device).",
        ),
    ] = None,
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
    """Measure latency and peak memory on this machine's hardware (random weights): an inference
    pass, or a training step for a train_step profile. Figures are cached in the study database
    (--storage, default ./rs-search.db) and answered from it the next time."""
    from rs_search.env import Environment
    from rs_search.latency.cache import LatencyCache
    from rs_search.latency.window import protocol_for
    from rs_search.storage.url import resolve_storage_url

    if (config is None) == (space is None):
        raise RsSearchError("give exactly one of --config FILE or --space FILE --sample N")
    if config is not None and sample is not None:
        raise RsSearchError("--sample goes with --space, not --config")
    protocol = protocol_for(Environment.from_environ())
    with LatencyCache(resolve_storage_url(storage)) as cache, _sigterm_interrupts():
        if config is not None:
            _one(
                config,
                hardware,
                device,
                cache,
                protocol,
                train_memory=train_memory,
                as_json=as_json,
            )
        else:
            assert space is not None
            _many(space, sample or 12, seed, hardware, device, cache, protocol, as_json=as_json)


def _one(
    config: Path,
    hardware: str | None,
    device: str | None,
    cache: LatencyCache,
    protocol: Protocol,
    *,
    train_memory: bool,
    as_json: bool,
) -> None:
    from rs_search.latency.profiles import get_profile
    from rs_search.specs import Candidate

    candidate = Candidate.from_yaml_file(config)
    profile = get_profile(hardware or DEFAULT_HARDWARE)
    arch = candidate.arch
    batch = candidate.recipe.batch_size if train_memory else None
    where = device or profile.device
    _err(f"measuring {_label(arch)} [{arch.key()}] on {profile.describe()}")
    before = cache.get(arch, profile, device=where)
    result = cache.get_or_measure(
        arch,
        profile,
        device=where,
        protocol=protocol,
        train_step_memory=train_memory,
        recipe_batch_size=batch,
        progress=_err,
    )
    source = "cache" if before is not None and result == before else "measured, stored in the cache"
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
        unit = (
            f"training step of {result.batch_size} images (forward, backward, SGD step)"
            if result.mode == "train_step"
            else f"batch of {result.batch_size}"
        )
        lines += [
            (
                "latency",
                f"{result.median_ms:.3f} ms per {unit} (median), p90 {result.p90_ms:.3f} ms",
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
                else f"{result.peak_memory_mb:.1f} MB "
                f"({'training step' if result.mode == 'train_step' else 'inference'})",
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
    device: str | None,
    cache: LatencyCache,
    protocol: Protocol,
    *,
    as_json: bool,
) -> None:
    from rs_search.latency.profiles import HardwareProfile, get_profile
    from rs_search.latency.survey import sample_architectures, survey
    from rs_search.space import load_space

    space = load_space(space_path)
    target = HardwareProfile.from_dict(space.target.to_dict(), where=f"{space_path}: target")
    profile = get_profile(hardware or target.name, extra={target.name: target})
    where = device or profile.device
    archs = sample_architectures(space, n, seed=seed)
    if len(archs) < n:
        _err(f"the space has only {len(archs)} distinct architectures reachable by sampling")
    _err(f"measuring {len(archs)} architectures on {profile.describe()}")
    found = survey(
        archs,
        lambda arch: cache.get_or_measure(
            arch, profile, device=where, protocol=protocol, progress=_err
        ),
        progress=_err,
    )
    if as_json:
        typer.echo(json.dumps({"profile": profile.to_dict(), **found.to_dict()}, indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    device_label = found.rows[0].result.device_name if found.rows else "-"
    typer.echo(f"{profile.describe()} on {device_label}; ms per pass")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("arch", "params M", "GFLOPs", "batch", "ms", "p90 ms", "spread", "mem MB", "note"):
        table.add_column(col, justify="left" if col in ("arch", "note") else "right", no_wrap=True)
    for row in sorted(found.rows, key=lambda r: r.flops):
        r = row.result
        note = (
            r.status
            if not r.ok
            else ("" if r.stable else "busy" if _busy(r, protocol) else "noisy")
        )
        table.add_row(
            _label(row.arch),
            f"{row.params / 1e6:.2f}",
            f"{row.flops / 1e9:.3f}",
            str(r.batch_size),
            _f(r.median_ms),
            _f(r.p90_ms),
            "-" if r.spread is None else f"{100 * r.spread:.1f}%",
            _f(r.peak_memory_mb, 1),
            note,
        )
    Console(highlight=False).print(table)
    flagged = sum(not r.result.stable for r in found.ok)
    typer.echo(
        f"Spearman rank correlation over {len(found.ok)} measured: FLOPs vs latency "
        f"{_f(found.spearman_flops)}, params vs latency {_f(found.spearman_params)}"
        + (f" ({flagged} figures flagged busy/noisy)" if flagged else "")
    )
    if found.inversions:
        worst = found.inversions[0]
        a, b = found.stable[worst.more_flops].arch, found.stable[worst.fewer_flops].arch
        typer.echo(
            f"FLOPs mislead in {len(found.inversions)} pair(s); e.g. {_label(a)} has "
            f"{worst.flops_ratio:.2f}x the FLOPs of {_label(b)} but takes "
            f"{worst.latency_ratio:.2f}x its time"
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
    from rs_search.env import Environment
    from rs_search.latency.cache import LatencyCache, default_worker_id
    from rs_search.latency.profiles import device_name
    from rs_search.latency.window import protocol_for
    from rs_search.latency.worker import LatencyWorker, load_study, study_profile
    from rs_search.storage.url import mask_url, resolve_storage_url
    from rs_search.study.storage import study_names, unknown_study_message

    protocol = protocol_for(Environment.from_environ())
    url = resolve_storage_url(storage)
    names = study_names(url)  # a missing SQLite file or unknown study: one line, nothing created
    if study not in names:
        raise RsSearchError(unknown_study_message(study, names, url))
    study_obj = load_study(study, url.render_as_string(hide_password=False))
    profile = study_profile(study_obj, hardware)
    worker_id = default_worker_id()
    with LatencyCache(url, claim_timeout_s=claim_timeout) as cache:
        typer.echo(
            f"latency worker {worker_id}: study {study!r} in {mask_url(url)}, "
            f"{profile.describe()} on {device_name(profile.device)}"
        )
        worker = LatencyWorker(
            study=study_obj,
            cache=cache,
            profile=profile,
            poll_s=poll,
            once=once,
            worker_id=worker_id,
            protocol=protocol,
            echo=typer.echo,
        )
        with worker.signals():
            stats = worker.run()
    counts = ", ".join(f"{v} {k}" for k, v in sorted(stats.by_status.items())) or "nothing"
    typer.echo(
        f"{'stopped' if stats.interrupted or not once else 'finished'}: measured "
        f"{len(stats.measured)} ({counts})"
    )


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends a measurement as Ctrl-C does (``KeyboardInterrupt``), so the cache releases
    its claim at once instead of leaving it to go stale (``claim_timeout_s``)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def _busy(result: LatencyResult, protocol: Protocol) -> bool:
    return (result.contention or 0.0) > protocol.max_delayed or (
        result.others_busy or 0.0
    ) > protocol.max_others_busy


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def register(app: typer.Typer) -> None:
    """Add ``latency`` and ``latency-worker`` to ``app``."""
    app.command("latency")(latency)
    app.command("latency-worker")(latency_worker)
