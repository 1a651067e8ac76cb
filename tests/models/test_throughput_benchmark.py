"""benchmarks/throughput.py: what it claims from alternating rounds, and a real run at a tiny size.

No figure is asserted (speed is measured in the benchmark itself); what is checked is that the
verdict needs every round on one side of 1.0, that the output names the CPU model and thread
count, and that the load-independent work figures of ours and timm's training step agree.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rs_search.latency.profiles import cpu_model

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("throughput_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([1.01, 1.20, 1.03], "FASTER"),
        ([0.99, 0.90, 0.97, 0.95, 0.98], "SLOWER"),
        ([1.10, 1.20, 0.99, 1.15, 1.30], "no difference beyond noise"),
        ([1.0, 1.1, 1.2], "no difference beyond noise"),  # a tie is not faster
        ([1.5, 1.6], "too few rounds"),
    ],
)
def test_verdict_only_beyond_the_spread(ratios: list[float], expected: str) -> None:
    assert expected in _load().verdict(ratios)


def test_spread_reports_median_quartiles_and_range() -> None:
    spread = _load().Spread.of([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (spread.median, spread.q1, spread.q3, spread.low, spread.high) == (3, 2, 4, 1, 5)
    assert spread.text() == "3.0 (IQR 2.0-4.0, range 1.0-5.0)"


@pytest.mark.slow
def test_tiny_run_names_the_machine_and_ours_does_timms_work() -> None:
    pytest.importorskip("timm", reason="timm comes with the dev extra")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--batch", "2", "--resolution", "32", "--rounds", "3", "--iters", "1"]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--warmup", "1", "--threads", "1", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert f"device: CPU {cpu_model()}," in out and "1 torch threads" in out
    work = dict(re.findall(r"work per step (ours|timm) +(\d+ aten ops, [\d.]+ MiB)", out))
    assert set(work) == {"ours", "timm"}
    assert work["ours"] == work["timm"]  # same operators, same fresh memory per step
    for clock in ("wall-clock", "CPU-time"):
        ratio = re.search(rf"{clock} +ratio ours/timm ([\d.]+) \(IQR [\d.]+-[\d.]+, range", out)
        assert ratio is not None and float(ratio.group(1)) > 0
        assert re.search(rf"{clock} +per round: [\d.]+ [\d.]+ [\d.]+\n", out)
        assert re.search(rf"{clock} +verdict: (ours|no difference)", out)
