"""The table file: a lossless round trip, and any bad file (truncated, corrupt, edited, hostile)
is one TableError naming the line, and through the CLI one line with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rs_search.bench.table import (
    FORMAT,
    TableError,
    dumps_table,
    load_table,
    loads_table,
    write_table,
)
from rs_search.cli.main import main
from tests.bench.helpers import make_table

CURVES = [[10.0, 50.0, 80.0], [20.0, 40.0, 85.5], [30.0, 60.0, 70.25], [5.0, 6.0, 7.0]]
LATENCIES = [1.5, 2.5, 0.75, 3.0]


@pytest.fixture
def table_text() -> str:
    return dumps_table(make_table(CURVES, LATENCIES, pending=2))


def test_round_trip(tmp_path: Path) -> None:
    table = make_table(CURVES, LATENCIES, pending=2)
    path = tmp_path / "t.jsonl"
    write_table(path, table)
    back = load_table(path)
    assert back == table
    assert dumps_table(back) == path.read_text()
    assert len(back.done) == 4 and not back.complete
    assert [e.final_top1 for e in back.done] == [80.0, 85.5, 70.25, 7.0]
    assert path.stat().st_mode & 0o644 == 0o644  # readable like any other output file


def test_one_line_per_candidate(table_text: str) -> None:
    lines = table_text.splitlines()
    assert len(lines) == 1 + 6
    assert json.loads(lines[0])["format"] == FORMAT
    assert [json.loads(x)["status"] for x in lines[1:]] == ["done"] * 4 + ["pending"] * 2


def edit_line(
    text: str, index: int, change: dict[str, object] | None = None, **path: object
) -> str:
    lines = text.splitlines()
    data = json.loads(lines[index])
    for dotted, value in (change or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    lines[index] = json.dumps(data)
    return "\n".join(lines) + "\n"


_DELETE = object()


BAD_EDITS = [
    (0, {"format": "something-else"}, "line 1 (header): not an rs-search benchmark table"),
    (0, {"version": 99}, "version 99 was written by a newer rs-search"),
    (0, {"budget_epochs": "3"}, "budget_epochs: expected a whole number"),
    (0, {"space.fingerprint": "0000"}, "does not match the space it describes"),
    (0, {"space.spec.architecture.width": -1}, "header).space.spec"),
    (0, {"profile.device": "tpu"}, "profile.device"),
    (0, {"seconds": _DELETE}, "missing field 'seconds'"),
    (1, {"key": "../../etc/passwd"}, "line 2.key: '../../etc/passwd' is not a candidate key"),
    (1, {"candidate.recipe.dropout": 0.1}, "does not match its candidate"),
    (1, {"candidate.arch.evil": 1}, "unknown key"),
    (1, {"status": "great"}, "status: 'great'; expected pending, done, failed"),
    (1, {"curve.val_top1": [1.0, 2.0]}, "2 values; a done candidate has one per epoch"),
    (1, {"curve.val_top1": [1.0, 2.0, 101.0]}, "val_top1[2]: the number 101.0; expected 0..100"),
    (1, {"curve.train_loss": [1.0, "x", 1.0]}, "train_loss[1]: text 'x'"),
    (1, {"latency.median_ms": -1}, "median_ms: -1.0 is out of range"),
    (1, {"latency": _DELETE}, "missing field 'latency'"),
    (1, {"params": True}, "params: expected a whole number, got true"),
    (1, {"train.resumed_from_epoch": 7}, "resumed_from_epoch: 7; expected 0..3"),
]


@pytest.mark.parametrize(("line", "change", "message"), BAD_EDITS, ids=[m for *_, m in BAD_EDITS])
def test_edited_file_is_one_clear_error(
    table_text: str, line: int, change: dict[str, object], message: str
) -> None:
    with pytest.raises(TableError) as info:
        loads_table(edit_line(table_text, line, change), source="t.jsonl")
    text = str(info.value)
    assert text.startswith("t.jsonl: ") and message in text and "\n" not in text


def test_truncated_file(table_text: str) -> None:
    with pytest.raises(TableError, match="line 7 is cut off .* truncated"):
        loads_table(table_text[:-40])


def test_corrupt_and_hostile_files(table_text: str) -> None:
    cases = {
        b"": "empty file",
        b"\xff\xfe\x00garbage": "not UTF-8",
        b"[1, 2, 3]\n": "expected a JSON object",
        b"{not json\n": "line 1: not valid JSON",
        ("[" * 100_000 + "]" * 100_000 + "\n").encode(): "not valid JSON",
        b'{"format": "rs-search-bench-table", "version": NaN}\n': "not valid JSON",
        ('{"x": ' + "9" * 5000 + "}\n").encode(): "not valid JSON",
        table_text.splitlines()[0].encode() + b"\n": "not followed by any candidate line",
    }
    for raw, message in cases.items():
        with pytest.raises(TableError, match=message):
            loads_table(raw, source="t.jsonl")
    lines = table_text.splitlines()
    twice = "\n".join(lines + [lines[1]]) + "\n"
    with pytest.raises(TableError, match="line 8: candidate .* is listed twice .*line 2"):
        loads_table(twice)
    swapped = edit_line(table_text, 0, {"budget_epochs": 4})
    with pytest.raises(TableError, match="epochs: 3, but the table's budget is 4"):
        loads_table(swapped)


def test_oversized_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot read the table"):
        load_table(tmp_path / "absent.jsonl")
    with pytest.raises(TableError, match="cannot read the table"):
        load_table(tmp_path)


def test_cli_reports_a_bad_table_in_one_line(
    tmp_path: Path, table_text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(table_text[:-40])
    with pytest.raises(SystemExit) as info:
        main(["bench", "show", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: line 7 is cut off")
    assert "Traceback" not in err


def test_cli_show_prints_front_and_fidelity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    write_table(path, make_table(CURVES, LATENCIES))
    main(["bench", "show", str(path), "--eta", "2"])
    out = capsys.readouterr().out
    assert "true front (full budget)" in out and "rank agreement" in out
    assert "85.50" in out and "70.25" in out and " 7.00 " not in out  # the front, not the rest
    assert "halving (eta 2, rungs 2) prunes 0 of 3 true-front candidates" in out
