"""Golden output of the multi-GPU tables: `vramplan plan` (text, JSON), `estimate --mode train --gpus N` (text,
CSV, Markdown) and the inference split over cards with a CPU row (`--mode inference --gpus 2`).

Written for the mutation run of `report/multigpu.py` (docs/testing.md): before these, `render_plans_text`,
`plan_rows`, `parallel_csv_rows`, `parallel_notes` and `split_rows` could be changed unnoticed. Regenerate after
an intended change with `python -m pytest tests/test_multigpu_golden.py --update-golden` and review the diff.
A small local DINOv3 ViT on the CUDA target; 2 GPUs x 2 nodes for `plan`, text at 80 columns.
"""

from __future__ import annotations

import json

import pytest

VIT = {"model_type": "dinov3_vit", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
       "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16}
TRAIN = ("--mode", "train", "--gpus", "2", "--strategy", "ddp,zero2+optimizer", "--image-size", "64",
         "--batch-size", "2,4", "--trains", "full,probe")


@pytest.fixture(autouse=True)
def _model(monkeypatch, tmp_path):
    """The config as ./vit-tiny, a fixed clock and 80 columns."""
    (tmp_path / "vit-tiny").mkdir()
    (tmp_path / "vit-tiny" / "config.json").write_text(json.dumps(VIT))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1770000000")
    monkeypatch.setenv("COLUMNS", "80")


@pytest.mark.parametrize("fmt, name", [("table", "multigpu_plan.txt"), ("json", "multigpu_plan.json")])
def test_plan_golden(capsys, golden, fmt, name):
    """Three strategies over 2 GPUs x 2 nodes, each with an offload or none; a bad model beside them.

    `plan` writes through rich's console, bound to the real stdout: read with capsys, not `run_cli`.
    """
    from vramplan.cli import main

    code = main(["plan", "vit-tiny", "no-such-dir/", "--gpus", "2", "--nodes", "2",
                 "--strategy", "ddp,zero3+optimizer,fsdp+params", "--image-size", "64", "--batch-size", "2",
                 "--format", fmt])
    out = capsys.readouterr().out
    assert code != 0  # the bad model
    assert "vit-tiny" in out
    golden(name, out)


@pytest.mark.parametrize("fmt, name", [("table", "multigpu_train.txt"), ("csv", "multigpu_train.csv"),
                                       ("markdown", "multigpu_train.md")])
def test_estimate_train_gpus_golden(run_cli, golden, fmt, name):
    """Four training cases (full and probe, batch 2 and 4), two strategies each."""
    result = run_cli("estimate", "vit-tiny", *TRAIN, "--format", fmt)
    assert result.code == 0, result.err
    golden(name, result.out)


def test_inference_split_with_a_cpu_row_golden(run_cli, golden):
    """1 MiB cards hold no weight: every weight is offloaded, the CPU row says how much."""
    result = run_cli("estimate", "vit-tiny", "--mode", "inference", "--gpus", "2", "--memory", "1MiB",
                     "--image-size", "64", "--batch-size", "2")
    assert result.code == 0, result.err
    golden("multigpu_split.txt", result.out)


def test_report_train_gpus_nodes_grad_accum_golden(run_cli, golden):
    """`report`'s summary names the flags that ask for the plans again: --gpus, --nodes, --strategy, --grad-accum."""
    result = run_cli("report", "vit-tiny", "--mode", "train", "--gpus", "2", "--nodes", "2", "--grad-accum", "2",
                     "--strategy", "ddp,zero2+optimizer", "--image-size", "64", "--batch-size", "2",
                     "--format", "markdown")
    assert result.code == 0, result.err
    assert "--nodes 2 --strategy ddp,zero2+optimizer --grad-accum 2`" in result.out
    golden("multigpu_report.md", result.out)


@pytest.mark.parametrize("fmt, name", [("csv", "multigpu_train_failed.csv"), ("json", "multigpu_train_failed.json")])
def test_a_failed_training_case_keeps_its_one_entry_golden(run_cli, golden, fmt, name):
    """fp32 cannot run flash attention: that case fails alone, with its error, beside the two plans of sdpa."""
    result = run_cli("estimate", "vit-tiny", "--mode", "train", "--gpus", "2", "--strategy", "ddp,zero3",
                     "--image-size", "64", "--batch-size", "2", "--precision", "fp32", "--attn", "sdpa,flash",
                     "--format", fmt)
    assert result.code == 1
    assert "flash attention" in result.out
    golden(name, result.out)


def test_plan_on_one_node_golden(capsys, golden):
    """One node: the GPUs column is the count alone (`2`, not `2x1`)."""
    from vramplan.cli import main

    assert main(["plan", "vit-tiny", "--gpus", "2", "--strategy", "ddp,zero3", "--image-size", "64",
                 "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "│ 2  │" in out
    golden("multigpu_plan_one_node.txt", out)
