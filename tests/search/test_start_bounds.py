"""``start``'s numeric options are bounded before anything is created (issue 10, fuzz findings
that were listed as known-unfixed: each created a study whose worker then failed, or accepted
a value that queued 10^8 trials)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rs_search.errors import RsSearchError
from rs_search.search.launch import MAX_LOCAL_WORKERS, MAX_SEED, MAX_TRIALS, plan_start
from tests.search.conftest import MICRO


def plan(tmp_path: Path, **changes: object) -> None:
    options: dict[str, object] = dict(
        space_file=MICRO,
        budget="1epochs",
        study_name="bounds",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        data="synthetic:10",
        trials=1,
        timeout=None,
        workers=1,
        device="cpu",
        sampler="tpe",
        eta=3,
        min_rung=None,
        seed=0,
        artifacts=str(tmp_path / "artifacts"),
        heartbeat=30,
        grace=120,
        loader_workers=None,
    )
    plan_start(**{**options, **changes})  # type: ignore[arg-type]


BAD = [
    ({"trials": MAX_TRIALS + 1}, f"--trials {MAX_TRIALS + 1}: must be between 1 and {MAX_TRIALS}"),
    ({"trials": 0}, "--trials 0: must be between 1"),
    ({"workers": MAX_LOCAL_WORKERS + 1}, f"--workers {MAX_LOCAL_WORKERS + 1}: must be 0 .* up to"),
    ({"workers": -1}, "--workers -1: must be 0"),
    ({"loader_workers": -1}, "--loader-workers -1: must be at least 0"),
    ({"seed": -1}, "--seed -1: must be between 0 and"),
    (
        {"seed": MAX_SEED - 1, "workers": 3},
        f"--seed {MAX_SEED - 1}: must be between 0 and {MAX_SEED - 2}",
    ),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[str(c) for c, _ in BAD])
def test_out_of_bounds_is_refused_before_anything_is_made(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(RsSearchError, match="^" + message.replace("+", r"\+").replace("(", r"\(")):
        plan(tmp_path, **changes)
    assert not list(tmp_path.iterdir())


def test_the_bounds_admit_their_edges(tmp_path: Path) -> None:
    plan(tmp_path, trials=MAX_TRIALS, seed=MAX_SEED, loader_workers=0)  # one worker: seed + 0


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="checks a machine without a GPU")
def test_an_indexed_gpu_that_is_not_there_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RsSearchError, match=r"^--device cuda:0: no such CUDA device \(0 visible\)"):
        plan(tmp_path, device="cuda:0")
    assert not list(tmp_path.iterdir())
