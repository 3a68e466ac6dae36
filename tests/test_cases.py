"""Which cases a sweep simulates, in which order, and the parsing of the sweep flags (measure/cases.py).

Found weak by mutation testing (78%): the order and combination of cases were only seen through reports.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch.nn as nn

from vramplan.build import build_model
from vramplan.errors import UsageError
from vramplan.measure.cases import (
    InferenceRequest,
    cases_for,
    input_kind,
    parse_choices,
    parse_image_sizes,
    parse_int_list,
    skipped_combinations,
)
from vramplan.plan.gpus import find_gpu
from vramplan.spec import ModelSpec

H200 = find_gpu("h200")
LLAMA = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "intermediate_size": 128, "vocab_size": 100}


class _TokenModel(nn.Module):
    """A plain module fed token ids, without a config."""

    main_input_name = "input_ids"

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 8)

    def forward(self, input_ids):
        return self.embed(input_ids)


def _model(config: dict):
    return build_model(ModelSpec(reference="tiny", model_id="tiny", library="transformers", source="test", config=config))


def _vision(image_size=None):
    model = nn.Conv2d(3, 8, 4, 4)
    if image_size is not None:
        model.config = SimpleNamespace(image_size=image_size)
    return model


def _key(case):
    return (case.image_size or case.seq_len, case.batch_size, case.dtype, case.attn)


def test_sweep_order_is_size_then_batch_then_dtype_then_attention_without_conflicts():
    request = InferenceRequest(image_sizes=((224, 224), (512, 768)), batch_sizes=(1, 8),
                               dtypes=("float32", "bfloat16"), attns=("sdpa", "flash"), device="cuda", gpu=H200)
    cases = cases_for(_vision(), request, "conv")
    assert [_key(c) for c in cases] == [
        ((224, 224), 1, "float32", "sdpa"), ((224, 224), 1, "bfloat16", "sdpa"), ((224, 224), 1, "bfloat16", "flash"),
        ((224, 224), 8, "float32", "sdpa"), ((224, 224), 8, "bfloat16", "sdpa"), ((224, 224), 8, "bfloat16", "flash"),
        ((512, 768), 1, "float32", "sdpa"), ((512, 768), 1, "bfloat16", "sdpa"), ((512, 768), 1, "bfloat16", "flash"),
        ((512, 768), 8, "float32", "sdpa"), ((512, 768), 8, "bfloat16", "sdpa"), ((512, 768), 8, "bfloat16", "flash"),
    ]
    assert {(c.device, c.gpu, c.seq_len, c.inputs) for c in cases} == {("cuda", H200, None, ())}


@pytest.mark.parametrize("model, size", [
    (_vision(), (224, 224)), (_vision(96), (96, 96)), (_vision([256, 320]), (256, 320)), (_vision((64, 32)), (64, 32)),
])
def test_vision_default_is_the_configured_image_size_else_224(model, size):
    cases = cases_for(model, InferenceRequest(device="cpu"), "conv")
    assert [(c.image_size, c.batch_size, c.dtype, c.attn, c.device) for c in cases] == [(size, 1, "bfloat16", "sdpa", "cpu")]
    assert input_kind(model) == "image"


@pytest.mark.parametrize("positions, length", [(64, 64), (4096, 512), (None, 512)])
def test_text_default_length_is_512_tokens_or_the_configured_positions(positions, length):
    llama = _model({**LLAMA, "max_position_embeddings": positions}) if positions else _TokenModel()
    (case,) = cases_for(llama, InferenceRequest(), "llama")
    assert (case.seq_len, case.seq_unit, case.image_size) == (length, None, None)
    assert input_kind(llama) == "text"
    lengths = cases_for(llama, InferenceRequest(seq_lens=(16, 2048), image_sizes=((9, 9),)), "llama")
    assert [c.seq_len for c in lengths] == [16, 2048]  # both given: the lengths are used


def test_input_shapes_replace_sizes_and_lengths():
    shapes = ("shape-a", "shape-b")
    cases = cases_for(_vision(), InferenceRequest(input_shapes=shapes, image_sizes=((9, 9),), batch_sizes=(1, 2)), "m")
    assert [(c.inputs, c.batch_size, c.image_size) for c in cases] == [(shapes, 1, None), (shapes, 2, None)]


def test_the_wrong_kind_of_size_is_a_usage_error():
    llama = _model({**LLAMA, "max_position_embeddings": 64})
    with pytest.raises(UsageError) as text:
        cases_for(llama, InferenceRequest(image_sizes=((224, 224),)), "tiny-llama")
    assert str(text.value) == "`tiny-llama` is a text model: give --seq-len (tokens), not --image-size"
    with pytest.raises(UsageError) as vision:
        cases_for(_vision(), InferenceRequest(seq_lens=(16,)), "conv")
    assert str(vision.value) == "`conv` is a vision model: give --image-size, not --seq-len"


def test_skipped_combinations_name_each_conflict_and_refuse_an_empty_sweep():
    request = InferenceRequest(dtypes=("float32", "bfloat16"), attns=("flash", "sdpa"))
    assert skipped_combinations(request) == [
        "skipped --attn flash with --dtype float32 --device cuda: "
        "flash attention (flash_attention_2) supports float16 and bfloat16 only"]
    assert skipped_combinations(InferenceRequest(dtypes=("bfloat16",), attns=("sdpa",), device="cpu")) == []
    with pytest.raises(UsageError) as nothing:
        skipped_combinations(InferenceRequest(dtypes=("bfloat16",), attns=("flash",), device="cpu"))
    assert str(nothing.value) == ("nothing to simulate: --attn flash with --dtype bfloat16 --device cpu: "
                                  "flash attention (flash_attention_2) runs on CUDA only")
    with pytest.raises(UsageError) as both:
        skipped_combinations(InferenceRequest(dtypes=("float32", "float16"), attns=("flash",), device="cpu"))
    assert str(both.value).count("; --attn flash with --dtype float16") == 1


def test_parse_image_sizes():
    assert parse_image_sizes(["224, 512", "768x1344", "2X3,"]) == ((224, 224), (512, 512), (768, 1344), (2, 3))
    assert parse_image_sizes(["65536x1"]) == ((65536, 1),)
    for bad in ("0", "1x0", "1x2x3", "x", "1_0", "١", "-4"):
        with pytest.raises(UsageError) as error:
            parse_image_sizes([bad])
        assert str(error.value) == f"--image-size `{bad}` is not a size: use 1024 or HEIGHTxWIDTH, e.g. 768x1344"
    with pytest.raises(UsageError) as large:
        parse_image_sizes(["1x65537"])
    assert str(large.value) == "--image-size `1x65537` is more than 65536 pixels a side"


def test_parse_int_list_and_choices():
    assert parse_int_list(["1,8", " 2 ", "16,"], "--batch-size", limit=16) == (1, 8, 2, 16)
    assert parse_int_list(["1000000"], "--seq-len") == (1_000_000,)
    for bad in ("0", "-1", "1.5", "x", "٣"):
        with pytest.raises(UsageError) as error:
            parse_int_list([bad], "--batch-size")
        assert str(error.value) == f"--batch-size `{bad}` is not a positive whole number"
    with pytest.raises(UsageError) as large:
        parse_int_list(["17"], "--batch-size", limit=1600)
        parse_int_list(["1601"], "--batch-size", limit=1600)
    assert str(large.value) == "--batch-size `1601` is more than 1,600"
    assert parse_choices(["sdpa, eager", "flash"], "--attn", ("sdpa", "eager", "flash")) == ("sdpa", "eager", "flash")
    with pytest.raises(UsageError) as error:
        parse_choices(["sdpa,math"], "--attn", ("sdpa", "eager"))
    assert str(error.value) == "--attn `math` is not one of sdpa, eager"
