"""The HTML report and --plot: self-contained, every input string escaped, the same charts in matplotlib."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

BAD = '<img src="http://127.0.0.1:9/leak" onerror="alert(1)">'


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A small report with inference, two cards' fit, and a model whose name is HTML."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from vramplan.cli import main

    out = tmp_path_factory.mktemp("html") / "report.html"
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(["report", "dinov3-vits16", "dinov3-convnext-tiny", BAD, "--mode", "inference",
                     "--image-size", "224,256", "--batch-size", "1,2", "--gpu", "rtx4090", "--gpu", "t4", "--fit",
                     "--format", "html", "-o", str(out)])
    assert code == 1  # the HTML-named model fails; the others do not stop
    assert "was not found" in err.getvalue()
    return out.read_text(encoding="utf-8")


def test_page_is_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<(script|link|iframe|object|embed|img)\b", page, re.I)
    assert not re.search(r"<[^>]*\b(src|href)\s*=", page, re.I)  # no attribute that loads anything
    in_tags = re.findall(r"<[^>]*?(https?://[^\s\"'>]+)", page)  # URLs in markup (text ones are escaped input)
    assert in_tags == ["http://www.w3.org/2000/svg"] * page.count("<svg ")  # the SVG namespace, never fetched
    assert "default-src 'none'" in page  # and the browser is told to fetch nothing


def test_input_strings_are_escaped(page):
    assert BAD not in page
    assert "&lt;img src=&quot;http://127.0.0.1:9/leak&quot; onerror=&quot;alert(1)&quot;&gt;" in page


def test_page_has_summary_charts_and_fit_matrix(page):
    for section in ('id="summary"', 'class="chart breakdown"', 'class="chart by-size"', 'class="chart by-batch"',
                    'class="fit-matrix"', 'class="fit-precision"'):
        assert section in page
    assert page.count("facebook/dinov3-vits16-pretrain-lvd1689m") >= 5  # summary, bar, two lines, fit
    assert "NVIDIA GeForce RTX 4090" in page  # the simulated card is named
    assert "fit-many" in page


def test_estimate_html_without_inference(run_cli, tmp_path):
    result = run_cli("estimate", "dinov3-vits16", "--format", "html", "-o", str(tmp_path / "e.html"))
    assert result.code == 0, result.err
    text = (tmp_path / "e.html").read_text()
    assert 'class="chart breakdown"' in text and "by-size" not in text and 'id="fit"' not in text


@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_plot_files(run_cli, tmp_path, suffix):
    path = tmp_path / f"charts.{suffix}"
    result = run_cli("estimate", "dinov3-vits16", "dinov3-convnext-tiny", "--mode", "inference",
                     "--image-size", "224,256", "--plot", str(path))
    assert result.code == 0, result.err
    data = path.read_bytes()
    if suffix == "png":
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    else:
        root = ET.fromstring(data)
        assert root.tag.endswith("svg")
        assert b"facebook/dinov3-convnext-tiny-pretrain-lvd1689m" in data and b"Peak memory by category" in data


def test_plot_refuses_other_formats(run_cli, tmp_path):
    result = run_cli("estimate", "dinov3-vits16", "--plot", str(tmp_path / "x.jpg"))
    assert result.code == 2 and "give a .png or .svg file" in result.err


def test_html_report_does_not_import_matplotlib(tmp_path):
    """matplotlib (and the Pillow it pulls in) is imported for --plot only, not for the HTML page."""
    import subprocess
    import sys

    code = ("import sys; from vramplan.cli import main; "
            f"code = main(['estimate', 'dinov3-vits16', '--format', 'html', '-o', {str(tmp_path / 'e.html')!r}]); "
            "assert code == 0; print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_a_training_report_over_gpus_shows_each_case_and_each_strategys_busiest_rank(run_cli):
    from vramplan.report.table import binary_bytes
    from vramplan.report.training import format_binary

    flags = ("report", "dinov3-vits16", "--mode", "train", "--gpus", "2", "--strategy", "ddp,fsdp", "-q")
    page = run_cli(*flags, "--format", "html").out
    entries = run_cli(*flags, "--format", "json").json()["models"][0]["training"]
    one_gpu = run_cli("report", "dinov3-vits16", "--mode", "train", "-q", "--format", "json").json()
    single = one_gpu["models"][0]["training"][0]
    cases = page.split('<h2 id="cases">')[1].split("<h2")[0]
    assert "2 steps, simulated cuda, amp-bf16, adamw, sdpa" in cases
    assert f"<td>{format_binary(single['peak_device_bytes'])}</td>" in cases
    plans = page.split('<h2 id="multigpu">')[1]
    assert ("<h3>Training `facebook/dinov3-vits16-pretrain-lvd1689m` 224px b1 full on 2 GPUs per node, "
            "busiest rank</h3>"
            in plans)
    rows = {m[0]: m[1:] for m in re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", plans)}
    assert rows["per GPU"] == tuple(binary_bytes(e["per_gpu_peak_bytes"]) for e in entries)
    assert "busiest rank (Weights + Grads + Optim + Comm + Activ)" in plans
