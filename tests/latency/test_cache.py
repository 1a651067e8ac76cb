"""The latency cache: a second request is answered from the table; claims are exclusive; times
come from the database; failures expire; a wait ends when the worker is stopped.

Runs on SQLite (a file) and on the real PostgreSQL server (``postgres_url``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, inspect, select

from rs_search.errors import TrialInterrupted
from rs_search.latency.cache import LatencyCache, local_key
from rs_search.latency.measure import measure
from rs_search.latency.result import LatencyResult
from rs_search.storage.tables import latency
from tests.latency.conftest import QUICK, T1, stored, tiny


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('cache') / 'study.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _rows(cache: LatencyCache) -> int:
    with cache.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(latency)).scalar_one())


def test_second_request_is_answered_from_the_table(storage: str) -> None:
    """A fresh measurement never repeats a stored one to the last digit (median, reference
    kernel, start time), so equal results mean the table answered."""
    arch = tiny()
    with LatencyCache(storage) as cache:
        assert cache.get(arch, T1) is None
        first = cache.get_or_measure(arch, T1, device="cpu", protocol=QUICK)
        assert first.status == "ok"
        assert cache.get_or_measure(arch, T1, device="cpu", protocol=QUICK) == first
    # another process (a fresh cache object, fresh engine) reads the same row
    with LatencyCache(storage) as other:
        assert other.get_or_measure(arch, T1, device="cpu", protocol=QUICK) == first
        # asking for the training-step memory the row lacks measures again, once
        with_train = other.get_or_measure(
            arch, T1, device="cpu", protocol=QUICK, train_step_memory=True, recipe_batch_size=8
        )
        assert with_train.train_peak_memory_mb is not None and with_train != first
        again = other.get_or_measure(
            arch, T1, device="cpu", protocol=QUICK, train_step_memory=True, recipe_batch_size=8
        )
        assert again == with_train and _rows(other) == 1
        assert other.done_keys(T1) == {arch.key()}


def test_training_step_and_inference_figures_are_cached_apart(storage: str) -> None:
    arch = tiny()
    step = dataclasses.replace(T1, mode="train_step")
    with LatencyCache(storage) as cache:
        inference = cache.get_or_measure(arch, T1, device="cpu", protocol=QUICK)
        assert cache.get(arch, step) is None and cache.done_keys(step) == set()
        trained = cache.get_or_measure(arch, step, device="cpu", protocol=QUICK)
        assert trained.mode == "train_step" and inference.mode == "inference"
        assert cache.get(arch, step) == trained and cache.get(arch, T1) == inference
        assert _rows(cache) == 2


def test_tables_are_ours_and_creation_is_idempotent(storage: str) -> None:
    import optuna

    optuna.create_study(study_name="s", storage=storage)
    with LatencyCache(storage) as cache, LatencyCache(storage):
        tables = set(inspect(cache.engine).get_table_names())
        assert "rs_latency" in tables and "studies" in tables
        assert optuna.load_study(study_name="s", storage=storage).study_name == "s"


def test_figures_are_found_by_the_hardware_that_took_them(storage: str) -> None:
    """``get`` is this machine's figure; ``find`` a figure from the named hardware (any torch
    version), stable first, then the newest; never another device's figure by accident."""
    arch = tiny()
    here = local_key(arch, T1).device_name
    with LatencyCache(storage) as cache:
        oom = stored(arch, T1, here, status="oom", error="out of memory")
        cache.put(arch, T1, oom)
        assert cache.get(arch, T1) == oom and not oom.fits
        h200 = stored(arch, T1, "NVIDIA H200", torch_version="9.9", median_ms=1.5)
        a100 = stored(arch, T1, "NVIDIA A100", median_ms=3.0, stable=False)
        cache.put(arch, T1, h200)
        cache.put(arch, T1, a100)
        assert cache.get(arch, T1) == oom  # this machine's own
        assert cache.find(arch, T1, device_name="NVIDIA H200") == h200
        assert cache.find(arch, T1, device_name="NVIDIA A100") == a100
        assert cache.find(arch, T1, device_name="TPU v9") is None
        assert cache.find(arch, T1, device_name=None) == h200  # any device: stable first
        assert cache.device_names(T1) == {here, "NVIDIA H200", "NVIDIA A100"}
        cache.put(arch, T1, dataclasses.replace(oom, error="still out of memory"))  # replaces
        assert _rows(cache) == 3
        assert cache.get(arch, T1).error == "still out of memory"  # type: ignore[union-attr]


def test_a_failed_figure_expires_and_is_measured_again(storage: str) -> None:
    """An out-of-memory on a GPU another worker was using must not fail every later trial of
    the architecture: after the failure TTL the next request measures it again."""
    arch = tiny()
    here = local_key(arch, T1).device_name
    busy_gpu = stored(arch, T1, here, status="oom", error="CUDA out of memory (a neighbour)")
    with LatencyCache(storage) as fresh:
        fresh.put(arch, T1, busy_gpu)
        assert fresh.get(arch, T1) == busy_gpu  # within the TTL: the answer stands
        assert fresh.done_keys(T1) == {arch.key()}
        assert fresh.try_claim(arch, T1, "w") is None
    with LatencyCache(storage, failure_ttl_s=0.0) as expired:
        assert expired.get(arch, T1) is None and expired.done_keys(T1) == set()
        again = expired.get_or_measure(arch, T1, device="cpu", protocol=QUICK)
        assert again.status == "ok" and expired.get(arch, T1) == again
        assert _rows(expired) == 1
        # a good figure never expires
        assert expired.get(arch, T1) == again and expired.try_claim(arch, T1, "w") is None


def test_claims_are_exclusive_released_and_taken_over_when_stale(storage: str) -> None:
    arch = tiny(resolution=48)
    with (
        LatencyCache(storage, claim_timeout_s=60) as a,
        LatencyCache(storage, claim_timeout_s=0.0) as b,
    ):
        claim = a.try_claim(arch, T1, "worker-a")
        assert claim is not None
        assert a.try_claim(arch, T1, "worker-a2") is None
        assert a.holder(arch, T1) == "worker-a"
        a.release(claim)
        assert a.holder(arch, T1) is None
        claim = a.try_claim(arch, T1, "worker-a")
        assert claim is not None and a.heartbeat(claim)
        taken = b.try_claim(arch, T1, "worker-b")  # for b every claim is already stale
        assert taken is not None and b.holder(arch, T1) == "worker-b"
        assert not a.heartbeat(claim)  # a learns it lost the claim
        result = measure(arch, T1, device="cpu", protocol=QUICK)
        assert not a.complete(claim, result)  # and cannot write through it
        assert b.complete(taken, result)
        assert a.get(arch, T1) == result
        assert b.try_claim(arch, T1, "worker-c") is None  # done rows are never claimed


@pytest.mark.parametrize("skew", [timedelta(hours=2), -timedelta(hours=2)])
def test_claims_go_by_the_database_clock(storage: str, skew: timedelta) -> None:
    """Workers on several hosts share the table, and their clocks may disagree by more than a
    claim's timeout. A host two hours ahead must not take a live claim over as stale; a claim
    made by a host two hours behind must not look stale to the others; a fresh failure must not
    look expired. ``time_machine`` moves this process's clock; the database server (and
    SQLite's own ``strftime('now')``) keep the real one."""
    arch = tiny(resolution=40)
    here = local_key(arch, T1).device_name
    other_profile = dataclasses.replace(T1, batch_size=2)
    with LatencyCache(storage, claim_timeout_s=600) as honest:
        claim = honest.try_claim(arch, T1, "honest")
        assert claim is not None
        with (
            time_machine.travel(datetime.now(UTC) + skew, tick=True),
            LatencyCache(storage, claim_timeout_s=600) as skewed,
        ):
            assert skewed.try_claim(arch, T1, "skewed") is None  # live: not taken over
            assert skewed.holder(arch, T1) == "honest"
            theirs = skewed.try_claim(arch, other_profile, "skewed")
            assert theirs is not None and skewed.heartbeat(theirs)
        assert honest.try_claim(arch, other_profile, "honest") is None  # theirs is live too
        assert honest.holder(arch, other_profile) == "skewed"
        failure = stored(arch, T1, here, status="error", error="a passing error")
        assert honest.complete(claim, failure)
        with (
            time_machine.travel(datetime.now(UTC) + skew, tick=True),
            LatencyCache(storage) as skewed,
        ):
            assert skewed.get(arch, T1) == failure  # written just now: within the failure TTL
            assert skewed.try_claim(arch, T1, "skewed") is None


def test_a_request_waits_for_the_process_measuring_it(storage: str) -> None:
    arch = tiny(resolution=40)
    with LatencyCache(storage) as holder, LatencyCache(storage) as asker:
        claim = holder.try_claim(arch, T1, "holder")
        assert claim is not None
        answers: list[LatencyResult] = []
        messages: list[str] = []
        said = threading.Event()

        def hear(line: str) -> None:
            messages.append(line)
            said.set()

        thread = threading.Thread(
            target=lambda: answers.append(
                asker.get_or_measure(
                    arch, T1, device="cpu", protocol=QUICK, poll_s=0.1, progress=hear
                )
            )
        )
        thread.start()
        assert said.wait(30)  # the asker found the claim and is waiting
        assert not answers
        result = measure(arch, T1, device="cpu", protocol=QUICK)
        assert holder.complete(claim, result)
        thread.join(timeout=30)
        assert answers == [result]  # the holder's figure, not a measurement of its own
        assert messages == ["waiting for holder, which is measuring this architecture"]


def test_a_wait_for_another_process_ends_when_stopped(storage: str) -> None:
    """SIGTERM must not wait for another worker's measurement (up to the claim timeout): the
    wait looks at the stop flag and raises ``TrialInterrupted`` promptly."""
    arch = tiny(resolution=56)
    stop = threading.Event()
    outcome: list[BaseException] = []
    with (
        LatencyCache(storage, claim_timeout_s=3600) as holder,
        LatencyCache(storage, claim_timeout_s=3600) as asker,
    ):
        assert holder.try_claim(arch, T1, "holder") is not None
        waiting = threading.Event()

        def ask() -> None:
            try:
                asker.get_or_measure(
                    arch,
                    T1,
                    device="cpu",
                    protocol=QUICK,
                    poll_s=3600,
                    stop=stop.is_set,
                    progress=lambda _line: waiting.set(),
                )
            except BaseException as exc:  # noqa: BLE001 - what the asker ended with is the check
                outcome.append(exc)

        thread = threading.Thread(target=ask)
        thread.start()
        assert waiting.wait(30)
        stop.set()
        started = time.monotonic()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the wait ignored the stop flag"
        assert time.monotonic() - started < 2
        assert len(outcome) == 1 and isinstance(outcome[0], TrialInterrupted)


def test_a_stopped_measurement_releases_its_claim(storage: str) -> None:
    """SIGTERM during a worker's own measurement: abandoned between repetitions, the claim
    deleted (another worker may take it at once), nothing stored."""
    arch = tiny(resolution=24)
    with LatencyCache(storage) as cache:
        with pytest.raises(TrialInterrupted, match="stopped while measuring latency"):
            cache.get_or_measure(arch, T1, device="cpu", protocol=QUICK, stop=lambda: True)
        assert _rows(cache) == 0 and cache.holder(arch, T1) is None
