"""Every format parses, with the documented shape; invariants of the weights rows."""

from __future__ import annotations

import csv
import io
import json

import pytest

import vramplan
from vramplan.measure.weights import DTYPES

MODELS = ("dinov3-vits16", "dinov3-convnext-tiny", "dinov3-vit7b16")


def test_json_schema(run_cli):
    data = run_cli("estimate", *MODELS, "--format", "json").json()
    assert set(data) >= {"models"}
    assert len(data["models"]) == 3
    for entry in data["models"]:
        assert entry["library"] == "transformers" and entry["status"] == "ok" and entry["error"] is None
        assert list(entry["weights"]) == list(DTYPES)
        for dtype, cell in entry["weights"].items():
            assert set(cell) == {"largest_layer_bytes", "total_bytes", "training_adam_bytes"}
            assert isinstance(cell["total_bytes"], (int, float)) and cell["total_bytes"] > 0
            assert (cell["training_adam_bytes"] is None) == (dtype in ("int8", "int4"))
    assert data["models"][0]["model"] == "facebook/dinov3-vits16-pretrain-lvd1689m"


def test_json_values_are_real(run_cli):
    vits = run_cli("estimate", "dinov3-vits16", "--format", "json").json()["models"][0]["weights"]
    # 21,596,560 float32 values (parameters and buffers) of DINOv3 ViT-S/16
    assert vits["float32"]["total_bytes"] == 86_386_240
    assert vits["float32"]["largest_layer_bytes"] == 7_099_392
    assert vits["float32"]["training_adam_bytes"] == 4 * 86_386_240
    assert vits["int4"]["total_bytes"] == 86_386_240 / 8


@pytest.mark.parametrize("command", ["estimate", "report"])
def test_csv_header_and_one_row_per_model_and_dtype(run_cli, command):
    result = run_cli(command, *MODELS, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert result.out.splitlines()[0] == (
        "model,library,status,error,dtype,largest_layer_bytes,total_bytes,training_adam_bytes"
    )
    assert len(rows) == len(MODELS) * len(DTYPES)
    assert {(r["model"], r["dtype"]) for r in rows} == {
        (m, d) for m in (r["model"] for r in rows) for d in DTYPES
    }


def test_dtypes_filter_and_order(run_cli):
    result = run_cli("estimate", "dinov3-vits16", "--dtypes", "int4", "float32", "--format", "json")
    assert list(result.json()["models"][0]["weights"]) == ["int4", "float32"]
    table = run_cli("estimate", "dinov3-vits16", "--dtypes", "float16").out
    assert "float16" in table and "float32" not in table and "int8" not in table


def test_accelerate_spellings_are_accepted(run_cli):
    result = run_cli("estimate", "dinov3-vits16", "--library_name", "transformers", "--dtypes", "float32")
    assert result.code == 0 and "Memory Usage for loading `facebook/dinov3-vits16-pretrain-lvd1689m`" in result.out


def test_markdown_estimate_is_a_table_per_model(run_cli):
    out = run_cli("estimate", *MODELS, "--format", "markdown").out
    assert out.count("| dtype | Largest Layer | Total Size | Training using Adam |") == 3


@pytest.mark.parametrize("reference", ["facebook/dinov3-vitb16-pretrain-lvd1689m", "dinov3-vitb16", "FACEBOOK/DINOv3-ViTB16-pretrain-LVD1689M"])
def test_ids_and_aliases_resolve_to_the_same_model(reference):
    result = vramplan.estimate(reference).models[0]
    assert result.model == "facebook/dinov3-vitb16-pretrain-lvd1689m"
    assert result.source == "catalog"


def test_family_expands_to_all_12_sorted():
    run = vramplan.estimate("dinov3", dtypes=["float32"])
    ids = [m.model for m in run.models]
    assert len(ids) == 12 and ids == sorted(ids)
    assert run.exit_code == 0


def test_invariants_over_the_catalogue():
    for model in vramplan.estimate("dinov3").models:
        w = model.weights
        fp32, fp16, int8, int4 = (w.row(d) for d in DTYPES)
        assert fp16.total_bytes * 2 == fp32.total_bytes == int8.total_bytes * 4 == int4.total_bytes * 8
        assert fp16.largest_layer_bytes * 2 == fp32.largest_layer_bytes
        assert 0 < fp32.largest_layer_bytes < fp32.total_bytes
        assert fp32.total_bytes >= 4 * w.parameter_count  # buffers may add to parameters


def test_list_shows_catalogue_with_measured_sizes(run_cli):
    result = run_cli("list", "--format", "json")
    rows = result.json()["models"]
    assert len(rows) == 12
    vits = next(r for r in rows if r["alias"] == "dinov3-vits16")
    assert vits["id"] == "facebook/dinov3-vits16-pretrain-lvd1689m" and vits["family"] == "dinov3"
    assert vits["float32_bytes"] == 86_386_240
    assert vits["parameters"] == 21_596_544  # DINOv3 ViT-S/16, as `estimate --format json` reports it
    table = run_cli("list").out
    assert "dinov3-vit7b16" in table and "25.1 GiB" in table  # binary units, said so
