"""``LatencyResult``: one measurement of one architecture on one hardware profile.

``mode`` says what one pass was: an inference forward pass, or a training step (forward,
backward, SGD step) at ``batch_size`` images, the batch that fitted (the profile's, halved until
a step fits). ``status`` says what the figure answers: ``ok`` (timed), ``oom`` (does not fit on
this device at this batch size: an answer for the search, not a crash) or ``error`` (something
else failed; the message is in ``error``). Timing fields are ``None`` unless the status is ``ok``.

``stable`` is False when the repetition medians still disagreed by more than the protocol's
tolerance after the last repetition: the figure is stored (so nothing measures it forever) but
flagged, never passed off as a good one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rs_search.errors import SpecError
from rs_search.latency.profiles import MODES

STATUSES: tuple[str, ...] = ("ok", "oom", "error")


@dataclass(frozen=True, kw_only=True)
class LatencyResult:
    arch_key: str
    profile_name: str
    profile_key: str
    device_name: str
    torch_version: str
    status: str  # ok | oom | error
    mode: str = "inference"  # inference | train_step (HardwareProfile.mode)
    median_ms: float | None = None  # per pass (a batch of batch_size images)
    p90_ms: float | None = None
    spread: float | None = None  # (max - min) / median of the repetition medians used
    peak_memory_mb: float | None = None  # inference; see rs_search.latency.memory
    train_peak_memory_mb: float | None = None  # one training step, when asked for
    iterations: int = 0  # timed forward passes behind median_ms / p90_ms
    repeats: int = 0  # repetitions run (a repetition = a timed block of iterations)
    stable: bool = False
    measured_at: str = ""  # ISO 8601, UTC
    batch_size: int = 1  # images per timed pass (train_step: the batch that fitted)
    threads: int | None = None  # torch threads during the measurement (CPU)
    load_avg: float | None = None  # 1-minute load average at the start (context)
    contention: float | None = None  # share of the reported passes that waited for a CPU
    # CPU: median CPU time of this process per pass / threads. Close to median_ms on a quiet
    # machine (with one thread, it is the pass's own compute); a median_ms far above it means
    # other processes held the CPUs. A diagnostic, not the latency.
    cpu_ms: float | None = None
    others_busy: float | None = None  # CPU: share of the machine other processes used meanwhile
    # A fixed matmul kernel timed after each repetition (measure._Reference): its median in the
    # reported window and its spread. Two figures taken at different reference times were taken
    # at different machine speeds (host frequency, sibling hyperthread).
    reference_ms: float | None = None
    reference_spread: float | None = None
    error: str | None = None  # why, when status is oom or error

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise SpecError(f"latency.status: {self.status!r}; allowed: {', '.join(STATUSES)}")
        if self.mode not in MODES:
            raise SpecError(f"latency.mode: {self.mode!r}; allowed: {', '.join(MODES)}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def fits(self) -> bool:
        """False only when the candidate is known not to fit (status ``oom``)."""
        return self.status != "oom"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "latency") -> LatencyResult:
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(known))}"
            )
        try:
            return cls(**dict(data))
        except TypeError as exc:  # a required key is missing
            raise SpecError(f"{where}: {exc}") from None

    def summary(self) -> str:
        """One line: ``12.3 ms/batch (p90 13.0, spread 1.2%, 5x40 it), 45.6 MB``."""
        if self.status == "oom":
            why = f": {self.error}" if self.error else ""
            at = "even at batch 1" if self.mode == "train_step" else f"at batch {self.batch_size}"
            return f"does not fit (out of memory {at}){why}"
        if self.status == "error":
            return f"error: {self.error}"
        assert self.median_ms is not None and self.p90_ms is not None and self.spread is not None
        flag = "" if self.stable else " UNSTABLE"
        mem = f", peak {self.peak_memory_mb:.1f} MB" if self.peak_memory_mb is not None else ""
        train = (
            f", train step {self.train_peak_memory_mb:.1f} MB"
            if self.train_peak_memory_mb is not None
            else ""
        )
        unit = f"ms/training step of {self.batch_size}" if self.mode == "train_step" else "ms/batch"
        return (
            f"{self.median_ms:.3f} {unit} (p90 {self.p90_ms:.3f}, spread "
            f"{100 * self.spread:.1f}%{flag}, {self.iterations} passes in {self.repeats} reps)"
            f"{mem}{train}"
        )
