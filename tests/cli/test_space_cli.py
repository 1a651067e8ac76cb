"""``rs-search space check|sample`` end to end: exit status, one-line errors, YAML round trips."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from rs_search.cli._common import console
from rs_search.cli.main import main
from rs_search.errors import SpaceError
from rs_search.space import load_space
from rs_search.specs import Candidate
from tests.cli_runner import run_in_process
from tests.test_space import MALFORMED, SPACES

BAD = "architecture: {depth: [2, 2, 2, 2]}\n"


@pytest.mark.parametrize(
    ("text", "where", "allowed"), MALFORMED, ids=[m[1][:40] for m in MALFORMED]
)
def test_check_bad_space_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str, allowed: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = run_in_process(["space", "check", str(path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: "), err
    assert where in err and allowed in err
    assert "Traceback" not in err + out


def test_debug_lets_the_error_through(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    with pytest.raises(SpaceError, match=r"write \[\[2, 2, 2, 2\]\]"):
        main(["--debug", "space", "check", str(path)])


def test_console_script_exit_status_and_traceback_only_with_debug(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    exe = Path(sys.executable).with_name("rs-search")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "rs_search.cli.main"]
    env = {**os.environ, "COLUMNS": "120"}
    plain = subprocess.run(
        [*command, "space", "check", str(path)], capture_output=True, text=True, env=env
    )
    assert plain.returncode == 2
    assert (
        plain.stderr
        == f"error: {path}: architecture.depth: [2, 2, 2, 2] is read as a choice of named depths, "
        "and 2 is not one; for the layout write [[2, 2, 2, 2]]\n"
    )
    assert plain.stdout == ""
    debug = subprocess.run(
        [*command, "--debug", "space", "check", str(path)], capture_output=True, text=True, env=env
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "SpaceError" in debug.stderr


def test_check_shows_parameters_architectures_and_cost_range(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 160)  # the depth domain on one line of the table
    code, out, _ = run_in_process(
        ["space", "check", str(SPACES / "resnet_rs.yaml"), "--no-complexity"], capsys
    )
    assert code == 0
    assert "Architectures: 792 distinct (9 x 8 x 11)" in out
    for fragment in (
        "arch.depth",
        "one of 1-1-1-1, 2-2-2-2, 50, 101, 152, 200, 270, 350, 420",  # shallow depths too
        "float 0.25..2 step 0.25",  # widths from 0.25
        "int 128..448 step 32",
        "recipe.weight_decay",
        "a100-bf16",
        "resnetrs420-320",
    ):
        assert fragment in out, fragment


def test_check_prints_where_each_range_comes_from(capsys: pytest.CaptureFixture[str]) -> None:
    space = load_space(SPACES / "resnet_rs.yaml")
    code, out, _ = run_in_process(
        ["space", "check", str(SPACES / "resnet_rs.yaml"), "--no-complexity"], capsys
    )
    assert code == 0
    text = " ".join(out.split())  # undo the console's line wrapping
    assert "Sources (where each parameter's values come from):" in text
    for p in space.params:
        assert f"{p.name}: {' '.join((p.source or '').split())}" in text, p.name
    assert "arch.width: paper Sec. 7.1 scaling study, width multipliers 0.25," in text
    assert "no source given" not in text


def test_check_sources_are_text_not_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cited.yaml"
    path.write_text(
        "description: '[bold]odd[/bold]'\n"
        "architecture: {depth: 50, width: [0.5, 1.0], resolution: [16, 32]}\n"
        "sources: {architecture: {width: '[red]paper[/red] Table [1]'}}\n"
    )
    code, out, _ = run_in_process(["space", "check", str(path), "--no-complexity"], capsys)
    assert code == 0
    assert "arch.width: [red]paper[/red] Table [1]" in out
    assert "[bold]odd[/bold]" in out
    assert "no source given for: arch.resolution" in out
    code, out, _ = run_in_process(
        ["space", "check", str(SPACES / "tiny.yaml"), "--no-complexity"], capsys
    )
    assert code == 0 and "Sources" not in out


def test_check_counts_params_and_flops_of_the_extremes(capsys: pytest.CaptureFixture[str]) -> None:
    from rs_search.models.complexity import count_flops, count_params

    space = load_space(SPACES / "tiny.yaml")
    small, large = space.extreme_architectures()
    code, out, _ = run_in_process(["space", "check", str(SPACES / "tiny.yaml")], capsys)
    assert code == 0
    text = " ".join(out.split())  # undo the console's line wrapping
    low, high = count_params(small[0]), count_params(large[0])
    assert (
        f"Parameters: {low / 1e6:.2f} M (depth 1-1-1-1, width 0.25, 16 px) .. {high / 1e6:.2f} M "
        "(depth 2-2-2-2, width 0.5, 32 px)" in text
    )
    assert f"{count_flops(large[0]) / 1e6:.3g} M (depth 2-2-2-2" in text
    assert "Architectures: 8 distinct (2 x 2 x 2)" in text


def _sampled(space_file: Path, seed: int, epochs: int) -> Candidate:
    space = load_space(space_file)
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=seed), directions=space.directions
    )
    return space.sample(study.ask(), epochs=epochs)


@pytest.mark.parametrize("name", ["quickstart.yaml", "resnet_rs.yaml"])
def test_sample_to_stdout_is_the_seeded_candidate(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_in_process(
        ["space", "sample", str(SPACES / name), "--budget", "12epochs", "--seed", "5"], capsys
    )
    assert code == 0 and err == ""
    data = yaml.safe_load(out)
    assert list(data) == ["arch", "recipe"]
    candidate = Candidate.from_dict(data)
    assert candidate == _sampled(SPACES / name, 5, 12)
    assert candidate.recipe.epochs == 12
    assert load_space(SPACES / name).violations(candidate) == []


def test_sample_out_round_trips_and_leaves_no_temp_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "cand.yaml"
    code, out, err = run_in_process(
        [
            "space",
            "sample",
            str(SPACES / "tiny.yaml"),
            "--budget",
            "3ep",
            "--seed",
            "1",
            "--out",
            str(out_file),
        ],
        capsys,
    )
    assert code == 0 and out == "" and f"wrote {out_file}" in err
    assert Candidate.from_yaml_file(out_file) == _sampled(SPACES / "tiny.yaml", 1, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["cand.yaml"]
    assert oct(out_file.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_sample_without_seed_prints_a_seed_that_reproduces_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_in_process(
        ["space", "sample", str(SPACES / "quickstart.yaml"), "--budget", "2epochs"], capsys
    )
    assert code == 0
    match = re.search(r"--seed (\d+)", out)
    assert match is not None
    assert Candidate.from_dict(yaml.safe_load(out)) == _sampled(
        SPACES / "quickstart.yaml", int(match[1]), 2
    )


@pytest.mark.parametrize("budget", ["350", "abc", "0epochs", "3.5epochs", "10steps"])
def test_sample_bad_budget_names_the_units(budget: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_in_process(
        ["space", "sample", str(SPACES / "tiny.yaml"), "--budget", budget], capsys
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "units: epochs, epoch, ep" in err


def test_sample_unwritable_out_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "cand.yaml"
    code, _, err = run_in_process(
        ["space", "sample", str(SPACES / "tiny.yaml"), "--budget", "3ep", "--out", str(target)],
        capsys,
    )
    assert code == 2 and err == f"error: {target}: cannot write (No such file or directory)\n"
    assert list(tmp_path.iterdir()) == []


def test_missing_space_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_in_process(["space", "check", str(tmp_path / "nope.yaml")], capsys)
    assert (
        code == 2
        and err
        == f"error: {tmp_path / 'nope.yaml'}: cannot read space file (No such file or directory)\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["space", "--help"],
        ["space", "check", "--help"],
        ["space", "sample", "--help"],
        ["models", "--help"],
    ],
)
def test_every_command_and_option_has_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_in_process(argv, capsys)
    assert code == 0
    text = " ".join(out.split())
    for option in re.findall(r"(--[a-z][a-z-]+)", text):
        assert option in text
    if argv[-2] == "sample":
        for fragment in ("--budget", "350epochs", "--seed", "--out", "atomically"):
            assert fragment in text
    if argv[-2] == "check":
        assert "--no-complexity" in text and "Example: rs-search space check" in text
