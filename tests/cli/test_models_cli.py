"""``rs-search models``: the family table shows every published variant."""

from __future__ import annotations

import pytest

from rs_search.cli.main import main

# Reference parameter counts (M) of resnetrs50..420, 1000 classes.
# Source: ../shared/reference/resnet_rs.yaml `models.*.params_m` (source "derived": counted from the
# official architecture, timm's counts agree; the official README does not publish them).
PARAMS_M = {
    "resnetrs50": "35.69",
    "resnetrs101": "63.62",
    "resnetrs152": "86.62",
    "resnetrs200": "93.21",
    "resnetrs270": "129.86",
    "resnetrs350": "163.96",
    "resnetrs420": "191.89",
}


def test_models_table_lists_the_family(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        main(["models"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "resnetrs" in line and "│" in line]
    assert [line.split("│")[1].strip() for line in rows] == list(PARAMS_M)
    for row in rows:
        name = row.split("│")[1].strip()
        assert PARAMS_M[name] in row
    assert (
        "4-44-87-4" in out and "127.9" in out and "84.4" in out
    )  # RS-420: layout, GFLOPs at 320, top-1
    assert (
        out.count("│ 320 │") == 2 and out.count("│ 256 │") == 4
    )  # RS-350/420 at 320; RS-152..350 at 256
