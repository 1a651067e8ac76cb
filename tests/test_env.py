"""The process environment is parsed in one place; a bad value is one clear error."""

from __future__ import annotations

import pytest

from rs_search.env import (
    HEARTBEAT,
    LATENCY_PROTOCOL,
    PROGRESS,
    STORAGE,
    STORAGE_RETRY_S,
    EnvError,
    Environment,
)


def test_unset_means_defaults() -> None:
    env = Environment.from_environ({})
    assert env == Environment()
    assert env.heartbeat is None and env.latency_protocol == () and env.progress is None


def test_values_are_parsed() -> None:
    env = Environment.from_environ(
        {
            STORAGE: " postgresql+psycopg://u@h/db ",
            STORAGE_RETRY_S: "2.5",
            HEARTBEAT: "1,3",
            LATENCY_PROTOCOL: "min_time_s=0, settle_repeats=3",
            PROGRESS: "Plain",
        }
    )
    assert env.storage == "postgresql+psycopg://u@h/db"
    assert env.storage_retry_s == 2.5
    assert env.heartbeat == (1, 3)
    assert env.latency_protocol == (("min_time_s", "0"), ("settle_repeats", "3"))
    assert env.progress == "plain"


@pytest.mark.parametrize(
    ("name", "raw", "words"),
    [
        (STORAGE_RETRY_S, "soon", "expected a number of seconds"),
        (STORAGE_RETRY_S, "nan", "between 0 and"),
        (STORAGE_RETRY_S, "-1", "between 0 and"),
        (HEARTBEAT, "3,1", "1 <= INTERVAL < GRACE"),
        (HEARTBEAT, "30", "INTERVAL,GRACE"),
        (HEARTBEAT, "0,5", "1 <= INTERVAL < GRACE"),
        (LATENCY_PROTOCOL, "min_time_s", "name=value"),
        (PROGRESS, "loud", "allowed: rich, plain, off"),
    ],
)
def test_bad_values_name_the_variable(name: str, raw: str, words: str) -> None:
    with pytest.raises(EnvError) as info:
        Environment.from_environ({name: raw})
    message = str(info.value)
    assert message.startswith(f"${name}=") and words in message
    assert "\n" not in message


def test_child_environ_round_trips() -> None:
    env = Environment.from_environ({HEARTBEAT: "2,9", STORAGE_RETRY_S: "4"})
    child = env.child_environ({"PATH": "/bin", PROGRESS: "rich"})
    assert child["PATH"] == "/bin" and PROGRESS not in child
    assert Environment.from_environ(child) == env
