"""Study-level facts: read through StudySettings for studies made by rs-search start, tolerantly
for plain Optuna studies."""

from __future__ import annotations

import optuna

from rs_search.study.read import DEFAULT_GRACE_S, study_info
from rs_search.study.settings import StudySettings

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_settings_of_a_study_made_by_start() -> None:
    settings = StudySettings(
        space={},
        space_fingerprint="test",
        budget_epochs=12,
        n_trials=16,
        target={"name": "cpu-fp32-b16", "device": "cpu"},
        heartbeat_interval=5,
        grace_period=20,
    )
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="s")
    for key, value in settings.user_attrs().items():
        study.set_user_attr(key, value)
    info = study_info(study)
    assert info.from_settings
    assert (info.name, info.target, info.budget_epochs, info.trial_budget) == (
        "s",
        "cpu-fp32-b16",
        12,
        16,
    )
    assert info.objectives == ("accuracy", "latency")
    assert (info.heartbeat_s, info.grace_s) == (5, 20)
    assert info.epochs_budget == 12 * 16


def test_plain_optuna_study_gets_defaults() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    info = study_info(study)
    assert not info.from_settings
    assert info.target == "target hardware"
    assert info.budget_epochs is None and info.trial_budget is None and info.epochs_budget is None
    assert info.objectives == ("accuracy", "latency", "memory")
    assert info.grace_s == DEFAULT_GRACE_S


def test_flat_attributes_are_read_tolerantly() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("budget", "100epochs")
    study.set_user_attr("n_trials", 8)
    study.set_user_attr("target", {"name": "gpu-bf16-b64"})
    study.set_metric_names(["top1", "latency_ms"])
    info = study_info(study)
    assert (info.budget_epochs, info.trial_budget, info.target) == (100, 8, "gpu-bf16-b64")
    assert info.objectives == ("accuracy", "latency")  # our names for the values it names
    study.set_user_attr("budget", "lots")  # unreadable: unknown, not an error
    assert study_info(study).budget_epochs is None


def test_a_plain_study_names_its_objectives_or_takes_the_contract_order() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "memory"])
    info = study_info(study)
    assert info.objectives == ("accuracy", "memory")
    assert info.directions == ("maximize", "minimize")
    unnamed = optuna.create_study(directions=["maximize", "minimize"])
    unnamed.set_metric_names(["score", "cost"])  # not ours: the study contract's order
    assert study_info(unnamed).objectives == ("accuracy", "latency")
