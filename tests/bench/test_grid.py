"""The table's grid: all of a small space, N distinct reproducible draws of a large one, the
space's seeds first, equivalent candidates (inactive parameters) merged."""

from __future__ import annotations

import dataclasses

import pytest

from rs_search.bench.grid import GridError, draw_grid, normalise
from rs_search.space import SearchSpace, candidate_values, load_space
from rs_search.specs import Candidate
from tests.bench.helpers import NANO, QUICKSTART


def keys(candidates: tuple[Candidate, ...]) -> list[str]:
    return [c.key() for c in candidates]


def test_small_space_gives_every_combination() -> None:
    space = load_space(NANO)
    grid = draw_grid(space, epochs=3, n=64, seed=0)
    assert grid.mode == "all" and grid.distinct == 4 and len(grid.candidates) == 4
    combos = {(c.arch.resolution, c.recipe.dropout) for c in grid.candidates}
    assert combos == {(8, 0.0), (8, 0.1), (16, 0.0), (16, 0.1)}
    assert all(c.recipe.epochs == 3 for c in grid.candidates)


def test_n_equal_to_the_space_is_still_all() -> None:
    grid = draw_grid(load_space(NANO), epochs=3, n=4, seed=5)
    assert grid.mode == "all" and len(set(keys(grid.candidates))) == 4


def test_large_space_gives_n_distinct_reproducible_candidates_seeds_first() -> None:
    space = load_space(QUICKSTART)
    grid = draw_grid(space, epochs=12, n=60, seed=0)
    assert grid.mode == "sampled" and len(grid.candidates) == 60
    assert len(set(keys(grid.candidates))) == 60
    # 3 layouts x 4 widths x 6 resolutions x 2 weight decays x 2 dropouts x RandAugment
    # (off, or 1 layer at magnitude 5 or 10): 72 x 4 x 3
    assert grid.distinct == 864
    assert grid.seeds == 3
    seeds = [normalise(s.candidate(epochs=12), space).key() for s in space.seeds]
    assert keys(grid.candidates)[:3] == seeds
    assert all(not space.violations(c) for c in grid.candidates)
    again = draw_grid(space, epochs=12, n=60, seed=0)
    assert keys(again.candidates) == keys(grid.candidates)
    other = draw_grid(space, epochs=12, n=60, seed=1)
    assert keys(other.candidates)[:3] == seeds
    assert keys(other.candidates) != keys(grid.candidates)


def test_a_draw_never_holds_two_equivalent_candidates() -> None:
    space = load_space(QUICKSTART)
    grid = draw_grid(space, epochs=12, n=200, seed=3)
    off = [c for c in grid.candidates if c.recipe.randaug_layers == 0]
    assert off, "the draw should hold candidates without RandAugment"
    # the canonical magnitude is the space's first choice
    assert {c.recipe.randaug_magnitude for c in off} == {5}
    on = [c for c in grid.candidates if c.recipe.randaug_layers == 1]
    assert {c.recipe.randaug_magnitude for c in on} == {5, 10}


def test_magnitude_without_randaugment_is_one_candidate() -> None:
    space = load_space(QUICKSTART)
    base = space.seeds[0].candidate(epochs=12)  # randaug_layers 0, magnitude 5
    other = dataclasses.replace(base, recipe=dataclasses.replace(base.recipe, randaug_magnitude=10))
    assert base.key() != other.key()
    assert normalise(base, space).key() == normalise(other, space).key()
    with_layers = dataclasses.replace(
        base, recipe=dataclasses.replace(base.recipe, randaug_layers=1)
    )
    with_layers_10 = dataclasses.replace(
        with_layers, recipe=dataclasses.replace(with_layers.recipe, randaug_magnitude=10)
    )
    assert normalise(with_layers, space).key() != normalise(with_layers_10, space).key()


def test_stem_width_without_the_deep_stem_is_one_candidate() -> None:
    space = SearchSpace.from_dict(
        {
            "architecture": {
                "depth": [[1, 1, 1, 1]],
                "resnet_d": [True, False],
                "stem_width": [16, 32],
                "resolution": 16,
            }
        }
    )
    grid = draw_grid(space, epochs=2, n=10, seed=0)
    combos = sorted((c.arch.resnet_d, c.arch.stem_width) for c in grid.candidates)
    assert combos == [(False, 16), (True, 16), (True, 32)]
    assert grid.distinct == 3


def test_continuous_space_is_sampled_without_repeats() -> None:
    space = load_space(QUICKSTART.parent / "tiny.yaml")  # lr_per_256 is a continuous range
    grid = draw_grid(space, epochs=4, n=20, seed=7)
    assert grid.mode == "sampled" and grid.distinct is None
    assert len(set(keys(grid.candidates))) == 20
    assert all(not space.violations(c) for c in grid.candidates)
    assert keys(draw_grid(space, epochs=4, n=20, seed=7).candidates) == keys(grid.candidates)


def test_fewer_candidates_than_seeds_is_an_error() -> None:
    with pytest.raises(GridError, match="fewer than the space's 3 seeds"):
        draw_grid(load_space(QUICKSTART), epochs=12, n=2, seed=0)


def test_normalise_keeps_every_active_value() -> None:
    space = load_space(QUICKSTART)
    grid = draw_grid(space, epochs=12, n=50, seed=11)
    for c in grid.candidates:
        before, after = candidate_values(c), candidate_values(normalise(c, space))
        changed = {k for k in before if before[k] != after[k]}
        assert changed == set()  # drawn candidates are already normalised
