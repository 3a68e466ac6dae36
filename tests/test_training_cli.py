"""`--mode train` through the CLI: the documented JSON, tables within 100 columns, CSV, summary, errors."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

KEYS = ["image_size", "batch_size", "precision", "optimizer", "attn", "device", "grad_checkpointing", "freeze",
        "lora_rank", "parameter_bytes", "buffer_bytes", "gradient_bytes", "optimizer_state_bytes",
        "activation_bytes", "temp_bytes", "peak_allocated_bytes", "peak_device_bytes", "peak_phase", "overheads"]
PARTS = ("parameter_bytes", "buffer_bytes", "gradient_bytes", "optimizer_state_bytes", "activation_bytes",
         "temp_bytes")
TINY_VIT = {"model_type": "dinov3_vit", "hidden_size": 192, "intermediate_size": 768, "num_attention_heads": 3,
            "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16}


@pytest.fixture
def tiny(write_config):
    return str(write_config("tiny-vit", TINY_VIT))


def train(run_cli, model: str, *args: str) -> list[dict]:
    result = run_cli("estimate", model, "--mode", "train", *args, "--format", "json")
    assert result.code == 0, result.err
    return result.json()["models"][0]["training"]


def test_json_has_exactly_the_documented_fields_and_adds_up(run_cli, tiny):
    cases = train(run_cli, tiny, "--image-size", "224", "--batch-size", "1,4", "--trains", "probe,lora,full")
    assert [(c["freeze"], c["lora_rank"], c["batch_size"]) for c in cases] == [
        ("backbone", 0, 1), ("backbone", 0, 4), ("none", 16, 1), ("none", 16, 4), ("none", 0, 1), ("none", 0, 4)]
    for case in cases:
        assert list(case) == KEYS
        assert sum(case[p] for p in PARTS) == case["peak_allocated_bytes"]
        assert case["peak_device_bytes"] == case["peak_allocated_bytes"] + sum(case["overheads"].values())
        assert case["peak_phase"] in ("forward", "backward", "optimizer step")
    probe1, probe4, lora1, lora4, full1, full4 = (c["peak_allocated_bytes"] for c in cases)
    assert probe1 < lora1 < full1 and probe4 < lora4 < full4
    assert probe1 < probe4 and full1 < full4


def test_full_adamw_holds_two_states_and_a_gradient_per_parameter(run_cli, tiny):
    (fp32,) = train(run_cli, tiny, "--image-size", "224", "--precision", "fp32", "--trains", "full")
    (sgd,) = train(run_cli, tiny, "--image-size", "224", "--precision", "fp32", "--optimizer", "sgd")
    assert fp32["peak_phase"] == "optimizer step"
    assert fp32["gradient_bytes"] >= fp32["parameter_bytes"] * 0.99
    assert fp32["optimizer_state_bytes"] >= 2 * fp32["parameter_bytes"] * 0.99
    assert sgd["optimizer_state_bytes"] < fp32["optimizer_state_bytes"] * 0.6  # one momentum buffer


def test_checkpointing_lowers_activations_at_a_large_batch(run_cli, tiny):
    plain, = train(run_cli, tiny, "--image-size", "512", "--batch-size", "8")
    ckpt, = train(run_cli, tiny, "--image-size", "512", "--batch-size", "8", "--grad-checkpointing")
    assert ckpt["grad_checkpointing"] and ckpt["peak_allocated_bytes"] < plain["peak_allocated_bytes"]


@pytest.mark.parametrize("columns", ["80", "100", "120"])
def test_text_table_stays_within_the_width_and_cuts_no_number(run_cli, tiny, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    # The longest labels: a HEIGHTxWIDTH size, a two-digit batch, LoRA; two precisions make two tables.
    result = run_cli("estimate", tiny, "--mode", "train", "--image-size", "768x1344", "--batch-size", "1,32",
                     "--trains", "probe,lora,full", "--precision", "amp-bf16,fp32")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Training peak of"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Weights = parameters"))
    table = lines[start:end + 3]
    assert all(len(line) <= min(int(columns), 100) for line in table), "\n".join(table)
    words = " ".join(table).split()
    for header in ("case", "Weights", "Grads", "Optim", "Activ", "Temp", "max", "alloc", "on", "card", "peak", "in"):
        assert header in words
    # 2 tables x 6 cases x 7 sizes, each whole ("1.45 GiB", never "1.4" or "G"); at 80 columns the last
    # columns drop to a second part that repeats the case
    sizes = re.findall(r"(?<![\w.])\d+(?:\.\d+)? (?:B|KiB|MiB|GiB|TiB)(?!\w)", " ".join(table))
    assert len(sizes) == 2 * 6 * 7
    parts = sum(line.split() == ["case", *line.split()[1:]] for line in table)
    assert parts == (4 if columns == "80" else 2)
    assert "Training using Adam" in result.out  # the seed's column stays


def test_report_summary_csv_and_markdown(run_cli, tiny):
    args = ("--mode", "train", "--image-size", "224", "--batch-size", "1", "--trains", "probe,full")
    text = run_cli("report", tiny, *args)
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    # the summary's training table: aligned columns under its own heading, a column per case
    header = lines[lines.index("Peak on the card, two training steps") + 1]
    assert header.startswith("Model") and "|" not in header
    assert header.split() == ["Model", "trains", "batch", "224px"]  # a row per model, what trains and batch
    rows = lines[lines.index("Peak on the card, two training steps") + 3:][:2]
    assert [r.split()[-4:-2] for r in rows] == [["probe", "1"], ["full", "1"]]
    assert "Training columns:" in text.out and "--mode train" in text.out
    rows = list(csv.DictReader(io.StringIO(run_cli("report", tiny, *args, "--format", "csv").out)))
    assert [(r["freeze"], r["status"]) for r in rows] == [("backbone", "ok"), ("none", "ok")]
    assert int(rows[1]["optimizer_state_bytes"]) > int(rows[0]["optimizer_state_bytes"])
    markdown = run_cli("report", tiny, *args, "--format", "markdown").out
    assert "| case | Weights | Grads |" in markdown


def test_a_case_that_cannot_be_simulated_fails_alone(run_cli, tiny):
    # flash_attention_2 cannot run float32 compute: that case fails, the sdpa one completes.
    result = run_cli("estimate", tiny, "--mode", "train", "--image-size", "224", "--precision", "fp32",
                     "--attn", "sdpa,flash", "--format", "json")
    assert result.code == 1
    sdpa, flash = json.loads(result.out)["models"][0]["training"]
    assert sdpa["peak_allocated_bytes"] > 0 and "flash attention" in flash["error"]
    assert result.err.count("\n") == 1 and "Traceback" not in result.err


@pytest.mark.parametrize("args,message", [
    (("--mode", "inference", "--precision", "fp32"), "need --mode train"),
    (("--mode", "train", "--dtype", "bfloat16"), "--precision, not --dtype"),
    (("--mode", "train", "--lora-rank", "0"), "--lora-rank must be"),
    (("--mode", "train", "--precision", "fp8"), "is not one of"),
    (("--mode", "train", "--lora-targets", "qkv"), "needs --lora-rank"),
])
def test_usage_errors_are_one_line(run_cli, tiny, args, message):
    result = run_cli("estimate", tiny, *args)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert result.err.count("\n") == 1


def test_text_model_without_task_class_says_so(run_cli, write_config):
    bert = write_config("bert", {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128,
                                 "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 100})
    result = run_cli("estimate", str(bert), "--mode", "train", "--seq-len", "32", "--format", "json")
    assert result.code == 1 and "task class" in result.json()["models"][0]["training"][0]["error"]
