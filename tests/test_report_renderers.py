"""charts.py, fit_text.py and html.py on a run built by hand (tests/handmade_run.py): every bar, point, cell and
coordinate follows from its literals (for their mutation runs: docs/testing.md, "Third scoring")."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from handmade_run import BIG, GiB, MiB, ODD, OLD, handmade_run

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
    assert by_input_size(run) == [
        Series("org/a", (("224px", 662 * MiB), ("512px", 913 * MiB), ("512x256px", 1210 * MiB))),
        Series(ODD, (("224px", 3072 * MiB), ("512px", 4096 * MiB))),
    ]
    # By batch: 224px, bfloat16, sdpa; the odd model has one batch, so no line.
    assert by_batch(run) == [Series("org/a", (("1", 662 * MiB), ("2", 710 * MiB)))]


def test_fit_matrix_text():
    run = handmade_run()
    assert fit_sizes(run) == [(224, 224), (512, 256), (1024, 1024)]
    assert [size_title(k) for k in ((224, 224), (512, 256), 128, ("batch", 4))] == [
        "224px", "512x256px", "128 tokens", "batch 4"]
    assert fit_title(run) == "Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom)"
    # The last size's cells (1024px): org/a's big cell says bfloat16; no cell on old.
    assert precision_rows(run) == [["org/a", "bfloat16", "-"], [ODD, "-", "-"], ["org/w", "-", "-"],
                                   ["org/f", "-", "-"], ["org/g", "-", "-"]]
    assert render_fit_text(run) == TEXT


TEXT = '''Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom):
  224px
Model          big  old
-----------------------
org/a           12    3
org/<b>&"x|y"    7    -
org/w            -    -
org/f            -    -
org/g            -    -

Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom):
  512x256px
Model                        big    old
---------------------------------------
org/a          0 (needs 20.0 GB)  error
org/<b>&"x|y"                  8      -
org/w                          -      -
org/f                          -      -
org/g                          -      -

Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom):
  1024px
Model          big  old
-----------------------
org/a            1    -
org/<b>&"x|y"    -    -
org/w            -    -
org/f            -    -
org/g            -    -

Least lossy precision whose batch 1 fits (1024px)
Model               big  old
----------------------------
org/a          bfloat16    -
org/<b>&"x|y"         -    -
org/w                 -    -
org/f                 -    -
org/g                 -    -

Fits: the simulated peak on the card (allocator segments, CUDA context and
workspaces included) is at most the card's memory as the driver reports it, less
the headroom. bfloat16, or float16 on cards without it (T4, V100). Cards: big =
Big Card, 16.0 GB; old = Old <Card>, 8.0 GB.

Errors:
org/a on old: broke
org/f: could not build: <bad>
org/g: gone
'''


def test_fit_matrix_markdown():
    run = handmade_run()
    rows = lambda *cells: "".join(f"| {' | '.join(c)} |\n" for c in cells)  # noqa: E731
    others = (["org/w", "-", "-"], ["org/f", "-", "-"], ["org/g", "-", "-"])
    title = "### Largest batch that fits (inference, bfloat16 or float16, sdpa, 12.5% headroom)"
    head = "\n\n| Model | big | old |\n|---|---|---|\n"
    odd = 'org/<b>&"x\\|y"'  # the cell separator escaped
    assert render_fit_markdown(run) == (
        f"{title}: 224px{head}" + rows(["org/a", "12", "3"], [odd, "7", "-"], *others) + "\n"
        f"{title}: 512x256px{head}" + rows(["org/a", "0 (needs 20.0 GB)", "error"], [odd, "8", "-"], *others) + "\n"
        f"{title}: 1024px{head}" + rows(["org/a", "1", "-"], [odd, "-", "-"], *others) + "\n"
        + fit_legend(run) + "\n")


def test_fit_cells_of_a_square_search_and_a_stated_dtype():
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
    assert render_gpus_json([OLD]).startswith('{\n  "gpus": [\n    {\n      "name": "old",\n')


def test_html_page_golden(golden):
    golden("handmade_report.html", render_html(handmade_run(), "Fam <ily>"))


def test_html_bars_lines_and_fit_classes():
    page = render_html(handmade_run())
    assert page.count('<title>VRAM Requirements (vramplan estimate)</title>') == 1
    # Bars: 560 px for the largest total (3 GiB); org/a's 100 MiB of parameters is 560 * 100 / 3072 = 18.2 px.
    assert '<rect x="360.0" y="33" width="18.2" height="18" fill="#4e79a7">' in page
    assert '<rect x="360.0" y="59" width="560.0" height="18" fill="#4e79a7">' in page
    assert '<text x="926.0" y="71" font-size="11">3.0 GB</text>' in page  # 360 + 560 + 6
    # Lines against size: three sizes over 590 px, 320 px for the highest peak (4 GiB): 662 MiB is 51.7 px up.
    assert '<polyline points="80.0,288.3 375.0,268.7 670.0,245.5" fill="none" stroke="#4e79a7"' in page
    assert '<polyline points="80.0,100.0 375.0,20.0" fill="none" stroke="#f28e2b"' in page
    assert '<rect x="682" y="39" width="10" height="10" fill="#f28e2b"></rect><text x="696" y="48"' in page
    tables = re.findall(r'<table class="fit-matrix">(.*?)</table>', page)
    cells = [re.findall(r'<td class="(fit-[a-z]+)">([^<]*)</td>', t) for t in tables]
    empty = [("fit-error", "-")] * 6  # org/w, org/f and org/g have no cell
    assert cells == [
        [("fit-many", "12"), ("fit-few", "3"), ("fit-few", "7"), ("fit-error", "-"), *empty],
        [("fit-none", "0 (needs 20.0 GB)"), ("fit-error", "error"), ("fit-many", "8"), ("fit-error", "-"), *empty],
        [("fit-few", "1"), ("fit-error", "-"), ("fit-error", "-"), ("fit-error", "-"), *empty],
    ]
    assert "<h3>Least lossy precision whose batch 1 fits (1024px)</h3>" in page
    assert "Old &lt;Card&gt;" in page and "<Card>" not in page
    assert ('<ul class="errors note"><li><b>org/f</b>: could not build: &lt;bad&gt;</li><li><b>org/g</b>: gone</li>'
            "</ul>") in page
    no_fit = render_html(handmade_run(fit=False))
    assert no_fit.endswith("</table>\n</body></html>\n") and 'id="fit"' not in no_fit
    # Each case by category: a table per model with cases, its title escaped.
    cases = no_fit.split('<h2 id="cases">')[1]
    assert "<h3>Inference peak for `org/&lt;b&gt;&amp;&quot;x|y&quot;` (simulated h100-sxm)</h3>" in cases
    assert cases.count('<table class="cases">') == 2


def test_html_of_a_run_with_nothing_to_chart():
    run = handmade_run()
    failed = replace(run, models=run.models[3:], inference=None, fit=None)
    body = render_html(failed).split("<body>\n")[1]
    assert body == (
        "<h1>VRAM Requirements (vramplan estimate)</h1>\n"
        '<p class="meta">Generated 2026-11-22T09:00:00+00:00 &middot; 2 models</p>\n'
        '<h2 id="summary">Summary (Total Size to load weights)</h2><table class="summary"><thead><tr><th>Model</th>'
        "<th>float32</th><th>status</th></tr></thead><tbody><tr><td>org/f</td><td>-</td><td>error</td></tr><tr>"
        "<td>org/g</td><td>-</td><td>error</td></tr></tbody></table>"
        '<ul class="errors note"><li><b>org/f</b>: could not build: &lt;bad&gt;</li><li><b>org/g</b>: gone</li></ul>\n'
        "</body></html>\n")
    fine = render_html(replace(run, models=run.models[:3]))
    assert "errors note" not in fine and '</p>\n<h2 id="breakdown">' in fine  # the legend, then the bars


def test_a_line_chart_grows_for_many_models():
    run = handmade_run()
    many = replace(run, models=tuple(replace(run.models[1], model=f"m{i}") for i in range(23)), fit=None)
    page = render_html(many)
    # 20 px above the legend, 16 px a model: 40 + 23 * 16 = 408 > 380 (the plot's own height)
    assert ('<svg class="chart by-size" role="img" aria-label="Peak on the card against input size" width="1000" '
            'height="408"') in page
    assert '<text x="696" y="384" font-size="10">m22</text>' in page  # 20 + 12 + 22 * 16


def test_charts_of_cpu_cases_buffers_and_repeated_sizes():
    from handmade_run import case, measured

    from vramplan.measure.activations import InferenceCase, InferenceMeasurement
    from vramplan.results import ModelResult

    cpu = InferenceMeasurement(case=InferenceCase(batch_size=1, dtype="float32", attn="sdpa", device="cpu",
                                                  image_size=(224, 224)),
                               parameter_bytes=MiB, buffer_bytes=2 * MiB, activation_bytes=3 * MiB, temp_bytes=0,
                               peak_allocated_bytes=6 * MiB, peak_device_bytes=6 * MiB, overheads=())
    run = handmade_run()
    first = run.models[0]
    models = (
        run.models[3],  # failed, no bar, no line: the models after it still count
        ModelResult(model="cpu", reference="cpu", library="timm", source=None, status="ok", inference=(cpu,)),
        replace(first, inference=(measured(case(224), buffers=3 * MiB), measured(case(224)),  # the same x twice
                                  measured(case(1024, 2), activ=GiB), *first.inference[1:])),
    )
    bars = breakdowns(replace(run, models=models))
    assert [b.model for b in bars] == ["cpu", "org/a"]
    assert dict(bars[0].parts) == {"Parameter": MiB, "Buffer": 2 * MiB, "Gradient": 0, "Optstate": 0,
                                   "Activation": 3 * MiB, "Temp": 0, "allocator cache": 0, "CUDA context": 0}
    assert dict(bars[1].parts)["Buffer"] == 3 * MiB and bars[0].caption == "224px, batch 1, float32"
    # 224px once (the first), 1024px left out (batch 2 only), then the sizes of batch 1.
    (line,) = by_input_size(replace(run, models=models))
    assert line == Series("org/a", (("224px", 663 * MiB), ("512px", 913 * MiB), ("512x256px", 1210 * MiB)))
