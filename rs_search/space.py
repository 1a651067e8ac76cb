"""Search-space YAML -> a typed, frozen ``SearchSpace`` that samples ``Candidate``s (DESIGN.md §3).

Format (every section but ``architecture`` is optional)::

    name: quickstart                       # optional label
    description: ...                       # optional free text
    architecture:                          # keys: depth (or layout), and the ArchSpec fields
      depth: [[1, 1, 1, 1], [2, 2, 2, 2], 50]   # named depths and/or explicit 4-stage layouts
      width: {low: 0.125, high: 0.5, step: 0.125}
      resolution: [16, 32]
      resnet_d: true                       # a scalar is fixed
    recipe:                                # RecipeSpec fields except epochs (the budget sets it)
      weight_decay: {low: 1.0e-5, high: 1.0e-3, log: true}
    objectives: {accuracy: maximize, latency: minimize, memory: minimize}
    constraints: {max_latency_ms: 50, max_memory_mb: 2048, max_params_m: 100}
    target: {name: a100-bf16, device: cuda, batch_size: 128, dtype: bf16,
             channels_last: true, compile: false, threads: null}
    seeds:                                 # evaluated first, e.g. published configs
      - {name: resnetrs50-160, arch: {depth: 50, resolution: 160}, recipe: {dropout: 0.25}}
    sources:                               # optional: where a dimension's values come from
      architecture: {width: "paper Sec. 7.1: widths 0.25x-2x"}
      recipe: {dropout: "official configs: 0.25, 0.4 for the largest; 0-0.5 project heuristic"}

A scalar is fixed, a list is a categorical choice (one element = fixed), a mapping
``{low, high, log?, step?}`` is a range: integer for integer fields, float for float fields.
A bare ``depth: [2, 2, 2, 2]`` is ambiguous (four named depths or one layout?) and rejected; write
``[[2, 2, 2, 2]]``. Keys the file does not give take the ArchSpec/RecipeSpec defaults (the paper's
values), so a parsed space always lists every parameter.

``sources`` holds one line of provenance per ``architecture``/``recipe`` key (a paper section, a
config file, or a project heuristic named as such); ``space check`` prints it. It labels the
space, like ``name`` and ``description``: it is not part of the fingerprint.

Optuna parameter names are ``arch.<key>`` and ``recipe.<key>``; a layout is stored as its label
(``"50"`` or ``"2-2-2-2"``) because Optuna choices must be scalars. Parameters are suggested in
the spec's field order, so a seeded sampler gives the same candidate whatever the key order of
the file. A parameter that cannot matter under another's value (``INACTIVE``: RandAugment's
magnitude with no RandAugment layer) is not suggested at all: it takes one canonical value, so a
sampler neither spends trials on no-effect variants nor learns from a dimension that does nothing
(Optuna's conditional search spaces, as in its ``define-by-run`` examples).
Every problem is a ``SpaceError`` naming the file, the key path and what is allowed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from rs_search.devices import allowed, is_device
from rs_search.errors import SpaceError, SpecError
from rs_search.specs import (
    MAX_BATCH_SIZE,
    NAMED_LAYOUTS,
    ArchSpec,
    Candidate,
    RecipeSpec,
    layout_for,
    layout_label,
)

if TYPE_CHECKING:
    import optuna

Kind = Literal["layout", "int", "float", "bool", "str"]
Section = Literal["arch", "recipe"]


# ---------------------------------------------------------------------------------------------
# Keys: derived from the spec dataclasses, so a new spec field is searchable without edits here.


def _kind_of(value: Any) -> Kind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, tuple):
        return "layout"
    return "str"


def _spec_kinds(spec: ArchSpec | RecipeSpec) -> dict[str, Kind]:
    kinds = {f.name: _kind_of(getattr(spec, f.name)) for f in fields(spec)}
    if "layout" in kinds:  # the space calls the layout "depth", as the paper does
        kinds = {("depth" if k == "layout" else k): v for k, v in kinds.items()}
    kinds.pop("epochs", None)  # the budget decides the epochs
    return kinds


ARCH_KINDS: dict[str, Kind] = _spec_kinds(ArchSpec())
RECIPE_KINDS: dict[str, Kind] = _spec_kinds(RecipeSpec())
_ARCH_DEFAULTS: dict[str, Any] = {
    ("depth" if k == "layout" else k): (layout_label(v) if k == "layout" else v)
    for k, v in ArchSpec().to_dict().items()
}
_RECIPE_DEFAULTS: dict[str, Any] = RecipeSpec().to_dict()
SECTIONS: tuple[str, ...] = (
    "name",
    "description",
    "architecture",
    "recipe",
    "objectives",
    "constraints",
    "target",
    "seeds",
    "sources",
)
SOURCE_SECTIONS: dict[str, Section] = {"architecture": "arch", "recipe": "recipe"}
_LABELS: tuple[str, ...] = ("name", "description", "seeds", "sources")  # not fingerprinted
RANGE_KEYS: tuple[str, ...] = ("low", "high", "log", "step")
Direction = Literal["maximize", "minimize"]
OBJECTIVES: dict[str, Direction] = {
    "accuracy": "maximize",
    "latency": "minimize",
    "memory": "minimize",
}
CONSTRAINTS: tuple[str, ...] = ("max_latency_ms", "max_memory_mb", "max_params_m")
DTYPES: tuple[str, ...] = ("fp32", "bf16", "fp16")
# A project heuristic: a categorical choice longer than this is a range written out (or a typo),
# and checking a list for repeats costs its length squared.
MAX_CHOICES = 1000
MAX_THREADS = 4096  # a target's CPU threads: more than the largest servers have cores


class _Invalid(Exception):
    """Internal: a problem at a key path; ``parse_space`` adds the file name."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


# ---------------------------------------------------------------------------------------------
# Domains


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Fixed:
    """One value; not an Optuna parameter."""

    value: Any

    def cardinality(self) -> int:
        return 1

    def values(self) -> tuple[Any, ...]:
        return (self.value,)

    def contains(self, value: Any) -> bool:
        return bool(value == self.value)

    def describe(self) -> str:
        return f"fixed {_fmt(self.value)}"

    def to_yaml(self) -> Any:
        return self.value

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value

    def nearest(self, value: Any, *, log: bool = False, prefer_higher: bool = False) -> Any:
        """The value this domain allows that is nearest ``value``: the fixed one."""
        return self.value


@dataclass(frozen=True)
class Choice:
    """A categorical choice between at least two scalars."""

    choices: tuple[Any, ...]

    def cardinality(self) -> int:
        return len(self.choices)

    def values(self) -> tuple[Any, ...]:
        return self.choices

    def contains(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join(_fmt(c) for c in self.choices)

    def to_yaml(self) -> Any:
        return list(self.choices)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def nearest(self, value: Any, *, log: bool = False, prefer_higher: bool = False) -> Any:
        """The numeric choice nearest ``value`` (by ratio with ``log``); a tie goes to the higher
        choice with ``prefer_higher``, else to the lower."""
        if self.contains(value):
            return value

        def distance(choice: Any) -> tuple[float, int]:
            if log and choice > 0 and value > 0:
                d = abs(math.log(choice) - math.log(value))
            else:
                d = abs(choice - value)
            return (round(d, 9), 0 if (choice > value) == prefer_higher else 1)

        return min(self.choices, key=distance)


@dataclass(frozen=True)
class IntRange:
    """Integers low..high (both included) in steps of ``step``, or log-uniform when ``log``."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def cardinality(self) -> int:
        return (self.high - self.low) // self.step + 1

    def values(self) -> tuple[Any, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return self.low <= value <= self.high and (value - self.low) % self.step == 0

    def describe(self) -> str:
        extra = " log" if self.log else (f" step {self.step}" if self.step != 1 else "")
        return f"int {self.low}..{self.high}{extra}"

    def to_yaml(self) -> Any:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step != 1:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def nearest(self, value: Any, *, log: bool = False, prefer_higher: bool = False) -> Any:
        """``value`` clamped to low..high and snapped to the step."""
        got = min(max(value, self.low), self.high)
        return int(self.low + round((got - self.low) / self.step) * self.step)


@dataclass(frozen=True)
class FloatRange:
    """Floats low..high; discrete with ``step``, log-uniform with ``log`` (not both: Optuna)."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    def cardinality(self) -> int | None:
        return None if self.step is None else _steps(self.low, self.high, self.step) + 1

    def values(self) -> tuple[Any, ...] | None:
        if self.step is None:
            return None
        return tuple(
            _on_grid(self.low + i * self.step)
            for i in range(_steps(self.low, self.high, self.step) + 1)
        )

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        return self.step is None or _is_multiple(value - self.low, self.step)

    def describe(self) -> str:
        extra = (
            " log" if self.log else (f" step {_fmt(self.step)}" if self.step is not None else "")
        )
        return f"float {_fmt(self.low)}..{_fmt(self.high)}{extra}"

    def to_yaml(self) -> Any:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        value = trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)
        # low + k*step carries binary noise (0.30000000000000004); an ArchSpec key must not.
        return _on_grid(value) if self.step is not None else value

    def nearest(self, value: Any, *, log: bool = False, prefer_higher: bool = False) -> Any:
        """``value`` clamped to low..high (and snapped to the step when there is one)."""
        got = min(max(value, self.low), self.high)
        if self.step is None:
            return got
        return _on_grid(self.low + round((got - self.low) / self.step) * self.step)


Domain = Fixed | Choice | IntRange | FloatRange


def _steps(low: float, high: float, step: float) -> int:
    return int(round((high - low) / step))


def _is_multiple(span: float, step: float) -> bool:
    ratio = span / step
    return abs(ratio - round(ratio)) <= 1e-9 * max(1.0, abs(ratio))


def _on_grid(value: float) -> float:
    return round(value, 10)


# ---------------------------------------------------------------------------------------------
# Parameters and the other sections


@dataclass(frozen=True)
class Param:
    """One key of ``architecture`` or ``recipe`` with its domain; ``name`` is the Optuna name."""

    section: Section
    key: str
    kind: Kind
    domain: Domain
    source: str | None = None  # where the values come from (the file's ``sources`` section)

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def searched(self) -> bool:
        return not isinstance(self.domain, Fixed)


@dataclass(frozen=True, kw_only=True)
class Objective:
    name: str  # accuracy | latency | memory
    direction: Direction

    @property
    def unit(self) -> str:
        return {"accuracy": "top-1 %", "latency": "ms per batch", "memory": "MB peak"}[self.name]


@dataclass(frozen=True, kw_only=True)
class Constraints:
    """Hard limits (``trial.set_constraint``); a candidate breaking one known before training is
    never trained (DESIGN.md §3, "Objectives")."""

    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    max_params_m: float | None = None

    def to_dict(self) -> dict[str, float]:
        return {name: v for name in CONSTRAINTS if (v := getattr(self, name)) is not None}


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """The hardware profile latency and memory are measured on (DESIGN.md §3, "Latency")."""

    name: str
    mode: str = "inference"  # inference | train_step (rs_search.latency.profiles.MODES)
    device: str = "cpu"
    batch_size: int = 1
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None  # None: torch's default thread count
    device_name: str | None = None  # the hardware figures must come from; None: where measured

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_TARGET_KINDS: dict[str, Kind] = {
    "name": "str",
    "mode": "str",
    "device": "str",
    "batch_size": "int",
    "dtype": "str",
    "channels_last": "bool",
    "compile": "bool",
    "threads": "int",
    "device_name": "str",
}
_TARGET_MODES = ("inference", "train_step")


@dataclass(frozen=True, kw_only=True)
class Seed:
    """A configuration to evaluate first (for example a published ResNet-RS model). ``recipe``
    holds every RecipeSpec field except ``epochs``, which the budget gives: use ``candidate()``."""

    name: str
    arch: ArchSpec
    recipe: Mapping[str, Any]

    def candidate(self, *, epochs: int) -> Candidate:
        return Candidate(arch=self.arch, recipe=RecipeSpec(**self.recipe, epochs=epochs))


# ---------------------------------------------------------------------------------------------
# Inactive (conditional) parameters


@dataclass(frozen=True, kw_only=True)
class Inactive:
    """``param`` has no effect when ``when`` equals ``equals`` (Optuna names)."""

    param: str
    when: str
    equals: Any
    why: str


# Each rule cites the code that makes the parameter dead; a rule that is wrong would merge two
# different runs, so only exact no-ops belong here. ``when`` comes before ``param`` in the
# sampling order (the spec's field order), so ``SearchSpace.sample`` knows it when it gets there.
INACTIVE: tuple[Inactive, ...] = (
    Inactive(
        param="recipe.randaug_magnitude",
        when="recipe.randaug_layers",
        equals=0,
        why="no RandAugment layer is applied (rs_search/train/augment.py)",
    ),
    Inactive(
        param="arch.stem_width",
        when="arch.resnet_d",
        equals=False,
        why="the classic stem is one 7x7 conv of 64 channels (rs_search/models/resnet.py)",
    ),
)


def inactive_rule(name: str, values: Mapping[str, Any]) -> Inactive | None:
    """The rule that makes parameter ``name`` dead under the (Optuna-named) ``values`` so far,
    or None when it matters."""
    for rule in INACTIVE:
        if rule.param == name and rule.when in values:
            when = values[rule.when]
            if when == rule.equals and type(when) is type(rule.equals):
                return rule
    return None


def canonical_value(domain: Domain) -> Any:
    """The one value an inactive parameter takes: the fixed value, the first choice, the low end
    of a range."""
    if isinstance(domain, Fixed):
        return domain.value
    if isinstance(domain, Choice):
        return domain.choices[0]
    return domain.low


# ---------------------------------------------------------------------------------------------
# The space


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """A parsed space file. Build with ``load_space(path)`` or ``SearchSpace.from_dict(data)``."""

    architecture: tuple[Param, ...]
    recipe: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    constraints: Constraints
    target: TargetSpec
    seeds: tuple[Seed, ...] = ()
    name: str | None = None
    description: str | None = None
    source: str = field(default="<space>", compare=False)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<space>") -> SearchSpace:
        return parse_space(data, source=source)

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> SearchSpace:
        return load_space(path)

    # -- parameters --------------------------------------------------------------------------

    @property
    def params(self) -> tuple[Param, ...]:
        return self.architecture + self.recipe

    def param(self, name: str) -> Param:
        """``space.param("arch.width")``."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def fixed_params(self) -> dict[str, Any]:
        """Optuna-style names -> values of the parameters the space does not search."""
        return {p.name: p.domain.value for p in self.params if isinstance(p.domain, Fixed)}

    def searched_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.searched)

    @property
    def directions(self) -> list[Direction]:
        """For ``optuna.create_study(directions=...)``, in objective order."""
        return [o.direction for o in self.objectives]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The Optuna distributions of the searched parameters (for ``study.ask``)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for p in self.searched_params():
            d = p.domain
            if isinstance(d, Choice):
                out[p.name] = CategoricalDistribution(list(d.choices))
            elif isinstance(d, IntRange):
                out[p.name] = IntDistribution(d.low, d.high, log=d.log, step=d.step)
            elif isinstance(d, FloatRange):
                out[p.name] = FloatDistribution(d.low, d.high, log=d.log, step=d.step)
        return out

    # -- sampling ----------------------------------------------------------------------------

    def sample(self, trial: optuna.Trial, *, epochs: int) -> Candidate:
        """Suggest every searched parameter on ``trial`` and build the candidate it names. An
        inactive parameter (``INACTIVE``) is not suggested: it takes its canonical value."""
        values: dict[str, Any] = {}
        for p in self.params:
            if inactive_rule(p.name, values) is not None:
                values[p.name] = canonical_value(p.domain)
            else:
                values[p.name] = p.domain.suggest(trial, p.name)
        return candidate_from_values(values, epochs=epochs)

    def normalise_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna-named ``values`` with every inactive parameter at its canonical value."""
        out = dict(values)
        for rule in INACTIVE:
            if rule.param in out and inactive_rule(rule.param, out) is not None:
                out[rule.param] = canonical_value(self.param(rule.param).domain)
        return out

    def normalise(self, candidate: Candidate) -> Candidate:
        """``candidate`` with its inactive parameters canonical: two spellings of the same run
        become one candidate with one ``key()`` (what ``sample`` returns for it)."""
        values = self.normalise_values(candidate_values(candidate))
        return candidate_from_values(values, epochs=candidate.recipe.epochs)

    def seed_params(self, seed: Seed | Candidate) -> dict[str, Any]:
        """The searched parameters of ``seed`` under their Optuna names, for ``enqueue_trial``.
        Raises ``SpaceError`` when the candidate lies outside the space."""
        candidate = seed.candidate(epochs=1) if isinstance(seed, Seed) else seed
        problems = self.violations(candidate)
        if problems:
            raise SpaceError(
                f"{self.source}: candidate is outside the space: {'; '.join(problems)}"
            )
        values = candidate_values(candidate)
        return {p.name: values[p.name] for p in self.searched_params()}

    def violations(self, candidate: Candidate) -> list[str]:
        """Why ``candidate`` is outside the space (empty when it is inside). Epochs are ignored."""
        values = candidate_values(candidate)
        return [
            f"{p.name} = {_fmt(values[p.name])} is not in the space ({p.domain.describe()})"
            for p in self.params
            if not p.domain.contains(values[p.name])
        ]

    # -- architectures -----------------------------------------------------------------------

    def distinct_architectures(self) -> int | None:
        """Number of distinct ArchSpecs; None when a float range without step makes it
        continuous."""
        total = 1
        for p in self.architecture:
            n = p.domain.cardinality()
            if n is None:
                return None
            total *= n
        return total

    def architectures(self) -> Iterator[ArchSpec]:
        """Every architecture of a finite space (the full grid; see ``distinct_architectures``)."""
        grids = [p.domain.values() for p in self.architecture]
        if any(g is None for g in grids):
            raise SpaceError(
                f"{self.source}: the architecture space is continuous; it has no finite grid"
            )
        keys = [p.key for p in self.architecture]
        for combo in itertools.product(*[g for g in grids if g is not None]):
            yield ArchSpec.from_dict(dict(zip(keys, combo, strict=True)))

    def extreme_architectures(self) -> tuple[list[ArchSpec], list[ArchSpec]]:
        """Candidates for the smallest and the largest architecture of the space.

        Parameters and FLOPs grow monotonically with every numeric architecture key (width,
        resolution, SE ratio, stem width, classes, channels) and with the block count of each
        stage (an extra block adds its convolutions). So the minimum over the space is attained
        with every numeric key at its low end and a layout that no other choice undercuts stage
        by stage; the maximum symmetrically. Choices without an order (ResNet-D on/off) are
        enumerated. The published layouts form a chain, so the paper's space needs one each."""
        layout = next(p for p in self.architecture if p.kind == "layout")
        other = [p for p in self.architecture if p.kind not in ("int", "float", "layout")]
        numeric = [p for p in self.architecture if p.kind in ("int", "float")]
        labels = layout.domain.values() or ()
        small = self._extremes(
            layout.key,
            _undominated(labels, low=True),
            other,
            {p.key: _bound(p.domain, low=True) for p in numeric},
        )
        large = self._extremes(
            layout.key,
            _undominated(labels, low=False),
            other,
            {p.key: _bound(p.domain, low=False) for p in numeric},
        )
        return small, large

    @staticmethod
    def _extremes(
        layout_key: str, labels: list[str], other: list[Param], numeric: dict[str, Any]
    ) -> list[ArchSpec]:
        keys = [layout_key] + [p.key for p in other]
        grids = [labels] + [list(p.domain.values() or ()) for p in other]
        return [
            ArchSpec.from_dict({**dict(zip(keys, combo, strict=True)), **numeric})
            for combo in itertools.product(*grids)
        ]

    # -- identity ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The canonical YAML/JSON form; ``SearchSpace.from_dict(space.to_dict()) == space``."""
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.description is not None:
            out["description"] = self.description
        out["architecture"] = {p.key: _param_yaml(p) for p in self.architecture}
        out["recipe"] = {p.key: _param_yaml(p) for p in self.recipe}
        out["objectives"] = {o.name: o.direction for o in self.objectives}
        out["constraints"] = self.constraints.to_dict()
        out["target"] = self.target.to_dict()
        out["seeds"] = [
            {"name": s.name, "arch": s.arch.to_dict(), "recipe": dict(s.recipe)} for s in self.seeds
        ]
        sources = {
            name: {p.key: p.source for p in params if p.source is not None}
            for name, params in (("architecture", self.architecture), ("recipe", self.recipe))
        }
        if any(sources.values()):
            out["sources"] = {name: texts for name, texts in sources.items() if texts}
        return out

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of what decides the search: architecture, recipe, objectives,
        constraints and target. Name, description, seeds and sources are left out: editing them
        changes neither which candidates exist nor how they are scored."""
        data = {k: v for k, v in self.to_dict().items() if k not in _LABELS}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def differences(self, other: SearchSpace) -> list[str]:
        """Human-readable ``path: old -> new`` lines for what differs in the fingerprinted parts."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [
            f"{k}: {mine.get(k, '(absent)')} -> {theirs.get(k, '(absent)')}"
            for k in sorted(set(mine) | set(theirs))
            if not k.startswith(_LABELS) and mine.get(k) != theirs.get(k)
        ]


def _undominated(labels: tuple[Any, ...], *, low: bool) -> list[str]:
    """Layouts no other layout undercuts (``low``) or exceeds (not ``low``) in every stage."""
    layouts = {label: layout_for(label) for label in labels}

    def beats(a: tuple[int, ...], b: tuple[int, ...]) -> bool:  # a at least as extreme as b, a != b
        pairs = list(zip(a, b, strict=True))
        return a != b and all((x <= y) if low else (x >= y) for x, y in pairs)

    return [
        lab
        for lab, lay in layouts.items()
        if not any(beats(other, lay) for other in layouts.values())
    ]


def _bound(domain: Domain, *, low: bool) -> Any:
    if isinstance(domain, IntRange | FloatRange):
        return domain.low if low else domain.high
    values = domain.values()
    return min(values) if low else max(values)


def _param_yaml(p: Param) -> Any:
    if p.kind != "layout":
        return p.domain.to_yaml()
    if isinstance(p.domain, Fixed):
        return _layout_yaml(p.domain.value, fixed=True)
    return [_layout_yaml(v) for v in p.domain.values() or ()]


def _layout_yaml(label: str, *, fixed: bool = False) -> Any:
    if label.isdigit():
        return int(label)
    layout = [int(b) for b in label.split("-")]
    return [layout] if fixed else layout


def _flatten(data: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(data, Mapping):
        out: dict[str, str] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(data)}


def candidate_values(candidate: Candidate) -> dict[str, Any]:
    """A candidate as Optuna-named values (``arch.depth`` is the layout label)."""
    arch = candidate.arch.to_dict()
    values = {f"arch.{k}": arch[k] for k in ARCH_KINDS if k != "depth"}
    values["arch.depth"] = candidate.arch.label
    recipe = candidate.recipe.to_dict()
    values.update({f"recipe.{k}": recipe[k] for k in RECIPE_KINDS})
    return values


def candidate_from_values(values: Mapping[str, Any], *, epochs: int) -> Candidate:
    """Inverse of ``candidate_values``: Optuna-named values (all keys) -> Candidate."""
    arch = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("arch.")}
    recipe = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("recipe.")}
    return Candidate(
        arch=ArchSpec.from_dict(arch), recipe=RecipeSpec.from_dict({**recipe, "epochs": epochs})
    )


# ---------------------------------------------------------------------------------------------
# Parsing


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space YAML file (``yaml.safe_load`` only)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read space file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SpaceError(f"{path}: not a text file; expected a YAML mapping") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML{_yaml_where(exc)}") from None
    return parse_space(data, source=str(path))


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{at}: {problem}" if problem else at


def parse_space(data: Any, *, source: str = "<space>") -> SearchSpace:
    """Validate already-loaded YAML/JSON data; errors name ``source`` and the key path."""
    try:
        return _parse(data, source)
    except _Invalid as exc:
        raise SpaceError(f"{source}: {exc}") from None


def _parse(data: Any, source: str) -> SearchSpace:
    if data is None:
        raise _Invalid(
            "", f"the file is empty; expected a mapping with sections {', '.join(SECTIONS)}"
        )
    top = _mapping(data, "", f"a mapping with sections {', '.join(SECTIONS)}")
    _known_keys(top, SECTIONS, "")
    if "architecture" not in top:
        raise _Invalid("architecture", "missing; every space says which architectures it searches")
    architecture = _parse_params(top["architecture"], "arch", "architecture")
    recipe = _parse_params(top.get("recipe") or {}, "recipe", "recipe")
    sources = _parse_sources(top.get("sources"))
    architecture = _with_sources(architecture, sources.get("architecture", {}))
    recipe = _with_sources(recipe, sources.get("recipe", {}))
    return SearchSpace(
        name=_optional_str(top.get("name"), "name"),
        description=_optional_str(top.get("description"), "description"),
        architecture=architecture,
        recipe=recipe,
        objectives=_parse_objectives(top.get("objectives")),
        constraints=_parse_constraints(top.get("constraints")),
        target=_parse_target(top.get("target")),
        seeds=_parse_seeds(top.get("seeds"), architecture, recipe),
        source=source,
    )


def _mapping(value: Any, path: str, expected: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(path, f"expected {expected}, got {_type_word(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise _Invalid(path, f"key {bad[0]!r} is not a name; expected {expected}")
    return value


def _known_keys(data: Mapping[str, Any], allowed: tuple[str, ...] | list[str], path: str) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise _Invalid(where, f"unknown key; allowed: {', '.join(allowed)}")


def _type_word(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({_fmt(value)})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"text {value!r}"
    return f"{type(value).__name__} {value!r}"


def _optional_str(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _Invalid(path, f"expected text, got {_type_word(value)}")


# -- architecture / recipe ---------------------------------------------------------------------


def _parse_params(raw: Any, section: Section, path: str) -> tuple[Param, ...]:
    kinds = ARCH_KINDS if section == "arch" else RECIPE_KINDS
    defaults = _ARCH_DEFAULTS if section == "arch" else _RECIPE_DEFAULTS
    data = dict(_mapping(raw, path, f"a mapping of {', '.join(kinds)}"))
    if section == "arch" and "layout" in data:
        if "depth" in data:
            raise _Invalid(f"{path}.layout", "give either depth or layout, not both")
        data["depth"] = data.pop("layout")
    if section == "recipe" and "epochs" in data:
        raise _Invalid(
            f"{path}.epochs", "the budget sets the epochs (--budget 350epochs); remove this key"
        )
    _known_keys(data, list(kinds), path)
    return tuple(
        Param(
            section=section,
            key=key,
            kind=kind,
            domain=_parse_domain(data[key], section, key, kind, f"{path}.{key}")
            if key in data
            else Fixed(defaults[key]),
        )
        for key, kind in kinds.items()
    )


def _parse_domain(raw: Any, section: Section, key: str, kind: Kind, path: str) -> Domain:
    if kind == "layout":
        return _parse_depth(raw, path)
    if isinstance(raw, Mapping):
        return _parse_range(raw, section, key, kind, path)
    if isinstance(raw, list):
        return _choices(
            [_value(v, section, key, kind, f"{path}[{i}]") for i, v in enumerate(raw)], path
        )
    return Fixed(_value(raw, section, key, kind, path))


def _choices(values: list[Any], path: str) -> Domain:
    if not values:
        raise _Invalid(path, "empty list of choices; give at least one value (one value = fixed)")
    if len(values) > MAX_CHOICES:
        raise _Invalid(
            path,
            f"{len(values)} choices; allowed: at most {MAX_CHOICES} (project heuristic; "
            "for more values give a range {low, high, step})",
        )
    for i, v in enumerate(values):
        if v in values[:i]:
            raise _Invalid(f"{path}[{i}]", f"{_fmt(v)} is listed twice; each choice once")
    return Fixed(values[0]) if len(values) == 1 else Choice(tuple(values))


def _parse_depth(raw: Any, path: str) -> Domain:
    named = ", ".join(map(str, NAMED_LAYOUTS))
    allowed = f"a named depth ({named}), a layout such as [[2, 2, 2, 2]], or a list of them"
    if isinstance(raw, Mapping):
        raise _Invalid(path, f"depth cannot be a range; allowed: {allowed}")
    if not isinstance(raw, list):
        return Fixed(_layout(raw, path))
    if len(raw) == 4 and all(_is_int(v) for v in raw) and not all(v in NAMED_LAYOUTS for v in raw):
        raise _Invalid(
            path,
            f"{raw} is read as a choice of named depths, and "
            f"{next(v for v in raw if v not in NAMED_LAYOUTS)} is not one; "
            f"for the layout write [{raw}]",
        )
    return _choices([_layout(v, f"{path}[{i}]") for i, v in enumerate(raw)], path)


def _layout(value: Any, path: str) -> str:
    try:
        return layout_label(layout_for(value, where=path))
    except SpecError as exc:
        raise _Invalid(path, _strip(str(exc), f"{path}: ")) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value(raw: Any, section: Section, key: str, kind: Kind, path: str) -> Any:
    """Type-check one scalar, then let the spec check its range (the spec owns the limits)."""
    value = _typed(raw, kind, path)
    try:
        if section == "arch":
            ArchSpec(**{key: value})
        else:
            RecipeSpec(**{key: value})
    except SpecError as exc:
        raise _Invalid(path, _strip(str(exc), f"{section}.{key}: ")) from None
    return value


def _typed(raw: Any, kind: Kind, path: str) -> Any:
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        raise _Invalid(path, f"expected true or false, got {_type_word(raw)}")
    if kind == "int":
        if _is_int(raw):
            return raw
        raise _Invalid(path, f"expected a whole number, got {_type_word(raw)}")
    if kind == "float":
        if _is_int(raw) or isinstance(raw, float):
            return float(raw)
        hint = ""
        if isinstance(raw, str) and re.fullmatch(r"[+-]?\d+[eE][+-]?\d+", raw.strip()):
            mantissa, exponent = re.split("[eE]", raw.strip())
            hint = f" (YAML reads {raw} as text: write {mantissa}.0e{exponent})"
        raise _Invalid(path, f"expected a number, got {_type_word(raw)}{hint}")
    if isinstance(raw, str):
        return raw
    raise _Invalid(path, f"expected text, got {_type_word(raw)}")


def _strip(message: str, prefix: str) -> str:
    return message[len(prefix) :] if message.startswith(prefix) else message


def _parse_range(
    raw: Mapping[str, Any], section: Section, key: str, kind: Kind, path: str
) -> Domain:
    if kind not in ("int", "float"):
        raise _Invalid(
            path, f"a range needs a numeric key; {key} takes a value or a list of choices"
        )
    _known_keys(raw, RANGE_KEYS, path)
    for bound in ("low", "high"):
        if bound not in raw:
            raise _Invalid(
                path, f"a range needs both low and high (optional: log, step); {bound} is missing"
            )
    low = _value(raw["low"], section, key, kind, f"{path}.low")
    high = _value(raw["high"], section, key, kind, f"{path}.high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise _Invalid(f"{path}.log", f"expected true or false, got {_type_word(log)}")
    step = _range_step(raw.get("step"), kind, f"{path}.step")
    _check_range(low, high, step, log, path)
    if low == high:
        return Fixed(low)
    if kind == "int":
        return IntRange(low, high, step if step is not None else 1, log)
    return FloatRange(low, high, step, log)


def _range_step(raw: Any, kind: Kind, path: str) -> Any:
    if raw is None:
        return None
    step = _typed(raw, kind, path)
    if step <= 0:
        raise _Invalid(path, f"{_fmt(step)} must be > 0")
    return step


def _check_range(low: Any, high: Any, step: Any, log: bool, path: str) -> None:
    if low > high:
        raise _Invalid(
            f"{path}.low", f"low {_fmt(low)} is above high {_fmt(high)}; need low <= high"
        )
    if log and low <= 0:
        raise _Invalid(f"{path}.low", f"a log range needs low > 0, got {_fmt(low)}")
    if log and step is not None and step != 1:
        raise _Invalid(f"{path}.step", "log and step cannot be combined (Optuna); drop one")
    if step is not None and not _is_multiple(high - low, step):
        below = low + math.floor((high - low) / step) * step
        above = low + math.ceil((high - low) / step) * step
        raise _Invalid(
            f"{path}.step",
            f"high - low = {_fmt(high - low)} is not a multiple of step {_fmt(step)}; "
            f"allowed highs near it: {_fmt(below)} or {_fmt(above)}",
        )


# -- sources -----------------------------------------------------------------------------------


def _parse_sources(raw: Any) -> dict[str, dict[str, str]]:
    """``sources: {architecture: {key: text}, recipe: {key: text}}``, keys checked like the
    sections they annotate (``layout`` is ``depth`` here too)."""
    if raw is None:
        return {}
    sections = ", ".join(SOURCE_SECTIONS)
    data = _mapping(raw, "sources", f"a mapping with {sections}, each a mapping of key: text")
    _known_keys(data, tuple(SOURCE_SECTIONS), "sources")
    out: dict[str, dict[str, str]] = {}
    for name, section_raw in data.items():
        kinds = ARCH_KINDS if SOURCE_SECTIONS[name] == "arch" else RECIPE_KINDS
        path = f"sources.{name}"
        entries = dict(_mapping(section_raw, path, f"a mapping of {', '.join(kinds)} to text"))
        if name == "architecture" and "layout" in entries:
            if "depth" in entries:
                raise _Invalid(f"{path}.layout", "give either depth or layout, not both")
            entries["depth"] = entries.pop("layout")
        _known_keys(entries, list(kinds), path)
        for key, text in entries.items():
            if not isinstance(text, str) or not text.strip():
                raise _Invalid(
                    f"{path}.{key}",
                    f"expected text saying where the values come from, got {_type_word(text)}",
                )
        out[name] = {key: text.strip() for key, text in entries.items()}
    return out


def _with_sources(params: tuple[Param, ...], texts: Mapping[str, str]) -> tuple[Param, ...]:
    return tuple(replace(p, source=texts.get(p.key)) for p in params)


# -- objectives, constraints, target -----------------------------------------------------------


def _parse_objectives(raw: Any) -> tuple[Objective, ...]:
    if raw is None:
        return (
            Objective(name="accuracy", direction="maximize"),
            Objective(name="latency", direction="minimize"),
        )
    allowed = ", ".join(f"{k}: {v}" for k, v in OBJECTIVES.items())
    data = _mapping(raw, "objectives", f"a mapping such as {{{allowed}}}")
    _known_keys(data, list(OBJECTIVES), "objectives")
    if "accuracy" not in data:
        raise _Invalid("objectives", f"accuracy is required (maximize); allowed: {allowed}")
    for name, direction in data.items():
        if direction != OBJECTIVES[name]:
            raise _Invalid(
                f"objectives.{name}", f"expected {OBJECTIVES[name]}, got {_type_word(direction)}"
            )
    return tuple(Objective(name=n, direction=d) for n, d in OBJECTIVES.items() if n in data)


def _parse_constraints(raw: Any) -> Constraints:
    if raw is None:
        return Constraints()
    data = _mapping(raw, "constraints", f"a mapping of {', '.join(CONSTRAINTS)}")
    _known_keys(data, CONSTRAINTS, "constraints")
    values: dict[str, float] = {}
    for name, value in data.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise _Invalid(
                f"constraints.{name}", f"expected a positive number, got {_type_word(value)}"
            )
        values[name] = float(value)
    return Constraints(**values)


def _parse_target(raw: Any) -> TargetSpec:
    data = dict(
        _mapping(
            raw if raw is not None else {}, "target", f"a mapping of {', '.join(_TARGET_KINDS)}"
        )
    )
    _known_keys(data, list(_TARGET_KINDS), "target")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("threads", "device_name") and value is None:
            continue
        values[key] = _typed(value, _TARGET_KINDS[key], f"target.{key}")
    device = values.get("device", "cpu")
    if not is_device(device, allow_auto=False):
        raise _Invalid("target.device", f"{device!r}; allowed: {allowed(allow_auto=False)}")
    if values.get("mode", "inference") not in _TARGET_MODES:
        raise _Invalid("target.mode", f"{values['mode']!r}; allowed: {', '.join(_TARGET_MODES)}")
    if values.get("dtype", "fp32") not in DTYPES:
        raise _Invalid("target.dtype", f"{values['dtype']!r}; allowed: {', '.join(DTYPES)}")
    for key, most in (("batch_size", MAX_BATCH_SIZE), ("threads", MAX_THREADS)):
        if key in values and values[key] < 1:
            raise _Invalid(f"target.{key}", f"{values[key]} must be >= 1")
        if key in values and values[key] > most:
            raise _Invalid(
                f"target.{key}",
                f"{values[key]} is too large; allowed: 1..{most} (project heuristic)",
            )
    if "name" not in values:
        dtype, batch = values.get("dtype", "fp32"), values.get("batch_size", 1)
        values["name"] = f"{device.replace(':', '')}-{dtype}-b{batch}"
    return TargetSpec(**values)


# -- seeds -------------------------------------------------------------------------------------


def _parse_seeds(
    raw: Any, architecture: tuple[Param, ...], recipe: tuple[Param, ...]
) -> tuple[Seed, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _Invalid(
            "seeds", f"expected a list of {{name?, arch, recipe?}} mappings, got {_type_word(raw)}"
        )
    seeds = tuple(
        _parse_seed(item, f"seeds[{i}]", architecture, recipe) for i, item in enumerate(raw)
    )
    names = [s.name for s in seeds]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _Invalid(f"seeds[{i}].name", f"{name!r} is used twice; seed names are unique")
    return seeds


def _parse_seed(
    raw: Any, path: str, architecture: tuple[Param, ...], recipe: tuple[Param, ...]
) -> Seed:
    data = _mapping(raw, path, "a mapping with name (optional), arch and recipe (optional)")
    _known_keys(data, ("name", "arch", "recipe"), path)
    if "arch" not in data:
        raise _Invalid(path, "missing arch mapping")
    name = _optional_str(data.get("name"), f"{path}.name") or path
    arch_raw = dict(_mapping(data["arch"], f"{path}.arch", "a mapping of architecture keys"))
    if "layout" in arch_raw and "depth" not in arch_raw:
        arch_raw["depth"] = arch_raw.pop("layout")
    recipe_raw = _mapping(data.get("recipe") or {}, f"{path}.recipe", "a mapping of recipe keys")
    arch_values = _seed_values(arch_raw, architecture, f"{path}.arch")
    recipe_values = _seed_values(recipe_raw, recipe, f"{path}.recipe")
    try:
        arch = ArchSpec.from_dict(arch_values)
        RecipeSpec(**recipe_values)
    except SpecError as exc:
        raise _Invalid(path, str(exc)) from None
    return Seed(name=name, arch=arch, recipe=recipe_values)


def _seed_values(raw: Mapping[str, Any], params: tuple[Param, ...], path: str) -> dict[str, Any]:
    """Given values, else the space's fixed value, else the spec default; each inside the space."""
    if "epochs" in raw:
        raise _Invalid(
            f"{path}.epochs", "the budget sets the epochs (--budget 350epochs); remove this key"
        )
    _known_keys(raw, [p.key for p in params], path)
    values: dict[str, Any] = {}
    for p in params:
        where = f"{path}.{p.key}"
        given = p.key in raw
        if p.kind == "layout":
            value = _layout(raw[p.key], where) if given else _ARCH_DEFAULTS["depth"]
        elif given:
            value = _typed(raw[p.key], p.kind, where)
        else:
            value = (_ARCH_DEFAULTS if p.section == "arch" else _RECIPE_DEFAULTS)[p.key]
        if isinstance(p.domain, Fixed) and not given:
            value = p.domain.value
        if not p.domain.contains(value):
            why = (
                ""
                if given
                else " (not given; this is the default, so give a value inside the space)"
            )
            raise _Invalid(
                where, f"{_fmt(value)} is outside the space ({p.domain.describe()}){why}"
            )
        values[p.key] = value
    return values
