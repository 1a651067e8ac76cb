"""``rs-search bench retime``: a table's latencies measured again, its curves kept."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rs_search.bench.table import load_table, write_table
from rs_search.cli.main import main

TABLE = Path(__file__).parent / "data" / "tiny-digits-9ep.jsonl"
PLANTED_MS = 9999.0  # far above any real figure of these nets (a few ms per batch of 16)


def test_retime_replaces_every_latency_and_keeps_the_curves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = load_table(TABLE)
    planted = replace(
        table,
        entries=tuple(
            replace(e, latency=replace(e.latency, median_ms=PLANTED_MS, p90_ms=PLANTED_MS))
            if e.latency is not None
            else e
            for e in table.entries
        ),
    )
    source = tmp_path / "planted.jsonl"
    write_table(source, planted)
    out = tmp_path / "retimed.jsonl"
    try:
        main(["bench", "retime", str(source), "--out", str(out)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    printed = capsys.readouterr().out
    assert code == 0, printed
    retimed = load_table(out)
    assert retimed.header.latency_retimed_at is not None and table.header.latency_retimed_at is None
    assert len(retimed.done) == len(table.done) > 0
    archs = {e.candidate.arch.key() for e in table.done}
    assert printed.count(" ms (p90 ") == len(archs)  # each architecture timed once
    for before, after in zip(table.entries, retimed.entries, strict=True):
        assert after.curve == before.curve and after.candidate == before.candidate
        if after.status == "done":
            assert after.latency is not None and 0 < after.latency.median_ms < PLANTED_MS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".retime-")]
