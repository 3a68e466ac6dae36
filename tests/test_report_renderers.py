"""charts.py, fit_text.py and html.py on a run built by hand (tests/handmade_run.py): every bar, point, cell and
coordinate follows from its literals (for their mutation runs: docs/testing.md, "Third scoring")."""

from __future__ import annotations

import json
import re

from handmade_run import BIG, MiB, ODD, OLD, handmade_run

from vramplan.report.charts import Breakdown, Series, breakdowns, by_batch, by_input_size, used_categories
from vramplan.report.fit_text import (
    cell_text, fit_legend, fit_sizes, fit_title, precision_rows, render_fit_markdown, render_fit_text,
    render_gpus_json, render_gpus_table, size_title,
)
from vramplan.report.html import render_html

ZERO = ("Buffer", 0), ("Gradient", 0), ("Optstate", 0)


def test_breakdowns_take_each_models_first_simulated_case_or_its_weights():
    assert breakdowns(handmade_run()) == [
        Breakdown("org/a", (("Parameter", 100 * MiB), *ZERO, ("Activation", 50 * MiB), ("Temp", 10 * MiB),
                            ("allocator cache", 2 * MiB), ("CUDA context", 500 * MiB)), "224px, batch 1, bfloat16"),
        Breakdown(ODD, (("Parameter", 3072 * MiB), *ZERO, ("Activation", 0), ("Temp", 0), ("allocator cache", 0),
                        ("CUDA context", 0)), "224px, batch 1, bfloat16"),
        Breakdown("org/w", (("Parameter", 300 * MiB), *ZERO, ("Activation", 0), ("Temp", 0), ("allocator cache", 0),
                            ("CUDA context", 0)), "weights, float32"),
    ]  # org/f: no case, no weights, no bar
    bars = breakdowns(handmade_run())
    assert bars[0].total == 662 * MiB
    assert used_categories(bars) == ["Parameter", "Activation", "Temp", "allocator cache", "CUDA context"]
    assert used_categories(bars[1:]) == ["Parameter"]


def test_lines_keep_the_first_batch_dtype_and_attention_or_the_first_size():
    run = handmade_run()
    # By size: batch 1, bfloat16, sdpa (the failed 1024px case and the float16 one are left out).
    assert by_input_size(run) == [Series("org/a", (("224px", 662 * MiB), ("512px", 913 * MiB),
                                                   ("512x256px", 1210 * MiB)))]
    # By batch: 224px, bfloat16, sdpa; the odd model has one point, so no line.
    assert by_batch(run) == [Series("org/a", (("1", 662 * MiB), ("2", 710 * MiB)))]


def test_fit_matrix_text():
    run = handmade_run()
    assert fit_sizes(run) == [(224, 224), (512, 256)]
    assert [size_title(k) for k in ((224, 224), (512, 256), 128, ("batch", 4))] == [
        "224px", "512x256px", "128 tokens", "batch 4"]
    assert fit_title(run) == "Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom)"
    assert precision_rows(run) == [["org/a", "none", "-"], [ODD, "-", "-"], ["org/w", "-", "-"], ["org/f", "-", "-"]]
    assert render_fit_text(run) == TEXT


TEXT = '''Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom): 224px
Model        big  old
---------------------
org/a         12    3
org/<b>&"x"    7    -
org/w          -    -
org/f          -    -

Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom): 512x256px
Model                      big    old
-------------------------------------
org/a        0 (needs 20.0 GB)  error
org/<b>&"x"                  -      -
org/w                        -      -
org/f                        -      -

Least lossy precision whose batch 1 fits (512x256px)
Model         big  old
----------------------
org/a        none    -
org/<b>&"x"     -    -
org/w           -    -
org/f           -    -

Fits: the simulated peak on the card (allocator segments, CUDA context and
workspaces included) is at most the card's memory as the driver reports it, less
the headroom. bfloat16, or float16 on cards without it (T4, V100). Cards: big =
Big Card, 16.0 GB; old = Old <Card>, 8.0 GB.

Errors:
org/a on old: broke
org/f: could not build: <bad>
'''


def test_fit_matrix_markdown():
    assert render_fit_markdown(handmade_run()) == (
        "### Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom): 224px\n\n"
        "| Model | big | old |\n|---|---|---|\n| org/a | 12 | 3 |\n| org/<b>&\"x\" | 7 | - |\n| org/w | - | - |\n"
        "| org/f | - | - |\n\n"
        "### Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom): 512x256px\n\n"
        "| Model | big | old |\n|---|---|---|\n| org/a | 0 (needs 20.0 GB) | error |\n| org/<b>&\"x\" | - | - |\n"
        "| org/w | - | - |\n| org/f | - | - |\n\n" + fit_legend(handmade_run()) + "\n")


def test_fit_cells_of_a_square_search_and_a_stated_dtype():
    from dataclasses import replace

    from handmade_run import cell

    assert cell_text(None) == "-"
    assert cell_text(cell(BIG, 224, 2, 5 * 2**30, largest_image_size=1024)) == "1024px"
    assert cell_text(cell(BIG, 224, 0, 5 * 2**30, largest_image_size=0)) == "none (5.0 GB)"
    run = handmade_run()
    square = replace(run, fit=replace(run.fit, max_image_size=True, batch_size=4, dtype="float16",
                                      headroom_percent=0))
    assert fit_sizes(square) == [("batch", 4)] and precision_rows(square) == []
    assert fit_title(square) == "Largest square input that fits (inference, float16, sdpa)"
    assert "float16 on cards without it" not in fit_legend(square)
    assert fit_sizes(replace(run, fit=None)) == []


def test_gpu_catalogue_table_and_json():
    assert render_gpus_table([BIG, OLD]) == (
        "GPU targets (memory as the driver reports it; sources: vramplan/plan/gpus.json)\n"
        "name   memory  vendor  arch  SMs  bf16  fp8  aliases\n"
        "---------------------------------------------------------\n"
        "big   16.0 GB  nvidia   9.0  100   yes  yes  big-card, bc\n"
        "old    8.0 GB  nvidia   7.5   40    no   no\n")
    assert [g["name"] for g in json.loads(render_gpus_json([BIG, OLD]))["gpus"]] == ["big", "old"]


def test_html_page_golden(golden):
    golden("handmade_report.html", render_html(handmade_run(), "Fam <ily>"))


def test_html_bars_lines_and_fit_classes():
    page = render_html(handmade_run())
    assert page.count('<title>VRAM Requirements (vramplan estimate)</title>') == 1
    # Bars: 560 px for the largest total (3 GiB); org/a's 100 MiB of parameters is 560 * 100 / 3072 = 18.2 px.
    assert '<rect x="360.0" y="33" width="18.2" height="18" fill="#4e79a7">' in page
    assert '<rect x="360.0" y="59" width="560.0" height="18" fill="#4e79a7">' in page
    assert '<text x="926.0" y="71" font-size="11">3.0 GB</text>' in page  # 360 + 560 + 6
    # Lines: three sizes over 590 px; 662 MiB of a 1210 MiB peak is 320 * 662 / 1210 = 175.1 px above the axis.
    assert '<polyline points="80.0,164.9 375.0,98.5 670.0,20.0"' in page
    cells = re.findall(r'<td class="(fit-[a-z]+)">([^<]*)</td>', page)
    assert cells == [("fit-many", "12"), ("fit-few", "3"), ("fit-few", "7"), ("fit-error", "-"),
                     ("fit-error", "-"), ("fit-error", "-"), ("fit-error", "-"), ("fit-error", "-"),
                     ("fit-none", "0 (needs 20.0 GB)"), ("fit-error", "error"), ("fit-error", "-"), ("fit-error", "-"),
                     ("fit-error", "-"), ("fit-error", "-"), ("fit-error", "-"), ("fit-error", "-")]
    assert "Old &lt;Card&gt;" in page and "<Card>" not in page
    no_fit = render_html(handmade_run(fit=False))
    assert 'id="fit"' not in no_fit and 'id="by-size"' in no_fit
