"""``rs-search export``: the Pareto-optimal trials of a study as train-ready YAML files.

Thin: open the study, call ``rs_search.export.export_study``, print. Heavy imports happen
inside the command so that ``rs-search --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rs_search.cli._common import HELP_STORAGE

if TYPE_CHECKING:
    from rs_search.latency.profiles import HardwareProfile


def register(app: typer.Typer) -> None:
    """Add ``export`` to ``app``."""
    app.command("export")(export)


def export(
    study: Annotated[str, typer.Option("--study", help="Study name.", show_default=False)],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Directory to create (written whole or not at all).", show_default=False
        ),
    ],
    storage: Annotated[str | None, typer.Option("--storage", help=HELP_STORAGE)] = None,
    hardware: Annotated[
        list[str] | None,
        typer.Option(
            "--hardware",
            help="Also record the cached latency on this hardware profile (repeat for several).",
        ),
    ] = None,
    weights: Annotated[
        bool, typer.Option("--weights", help="Copy each trial's final checkpoint.")
    ] = False,
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx",
            help="Write ONNX checked against PyTorch with onnxruntime (the optional extra 'onnx').",
        ),
    ] = False,
    artifacts: Annotated[
        str | None,
        typer.Option(
            "--artifacts", help="Checkpoint directory the workers used (default: the study's)."
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace a previous export in --out (a folder holding anything else is refused).",
        ),
    ] = False,
    remeasure: Annotated[
        bool,
        typer.Option(
            "--remeasure",
            help="Measure each exported config's latency again, in a fresh process on the "
            "study's target hardware (the search's protocol), and flag a drift from the cached "
            "figure beyond its spread (at least 20%, a project heuristic) in the YAMLs and the "
            "index. The latency cache is not changed.",
        ),
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="With --remeasure: the device to measure on, cpu, cuda or cuda:<index> "
            "(default: the target profile's).",
        ),
    ] = None,
) -> None:
    """Write one YAML per Pareto-optimal trial (arch, recipe, metrics, latency per hardware, why
    it is on the front, provenance) plus index.csv and index.json. Each YAML is accepted by
    `rs-search train --config`. A study with no finished trial exits 2. With --remeasure each
    config also gets a latency_check (cached and new figure, drift, spread, flagged, device,
    time), measured before anything is written."""
    from rs_search.cli._common import console, err_console
    from rs_search.devices import parse_device
    from rs_search.env import Environment
    from rs_search.errors import RsSearchError
    from rs_search.export import export_study
    from rs_search.export.latency import read_cached_latency
    from rs_search.export.remeasure import Remeasure
    from rs_search.latency.window import protocol_for
    from rs_search.storage.url import mask_url
    from rs_search.study.read import read_study
    from rs_search.study.storage import open_study

    if device is not None and not remeasure:
        raise RsSearchError("--device goes with --remeasure (where the latency is measured again)")
    if device is not None:
        parse_device(device, where="--device", allow_auto=False)  # checked before the study opens
    environment = Environment.from_environ()
    options = Remeasure(device=device, protocol=protocol_for(environment)) if remeasure else None
    opened = open_study(study, storage, retry_seconds=environment.storage_retry_s)
    try:
        snapshot = read_study(opened.study)
        profiles = _profiles(snapshot.target, hardware or [])
        cached, names = read_cached_latency(
            opened.url.render_as_string(hide_password=False), profiles
        )
        report = export_study(
            snapshot,
            out=out,
            storage_display=mask_url(opened.url),
            hardware=[names[p.key()] for p in profiles],
            cached_latency=cached,
            weights=weights,
            onnx=onnx,
            artifacts=artifacts,
            overwrite=overwrite,
            remeasure=options,
            progress=lambda line: err_console.print(line, soft_wrap=True, markup=False),
        )
    finally:
        opened.close()
    for note in report.notes:
        err_console.print(f"note: {note}", soft_wrap=True, markup=False)
    for row, config in zip(report.rows, report.configs, strict=True):
        extras = " ".join(x for x in (row.get("weights"), row.get("onnx")) if x)
        console.print(
            f"trial {row['trial']}: {row['file']} ({config}, top-1 {_num(row.get('val_top1'))}, "
            f"latency {_num(row.get('latency_ms'))} ms){' + ' + extras if extras else ''}",
            soft_wrap=True,
            markup=False,
        )
    for number, latency_check in report.checks.items():
        console.print(
            f"trial {number}: latency on {latency_check.profile} {latency_check.summary()}",
            soft_wrap=True,
            markup=False,
        )
    console.print(
        f"exported {len(report.rows)} Pareto-optimal trial(s) to {report.out} "
        "(index.csv, index.json)",
        soft_wrap=True,
        markup=False,
    )
    if options is not None:
        flagged = [n for n, c in report.checks.items() if c.flagged]
        console.print(
            f"latency re-measured for {len(report.checks)} config(s): "
            + (
                f"{len(flagged)} FLAGGED (trial {', '.join(map(str, flagged))}: drift beyond the "
                "spread; see latency_check in the YAML)"
                if flagged
                else "none drifted beyond its spread"
            )
            + "; the latency cache is unchanged",
            soft_wrap=True,
            markup=False,
        )
        unstable = [n for n, c in report.checks.items() if c.status == "ok" and not c.stable]
        if unstable:
            err_console.print(
                f"note: the new figure of trial {', '.join(map(str, unstable))} is UNSTABLE (the "
                "protocol found no quiet, agreeing window: a busy or noisy machine); export "
                "--remeasure again when the machine is quiet",
                soft_wrap=True,
                markup=False,
            )


def _num(value: Any) -> str:
    return "?" if value is None else f"{float(value):.4g}"


def _profiles(target: Any, names: list[str]) -> list[HardwareProfile]:
    """``--hardware`` names as profiles (built in, or the study's own target); an unknown name
    fails here, before anything is written."""
    from rs_search.latency.profiles import HardwareProfile, get_profile

    extra: dict[str, HardwareProfile] = {}
    if isinstance(target, Mapping) and target.get("name"):
        extra[str(target["name"])] = HardwareProfile.from_dict(dict(target))
    return [get_profile(name, extra=extra) for name in names]
