"""The latency cache: each architecture is measured once per hardware (DESIGN.md §3, "Latency").

Rows live in our ``rs_latency`` table (``rs_search.storage.tables``) in the study's database,
keyed by architecture key x profile key x torch version x device name. ``get_or_measure`` answers
a repeated request from the table without building a model; a request nobody has answered yet
is *claimed* first (an INSERT the unique key makes atomic), so two processes asking for the same
figure at once measure it once: the second waits for the first's row.

A claim whose holder died is *stale* after ``claim_timeout_s`` (its holder refreshes
``claimed_at`` while it measures, see ``Heartbeat``) and may be taken over by another process.
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

from sqlalchemy import Engine, and_, delete, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from rs_search.errors import StorageError
from rs_search.latency.profiles import HardwareProfile, device_name, torch_version
from rs_search.latency.result import LatencyResult
from rs_search.specs import ArchSpec
from rs_search.storage.engine import make_engine
from rs_search.storage.tables import LATENCY_CLAIMED, LATENCY_DONE, create_tables, latency
from rs_search.storage.url import mask_url

# A live holder refreshes its claim every timeout/4 (``Heartbeat``), however long it measures;
# a dead one's claim is taken over after this long.
DEFAULT_CLAIM_TIMEOUT_S = 600.0


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


def local_key(arch: ArchSpec, profile: HardwareProfile) -> Key:
    """The key a measurement of ``arch`` on ``profile`` made *here* gets."""
    return Key(arch.key(), profile.key(), torch_version(), device_name(profile.device))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class LatencyCache:
    """Latency figures in the study database. ``storage``: a URL (see ``resolve_storage_url``) or
    an engine to share. Creates the ``rs_`` tables when they are missing."""

    def __init__(
        self,
        storage: str | URL | Engine | None = None,
        *,
        claim_timeout_s: float = DEFAULT_CLAIM_TIMEOUT_S,
    ) -> None:
        self._owns_engine = not isinstance(storage, Engine)
        self.engine = storage if isinstance(storage, Engine) else make_engine(storage)
        self.claim_timeout_s = claim_timeout_s
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
        self, arch: ArchSpec, profile: HardwareProfile, *, any_device: bool = False
    ) -> LatencyResult | None:
        """The stored figure for ``arch`` on ``profile``, or None.

        By default only a figure taken on this machine's device with this torch version counts
        (the full cache key). ``any_device=True`` accepts a figure from any device and torch
        version for the same profile settings — what a study training on one machine reads when a
        latency worker on the deployment hardware fills the table: stable figures first, then the
        newest.
        """
        if any_device:
            where = and_(latency.c.arch_key == arch.key(), latency.c.profile_key == profile.key())
        else:
            where = local_key(arch, profile).where()
        query = (
            select(latency.c.result)
            .where(where, latency.c.state == LATENCY_DONE)
            .order_by(latency.c.stable.desc(), latency.c.measured_at.desc())
            .limit(1)
        )
        with self._session("read the latency cache") as conn:
            row = conn.execute(query).first()
        return None if row is None else _result(row[0])

    def results(self, profile: HardwareProfile | None = None) -> list[LatencyResult]:
        """Every stored figure (for ``profile``'s settings when given), oldest first."""
        query = (
            select(latency.c.result).where(latency.c.state == LATENCY_DONE).order_by(latency.c.id)
        )
        if profile is not None:
            query = query.where(latency.c.profile_key == profile.key())
        with self._session("read the latency cache") as conn:
            return [_result(r[0]) for r in conn.execute(query)]

    def done_keys(self, profile: HardwareProfile) -> set[str]:
        """Architecture keys with a finished figure for ``profile`` on this machine's device."""
        key = local_key(ArchSpec(), profile)
        query = select(latency.c.arch_key).where(
            latency.c.profile_key == key.profile_key,
            latency.c.torch_version == key.torch_version,
            latency.c.device_name == key.device_name,
            latency.c.state == LATENCY_DONE,
        )
        with self._session("read the latency cache") as conn:
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
                if conn.execute(update(latency).where(key.where()).values(**values)).rowcount:
                    return
            try:
                with self._session("write the latency cache", integrity=True) as conn:
                    conn.execute(insert(latency).values(**_key_columns(key), **values))
                return
            except IntegrityError:
                continue  # inserted by someone else meanwhile: update it
        raise StorageError("cannot write the latency cache: the row keeps changing under us")

    def delete(self, arch: ArchSpec, profile: HardwareProfile) -> int:
        """Forget this machine's figure for ``arch`` on ``profile`` (to measure it again)."""
        with self._session("write the latency cache") as conn:
            return int(
                conn.execute(delete(latency).where(local_key(arch, profile).where())).rowcount
            )

    # -- claims --------------------------------------------------------------------------------

    def try_claim(self, arch: ArchSpec, profile: HardwareProfile, worker: str) -> Claim | None:
        """Claim the measurement of ``arch`` on ``profile`` here; None when the figure exists or
        another live process holds the claim. Atomic: of concurrent callers exactly one wins."""
        key = local_key(arch, profile)
        claim = Claim(key, worker, arch, profile)
        row = {
            **_key_columns(key),
            "state": LATENCY_CLAIMED,
            "claimed_by": worker,
            "claimed_at": _now(),
            "profile_name": profile.name,
            "arch": arch.to_dict(),
            "profile": profile.to_dict(),
        }
        try:
            with self._session("claim a latency measurement", integrity=True) as conn:
                conn.execute(insert(latency).values(**row))
            return claim
        except IntegrityError:
            pass
        # The row exists: done, held by a live process, or stale (its holder died).
        cutoff = _now() - timedelta(seconds=self.claim_timeout_s)
        stmt = (
            update(latency)
            .where(key.where(), latency.c.state == LATENCY_CLAIMED, latency.c.claimed_at < cutoff)
            .values(claimed_by=worker, claimed_at=_now())
        )
        with self._session("claim a latency measurement") as conn:
            won = conn.execute(stmt).rowcount == 1
        return claim if won else None

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim's time; False when the claim was lost (taken over as stale)."""
        stmt = (
            update(latency)
            .where(
                claim.key.where(),
                latency.c.state == LATENCY_CLAIMED,
                latency.c.claimed_by == claim.worker,
            )
            .values(claimed_at=_now())
        )
        with self._session("refresh a latency claim") as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def complete(self, claim: Claim, result: LatencyResult) -> bool:
        """Write the figure into our claimed row; False (nothing written) if the claim was lost."""
        _check_matches(claim.arch, claim.profile, result)
        stmt = (
            update(latency)
            .where(
                claim.key.where(),
                latency.c.state == LATENCY_CLAIMED,
                latency.c.claimed_by == claim.worker,
            )
            .values(**_figure_columns(result), state=LATENCY_DONE)
        )
        with self._session("write the latency cache") as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def release(self, claim: Claim) -> None:
        """Give a claim back unmeasured (interrupted), so another process can take it at once."""
        stmt = delete(latency).where(
            claim.key.where(),
            latency.c.state == LATENCY_CLAIMED,
            latency.c.claimed_by == claim.worker,
        )
        with self._session("release a latency claim") as conn:
            conn.execute(stmt)

    def holder(self, arch: ArchSpec, profile: HardwareProfile) -> str | None:
        """Who holds the claim for ``arch`` on ``profile`` here (None: unclaimed or done)."""
        query = select(latency.c.claimed_by).where(
            local_key(arch, profile).where(), latency.c.state == LATENCY_CLAIMED
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
        train_step_memory: bool = False,
        recipe_batch_size: int | None = None,
        worker: str | None = None,
        poll_s: float = 1.0,
        measure_fn: Callable[..., LatencyResult] | None = None,
        **measure_kwargs: Any,
    ) -> LatencyResult:
        """The figure of ``arch`` on ``profile`` on this machine: from the table when it is there,
        else measured (``rs_search.latency.measure.measure``) under a claim and stored.

        When another process holds the claim, waits for its figure (polling every ``poll_s``)
        until the claim goes stale, then takes it over. A cached figure without the training-step
        memory asked for is measured again.
        """
        if measure_fn is None:
            from rs_search.latency.measure import measure

            measure_fn = measure
        worker = worker or default_worker_id()
        progress = measure_kwargs.get("progress")
        waiting = False
        while True:
            cached = self.get(arch, profile)
            if cached is not None and (
                not train_step_memory
                or cached.status != "ok"
                or cached.train_peak_memory_mb is not None
            ):
                return cached
            claim = self.try_claim(arch, profile, worker)
            if claim is None and cached is not None:  # done, but without the train-step figure
                result = measure_fn(
                    arch,
                    profile,
                    train_step_memory=train_step_memory,
                    recipe_batch_size=recipe_batch_size,
                    **measure_kwargs,
                )
                self.put(arch, profile, result)
                return result
            if claim is None:
                if not waiting and progress is not None:
                    progress(
                        f"waiting for {self.holder(arch, profile) or 'another process'}, "
                        "which is measuring this architecture"
                    )
                waiting = True
                time.sleep(poll_s)  # another process is measuring it
                continue
            try:
                with Heartbeat(self, claim):
                    result = measure_fn(
                        arch,
                        profile,
                        train_step_memory=train_step_memory,
                        recipe_batch_size=recipe_batch_size,
                        **measure_kwargs,
                    )
            except BaseException:
                self.release(claim)
                raise
            if not self.complete(claim, result):
                self.put(arch, profile, result)  # our claim was taken over: the figure still counts
            return result

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _session(self, what: str, *, integrity: bool = False) -> Iterator[Any]:
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
        self.lost = False

    def _run(self) -> None:
        interval = max(1.0, self._cache.claim_timeout_s / 4)
        while not self._stop.wait(interval):
            try:
                if not self._cache.heartbeat(self._claim):
                    self.lost = True
                    return
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


def _key_columns(key: Key) -> dict[str, str]:
    return {
        "arch_key": key.arch_key,
        "profile_key": key.profile_key,
        "torch_version": key.torch_version,
        "device_name": key.device_name,
    }


def _figure_columns(result: LatencyResult) -> dict[str, Any]:
    try:
        measured = datetime.fromisoformat(result.measured_at).astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        measured = _now()
    return {
        "status": result.status,
        "median_ms": result.median_ms,
        "p90_ms": result.p90_ms,
        "spread": result.spread,
        "peak_memory_mb": result.peak_memory_mb,
        "train_peak_memory_mb": result.train_peak_memory_mb,
        "stable": result.stable,
        "measured_at": measured,
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
