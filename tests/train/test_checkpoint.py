"""Checkpoint files: atomic writes, the last two kept, safe loading, a corrupt one skipped; the
random state a checkpoint carries (the run's own GPU only); what a resume checks."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rs_search.train.checkpoint import (
    RunKey,
    checkpoint_paths,
    load_latest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def state(epoch: int) -> dict[str, object]:
    return {
        "epoch": epoch,
        "weights": torch.full((3,), float(epoch)),
        "rng": torch.get_rng_state(),
        "python_rng": (3, tuple(range(5)), None),
        "curve": [{"epoch": epoch, "val_top1": 50.0}],
    }


def test_keeps_the_last_two_and_leaves_no_temp_files(tmp_path: Path) -> None:
    for epoch in range(1, 5):
        save_checkpoint(tmp_path, state(epoch), epoch=epoch)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-0003-000000.pt", "ckpt-0004-000000.pt"]
    # A mid-epoch checkpoint sorts after its epoch's boundary.
    save_checkpoint(tmp_path, state(4), epoch=4, step=7)
    assert [p.name for p in checkpoint_paths(tmp_path)] == [
        "ckpt-0004-000007.pt",
        "ckpt-0004-000000.pt",
    ]


def test_loads_with_weights_only(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, state(2), epoch=2)
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.state["epoch"] == 2
    assert torch.equal(loaded.state["weights"], torch.full((3,), 2.0))
    # The file really is weights-only loadable (no pickled code).
    torch.load(loaded.path, weights_only=True)


class Evil:
    """An arbitrary class: a full unpickle would import and build it; weights_only refuses."""


def test_refuses_pickled_code(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.save({"epoch": 1, "obj": Evil()}, tmp_path / "ckpt-0001-000000.pt")
    with caplog.at_level(logging.WARNING, logger="rs_search.train"):
        assert load_latest(tmp_path) is None
    assert "unreadable" in caplog.text


def test_corrupt_latest_falls_back_to_previous_with_a_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_checkpoint(tmp_path, state(1), epoch=1)
    latest = save_checkpoint(tmp_path, state(2), epoch=2)
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING, logger="rs_search.train"):
        loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.state["epoch"] == 1
    assert str(latest) in caplog.text and "trying the previous one" in caplog.text


def test_nothing_to_load(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None
    assert load_latest(tmp_path / "absent") is None
    (tmp_path / "ckpt-0001-000000.pt").write_bytes(b"garbage")
    assert load_latest(tmp_path) is None


# ------------------------------------------------------------------------------- random state


def test_rng_state_round_trip_through_a_file(tmp_path: Path) -> None:
    """Python, NumPy and torch streams continue where the checkpoint was taken."""
    cpu = torch.device("cpu")
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    saved = rng_state(cpu)
    assert "cuda_device" not in saved  # a CPU run saves no GPU state
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    save_checkpoint(tmp_path, {"epoch": 1, "rng": saved}, epoch=1)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    loaded = load_latest(tmp_path)  # weights_only: the states are tensors and plain values
    assert loaded is not None
    set_rng_state(loaded.state["rng"], cpu)
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


class FakeCudaRng:
    """torch.cuda's per-device generator calls on a machine without a GPU: one state per index
    of a 2-GPU machine; reading or writing a missing index raises IndexError as torch does."""

    def __init__(self) -> None:
        self.states = {
            0: torch.full((8,), 0, dtype=torch.uint8),
            1: torch.full((8,), 1, dtype=torch.uint8),
        }

    def get(self, device: torch.device) -> torch.Tensor:
        return self.states[torch.device(device).index].clone()

    def set(self, state: torch.Tensor, device: torch.device) -> None:
        index = torch.device(device).index
        if index not in self.states:
            raise IndexError(f"no CUDA device {index}")
        self.states[index] = state.clone()


def test_only_the_run_devices_cuda_state_is_saved_and_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trial checkpointed on GPU 1 and retried on GPU 0 (another worker's GPU index, or a
    machine with one GPU) gets GPU 1's stream on GPU 0; GPU 1's state is left alone, and no
    other GPU's state is in the file (format 1 saved every visible GPU's by position)."""
    fake = FakeCudaRng()
    monkeypatch.setattr(torch.cuda, "get_rng_state", fake.get)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake.set)
    saved = rng_state(torch.device("cuda", 1))
    assert torch.equal(saved["cuda_device"], torch.full((8,), 1, dtype=torch.uint8))
    fake.states[1] = torch.full((8,), 7, dtype=torch.uint8)  # GPU 1 moved on (its new owner)
    set_rng_state(saved, torch.device("cuda", 0))
    assert torch.equal(fake.states[0], saved["cuda_device"])  # restored where the run is now
    assert int(fake.states[1][0]) == 7  # not touched
    # A format-1 list of every GPU's state (here 3, more than this machine has) is not used.
    old = {**saved, "cuda": [torch.zeros(8, dtype=torch.uint8)] * 3}
    del old["cuda_device"]
    set_rng_state(old, torch.device("cuda", 0))
    assert torch.equal(fake.states[0], saved["cuda_device"])


# ------------------------------------------------------------------------------------ resuming


def test_run_key_names_what_differs(tmp_path: Path) -> None:
    key = RunKey(candidate_key="abc", data="digits", steps_per_epoch=10)
    path = tmp_path / "ckpt-0001-000000.pt"
    assert key.problem(key.stamp(), path) is None
    assert key.stamp()["format"] == 2
    other = {**key.stamp(), "candidate_key": "xyz"}
    assert "belongs to another candidate (key xyz, this one is abc)" in str(
        key.problem(other, path)
    )
    data = {**key.stamp(), "data": "synthetic:10"}
    assert "was trained on data 'synthetic:10', not 'digits'" in str(key.problem(data, path))
    steps = {**key.stamp(), "steps_per_epoch": 12}
    assert "has 12 steps per epoch, this run 10" in str(key.problem(steps, path))
