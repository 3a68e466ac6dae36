"""Golden output of `--mode inference`: tables, summaries and notes, text and Markdown.

Regenerate after an intended change with `python -m pytest tests/test_inference_golden.py --update-golden`
and review the diff. Only the CUDA target is kept here: the CPU flash kernel's buffers depend on the
thread count of the machine that runs the tests. Training goldens come when training lands.
"""

from __future__ import annotations

import pytest

SWEEP = ("--mode", "inference", "--image-size", "224,512", "--batch-size", "1,8", "--attn", "sdpa,eager")
MODELS = ("dinov3-vits16", "dinov3-convnext-tiny")


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1770000000")
    monkeypatch.setenv("COLUMNS", "120")


@pytest.mark.parametrize("fmt, name", [("table", "inference_estimate.txt"), ("markdown", "inference_estimate.md")])
def test_estimate_inference_golden(run_cli, golden, fmt, name):
    result = run_cli("estimate", *MODELS, *SWEEP, "--dtypes", "float32", "float16", "--format", fmt)
    assert result.code == 0, result.err
    golden(name, result.out)


@pytest.mark.parametrize("fmt, name", [("text", "inference_report.txt"), ("markdown", "inference_report.md")])
def test_report_inference_golden(run_cli, golden, fmt, name):
    result = run_cli("report", *MODELS, *SWEEP, "--dtype", "bfloat16,float32", "--format", fmt)
    assert result.code == 0, result.err
    golden(name, result.out)


def test_cuda_figures_say_they_are_modelled_and_cpu_ones_do_not(run_cli):
    cuda = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--image-size", "224")
    assert "CUDA figures are modelled from PyTorch's caching-allocator and kernel source, not measured" in cuda.out
    assert "cuBLAS workspace 32 MiB + cuBLASLt 1 MiB, CUDA context estimated at 500 MiB" in cuda.out
    cpu = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--device", "cpu")
    assert cpu.code == 0 and "not measured" not in cpu.out
