"""Halving that respects the regime (issue 12 item 3): a rung prunes only where the study's own
full-budget trials show that it ranks as the full budget does, and only nets the size of those
trials (pure functions of ``rs_search.search.halving``)."""

from __future__ import annotations

import pytest

from rs_search.fidelity import MIN_TRIALS, MIN_TRUSTED_TAU
from rs_search.search import halving
from rs_search.study.record import Measurements, TrialRecord

DIRS = ("maximize", "minimize")
RUNG = 4


def done(number: int, rung: float, final: float, params_m: float, **fields: object) -> TrialRecord:
    """A trial that trained to the full budget: top-1 ``rung`` at the rung, ``final`` at the end."""
    fields.setdefault("state", "COMPLETE")
    return TrialRecord(  # type: ignore[arg-type]
        number=number,
        values={"accuracy": final, "latency": 1.0 + params_m},
        rungs={RUNG: rung},
        measured=Measurements(latency_ms=1.0 + params_m, params_m=params_m),
        retry_origin=number,
        **fields,
    )


# Six full-budget trials of the long regime: the bigger nets (params 0.8-1.0 M) are behind at
# the rung and ahead at the end, the paper's slow starters (Bello et al. 2021, Sec. 7).
CROSSING = [
    done(0, 90.0, 95.0, 0.2),
    done(1, 89.0, 95.5, 0.3),
    done(2, 88.0, 96.0, 0.4),
    done(3, 70.0, 98.0, 0.8),
    done(4, 72.0, 97.5, 0.9),
    done(5, 68.0, 98.5, 1.0),
]
# The short regime: the same nets, and the rung ranks them as the end does.
HOLDING = [
    done(t.number, t.rungs[RUNG], t.rungs[RUNG] + 8.0, t.measured.params_m or 0) for t in CROSSING
]

# A new deeper net reaches the rung slow: behind every trial there, and slower (latency).
FIELD = [[90.0, 1.2], [89.0, 1.3], [88.0, 1.4], [70.0, 1.8], [72.0, 1.9], [68.0, 2.0], [66.0, 1.95]]
DEEPER = 6


def test_a_slow_early_deeper_candidate_is_not_pruned_where_the_rung_s_ranks_do_not_hold():
    plain = halving.decide(FIELD, DEEPER, directions=DIRS, eta=3, epoch=RUNG)
    assert not plain.keep  # plain successive halving prunes it: last but one of the field
    evidence = halving.rung_evidence(CROSSING, RUNG)
    assert evidence.agreement.n == 6 and evidence.agreement.tau < MIN_TRUSTED_TAU
    why = halving.regime_exemption(evidence, params_m=1.0)
    assert why is not None and "Kendall tau" in why and "project heuristic" in why
    decision = halving.exempt(halving.with_evidence(plain, evidence), why)
    assert decision.keep and decision.position == plain.position
    assert decision.to_dict()["evidence"] == 6
    assert decision.to_dict()["tau"] == pytest.approx(evidence.agreement.tau, abs=1e-4)
    assert decision.reason().endswith(f"over 6 full-budget trials: continues ({why})")
    assert f"rung tau {evidence.agreement.tau:.2f}" in decision.reason()


def test_pruning_still_happens_where_the_rung_s_ranks_hold():
    evidence = halving.rung_evidence(HOLDING, RUNG)
    assert evidence.agreement.tau == pytest.approx(1.0)
    assert halving.regime_exemption(evidence, params_m=1.0) is None
    plain = halving.decide(FIELD, DEEPER, directions=DIRS, eta=3, epoch=RUNG)
    assert not halving.with_evidence(plain, evidence).keep


def test_an_unmeasured_rung_promotes_everyone_until_enough_trials_trained_to_the_end():
    few = HOLDING[: MIN_TRIALS - 1]
    why = halving.regime_exemption(halving.rung_evidence(few, RUNG), params_m=0.2)
    assert why is not None and "not yet measured" in why and f"fewer than {MIN_TRIALS}" in why
    assert halving.regime_exemption(halving.rung_evidence(HOLDING[:MIN_TRIALS], RUNG), 0.2) is None


def test_a_net_far_bigger_than_the_evidence_is_not_judged_by_it():
    evidence = halving.rung_evidence(HOLDING, RUNG)  # tau 1, largest net 1.0 M parameters
    assert evidence.largest_params_m == 1.0
    assert halving.regime_exemption(evidence, params_m=halving.SIMILAR_SIZE * 1.0) is None
    why = halving.regime_exemption(evidence, params_m=halving.SIMILAR_SIZE * 1.5)
    assert why is not None and "3.0x the parameters" in why and "project heuristic" in why
    assert halving.regime_exemption(evidence, params_m=None) is None  # no count: the rung stands


def test_only_full_budget_trials_are_evidence_and_a_retry_counts_once():
    others = [
        done(10, 99.0, 10.0, 0.2, state="PRUNED"),  # stopped at the rung: no full-budget figure
        done(11, 99.0, 10.0, 0.2, repeat_of=0),  # a repeat: its original's figures stand
        done(12, 99.0, 10.0, 0.2, rejected="max_latency_ms"),  # never trained
        done(13, 99.0, 10.0, 0.2, state="RUNNING"),
        TrialRecord(number=14, state="COMPLETE", values={"accuracy": 99.0}),  # no rung value
    ]
    retry = done(15, 90.0, 95.0, 0.2)
    retry = TrialRecord(**{**retry.__dict__, "retry_origin": 0})
    evidence = halving.rung_evidence([*HOLDING, *others, retry], RUNG)
    assert evidence.agreement.n == len(HOLDING)
    assert evidence.agreement.tau == pytest.approx(1.0)


def test_a_seed_s_exemption_is_not_replaced_and_a_kept_decision_is_unchanged():
    evidence = halving.rung_evidence(CROSSING, RUNG)
    first = halving.with_evidence(
        halving.decide(FIELD, 0, directions=DIRS, eta=3, epoch=RUNG), evidence
    )
    assert first.keep
    why = halving.regime_exemption(evidence, params_m=0.2)
    assert why is not None and halving.exempt(first, why) == first  # kept on its place
    assert "exempt" not in first.to_dict()
