"""``rs-search train`` and ``torchrun -m rs_search.train`` as a user runs them: real processes,
real exit statuses, one-line errors, kill -9 and resume, a 2-process gloo group."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rs_search.train.checkpoint import checkpoint_paths
from rs_search.train.engine import TrainResult
from tests.cli_runner import run_in_process
from tests.search.conftest import OutputLines

from .conftest import (
    candidate,
    digits_candidate,
    error_lines,
    make_imagefolder,
    rs_search_cmd,
    run_cli,
    subprocess_env,
    write_candidate,
)

# A plain progress line of the training (rs_search.train.progress): output of the run before
# the error, not part of it.
PROGRESS_LINE = re.compile(r"^epoch \d+/\d+: step \d+/\d+, ")


def assert_one_line_error(err: str, expected: str) -> None:
    lines = [line for line in error_lines(err) if not PROGRESS_LINE.match(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err


# ------------------------------------------------------------------------- bad input: exit 2


@pytest.mark.parametrize(
    ("recipe_yaml", "expected"),
    [
        ("recipe:\n  epochs: 2\n  learning_rate: 0.1\n", "recipe.learning_rate: unknown key"),
        ("recipe:\n  epochs: two\n", "recipe.epochs: expected int"),
        ("recipe: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], recipe_yaml: str, expected: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("arch:\n  layout: [1, 1, 1, 1]\n  num_classes: 10\n" + recipe_yaml)
    code, _, err = run_in_process(
        ["train", "--config", str(config), "--out", str(tmp_path / "o")], capfd
    )
    assert code == 2
    assert_one_line_error(err, expected)
    assert str(config) in err


def test_missing_config_and_unknown_data_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_in_process(["train", "--config", str(tmp_path / "nope.yaml")], capfd)
    assert code == 2
    assert_one_line_error(err, "cannot read candidate file")
    config = write_candidate(tmp_path / "c.yaml", candidate())
    code, _, err = run_in_process(["train", "--config", str(config), "--data", "mnist"], capfd)
    assert code == 2
    assert_one_line_error(err, "unknown data source; allowed: digits, imagefolder:PATH")


def test_bad_image_folders_exit_2(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = write_candidate(tmp_path / "c.yaml", candidate(arch={"num_classes": 3}))
    root = tmp_path / "flat"
    (root / "train" / "a").mkdir(parents=True)
    args = ["train", "--config", str(config), "--out", str(tmp_path / "o")]
    code, _, err = run_in_process([*args, "--data", f"imagefolder:{root}"], capfd)
    assert code == 2
    assert_one_line_error(err, f"{root}/train/a has no images")
    code, _, err = run_in_process([*args, "--data", f"imagefolder:{tmp_path / 'absent'}"], capfd)
    assert code == 2
    assert_one_line_error(err, "does not exist")


@pytest.mark.slow
def test_unreadable_image_in_a_loader_process_exits_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The broken file is read by a DataLoader worker process: still one line, naming it."""
    root = make_imagefolder(tmp_path / "pets")
    broken = root / "train" / "dog" / "dog_0.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    cand = candidate(arch={"num_classes": 3}, recipe={"batch_size": 4, "epochs": 1})
    config = write_candidate(tmp_path / "c.yaml", cand)
    code, _, err = run_in_process(
        [
            "train",
            "--config",
            str(config),
            "--data",
            f"imagefolder:{root}",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "o"),
            "--num-workers",
            "1",
            "--no-progress",
        ],
        capfd,
    )
    assert code == 2
    assert_one_line_error(err, f"{broken}: cannot read image")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_2(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = write_candidate(tmp_path / "c.yaml", candidate())
    code, _, err = run_in_process(["train", "--config", str(config), "--device", "cuda"], capfd)
    assert code == 2
    assert_one_line_error(err, "CUDA is not available")


# ----------------------------------------------------------------------- NaN: exit 3, one line


def nan_config(tmp_path: Path) -> Path:
    # An absurd LR and no EMA: the loss overflows within a few steps.
    cand = candidate(recipe={"lr_per_256": 1e6, "ema_decay": 0.0, "epochs": 1})
    return write_candidate(tmp_path / "nan.yaml", cand)


@pytest.mark.slow
def test_nan_loss_exits_3_with_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    code, _, err = run_in_process(
        [
            "train",
            "--config",
            str(nan_config(tmp_path)),
            "--data",
            "synthetic:10",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--num-workers",
            "0",
        ],
        capfd,
    )
    assert code == 3, err
    assert_one_line_error(err, "loss became NaN/inf at epoch 1")
    assert checkpoint_paths(out) == []  # nothing half-trained left behind


@pytest.mark.slow
def test_nan_in_a_torchrun_group_exits_3_with_one_line(tmp_path: Path) -> None:
    """``--nproc 2``: torchrun's launcher, two gloo ranks agree on the NaN, the status and the
    one-line message come back through torchrun's error files."""
    proc = run_cli(
        [
            "train",
            "--config",
            str(nan_config(tmp_path)),
            "--data",
            "synthetic:10",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "o"),
            "--nproc",
            "2",
            "--no-progress",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc.stderr, "loss became NaN/inf at epoch 1")


# ---------------------------------------------------------------------------- kill -9, resume

# The plain progress line of epoch 2's first step (of 16: 1,024 synthetic images, batch 64) on
# the CLI's stderr: the signal tests send their signal when they read it, with no sleeps. The
# engine polls the stop flag after every step on CPU, and at 96 px the other 15 steps of the
# epoch take seconds on a 2-core CPU, so the run is caught mid-epoch 2 however loaded the
# machine (the signal arrives in microseconds; in practice it is seen after step 2).
EPOCH_2_STARTED = r"^epoch 2/3: step 1/16, "


@pytest.mark.slow
def test_kill_9_during_epoch_2_then_resume_continues_at_epoch_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A real ``rs-search train`` process is killed (SIGKILL, with its loader processes) during
    epoch 2; ``--resume`` (run in this process) continues at epoch 2 and finishes."""
    cand = candidate(arch={"resolution": 96}, recipe={"epochs": 3, "randaug_layers": 0})
    config = write_candidate(tmp_path / "c.yaml", cand)
    out = tmp_path / "run"
    metrics = out / "metrics.json"
    args = [
        "train",
        "--config",
        str(config),
        "--data",
        "synthetic:10",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        [*rs_search_cmd(), *args],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        OutputLines(proc.stderr).wait_for(EPOCH_2_STARTED, timeout=240)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its DataLoader workers, like a lost node
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = json.loads(metrics.read_text())
    assert before["epochs_done"] == 1
    assert [p.name for p in checkpoint_paths(out)] == ["ckpt-0001-000000.pt"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    capfd.readouterr()
    code, stdout, stderr = run_in_process([*args, "--resume"], capfd)
    assert code == 0, stderr
    assert "resuming from" in stderr and "ckpt-0001-000000.pt (epoch 1 done)" in stderr
    assert "epoch 1/3" not in stderr and "epoch 2/3" in stderr  # continues at 2, not 0
    after = json.loads(metrics.read_text())
    assert after["finished"] is True and [r["epoch"] for r in after["curve"]] == [1, 2, 3]
    assert after["curve"][0] == before["curve"][0]
    assert stdout.startswith("done: 3/3 epochs, val top-1")


@pytest.mark.slow
def test_sigterm_checkpoints_mid_epoch_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM to the whole process group (as Slurm sends it, loader processes included): the
    run saves a mid-epoch checkpoint, says how to continue, and exits 0."""
    cand = candidate(arch={"resolution": 96}, recipe={"epochs": 3, "randaug_layers": 0})
    config = write_candidate(tmp_path / "c.yaml", cand)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *rs_search_cmd(),
            "train",
            "--config",
            str(config),
            "--data",
            "synthetic:10",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--num-workers",
            "1",
        ],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        output = OutputLines(proc.stderr)
        output.wait_for(EPOCH_2_STARTED, timeout=240)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
        stderr = output.all(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr
    lines = error_lines(stderr)
    assert lines[-1].startswith("interrupted: stopped at epoch 2 step "), stderr
    assert "continue with --resume" in lines[-1] and "Traceback" not in stderr
    newest = checkpoint_paths(out)[0].name
    assert newest.startswith("ckpt-0001-") and newest != "ckpt-0001-000000.pt"


# ---------------------------------------------------------------------------------- torchrun DDP


@pytest.mark.slow
def test_torchrun_two_processes_match_one(
    tmp_path: Path,
    digits_run: tuple[TrainResult, Path],
) -> None:
    """``torchrun --nproc_per_node=2`` (gloo) with the same global batch trains as well as one
    process: a loose sanity bound (3 points) on the end-to-end path (launcher, group, sharded
    evaluation, metrics.json, rank 0's summary), not an equivalence check.

    The two runs differ by design: BN statistics are per rank (each rank normalises with its
    half of the batch; one process with the whole batch), so their weights drift apart step by
    step and the final top-1 differs by chance: 0.55-1.11 points on the development machine,
    1.11 on an Intel Xeon 2-vCPU machine where a 1-point bound failed (issue 10). What DDP must
    guarantee exactly (the same shards, the same averaged gradients and steps) is checked to
    float tolerance in ``test_ddp_equivalence.py``; 3 points still catches a group that trains
    or evaluates badly (the single run reaches 99.4%)."""
    single, _ = digits_run
    config = write_candidate(tmp_path / "digits.yaml", digits_candidate())
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = (
        [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    )
    proc = subprocess.run(
        [
            *launcher,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "rs_search.train",
            "--config",
            str(config),
            "--data",
            "digits",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["world_size"] == 2 and payload["finished"] is True
    ddp_top1 = payload["curve"][-1]["val_top1"]
    single_top1 = single.curve[-1].val_top1
    assert abs(ddp_top1 - single_top1) <= 3.0, (ddp_top1, single_top1)
    assert proc.stdout.count("done: 5/5 epochs") == 1  # rank 0 only prints the summary
