"""Export a study's Pareto-optimal trials: one YAML each, an index, optionally weights and ONNX.

Each ``trial-N.yaml`` is a candidate file (top-level ``arch`` and ``recipe``; ``rs-search train
--config`` and ``Candidate.from_yaml_file`` read it and ignore the other keys) that also records
the trial's metrics, its latency per hardware profile, why it is on the front, and provenance
(study, trial number, origin, data, budget, rs-search/torch/Optuna versions). ``index.csv`` and
``index.json`` list the exported trials, best hypervolume contribution first.

With ``remeasure`` (``--remeasure``) each exported architecture's latency is measured again in a
fresh process on the study's target profile (``rs_search.export.remeasure``): every YAML gets a
``latency_check`` (cached and new figure, drift, the spread it is judged against, ``flagged``,
device, time) and the index the columns ``REMEASURE_COLUMNS``. Without it the output is what it
was before the option existed.

Everything is written into a staging directory and renamed into place at the end
(``atomic.staged_directory``); a failure leaves ``--out`` as it was. ``--overwrite`` replaces
only a previous export (:func:`previous_export`): a folder with an export's ``index.json`` and
nothing but the files an export writes.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rs_search.errors import RsSearchError
from rs_search.export.atomic import staged_directory
from rs_search.export.front import FrontEntry, exportable, front_entries
from rs_search.export.remeasure import LatencyCheck, Remeasure, remeasure_entries
from rs_search.specs import Candidate

if TYPE_CHECKING:
    from rs_search.study.read import StudySnapshot
    from rs_search.study.record import TrialRecord
    from rs_search.study.settings import StudySettings

__all__ = ["CachedLatency", "ExportReport", "NoFinishedTrial", "export_study"]

INDEX_COLUMNS = (
    "trial",
    "file",
    "arch_key",
    "candidate_key",
    "depth",
    "width",
    "resolution",
    "params_m",
    "gflops",
    "val_top1",
    "latency_ms",
    "memory_mb",
    "origin",
    "hypervolume_contribution",
    "weights",
    "onnx",
)

# Appended to the index with ``--remeasure`` (``LatencyCheck``): the new figure, the drift and
# whether it is beyond the spread.
REMEASURE_COLUMNS = (
    "latency_remeasured_ms",
    "latency_drift",
    "latency_spread",
    "latency_flagged",
)

# arch key -> hardware profile name -> latency figures (``export.latency.read_cached_latency``)
CachedLatency = Mapping[str, Mapping[str, Mapping[str, Any]]]


class NoFinishedTrial(RsSearchError):
    """The study has no complete, trained, feasible trial to export."""

    exit_code = 2


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    out: Path
    rows: list[dict[str, Any]]  # the index rows, best hypervolume contribution first
    notes: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)  # each row's architecture, in words
    checks: dict[int, LatencyCheck] = field(default_factory=dict)  # trial -> --remeasure's check


def _origin(record: TrialRecord) -> str:
    return f"seed:{record.seed_name}" if record.origin == "seed" else record.origin


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch

    from rs_search import __version__

    return {"rs_search": __version__, "torch": str(torch.__version__), "optuna": version("optuna")}


def _metrics(
    record: TrialRecord, candidate: Candidate, objectives: Sequence[str], values: Sequence[float]
) -> dict[str, Any]:
    from rs_search.models.complexity import count_flops, count_params

    out: dict[str, Any] = {name: float(v) for name, v in zip(objectives, values, strict=True)}
    curve = record.curve
    if curve:
        last = curve[-1]
        out["epochs_trained"] = int(last.get("epoch", len(curve)))
        for key in ("val_top1", "val_top1_raw", "train_top1", "val_loss", "train_loss"):
            if isinstance(last.get(key), int | float):
                out[key] = float(last[key])
    out["params_m"] = round(count_params(candidate.arch) / 1e6, 4)
    out["gflops"] = round(count_flops(candidate.arch) / 1e9, 4)
    return out


def _study_latency(
    record: TrialRecord,
    objectives: Sequence[str],
    values: Sequence[float],
    target: Mapping[str, Any] | None,
) -> tuple[str, dict[str, Any]] | None:
    """The target profile's figures the worker measured for this trial."""
    measured = record.measured
    name = measured.profile or (target or {}).get("name")
    median = measured.latency_ms
    if median is None and "latency" in objectives:
        median = values[list(objectives).index("latency")]
    if not name or median is None:
        return None
    figures: dict[str, Any] = {"median_ms": float(median)}
    if measured.latency_p90_ms is not None:
        figures["p90_ms"] = measured.latency_p90_ms
    if measured.memory_mb is not None:
        figures["peak_memory_mb"] = measured.memory_mb
    if target:
        figures["batch_size"] = target.get("batch_size")
        figures["dtype"] = target.get("dtype")
    figures["source"] = "study target (measured by the search)"
    return str(name), figures


def export_study(
    snapshot: StudySnapshot,
    *,
    out: Path,
    storage_display: str = "",
    hardware: Sequence[str] = (),
    cached_latency: CachedLatency | None = None,
    weights: bool = False,
    onnx: bool = False,
    artifacts: str | None = None,
    overwrite: bool = False,
    remeasure: Remeasure | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Write the exportable Pareto front of ``study`` to ``out`` (see the module docstring).

    ``cached_latency``: the latency cache's figures (every profile is recorded);
    ``hardware``: profile names that must appear ("not measured" when the cache lacks them).
    ``artifacts``: the checkpoint root the workers used (default: the one in
    the study settings). ``remeasure``: check each exported figure in a fresh process (module
    docstring); measured before anything is written, with ``progress`` told of each figure.
    Raises ``NoFinishedTrial`` (exit 2) when nothing can be exported.
    """
    objectives, directions = snapshot.info.objectives, snapshot.info.directions
    settings = snapshot.settings
    records = snapshot.records
    entries = front_entries(records, objectives, directions)
    if not entries:
        complete = sum(1 for r in records if r.state == "COMPLETE")
        why = (
            f"{complete} complete trial(s), none trained and feasible"
            if complete
            else f"{len(records)} trial(s), none complete"
        )
        raise NoFinishedTrial(f"study {snapshot.name!r} has no finished trial to export ({why})")
    if onnx:
        from rs_search.export.onnx_export import require_onnx

        require_onnx()
    artifacts = artifacts or (settings.artifacts if settings is not None else None)
    exportable_count = sum(1 for r in records if exportable(r))
    versions = _versions()
    exported_at = datetime.now(UTC).isoformat(timespec="seconds")
    checks: dict[int, LatencyCheck] = {}
    if remeasure is not None:
        checks = remeasure_entries(
            entries,
            target=settings.target if settings is not None else None,
            cached_latency=cached_latency or {},
            options=remeasure,
            progress=progress,
        )
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    configs: list[str] = []
    with staged_directory(out, overwrite=overwrite, replaceable=previous_export) as stage:
        for entry in entries:
            doc, row = _document(
                snapshot.name,
                entry,
                objectives=objectives,
                directions=directions,
                settings=settings,
                storage_display=storage_display,
                hardware=hardware,
                cached_latency=cached_latency or {},
                versions=versions,
                exported_at=exported_at,
                front_size=len(entries),
                exportable_count=exportable_count,
            )
            number = entry.record.number
            files: dict[str, Any] = {}
            state = None
            if weights or onnx:
                state, ckpt_note = _checkpoint(
                    entry.record, snapshot.name, artifacts, required=weights
                )
                if ckpt_note:
                    notes.append(ckpt_note)
            if weights and state is not None:
                source, loaded = state
                name = f"trial-{number}.pt"
                shutil.copy2(source, stage / name)
                has_ema = isinstance(loaded.get("ema"), Mapping)
                files["weights"] = {
                    "file": name,
                    "copied_from": str(source),
                    "evaluated_with": "ema" if has_ema else "model",
                }
            if onnx:
                files["onnx"] = _onnx(stage, number, Candidate.from_dict(doc), state)
            doc["files"] = files
            row["weights"] = files.get("weights", {}).get("file", "")
            row["onnx"] = files.get("onnx", {}).get("file", "")
            check = checks.get(number)
            if check is not None:
                doc["latency_check"] = check.to_dict()
                row.update(_check_columns(check))
            text = (
                f"# rs-search export: trial {number} of study {snapshot.name!r}.\n"
                f"# Train it again: rs-search train --config trial-{number}.yaml --data DATA\n"
                + _warning(check)
                + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
            )
            (stage / row["file"]).write_text(text)
            rows.append(row)
            configs.append(entry.record.label)
        columns = INDEX_COLUMNS + (REMEASURE_COLUMNS if remeasure is not None else ())
        _write_index(stage, rows, columns)
    return ExportReport(out=out, rows=rows, notes=notes, configs=configs, checks=checks)


def _check_columns(check: LatencyCheck) -> dict[str, Any]:
    data = check.to_dict()
    return {
        "latency_remeasured_ms": data["remeasured_ms"],
        "latency_drift": data["drift"],
        "latency_spread": data["spread"],
        "latency_flagged": check.flagged,
    }


def _warning(check: LatencyCheck | None) -> str:
    """A comment above a flagged config's YAML, so a reader of the file cannot miss it."""
    if check is None or not check.flagged:
        return ""
    line = f"# LATENCY FLAGGED on {check.profile}: {check.summary()}"
    return " ".join(line.splitlines()) + "\n"


def _document(
    study_name: str,
    entry: FrontEntry,
    *,
    objectives: Sequence[str],
    directions: Sequence[str],
    settings: StudySettings | None,
    storage_display: str,
    hardware: Sequence[str],
    cached_latency: CachedLatency,
    versions: Mapping[str, str],
    exported_at: str,
    front_size: int,
    exportable_count: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    trial = entry.record
    candidate = trial.candidate
    assert candidate is not None  # exportable
    metrics = _metrics(trial, candidate, objectives, entry.values)
    from rs_search.export.latency import figures_for

    latency: dict[str, Any] = {}
    target = dict(settings.target) if settings is not None else None
    measured = _study_latency(trial, objectives, entry.values, target)
    if measured is not None:
        latency[measured[0]] = measured[1]
    for name, figures in figures_for(
        candidate.arch.key(), cached_latency, hardware, study=study_name
    ).items():
        if name in latency and figures.get("status") == "ok":
            latency[name] = {**figures, **latency[name]}  # the study's own figure, plus detail
        else:
            latency.setdefault(name, figures)
    origin = _origin(trial)
    provenance: dict[str, Any] = {
        "study": study_name,
        "storage": storage_display,
        "trial": trial.number,
        "origin": origin,
    }
    if trial.reason:
        provenance["origin_reason"] = trial.reason
    if trial.source_trial is not None:
        provenance["source_trial"] = trial.source_trial
    if settings is not None:
        provenance.update(
            {
                "data": settings.data,
                "budget_epochs": settings.budget_epochs,
                "space_fingerprint": settings.space_fingerprint,
            }
        )
    provenance.update(
        {
            "finished_at": trial.datetime_complete.isoformat(timespec="seconds")
            if trial.datetime_complete
            else None,
            "exported_at": exported_at,
            "versions": dict(versions),
        }
    )
    doc: dict[str, Any] = {
        "arch": candidate.arch.to_dict(),
        "recipe": candidate.recipe.to_dict(),
        "arch_key": candidate.arch.key(),
        "candidate_key": candidate.key(),
        "metrics": metrics,
        "latency": latency,
        "pareto": {
            "rank": 0,
            "reason": entry.reason,
            "objectives": {o: d for o, d in zip(objectives, directions, strict=True)},
            "front_size": front_size,
            "exportable_trials": exportable_count,
            "hypervolume_contribution": round(entry.hypervolume_contribution, 6),
            "hypervolume_reference": [round(r, 6) for r in entry.reference],
        },
        "provenance": provenance,
    }
    value = dict(zip(objectives, entry.values, strict=True))
    row = {
        "trial": trial.number,
        "file": f"trial-{trial.number}.yaml",
        "arch_key": candidate.arch.key(),
        "candidate_key": candidate.key(),
        "depth": candidate.arch.label,
        "width": candidate.arch.width,
        "resolution": candidate.arch.resolution,
        "params_m": metrics["params_m"],
        "gflops": metrics["gflops"],
        "val_top1": value.get("accuracy"),
        "latency_ms": value.get("latency"),
        "memory_mb": value.get("memory"),
        "origin": origin,
        "hypervolume_contribution": round(entry.hypervolume_contribution, 6),
    }
    return doc, row


def _checkpoint(
    trial: TrialRecord, study_name: str, artifacts: str | None, *, required: bool
) -> tuple[tuple[Path, dict[str, Any]] | None, str | None]:
    """((path, state) of the trial's final checkpoint, note) — with ``required``, a missing one
    is an error."""
    import torch

    from rs_search.export.weights import final_checkpoint, trial_checkpoint_dir

    folder = (
        trial_checkpoint_dir(trial, study_name=study_name, artifacts=artifacts)
        if artifacts
        else None
    )
    last = trial.curve[-1].get("epoch") if trial.curve else None
    epochs = int(last) if isinstance(last, int) else None
    path = final_checkpoint(folder, epochs=epochs) if folder is not None else None
    if path is None:
        where = str(folder) if folder is not None else "(the study names no artifacts root)"
        message = (
            f"trial {trial.number}: no final checkpoint in {where}; pass --artifacts with "
            "the directory the workers used"
        )
        if required:
            raise RsSearchError(message)
        return None, message + " (ONNX exported with initial weights)"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return (path, state), None


def _onnx(
    stage: Path, number: int, candidate: Candidate, state: tuple[Path, dict[str, Any]] | None
) -> dict[str, Any]:
    from rs_search.export.onnx_export import export_onnx
    from rs_search.export.weights import eval_state_dict

    name = f"trial-{number}.onnx"
    weights = eval_state_dict(state[1]) if state is not None else None
    check = export_onnx(candidate, stage / name, state_dict=weights)
    if state is None:
        which = "initial (no checkpoint found)"
    else:
        which = (
            "checkpoint, EMA weights"
            if isinstance(state[1].get("ema"), Mapping)
            else "checkpoint, model weights"
        )
    return {
        "file": name,
        "opset": check.opset,
        "input": "images (N, C, H, W) float32",
        "output": "logits",
        "weights": which,
        "max_abs_diff_vs_pytorch": check.max_abs_diff,
        "onnx": check.onnx_version,
        "onnxruntime": check.onnxruntime_version,
    }


# Every file an export writes: the index and, per trial, its YAML, weights and ONNX (with the
# external-data file the ONNX exporter writes beside a large model).
EXPORT_FILE = re.compile(r"index\.(csv|json)|trial-\d+\.(yaml|pt|onnx|onnx\.data)")


def previous_export(folder: Path) -> str | None:
    """None when ``folder`` holds a previous export (its ``index.json`` lists exported trials,
    and every entry is a file an export writes), else why not: what ``--overwrite`` may
    delete."""
    index = folder / "index.json"
    try:
        listed = json.loads(index.read_text(encoding="utf-8")).get("trials")
    except (OSError, ValueError, AttributeError):
        listed = None
    foreign = [
        entry.name
        for entry in sorted(folder.iterdir())
        if not (entry.is_file() and not entry.is_symlink() and EXPORT_FILE.fullmatch(entry.name))
    ]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        return f"it holds {foreign[0]!r}{more}, which no export writes"
    if not isinstance(listed, list):
        return "it has no export index.json"
    return None


def _write_index(stage: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    (stage / "index.csv").write_text(buffer.getvalue())
    (stage / "index.json").write_text(json.dumps({"trials": rows}, indent=2) + "\n")
