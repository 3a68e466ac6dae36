"""`report/training.py` on hand-made results, for the survivors of its complete mutation run (docs/testing.md,
"Third scoring"): labels when the optimizer or attention varies, a group of one case, right-aligned sizes of
different widths, a text model's CSV row, and a model with no case and no error."""

from __future__ import annotations

from vramplan.measure.training import TrainingCase, TrainingMeasurement
from vramplan.report.training import TRAINING_CSV_COLUMNS, render_training_text, training_csv_rows, training_rows
from vramplan.results import ModelResult, TrainingFailure

KIB, MIB, GIB = 1024, 1024**2, 1024**3


def _case(**kw) -> TrainingCase:
    return TrainingCase(**{"batch_size": 2, "image_size": (64, 64), **kw})


def _measured(case: TrainingCase, weights: int = 1000, card: int = GIB) -> TrainingMeasurement:
    return TrainingMeasurement(case=case, parameter_bytes=weights, buffer_bytes=24, gradient_bytes=1000,
                               optimizer_state_bytes=2000, activation_bytes=3 * MIB, temp_bytes=5 * KIB,
                               peak_allocated_bytes=4 * MIB, peak_device_bytes=card, peak_phase="optimizer step",
                               overheads=())


def _result(*items, error: str | None = None) -> ModelResult:
    return ModelResult(model="m", reference="m", library="transformers", source=None,
                       status="error" if error else "ok", error=error, training=tuple(items))


def test_labels_name_the_optimizer_and_attention_when_they_vary():
    rows = training_rows(_result(_measured(_case()), _measured(_case(optimizer="sgd", attn="eager"))))
    assert [row[0] for row in rows] == ["64px b2 full adamw sdpa", "64px b2 full sgd eager"]
    assert rows[0][-1] == "step"


def test_a_failure_before_a_measured_case_keeps_both_rows():
    rows = training_rows(_result(TrainingFailure(_case(batch_size=4), "it broke"), _measured(_case())))
    assert [row[0] for row in rows] == ["64px b4 full", "64px b2 full"]
    assert rows[1][1:] == ["1.00 KiB", "1000 B", "1.95 KiB", "3.00 MiB", "5.00 KiB", "4.00 MiB", "1.00 GiB", "step"]


def test_one_case_per_group_has_its_own_titled_table_with_sizes_right_aligned():
    # Two precisions: a group of one case, then a group of two whose sizes differ in width.
    small = _measured(_case(precision="fp32"), weights=488, card=512)
    large = _measured(_case(precision="bf16"), weights=100 * MIB, card=200 * GIB)
    other = _measured(_case(precision="bf16", batch_size=16), weights=488, card=512)
    assert render_training_text(_result(small, large, other))[:9] == [
        "Training peak of `m` (2 steps, simulated cuda, fp32, adamw, sdpa)",
        "case          Weights   Grads     Optim     Activ      Temp  max alloc  on card  peak in",
        "\u2500" * 88,
        "64px b2 full    512 B  1000 B  1.95 KiB  3.00 MiB  5.00 KiB   4.00 MiB    512 B  step",
        "Training peak of `m` (2 steps, simulated cuda, bf16, adamw, sdpa)",
        "case           Weights   Grads     Optim     Activ      Temp  max alloc  on card  peak in",
        "\u2500" * 89,
        "64px b2 full   100 MiB  1000 B  1.95 KiB  3.00 MiB  5.00 KiB   4.00 MiB  200 GiB  step",
        "64px b16 full    512 B  1000 B  1.95 KiB  3.00 MiB  5.00 KiB   4.00 MiB    512 B  step",
    ]


def test_a_table_over_100_columns_moves_its_last_column_below_by_default():
    # A 27-character label (the first column takes at most 25) and eight 8-character sizes need 101 columns.
    size = 1023 * MIB
    case = TrainingCase(batch_size=1024, image_size=(224, 160), lora_rank=16, grad_checkpointing=True)
    wide = TrainingMeasurement(case=case, parameter_bytes=size - 24, buffer_bytes=24, gradient_bytes=size,
                               optimizer_state_bytes=size, activation_bytes=size, temp_bytes=size,
                               peak_allocated_bytes=size, peak_device_bytes=size, peak_phase="forward", overheads=())
    lines = render_training_text(_result(wide))
    assert lines[1] == "case                          Weights     Grads     Optim     Activ      Temp  max alloc   on card"
    assert lines[3] == "224x160px b1024 LoRA16 ckpt" + "  1023 MiB" * 5 + "   1023 MiB  1023 MiB"
    assert lines[5:8] == ["case                         peak in", "\u2500" * 36, "224x160px b1024 LoRA16 ckpt  fwd"]
    assert lines[-2:] == [
        "Weights = parameters + buffers; Optim = optimizer state; Temp = temporaries of the backward and the",
        "step, kernel buffers; peak in fwd, bwd or step (optimizer). \"Training using Adam\" = weights x 4.",
    ]


def test_csv_row_of_a_text_model_has_its_length_and_no_image_size():
    (row,) = training_csv_rows(_result(_measured(TrainingCase(batch_size=2, seq_len=128))))
    assert row[:7] == ["m", "ok", "", "", "", 128, 2]
    assert row[TRAINING_CSV_COLUMNS.index("peak_phase")] == "optimizer step"


def test_csv_row_of_a_model_without_cases_or_error_is_blank():
    assert training_csv_rows(_result()) == [["m", "ok"] + [""] * (len(TRAINING_CSV_COLUMNS) - 2)]
