"""`--mode inference` through the CLI: the documented JSON, the report columns, errors per model."""

from __future__ import annotations

import csv
import io

import pytest

from conftest import DATA_DEPENDENT

KEYS = {"image_size", "batch_size", "dtype", "attn", "device", "parameter_bytes", "buffer_bytes",
        "activation_bytes", "temp_bytes", "peak_allocated_bytes", "peak_device_bytes"}
PARTS = ("parameter_bytes", "buffer_bytes", "activation_bytes", "temp_bytes")


def sweep(run_cli, *args: str) -> list[dict]:
    result = run_cli("estimate", "dinov3-vits16", "--mode", "inference", *args, "--format", "json")
    assert result.code == 0, result.err
    return result.json()["models"][0]["inference"]


def test_json_entries_have_the_documented_fields_and_add_up(run_cli):
    cases = sweep(run_cli, "--image-size", "224,1024", "--image-size", "768x1344", "--batch-size", "1,8")
    assert [(c["image_size"], c["batch_size"]) for c in cases] == [
        ([224, 224], 1), ([224, 224], 8), ([1024, 1024], 1), ([1024, 1024], 8), ([768, 1344], 1), ([768, 1344], 8)]
    for case in cases:
        assert KEYS <= set(case)
        assert case["dtype"] == "bfloat16" and case["attn"] == "sdpa" and case["device"] == "cuda"
        assert sum(case[p] for p in PARTS) == case["peak_allocated_bytes"]
        assert case["peak_device_bytes"] == case["peak_allocated_bytes"] + sum(case["overheads"].values())
    by = {(tuple(c["image_size"]), c["batch_size"]): c["activation_bytes"] for c in cases}
    assert by[(224, 224), 1] < by[(224, 224), 8] < by[(1024, 1024), 8]
    assert by[(224, 224), 1] < by[(1024, 1024), 1] < by[(1024, 1024), 8]


def test_weights_in_the_case_dtype(run_cli):
    bf16, fp32 = sweep(run_cli, "--image-size", "224", "--dtype", "bfloat16,float32")
    params = 21_596_544  # DINOv3 ViT-S/16
    # Each tensor is an allocator block rounded up to 512 bytes: a little above values x bytes per value.
    assert params * 2 <= bf16["parameter_bytes"] < params * 2 * 1.03
    assert params * 4 <= fp32["parameter_bytes"] < params * 4 * 1.03


def test_eager_needs_at_least_what_sdpa_needs(run_cli):
    sdpa, eager = sweep(run_cli, "--image-size", "1024", "--attn", "sdpa,eager")
    assert eager["activation_bytes"] + eager["temp_bytes"] >= sdpa["activation_bytes"] + sdpa["temp_bytes"]
    # eager materialises (heads x tokens x tokens) attention scores: 6 x 4101^2 bf16 values at least
    assert eager["peak_allocated_bytes"] - sdpa["peak_allocated_bytes"] > 6 * 4101 * 4101 * 2


def test_cpu_target_has_no_cuda_overheads(run_cli):
    (case,) = sweep(run_cli, "--image-size", "224", "--device", "cpu")
    assert case["device"] == "cpu" and case["peak_device_bytes"] == case["peak_allocated_bytes"]


def test_report_adds_inference_columns(run_cli):
    result = run_cli("report", "dinov3-vits16", "dinov3-convnext-tiny", "--mode", "inference",
                     "--image-size", "224,512", "--batch-size", "1,8")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert ["Model", "float32", "float16", "int8", "int4", "status"] in [line.split() for line in lines]
    assert ["Model", "batch", "224px", "512px"] in [line.split() for line in lines]  # aligned, a column per size
    assert any(line.startswith("Inference columns: peak memory on the card") for line in lines)
    assert result.out.count("Inference peak for `") == 2
    assert "--mode inference --image-size 224,512 --batch-size 1,8" in result.out


def test_csv_has_a_row_per_case(run_cli):
    result = run_cli("estimate", "dinov3-vits16", "dinov3-vitb16", "--mode", "inference", "--image-size", "224",
                     "--batch-size", "1,2", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert all(int(r["peak_device_bytes"]) >= int(r["peak_allocated_bytes"]) > 0 for r in rows)


def test_text_model_takes_seq_len(run_cli, write_config):
    bert = write_config("bert", {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 500})
    result = run_cli("estimate", str(bert), "--mode", "inference", "--seq-len", "128,256", "--format", "json")
    assert result.code == 0, result.err
    short, long = result.json()["models"][0]["inference"]
    assert short["seq_len"] == 128 and "image_size" not in short
    assert long["activation_bytes"] > short["activation_bytes"]

    wrong = run_cli("estimate", str(bert), "dinov3-vits16", "--mode", "inference", "--image-size", "224",
                    "--format", "json")
    assert wrong.code == 1
    bert_entry, vits_entry = wrong.json()["models"]
    assert bert_entry["status"] == "error" and "--seq-len" in bert_entry["error"]
    assert bert_entry["weights"] is not None  # its weights table stands
    assert vits_entry["status"] == "ok"



def test_model_that_cannot_be_simulated_keeps_its_weights(run_cli, tmp_path):
    (tmp_path / "gate.py").write_text(DATA_DEPENDENT)
    result = run_cli("estimate", "dinov3-vits16", "--factory", f"{tmp_path / 'gate.py'}:make",
                     "--mode", "inference", "--image-size", "64", "--format", "json")
    assert result.code == 1
    vits, gate = result.json()["models"]
    assert vits["status"] == "ok"
    assert gate["status"] == "error" and "simulate" in gate["error"]
    assert gate["weights"]["float32"]["total_bytes"] == (8 * 3 * 4 * 4 + 8) * 4
    assert "error" in gate["inference"][0] and gate["inference"][0]["image_size"] == [64, 64]
    table = run_cli("estimate", "--factory", f"{tmp_path / 'gate.py'}:make", "--mode", "inference",
                    "--image-size", "64")
    assert "Memory Usage for loading" in table.out and "error" in table.out and table.code == 1


@pytest.mark.parametrize("args", [
    ("--image-size", "big"), ("--image-size", "0"), ("--batch-size", "0"), ("--batch-size", "x"),
    ("--dtype", "int8"), ("--attn", "paged"), ("--device", "tpu"),
])
def test_bad_inference_flags_are_usage_errors(run_cli, args):
    result = run_cli("estimate", "dinov3-vits16", "--mode", "inference", *args)
    assert result.code == 2 and "Traceback" not in result.err
