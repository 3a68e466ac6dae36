"""The checkpoint lines under a model's table and the `vramplan list` table, value by value.

Both were below 80% under mutmut (59% and 66%): no test read their text. The expected values are literals.
"""

from __future__ import annotations

import json

import pytest

from vramplan.measure.checkpoint import CheckpointInfo
from vramplan.report.checkpoint_text import checkpoint_json, checkpoint_lines
from vramplan.report.listing import listing_rows, render_list_json, render_list_table

SHARDED = CheckpointInfo(
    where="hub",
    files=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"),
    parameters=3_000_000_003,
    dtypes=(("BF16", 3_000_000_000), ("F32", 3)),
    stored_bytes=6_000_000_012,
    download_bytes=7_000_000_000,
    unread=("pytorch_model.bin", "training_args.bin"),
    notes=("note one", "note two"),
)


def test_checkpoint_lines_of_a_sharded_checkpoint_with_pickles_beside_it():
    assert checkpoint_lines(SHARDED) == [
        "Checkpoint (hub): 2 safetensors files, 6.52 GB to download; "
        "stored as BF16 (3,000,000,000 values), F32 (3 values): 5.59 GB",
        "Not opened (pickle-based, never unpickled): pytorch_model.bin, training_args.bin",
        "Note: note one",
        "Note: note two",
    ]


def test_checkpoint_lines_of_one_file_of_unknown_download_size():
    one = CheckpointInfo("local", ("model.safetensors",), 35, (("F32", 35),), 140, None)
    assert checkpoint_lines(one) == ["Checkpoint (local): 1 safetensors file; stored as F32 (35 values): 140 bytes"]


def test_checkpoint_lines_without_safetensors_and_without_checkpoint():
    pickles = CheckpointInfo("cache", (), 0, (), 0, None, ("model.pt",), ("only pickles",))
    assert checkpoint_lines(pickles) == ["Not opened (pickle-based, never unpickled): model.pt", "Note: only pickles"]
    assert checkpoint_lines(None) == [] and checkpoint_json(None) is None


def test_checkpoint_json_names_every_field():
    assert checkpoint_json(SHARDED) == {
        "where": "hub",
        "files": ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
        "parameters": 3_000_000_003,
        "dtypes": {"BF16": 3_000_000_000, "F32": 3},
        "stored_bytes": 6_000_000_012,
        "download_bytes": 7_000_000_000,
        "unread_files": ["pytorch_model.bin", "training_args.bin"],
        "notes": ["note one", "note two"],
    }


ROWS = [
    {"id": "org/a-very-long-model-name-that-wraps", "alias": "a", "family": "f", "parameters": 21_596_544,
     "float32_bytes": 86_386_240, "error": None},
    {"id": "./missing", "alias": "b", "family": "g", "parameters": None, "float32_bytes": None,
     "error": "no such dir"},
    {"id": "big", "alias": "c", "family": "h", "parameters": 6_716_035_072, "float32_bytes": 26_864_140_288,
     "error": "not shown: the model has a size"},
]


def test_list_table_with_a_failed_row():
    assert render_list_table(ROWS) == (
        "id                                     alias  family  params            float32\n"
        "───────────────────────────────────────────────────────────────────────────────\n"
        "org/a-very-long-model-name-that-wraps  a      f        21.6M           82.4 MiB\n"
        "./missing                              b      g            -  error (see below)\n"
        "big                                    c      h        6.72B           25.1 GiB\n"
        "Error: ./missing: no such dir\n"
    )
    assert max(map(len, render_list_table(ROWS, width=40).splitlines()[:-1])) <= 40


def test_list_table_is_100_columns_by_default_and_lists_every_error():
    long_id = {**ROWS[0], "id": "org/" + "x" * 100}
    failed = [{**ROWS[1], "id": f"./gone-{n}", "error": f"reason {n}"} for n in (1, 2)]
    lines = render_list_table([long_id, *failed]).splitlines()
    assert max(map(len, lines)) == 100
    assert lines[-2:] == ["Error: ./gone-1: reason 1", "Error: ./gone-2: reason 2"]


@pytest.mark.parametrize("count, cell", [
    (999_949_999, "999.9M"), (999_999_999, "1000.0M"), (1_000_000_000, "1.00B"), (1_234_567_890, "1.23B"),
    (21_650_001, "21.7M"), (1_235_000_001, "1.24B"),  # just past a rounding step: the divisor is exactly 1e6, 1e9
])
def test_list_parameter_cell_switches_to_billions_at_one_billion(count, cell):
    row = {**ROWS[0], "parameters": count}
    assert render_list_table([row]).splitlines()[2].split()[3] == cell


def test_list_rows_join_the_catalogue_with_measured_weights_and_errors(tmp_path):
    from vramplan.pipeline import estimate
    from vramplan.sources.catalog import CatalogEntry, catalog_entries

    vits = next(e for e in catalog_entries() if e.alias == "dinov3-vits16")
    missing = CatalogEntry(str(tmp_path / "missing"), "gone", "none", "none.json")
    run = estimate([vits.model_id, missing.model_id], dtypes=("float32",))
    rows = listing_rows((vits, missing), run)
    assert rows[0] == {"id": "facebook/dinov3-vits16-pretrain-lvd1689m", "alias": "dinov3-vits16", "family": "dinov3",
                       "parameters": 21_596_544, "float32_bytes": 86_386_240, "error": None}
    assert rows[1]["id"] == missing.model_id and rows[1]["alias"] == "gone" and rows[1]["family"] == "none"
    assert rows[1]["parameters"] is None and rows[1]["float32_bytes"] is None
    assert rows[1]["error"] == run.models[1].error and "missing" in rows[1]["error"]
    assert json.loads(render_list_json(rows)) == {"models": rows}
    assert render_list_json(rows).startswith('{\n  "models": [\n    {\n      "id": ') and render_list_json(rows)[-1] == "\n"
