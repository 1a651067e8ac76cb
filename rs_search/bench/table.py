"""The benchmark table file: JSON lines, versioned, validated on load (an untrusted file).

Line 1 is the header; every other line is one candidate, in training order::

    {"format": "rs-search-bench-table", "version": 1, "space": {...}, "data": "digits", ...}
    {"key": "3f0c...", "status": "done", "label": "1-1-1-1 w0.25 r32", "candidate": {...},
     "params": 43210, "flops": 1234567, "latency": {"median_ms": 0.61, ...},
     "curve": {"val_top1": [...], ...}, "train": {"seed": 0, "seconds": 41.2, ...}}
    {"key": "9a1d...", "status": "pending", "label": "...", "candidate": {...}}

Header fields: ``space`` (name, fingerprint and the whole parsed space, so a replay needs no
other file), ``data``, ``budget_epochs``, ``seed`` (grid draw and training), ``grid`` (``all`` or
``sampled``, how many were asked for, how many distinct candidates the space has), ``profile``
(the target hardware profile, its key and the device that measured it), ``train_device``,
``versions`` (rs-search, torch, python), ``created_at``/``updated_at`` and ``seconds``
(training, latency and wall time summed over every run that built the table).

Candidate lines: ``status`` is ``pending`` (not yet trained), ``done`` (``curve`` has one value
per epoch of the budget for each of ``CURVE_FIELDS``; top-1 in percent, the ``val_*`` of the EMA
weights when the recipe has an EMA, which is what the search ranks on) or ``failed`` (``error``
says why and ``stage`` where: ``latency`` or ``train``). ``key`` is ``Candidate.key()`` of
``candidate`` and is checked. Numbers are rounded to 6 significant digits so the file stays small
and diffs stay readable; a line per candidate keeps diffs to the candidates that changed.

The file is rewritten whole through a temporary file and a rename after every candidate, so it is
never half-written (``write_table``); ``load_table`` turns any problem (not JSON, a missing or
mistyped field, a curve of the wrong length, a key that does not match, a newer version) into one
``TableError`` naming the line and the field.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rs_search.errors import RsSearchError, SpaceError, SpecError
from rs_search.space import SearchSpace
from rs_search.specs import Candidate

__all__ = [
    "CURVE_FIELDS",
    "FORMAT",
    "MAX_BYTES",
    "VERSION",
    "Curve",
    "Entry",
    "Header",
    "Latency",
    "Table",
    "TableError",
    "TrainInfo",
    "candidate_label",
    "dumps_table",
    "load_table",
    "loads_table",
    "write_table",
]

FORMAT = "rs-search-bench-table"
VERSION = 1
#: A table of thousands of candidates is a few MB; anything far larger is not one of ours.
MAX_BYTES = 256 * 2**20
CURVE_FIELDS: tuple[str, ...] = (
    "val_top1",
    "val_top1_raw",
    "val_loss",
    "train_loss",
    "train_top1",
    "train_eval_top1",
    "train_eval_loss",
    "epoch_seconds",
)
_PERCENT_FIELDS = ("val_top1", "val_top1_raw", "train_top1", "train_eval_top1")
Status = Literal["pending", "done", "failed"]
STATUSES: tuple[str, ...] = ("pending", "done", "failed")
_KEY = re.compile(r"^[0-9a-f]{16}$")
_MAX_TEXT = 2000  # longest error text or label kept


class TableError(RsSearchError):
    """A benchmark table file that cannot be read, or does not fit the command."""


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True, kw_only=True)
class Curve:
    """Per-epoch values, epoch 1 first (see ``CURVE_FIELDS``)."""

    val_top1: tuple[float, ...]
    val_top1_raw: tuple[float, ...]
    val_loss: tuple[float, ...]
    train_loss: tuple[float, ...]
    train_top1: tuple[float, ...]
    # train top-1 and loss measured like validation (eval mode, no augmentation, a fixed train
    # subset: ``EpochMetrics.train_eval_*``), the train/val gap the scaling rules read
    train_eval_top1: tuple[float, ...]
    train_eval_loss: tuple[float, ...]
    epoch_seconds: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.val_top1)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Curve:
        """From the engine's per-epoch rows (``EpochMetrics.to_dict()``)."""
        rows = list(rows)
        return cls(**{name: tuple(float(r[name]) for r in rows) for name in CURVE_FIELDS})

    def to_dict(self) -> dict[str, list[float]]:
        return {name: [_round(v) for v in getattr(self, name)] for name in CURVE_FIELDS}


@dataclass(frozen=True, kw_only=True)
class Latency:
    """The target profile's figures (``rs_search.latency``): ms per batch, MB peak."""

    median_ms: float
    p90_ms: float
    spread: float | None
    memory_mb: float | None
    stable: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_ms": _round(self.median_ms),
            "p90_ms": _round(self.p90_ms),
            "spread": None if self.spread is None else _round(self.spread),
            "memory_mb": None if self.memory_mb is None else _round(self.memory_mb),
            "stable": self.stable,
        }


@dataclass(frozen=True, kw_only=True)
class TrainInfo:
    seed: int
    seconds: float  # sum of the curve's epoch_seconds
    resumed_from_epoch: int | None  # epochs a killed run had done before this one finished it
    finished_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "seconds": _round(self.seconds),
            "resumed_from_epoch": self.resumed_from_epoch,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One candidate of the table (see the module docstring for ``status``)."""

    candidate: Candidate
    status: Status = "pending"
    params: int | None = None
    flops: int | None = None
    latency: Latency | None = None
    curve: Curve | None = None
    train: TrainInfo | None = None
    error: str | None = None
    stage: str | None = None  # failed: latency | train

    @property
    def key(self) -> str:
        return self.candidate.key()

    @property
    def label(self) -> str:
        return candidate_label(self.candidate)

    @property
    def final_top1(self) -> float:
        """Validation top-1 at the full budget (a done entry)."""
        assert self.curve is not None, "only done entries have a curve"
        return self.curve.val_top1[-1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "status": self.status,
            "label": self.label,
            "candidate": self.candidate.to_dict(),
        }
        if self.params is not None:
            out["params"] = self.params
        if self.flops is not None:
            out["flops"] = self.flops
        if self.latency is not None:
            out["latency"] = self.latency.to_dict()
        if self.curve is not None:
            out["curve"] = self.curve.to_dict()
        if self.train is not None:
            out["train"] = self.train.to_dict()
        if self.error is not None:
            out["error"] = self.error[:_MAX_TEXT]
            out["stage"] = self.stage
        return out


@dataclass(frozen=True, kw_only=True)
class Header:
    space: SearchSpace
    data: str
    budget_epochs: int
    seed: int
    grid_mode: str  # all | sampled
    grid_requested: int
    grid_distinct: int | None
    profile: Mapping[str, Any]  # HardwareProfile.to_dict()
    profile_key: str
    device_name: str  # what measured latency
    train_device: str  # what trained (e.g. cpu, or the CUDA device's name)
    versions: Mapping[str, str]
    created_at: str
    updated_at: str
    seconds: Mapping[str, float] = field(
        default_factory=lambda: {"train": 0.0, "latency": 0.0, "wall": 0.0}
    )
    # when ``rs-search bench retime`` measured every latency again (None: as built); training
    # curves do not depend on the machine's load, timings do, so a table trained on a busy machine
    # is retimed on a quiet one
    latency_retimed_at: str | None = None

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun to continue this table rather than start another."""
        return {
            "space fingerprint": self.space.fingerprint(),
            "data": self.data,
            "budget": f"{self.budget_epochs}epochs",
            "seed": self.seed,
            "candidates": self.grid_requested,
            "target profile": self.profile_key,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "space": {
                "name": self.space.name,
                "fingerprint": self.space.fingerprint(),
                "spec": self.space.to_dict(),
            },
            "data": self.data,
            "budget_epochs": self.budget_epochs,
            "seed": self.seed,
            "grid": {
                "mode": self.grid_mode,
                "requested": self.grid_requested,
                "distinct": self.grid_distinct,
            },
            "profile": dict(self.profile),
            "profile_key": self.profile_key,
            "device_name": self.device_name,
            "train_device": self.train_device,
            "versions": dict(self.versions),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "seconds": {k: _round(float(v)) for k, v in self.seconds.items()},
            "latency_retimed_at": self.latency_retimed_at,
        }


@dataclass(frozen=True, kw_only=True)
class Table:
    header: Header
    entries: tuple[Entry, ...]

    @property
    def done(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.status == "done")

    @property
    def complete(self) -> bool:
        """Every candidate trained or failed: nothing left to do."""
        return all(e.status != "pending" for e in self.entries)

    def with_entry(self, entry: Entry) -> Table:
        """This table with the entry of ``entry.key`` replaced."""
        assert any(e.key == entry.key for e in self.entries), f"no entry {entry.key}"
        return replace(
            self, entries=tuple(entry if e.key == entry.key else e for e in self.entries)
        )


def candidate_label(candidate: Candidate) -> str:
    """``1-1-1-1 w0.25 r32 wd5e-05 do0 ra1x10``: the architecture as reports print it, then the
    recipe values the quickstart searches (short enough for a progress line)."""
    a, r = candidate.arch, candidate.recipe
    augment = f"ra{r.randaug_layers}x{r.randaug_magnitude}" if r.randaug_layers else "ra0"
    return f"{a.label} w{a.width:g} r{a.resolution} wd{r.weight_decay:g} do{r.dropout:g} {augment}"


def _round(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.6g}")


# ---------------------------------------------------------------------------------------------
# Writing


def dumps_table(table: Table) -> str:
    lines = [table.header.to_dict()] + [e.to_dict() for e in table.entries]
    return "".join(
        json.dumps(line, separators=(", ", ": "), allow_nan=False) + "\n" for line in lines
    )


def write_table(path: Path, table: Table) -> None:
    """Replace ``path`` with ``table`` in one rename (a reader sees the old or the new file)."""
    from rs_search.train.checkpoint import write_atomic

    text = dumps_table(table).encode()
    try:
        write_atomic(Path(path), lambda fh: fh.write(text))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)  # the temporary file was private (mkstemp)
    except OSError as exc:
        raise TableError(f"{path}: cannot write the table ({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------------------------
# Reading (the file is untrusted: every field is checked, every problem is one TableError)


class _Bad(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


def load_table(path: str | Path) -> Table:
    """Read and validate a table file; any problem is one ``TableError`` naming the line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise TableError(
                f"{path}: {size} bytes is larger than a benchmark table can be "
                f"(at most {MAX_BYTES // 2**20} MiB)"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise TableError(f"{path}: cannot read the table ({exc.strerror or exc})") from None
    return loads_table(raw, source=str(path))


def loads_table(raw: bytes | str, *, source: str = "<table>") -> Table:
    """Validate the text of a table file (see ``load_table``)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TableError(
                f"{source}: not a benchmark table (not UTF-8 text at byte {exc.start}); "
                f"expected the JSON lines `rs-search bench table` writes"
            ) from None
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        raise TableError(
            f"{source}: line {len(lines)} is cut off (no newline at the end): the file is "
            "truncated; an rs-search table always ends with a complete line"
        )
    if not lines:
        raise TableError(f"{source}: empty file; expected a header line and candidate lines")
    try:
        header = _header(_json(lines[0], 1))
        entries = [_entry(_json(text, i), header, i) for i, text in enumerate(lines[1:], start=2)]
    except _Bad as exc:
        raise TableError(f"{source}: {exc}") from None
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries, start=2):
        if entry.key in seen:
            raise TableError(
                f"{source}: line {i}: candidate {entry.key} is listed twice (also line "
                f"{seen[entry.key]}); each candidate once"
            )
        seen[entry.key] = i
    if not entries:
        raise TableError(f"{source}: the header is not followed by any candidate line")
    return Table(header=header, entries=tuple(entries))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a table may hold")


def _json(text: str, line: int) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).split("\n")[0][:120]
        raise _Bad(f"line {line}", f"not valid JSON ({reason})") from None
    if not isinstance(value, dict):
        raise _Bad(f"line {line}", f"expected a JSON object, got {type(value).__name__}")
    return value


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise _Bad(where, f"missing field {key!r}")
    value = data[key]
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _types(kind))
    if not ok:
        raise _Bad(f"{where}.{key}", f"expected {_names(kind)}, got {_word(value)}")
    return value


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    words = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}
    words.update({dict: "an object", list: "a list", type(None): "null"})
    return " or ".join(words.get(t, t.__name__) for t in _types(kind))


def _word(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"text {value[:40]!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"[:60]
    return "a list" if isinstance(value, list) else "an object"


def _number(data: Mapping[str, Any], key: str, where: str, *, low: float = 0.0) -> float:
    value = float(_get(data, key, (int, float), where))
    if not math.isfinite(value) or value < low:
        raise _Bad(f"{where}.{key}", f"{value!r} is out of range; expected a number >= {low:g}")
    return value


def _header(data: dict[str, Any]) -> Header:
    where = "line 1 (header)"
    if data.get("format") != FORMAT:
        raise _Bad(
            where,
            f"not an rs-search benchmark table (format {_word(data.get('format'))}; "
            f"expected {FORMAT!r})",
        )
    version = _get(data, "version", int, where)
    if version > VERSION:
        raise _Bad(
            where,
            f"table version {version} was written by a newer rs-search (this one reads up to "
            f"{VERSION}); upgrade rs-search",
        )
    if version < 1:
        raise _Bad(f"{where}.version", f"{version}; expected 1..{VERSION}")
    space_data = _get(data, "space", dict, where)
    spec = _get(space_data, "spec", dict, f"{where}.space")
    try:
        space = SearchSpace.from_dict(spec, source=f"{where}.space.spec")
    except (SpaceError, SpecError) as exc:
        raise _Bad("", str(exc)) from None
    fingerprint = _get(space_data, "fingerprint", str, f"{where}.space")
    if fingerprint != space.fingerprint():
        raise _Bad(
            f"{where}.space.fingerprint",
            f"{fingerprint[:32]!r} does not match the space it describes "
            f"({space.fingerprint()}): the header was edited",
        )
    budget = _get(data, "budget_epochs", int, where)
    if budget < 1:
        raise _Bad(f"{where}.budget_epochs", f"{budget}; expected >= 1")
    grid = _get(data, "grid", dict, where)
    mode = _get(grid, "mode", str, f"{where}.grid")
    if mode not in ("all", "sampled"):
        raise _Bad(f"{where}.grid.mode", f"{mode[:40]!r}; expected all or sampled")
    distinct = _get(grid, "distinct", (int, type(None)), f"{where}.grid")
    seconds = _get(data, "seconds", dict, where)
    versions = _get(data, "versions", dict, where)
    for key, value in versions.items():
        if not isinstance(value, str):
            raise _Bad(f"{where}.versions.{key}", f"expected text, got {_word(value)}")
    profile = _get(data, "profile", dict, where)
    return Header(
        space=space,
        data=_get(data, "data", str, where),
        budget_epochs=budget,
        seed=_get(data, "seed", int, where),
        grid_mode=mode,
        grid_requested=_get(grid, "requested", int, f"{where}.grid"),
        grid_distinct=distinct,
        profile=_checked_profile(profile, f"{where}.profile"),
        profile_key=_get(data, "profile_key", str, where),
        device_name=_get(data, "device_name", str, where),
        train_device=_get(data, "train_device", str, where),
        versions=dict(versions),
        created_at=_get(data, "created_at", str, where),
        updated_at=_get(data, "updated_at", str, where),
        seconds={k: _number(seconds, k, f"{where}.seconds") for k in ("train", "latency", "wall")},
        latency_retimed_at=_get(data, "latency_retimed_at", (str, type(None)), where)
        if "latency_retimed_at" in data
        else None,
    )


def _checked_profile(profile: dict[str, Any], where: str) -> dict[str, Any]:
    from rs_search.latency.profiles import HardwareProfile

    try:
        return HardwareProfile.from_dict(profile, where=where).to_dict()
    except (SpecError, RsSearchError) as exc:
        raise _Bad("", str(exc)) from None


def _entry(data: dict[str, Any], header: Header, line: int) -> Entry:
    where = f"line {line}"
    key = _get(data, "key", str, where)
    if not _KEY.match(key):
        raise _Bad(f"{where}.key", f"{key[:40]!r} is not a candidate key (16 hex digits)")
    where = f"{where} ({key})"
    status = _get(data, "status", str, where)
    if status not in STATUSES:
        raise _Bad(f"{where}.status", f"{status[:40]!r}; expected {', '.join(STATUSES)}")
    try:
        candidate = Candidate.from_dict(_get(data, "candidate", dict, where), where="candidate")
    except SpecError as exc:
        raise _Bad(where, str(exc)) from None
    if candidate.key() != key:
        raise _Bad(
            f"{where}.key",
            f"does not match its candidate (whose key is {candidate.key()}): the line was edited",
        )
    if candidate.recipe.epochs != header.budget_epochs:
        raise _Bad(
            f"{where}.candidate.recipe.epochs",
            f"{candidate.recipe.epochs}, but the table's budget is {header.budget_epochs} epochs",
        )
    problems = header.space.violations(candidate)
    if problems:
        raise _Bad(where, f"the candidate is outside the table's space: {problems[0]}")
    entry = Entry(candidate=candidate, status=status)
    if status == "pending":
        return entry
    for name in ("params", "flops"):
        if name in data:
            value = _get(data, name, int, where)
            if value < 0:
                raise _Bad(f"{where}.{name}", f"{value}; expected >= 0")
            entry = replace(entry, **{name: value})
    if status == "failed":
        error = _get(data, "error", str, where)
        stage = _get(data, "stage", str, where)
        if stage not in ("latency", "train"):
            raise _Bad(f"{where}.stage", f"{stage[:40]!r}; expected latency or train")
        return replace(entry, error=error[:_MAX_TEXT], stage=stage)
    if entry.params is None or entry.flops is None:
        raise _Bad(where, "a done candidate needs params and flops")
    return replace(
        entry,
        latency=_latency(_get(data, "latency", dict, where), f"{where}.latency"),
        curve=_curve(_get(data, "curve", dict, where), header.budget_epochs, f"{where}.curve"),
        train=_train(_get(data, "train", dict, where), header.budget_epochs, f"{where}.train"),
    )


def _latency(data: dict[str, Any], where: str) -> Latency:
    def optional(name: str) -> float | None:
        if data.get(name) is None:
            return None
        return _number(data, name, where)

    median = _number(data, "median_ms", where)
    if median <= 0:
        raise _Bad(f"{where}.median_ms", f"{median!r}; expected a positive number of ms")
    return Latency(
        median_ms=median,
        p90_ms=_number(data, "p90_ms", where),
        spread=optional("spread"),
        memory_mb=optional("memory_mb"),
        stable=_get(data, "stable", bool, where),
    )


def _curve(data: dict[str, Any], epochs: int, where: str) -> Curve:
    values: dict[str, tuple[float, ...]] = {}
    for name in CURVE_FIELDS:
        series = _get(data, name, list, where)
        if len(series) != epochs:
            raise _Bad(
                f"{where}.{name}",
                f"{len(series)} values; a done candidate has one per epoch of the "
                f"{epochs}-epoch budget",
            )
        top = 100.0 if name in _PERCENT_FIELDS else math.inf
        for i, v in enumerate(series):
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            if not ok or not 0 <= v <= top:
                bound = "0..100 (percent)" if top == 100 else "a finite number >= 0"
                raise _Bad(f"{where}.{name}[{i}]", f"{_word(v)}; expected {bound}")
        values[name] = tuple(float(v) for v in series)
    return Curve(**values)


def _train(data: dict[str, Any], epochs: int, where: str) -> TrainInfo:
    resumed = _get(data, "resumed_from_epoch", (int, type(None)), where)
    if resumed is not None and not 0 <= resumed <= epochs:
        raise _Bad(f"{where}.resumed_from_epoch", f"{resumed}; expected 0..{epochs} or null")
    return TrainInfo(
        seed=_get(data, "seed", int, where),
        seconds=_number(data, "seconds", where),
        resumed_from_epoch=resumed,
        finished_at=_get(data, "finished_at", str, where),
    )
