"""``rs-search export`` on a small real study built with Optuna (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState, create_trial

from rs_search.models import build_model
from rs_search.search.artifacts import CheckpointStore
from rs_search.search.settings import settings_from_space
from rs_search.space import load_space
from rs_search.specs import ArchSpec, Candidate, RecipeSpec
from rs_search.storage.url import mask_url
from rs_search.train.checkpoint import save_checkpoint
from rs_search.train.recipe import WarmupEma
from tests.cli_runner import run_in_process

SPACES = Path(__file__).resolve().parents[2] / "spaces"
STUDY = "export-test"
BUDGET = 3


def _candidate(layout: tuple[int, ...], width: float, resolution: int) -> Candidate:
    arch = ArchSpec(layout=layout, width=width, resolution=resolution, num_classes=10)
    recipe = RecipeSpec(
        epochs=BUDGET,
        batch_size=128,
        lr_per_256=0.4,
        weight_decay=1e-4,
        label_smoothing=0.0,
        ema_decay=0.9,
        dropout=0.0,
        stochastic_depth=0.0,
        randaug_layers=0,
        randaug_magnitude=5,
        warmup_epochs=0,
        precision="fp32",
    )
    return Candidate(arch=arch, recipe=recipe)


def _curve(top1: float) -> list[dict[str, Any]]:
    return [
        {
            "epoch": e,
            "train_loss": 2.0 - 0.3 * e,
            "train_top1": top1 - 6 + 3 * e,
            "val_loss": 2.1 - 0.3 * e,
            "val_top1": top1 - 3 * (BUDGET - e),
            "val_loss_raw": 2.1 - 0.3 * e,
            "val_top1_raw": top1 - 3 * (BUDGET - e),
            "images_per_s": 50.0,
            "epoch_seconds": 1.0,
            "peak_memory_mb": 100.0,
            "lr": 0.1,
        }
        for e in range(1, BUDGET + 1)
    ]


def _trial(
    cand: Candidate,
    top1: float,
    latency: float,
    *,
    state: TrialState = TrialState.COMPLETE,
    system_attrs: dict[str, Any] | None = None,
    **extra: Any,
) -> optuna.trial.FrozenTrial:
    attrs = {
        "arch": cand.arch.to_dict(),
        "arch_key": cand.arch.key(),
        "candidate": cand.to_dict(),
        "curve": _curve(top1),
        "latency_ms": latency,
        "latency_p90_ms": latency * 1.1,
        "memory_mb": 12.5,
        "latency_profile": "cpu-fp32-b8",
        **extra,
    }
    values = [top1, latency] if state == TrialState.COMPLETE else None
    return create_trial(state=state, values=values, user_attrs=attrs, system_attrs=system_attrs)


FAST = _candidate((1, 1, 1, 1), 0.25, 16)
MID = _candidate((1, 1, 1, 1), 0.5, 32)
BIG = _candidate((2, 2, 2, 2), 0.5, 32)
SLOW_BAD = _candidate((2, 2, 2, 2), 0.25, 32)


def make_study(storage: str, artifacts: Path, *, with_trials: bool = True) -> optuna.Study:
    space = load_space(SPACES / "tiny.yaml")
    settings = settings_from_space(
        space,
        budget_epochs=BUDGET,
        data="digits",
        eta=None,
        min_rung=None,
        n_trials=None,
        sampler="tpe",
        seed=0,
        heartbeat_interval=30,
        grace_period=120,
        artifacts=str(artifacts),
    )
    study = optuna.create_study(
        study_name=STUDY, storage=storage, directions=list(settings.directions)
    )  # type: ignore[arg-type]
    for key, value in settings.user_attrs().items():
        study.set_user_attr(key, value)
    if with_trials:
        study.add_trial(_trial(FAST, 80.0, 1.0))  # 0: front (fastest)
        study.add_trial(_trial(MID, 88.0, 2.0, seed_name="tiny-1111"))  # 1: front
        study.add_trial(
            _trial(
                BIG,
                93.0,
                4.0,
                origin="rule:depth",
                source_trial=1,
                reason="depth 1-1-1-1→2-2-2-2: train/val gap 7.0 points",
            )
        )  # 2
        study.add_trial(_trial(SLOW_BAD, 85.0, 3.0))  # 3: dominated by 1
        study.add_trial(
            _trial(
                _candidate((2, 2, 2, 2), 0.5, 16),
                0.0,
                0.5,
                rejected="latency 9 ms > max_latency_ms 5",
            )
        )  # 4: rejected
        study.add_trial(
            _trial(
                FAST, 0.0, 0.0, state=TrialState.FAIL, fail_reason="TrainingDiverged: loss is NaN"
            )
        )  # 5
        # the best trial of all, but over a limit (trial.set_constraint value > 0): not exported
        study.add_trial(
            _trial(
                _candidate((2, 2, 2, 2), 0.5, 24),
                99.0,
                0.1,
                system_attrs={"constraints:max_memory_mb": 3.0},
            )
        )  # 6
    return study


def write_checkpoint(artifacts: Path, number: int, cand: Candidate) -> dict[str, torch.Tensor]:
    """A real checkpoint of the engine's format: weights perturbed so nothing is at its init,
    the EMA updated from them. Returns the EMA weights (what evaluation and ONNX use)."""
    torch.manual_seed(number)
    model = build_model(cand.arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ema = WarmupEma(model, decay=0.9)
    ema.update_parameters(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ema.update_parameters(model)
    state = {
        "format": 1,
        "candidate": cand.to_dict(),
        "candidate_key": cand.key(),
        "epoch": BUDGET,
        "step": 0,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
    }
    folder = CheckpointStore.from_spec(str(artifacts)).trial_dir(STUDY, number)
    save_checkpoint(folder, {**state, "epoch": BUDGET - 1}, epoch=BUDGET - 1)
    save_checkpoint(folder, state, epoch=BUDGET)
    return {
        k.removeprefix("module."): v for k, v in ema.state_dict().items() if k.startswith("module.")
    }


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_export_writes_the_front_with_reasons_and_provenance(
    storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_study(storage, tmp_path / "artifacts")
    out = tmp_path / "export"
    code, stdout, stderr = run_in_process(
        ["export", "--study", STUDY, "--storage", storage, "--out", str(out)], capsys
    )
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "index.csv",
        "index.json",
        "trial-0.yaml",
        "trial-1.yaml",
        "trial-2.yaml",
    ]
    assert "exported 3 Pareto-optimal trial(s)" in stdout

    for number, cand in ((0, FAST), (1, MID), (2, BIG)):
        path = out / f"trial-{number}.yaml"
        loaded = Candidate.from_yaml_file(path)  # what `rs-search train --config` reads
        assert loaded == cand and loaded.arch.key() == cand.arch.key()
        build_model(loaded.arch, dropout=loaded.recipe.dropout)  # builds
        doc = yaml.safe_load(path.read_text())
        assert doc["arch_key"] == cand.arch.key()
        assert doc["pareto"]["rank"] == 0 and doc["pareto"]["reason"].startswith("non-dominated")
        assert doc["pareto"]["exportable_trials"] == 4  # 0-3: not rejected, failed, infeasible
        assert len(doc["pareto"]["hypervolume_reference"]) == 2
        assert doc["provenance"]["study"] == STUDY and doc["provenance"]["trial"] == number
        assert set(doc["provenance"]["versions"]) == {"rs_search", "torch", "optuna"}
        assert doc["provenance"]["budget_epochs"] == BUDGET
        assert doc["provenance"]["storage"] == mask_url(storage)
        assert doc["latency"]["cpu-fp32-b8"]["median_ms"] == doc["metrics"]["latency"]
        assert doc["metrics"]["epochs_trained"] == BUDGET and doc["metrics"]["params_m"] > 0

    fast = yaml.safe_load((out / "trial-0.yaml").read_text())
    assert "best latency of the study" in fast["pareto"]["reason"]
    big = yaml.safe_load((out / "trial-2.yaml").read_text())
    assert "best top-1 of the study" in big["pareto"]["reason"]
    assert big["provenance"]["origin"] == "rule:depth"
    assert big["provenance"]["origin_reason"].startswith("depth 1-1-1-1→2-2-2-2")
    mid = yaml.safe_load((out / "trial-1.yaml").read_text())
    assert mid["provenance"]["origin"] == "seed:tiny-1111"
    # trials 0 and 1 are the exportable ones at <= 2 ms; 1 is the more accurate
    assert (
        "the higher top-1 among the 2 exportable trial(s) at latency <= 2 ms"
        in mid["pareto"]["reason"]
    )

    with (out / "index.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2]
    index = json.loads((out / "index.json").read_text())
    assert [r["trial"] for r in index["trials"]] == [int(r["trial"]) for r in rows]
    assert {r["arch_key"] for r in index["trials"]} == {
        FAST.arch.key(),
        MID.arch.key(),
        BIG.arch.key(),
    }


def test_no_finished_trial_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    study = make_study(storage, tmp_path / "artifacts", with_trials=False)
    study.add_trial(_trial(FAST, 0.0, 0.0, state=TrialState.FAIL, fail_reason="boom"))
    out = tmp_path / "export"
    code, stdout, stderr = run_in_process(
        ["export", "--study", STUDY, "--storage", storage, "--out", str(out)], capsys
    )
    assert code == 2
    assert stderr.strip().count("\n") == 0
    assert "has no finished trial to export" in stderr
    assert not out.exists() and list(tmp_path.glob(".export*")) == []


def test_out_dir_is_written_whole_or_not_at_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(storage, tmp_path / "artifacts")
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, stderr = run_in_process(
        ["export", "--study", STUDY, "--storage", storage, "--out", str(out)], capsys
    )
    assert code == 2 and "not empty" in stderr
    (out / "keep.txt").unlink()
    code, _, stderr = run_in_process(
        ["export", "--study", STUDY, "--storage", storage, "--out", str(out)], capsys
    )
    assert code == 0, stderr  # an empty folder is filled
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # --weights without checkpoints fails after writing some files: the previous export that
    # --overwrite would replace is left as it was, and nothing else is left behind
    code, _, stderr = run_in_process(
        [
            "export",
            "--study",
            STUDY,
            "--storage",
            storage,
            "--out",
            str(out),
            "--overwrite",
            "--weights",
        ],
        capsys,
    )
    assert code == 2 and "no final checkpoint" in stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export")] == []


def test_overwrite_replaces_only_a_previous_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--overwrite`` deleted whatever ``--out`` held (issue 10, audit: an unrelated folder's
    files were lost) and ``--out .`` ended in a Python exception (exit 1). Seen failing before
    the fix: ``keep.txt`` was deleted, and ``--out .`` printed ``OSError: [Errno 16] Device or
    resource busy``."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(storage, tmp_path / "artifacts")

    def export(out: Path | str) -> tuple[int, str]:
        code, _, stderr = run_in_process(
            ["export", "--study", STUDY, "--storage", storage, "--out", str(out), "--overwrite"],
            capsys,
        )
        return code, stderr

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    (mine / "notes").mkdir()
    code, stderr = export(mine)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "replaces only a previous export" in stderr and "'keep.txt'" in stderr
    assert sorted(p.name for p in mine.iterdir()) == ["keep.txt", "notes"]
    # a folder that only looks like an export (an index.json that is not an export's)
    (mine / "keep.txt").unlink()
    (mine / "notes").rmdir()
    (mine / "index.json").write_text('{"my": "settings"}')
    code, stderr = export(mine)
    assert code == 2 and "no export index.json" in stderr
    assert (mine / "index.json").read_text() == '{"my": "settings"}'

    # a previous export is replaced whole; a file added to it makes it not one any more
    out = tmp_path / "export"
    assert export(out)[0] == 0
    first = sorted(p.name for p in out.iterdir())
    (out / "trial-0.yaml").write_text("stale")
    assert export(out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == first
    assert (out / "trial-0.yaml").read_text() != "stale"
    (out / "README.md").write_text("my notes on this export")
    code, stderr = export(out)
    assert code == 2 and "'README.md'" in stderr
    assert (out / "README.md").exists() and (out / "index.json").exists()

    # the working folder (and any folder above it) is never replaced
    monkeypatch.chdir(out)
    for target in (".", "..", str(out)):
        code, stderr = export(target)
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert "working folder" in stderr and "Traceback" not in stderr
    assert (out / "README.md").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_weights_and_onnx_match_pytorch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    artifacts = tmp_path / "artifacts"
    make_study(storage, artifacts)
    ema_weights = {n: write_checkpoint(artifacts, n, c) for n, c in ((0, FAST), (1, MID), (2, BIG))}
    out = tmp_path / "export"
    code, stdout, stderr = run_in_process(
        [
            "export",
            "--study",
            STUDY,
            "--storage",
            storage,
            "--out",
            str(out),
            "--weights",
            "--onnx",
        ],
        capsys,
    )
    assert code == 0, stderr
    import numpy as np
    import onnxruntime as ort

    for number, cand in ((0, FAST), (1, MID), (2, BIG)):
        doc = yaml.safe_load((out / f"trial-{number}.yaml").read_text())
        assert doc["files"]["weights"]["file"] == f"trial-{number}.pt"
        assert doc["files"]["weights"]["evaluated_with"] == "ema"
        assert doc["files"]["weights"]["copied_from"].endswith(f"ckpt-{BUDGET:04d}-000000.pt")
        state = torch.load(out / f"trial-{number}.pt", weights_only=True)
        assert state["epoch"] == BUDGET
        # the ONNX file carries the EMA weights: same logits as PyTorch with them, to 1e-4
        model = build_model(cand.arch).eval()
        model.load_state_dict(ema_weights[number])
        images = torch.randn(3, 3, cand.arch.resolution, cand.arch.resolution)
        with torch.no_grad():
            expected = model(images).numpy()
        session = ort.InferenceSession(
            str(out / doc["files"]["onnx"]["file"]), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(None, {"images": images.numpy()})
        assert got.shape == (3, 10)
        assert np.abs(got - expected).max() <= 1e-4
        assert np.abs(expected).max() > 1e-2  # not trivially zero logits
        assert doc["files"]["onnx"]["max_abs_diff_vs_pytorch"] <= 1e-4
        assert doc["files"]["onnx"]["weights"] == "checkpoint, EMA weights"


@pytest.mark.slow
def test_exported_yaml_trains_with_the_same_architecture_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export -> `rs-search train --config` (a real process, one epoch of synthetic data) -> the
    run's checkpoint and metrics name the exported architecture."""
    import os
    import subprocess
    import sys

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(storage, tmp_path / "artifacts")
    out = tmp_path / "export"
    code, _, stderr = run_in_process(
        ["export", "--study", STUDY, "--storage", storage, "--out", str(out)], capsys
    )
    assert code == 0, stderr
    exported = yaml.safe_load((out / "trial-0.yaml").read_text())
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rs_search.cli.main",
            "train",
            "--config",
            str(out / "trial-0.yaml"),
            "--data",
            "synthetic:10",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--out",
            str(run_dir),
            "--no-progress",
            "--num-workers",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (ckpt,) = run_dir.glob("ckpt-*.pt")
    state = torch.load(ckpt, weights_only=True)
    trained = Candidate.from_dict(state["candidate"])
    assert trained.arch.key() == exported["arch_key"] == FAST.arch.key()
    assert trained.recipe == RecipeSpec.from_dict({**exported["recipe"], "epochs": 1})


def test_latency_per_hardware_comes_from_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rs_search.latency.cache import LatencyCache
    from rs_search.latency.profiles import get_profile
    from rs_search.latency.result import LatencyResult

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(storage, tmp_path / "artifacts")
    gpu = get_profile("cuda-fp16-b8")
    with LatencyCache(storage) as cache:  # as a latency worker on the deployment GPU leaves it
        cache.put(
            FAST.arch,
            gpu,
            LatencyResult(
                arch_key=FAST.arch.key(),
                profile_name=gpu.name,
                profile_key=gpu.key(),
                device_name="NVIDIA H200",
                torch_version="2.14.1",
                status="ok",
                median_ms=0.21,
                p90_ms=0.25,
                peak_memory_mb=40.0,
                stable=True,
                batch_size=8,
            ),
        )
    out = tmp_path / "export"
    code, _, stderr = run_in_process(
        [
            "export",
            "--study",
            STUDY,
            "--storage",
            storage,
            "--out",
            str(out),
            "--hardware",
            "cuda-fp16-b8",
            "--hardware",
            "cpu-bf16-b16",
        ],
        capsys,
    )
    assert code == 0, stderr
    fast = yaml.safe_load((out / "trial-0.yaml").read_text())["latency"]
    assert fast["cuda-fp16-b8"]["median_ms"] == 0.21
    assert fast["cuda-fp16-b8"]["device_name"] == "NVIDIA H200"
    assert fast["cpu-fp32-b8"]["median_ms"] == 1.0  # the study's own target, from the trial
    assert fast["cpu-bf16-b16"]["status"] == "not measured"
    assert (
        "latency-worker --study export-test --hardware cpu-bf16-b16" in fast["cpu-bf16-b16"]["hint"]
    )
    big = yaml.safe_load((out / "trial-2.yaml").read_text())["latency"]
    assert big["cuda-fp16-b8"]["status"] == "not measured"

    code, _, stderr = run_in_process(
        [
            "export",
            "--study",
            STUDY,
            "--storage",
            storage,
            "--out",
            str(tmp_path / "other"),
            "--hardware",
            "tpu-v9",
        ],
        capsys,
    )
    assert code == 2 and "unknown hardware profile 'tpu-v9'" in stderr
    assert not (tmp_path / "other").exists()
