"""The latency cache: each architecture is measured once per hardware (DESIGN.md §3, "Latency").

Rows live in our ``rs_latency`` table (``rs_search.storage.tables``) in the study's database,
keyed by architecture key x profile key x torch version x device name. ``get_or_measure`` answers
a repeated request from the table without building a model; a request nobody has answered yet
is *claimed* first (an INSERT the unique key makes atomic), so two processes asking for the same
figure at once measure it once: the second waits for the first's row.

**Times come from the database's clock** (``_db_now``): claims and figures are written and
compared by processes on several hosts, whose clocks may disagree by more than a claim's timeout.

A claim whose holder died is *stale* after ``claim_timeout_s`` (its holder refreshes
``claimed_at`` while it measures, see ``Heartbeat``) and may be taken over by another process.

A **failed** figure (``oom`` or ``error``) expires after ``failure_ttl_s``: an out-of-memory on a
GPU another worker was using, or a passing error, must not fail every later trial of that
architecture. An expired failure reads as missing, and the next request measures it again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, insert, or_, select, text, update
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from rs_search.errors import StorageError, TrialInterrupted
from rs_search.latency.profiles import HardwareProfile, device_name, torch_version
from rs_search.latency.result import LatencyResult
from rs_search.latency.window import DEFAULT_PROTOCOL, Protocol
from rs_search.specs import ArchSpec
from rs_search.storage.engine import make_engine
from rs_search.storage.tables import LATENCY_CLAIMED, LATENCY_DONE, create_tables, latency
from rs_search.storage.url import mask_url

# A live holder refreshes its claim every timeout/4 (``Heartbeat``), however long it measures;
# a dead one's claim is taken over after this long.
DEFAULT_CLAIM_TIMEOUT_S = 600.0
# Project heuristic (the paper measures once, on an idle accelerator): a failed measurement is
# trusted for an hour. Long enough that a candidate that really does not fit costs one
# measurement an hour, short enough that an out-of-memory caused by a neighbour's training on the
# same GPU does not outlive the neighbour's trial for long.
FAILURE_TTL_S = 3600.0
# How often a wait looks at its stop flag: a scheduler's SIGTERM is honoured within this.
_STOP_POLL_S = 0.1


@dataclass(frozen=True)
class Key:
    """The four columns of the cache key."""

    arch_key: str
    profile_key: str
    torch_version: str
    device_name: str

    def where(self) -> Any:
        return and_(
            latency.c.arch_key == self.arch_key,
            latency.c.profile_key == self.profile_key,
            latency.c.torch_version == self.torch_version,
            latency.c.device_name == self.device_name,
        )


@dataclass(frozen=True)
class Claim:
    """A row this process holds in state ``claimed``: measure, then ``complete`` or ``release``."""

    key: Key
    worker: str
    arch: ArchSpec
    profile: HardwareProfile


def local_key(arch: ArchSpec, profile: HardwareProfile, device: str | None = None) -> Key:
    """The key a measurement of ``arch`` on ``profile`` made *here* on ``device`` (default: the
    profile's device) gets."""
    return Key(arch.key(), profile.key(), torch_version(), device_name(device or profile.device))


def wait(seconds: float, stop: Callable[[], bool] | None) -> None:
    """Sleep ``seconds``, looking at ``stop`` every 0.1 s; ``TrialInterrupted`` once it is set."""
    deadline = time.monotonic() + seconds
    while True:
        if stop is not None and stop():
            raise TrialInterrupted("stopped while waiting for a latency figure")
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _STOP_POLL_S))


class LatencyCache:
    """Latency figures in the study database. ``storage``: a URL (see ``resolve_storage_url``) or
    an engine to share. Creates the ``rs_`` tables when they are missing."""

    def __init__(
        self,
        storage: str | URL | Engine | None = None,
        *,
        claim_timeout_s: float = DEFAULT_CLAIM_TIMEOUT_S,
        failure_ttl_s: float = FAILURE_TTL_S,
    ) -> None:
        self._owns_engine = not isinstance(storage, Engine)
        self.engine = storage if isinstance(storage, Engine) else make_engine(storage)
        self.claim_timeout_s = claim_timeout_s
        self.failure_ttl_s = failure_ttl_s
        create_tables(self.engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> LatencyCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------

    def get(
        self, arch: ArchSpec, profile: HardwareProfile, *, device: str | None = None
    ) -> LatencyResult | None:
        """This machine's figure for ``arch`` on ``profile`` taken on ``device`` (default: the
        profile's device) with this torch version (the full cache key), or None. An expired
        failure is None."""
        return self._first(local_key(arch, profile, device).where())

    def find(
        self, arch: ArchSpec, profile: HardwareProfile, *, device_name: str | None
    ) -> LatencyResult | None:
        """A figure for ``arch`` on ``profile`` taken on a device called ``device_name`` by any
        torch version (what a study reads when a latency worker on the target hardware filled
        the table), stable first, then the newest; ``device_name=None``: on any device (an
        estimate only: figures of different hardware are not comparable)."""
        where = and_(latency.c.arch_key == arch.key(), latency.c.profile_key == profile.key())
        if device_name is not None:
            where = and_(where, latency.c.device_name == device_name)
        return self._first(where)

    def device_names(self, profile: HardwareProfile) -> set[str]:
        """The devices that hold finished figures for ``profile``'s settings."""
        query = (
            select(latency.c.device_name)
            .where(latency.c.profile_key == profile.key(), latency.c.state == LATENCY_DONE)
            .distinct()
        )
        with self._session("read the latency cache") as conn:
            return {r[0] for r in conn.execute(query)}

    def results(self, profile: HardwareProfile | None = None) -> list[LatencyResult]:
        """Every stored figure (for ``profile``'s settings when given), oldest first."""
        query = (
            select(latency.c.result).where(latency.c.state == LATENCY_DONE).order_by(latency.c.id)
        )
        if profile is not None:
            query = query.where(latency.c.profile_key == profile.key())
        with self._session("read the latency cache") as conn:
            return [_result(r[0]) for r in conn.execute(query)]

    def done_keys(self, profile: HardwareProfile, *, device: str | None = None) -> set[str]:
        """Architecture keys with a figure for ``profile`` on ``device`` (default: the profile's)
        here that need no new measurement (expired failures do)."""
        key = local_key(ArchSpec(), profile, device)
        with self._session("read the latency cache") as conn:
            query = select(latency.c.arch_key).where(
                latency.c.profile_key == key.profile_key,
                latency.c.torch_version == key.torch_version,
                latency.c.device_name == key.device_name,
                self._valid(_db_now(conn)),
            )
            return {r[0] for r in conn.execute(query)}

    # -- writing -------------------------------------------------------------------------------

    def put(self, arch: ArchSpec, profile: HardwareProfile, result: LatencyResult) -> None:
        """Store ``result`` (insert or replace the row of its key, claimed or not)."""
        _check_matches(arch, profile, result)
        key = Key(result.arch_key, result.profile_key, result.torch_version, result.device_name)
        values = {
            **_figure_columns(result),
            "state": LATENCY_DONE,
            "arch": arch.to_dict(),
            "profile": profile.to_dict(),
            "profile_name": profile.name,
        }
        for _ in range(3):
            with self._session("write the latency cache") as conn:
                now = _db_now(conn)
                stmt = update(latency).where(key.where()).values(**values, measured_at=now)
                if conn.execute(stmt).rowcount:
                    return
            try:
                with self._session("write the latency cache", integrity=True) as conn:
                    row = {**_key_columns(key), **values, "measured_at": _db_now(conn)}
                    conn.execute(insert(latency).values(**row))
                return
            except IntegrityError:
                continue  # inserted by someone else meanwhile: update it
        raise StorageError("cannot write the latency cache: the row keeps changing under us")

    def delete(self, arch: ArchSpec, profile: HardwareProfile, *, device: str | None = None) -> int:
        """Forget this machine's figure for ``arch`` on ``profile`` (to measure it again)."""
        where = local_key(arch, profile, device).where()
        with self._session("write the latency cache") as conn:
            return int(conn.execute(delete(latency).where(where)).rowcount)

    # -- claims --------------------------------------------------------------------------------

    def try_claim(
        self, arch: ArchSpec, profile: HardwareProfile, worker: str, *, device: str | None = None
    ) -> Claim | None:
        """Claim the measurement of ``arch`` on ``profile`` on ``device`` (default: the
        profile's) here; None when a valid figure exists or another live process holds the
        claim. Atomic: of concurrent callers exactly one wins. A stale claim or an expired
        failure is taken over."""
        key = local_key(arch, profile, device)
        claim = Claim(key, worker, arch, profile)
        try:
            with self._session("claim a latency measurement", integrity=True) as conn:
                row = {
                    **_key_columns(key),
                    "state": LATENCY_CLAIMED,
                    "claimed_by": worker,
                    "claimed_at": _db_now(conn),
                    "profile_name": profile.name,
                    "arch": arch.to_dict(),
                    "profile": profile.to_dict(),
                }
                conn.execute(insert(latency).values(**row))
            return claim
        except IntegrityError:
            pass
        # The row exists: a valid figure, a claim of a live process, or one to take over.
        with self._session("claim a latency measurement") as conn:
            now = _db_now(conn)
            stale = and_(
                latency.c.state == LATENCY_CLAIMED,
                latency.c.claimed_at < now - timedelta(seconds=self.claim_timeout_s),
            )
            stmt = (
                update(latency)
                .where(key.where(), or_(stale, self._expired(now)))
                .values(state=LATENCY_CLAIMED, claimed_by=worker, claimed_at=now)
            )
            won = conn.execute(stmt).rowcount == 1
        return claim if won else None

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim's time; False when the claim was lost (taken over as stale)."""
        with self._session("refresh a latency claim") as conn:
            stmt = update(latency).where(*_held(claim)).values(claimed_at=_db_now(conn))
            return bool(conn.execute(stmt).rowcount == 1)

    def complete(self, claim: Claim, result: LatencyResult) -> bool:
        """Write the figure into our claimed row; False (nothing written) if the claim was lost."""
        _check_matches(claim.arch, claim.profile, result)
        with self._session("write the latency cache") as conn:
            stmt = (
                update(latency)
                .where(*_held(claim))
                .values(**_figure_columns(result), state=LATENCY_DONE, measured_at=_db_now(conn))
            )
            return bool(conn.execute(stmt).rowcount == 1)

    def release(self, claim: Claim) -> None:
        """Give a claim back unmeasured (interrupted), so another process can take it at once."""
        with self._session("release a latency claim") as conn:
            conn.execute(delete(latency).where(*_held(claim)))

    def holder(
        self, arch: ArchSpec, profile: HardwareProfile, *, device: str | None = None
    ) -> str | None:
        """Who holds the claim for ``arch`` on ``profile`` here (None: unclaimed or done)."""
        query = select(latency.c.claimed_by).where(
            local_key(arch, profile, device).where(), latency.c.state == LATENCY_CLAIMED
        )
        with self._session("read the latency cache") as conn:
            row = conn.execute(query).first()
        return None if row is None else row[0]

    # -- the one call a search makes -----------------------------------------------------------

    def get_or_measure(
        self,
        arch: ArchSpec,
        profile: HardwareProfile,
        *,
        device: str,
        protocol: Protocol = DEFAULT_PROTOCOL,
        train_step_memory: bool = False,
        recipe_batch_size: int | None = None,
        worker: str | None = None,
        poll_s: float = 1.0,
        stop: Callable[[], bool] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> LatencyResult:
        """The figure of ``arch`` on ``profile`` on this machine's ``device``: from the table
        when it is there, else measured (``rs_search.latency.measure.measure``) under a claim
        and stored.

        When another process holds the claim, waits for its figure (polling every ``poll_s``)
        until the claim goes stale, then takes it over; ``stop`` (a callable, e.g. the worker's
        SIGTERM flag) ends the wait with ``TrialInterrupted`` within 0.1 s, and a measurement of
        its own between two repetitions (its claim is released). A cached figure
        without the training-step memory asked for is measured again.
        """
        from rs_search.latency.measure import measure

        def run() -> LatencyResult:
            return measure(
                arch,
                profile,
                device=device,
                protocol=protocol,
                train_step_memory=train_step_memory,
                recipe_batch_size=recipe_batch_size,
                progress=progress,
                stop=stop,
            )

        worker = worker or default_worker_id()
        waiting = False
        while True:
            cached = self.get(arch, profile, device=device)
            if cached is not None and (
                not train_step_memory
                or cached.status != "ok"
                or cached.train_peak_memory_mb is not None
            ):
                return cached
            claim = self.try_claim(arch, profile, worker, device=device)
            if claim is None and cached is not None:  # done, but without the train-step figure
                result = run()
                self.put(arch, profile, result)
                return result
            if claim is None:
                if not waiting and progress is not None:
                    who = self.holder(arch, profile, device=device) or "another process"
                    progress(f"waiting for {who}, which is measuring this architecture")
                waiting = True
                wait(poll_s, stop)  # another process is measuring it
                continue
            try:
                with Heartbeat(self, claim):
                    result = run()
            except BaseException:
                self.release(claim)
                raise
            if not self.complete(claim, result):
                self.put(arch, profile, result)  # our claim was taken over: the figure still counts
            return result

    # -- plumbing ------------------------------------------------------------------------------

    def _valid(self, now: datetime) -> Any:
        """Finished rows that still count at ``now``: figures, and failures younger than the
        TTL."""
        return and_(
            latency.c.state == LATENCY_DONE,
            or_(
                latency.c.status == "ok",
                latency.c.measured_at >= now - timedelta(seconds=self.failure_ttl_s),
            ),
        )

    def _expired(self, now: datetime) -> Any:
        return and_(
            latency.c.state == LATENCY_DONE,
            latency.c.status != "ok",
            latency.c.measured_at < now - timedelta(seconds=self.failure_ttl_s),
        )

    def _first(self, where: Any) -> LatencyResult | None:
        with self._session("read the latency cache") as conn:
            query = (
                select(latency.c.result)
                .where(where, self._valid(_db_now(conn)))
                .order_by(latency.c.stable.desc(), latency.c.measured_at.desc())
                .limit(1)
            )
            row = conn.execute(query).first()
        return None if row is None else _result(row[0])

    @contextmanager
    def _session(self, what: str, *, integrity: bool = False) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            if integrity:
                raise
            raise StorageError(
                f"cannot {what} in {mask_url(self.engine.url)}: conflicting row"
            ) from None
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            if self.engine.url.password:
                reason = reason.replace(str(self.engine.url.password), "***")
            raise StorageError(f"cannot {what} in {mask_url(self.engine.url)}: {reason}") from None


class Heartbeat:
    """Refreshes a claim every ``claim_timeout_s / 4`` from a daemon thread while measuring, so
    a long measurement is not mistaken for a dead worker."""

    def __init__(self, cache: LatencyCache, claim: Claim) -> None:
        self._cache = cache
        self._claim = claim
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rs-latency-heartbeat", daemon=True)

    def _run(self) -> None:
        interval = max(1.0, self._cache.claim_timeout_s / 4)
        while not self._stop.wait(interval):
            try:
                if not self._cache.heartbeat(self._claim):
                    return  # taken over as stale; ``complete`` will say so
            except StorageError:
                continue  # the database blinked; the next beat may get through

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def default_worker_id() -> str:
    """``host:pid``: who holds a claim, readable in ``psql``."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


_NOW = {
    "postgresql": "SELECT timezone('UTC', clock_timestamp())",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
}


def _db_now(conn: Connection) -> datetime:
    """The database's current time, naive UTC (the table's convention), read from the database
    itself (SQLite's is the system clock of the host that holds the file)."""
    query = _NOW.get(conn.dialect.name)
    if query is None:
        return datetime.now(UTC).replace(tzinfo=None)
    value = conn.execute(text(query)).scalar_one()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime), value
    return value.replace(tzinfo=None)


def _held(claim: Claim) -> tuple[Any, ...]:
    return (
        claim.key.where(),
        latency.c.state == LATENCY_CLAIMED,
        latency.c.claimed_by == claim.worker,
    )


def _key_columns(key: Key) -> dict[str, str]:
    return {
        "arch_key": key.arch_key,
        "profile_key": key.profile_key,
        "torch_version": key.torch_version,
        "device_name": key.device_name,
    }


def _figure_columns(result: LatencyResult) -> dict[str, Any]:
    """The figure's columns; ``measured_at`` is the database's time of writing (``_db_now``),
    the measuring host's own clock stays in ``result``."""
    return {
        "status": result.status,
        "median_ms": result.median_ms,
        "p90_ms": result.p90_ms,
        "spread": result.spread,
        "peak_memory_mb": result.peak_memory_mb,
        "train_peak_memory_mb": result.train_peak_memory_mb,
        "stable": result.stable,
        "result": result.to_dict(),
        "error": result.error,
        "profile_name": result.profile_name,
    }


def _result(data: Any) -> LatencyResult:
    if isinstance(data, str):  # a JSON column some drivers hand back as text
        data = json.loads(data)
    return LatencyResult.from_dict(data, where="rs_latency.result")


def _check_matches(arch: ArchSpec, profile: HardwareProfile, result: LatencyResult) -> None:
    if result.arch_key != arch.key() or result.profile_key != profile.key():
        raise ValueError(
            f"result {result.arch_key}/{result.profile_key} does not belong to "
            f"arch {arch.key()} on profile {profile.key()}"
        )
