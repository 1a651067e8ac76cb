"""Checkpoint files: atomic writes, the last two kept, safe loading, a corrupt one skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rs_search.train.checkpoint import checkpoint_paths, load_latest, save_checkpoint


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
