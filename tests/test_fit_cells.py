"""`plan/fit.py`'s cells from real simulations of tiny models: the slope one card's search hands to the next, the
square-input search in steps of the patch, the cheapest precision, and the refusals; each answer checked against
direct estimates at it and one step above (for its mutation run: docs/testing.md, "Third scoring")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vramplan.build import build_model
from vramplan.errors import UsageError
from vramplan.measure.cases import InferenceRequest, cases_for
from vramplan.plan.fit import MAX_IMAGE_STEPS, FitRequest, _cheapest_precision, _fit_cell, fit_model, inference_peak
from vramplan.plan.gpus import find_gpu, memory_target
from vramplan.spec import ModelSpec

# A two-layer DINOv3 ViT with 32-pixel patches (the catalogue's are all 16: the search must read the model's).
VIT = {"model_type": "dinov3_vit", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
       "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 32}
BERT = {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 128}


def _build(config: dict, name: str):
    return build_model(ModelSpec(reference=name, model_id=name, library="transformers", source="test", config=config))


@pytest.fixture(scope="module")
def vit():
    return _build(VIT, "tiny-vit")


def _case(model, gpu, size: int, dtype: str = "bfloat16"):
    (case,) = cases_for(model, InferenceRequest(image_sizes=((size, size),), dtypes=(dtype,), gpu=gpu), "tiny-vit")
    return case


def test_the_second_card_starts_from_the_first_cards_slope(vit):
    big, small = memory_target("2GiB"), memory_target("1GiB")
    request = FitRequest(gpus=(big, small), image_sizes=((1024, 1024),))
    first, second = fit_model(vit, request, "tiny-vit")
    (alone,) = fit_model(vit, FitRequest(gpus=(small,), image_sizes=((1024, 1024),)), "tiny-vit")
    assert (first.gpu, second.gpu, second.dtype) == (big, small, "bfloat16")
    assert second.largest_batch_size == alone.largest_batch_size and second.peak_device_bytes == alone.peak_device_bytes
    assert (first.simulations, second.simulations, alone.simulations) == (7, 3, 5)  # the hint saves two
    for cell in (first, second):
        peak, batch = inference_peak(vit, _case(vit, cell.gpu, 1024), "tiny-vit"), cell.largest_batch_size
        assert peak(batch) == cell.peak_device_bytes <= cell.memory_bytes < peak(batch + 1)


def test_the_slope_handed_on_is_bytes_per_sample_between_batch_1_and_the_answer(vit):
    gpu = memory_target("1GiB")
    case = _case(vit, gpu, 1024)
    slopes: dict = {}
    cell = _fit_cell(vit, case, FitRequest(gpus=(gpu,), image_sizes=((1024, 1024),)), "tiny-vit", slopes)
    peak, batch = inference_peak(vit, case, "tiny-vit"), cell.largest_batch_size
    assert slopes == {((1024, 1024), None, "bfloat16", None): (peak(batch) - peak(1)) / (batch - 1)}
    # Nothing fits: no slope is handed on, and the cell keeps the peak at batch 1.
    tiny = memory_target("300MiB")
    none: dict = {}
    empty = _fit_cell(vit, _case(vit, tiny, 1024), FitRequest(gpus=(tiny,), image_sizes=((1024, 1024),)), "tiny-vit",
                      none)
    assert (empty.largest_batch_size, empty.simulations, empty.peak_device_bytes, none) == (0, 1, peak(1), {})


def test_without_a_dtype_each_card_gets_bfloat16_or_float16(vit):
    t4, l4 = find_gpu("t4"), find_gpu("l4")
    cells = fit_model(vit, FitRequest(gpus=(t4, l4), image_sizes=((512, 512),), headroom_percent=25), "tiny-vit")
    assert [(c.gpu.name, c.dtype) for c in cells] == [("t4", "float16"), ("l4", "bfloat16")]
    for cell in cells:
        assert cell.headroom_bytes == cell.memory_bytes // 4
        peak, batch = inference_peak(vit, _case(vit, cell.gpu, 512, cell.dtype), "tiny-vit"), cell.largest_batch_size
        assert peak(batch) <= cell.memory_bytes - cell.memory_bytes // 4 < peak(batch + 1)


def test_largest_square_input_in_steps_of_the_models_patch(vit):
    gpu = memory_target("600MiB")
    (cell,) = fit_model(vit, FitRequest(gpus=(gpu,), max_image_size=True, batch_size=2), "tiny-vit")
    side = cell.largest_image_size
    case = _case(vit, gpu, 224)
    peak = lambda s: inference_peak(vit, replace(case, image_size=(s, s)), "tiny-vit")(2)  # noqa: E731
    assert side % 32 == 0 and cell.image_size == (side, side) and cell.largest_batch_size == 2
    assert peak(side) == cell.peak_device_bytes <= gpu.memory_bytes < peak(side + 32)
    assert peak(side + 16) <= gpu.memory_bytes  # in steps of 16 the answer would be larger: the step is the patch's
    assert cell.simulations == 8 and cell.as_json()["image_size"] == [side, side]


def test_largest_square_input_stops_at_the_step_limit_and_at_nothing(vit):
    (roomy,) = fit_model(vit, FitRequest(gpus=(memory_target("1TiB"),), max_image_size=True), "tiny-vit")
    assert roomy.largest_image_size == MAX_IMAGE_STEPS * 32 == 32768 and roomy.image_size == (32768, 32768)
    gpu = memory_target("300MiB")
    (none,) = fit_model(vit, FitRequest(gpus=(gpu,), max_image_size=True, batch_size=2), "tiny-vit")
    smallest = inference_peak(vit, replace(_case(vit, gpu, 224), image_size=(32, 32)), "tiny-vit")(2)
    assert (none.largest_image_size, none.largest_batch_size, none.simulations) == (0, 0, 1)
    assert none.peak_device_bytes == smallest > gpu.memory_bytes
    assert none.image_size == (32, 32)  # the side whose peak the cell keeps, not (0, 0)


def test_cheapest_precision_is_read_at_batch_1_on_a_card_without_bfloat16(vit):
    t4 = find_gpu("t4")
    case = replace(_case(vit, t4, 2048, "float16"), batch_size=2)
    fp32, fp16 = (inference_peak(vit, replace(case, dtype=d), "tiny-vit")(1) for d in ("float32", "float16"))
    assert fp16 < fp32 < inference_peak(vit, replace(case, dtype="float32"), "tiny-vit")(2)
    assert _cheapest_precision(vit, case, fp32, "tiny-vit") == "float32"  # batch 1 fits, though batch 2 would not
    assert _cheapest_precision(vit, case, fp32 - 1, "tiny-vit") == "float16"
    assert _cheapest_precision(vit, case, fp16 - 1, "tiny-vit") is None


def test_refusals_are_usage_errors():
    bert = _build(BERT, "tiny-bert")
    with pytest.raises(UsageError) as exc:
        fit_model(bert, FitRequest(gpus=(memory_target("1GiB"),), seq_lens=(64,), max_image_size=True), "tiny-bert")
    assert exc.value.args[0] == "--max-image-size searches image sizes: it needs a vision model"
    (cell,) = fit_model(bert, FitRequest(gpus=(memory_target("1GiB"),), seq_lens=(64,)), "tiny-bert")
    assert cell.seq_len == 64 and cell.image_size is None and cell.as_json()["seq_len"] == 64


def test_a_case_that_cannot_be_simulated_gives_an_empty_cell_with_its_reason():
    bert = _build(BERT, "tiny-bert")
    (cell,) = fit_model(bert, FitRequest(gpus=(memory_target("1GiB"),), seq_lens=(200,), attn="eager"), "tiny-bert")
    assert (cell.largest_batch_size, cell.peak_device_bytes, cell.simulations, cell.attn) == (0, 0, 0, "eager")
    assert cell.error == ("--seq-len 200 is longer than the model's 128 positions (its learned position table "
                          "`embeddings.position_embeddings`): a real run raises; use --seq-len 128 or less")


def test_a_length_for_a_vision_model_is_refused_naming_it(vit):
    with pytest.raises(UsageError) as exc:
        fit_model(vit, FitRequest(gpus=(memory_target("1GiB"),), seq_lens=(64,)), "tiny-vit")
    assert exc.value.args[0] == "`tiny-vit` is a vision model: give --image-size, not --seq-len"


def test_the_square_search_starts_from_the_first_size_only(vit):
    request = FitRequest(gpus=(memory_target("600MiB"),), image_sizes=((224, 224), (512, 512)), max_image_size=True,
                         attn="eager")
    (cell,) = fit_model(vit, request, "tiny-vit")
    assert cell.attn == "eager" and cell.largest_image_size % 32 == 0


def test_a_module_without_a_config_is_searched_in_16_pixel_steps():
    import torch.nn as nn

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, device="meta")

        def forward(self, x):
            return self.conv(x).relu()

    conv, gpu = Conv(), memory_target("700MiB")
    (cell,) = fit_model(conv, FitRequest(gpus=(gpu,), max_image_size=True), "conv")
    side = cell.largest_image_size
    (case,) = cases_for(conv, InferenceRequest(image_sizes=((16, 16),), gpu=gpu), "conv")
    peak = lambda s: inference_peak(conv, replace(case, image_size=(s, s)), "conv")(1)  # noqa: E731
    assert side % 16 == 0 and peak(side) <= gpu.memory_bytes < peak(side + 16)


def test_cheapest_precision_skips_a_dtype_that_cannot_be_simulated(vit):
    gpu = memory_target("1GiB")
    flash = replace(_case(vit, gpu, 224), attn="flash")  # flash attention has no float32 kernel
    assert _cheapest_precision(vit, flash, gpu.memory_bytes, "tiny-vit") == "bfloat16"
