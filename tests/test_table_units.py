"""`report/table.py` by hand: binary sizes rounded up at each unit's edge, and tables split into parts by width
(for its mutation run: docs/testing.md, "Third scoring")."""

from __future__ import annotations

import pytest

from vramplan.report.table import binary_bytes, render_table

RULE = "\u2500"


@pytest.mark.parametrize("size, text", [
    (None, "-"), (0, "0 B"), (0.4, "1 B"), (512.3, "513 B"), (1023, "1023 B"),
    (1024, "1.00 KiB"), (1025, "1.01 KiB"), (1546, "1.51 KiB"),  # 1.0009... and 1.5097... KiB round up
    (1034, "1.01 KiB"),  # 1.0098 KiB: up to the next hundredth, not further
    (10 * 1024, "10.0 KiB"), (100 * 1024 + 1, "101 KiB"), (1048064, "1024 KiB"),  # 1023.5 KiB: four digits kept
    (2**20, "1.00 MiB"), (999 * 2**30, "999 GiB"), (5 * 2**60, "5.00 EiB"), (2**70, "1024 EiB"),  # EiB is the last
    (-2048, "-2.00 KiB"),
])
def test_binary_bytes_rounds_up_to_three_figures(size, text):
    assert binary_bytes(size) == text


HEADER = ["model", "weights", "peak", "card", "note"]
ROWS = [["m1", "1.00 KiB", "10.0 MiB", "rtx", "ok"], ["mod-2", "512 B", "1.00 GiB", "t4"]]  # a short row


def test_columns_that_do_not_fit_drop_to_a_second_table_repeating_the_first():
    # The first column claims min(5, 25 // 4) = 5; with 2 + 8 and 2 + 8 it is 25 wide, exactly the width; card's
    # 2 + 4 more do not fit: card and note go below, each part right-aligning its own numeric columns.
    assert render_table(HEADER, ROWS, width=25, title="Peaks", numeric=(1, 2, 4)).splitlines() == [
        "Peaks",
        "model   weights      peak",
        RULE * 25,
        "m1     1.00 KiB  10.0 MiB",
        "mod-2     512 B  1.00 GiB",
        "",
        "model  card  note",
        RULE * 17,
        "m1     rtx     ok",
        "mod-2  t4",
    ]


def test_one_column_under_the_width_splits_into_three_parts():
    # 5 + 10 = 15, + 10 = 25 > 24: peak starts a part (15), card joins it (21), note (27 > 24) starts a third.
    lines = render_table(HEADER, ROWS, width=24, numeric=(1, 2)).splitlines()
    assert [line for line in lines if line.startswith("model")] == ["model   weights", "model      peak  card",
                                                                    "model  note"]


def test_a_table_that_fits_is_one_table_with_headers_kept_whole():
    assert render_table(["model", "long header words", "x"], [["ab", "1 B", "2"]], width=30, numeric=(1,)) == (
        "model  long header words  x\n" + RULE * 27 + "\nab                   1 B  2\n")
    assert render_table(["model", "size"], [["a b", "1 B"]], numeric=(1,)) == "model  size\n" + RULE * 11 + "\na b     1 B\n"


def test_a_table_that_wraps_its_first_column_keeps_every_cell_as_typed():
    # 16 + 2 + 8 + 2 + 8 = 36: one table; the model id folds within the first column, sizes keep their width,
    # and cells are plain text (no rich markup or emoji codes); the short second row leaves `peak` empty.
    assert render_table(["model id", "size", "peak"], [["org/a-very-long-model-name-here", "1.00 KiB", "22.0 MiB"],
                                                      ["[b]m[/b] :smile:", "1 B"]],
                        width=36, title="Peaks", numeric=(1, 2)).splitlines() == [
        "Peaks",
        "model id              size      peak",
        RULE * 36,
        "org/a-very-long-  1.00 KiB  22.0 MiB",
        "model-name-here",
        "[b]m[/b] :smile:       1 B",
    ]


def test_column_widths_at_the_edges():
    assert render_table([], []) == "\n"
    # A column with no header word and no cell needs no width: 1 + 2 + 0 + 2 + 1 = 6 fits in 6.
    assert render_table(["m", "", "c"], [["m"]], width=6) == "m    c\n" + RULE * 6 + "\nm\n"
    # The first column claims 25 // 4 = 6 (not 6.25): 6 + 9 + 10 = 25 is one table.
    one = render_table(["long-first", "col-one", "col-two!"], [["x", "1", "2"]], width=25)
    assert sum(line.startswith(RULE) for line in one.splitlines()) == 1
    # A column too wide for any width stays beside the first rather than alone in a part of its own.
    assert render_table(["m", "very-long-header-word"], [["a", "x"]], width=10) == (
        "   very-lo\n   ng-head\nm  er-word\n" + RULE * 10 + "\na  x\n")
