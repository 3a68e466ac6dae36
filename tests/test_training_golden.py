"""Golden output of `--mode train`: the per-model training tables and the report summary, text and Markdown.

Regenerate after an intended change with `python -m pytest tests/test_training_golden.py --update-golden`
and review the diff. Two small local backbones (a DINOv3 ViT and a DINOv3 ConvNeXt, trained through the
linear probe), the CUDA target only (the CPU flash kernel's buffers depend on the machine's thread count),
text at 80 columns, where the 9-column training table drops its last columns to a second part.
"""

from __future__ import annotations

import json

import pytest

VIT = {"model_type": "dinov3_vit", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
       "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16}
CONVNEXT = {"model_type": "dinov3_convnext", "depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]}
SWEEP = ("--mode", "train", "--image-size", "64,96x128", "--batch-size", "1,4", "--trains", "probe,lora,full",
         "--lora-rank", "4", "--num-labels", "10")


@pytest.fixture(autouse=True)
def _models(monkeypatch, tmp_path):
    """The two configs as ./vit-tiny and ./convnext-tiny, a fixed clock and 80 columns."""
    for name, config in (("vit-tiny", VIT), ("convnext-tiny", CONVNEXT)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1770000000")
    monkeypatch.setenv("COLUMNS", "80")


@pytest.mark.parametrize("fmt, name", [("table", "training_estimate.txt"), ("markdown", "training_estimate.md")])
def test_estimate_training_golden(run_cli, golden, fmt, name):
    """The per-model table: two precisions make two tables; amp-bf16 and bf16 weights differ."""
    result = run_cli("estimate", "vit-tiny", *SWEEP, "--precision", "amp-bf16,bf16", "--format", fmt)
    assert result.code == 0, result.err
    golden(name, result.out)


@pytest.mark.parametrize("fmt, name", [("text", "training_report.txt"), ("markdown", "training_report.md")])
def test_report_training_golden(run_cli, golden, fmt, name):
    """The family summary (a row per model, what trains and batch, a column per input size), then each model."""
    result = run_cli("report", "vit-tiny", "convnext-tiny", *SWEEP, "--precision", "amp-bf16", "--format", fmt)
    assert result.code == 0, result.err
    golden(name, result.out)
