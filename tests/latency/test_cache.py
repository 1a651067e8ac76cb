"""The latency cache: a second request is answered from the table; claims are exclusive.

Runs on SQLite (a file) and on the real PostgreSQL server (``postgres_url``).
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from sqlalchemy import func, inspect, select

from rs_search.latency.cache import LatencyCache, local_key
from rs_search.latency.result import LatencyResult
from rs_search.storage.tables import latency
from tests.latency.conftest import QUICK, T1, BuildCounter, tiny


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('cache') / 'study.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_second_request_is_answered_from_the_table(
    storage: str, count_builds: BuildCounter
) -> None:
    arch = tiny()
    with LatencyCache(storage) as cache:
        assert cache.get(arch, T1) is None
        first = cache.get_or_measure(arch, T1, protocol=QUICK)
        assert count_builds.calls == 1 and first.status == "ok"
        second = cache.get_or_measure(arch, T1, protocol=QUICK)
        assert count_builds.calls == 1, "the second request built a model"
        assert second == first
    # another process (a fresh cache object, fresh engine) reads the same row
    with LatencyCache(storage) as other:
        assert other.get_or_measure(arch, T1, protocol=QUICK) == first
        assert count_builds.calls == 1
        # asking for the training-step memory the row lacks measures again, once
        with_train = other.get_or_measure(
            arch, T1, protocol=QUICK, train_step_memory=True, recipe_batch_size=8
        )
        assert with_train.train_peak_memory_mb is not None and count_builds.calls == 3
        assert (
            other.get_or_measure(arch, T1, train_step_memory=True, recipe_batch_size=8)
            == with_train
        )
        assert count_builds.calls == 3
        assert other.done_keys(T1) == {arch.key()}


def test_tables_are_ours_and_creation_is_idempotent(storage: str) -> None:
    import optuna

    optuna.create_study(study_name="s", storage=storage)
    with LatencyCache(storage) as cache, LatencyCache(storage):
        tables = set(inspect(cache.engine).get_table_names())
        assert "rs_latency" in tables and "studies" in tables
        assert optuna.load_study(study_name="s", storage=storage).study_name == "s"


def test_out_of_memory_and_remote_figures_are_stored_as_such(storage: str) -> None:
    arch = tiny()
    key = local_key(arch, T1)
    oom = LatencyResult(
        arch_key=arch.key(),
        profile_name=T1.name,
        profile_key=T1.key(),
        device_name=key.device_name,
        torch_version=key.torch_version,
        status="oom",
        error="out of memory",
        measured_at="2026-01-01T00:00:00+00:00",
    )
    with LatencyCache(storage) as cache:
        cache.put(arch, T1, oom)
        got = cache.get(arch, T1)
        assert got == oom and got is not None and not got.fits
        # a figure taken elsewhere (a latency worker on the deployment GPU) is not this machine's
        remote = dataclasses.replace(
            oom,
            status="ok",
            median_ms=1.5,
            p90_ms=1.6,
            spread=0.01,
            stable=True,
            device_name="NVIDIA H200",
            torch_version="9.9",
            error=None,
            measured_at="2026-01-02T00:00:00+00:00",
        )
        cache.put(arch, T1, remote)
        assert cache.get(arch, T1) == oom
        assert cache.get(arch, T1, any_device=True) == remote  # stable first, then newest
        cache.put(arch, T1, dataclasses.replace(oom, error="still out of memory"))  # replaces
        with cache.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(latency)).scalar_one() == 2
        assert cache.get(arch, T1).error == "still out of memory"  # type: ignore[union-attr]


def test_claims_are_exclusive_released_and_taken_over_when_stale(storage: str) -> None:
    arch = tiny(resolution=48)
    with (
        LatencyCache(storage, claim_timeout_s=60) as a,
        LatencyCache(storage, claim_timeout_s=0.5) as b,
    ):
        claim = a.try_claim(arch, T1, "worker-a")
        assert claim is not None
        assert a.try_claim(arch, T1, "worker-a2") is None
        assert a.holder(arch, T1) == "worker-a"
        a.release(claim)
        assert a.holder(arch, T1) is None
        claim = a.try_claim(arch, T1, "worker-a")
        assert claim is not None and a.heartbeat(claim)
        time.sleep(1.0)  # older than b's timeout: b may take it over
        taken = b.try_claim(arch, T1, "worker-b")
        assert taken is not None and b.holder(arch, T1) == "worker-b"
        assert not a.heartbeat(claim)  # a learns it lost the claim
        from rs_search.latency.measure import measure

        result = measure(arch, T1, protocol=QUICK)
        assert not a.complete(claim, result)  # and cannot write through it
        assert b.complete(taken, result)
        assert a.get(arch, T1) == result
        assert b.try_claim(arch, T1, "worker-c") is None  # done rows are never claimed


def test_a_request_waits_for_the_process_measuring_it(
    storage: str, count_builds: BuildCounter
) -> None:
    import threading

    from rs_search.latency.measure import measure

    arch = tiny(resolution=40)
    with LatencyCache(storage) as holder, LatencyCache(storage) as asker:
        claim = holder.try_claim(arch, T1, "holder")
        assert claim is not None
        answers: list[LatencyResult] = []
        messages: list[str] = []
        thread = threading.Thread(
            target=lambda: answers.append(
                asker.get_or_measure(arch, T1, protocol=QUICK, poll_s=0.1, progress=messages.append)
            )
        )
        thread.start()
        time.sleep(0.5)
        assert not answers  # still waiting
        result = measure(arch, T1, protocol=QUICK)
        assert holder.complete(claim, result)
        thread.join(timeout=30)
        assert answers == [result] and count_builds.calls == 1  # the asker built nothing
        assert messages == ["waiting for holder, which is measuring this architecture"]
