"""The process environment, read once at an entry point into one frozen object.

Every ``RS_SEARCH_*`` variable is named, parsed and checked here, and nowhere else: the CLI (and
the worker and torchrun entry points) call :meth:`Environment.from_environ` once, before anything
is created, and pass the values on as arguments. A bad value is one ``RsSearchError`` that names
the variable, what it held and what is allowed (exit status 2), never a traceback deep inside a
worker after a study was already created (issue 10, audit).

Variables (all optional):

- ``RS_SEARCH_STORAGE``: the study database URL when ``--storage`` is not given (it is how
  ``start`` hands the URL to its workers: never on a command line, where ``ps`` would show a
  password).
- ``RS_SEARCH_STORAGE_RETRY_S``: seconds a storage call keeps retrying while the database is
  unreachable (default 120).
- ``RS_SEARCH_HEARTBEAT``: ``INTERVAL,GRACE`` in whole seconds; overrides the study's heartbeat
  settings for this process (tests use ``1,3``; production studies 30 s / 120 s).
- ``RS_SEARCH_LATENCY_PROTOCOL``: overrides of the latency protocol's knobs,
  ``name=value,name=value`` (tests and smoke runs that need a quick figure).
- ``RS_SEARCH_LATENCY_WAIT_S``: seconds a worker waits for a latency figure that only another
  machine can measure (default 3600).
- ``RS_SEARCH_PROGRESS``: ``rich``, ``plain`` or ``off`` (default: a bar on a terminal, plain
  lines otherwise).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rs_search.errors import RsSearchError

STORAGE = "RS_SEARCH_STORAGE"
STORAGE_RETRY_S = "RS_SEARCH_STORAGE_RETRY_S"
HEARTBEAT = "RS_SEARCH_HEARTBEAT"
LATENCY_PROTOCOL = "RS_SEARCH_LATENCY_PROTOCOL"
LATENCY_WAIT_S = "RS_SEARCH_LATENCY_WAIT_S"
PROGRESS = "RS_SEARCH_PROGRESS"

ProgressMode = Literal["rich", "plain", "off"]
PROGRESS_MODES: tuple[ProgressMode, ...] = ("rich", "plain", "off")

# Upper bounds: a value beyond them is a typo, not a setting (a retry window of a year would
# leave a trial RUNNING without a heartbeat for that long).
_MAX_RETRY_S = 24 * 3600.0
_MAX_WAIT_S = 7 * 24 * 3600.0
_MAX_HEARTBEAT_S = 24 * 3600


class EnvError(RsSearchError):
    """An ``RS_SEARCH_*`` variable holds a value that is not allowed."""


@dataclass(frozen=True, kw_only=True)
class Environment:
    """The ``RS_SEARCH_*`` settings of this process (None: not set, use the default)."""

    storage: str | None = None
    storage_retry_s: float | None = None
    heartbeat: tuple[int, int] | None = None
    latency_protocol: tuple[tuple[str, str], ...] = ()
    latency_wait_s: float | None = None
    progress: ProgressMode | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """Parse and check every variable; raises ``EnvError`` on the first bad one."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            raw = env.get(name)
            return raw.strip() if raw is not None and raw.strip() else None

        return cls(
            storage=get(STORAGE),
            storage_retry_s=_seconds(STORAGE_RETRY_S, get(STORAGE_RETRY_S), _MAX_RETRY_S),
            heartbeat=_heartbeat(get(HEARTBEAT)),
            latency_protocol=_knobs(get(LATENCY_PROTOCOL)),
            latency_wait_s=_seconds(LATENCY_WAIT_S, get(LATENCY_WAIT_S), _MAX_WAIT_S),
            progress=_progress(get(PROGRESS)),
        )

    def child_environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a child process (a local worker, a torchrun rank) that must see
        the same settings: ``base`` (default ``os.environ``) with these values written back."""
        out = dict(os.environ if base is None else base)
        values = {
            STORAGE: self.storage,
            STORAGE_RETRY_S: None if self.storage_retry_s is None else repr(self.storage_retry_s),
            HEARTBEAT: None if self.heartbeat is None else "{},{}".format(*self.heartbeat),
            LATENCY_PROTOCOL: ",".join(f"{k}={v}" for k, v in self.latency_protocol) or None,
            LATENCY_WAIT_S: None if self.latency_wait_s is None else repr(self.latency_wait_s),
            PROGRESS: self.progress,
        }
        for name, value in values.items():
            if value is None:
                out.pop(name, None)
            else:
                out[name] = value
        return out


def _bad(name: str, raw: str, allowed: str) -> EnvError:
    shown = raw if len(raw) <= 60 else raw[:57] + "..."
    return EnvError(f"${name}={shown!r}: {allowed}")


def _seconds(name: str, raw: str | None, most: float) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, raw, "expected a number of seconds, e.g. 120") from None
    if not math.isfinite(value) or value < 0 or value > most:
        raise _bad(name, raw, f"expected seconds between 0 and {most:g}")
    return value


def _heartbeat(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    allowed = "expected INTERVAL,GRACE in whole seconds with 1 <= INTERVAL < GRACE, e.g. 30,120"
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise _bad(HEARTBEAT, raw, allowed)
    interval, grace = int(parts[0]), int(parts[1])
    if not 1 <= interval < grace <= _MAX_HEARTBEAT_S:
        raise _bad(HEARTBEAT, raw, allowed)
    return interval, grace


def _knobs(raw: str | None) -> tuple[tuple[str, str], ...]:
    """``name=value,name=value`` -> pairs; the latency module checks names and values."""
    if raw is None:
        return ()
    pairs = []
    for item in raw.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name.isidentifier() or not value:
            raise _bad(LATENCY_PROTOCOL, raw, "expected name=value pairs separated by commas")
        pairs.append((name, value))
    return tuple(pairs)


def _progress(raw: str | None) -> ProgressMode | None:
    if raw is None:
        return None
    for mode in PROGRESS_MODES:
        if raw.lower() == mode:
            return mode
    raise _bad(PROGRESS, raw, f"allowed: {', '.join(PROGRESS_MODES)}")
