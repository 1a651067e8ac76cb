"""Which candidates a benchmark table holds: a pure, seeded function of the space.

- **Equivalent candidates are one.** A parameter that cannot change training or inference under
  another parameter's value (``rs_search.space.INACTIVE``, shared with the search's sampling:
  RandAugment's magnitude when it applies no layers, the deep stem's width when the classic stem
  is used) is set to one canonical value of its domain (the fixed value, the first choice, the
  low end of a range), so the two spellings of the same run share one key and are trained once,
  and a table holds exactly the candidates ``SearchSpace.sample`` can return.
- **Small spaces are tabulated whole.** When the space has at most ``n`` distinct (normalised)
  candidates, the table holds all of them; otherwise ``n`` distinct ones drawn with ``seed``:
  uniformly over the distinct candidates when the space can be enumerated (at most
  ``ENUMERATION_LIMIT`` raw combinations), else by drawing each parameter from its domain and
  dropping repeats (continuous ranges).
- **The space's seeds come first.** A search evaluates them first and never prunes them, so a
  replay needs their curves; they count towards ``n``.

The order is the training order: seeds, then the draw in random order, so a table stopped half
way holds an unbiased sample rather than one corner of the grid.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rs_search.errors import RsSearchError
from rs_search.space import (
    INACTIVE,
    Choice,
    Domain,
    Fixed,
    FloatRange,
    Inactive,
    IntRange,
    SearchSpace,
    candidate_from_values,
)
from rs_search.specs import Candidate

__all__ = [
    "ENUMERATION_LIMIT",
    "INACTIVE",
    "Grid",
    "GridError",
    "Inactive",
    "draw_grid",
    "normalise",
    "normalise_values",
]

#: Raw combinations up to which the space is enumerated (about a second of Python).
ENUMERATION_LIMIT = 200_000
#: Draws per wanted candidate before a continuous space is declared too small for ``n``.
_ATTEMPTS_PER_CANDIDATE = 50


class GridError(RsSearchError):
    """The space cannot give the grid asked for."""


def normalise_values(values: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """Optuna-named values with every inactive parameter set to its canonical value."""
    return space.normalise_values(values)


def normalise(candidate: Candidate, space: SearchSpace) -> Candidate:
    """``candidate`` with its inactive parameters canonical (``rs_search.space.INACTIVE``)."""
    return space.normalise(candidate)


@dataclass(frozen=True, kw_only=True)
class Grid:
    """The candidates of a table, in training order."""

    candidates: tuple[Candidate, ...]
    mode: Literal["all", "sampled"]
    distinct: int | None  # distinct normalised candidates of the space (None: not countable)
    seeds: int  # how many of ``candidates`` (the first ones) are the space's seeds


def draw_grid(space: SearchSpace, *, epochs: int, n: int, seed: int) -> Grid:
    """The table's candidates (see the module docstring). Raises ``GridError`` when ``n`` is
    smaller than the number of seeds or a continuous space yields fewer than ``n`` candidates."""
    if n < 1:
        raise GridError(f"--candidates {n}: need at least 1")
    seeds = _unique(normalise(s.candidate(epochs=epochs), space) for s in space.seeds)
    if len(seeds) > n:
        raise GridError(
            f"--candidates {n} is fewer than the space's {len(seeds)} seeds; a replay needs "
            "every seed's curve: ask for at least that many"
        )
    taken = {c.key() for c in seeds}
    rng = random.Random(seed)
    raw = _raw_combinations(space)
    if raw is not None and raw <= ENUMERATION_LIMIT:
        everything = _unique(_enumerate(space, epochs))
        rest = [c for c in everything if c.key() not in taken]
        if len(everything) <= n:
            rng.shuffle(rest)
            return Grid(
                candidates=tuple(seeds + rest),
                mode="all",
                distinct=len(everything),
                seeds=len(seeds),
            )
        drawn = rng.sample(rest, n - len(seeds))
        return Grid(
            candidates=tuple(seeds + drawn),
            mode="sampled",
            distinct=len(everything),
            seeds=len(seeds),
        )
    drawn = _rejection_sample(space, epochs, n - len(seeds), taken, rng)
    return Grid(candidates=tuple(seeds + drawn), mode="sampled", distinct=None, seeds=len(seeds))


def _unique(candidates: Any) -> list[Candidate]:
    seen: set[str] = set()
    out: list[Candidate] = []
    for c in candidates:
        if c.key() not in seen:
            seen.add(c.key())
            out.append(c)
    return out


def _raw_combinations(space: SearchSpace) -> int | None:
    total = 1
    for p in space.searched_params():
        count = p.domain.cardinality()
        if count is None:
            return None
        total *= count
    return total


def _enumerate(space: SearchSpace, epochs: int) -> Any:
    fixed = space.fixed_params()
    searched = space.searched_params()
    grids = [p.domain.values() or () for p in searched]
    for combo in itertools.product(*grids):
        values = {**fixed, **{p.name: v for p, v in zip(searched, combo, strict=True)}}
        yield candidate_from_values(normalise_values(values, space), epochs=epochs)


def _draw(domain: Domain, rng: random.Random) -> Any:
    if isinstance(domain, Fixed):
        return domain.value
    if isinstance(domain, Choice):
        return rng.choice(domain.choices)
    if isinstance(domain, IntRange):
        if domain.log:
            value = round(math.exp(rng.uniform(math.log(domain.low), math.log(domain.high))))
            return min(domain.high, max(domain.low, value))
        return rng.choice(domain.values())
    assert isinstance(domain, FloatRange)
    if domain.step is not None:
        return rng.choice(domain.values() or (domain.low,))
    if domain.log:
        return math.exp(rng.uniform(math.log(domain.low), math.log(domain.high)))
    return rng.uniform(domain.low, domain.high)


def _rejection_sample(
    space: SearchSpace, epochs: int, wanted: int, taken: set[str], rng: random.Random
) -> list[Candidate]:
    out: list[Candidate] = []
    seen = set(taken)
    for _ in range(_ATTEMPTS_PER_CANDIDATE * max(wanted, 1)):
        if len(out) >= wanted:
            break
        values = {p.name: _draw(p.domain, rng) for p in space.params}
        candidate = candidate_from_values(normalise_values(values, space), epochs=epochs)
        if candidate.key() not in seen:
            seen.add(candidate.key())
            out.append(candidate)
    if len(out) < wanted:
        raise GridError(
            f"found only {len(out)} distinct candidates besides the seeds after "
            f"{_ATTEMPTS_PER_CANDIDATE * wanted} draws; ask for fewer with --candidates"
        )
    return out
