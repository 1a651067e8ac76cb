"""The paper's scaling rules as pure functions: finished trials in, proposals with reasons out.

Bello et al. 2021, "Revisiting ResNets: Improved Training and Scaling Strategies" (arXiv
2103.07579), Sec. 7 ("Improved scaling strategies") and DESIGN.md section 1, as summarised in
``shared/reference/resnet_rs.yaml`` (``scaling_rules``, ``models``, ``weight_decay_interaction``):

1. **Depth where overfitting can occur, width where it cannot** (strategy 1; abstract: "scale
   model depth in regimes where overfitting can occur (width scaling is preferable
   otherwise)"; Sec. 7.2, Fig. 6: on ImageNet width scaling wins at 10 epochs, depth scaling at
   350, either at 100). The first signal is the regime: the study's epochs and training-set size
   (:func:`read_regime`) and how the trial's curve behaves at the end of the schedule
   (:func:`read_overfitting`: smoothed, with tolerances, on train accuracy measured like
   validation). Overfitting at the end of the curve, or a long regime -> :func:`scale_depth`;
   neither -> :func:`scale_width` (:func:`choose_rule`). The paper gives no thresholds: every
   number of the regime and of the overfitting test is a **project heuristic**
   (:class:`RuleSettings`), and every reason says which part is the paper's and which is ours.
2. **Resolution grows slowly** (strategy 2; Sec. 7.3): at most one step
   (:func:`next_resolution`), only together with a depth step, and never past the published
   family's resolution at that depth (:data:`FAMILY_RESOLUTION`: 160 at RS-50 ... 320 at
   RS-350/420), far below EfficientNet's compound rate.
3. FLOPs and parameters do not predict latency or memory (Sec. 7.4): proposals are checked
   against the study's limits with costs the caller supplies (measured, cached or predicted), see
   :func:`apply_limits`.
4. **Regularization follows size** as the published recipes do (:func:`published_regularization`:
   dropout 0.25 / 0.4, stochastic depth 0 / 0.1, RandAugment magnitude 10 / 15), and **weight
   decay goes down (1e-4 -> 4e-5) when the other regularizers are on** (Sec. 5.2, Table 4;
   :func:`weight_decay_for`).

Everything here takes plain values (``TrialView``, ``Candidate``, tuples) and returns frozen
dataclasses; nothing reads a database, builds a network or measures anything.

Ladders (the published layouts and the width grid are the paper's; the small layouts, the steps
and the bounds below RS-50 are project heuristics):

* Depth: the published layouts 50 -> 101 -> 152 -> 200 -> 270 -> 350 -> 420 (Table 7), preceded by
  two small explicit layouts for small data: ``[1, 1, 1, 1]`` (ResNet-14, timm's ``resnet14t``)
  -> ``[2, 2, 2, 2]`` (ResNet-26, timm's ``resnet26``) -> ``[3, 4, 6, 3]`` (RS-50). Each rung about
  doubles the blocks, as 50 -> 101 does. An off-ladder layout grows to the first rung with more
  layers. When the study's space lists layouts, the next *in-space* layout is preferred so the
  proposal can be enqueued as ordinary parameters (:class:`RuleSettings`).
* Width: the grid the paper studies, 0.25x ... 2x (``WIDTH_GRID``: 0.25, 0.5, 0.75, 1, 1.25,
  1.5, 2); the space's own width grid is preferred when it has a larger value.
* Resolution: one step is +32 px at 128 px and above (160 -> 192 -> 224 -> 256 -> 288 -> 320,
  the family's spacing), +8 px below 128 px (small images); the space's resolution grid is
  preferred when it has a larger value within the bound.
* Resolution bound for layouts below RS-50: the RS-50 bound scaled by depth,
  ``160 * depth / 50`` rounded down to a multiple of 8 (ResNet-26: 80 px, ResNet-14: 40 px).
  Between two published depths the bound of the shallower one applies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from rs_search.models.family import FAMILY, FamilyMember
from rs_search.space import Constraints
from rs_search.specs import NAMED_LAYOUTS, Candidate, RecipeSpec, layout_label

if TYPE_CHECKING:
    from rs_search.space import SearchSpace
    from rs_search.study.record import TrialRecord

__all__ = [
    "DEPTH_LADDER",
    "FAMILY_RESOLUTION",
    "WIDTH_GRID",
    "Cost",
    "Dropped",
    "PAPER_RULE",
    "Overfitting",
    "Proposal",
    "ProposalSet",
    "Regime",
    "RuleSettings",
    "TrialView",
    "apply_limits",
    "choose_rule",
    "nominal_depth",
    "next_layout",
    "next_resolution",
    "next_width",
    "propose",
    "published_regularization",
    "read_overfitting",
    "read_regime",
    "resolution_bound",
    "scale_depth",
    "scale_width",
    "scaled_family",
    "weight_decay_for",
]

Rule = Literal["depth", "width"]

# -- ladders -----------------------------------------------------------------------------------

EXPLICIT_LADDER: tuple[tuple[int, ...], ...] = ((1, 1, 1, 1), (2, 2, 2, 2))
"""Small layouts below RS-50 (ResNet-14 and ResNet-26), for small data (DESIGN.md section 1)."""

DEPTH_LADDER: tuple[tuple[int, ...], ...] = EXPLICIT_LADDER + tuple(NAMED_LAYOUTS.values())
"""[1,1,1,1] -> [2,2,2,2] -> 50 -> 101 -> 152 -> 200 -> 270 -> 350 -> 420 (paper Table 7)."""

WIDTH_GRID: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
"""Width multipliers of the paper's scaling study (Sec. 7.1: widths 0.25x-2x)."""

FAMILY_RESOLUTION: dict[int, tuple[int, int]] = {
    m.depth: (min(m.resolutions), max(m.resolutions)) for m in FAMILY.values()
}
"""(smallest, largest) resolution of each published model (``rs_search.models.family.FAMILY``:
the official README table). The largest is the bound a depth step may grow the resolution to."""

WEIGHT_DECAY_REGULARIZED = 4e-5  # reference yaml recipe_common.weight_decay
WEIGHT_DECAY_PLAIN = 1e-4  # baseline ResNet (reference yaml baseline_resnet_value)


def nominal_depth(layout: Sequence[int]) -> int:
    """The family name of a published layout ([4, 29, 53, 4] is "270", not 3 x 90 + 2),
    else 3 x blocks + 2."""
    label = layout_label(tuple(layout))
    return int(label) if label.isdigit() else 3 * sum(layout) + 2


def _layer_count(layout: Sequence[int]) -> int:
    return 3 * sum(layout) + 2


def next_layout(
    layout: Sequence[int], ladder: Sequence[Sequence[int]] = DEPTH_LADDER
) -> tuple[int, ...] | None:
    """The first rung of ``ladder`` with more layers than ``layout``; None at the top."""
    here = _layer_count(layout)
    deeper = sorted((tuple(r) for r in ladder if _layer_count(r) > here), key=_layer_count)
    return deeper[0] if deeper else None


def next_width(width: float, grid: Sequence[float] = WIDTH_GRID) -> float | None:
    """The smallest grid width above ``width``; None above the grid (the paper stops at 2x)."""
    wider = sorted(w for w in grid if w > width + 1e-9)
    return float(wider[0]) if wider else None


def resolution_bound(layout: Sequence[int]) -> int:
    """Largest resolution the published family pairs with this depth (see module docstring)."""
    depth = nominal_depth(layout)
    if depth in FAMILY_RESOLUTION:
        return FAMILY_RESOLUTION[depth][1]
    if depth < 50:
        return max(8, int(FAMILY_RESOLUTION[50][1] * depth / 50) // 8 * 8)
    shallower = max(d for d in FAMILY_RESOLUTION if d <= depth)
    return FAMILY_RESOLUTION[shallower][1]


def resolution_step(resolution: int) -> int:
    """One default step: +32 px from 128 px up (the family's spacing), +8 px below."""
    return 32 if resolution >= 128 else 8


def next_resolution(
    resolution: int, layout: Sequence[int], grid: Sequence[int] = ()
) -> tuple[int, str]:
    """At most one step up, bounded by :func:`resolution_bound` of the new ``layout``.

    Returns (new resolution, words). ``grid``: the space's resolution values; its next value is
    used when it exists and fits the bound (one grid step), else the default step.
    """
    bound = resolution_bound(layout)
    depth = layout_label(tuple(layout))
    above = sorted(r for r in grid if r > resolution)
    step = above[0] if above and above[0] <= bound else resolution + resolution_step(resolution)
    where = f"family bound {bound} px at depth {depth}"
    if step > bound:
        return resolution, f"resolution stays {resolution} ({where})"
    return step, f"resolution {resolution}→{step} (one step; {where})"


PAPER_RULE = (
    'paper (abstract; Sec. 7.2, Fig. 6): "scale model depth in regimes where overfitting can '
    'occur (width scaling is preferable otherwise)"; on ImageNet width scaling wins at 10 '
    "epochs, depth scaling at 350"
)
"""The part of the depth/width choice that is the paper's, as the reasons quote it."""


@dataclass(frozen=True, kw_only=True)
class Overfitting:
    """What the end of a curve says about overfitting (see :func:`read_overfitting`)."""

    overfit: bool
    measured: bool  # train accuracy measured like validation (``train_eval_*``) was read
    gap: float | None  # mean train-eval minus val top-1 over the tail, in points
    loss_gap: float | None  # mean val loss / mean train-eval loss - 1 over the tail
    val_loss_rise: float | None  # smoothed val loss at the end / its smoothed best - 1
    val_loss_rising: bool  # the rise test fired
    tail: int  # epochs read as "the end of the schedule"
    epoch: int  # last epoch of the curve (0 when empty)
    words: str


def _series(curve: Sequence[Mapping[str, Any]], *names: str) -> list[float] | None:
    """The first of ``names`` present (and numeric) in every entry of ``curve``."""
    for name in names:
        values = [entry.get(name) for entry in curve]
        if values and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            return [float(v) for v in values if v is not None]
    return None


def _trailing_mean(values: Sequence[float], span: int) -> list[float]:
    """Moving average over the last ``span`` values at each point (fewer at the start)."""
    return [
        sum(values[max(0, i + 1 - span) : i + 1]) / (i + 1 - max(0, i + 1 - span))
        for i in range(len(values))
    ]


def tail_length(epochs: int, settings: RuleSettings) -> int:
    """How many final epochs are "the end of the schedule": ``tail_fraction`` of them, at least
    ``min_tail_epochs`` (project heuristics)."""
    return max(settings.min_tail_epochs, math.ceil(settings.tail_fraction * epochs))


def read_overfitting(
    curve: Sequence[Mapping[str, Any]], settings: RuleSettings | None = None
) -> Overfitting:
    """Overfitting at the end of a per-epoch curve, smoothed and with tolerances.

    The paper says where to scale depth (where overfitting can occur), not how to see
    overfitting in a curve; every number here is a **project heuristic** (:class:`RuleSettings`).
    Two tests, either one fires:

    * **Gap**: over the tail (:func:`tail_length`), the mean of train top-1 minus val top-1 is
      at least ``gap_points`` *and* the mean val loss exceeds the mean train loss by at least
      ``loss_gap`` (relative). Train figures are ``train_eval_*``: measured like validation
      (the same weights, eval mode, no augmentation, a fixed training subset;
      ``rs_search.train.metrics.EpochMetrics``), so the gap is a generalization gap and not
      the effect of augmentation, dropout or a running average. Requiring the loss gap too
      keeps a few points of top-1 noise on small validation sets from firing it alone.
    * **Val loss rising**: the ``smooth_epochs`` moving average of the val loss ends at least
      ``loss_rise`` (relative) above its best, while the train loss (same average) fell over
      the same epochs.

    A curve without ``train_eval_*`` (written before they existed) cannot show a gap: only the
    val-loss test runs, with the running training loss as its train side, and the words say so.
    """
    settings = settings or RuleSettings()
    if not curve:
        return Overfitting(
            overfit=False,
            measured=False,
            gap=None,
            loss_gap=None,
            val_loss_rise=None,
            val_loss_rising=False,
            tail=0,
            epoch=0,
            words="no curve recorded",
        )
    epoch = int(curve[-1].get("epoch", len(curve)))
    tail = min(len(curve), tail_length(len(curve), settings))
    end = curve[-tail:]
    train_top1 = _series(end, "train_eval_top1")
    train_loss_eval = _series(end, "train_eval_loss")
    val_top1 = _series(end, "val_top1")
    val_loss_end = _series(end, "val_loss")
    measured = bool(train_top1 and train_loss_eval and val_top1 and val_loss_end)
    gap = loss_gap = None
    gap_fires = False
    if measured and train_top1 and train_loss_eval and val_top1 and val_loss_end:
        gap = sum(t - v for t, v in zip(train_top1, val_top1, strict=True)) / tail
        loss_gap = (sum(val_loss_end) / tail) / max(sum(train_loss_eval) / tail, 1e-12) - 1
        gap_fires = gap >= settings.gap_points and loss_gap >= settings.loss_gap
    rise, rising, train_side = _val_loss_rise(curve, settings, measured=measured)
    where = f"last {tail} of {len(curve)} epochs"
    parts = []
    if gap is not None and loss_gap is not None:
        parts.append(
            f"train/val top-1 gap {gap:.1f} points, val loss {loss_gap:+.0%} over train "
            f"({where}; train measured like validation)"
        )
    else:
        parts.append(
            "train accuracy measured like validation not recorded in this curve: the gap is not "
            f"read, only the val-loss trend (train side: {train_side})"
        )
    if rise is not None:
        parts.append(
            f"val loss {rise:+.0%} from its best ({settings.smooth_epochs}-epoch average)"
            + (f" while the {train_side} fell" if rising else "")
        )
    else:
        parts.append(f"val-loss trend not read (fewer than {settings.smooth_epochs + 1} epochs)")
    return Overfitting(
        overfit=gap_fires or rising,
        measured=measured,
        gap=gap,
        loss_gap=loss_gap,
        val_loss_rise=rise,
        val_loss_rising=rising,
        tail=tail,
        epoch=epoch,
        words="; ".join(parts),
    )


def _val_loss_rise(
    curve: Sequence[Mapping[str, Any]], settings: RuleSettings, *, measured: bool
) -> tuple[float | None, bool, str]:
    """(smoothed val loss at the end over its smoothed best - 1, whether the rise test fires,
    what the train side was)."""
    train_name, train_side = (
        ("train_eval_loss", "train loss measured like validation")
        if measured
        else ("train_loss", "running training loss, augmented")
    )
    if len(curve) < settings.smooth_epochs + 1:
        return None, False, train_side
    val = _series(curve, "val_loss")
    train = _series(curve, train_name)
    if val is None:
        return None, False, train_side
    smooth_val = _trailing_mean(val, settings.smooth_epochs)
    best = min(range(len(smooth_val)), key=smooth_val.__getitem__)
    rise = smooth_val[-1] / max(smooth_val[best], 1e-12) - 1
    fell = False
    if train is not None:
        smooth_train = _trailing_mean(train, settings.smooth_epochs)
        fell = smooth_train[-1] < smooth_train[best]
    return rise, rise >= settings.loss_rise and fell and best < len(curve) - 1, train_side


# -- the regime --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Regime:
    """The training regime of a study: its epochs and its data size (Sec. 7.2 of the paper: the
    best scaling strategy depends on it). ``kind`` is short, middle or long by the project
    heuristics of :class:`RuleSettings`."""

    epochs: int
    train_images: int | None
    kind: Literal["short", "middle", "long"]
    words: str


def read_regime(epochs: int, train_images: int | None, settings: RuleSettings) -> Regime:
    """Short (``<= short_budget_epochs``), long (``>= long_budget_epochs``; on small data, fewer
    than ``small_data_images`` training images, ``>= small_data_long_epochs``: the same number of
    passes over far fewer images overfits sooner), else middle. The anchors are the paper's
    three ImageNet settings (10, 100 and 350 epochs on 1.28 M images); using them as thresholds,
    and the small-data shift, are project heuristics."""
    small = train_images is not None and train_images < settings.small_data_images
    long_from = settings.small_data_long_epochs if small else settings.long_budget_epochs
    kind: Literal["short", "middle", "long"]
    if epochs <= settings.short_budget_epochs:
        kind = "short"
    elif epochs >= long_from:
        kind = "long"
    else:
        kind = "middle"
    data = (
        "data size unknown"
        if train_images is None
        else f"{train_images} training images ({'small' if small else 'large'} data: "
        f"{'<' if small else '>='} {settings.small_data_images})"
    )
    bounds = f"short <= {settings.short_budget_epochs}, long >= {long_from} epochs"
    return Regime(
        epochs=epochs,
        train_images=train_images,
        kind=kind,
        words=f"{kind} regime: {epochs} epochs on {data}; {bounds}",
    )


# -- regularization ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Regularization:
    dropout: float
    stochastic_depth: float
    randaug_magnitude: int


def published_member(layout: Sequence[int]) -> FamilyMember | None:
    """The published model a layout is sized like: its own, else the deepest shallower one (as
    :func:`resolution_bound` does); None below RS-50."""
    depth = nominal_depth(layout)
    members = [m for m in FAMILY.values() if m.depth <= depth]
    return max(members, key=lambda m: m.depth) if members else None


def published_regularization(layout: Sequence[int], resolution: int) -> Regularization | None:
    """The published recipe's regularization for a model of this size; None below RS-50 (no
    published recipe; the source trial's values are kept).

    The values are ``rs_search.models.family.FAMILY``'s (the official configs: dropout 0.25,
    0.4 for RS-350@320 and RS-420; stochastic depth 0 for RS-50..152, 0.1 for RS-200+;
    RandAugment magnitude 10 for RS-50@160 and RS-101@160, 15 otherwise), read at
    :func:`published_member` and at the largest of its published resolutions not above
    ``resolution`` (the variant it has grown into; its smallest when it is below them all).
    Which variant stands for an unpublished size is a project heuristic.
    """
    member = published_member(layout)
    if member is None:
        return None
    reached = [r for r in member.resolutions if r <= resolution]
    recipe = member.recipe_at(max(reached) if reached else min(member.resolutions))
    return Regularization(
        dropout=float(recipe["dropout"]),
        stochastic_depth=float(recipe["stochastic_depth"]),
        randaug_magnitude=int(recipe["randaug_magnitude"]),
    )


def active_regularizers(recipe: RecipeSpec) -> list[str]:
    """The regularizers of Table 4 that ``recipe`` turns on (RA, LS, DO, SD)."""
    on = []
    if recipe.randaug_layers > 0 and recipe.randaug_magnitude > 0:
        on.append("RandAugment")
    if recipe.label_smoothing > 0:
        on.append("label smoothing")
    if recipe.dropout > 0:
        on.append("dropout")
    if recipe.stochastic_depth > 0:
        on.append("stochastic depth")
    return on


def weight_decay_for(
    recipe: RecipeSpec,
    *,
    min_regularizers: int = 3,
    regularized: float = WEIGHT_DECAY_REGULARIZED,
    plain: float = WEIGHT_DECAY_PLAIN,
) -> tuple[float, str]:
    """4e-5 when at least ``min_regularizers`` other regularizers are on, else 1e-4.

    Paper Sec. 5.2 / Table 4 (reference yaml ``weight_decay_interaction``): without RandAugment
    and label smoothing 1e-4 is better by ~1 point; with RA+LS the two tie (-0.1 / -0.3); with
    RA+LS+dropout (and SD for ResNet-200) 4e-5 is better (+0.5 / +0.2). Hence three regularizers.
    Returns (weight decay, words).
    """
    on = active_regularizers(recipe)
    if len(on) >= min_regularizers:
        return regularized, f"{', '.join(on)} on"
    if not on:
        return plain, "no other regularizer on"
    return plain, f"only {', '.join(on)} on, fewer than {min_regularizers} regularizers"


_WORDS = {
    "dropout": "dropout",
    "stochastic_depth": "stochastic depth",
    "randaug_magnitude": "RandAugment magnitude",
    "weight_decay": "weight decay",
}


def _regularize(
    recipe: RecipeSpec, layout: Sequence[int], resolution: int, settings: RuleSettings
) -> tuple[RecipeSpec, list[str]]:
    """Regularization follows size: never below the source's, raised to the published recipe's
    values for the new size; then the weight-decay rule on the result. Each value is fitted to
    the study's space (:func:`fit_recipe`). Returns the recipe and what changed, in words."""
    source = recipe
    wanted: dict[str, Any] = {}
    published = published_regularization(layout, resolution)
    if published is not None:
        for name in ("dropout", "stochastic_depth", "randaug_magnitude"):
            if name == "randaug_magnitude" and recipe.randaug_layers == 0:
                continue  # RandAugment is off in this recipe; the rule does not turn it on
            if getattr(published, name) > getattr(recipe, name):
                wanted[name] = getattr(published, name)
    recipe, fitted = fit_recipe(dataclasses.replace(recipe, **wanted), source, settings.space)
    wd, why = weight_decay_for(
        recipe,
        min_regularizers=settings.min_regularizers,
        regularized=settings.weight_decay_regularized,
        plain=settings.weight_decay_plain,
    )
    whys = {"weight_decay": why}
    if not math.isclose(wd, recipe.weight_decay, rel_tol=1e-9):
        wanted["weight_decay"] = wd
        before = recipe
        recipe, fitted_wd = fit_recipe(
            dataclasses.replace(recipe, weight_decay=wd), before, settings.space
        )
        fitted.update(fitted_wd)
    changes: list[str] = []
    for name, want in wanted.items():
        old, got = getattr(source, name), getattr(recipe, name)
        words = _WORDS[name]
        because = [whys[name]] if name in whys else []
        if name in fitted:
            because.append(f"the rule says {want:g}, the nearest the space allows is {got:g}")
        note = f" ({'; '.join(because)})" if because else ""
        if got == old:
            changes.append(f"{words} stays {old:g}{note}")
        else:
            changes.append(f"{words} {old:g}→{got:g}{note}")
    return recipe, changes


# -- trials and proposals ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TrialView:
    """What the rules read from one finished trial: built by :meth:`from_record` or by hand."""

    number: int
    candidate: Candidate
    values: tuple[float, ...] | None
    curve: tuple[Mapping[str, Any], ...]
    budget: int  # the study's full training length in epochs (--budget)
    train_images: int | None = None  # the study's training-set size (None: unknown)

    @classmethod
    def from_record(
        cls,
        record: TrialRecord,
        *,
        budget: int,
        objectives: Sequence[str],
        train_images: int | None = None,
    ) -> TrialView | None:
        """None for a trial without a readable candidate (not an rs-search trial). ``values``
        follow ``objectives``' order."""
        if record.candidate is None:
            return None
        return cls(
            number=record.number,
            candidate=record.candidate,
            values=None if record.values is None else record.point(objectives),
            curve=record.curve,
            budget=budget,
            train_images=train_images,
        )


@dataclass(frozen=True, kw_only=True)
class Cost:
    """Predicted or measured cost of an architecture; ``source`` says how it was obtained
    ("latency cache (cpu-fp32)", "measured", "predicted: trial 3 x FLOPs ratio", ...)."""

    latency_ms: float | None = None
    memory_mb: float | None = None
    params_m: float | None = None
    source: str = ""


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """A candidate the rules suggest, why, and from which trial."""

    candidate: Candidate
    rule: str  # "depth" | "width"
    reason: str
    source_trial: int
    cost: Cost | None = None

    @property
    def origin(self) -> str:
        return f"rule:{self.rule}"


@dataclass(frozen=True, kw_only=True)
class Dropped:
    proposal: Proposal
    reason: str


@dataclass(frozen=True, kw_only=True)
class ProposalSet:
    proposals: tuple[Proposal, ...] = ()
    dropped: tuple[Dropped, ...] = ()
    skipped: tuple[str, ...] = ()  # sources that gave no proposal, in words


@dataclass(frozen=True, kw_only=True)
class RuleSettings:
    """Thresholds and ladders of the rules; every one is a parameter.

    **Project heuristics.** The paper gives the rules (depth where overfitting can occur, width
    otherwise; resolution slowly; weight decay down when other regularizers are on) and the
    published recipes, not the numbers that turn a curve or a budget into a decision. Every
    default below marked ``ProjectHeuristic`` is this project's choice, printed as such in
    every reason. The regime thresholds are anchored on the paper's three ImageNet settings
    (Sec. 7.2, Fig. 6: 10, 100 and 350 epochs on 1.28 M images); applying them to other data
    sizes is still a heuristic.

    ``space``: the study's search space. When given, its own value grids are preferred for the
    next layout, width and resolution, and recipe values the rules set are fitted to what the
    space allows (see :func:`fit_recipe`), so a proposal can run as ordinary trial parameters
    whenever the space has room for it.
    """

    # -- the regime (ProjectHeuristic, anchored on the paper's 10 / 100 / 350 epochs) --
    short_budget_epochs: int = 10  # ProjectHeuristic: at or below, the short regime
    long_budget_epochs: int = 350  # ProjectHeuristic: at or above, the long regime
    small_data_images: int = 100_000  # ProjectHeuristic: fewer training images is small data
    small_data_long_epochs: int = 100  # ProjectHeuristic: the long regime on small data
    # -- the overfitting test (ProjectHeuristic: the paper gives no test) --
    tail_fraction: float = 0.25  # ProjectHeuristic: the end of the schedule, a share of epochs
    min_tail_epochs: int = 3  # ProjectHeuristic: ... and at least this many epochs
    gap_points: float = 5.0  # ProjectHeuristic: mean train-eval minus val top-1 over the tail
    loss_gap: float = 0.10  # ProjectHeuristic: mean val loss over train-eval loss, relative
    smooth_epochs: int = 3  # ProjectHeuristic: moving average of the losses for the trend
    loss_rise: float = 0.05  # ProjectHeuristic: smoothed val loss this far above its best
    # -- regularization --
    min_regularizers: int = 3  # ProjectHeuristic: our reading of Table 4 (RA+LS+DO -> 4e-5)
    weight_decay_regularized: float = WEIGHT_DECAY_REGULARIZED  # paper Sec. 5.2 / Table 4
    weight_decay_plain: float = WEIGHT_DECAY_PLAIN  # paper Table 4 (baseline)
    depth_ladder: tuple[tuple[int, ...], ...] = DEPTH_LADDER
    width_grid: tuple[float, ...] = WIDTH_GRID
    space: SearchSpace | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.smooth_epochs < 1 or self.min_tail_epochs < 1:
            raise ValueError("smooth_epochs and min_tail_epochs: at least 1")
        if not 0 < self.tail_fraction <= 1:
            raise ValueError(f"tail_fraction {self.tail_fraction}: in (0, 1]")

    def heuristics(self) -> str:
        """The overfitting test and regime thresholds in words, for the reasons."""
        return (
            f"project heuristics: overfitting = over the last {self.tail_fraction:.0%} of "
            f"epochs (at least {self.min_tail_epochs}) a train/val top-1 gap >= "
            f"{self.gap_points:g} points with val loss >= {self.loss_gap:+.0%} over train, or "
            f"the {self.smooth_epochs}-epoch average val loss >= {self.loss_rise:+.0%} from "
            f"its best while the train loss fell; regime short <= {self.short_budget_epochs} "
            f"epochs, long >= {self.long_budget_epochs} ({self.small_data_long_epochs} below "
            f"{self.small_data_images} training images)"
        )

    def space_values(self, name: str) -> tuple[Any, ...]:
        """The finite values the space searches for ``name`` (empty when fixed, continuous or
        no space)."""
        if self.space is None:
            return ()
        try:
            param = self.space.param(name)
        except KeyError:
            return ()
        values = param.domain.values()
        return tuple(values) if values is not None and param.searched else ()

    def next_layout(self, layout: Sequence[int]) -> tuple[int, ...] | None:
        from rs_search.specs import layout_for

        in_space = [layout_for(v) for v in self.space_values("arch.depth")]
        return next_layout(layout, in_space) or next_layout(layout, self.depth_ladder)

    def next_width(self, width: float) -> float | None:
        in_space = [float(v) for v in self.space_values("arch.width")]
        return next_width(width, in_space) or next_width(width, self.width_grid)

    def resolution_grid(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.space_values("arch.resolution"))


_LOG_SCALE = ("weight_decay", "lr_per_256")


def fit_recipe(
    recipe: RecipeSpec, source: RecipeSpec, space: SearchSpace | None
) -> tuple[RecipeSpec, dict[str, Any]]:
    """Recipe values the rules changed (against ``source``), fitted to what ``space`` allows
    (``Domain.nearest``: a fixed value stays, a choice takes the nearest option, on a log scale
    for weight decay and LR, a tie going the way the rule moved; a range clamps and snaps to its
    step). Returns the recipe and the fields that had to move (name -> the value the rule
    wanted)."""
    if space is None:
        return recipe, {}
    moved: dict[str, Any] = {}
    updates: dict[str, Any] = {}
    for name in ("dropout", "stochastic_depth", "randaug_magnitude", "weight_decay"):
        want, was = getattr(recipe, name), getattr(source, name)
        if want == was:
            continue
        try:
            domain = space.param(f"recipe.{name}").domain
        except KeyError:
            continue
        if domain.contains(want):
            continue
        updates[name] = domain.nearest(want, log=name in _LOG_SCALE, prefer_higher=want > was)
        moved[name] = want
    return dataclasses.replace(recipe, **updates), moved


def choose_rule(view: TrialView, settings: RuleSettings) -> tuple[Rule, str]:
    """Depth or width, and why (paper part and project-heuristic part named).

    The paper's rule (abstract; Sec. 7.2): depth where overfitting can occur, width otherwise.
    In order: the trial's curve overfits at the end of the schedule (:func:`read_overfitting`)
    -> depth; the regime is long (:func:`read_regime`), where the paper found depth wins and
    overfitting can occur even if this trial does not show it yet -> depth; else -> width (the
    short regime, where the paper found width wins, or a middle one whose curve shows no
    overfitting).
    """
    reading = read_overfitting(view.curve, settings)
    regime = read_regime(view.budget, view.train_images, settings)
    if reading.overfit:
        rule: Rule = "depth"
        evidence = f"overfitting at the end of the schedule ({reading.words}); {regime.words}"
    elif regime.kind == "long":
        rule = "depth"
        evidence = f"{regime.words}, where overfitting can occur; curve: {reading.words}"
    else:
        rule = "width"
        evidence = f"no overfitting ({reading.words}); {regime.words}"
    return rule, f"{evidence} [{PAPER_RULE}; {settings.heuristics()}]"


RESOLUTION_WORDS = (
    "paper Sec. 7.3: grow the resolution more slowly than EfficientNet, never past the "
    "published family's resolution at that depth (official configs); project heuristics: one "
    "step of +32 px from 128 px, +8 px below, and the bound below RS-50 scaled by depth"
)
REGULARIZATION_WORDS = (
    "paper: the published recipe of that size (official configs: dropout, stochastic depth, "
    "RandAugment magnitude) and Sec. 5.2 / Table 4 (weight decay 4e-5 with other regularizers "
    "on, else 1e-4); project heuristics: which published variant stands for an unpublished "
    "size, and {n} regularizers as the switch"
)


def _reason(step: str, why: str, res_words: str, changes: list[str], n_reg: int) -> str:
    reason = f"{step}: {why}; {res_words} [{RESOLUTION_WORDS}]"
    if changes:
        reason += "; " + ", ".join(changes) + f" [{REGULARIZATION_WORDS.format(n=n_reg)}]"
    return reason


def scale_depth(view: TrialView, why: str, settings: RuleSettings) -> Proposal | None:
    """Next layout on the ladder, resolution at most one step within the family bound,
    regularization for the new size."""
    arch, recipe = view.candidate.arch, view.candidate.recipe
    layout = settings.next_layout(arch.layout)
    if layout is None:
        return None
    resolution, res_words = next_resolution(arch.resolution, layout, settings.resolution_grid())
    new_arch = dataclasses.replace(arch, layout=layout, resolution=resolution)
    new_recipe, changes = _regularize(recipe, layout, resolution, settings)
    step = f"depth {arch.label}→{layout_label(layout)}"
    return Proposal(
        candidate=Candidate(arch=new_arch, recipe=new_recipe),
        rule="depth",
        reason=_reason(step, why, res_words, changes, settings.min_regularizers),
        source_trial=view.number,
    )


def scale_width(view: TrialView, why: str, settings: RuleSettings) -> Proposal | None:
    """Next width on the grid; depth and resolution unchanged (resolution only grows with depth)."""
    arch, recipe = view.candidate.arch, view.candidate.recipe
    width = settings.next_width(arch.width)
    if width is None:
        return None
    new_arch = dataclasses.replace(arch, width=width)
    new_recipe, changes = _regularize(recipe, arch.layout, arch.resolution, settings)
    step = f"width {arch.width:g}→{width:g}"
    res_words = f"resolution stays {arch.resolution} (it grows only with depth)"
    return Proposal(
        candidate=Candidate(arch=new_arch, recipe=new_recipe),
        rule="width",
        reason=_reason(step, why, res_words, changes, settings.min_regularizers),
        source_trial=view.number,
    )


# -- limits ------------------------------------------------------------------------------------


CostFn = Callable[[Proposal], Cost]


def broken_limits(cost: Cost, limits: Constraints) -> list[str]:
    """Each limit ``cost`` breaks, in words; a cost left unknown breaks nothing."""
    checks = (
        ("latency", cost.latency_ms, limits.max_latency_ms, "ms", "max_latency_ms"),
        ("peak memory", cost.memory_mb, limits.max_memory_mb, "MB", "max_memory_mb"),
        ("parameters", cost.params_m, limits.max_params_m, "M", "max_params_m"),
    )
    out = []
    for what, value, limit, unit, key in checks:
        if value is not None and limit is not None and value > limit:
            out.append(f"{what} {value:.4g} {unit} > {key} {limit:g}")
    return out


def apply_limits(
    proposals: Iterable[Proposal], limits: Constraints, cost_fn: CostFn | None
) -> tuple[list[Proposal], list[Dropped]]:
    """Attach each proposal's cost and drop those breaking a limit, with the reason.

    ``cost_fn`` is the caller's (latency cache, a measurement or a prediction; Sec. 7.4: FLOPs
    do not predict latency, so the caller decides). Without it proposals pass unchecked.
    """
    kept: list[Proposal] = []
    dropped: list[Dropped] = []
    for proposal in proposals:
        if cost_fn is None:
            kept.append(proposal)
            continue
        cost = cost_fn(proposal)
        proposal = dataclasses.replace(proposal, cost=cost)
        broken = broken_limits(cost, limits)
        if broken:
            source = f" ({cost.source})" if cost.source else ""
            dropped.append(Dropped(proposal=proposal, reason="; ".join(broken) + source))
        else:
            kept.append(proposal)
    return kept, dropped


# -- the entry points --------------------------------------------------------------------------


def propose(
    views: Sequence[TrialView],
    *,
    n: int = 1,
    settings: RuleSettings | None = None,
    limits: Constraints | None = None,
    cost_fn: CostFn | None = None,
    existing: Mapping[str, int] | None = None,
) -> ProposalSet:
    """Up to ``n`` proposals from ``views`` (best first: the caller orders the Pareto front).

    One proposal per source trial, the rule chosen by :func:`choose_rule`. A proposal whose
    candidate key is in ``existing`` (key -> trial number) or was already proposed is skipped;
    one that breaks ``limits`` is dropped with the reason.
    """
    settings = settings or RuleSettings()
    limits = limits or Constraints()
    existing = existing or {}
    seen: set[str] = set()
    proposals: list[Proposal] = []
    dropped: list[Dropped] = []
    skipped: list[str] = []
    for view in views:
        if len(proposals) >= n:
            break
        rule, why = choose_rule(view, settings)
        made = (scale_depth if rule == "depth" else scale_width)(view, why, settings)
        if made is None:
            top = view.candidate.arch.label if rule == "depth" else f"{view.candidate.arch.width:g}"
            skipped.append(f"trial {view.number}: {rule} {top} is the top of the ladder ({why})")
            continue
        key = made.candidate.key()
        step = made.reason.split(":", 1)[0]
        if key in existing:
            skipped.append(f"trial {view.number}: {step} is already trial {existing[key]}")
            continue
        if key in seen:
            skipped.append(f"trial {view.number}: {step} was already proposed")
            continue
        seen.add(key)
        kept, gone = apply_limits([made], limits, cost_fn)
        proposals.extend(kept)
        dropped.extend(gone)
    return ProposalSet(proposals=tuple(proposals), dropped=tuple(dropped), skipped=tuple(skipped))


def scaled_family(
    view: TrialView,
    steps: int,
    *,
    rule: Rule | Literal["auto"] = "depth",
    settings: RuleSettings | None = None,
) -> tuple[list[Proposal], str | None]:
    """``steps`` configs grown from one trial the way RS-50 grows to RS-420: each a depth step
    (with at most one resolution step and the regularization of its size), or width steps.

    ``rule="auto"`` picks the rule from the trial's curve and the budget once. Returns the
    family and, when the ladder ends before ``steps``, why it stopped.
    """
    settings = settings or RuleSettings()
    if steps < 1:
        raise ValueError(f"steps {steps}: at least 1")
    if rule == "auto":
        rule, why = choose_rule(view, settings)
    else:
        why = f"family step ({rule} scaling)"
    family: list[Proposal] = []
    current = view
    for i in range(steps):
        step_why = why if i == 0 else f"family step {i + 1}"
        made = (scale_depth if rule == "depth" else scale_width)(current, step_why, settings)
        if made is None:
            return family, f"stopped after {i} step(s): the {rule} ladder ends"
        made = dataclasses.replace(made, source_trial=view.number)
        family.append(made)
        current = dataclasses.replace(current, candidate=made.candidate)
    return family, None
