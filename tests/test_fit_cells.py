"""`plan/fit.py`'s cells from real simulations: the slope one card's search hands to the next, checked against
direct estimates at the batch found and one above (for its mutation run: docs/testing.md, "Third scoring")."""

from __future__ import annotations

import pytest

from vramplan.build import build_model
from vramplan.measure.cases import InferenceRequest, cases_for
from vramplan.plan.fit import FitRequest, _fit_cell, fit_model, inference_peak
from vramplan.plan.gpus import find_gpu
from vramplan.sources import resolve_model

SIZE = ((224, 224),)


@pytest.fixture(scope="module")
def vits():
    spec = resolve_model("dinov3-vits16")
    return build_model(spec), spec.model_id


def _case(model, ref, gpu, dtype="float16"):
    (case,) = cases_for(model, InferenceRequest(image_sizes=SIZE, dtypes=(dtype,), gpu=gpu), ref)
    return case


def test_the_second_card_starts_from_the_first_cards_slope(vits):
    model, ref = vits
    rtx, l4 = find_gpu("rtx4090"), find_gpu("l4")
    request = FitRequest(gpus=(rtx, l4), dtype="float16", image_sizes=SIZE)
    first, second = fit_model(model, request, ref)
    (alone,) = fit_model(model, FitRequest(gpus=(l4,), dtype="float16", image_sizes=SIZE), ref)
    assert (first.gpu, second.gpu) == (rtx, l4)
    assert second.largest_batch_size == alone.largest_batch_size
    assert second.peak_device_bytes == alone.peak_device_bytes
    assert (first.simulations, second.simulations, alone.simulations) == (8, 5, 7)  # the hint saves two
    peak = inference_peak(model, _case(model, ref, l4), ref)
    batch = second.largest_batch_size
    assert peak(batch) == second.peak_device_bytes <= l4.memory_bytes < peak(batch + 1)
    assert second.cheapest_precision == "float32" and second.dtype == "float16" and second.error is None


def test_the_slope_handed_on_is_bytes_per_sample_between_batch_1_and_the_answer(vits):
    model, ref = vits
    l4 = find_gpu("l4")
    case = _case(model, ref, l4)
    slopes: dict = {}
    cell = _fit_cell(model, case, FitRequest(gpus=(l4,), dtype="float16", image_sizes=SIZE), ref, slopes)
    peak = inference_peak(model, case, ref)
    batch = cell.largest_batch_size
    assert slopes == {((224, 224), None, "float16"): (peak(batch) - peak(1)) / (batch - 1)}
    # Nothing fits: no slope is handed on, and the cell keeps the peak at batch 1.
    tiny = find_gpu("l4").__class__(**{**vars(l4), "memory_bytes": peak(1) - 1})
    none: dict = {}
    empty = _fit_cell(model, _case(model, ref, tiny), FitRequest(gpus=(tiny,), dtype="float16", image_sizes=SIZE),
                      ref, none)
    assert (empty.largest_batch_size, empty.simulations, empty.peak_device_bytes, none) == (0, 1, peak(1), {})


def test_headroom_is_a_share_of_the_cards_memory(vits):
    model, ref = vits
    l4 = find_gpu("l4")
    cell = _fit_cell(model, _case(model, ref, l4), FitRequest(gpus=(l4,), dtype="float16", image_sizes=SIZE,
                                                               headroom_percent=25), ref, {})
    assert cell.headroom_bytes == l4.memory_bytes // 4 and cell.limit_bytes == l4.memory_bytes - l4.memory_bytes // 4
    peak = inference_peak(model, _case(model, ref, l4), ref)
    assert peak(cell.largest_batch_size) <= cell.limit_bytes < peak(cell.largest_batch_size + 1)
