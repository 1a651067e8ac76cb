"""The measurement protocol on this machine: repeatability, monotonicity, OOM, failures.

Timing claims are checked only on figures the protocol itself calls stable (quiet repetitions that
agree); when other processes keep the cores busy the protocol flags its figures and these tests say
so (skip with the contention figures) instead of asserting on noise.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from rs_search.errors import RsSearchError
from rs_search.latency.measure import DEFAULT_PROTOCOL, measure
from rs_search.latency.profiles import HardwareProfile
from rs_search.latency.result import LatencyResult
from rs_search.latency.runqueue import contention_probe, others_busy_probe
from rs_search.specs import ArchSpec
from tests.latency.conftest import QUICK, T1, tiny

TOLERANCE = 0.05  # the bar: repeated medians within 5%
BUSY = 0.25  # skip timing checks when a probe waits this share of its time for a CPU
SAME_SPEED = 0.05  # reference-kernel times this close: the machine ran at the same speed
ATTEMPTS = 4  # pairs (rounds) measured before the test gives up on a noisy machine
# The repeatability claim is checked with 8 s of timing per figure: on the 2-vCPU development VM a
# slow mode of the host (+10-15%, seen by no reference kernel) can last longer than the default
# 4 s, so two default figures a few seconds apart disagreed by 10-15% about once in eight pairs.
LONG = replace(DEFAULT_PROTOCOL, min_time_s=8.0)


def _quiet_enough() -> None:
    """Skip at once (instead of measuring noise for a minute) when other processes hold the CPUs."""
    others = others_busy_probe(0.3)
    if others > BUSY:
        pytest.skip(
            f"machine busy: other processes used {others:.0%} of the CPUs "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )
    share = contention_probe(0.3)
    if share > BUSY:
        pytest.skip(
            f"machine busy: a 0.3 s probe waited {share:.0%} of its time for a CPU "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )


def _unstable(results: list[LatencyResult]) -> str:
    figures = ", ".join(
        f"{r.median_ms or 0:.2f} ms spread {r.spread or 0:.0%} contention {r.contention or 0:.0%}"
        f" others {r.others_busy or 0:.0%} reference drift {r.reference_spread or 0:.0%}"
        for r in results
    )
    return f"protocol flagged the figures ({figures}; load {results[0].load_avg:.1f})"


def _speed_changed(results: list[LatencyResult]) -> str | None:
    """Why the figures are not comparable: the reference kernel ran at different speeds."""
    refs = [r.reference_ms or 0.0 for r in results]
    change = max(refs) / min(refs) - 1
    if change <= SAME_SPEED:
        return None
    return (
        f"machine speed changed between the measurements: reference kernel "
        f"{'/'.join(f'{v:.3f}' for v in refs)} ms ({change:.0%}); medians "
        f"{'/'.join(f'{r.median_ms or 0:.3f}' for r in results)} ms"
    )


def test_repeated_measurements_agree_within_5_percent(capsys: pytest.CaptureFixture[str]) -> None:
    """Two figures the protocol calls stable, taken at the same machine speed, agree within 5%.

    The protocol repeats or flags a noisy figure; so does this test. A pair that disagrees is
    measured again (up to ATTEMPTS pairs): on the 2-vCPU development VM a slow mode of the host
    (+5-15%, invisible to every reference kernel tried) can outlast a whole figure, so about one
    pair in five disagreed by 5-8% (1.011 vs 1.066 ms with 8 s figures, 1.085 vs 1.001 ms with
    12 s). The test fails when no pair agrees, and skips (with the figures) only when the machine
    never allowed a comparable pair."""
    _quiet_enough()
    arch = tiny()
    lines: list[str] = []
    why: list[str] = []
    agreed: tuple[LatencyResult, LatencyResult] | None = None
    for _ in range(ATTEMPTS):
        a, b = measure(arch, T1, protocol=LONG), measure(arch, T1, protocol=LONG)
        if not (a.stable and b.stable):
            why.append(_unstable([a, b]))
            continue
        if (changed := _speed_changed([a, b])) is not None:
            why.append(changed)
            continue
        assert a.median_ms is not None and b.median_ms is not None and a.p90_ms is not None
        diff = abs(a.median_ms - b.median_ms) / min(a.median_ms, b.median_ms)
        lines.append(
            f"repeatability: {a.median_ms:.3f} vs {b.median_ms:.3f} ms "
            f"({100 * diff:.1f}% apart); spreads {100 * (a.spread or 0):.1f}% / "
            f"{100 * (b.spread or 0):.1f}%; reference kernel {a.reference_ms:.3f} / "
            f"{b.reference_ms:.3f} ms"
        )
        assert (a.spread or 0) <= DEFAULT_PROTOCOL.tolerance
        assert a.p90_ms >= a.median_ms
        assert a.iterations >= DEFAULT_PROTOCOL.min_repeats * DEFAULT_PROTOCOL.min_iters
        if diff <= TOLERANCE:
            agreed = (a, b)
            break
    with capsys.disabled():
        for line in lines:
            print("\n" + line)
    if not lines:
        pytest.skip("; ".join(why))
    assert agreed is not None, "no pair of stable figures agreed within 5%: " + "; ".join(lines)


GRID = {
    "deeper": tiny(layout=(2, 2, 2, 2)),
    "wider": tiny(width=0.5),
    "higher-res": tiny(resolution=64),
}


def test_bigger_is_never_faster_beyond_noise(capsys: pytest.CaptureFixture[str]) -> None:
    """The base net, each bigger one, the base again; every median is divided by the reference
    kernel's time of its own measurement, so a change of machine speed cancels out. A round with a
    flagged figure is measured again (up to ATTEMPTS rounds)."""
    _quiet_enough()
    why: list[str] = []
    for _ in range(ATTEMPTS):
        base1 = measure(tiny(), T1)
        bigger = {name: measure(arch, T1) for name, arch in GRID.items()}
        base2 = measure(tiny(), T1)
        results = [base1, *bigger.values(), base2]
        if all(r.stable for r in results):
            break
        why.append(_unstable(results))
    else:
        pytest.skip("; ".join(why))

    def rel(r: LatencyResult) -> float:
        return (r.median_ms or 0.0) / (r.reference_ms or 1.0)

    base = max(rel(base1), rel(base2))
    noise = max(r.spread or 0 for r in results) + abs(rel(base1) / rel(base2) - 1)
    lines = []
    for name, result in bigger.items():
        lines.append(f"{name} {result.median_ms:.3f} ms ({rel(result) / base:.2f}x)")
        assert rel(result) >= base * (1 - noise), f"the {name} net ran faster than the base one"
    with capsys.disabled():
        print(
            f"\nmonotonicity: base {base1.median_ms:.3f}/{base2.median_ms:.3f} ms, "
            + ", ".join(lines)
            + f"; noise {noise:.1%}; rounds {len(why) + 1}"
        )


def test_profile_batch_dtype_and_memory_are_recorded() -> None:
    profile = HardwareProfile(name="b4", batch_size=4, threads=1, channels_last=False)
    result = measure(tiny(), profile, protocol=QUICK, train_step_memory=True, recipe_batch_size=8)
    assert result.status == "ok" and result.batch_size == 4 and result.threads == 1
    assert result.profile_key == profile.key() and result.arch_key == tiny().key()
    assert result.torch_version == torch.__version__ and "CPU" in result.device_name
    # inference memory holds at least the fp32 weights and the input; a training step holds
    # weights, momentum and grads (3x the weights) and the stored activations
    assert result.peak_memory_mb is not None and result.train_peak_memory_mb is not None
    weights_mb = sum(p.numel() for p in _weights(tiny())) * 4 / 2**20
    assert result.peak_memory_mb > weights_mb
    assert result.train_peak_memory_mb > 3 * weights_mb
    assert result.train_peak_memory_mb > result.peak_memory_mb
    assert LatencyResult.from_dict(result.to_dict()) == result


def _weights(arch: ArchSpec) -> list[torch.Tensor]:
    from rs_search.models import build_model

    return list(build_model(arch).parameters())


def test_peak_memory_grows_with_batch() -> None:
    small = measure(
        tiny(resolution=64), HardwareProfile(name="m1", batch_size=1, threads=1), protocol=QUICK
    )
    big = measure(
        tiny(resolution=64), HardwareProfile(name="m8", batch_size=8, threads=1), protocol=QUICK
    )
    assert small.peak_memory_mb is not None and big.peak_memory_mb is not None
    # activations scale with the batch; the weights (~0.7 M params) do not
    assert big.peak_memory_mb > small.peak_memory_mb + 1.0


def _memory_limit_bytes() -> int:
    total = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith(("MemTotal:", "SwapTotal:")):
                total += int(line.split()[1]) * 1024
    return total


def test_out_of_memory_is_an_answer_not_a_crash() -> None:
    """A batch whose input alone is twice this machine's RAM + swap: the kernel refuses the
    allocation outright (overcommit heuristic), torch raises, the result says 'does not fit'."""
    try:
        with open("/proc/sys/vm/overcommit_memory") as handle:
            mode = handle.read().strip()
    except OSError:
        pytest.skip("no /proc: cannot size an allocation that is sure to be refused")
    if mode == "1":
        pytest.skip(
            "vm.overcommit_memory=1: the kernel would grant the allocation and OOM-kill later"
        )
    arch = tiny(resolution=256)
    per_image = 3 * 256 * 256 * 4
    batch = 2 * _memory_limit_bytes() // per_image + 1
    result = measure(
        arch, HardwareProfile(name="too-big", batch_size=batch, threads=1), protocol=QUICK
    )
    assert result.status == "oom" and not result.fits
    assert result.median_ms is None and result.stable is False
    assert "allocate" in (result.error or "")
    assert "does not fit" in result.summary()


def test_a_missing_device_is_the_callers_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RsSearchError, match="needs CUDA"):
        measure(tiny(), HardwareProfile(name="gpu", device="cuda"), protocol=QUICK)


def test_threads_are_restored() -> None:
    before = torch.get_num_threads()
    measure(tiny(), HardwareProfile(name="t1", threads=1), protocol=QUICK)
    assert torch.get_num_threads() == before
    assert os.environ.get("RS_SEARCH_LATENCY_PROTOCOL") is None
