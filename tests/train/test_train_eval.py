"""Train accuracy measured like validation (issue 12 item 2): a fixed subset of the training
split, the same every epoch, after a resume and for every candidate, sharded over ranks, read in
eval mode without augmentation by the weights validation reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from rs_search.models import build_model
from rs_search.specs import ArchSpec, RecipeSpec
from rs_search.train.checkpoint import checkpoint_paths
from rs_search.train.data import build_data
from rs_search.train.distributed import DistContext
from rs_search.train.engine import RunOptions, train
from rs_search.train.loader import (
    TRAIN_EVAL_MAX_IMAGES,
    SeededItems,
    SubsetPasses,
    TwoViews,
    train_eval_indices,
)
from rs_search.train.recipe import build_criterion
from rs_search.train.step import DeviceNormalize

from .conftest import candidate, make_imagefolder

AUGMENTED = RecipeSpec(randaug_layers=2, randaug_magnitude=10)


def _arch(**kw: object) -> ArchSpec:
    base: dict[str, object] = {"layout": (1, 1, 1, 1), "width": 0.25, "resolution": 16}
    return ArchSpec(**{**base, "num_classes": 10, **kw})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- the subset


def test_subset_size_is_the_val_split_up_to_the_cap() -> None:
    assert len(train_eval_indices(1437, 360)) == 360  # digits
    assert len(train_eval_indices(12, 60)) == 12  # a train split smaller than val
    assert len(train_eval_indices(1_281_167, 50_000)) == TRAIN_EVAL_MAX_IMAGES  # ImageNet
    indices = train_eval_indices(1437, 360)
    assert indices == sorted(set(indices)) and 0 <= indices[0] and indices[-1] < 1437
    assert indices == train_eval_indices(1437, 360)  # every epoch, every resume, every candidate
    assert indices != list(range(360))  # drawn over the whole split, not its first images


def test_ranks_share_the_subset_like_validation() -> None:
    indices = train_eval_indices(1437, 360)
    shares = [SubsetPasses(indices, DistContext(rank=r, world_size=3), seed=0) for r in range(3)]
    keys = [list(s) for s in shares]
    assert sorted(k[0] for share in keys for k in share) == indices  # each image once
    assert {s.smallest_share for s in shares} == {120}


def test_passes_read_the_same_images_every_time() -> None:
    indices = train_eval_indices(1437, 360)
    passes = SubsetPasses(indices, DistContext(), seed=7)
    plain = list(passes)
    assert all(seed is None for _, seed in plain)
    passes.augmented = True
    augmented = list(passes)
    assert [i for i, _ in augmented] == [i for i, _ in plain]
    assert len({seed for _, seed in augmented}) == len(augmented)  # one draw per image
    assert augmented == list(passes)  # the next epoch's pass
    resumed = SubsetPasses(indices, DistContext(), seed=7)  # a new process after a resume
    resumed.augmented = True
    assert list(resumed) == augmented
    passes.augmented = False
    assert list(passes) == plain


def test_two_views_are_the_eval_transform_and_the_seeded_augmentation() -> None:
    source = build_data("digits", _arch(), AUGMENTED)
    views = TwoViews(source.train, source.train_eval)
    plain, label = views[(5, None)]
    assert torch.equal(plain, source.train_eval[5][0]) and label == source.train[5][1]
    augmented, _ = views[(5, 123)]
    assert torch.equal(augmented, SeededItems(source.train)[(5, 123)][0])
    assert torch.equal(augmented, views[(5, 123)][0])  # seeded: the same draw again
    assert not torch.equal(augmented, plain)


def test_one_loader_serves_both_views_with_persistent_processes() -> None:
    """The loader's processes outlive a pass; the sampler's view is read at each pass's start."""
    source = build_data("digits", _arch(), AUGMENTED)
    passes = SubsetPasses(train_eval_indices(200, 16), DistContext(), seed=3)
    loader = DataLoader(
        TwoViews(source.train, source.train_eval),
        batch_size=16,
        sampler=passes,
        num_workers=1,
        persistent_workers=True,
    )
    passes.augmented = True
    augmented = next(iter(loader))[0]
    passes.augmented = False
    plain = next(iter(loader))[0]
    passes.augmented = True
    again = next(iter(loader))[0]
    expected = torch.stack([source.train_eval[i][0] for i in passes.indices])
    assert torch.equal(plain, expected)
    assert torch.equal(augmented, again) and not torch.equal(augmented, plain)


def test_train_eval_split_is_the_train_split_preprocessed_like_val(tmp_path: Path) -> None:
    digits = build_data("digits", _arch(), AUGMENTED)
    assert len(digits.train_eval) == digits.train_size  # type: ignore[arg-type]
    first, again = digits.train_eval[3], digits.train_eval[3]
    assert torch.equal(first[0], again[0]) and first[1] == digits.train[3][1]
    synthetic = build_data("synthetic:10", _arch(), AUGMENTED)
    assert torch.equal(synthetic.train_eval[3][0], synthetic.train_eval[3][0])
    root = make_imagefolder(tmp_path / "pets")
    folder = build_data(f"imagefolder:{root}", _arch(num_classes=3), AUGMENTED)
    train, plain, val = folder.train, folder.train_eval, folder.val
    assert plain.samples == train.samples  # type: ignore[attr-defined]
    path, label = train.samples[4]  # type: ignore[attr-defined]
    image, plain_label = plain[4]
    assert plain_label == label
    assert torch.equal(image, val.transform(val.loader(path)))  # type: ignore[attr-defined]
    assert train.transform is not plain.transform  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- the engine


def _scores(
    model: torch.nn.Module, loader: DataLoader[tuple[torch.Tensor, int]], normalize: DeviceNormalize
) -> tuple[float, float]:
    criterion = build_criterion(RecipeSpec())
    model.eval()
    loss = correct = total = 0.0
    with torch.no_grad():
        for images, labels in loader:
            logits = model(normalize(images))
            loss += float(criterion(logits, labels)) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            total += len(labels)
    return loss / total, 100.0 * correct / total


@pytest.mark.slow
def test_train_eval_figures_are_an_eval_pass_on_the_fixed_subset(tmp_path: Path) -> None:
    """Every regulariser on (RandAugment, dropout, stochastic depth): each epoch's train-eval
    figures are what the checkpointed raw and EMA weights score in eval mode, without
    augmentation, on the same fixed training images (what a train-mode or augmented pass
    would not give)."""
    cand = candidate(
        recipe={
            "epochs": 2,
            "randaug_layers": 2,
            "randaug_magnitude": 10,
            "dropout": 0.5,
            "stochastic_depth": 0.5,
            "ema_decay": 0.9,
        }
    )
    out = tmp_path / "run"
    result = train(cand, RunOptions(device="cpu", out_dir=out, progress=False, num_workers=0))
    source = build_data("digits", cand.arch, cand.recipe)
    subset = Subset(source.train_eval, train_eval_indices(source.train_size, source.val_size))
    loader = DataLoader(subset, batch_size=100)
    normalize = DeviceNormalize(source.mean, source.std, torch.device("cpu"))
    for path, row in zip(reversed(checkpoint_paths(out)), result.curve, strict=True):
        state = torch.load(path, weights_only=True)
        raw, ema = build_model(cand.arch), build_model(cand.arch)
        raw.load_state_dict(state["model"])
        ema_state = {k.removeprefix("module."): v for k, v in state["ema"].items()}
        ema_state.pop("n_averaged")
        ema.load_state_dict(ema_state)
        assert row.train_eval_loss_raw is not None and row.train_eval_loss is not None
        assert _scores(raw, loader, normalize) == pytest.approx(
            (row.train_eval_loss_raw, row.train_eval_top1_raw), rel=1e-6
        )
        assert _scores(ema, loader, normalize) == pytest.approx(
            (row.train_eval_loss, row.train_eval_top1), rel=1e-6
        )
    last = result.curve[-1]
    assert last.train_eval_top1 is not None and last.train_eval_top1 > last.train_top1
