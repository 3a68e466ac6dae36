"""Aligned tables within a width, sizes in binary units: the helper every table new in vramplan uses.

accelerate's tables (the weights table, the seed report) keep accelerate's labels, where "1 GB" is
2^30 bytes; tables of our own say what they mean: KiB, MiB, GiB, TiB. Use::

    render_table(["model", "peak"], [["vits16", binary_bytes(123456789)]], width=100, numeric=(1,))

Rendered by rich without colour, so the text is the same on a terminal, in a pipe and in a file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_WIDTH = 100
ERROR_CELL = "error (see below)"
UNITS_NOTE = "1 GB in accelerate's tables is 2^30 bytes (a GiB); 1 MB is 2^20 bytes (a MiB)."
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def binary_bytes(size: float | None) -> str:
    """Three significant figures, rounded up (never under the size): `512 B`, `1.51 KiB`, `579 MiB`, `13.1 GiB`.

    `-` for None. Sizes of 1000 units or more keep their four digits (`1018 MiB`) rather than `0.99 GiB`.
    """
    if size is None:
        return "-"
    value, unit = float(size), 0
    while abs(value) >= 1024 and unit < len(_BINARY_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{math.ceil(value)} B"
    decimals = max(0, 2 - int(math.floor(math.log10(abs(value))))) if value else 0
    scale = 10**decimals
    return f"{math.ceil(value * scale - 1e-9) / scale:.{decimals}f} {_BINARY_UNITS[unit]}"


def render_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int = DEFAULT_WIDTH,
    title: str | None = None,
    numeric: Sequence[int] = (),
) -> str:
    """An aligned table at most `width` columns wide: text columns left, `numeric` columns right.

    Long cells of the first column wrap (model ids), headers wrap at spaces; other cells keep to one
    line. Columns that do not fit beside the others drop to a second table below (a third...), each
    repeating the first column, so no number is ever cut.
    """
    groups = _column_groups(header, rows, width)
    if len(groups) == 1:
        return _render(header, rows, width=width, title=title, numeric=numeric)
    parts = []
    for number, group in enumerate(groups):
        parts.append(_render([header[i] for i in group], [[row[i] if i < len(row) else "" for i in group] for row in rows],
                             width=width, title=title if number == 0 else None,
                             numeric=[group.index(i) for i in numeric if i in group]))
    return "\n".join(parts)


_GAP = 2  # columns between two columns of a rendered table
_FIRST_SHARE = 4  # the first column may wrap (model ids): it claims at most 1/4 of the width


def _column_groups(header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[list[int]]:
    """The columns of each stacked part: the first column, then as many of the others as fit on one line."""

    def needed(index: int) -> int:
        cells = max((len(str(row[index])) for row in rows if index < len(row)), default=0)
        words = max((len(word) for word in str(header[index]).split()), default=0)
        return max(cells, words)

    first = min(needed(0), width // _FIRST_SHARE) if header else 0
    groups: list[list[int]] = [[0]]
    used = first
    for index in range(1, len(header)):
        if used + _GAP + needed(index) > width and len(groups[-1]) > 1:
            groups.append([0])
            used = first
        groups[-1].append(index)
        used += _GAP + needed(index)
    return groups


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], *, width: int, title: str | None,
            numeric: Sequence[int]) -> str:
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left",
                  padding=(0, 1), collapse_padding=True)
    for index, name in enumerate(header):  # cells keep their width; headers and the first column may wrap
        longest = max((len(str(row[index])) for row in rows if index < len(row)), default=0)
        table.add_column(name, justify="right" if index in numeric else "left", overflow="fold",
                         min_width=longest if index else None)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False, highlight=False,
                      emoji=False, markup=False, legacy_windows=False, soft_wrap=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"
