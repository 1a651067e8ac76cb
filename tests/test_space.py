"""Search-space files: parsing, errors with key paths, sampling, identity, the shipped spaces."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rs_search.errors import SpaceError
from rs_search.space import (
    INACTIVE,
    SearchSpace,
    candidate_values,
    inactive_rule,
    load_space,
    parse_space,
)
from rs_search.specs import NAMED_LAYOUTS, ArchSpec, Candidate, RecipeSpec

SPACES = Path(__file__).resolve().parents[1] / "spaces"
SHIPPED = ("resnet_rs.yaml", "quickstart.yaml", "tiny.yaml")

# The published ResNet-RS models: (depth, resolution) -> (dropout, stochastic depth, RandAugment
# magnitude). Source: ../shared/reference/resnet_rs.yaml `models.*.variants[].recipe`, i.e. the
# official tensorflow/tpu configs resnetrs<depth>_i<res>.yaml (stochastic_depth null = 0.0).
PUBLISHED = {
    (50, 160): (0.25, 0.0, 10),
    (101, 160): (0.25, 0.0, 10),
    (101, 192): (0.25, 0.0, 15),
    (152, 192): (0.25, 0.0, 15),
    (152, 224): (0.25, 0.0, 15),
    (152, 256): (0.25, 0.0, 15),
    (200, 256): (0.25, 0.1, 15),
    (270, 256): (0.25, 0.1, 15),
    (350, 256): (0.25, 0.1, 15),
    (350, 320): (0.4, 0.1, 15),
    (420, 320): (0.4, 0.1, 15),
}

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = """\
architecture:
  depth: 50
  width: [0.5, 1.0]
  resolution: {low: 16, high: 32, step: 16}
recipe:
  dropout: [0.0, 0.25]
"""


def _space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


# -- malformed spaces --------------------------------------------------------------------------

# (YAML text, key path the message names, what the message says is allowed / wrong)
MALFORMED: list[tuple[str, str, str]] = [
    (
        "architcture: {depth: 50}\n",
        "architcture: unknown key",
        "allowed: name, description, architecture",
    ),
    ("recipe: {dropout: 0.1}\n", "architecture: missing", "which architectures"),
    ("architecture: [50, 101]\n", "architecture: expected a mapping", "depth, width"),
    (
        "architecture: {depth: 50, widht: 1.0}\n",
        "architecture.widht: unknown key",
        "allowed: depth, width",
    ),
    ("architecture: {width: wide}\n", "architecture.width: expected a number", "'wide'"),
    (
        "architecture: {resolution: true}\n",
        "architecture.resolution: expected a whole number",
        "boolean",
    ),
    (
        "architecture: {resolution: 16.5}\n",
        "architecture.resolution: expected a whole number",
        "16.5",
    ),
    ("architecture: {resnet_d: 1}\n", "architecture.resnet_d: expected true or false", "int 1"),
    ("architecture: {width: []}\n", "architecture.width: empty list of choices", "at least one"),
    (
        "architecture: {width: [0.5, 0.5]}\n",
        "architecture.width[1]: 0.5 is listed twice",
        "each choice once",
    ),
    (
        "architecture: {width: {low: 1.0, high: 0.5}}\n",
        "architecture.width.low: low 1 is above high 0.5",
        "low <= high",
    ),
    (
        "architecture: {width: {low: 0.5}}\n",
        "architecture.width: a range needs both low and high",
        "high",
    ),
    (
        "architecture: {resolution: {low: 16, high: 32, stpe: 16}}\n",
        "architecture.resolution.stpe: unknown key",
        "allowed: low, high, log, step",
    ),
    (
        "architecture: {resolution: {low: 16, high: 40, step: 16}}\n",
        "architecture.resolution.step: high - low = 24",
        "allowed highs near it: 32 or 48",
    ),
    (
        "architecture: {width: {low: 0.0, high: 1.0}}\n",
        "architecture.width.low: 0.0 is out of range",
        "0 < width <= 8",
    ),
    (
        "architecture: {resnet_d: {low: 0, high: 1}}\n",
        "architecture.resnet_d: a range needs a numeric key",
        "a value or a list of choices",
    ),
    (
        "architecture: {depth: [2, 2, 2, 2]}\n",
        "architecture.depth: [2, 2, 2, 2] is read as a choice",
        "write [[2, 2, 2, 2]]",
    ),
    (
        "architecture: {depth: [[2, 2, 2]]}\n",
        "architecture.depth[0]: [2, 2, 2] is not a layout",
        "four block counts",
    ),
    (
        "architecture: {depth: [[2, 0, 2, 2]]}\n",
        "architecture.depth[0]: [2, 0, 2, 2] has a stage with no blocks",
        ">= 1",
    ),
    ("architecture: {depth: 34}\n", "architecture.depth: 34 is not a named depth", "50, 101, 152"),
    (
        "architecture: {depth: [50, 34]}\n",
        "architecture.depth[1]: 34 is not a named depth",
        "50, 101",
    ),
    (
        "architecture: {depth: {low: 50, high: 101}}\n",
        "architecture.depth: depth cannot be a range",
        "a named depth",
    ),
    (
        "architecture: {depth: 50, layout: [[2, 2, 2, 2]]}\n",
        "architecture.layout: give either depth or layout",
        "not both",
    ),
    (
        "architecture: {depth: 50}\nrecipe: {epochs: 350}\n",
        "recipe.epochs: the budget sets the epochs",
        "--budget",
    ),
    (
        "architecture: {depth: 50}\nrecipe: {weight_decay: 1e-4}\n",
        "recipe.weight_decay: expected a number",
        "write 1.0e-4",
    ),
    (
        "architecture: {depth: 50}\nrecipe: {weight_decay: {low: 0.0, high: 1.0e-3, log: true}}\n",
        "recipe.weight_decay.low: a log range needs low > 0",
        "0",
    ),
    (
        "architecture: {depth: 50}\n"
        "recipe: {lr_per_256: {low: 0.1, high: 0.5, log: true, step: 0.1}}\n",
        "recipe.lr_per_256.step: log and step cannot be combined",
        "drop one",
    ),
    (
        "architecture: {depth: 50}\nrecipe: {precision: fp8}\n",
        "recipe.precision: 'fp8'",
        "auto, fp32, bf16, fp16",
    ),
    (
        "architecture: {depth: 50}\nrecipe: {dropout: 1.5}\n",
        "recipe.dropout: 1.5 is out of range",
        "0 <= value < 1",
    ),
    (
        "architecture: {depth: 50}\nobjectives: {accuracy: minimize}\n",
        "objectives.accuracy: expected maximize",
        "'minimize'",
    ),
    (
        "architecture: {depth: 50}\nobjectives: {accuracy: maximize, flops: minimize}\n",
        "objectives.flops: unknown key",
        "allowed: accuracy, latency, memory",
    ),
    (
        "architecture: {depth: 50}\nobjectives: {latency: minimize}\n",
        "objectives: accuracy is required",
        "accuracy: maximize",
    ),
    (
        "architecture: {depth: 50}\nconstraints: {max_latency_ms: -1}\n",
        "constraints.max_latency_ms: expected a positive number",
        "-1",
    ),
    (
        "architecture: {depth: 50}\nconstraints: {max_flops: 3}\n",
        "constraints.max_flops: unknown key",
        "max_latency_ms, max_memory_mb, max_params_m",
    ),
    (
        "architecture: {depth: 50}\ntarget: {device: tpu}\n",
        "target.device: 'tpu'",
        "cpu, cuda, cuda:<index>",
    ),
    (
        "architecture: {depth: 50}\ntarget: {dtype: int8}\n",
        "target.dtype: 'int8'",
        "fp32, bf16, fp16",
    ),
    (
        "architecture: {depth: 50}\ntarget: {batch_size: 0}\n",
        "target.batch_size: 0 must be >= 1",
        ">= 1",
    ),
    (
        "architecture: {depth: 50}\ntarget: {channels_last: yes please}\n",
        "target.channels_last: expected true",
        "false",
    ),
    ("architecture: {depth: 50}\nseeds: {arch: {depth: 50}}\n", "seeds: expected a list", "arch"),
    (
        "architecture: {depth: 50}\nseeds: [{arch: {depth: 101}}]\n",
        "seeds[0].arch.depth: 101 is outside the space",
        "fixed 50",
    ),
    (
        "architecture: {depth: 50}\nseeds: [{arch: {depth: 50}, recipie: {}}]\n",
        "seeds[0].recipie: unknown key",
        "allowed: name, arch, recipe",
    ),
    (
        "architecture: {depth: 50}\nseeds: [{recipe: {dropout: 0.1}}]\n",
        "seeds[0]: missing arch",
        "arch",
    ),
    (
        "architecture: {depth: 50}\nseeds: [{arch: {depth: 50}, recipe: {epochs: 3}}]\n",
        "seeds[0].recipe.epochs: the budget sets the epochs",
        "--budget",
    ),
    (
        "architecture: {depth: 50}\nseeds: [{arch: {depth: 50, widht: 1.0}}]\n",
        "seeds[0].arch.widht: unknown key",
        "depth, width",
    ),
    (
        "architecture: {depth: 50, width: [0.5, 1.5]}\nseeds: [{arch: {depth: 50}}]\n",
        "seeds[0].arch.width: 1 is outside the space",
        "not given",
    ),
    (
        "architecture: {depth: 50}\n"
        "seeds: [{name: a, arch: {depth: 50}}, {name: a, arch: {depth: 50}}]\n",
        "seeds[1].name: 'a' is used twice",
        "unique",
    ),
    ("name: [x]\narchitecture: {depth: 50}\n", "name: expected text", "a list"),
    ("architecture: {depth: [1, 2\n", "not valid YAML (line 2", "expected"),
    ("- architecture\n- recipe\n", "expected a mapping with sections", "got a list"),
    ("", "the file is empty", "architecture"),
    ("just text\n", "expected a mapping with sections", "text 'just text'"),
    ("architecture: {depth: 50}\n1: 2\n", "key 1 is not a name", "mapping"),
    (
        "architecture: {depth: 50}\nsources: [paper]\n",
        "sources: expected a mapping with architecture, recipe",
        "got a list",
    ),
    (
        "architecture: {depth: 50}\nsources: {arch: {width: paper}}\n",
        "sources.arch: unknown key",
        "allowed: architecture, recipe",
    ),
    (
        "architecture: {depth: 50}\nsources: {architecture: {widht: paper}}\n",
        "sources.architecture.widht: unknown key",
        "allowed: depth, width",
    ),
    (
        "architecture: {depth: 50}\nsources: {recipe: {epochs: paper}}\n",
        "sources.recipe.epochs: unknown key",
        "allowed: batch_size",
    ),
    (
        "architecture: {depth: 50}\nsources: {recipe: {dropout: 0.25}}\n",
        "sources.recipe.dropout: expected text saying where the values come from",
        "float 0.25",
    ),
    (
        "architecture: {depth: 50}\nsources: {architecture: {width: ' '}}\n",
        "sources.architecture.width: expected text",
        "text ' '",
    ),
    (
        "architecture: {depth: 50}\nsources: {architecture: {depth: a, layout: b}}\n",
        "sources.architecture.layout: give either depth or layout",
        "not both",
    ),
]


@pytest.mark.parametrize(
    ("text", "where", "allowed"), MALFORMED, ids=[m[1][:40] for m in MALFORMED]
)
def test_malformed_space_names_file_key_path_and_allowed(
    tmp_path: Path, text: str, where: str, allowed: str
) -> None:
    path = _space_file(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert where in message, message
    assert allowed in message, message
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(
        SpaceError, match=r"nope\.yaml: cannot read space file \(No such file or directory\)"
    ):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="cannot read space file"):
        load_space(tmp_path)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 500),
    st.floats(-2, 600, allow_nan=False),
    st.sampled_from(["", "50", "2-2-2-2", "maximize", "cpu", "bf16", "1e-4", "low", "x"]),
)
_KEYS = st.sampled_from(
    [
        "low",
        "high",
        "step",
        "log",
        "depth",
        "width",
        "resolution",
        "arch",
        "recipe",
        "name",
        "dropout",
        "accuracy",
        "device",
        "zzz",
    ]
)
_JUNK = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    section=st.sampled_from(
        ["architecture", "recipe", "objectives", "constraints", "target", "seeds"]
    ),
    key=st.sampled_from(
        [
            "depth",
            "width",
            "resolution",
            "resnet_d",
            "dropout",
            "weight_decay",
            "device",
            "accuracy",
            "max_params_m",
            "zzz",
        ]
    ),
    junk=_JUNK,
    whole=st.booleans(),
)
def test_any_junk_gives_a_space_or_a_space_error(
    section: str, key: str, junk: Any, whole: bool
) -> None:
    """No input makes the parser fail with anything but a SpaceError (no TypeError, KeyError...)."""
    data: dict[str, Any] = yaml.safe_load(BASE)
    data[section] = junk if whole or section == "seeds" else {key: junk}
    try:
        space = parse_space(data, source="junk.yaml")
    except SpaceError as exc:
        assert str(exc).startswith("junk.yaml: ")
        return
    assert SearchSpace.from_dict(space.to_dict()) == space


# -- the grammar -------------------------------------------------------------------------------


def test_scalar_list_and_range_forms(tmp_path: Path) -> None:
    space = load_space(
        _space_file(tmp_path, BASE + "  weight_decay: {low: 1.0e-5, high: 1.0e-3, log: true}\n")
    )
    assert space.param("arch.depth").domain.describe() == "fixed 50"
    assert space.param("arch.width").domain.describe() == "one of 0.5, 1"
    assert space.param("arch.resolution").domain.describe() == "int 16..32 step 16"
    assert space.param("recipe.weight_decay").domain.describe() == "float 1e-05..0.001 log"
    assert space.param("recipe.weight_decay").domain.cardinality() is None
    # keys the file does not give are fixed at the spec defaults (the paper's values)
    assert space.fixed_params()["arch.se_ratio"] == ArchSpec().se_ratio
    assert space.fixed_params()["recipe.ema_decay"] == RecipeSpec().ema_decay
    assert "recipe.epochs" not in space.fixed_params()
    # spec field order, not file order: a seeded sampler then ignores how the file is written
    assert [p.name for p in space.searched_params()] == [
        "arch.width",
        "arch.resolution",
        "recipe.weight_decay",
        "recipe.dropout",
    ]
    assert space.directions == ["maximize", "minimize"]


def test_layout_choices_and_one_element_lists_are_fixed(tmp_path: Path) -> None:
    space = load_space(
        _space_file(tmp_path, "architecture: {depth: [[1, 1, 1, 1], [3, 4, 6, 3], 101]}\n")
    )
    assert space.param("arch.depth").domain.values() == ("1-1-1-1", "50", "101")
    fixed = load_space(
        _space_file(tmp_path, "architecture: {depth: [[2, 2, 2, 2]], width: [0.5]}\n")
    )
    assert fixed.fixed_params()["arch.depth"] == "2-2-2-2"
    assert fixed.fixed_params()["arch.width"] == 0.5
    assert fixed.searched_params() == ()
    named = load_space(_space_file(tmp_path, "architecture: {depth: [50, 101, 152, 200]}\n"))
    assert named.distinct_architectures() == 4
    with pytest.raises(SpaceError, match=r"depth\[2\]: 50 is listed twice"):
        load_space(_space_file(tmp_path, "architecture: {depth: [50, 101, [3, 4, 6, 3]]}\n"))


def test_float_keys_take_int_bounds_and_stepped_floats_are_finite(tmp_path: Path) -> None:
    space = load_space(
        _space_file(tmp_path, "architecture: {width: {low: 1, high: 2, step: 0.25}}\n")
    )
    assert space.param("arch.width").domain.values() == (1.0, 1.25, 1.5, 1.75, 2.0)
    assert space.distinct_architectures() == 5
    continuous = load_space(_space_file(tmp_path, "architecture: {width: {low: 0.5, high: 1.0}}\n"))
    assert continuous.distinct_architectures() is None
    with pytest.raises(SpaceError, match="continuous"):
        next(continuous.architectures())


def test_objectives_constraints_target_defaults_and_values(tmp_path: Path) -> None:
    default = load_space(_space_file(tmp_path, "architecture: {depth: 50}\n"))
    assert [(o.name, o.direction) for o in default.objectives] == [
        ("accuracy", "maximize"),
        ("latency", "minimize"),
    ]
    assert default.constraints.to_dict() == {}
    assert default.target.device == "cpu" and default.target.name == "cpu-fp32-b1"
    text = (
        "architecture: {depth: 50}\nobjectives: {memory: minimize, accuracy: maximize}\n"
        "constraints: {max_params_m: 30, max_latency_ms: null}\n"
        "target: {device: 'cuda:1', dtype: bf16, batch_size: 64, threads: 4}\n"
    )
    space = load_space(_space_file(tmp_path, text))
    assert space.directions == [
        "maximize",
        "minimize",
    ]  # canonical order: accuracy, latency, memory
    assert [o.name for o in space.objectives] == ["accuracy", "memory"]
    assert space.constraints.to_dict() == {"max_params_m": 30.0}
    assert space.target.name == "cuda1-bf16-b64" and space.target.threads == 4


# -- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_sample_valid_candidates_inside_their_domains(name: str) -> None:
    space = load_space(SPACES / name)
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=7), directions=space.directions
    )
    seen = set()
    for _ in range(40):
        trial = study.ask()
        candidate = space.sample(trial, epochs=3)
        assert isinstance(candidate, Candidate) and candidate.recipe.epochs == 3
        assert space.violations(candidate) == []
        values = candidate_values(candidate)
        for p in space.searched_params():
            # every searched parameter is suggested unless it cannot matter (INACTIVE)
            dead = inactive_rule(p.name, values) is not None
            assert (p.name in trial.params) != dead, p.name
        seen.add(candidate.arch.key())
        # the stored Optuna params rebuild the same candidate (how a worker resumes a trial)
        rebuilt = space.sample(optuna.trial.FixedTrial(trial.params), epochs=3)
        assert rebuilt == candidate
    assert len(seen) > 1


def test_sampling_ignores_key_order_and_is_reproducible() -> None:
    data = load_space(SPACES / "quickstart.yaml").to_dict()
    shuffled = dict(
        data,
        architecture=dict(reversed(list(data["architecture"].items()))),
        recipe=dict(reversed(list(data["recipe"].items()))),
    )
    a, b = SearchSpace.from_dict(data), SearchSpace.from_dict(shuffled)
    assert a == b and a.fingerprint() == b.fingerprint()

    def draw(space: SearchSpace, seed: int) -> Candidate:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return space.sample(study.ask(), epochs=5)

    assert draw(a, 3) == draw(b, 3)
    assert len({draw(a, s).key() for s in range(6)}) > 1


def test_stepped_float_samples_sit_exactly_on_the_grid(tmp_path: Path) -> None:
    space = load_space(
        _space_file(tmp_path, "architecture: {width: {low: 0.1, high: 0.9, step: 0.1}}\n")
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    widths = {space.sample(study.ask(), epochs=1).arch.width for _ in range(60)}
    assert widths <= {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}  # no 0.30000000000000004


def test_seed_params_enqueue_exactly_the_seed() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0), directions=space.directions
    )
    for seed in space.seeds:
        study.enqueue_trial(space.seed_params(seed))
    for seed in space.seeds:
        assert space.sample(study.ask(), epochs=12) == seed.candidate(epochs=12)


def test_seed_params_rejects_a_candidate_outside_the_space() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    outside = Candidate(
        arch=ArchSpec(layout=(3, 4, 6, 3), width=0.25, resolution=32, num_classes=10)
    )
    with pytest.raises(SpaceError, match=r"arch\.depth = 50 is not in the space"):
        space.seed_params(outside)


# -- architectures -----------------------------------------------------------------------------


def test_distinct_architectures_of_the_shipped_spaces() -> None:
    assert load_space(SPACES / "resnet_rs.yaml").distinct_architectures() == 9 * 8 * 11
    assert load_space(SPACES / "quickstart.yaml").distinct_architectures() == 3 * 4 * 6
    tiny = load_space(SPACES / "tiny.yaml")
    assert tiny.distinct_architectures() == 8
    keys = [a.key() for a in tiny.architectures()]
    assert len(set(keys)) == 8


def test_extreme_architectures_bound_params_and_flops_of_the_full_grid(tmp_path: Path) -> None:
    """The check command's claim: min/max over the extremes equal min/max over every architecture
    (here with layouts that are not ordered stage by stage, and ResNet-D on and off)."""
    from rs_search.models.complexity import count_flops, count_params

    text = (
        "architecture: {depth: [[1, 1, 1, 1], [2, 1, 1, 1], [1, 1, 1, 2]],\n"
        "  width: [0.125, 0.25], resolution: 16, resnet_d: [true, false], num_classes: 10}\n"
    )
    space = load_space(_space_file(tmp_path, text))
    small, large = space.extreme_architectures()
    # 2-1-1-1 and 1-1-1-2 do not dominate each other: both are candidates for the largest
    assert sorted(a.label for a in small) == ["1-1-1-1"] * 2  # ResNet-D on and off
    assert sorted(a.label for a in large) == ["1-1-1-2"] * 2 + ["2-1-1-1"] * 2
    grid = list(space.architectures())
    assert len(grid) == space.distinct_architectures() == 12
    params = [count_params(a) for a in grid]
    flops = [count_flops(a) for a in grid]
    extreme_params = [count_params(a) for a in small + large]
    extreme_flops = [count_flops(a) for a in small + large]
    assert (min(extreme_params), max(extreme_params)) == (min(params), max(params))
    assert (min(extreme_flops), max(extreme_flops)) == (min(flops), max(flops))
    assert min(params) < max(params) and min(flops) < max(flops)


# -- identity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip_through_dict_json_and_yaml(name: str, tmp_path: Path) -> None:
    space = load_space(SPACES / name)
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(space.to_dict(), sort_keys=False))
    again = load_space(path)
    assert again == space and again.fingerprint() == space.fingerprint()


def test_fingerprint_follows_the_search_not_the_labels(tmp_path: Path) -> None:
    base = load_space(_space_file(tmp_path, BASE))
    relabelled = load_space(_space_file(tmp_path, "name: other\ndescription: words\n" + BASE))
    assert relabelled.fingerprint() == base.fingerprint() and relabelled.differences(base) == []
    wider = load_space(_space_file(tmp_path, BASE.replace("[0.5, 1.0]", "[0.5, 1.0, 1.5]")))
    assert wider.fingerprint() != base.fingerprint()
    assert base.differences(wider) == ["architecture.width: [0.5, 1.0] -> [0.5, 1.0, 1.5]"]


# -- the shipped spaces ------------------------------------------------------------------------


def test_resnet_rs_space_is_the_papers() -> None:
    """The grid of the paper's scaling study (Sec. 7.1: widths 0.25x-2x, depths from 26, images
    128-448 px, as quoted in ../shared/reference/resnet_rs.yaml `scaling_rules.study_grid_note`)
    around the published family."""
    space = load_space(SPACES / "resnet_rs.yaml")
    assert space.param("arch.depth").domain.values() == ("1-1-1-1", "2-2-2-2") + tuple(
        str(d) for d in NAMED_LAYOUTS
    )
    widths = space.param("arch.width").domain.values()
    assert widths == (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    resolutions = space.param("arch.resolution").domain.values()
    assert resolutions == tuple(range(128, 449, 32))
    assert {128, 160, 224, 320, 448} <= set(resolutions)
    fixed = space.fixed_params()
    assert (
        fixed["arch.se_ratio"] == 0.25
        and fixed["arch.resnet_d"] is True
        and fixed["arch.num_classes"] == 1000
    )
    assert fixed["recipe.lr_per_256"] == 0.1 and fixed["recipe.label_smoothing"] == 0.1
    assert fixed["recipe.ema_decay"] == 0.9999 and fixed["recipe.batch_size"] == 4096
    assert space.target.device == "cuda" and space.target.dtype == "bf16"


def test_resnet_rs_regularization_ranges_surround_the_published_recipes() -> None:
    """Every published value is inside its range and the range reaches past it on both sides
    (published values: PUBLISHED above; weight decay 1e-4 / 4e-5, reference recipe_common)."""
    space = load_space(SPACES / "resnet_rs.yaml")
    published = {
        "recipe.dropout": {v[0] for v in PUBLISHED.values()},
        "recipe.stochastic_depth": {v[1] for v in PUBLISHED.values()},
        "recipe.randaug_magnitude": {v[2] for v in PUBLISHED.values()},
        "recipe.weight_decay": {4e-5, 1e-4},
    }
    for name, values in published.items():
        domain = space.param(name).domain
        assert all(domain.contains(v) for v in values), name
        low, high = domain.low, domain.high  # type: ignore[union-attr]
        assert low <= min(values) and high > max(values), name
        if min(values) > 0:
            assert low < min(values), name


def test_resnet_rs_space_says_where_every_parameter_comes_from() -> None:
    space = load_space(SPACES / "resnet_rs.yaml")
    assert all(p.source for p in space.params), [p.name for p in space.params if not p.source]
    assert "Sec. 7.1" in (space.param("arch.width").source or "")
    assert "Sec. 7.1" in (space.param("arch.depth").source or "")
    # A range wider than what the paper or the official configs give says which part is ours.
    for p in space.searched_params():
        if p.name not in ("arch.depth", "arch.resolution"):
            assert "project heuristic" in (p.source or ""), p.name


def test_sources_label_parameters_without_changing_the_search(tmp_path: Path) -> None:
    text = BASE + (
        "sources:\n"
        "  architecture: {width: paper Sec. 7.1, layout: official configs}\n"
        "  recipe: {dropout: '  project heuristic  ', lr_per_256: official configs}\n"
    )
    cited = load_space(_space_file(tmp_path, text))
    plain = load_space(_space_file(tmp_path, BASE))
    assert cited.param("arch.width").source == "paper Sec. 7.1"
    assert cited.param("arch.depth").source == "official configs"  # layout is depth's alias
    assert cited.param("recipe.dropout").source == "project heuristic"
    assert cited.param("recipe.lr_per_256").source == "official configs"  # a fixed default
    assert cited.param("arch.resolution").source is None
    assert cited.fingerprint() == plain.fingerprint() and cited.differences(plain) == []
    assert cited != plain
    data = cited.to_dict()
    assert data["sources"] == {
        "architecture": {"depth": "official configs", "width": "paper Sec. 7.1"},
        "recipe": {"lr_per_256": "official configs", "dropout": "project heuristic"},
    }
    assert SearchSpace.from_dict(data) == cited
    assert "sources" not in plain.to_dict()


def test_resnet_rs_seeds_are_the_published_models() -> None:
    space = load_space(SPACES / "resnet_rs.yaml")
    got = {}
    for seed in space.seeds:
        arch, recipe = seed.arch, seed.recipe
        depth = next(d for d, layout in NAMED_LAYOUTS.items() if layout == arch.layout)
        assert seed.name == f"resnetrs{depth}-{arch.resolution}"
        assert (arch.width, arch.se_ratio, arch.resnet_d, arch.num_classes) == (
            1.0,
            0.25,
            True,
            1000,
        )
        assert (
            recipe["weight_decay"] == 4e-5
            and recipe["randaug_layers"] == 2
            and recipe["ema_decay"] == 0.9999
        )
        got[(depth, arch.resolution)] = (
            recipe["dropout"],
            recipe["stochastic_depth"],
            recipe["randaug_magnitude"],
        )
    assert got == PUBLISHED


def test_resnet_rs_seeds_match_the_model_family() -> None:
    """One seed per published variant of rs_search.models.FAMILY, same ArchSpec, same recipe."""
    from rs_search.models import FAMILY, family_arch

    space = load_space(SPACES / "resnet_rs.yaml")
    seeds = {(s.name.split("-")[0], s.arch.resolution): s for s in space.seeds}
    assert set(seeds) == {(m.name, r) for m in FAMILY.values() for r in m.resolutions}
    for (name, resolution), seed in seeds.items():
        assert seed.arch == family_arch(name, resolution)
        published = FAMILY[name].recipe_at(resolution)
        assert {k: seed.recipe[k] for k in published} == published


def test_quickstart_space_fits_a_small_cpu() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    assert space.fixed_params()["arch.num_classes"] == 10
    assert space.target.device == "cpu" and space.target.dtype == "fp32"
    assert len(space.seeds) >= 2
    assert all(
        sum(a.layout) <= 8 and a.resolution <= 64 and a.width <= 0.5 for a in space.architectures()
    )


def test_an_inactive_parameter_is_not_sampled_and_takes_its_canonical_value() -> None:
    # quickstart searches randaug_layers [0, 1] and randaug_magnitude [5, 10]: with no layer the
    # magnitude does nothing (rs_search/train/augment.py), so it must not be a sampled dimension
    space = load_space(SPACES / "quickstart.yaml")
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=3), directions=space.directions
    )
    layers = {0: 0, 1: 0}
    for _ in range(60):
        trial = study.ask()
        candidate = space.sample(trial, epochs=2)
        layers[candidate.recipe.randaug_layers] += 1
        if candidate.recipe.randaug_layers == 0:
            assert "recipe.randaug_magnitude" not in trial.params
            assert candidate.recipe.randaug_magnitude == 5  # the first choice
        else:
            assert trial.params["recipe.randaug_magnitude"] in (5, 10)
        assert space.normalise(candidate) == candidate
    assert layers[0] > 0 and layers[1] > 0


def test_normalise_merges_the_spellings_of_one_run_and_keeps_different_runs_apart() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    seed = space.seeds[0].candidate(epochs=4)
    assert seed.recipe.randaug_layers == 0
    spelled = replace(seed, recipe=replace(seed.recipe, randaug_magnitude=10))
    assert spelled.key() != seed.key()
    assert space.normalise(spelled).key() == space.normalise(seed).key()
    on = replace(seed, recipe=replace(seed.recipe, randaug_layers=1, randaug_magnitude=10))
    assert space.normalise(on) == on  # with a layer the magnitude matters
    # every rule's controlling parameter is sampled before the one it switches off
    order = [p.name for p in space.params]
    assert all(order.index(r.when) < order.index(r.param) for r in INACTIVE)
