"""`report/training.py`'s pure functions on hand-made results: binary units at their boundaries, what-trains labels,
a failed case's row and CSV row, a model with no case. Written for its mutation run (docs/testing.md): the goldens
hold no size at a unit's edge, no checkpointed case and no failure."""

from __future__ import annotations

import pytest

from vramplan.measure.training import TrainingCase, TrainingMeasurement
from vramplan.report.training import (
    HEADERS, TRAINING_CSV_COLUMNS, format_binary, render_training_text, trains_label, training_csv_rows,
    training_rows,
)
from vramplan.results import ModelResult, TrainingFailure

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize("size, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1536, "1.50 KiB"), (1025 * KIB - 1, "1.00 MiB"),
    (10 * KIB, "10.0 KiB"), (int(10.5 * KIB), "10.5 KiB"), (int(99.5 * KIB), "99.5 KiB"), (100 * KIB, "100 KiB"),
    (int(100.5 * MIB), "100 MiB"), (1023 * MIB, "1023 MiB"), (3 * GIB, "3.00 GiB"), (TIB, "1.00 TiB"),
    (1024 * TIB, "1024 TiB"), (5000 * TIB, "5000 TiB"),
])
def test_format_binary_at_each_units_edge(size, text):
    assert format_binary(size) == text


def _case(**kw) -> TrainingCase:
    return TrainingCase(**{"batch_size": 2, "image_size": (64, 64), **kw})


def test_trains_label_names_what_trains_and_checkpointing():
    assert trains_label(_case()) == "full"
    assert trains_label(_case(grad_checkpointing=True)) == "full ckpt"
    assert trains_label(_case(freeze="backbone")) == "probe"
    assert trains_label(_case(lora_rank=16, grad_checkpointing=True)) == "LoRA16 ckpt"


def _measured(case: TrainingCase) -> TrainingMeasurement:
    return TrainingMeasurement(case=case, parameter_bytes=1000, buffer_bytes=24, gradient_bytes=1000,
                               optimizer_state_bytes=2000, activation_bytes=3 * MIB, temp_bytes=5 * KIB,
                               peak_allocated_bytes=4 * MIB, peak_device_bytes=GIB, peak_phase="backward",
                               overheads=())


def _result(*items) -> ModelResult:
    return ModelResult(model="m", reference="m", library="transformers", source=None, status="ok",
                       training=tuple(items))


def test_a_failed_case_has_its_label_the_error_cell_and_empty_cells():
    failed = TrainingFailure(_case(batch_size=4), "it broke")
    rows = training_rows(_result(_measured(_case()), failed))
    assert rows[0] == ["64px b2 full", "1.00 KiB", "1000 B", "1.95 KiB", "3.00 MiB", "5.00 KiB", "4.00 MiB",
                       "1.00 GiB", "bwd"]
    assert rows[1][0] == "64px b4 full" and rows[1][2:] == [""] * (len(HEADERS) - 2) and rows[1][1]
    text = "\n".join(render_training_text(_result(_measured(_case()), failed), width=120))
    assert "64px b4 full" in text and "4.00 MiB" in text


def test_csv_rows_of_a_failed_case_and_of_a_model_with_none():
    failed = TrainingFailure(_case(batch_size=4, grad_checkpointing=True), "it broke")
    ok, bad = training_csv_rows(_result(_measured(_case()), failed))
    assert len(ok) == len(bad) == len(TRAINING_CSV_COLUMNS)
    assert ok[:7] == ["m", "ok", "", 64, 64, "", 2] and ok[-2:] == [GIB, "backward"]
    assert bad[:7] == ["m", "error", "it broke", 64, 64, "", 4] and bad[-9:] == [""] * 9
    assert bad[TRAINING_CSV_COLUMNS.index("grad_checkpointing")] is True
    none = ModelResult(model="x", reference="x", library="?", source=None, status="error", error="gone")
    assert training_csv_rows(none) == [["x", "error", "gone"] + [""] * (len(TRAINING_CSV_COLUMNS) - 3)]
