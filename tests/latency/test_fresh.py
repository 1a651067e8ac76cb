"""``measure_in_fresh_process``: the protocol's figure from a new Python process, or one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rs_search.errors import RsSearchError
from rs_search.latency.fresh import FreshProcessFailed, measure_in_fresh_process
from rs_search.latency.profiles import device_name
from tests.latency.conftest import QUICK, T1, tiny


@pytest.mark.slow  # a new Python process that imports torch and times a net
def test_a_figure_comes_back_from_a_new_process_by_the_protocol_given() -> None:
    arch = tiny()
    result = measure_in_fresh_process(arch, T1, device="cpu", protocol=QUICK)
    assert result.ok and result.median_ms is not None and result.median_ms > 0
    assert result.arch_key == arch.key() and result.profile_key == T1.key()
    assert result.device_name == device_name("cpu") and result.threads == 1
    # QUICK's knobs reached the child: two repetitions of at least three passes each
    assert result.repeats == QUICK.max_repeats and result.iterations >= 2 * QUICK.min_iters


def test_the_childs_failure_is_one_line() -> None:
    # a CPU profile asked to time on CUDA: the child's RsSearchError, passed on as one line
    with pytest.raises(FreshProcessFailed) as caught:
        measure_in_fresh_process(tiny(), T1, device="cuda", protocol=QUICK)
    message = str(caught.value)
    assert isinstance(caught.value, RsSearchError) and "\n" not in message
    assert "in a fresh process: hardware profile 'test-cpu-b1-t1' measures on cpu" in message


def _children() -> list[str]:
    """Command lines of this process's child processes (Linux ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():
                found.append((stat.parent / "cmdline").read_text().replace("\0", " "))
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_a_figure_past_its_timeout_fails_and_the_child_is_ended() -> None:
    with pytest.raises(FreshProcessFailed, match=r"no figure after 0\.01 s"):
        measure_in_fresh_process(tiny(), T1, device="cpu", protocol=QUICK, timeout_s=0.01)
    assert not [c for c in _children() if "rs_search.latency.fresh" in c]
