"""Golden output of `--mode inference`: tables, summaries and notes, text and Markdown.

Regenerate after an intended change with `python -m pytest tests/test_inference_golden.py --update-golden`
and review the diff. Only the CUDA target is kept here: the CPU flash kernel's buffers depend on the
thread count of the machine that runs the tests. Training goldens come when training lands.
"""

from __future__ import annotations

import json

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
    said = " ".join(cuda.out.split())  # the note is wrapped to the terminal's width
    assert "CUDA figures are modelled from PyTorch's caching-allocator and kernel source, not measured" in said
    assert "cuBLAS workspace 32 MiB + cuBLASLt 1 MiB, CUDA context estimated at 500 MiB" in said
    assert "cuDNN convolution workspaces not included" in said
    cpu = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--device", "cpu")
    assert cpu.code == 0 and "not measured" not in cpu.out


TINY_BERT = {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
             "num_hidden_layers": 2, "vocab_size": 500, "max_position_embeddings": 64}


@pytest.mark.parametrize("fmt, name", [("text", "inference_text_model.txt"), ("markdown", "inference_text_model.md"),
                                       ("csv", "inference_text_model.csv"), ("json", "inference_text_model.json")])
def test_text_model_with_failed_cases_and_a_failed_model_golden(run_cli, golden, monkeypatch, tmp_path, fmt, name):
    """Token inputs, dtype and attention in the column labels, a case that fails (flash in float32), a model that fails."""
    (tmp_path / "bert-tiny").mkdir()
    (tmp_path / "bert-tiny" / "config.json").write_text(json.dumps(TINY_BERT))
    monkeypatch.chdir(tmp_path)
    result = run_cli("report", "bert-tiny", "./missing", "--mode", "inference", "--seq-len", "16,32",
                     "--attn", "sdpa,flash", "--dtype", "bfloat16,float32", "--format", fmt)
    assert result.code == 1
    golden(name, result.out)


@pytest.mark.parametrize("fmt, name", [("text", "inference_cpu.txt"), ("markdown", "inference_cpu.md"),
                                       ("csv", "inference_cpu.csv")])
def test_cpu_target_at_a_non_square_size_golden(run_cli, golden, fmt, name):
    """CPU target (ConvNeXt: no attention, so no thread-dependent kernel buffers), HEIGHTxWIDTH input."""
    result = run_cli("report", "dinov3-convnext-tiny", "--mode", "inference", "--image-size", "64x96,96",
                     "--device", "cpu", "--dtype", "float32", "--attn", "eager", "--format", fmt)
    assert result.code == 0, result.err
    golden(name, result.out)


def test_weights_csv_golden(run_cli, golden):
    """The weights CSV (found weak by mutation testing): fractional int4 bytes, N/A training, a failed model."""
    result = run_cli("estimate", "dinov3-vits16", "./missing", "--format", "csv")
    assert result.code == 1
    golden("weights.csv", result.out)
