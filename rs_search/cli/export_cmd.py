"""``rs-search export``: the Pareto-optimal trials of a study as train-ready YAML files.

Thin: open the study, call ``rs_search.export.export_study``, print. Heavy imports happen
inside the command so that ``rs-search --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rs_search.specs import ArchSpec

HELP_STORAGE = ("SQLAlchemy URL of the study database (default: $RS_SEARCH_STORAGE, else "
                "sqlite:///rs-search.db in the working directory).")


def register(app: typer.Typer) -> None:
    """Add ``export`` to ``app``."""
    app.command("export")(export)


def export(
    study: Annotated[str, typer.Option("--study", help="Study name.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Directory to create (written whole or not "
                                      "at all).", show_default=False)],
    storage: Annotated[str | None, typer.Option("--storage", help=HELP_STORAGE)] = None,
    hardware: Annotated[list[str] | None, typer.Option(
        "--hardware", help="Also record the cached latency on this hardware profile (repeat for "
                           "several).")] = None,
    weights: Annotated[bool, typer.Option("--weights", help="Copy each trial's final "
                                          "checkpoint.")] = False,
    onnx: Annotated[bool, typer.Option("--onnx", help="Write ONNX checked against PyTorch with "
                                       "onnxruntime (pip install 'rs-search[onnx]').")] = False,
    artifacts: Annotated[str | None, typer.Option("--artifacts", help="Checkpoint directory the "
                                                  "workers used (default: the study's).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")
                         ] = False,
) -> None:
    """Write one YAML per Pareto-optimal trial (arch, recipe, metrics, latency per hardware, why
    it is on the front, provenance) plus index.csv and index.json. Each YAML is accepted by
    `rs-search train --config`. A study with no finished trial exits 2."""
    from rs_search.cli._common import console, err_console
    from rs_search.export import export_study
    from rs_search.reports.source import open_study
    from rs_search.storage.url import mask_url

    opened = open_study(study, storage)
    cache = None
    try:
        lookup, cache = _latency_lookup(opened.url.render_as_string(hide_password=False),
                                        opened.study, hardware or [])
        report = export_study(opened.study, out=out, storage_display=mask_url(opened.url),
                              hardware=hardware or [], latency_lookup=lookup, weights=weights,
                              onnx=onnx, artifacts=artifacts, overwrite=overwrite)
    finally:
        if cache is not None:
            cache.close()
        opened.storage.engine.dispose()
    for note in report.notes:
        err_console.print(f"note: {note}", soft_wrap=True)
    for row in report.rows:
        extras = " ".join(x for x in (row.get("weights"), row.get("onnx")) if x)
        console.print(f"trial {row['trial']}: {row['file']} ({row['depth']} w{row['width']:g} "
                      f"r{row['resolution']}, top-1 {_num(row.get('val_top1'))}, latency "
                      f"{_num(row.get('latency_ms'))} ms){' + ' + extras if extras else ''}",
                      soft_wrap=True)
    console.print(f"exported {len(report.rows)} Pareto-optimal trial(s) to {report.out} "
                  "(index.csv, index.json)", soft_wrap=True)


def _num(value: Any) -> str:
    return "?" if value is None else f"{float(value):.4g}"


def _latency_lookup(storage_url: str, study: Any, names: list[str]) -> tuple[Any, Any]:
    """((arch, profile name) -> cached figures, the cache to close) for ``--hardware`` names;
    profiles resolve first so an unknown name fails before anything is written."""
    if not names:
        return None, None
    from rs_search.latency.profiles import HardwareProfile, get_profile

    extra: dict[str, HardwareProfile] = {}
    target = study.user_attrs.get("target")
    if isinstance(target, Mapping) and target.get("name"):
        extra[str(target["name"])] = HardwareProfile.from_dict(dict(target))
    profiles = {name: get_profile(name, extra=extra) for name in names}
    from rs_search.latency.cache import LatencyCache

    cache = LatencyCache(storage_url)

    def lookup(arch: ArchSpec, name: str) -> Mapping[str, Any] | None:
        result = cache.get(arch, profiles[name], any_device=True)
        if result is None:
            return None
        fields = ("status", "median_ms", "p90_ms", "peak_memory_mb", "batch_size", "device_name",
                  "torch_version", "measured_at", "stable", "error")
        figures = {f: getattr(result, f, None) for f in fields}
        figures["source"] = "latency cache"
        return {k: v for k, v in figures.items() if v is not None}

    return lookup, cache
