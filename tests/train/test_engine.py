"""The engine end to end on real data: accuracy on digits, the curve, the EMA in evaluation,
rungs, early stop, SIGTERM-style interruption and resume (in-process, small data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from rs_search.errors import RsSearchError, TrialInterrupted
from rs_search.models import build_model
from rs_search.specs import Candidate
from rs_search.train.checkpoint import checkpoint_paths, load_latest
from rs_search.train.data import build_data
from rs_search.train.engine import EpochMetrics, RunOptions, TrainResult, train
from rs_search.train.step import DeviceNormalize

from .conftest import DIGITS_BAR, DIGITS_RECIPE, candidate, make_imagefolder


@pytest.mark.slow
def test_digits_reaches_the_bar(digits_run: tuple[TrainResult, Path]) -> None:
    result, _ = digits_run
    assert result.epochs_done == DIGITS_RECIPE["epochs"] and not result.stopped_early
    first, last = result.curve[0], result.curve[-1]
    assert last.val_top1 >= DIGITS_BAR, [m.val_top1 for m in result.curve]
    # It learned during the run. Epoch 1 already reads ~90% (BN statistics recomputed for its
    # weights; the stale running statistics used to read far lower), so the loss shows it.
    assert last.val_top1 > first.val_top1 and last.val_loss < first.val_loss - 0.1


@pytest.mark.slow
def test_curve_and_metrics_file(digits_run: tuple[TrainResult, Path]) -> None:
    result, out = digits_run
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["finished"] is True and payload["epochs_done"] == 5
    assert payload["world_size"] == 1 and payload["data"] == "digits"
    assert Candidate.from_dict(payload["candidate"]) == result.candidate
    rows = [EpochMetrics.from_dict(row) for row in payload["curve"]]
    assert rows == result.curve
    assert [m.epoch for m in rows] == [1, 2, 3, 4, 5]
    for m in rows:
        assert 0 <= m.train_top1 <= 100 and 0 <= m.val_top1 <= 100 and 0 <= m.val_top1_raw <= 100
        assert m.images_per_s > 0 and m.epoch_seconds > 0 and m.peak_memory_mb > 0
        assert m.train_loss > 0 and m.val_loss > 0
    # Warm-up peak after epoch 1, cosine to zero at the end.
    peak = result.candidate.recipe.lr
    assert rows[0].lr == pytest.approx(peak) and rows[-1].lr == pytest.approx(0.0, abs=1e-9)
    # Two checkpoints kept: epochs 4 and 5.
    assert [p.name for p in checkpoint_paths(out)] == ["ckpt-0005-000000.pt", "ckpt-0004-000000.pt"]


def _top1(
    model: torch.nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    normalize: DeviceNormalize,
) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(normalize(images)).argmax(1) == labels).sum())
            total += len(labels)
    return 100.0 * correct / total


@pytest.mark.slow
def test_val_top1_is_the_ema_weights(digits_run: tuple[TrainResult, Path]) -> None:
    """Rebuild the model from the last checkpoint: the EMA weights (with their BN statistics)
    score exactly ``val_top1``, the raw weights exactly ``val_top1_raw``, and they differ."""
    result, out = digits_run
    loaded = load_latest(out)
    assert loaded is not None
    cand = result.candidate
    source = build_data("digits", cand.arch, cand.recipe)
    loader = DataLoader(source.val, batch_size=120)
    normalize = DeviceNormalize(source.mean, source.std, torch.device("cpu"))

    raw = build_model(cand.arch)
    raw.load_state_dict(loaded.state["model"])
    ema = build_model(cand.arch)
    ema_state = {
        k.removeprefix("module."): v for k, v in loaded.state["ema"].items() if k != "n_averaged"
    }
    ema.load_state_dict(ema_state)
    assert not torch.equal(raw.fc.weight, ema.fc.weight)
    raw_var, ema_var = raw.state_dict()["bn1.running_var"], ema.state_dict()["bn1.running_var"]
    assert not torch.equal(raw_var, ema_var)  # buffers averaged too
    last = result.curve[-1]
    assert _top1(ema, loader, normalize) == pytest.approx(last.val_top1, abs=1e-9)
    assert _top1(raw, loader, normalize) == pytest.approx(last.val_top1_raw, abs=1e-9)


# --------------------------------------------------------------- rungs, stop, interrupt, resume


@pytest.fixture
def pets(tmp_path: Path) -> str:
    """A small real image folder: 3 classes, 12 train and 6 val images (PNG/JPEG, L/RGB)."""
    return f"imagefolder:{make_imagefolder(tmp_path / 'pets')}"


def opts(data: str, **kw: object) -> RunOptions:
    """CPU, no progress display, no loader processes unless asked (the small folder decodes in
    a moment)."""
    options: dict[str, object] = {"device": "cpu", "progress": False, "num_workers": 0, **kw}
    return RunOptions(data=data, **options)  # type: ignore[arg-type]


def small(epochs: int = 3, **recipe: object) -> Candidate:
    return candidate(
        arch={"num_classes": 3},
        recipe={"epochs": epochs, "batch_size": 4, "warmup_epochs": 1, **recipe},
    )


@pytest.mark.slow
def test_rung_then_resume_continues_the_same_schedule(pets: str, tmp_path: Path) -> None:
    """``stop_at_epoch`` trains a rung with the full run's LR schedule; ``resume`` continues it."""
    cand = small(epochs=3)
    out = tmp_path / "run"
    seen: list[EpochMetrics] = []
    rung = train(
        cand,
        RunOptions(
            data=pets, device="cpu", out_dir=out, stop_at_epoch=1, progress=False, num_workers=0
        ),
        on_epoch=lambda m: not seen.append(m),  # type: ignore[func-returns-value]
    )
    assert rung.epochs_done == 1 and not rung.stopped_early and seen == rung.curve
    assert rung.curve[0].lr == pytest.approx(cand.recipe.lr)  # warm-up done, cosine not started
    full = train(cand, opts(pets, out_dir=out, resume=True))
    assert [m.epoch for m in full.curve] == [1, 2, 3] and full.curve[0] == rung.curve[0]
    assert full.curve[-1].lr == pytest.approx(0.0, abs=1e-9)
    # The same run without the rung gives the same curve: data order, augmentation and dropout
    # draws are seeded per epoch and per image, so stopping and resuming changes nothing.
    straight = train(cand, opts(pets, out_dir=tmp_path / "straight"))
    for a, b in zip(straight.curve, full.curve, strict=True):
        assert (a.train_loss, a.val_loss, a.val_top1, a.train_eval_loss) == pytest.approx(
            (b.train_loss, b.val_loss, b.val_top1, b.train_eval_loss), rel=1e-5
        )


@pytest.mark.slow
def test_on_epoch_false_stops_early(pets: str) -> None:
    result = train(small(epochs=3), opts(pets), on_epoch=lambda m: m.epoch < 2)
    assert result.stopped_early and result.epochs_done == 2 and result.out_dir is None


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])  # in this process; one persistent loader process
def test_should_stop_checkpoints_mid_epoch_and_resume_finishes(
    pets: str, tmp_path: Path, workers: int
) -> None:
    """Interrupted at epoch 2 step 1 and resumed, the run ends where the uninterrupted one does:
    the checkpoint carries the dropout stream, and creating the loader's iterator draws nothing
    from it (each loader has its own generator)."""
    cand = small(epochs=2, dropout=0.5)
    out = tmp_path / "run"
    calls = {"n": 0}

    def sigterm_after_four_steps() -> bool:  # polled after every step on CPU
        calls["n"] += 1
        return calls["n"] == 4  # epoch 1 has 3 steps: the 4th is epoch 2, step 1

    with pytest.raises(TrialInterrupted, match="epoch 2 step 1/3"):
        train(
            cand,
            opts(pets, out_dir=out, num_workers=workers),
            should_stop=sigterm_after_four_steps,
        )
    assert [p.name for p in checkpoint_paths(out)][0] == "ckpt-0001-000001.pt"
    done = train(cand, opts(pets, out_dir=out, resume=True, num_workers=workers))
    assert done.epochs_done == 2 and [m.epoch for m in done.curve] == [1, 2]
    straight = train(cand, opts(pets, num_workers=workers))
    for a, b in zip(straight.curve, done.curve, strict=True):
        assert (a.train_loss, a.train_top1, a.val_loss, a.val_top1_raw) == pytest.approx(
            (b.train_loss, b.train_top1, b.val_loss, b.val_top1_raw), rel=1e-6
        )
        assert (a.train_eval_loss, a.train_eval_top1) == pytest.approx(
            (b.train_eval_loss, b.train_eval_top1), rel=1e-6
        )


def test_existing_run_is_not_overwritten_without_resume(pets: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt-0001-000000.pt").write_bytes(b"x")
    with pytest.raises(RsSearchError, match="already holds checkpoints"):
        train(small(), opts(pets, out_dir=out))


def test_resume_refuses_another_candidates_checkpoint(pets: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(small(epochs=2), opts(pets, out_dir=out, stop_at_epoch=1))
    with pytest.raises(RsSearchError, match="belongs to another candidate"):
        train(small(epochs=2, lr_per_256=0.2), opts(pets, out_dir=out, resume=True))
