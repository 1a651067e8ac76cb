"""``rs-search train`` options added with issue 14: argument combinations refused with one line
(exit 2), ``--micro-batch`` end to end, and a real out-of-memory on the CPU as exit 4."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli_runner import run_in_process

from .conftest import candidate, error_lines, subprocess_env, write_candidate
from .test_cli import assert_one_line_error


def one_line(err: str) -> str:
    assert_one_line_error(err, "")
    return error_lines(err)[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--device", "cuda:1", "--nproc", "2"],
            "--device cuda:1 with --nproc 2: every process would use GPU 1; use --device cuda",
        ),
        (["--device", "gpu"], "--device 'gpu': unknown device; allowed: auto, cpu, cuda"),
        (["--micro-batch", "0"], "--micro-batch 0: must be at least 1"),
        (["--num-workers", "-1"], "--num-workers -1: must be at least 0"),
    ],
)
def test_refused_with_one_line_before_anything_starts(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    config = write_candidate(tmp_path / "c.yaml", candidate())
    out = tmp_path / "o"
    code, _, err = run_in_process(
        ["train", "--config", str(config), "--out", str(out), *flags], capfd
    )
    assert code == 2
    assert expected in one_line(err)
    assert not out.exists()  # nothing started, nothing written


def test_micro_batches_train_the_recipes_batch(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Batch 64 as 4 passes of 16 images: the same steps per epoch, every image counted."""
    config = write_candidate(tmp_path / "c.yaml", candidate(recipe={"epochs": 1}))
    out = tmp_path / "o"
    args = ["train", "--config", str(config), "--data", "synthetic:10", "--device", "cpu"]
    args += ["--out", str(out), "--micro-batch", "16", "--num-workers", "0", "--no-progress"]
    code, stdout, err = run_in_process(args, capfd)
    assert code == 0, err
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["micro_batch"] == 16 and payload["finished"] is True
    (row,) = payload["curve"]
    assert row["images_per_s"] > 0 and 0 <= row["val_top1"] <= 100
    assert "done: 1/1 epochs" in stdout


OOM_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from rs_search.cli.main import main
    import rs_search.train.engine  # torch and the engine mapped before the limit is taken

    def mapped() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    limit = mapped() + 400 * 2**20  # 400 MiB more address space than the process holds now
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    main(sys.argv[1:])
    """
)


@pytest.mark.slow
def test_out_of_memory_exits_4_with_one_line(tmp_path: Path) -> None:
    """A real allocation failure of the CPU allocator (the address space is limited): a width-1
    model at 128 px needs more than 400 MiB of activations for 64 images."""
    cand = candidate(
        arch={"width": 1.0, "resolution": 128},
        recipe={"epochs": 1, "ema_decay": 0.0, "randaug_layers": 0},
    )
    config = write_candidate(tmp_path / "big.yaml", cand)
    args = ["train", "--config", str(config), "--data", "synthetic:10", "--device", "cpu"]
    args += ["--out", str(tmp_path / "o"), "--num-workers", "0", "--no-progress"]
    proc = subprocess.run(
        [sys.executable, "-c", OOM_SCRIPT, *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 4, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert "width 1 at 128px does not fit in cpu memory with 64 images per device" in line
