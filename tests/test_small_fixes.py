"""Small fixes of issue 13: modules kept in float32 as transformers 5 keeps them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vramplan.measure.activations import InferenceCase, measure_inference


class _TwoLayers(nn.Module):
    """`body` (100x100 + 100) and `head` (100x10 + 10); which one stays float32 is set per test."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(100, 100)
        self.head = nn.Linear(100, 10)

    def forward(self, pixel_values):
        return self.head(self.body(pixel_values))


BODY, HEAD = 100 * 100 + 100, 100 * 10 + 10


def _parameter_bytes(model: nn.Module, dtype: str) -> int:
    case = InferenceCase(batch_size=1, dtype=dtype, attn="sdpa", device="cpu", image_size=(2, 100))
    return measure_inference(model, case, reference="two-layers").parameter_bytes


def _model(**keep: list[str]) -> nn.Module:
    with torch.device("meta"):
        model = _TwoLayers()
    for name, modules in keep.items():
        setattr(model, name, modules)
    return model


@pytest.mark.parametrize(
    "dtype, expected",
    [("float16", BODY * 2 + HEAD * 4), ("bfloat16", (BODY + HEAD) * 2), ("float32", (BODY + HEAD) * 4)],
)
def test_keep_in_fp32_modules_applies_to_float16_only(dtype, expected):
    """transformers 5 `_get_dtype_plan`: `_keep_in_fp32_modules` guards fp16 overflow; bf16 is cast."""
    assert _parameter_bytes(_model(_keep_in_fp32_modules=["head"]), dtype) == expected


@pytest.mark.parametrize(
    "dtype, expected",
    [("float16", BODY * 2 + HEAD * 4), ("bfloat16", BODY * 2 + HEAD * 4), ("float32", (BODY + HEAD) * 4)],
)
def test_keep_in_fp32_modules_strict_applies_to_both_half_types(dtype, expected):
    assert _parameter_bytes(_model(_keep_in_fp32_modules_strict=["head"]), dtype) == expected


def test_a_real_transformers_model_keeps_what_from_pretrained_keeps():
    """T5's `wo` layers (`_keep_in_fp32_modules = ["wo"]`) against transformers' own dtype plan."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    wo = sum(p.numel() for n, p in model.named_parameters() if ".wo." in n)
    assert set(model._get_dtype_plan(torch.float16)) == {"wo"} and model._get_dtype_plan(torch.bfloat16) == {}

    def parameter_bytes(dtype: str) -> int:
        case = InferenceCase(batch_size=1, dtype=dtype, attn="eager", device="cpu", seq_len=8)
        return measure_inference(model, case, reference="t5").parameter_bytes

    # float16 keeps the `wo` values in 4 bytes, bfloat16 casts them to 2 like everything else.
    assert parameter_bytes("float16") - parameter_bytes("bfloat16") == wo * 2


def test_one_line_reasons():
    from vramplan.errors import SimulationError, one_line

    assert one_line(KeyError("a\n  b"), typed=True) == "KeyError: 'a\\n b'"
    assert one_line(ValueError("two\nlines")) == "two lines"
    assert one_line(ValueError()) == "ValueError"
    ours = SimulationError("m", "needs data")
    assert one_line(ours, typed=True) == one_line(ours) == str(ours)


def test_tied_weights_are_one_tensor_in_the_simulation():
    """BERT's MLM decoder shares the word embeddings: from_pretrained holds them once, and so must the simulation."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    with torch.device("meta"):
        model = BertForMaskedLM(config)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    values = sum(p.numel() for p in model.parameters())  # each tied tensor once
    case = InferenceCase(batch_size=1, dtype="float32", attn="sdpa", device="cpu", seq_len=16)
    assert measure_inference(model, case, reference="bert-mlm").parameter_bytes == values * 4


PROBE = 4_000  # the linear probe the training simulation puts on a bare backbone (3 features x 1000 labels + bias)


@pytest.mark.parametrize("keep, precision, expected", [
    ("_keep_in_fp32_modules", "fp16", BODY * 2 + HEAD * 4), ("_keep_in_fp32_modules", "bf16", (BODY + HEAD) * 2),
    ("_keep_in_fp32_modules_strict", "fp16", BODY * 2 + HEAD * 4),
    ("_keep_in_fp32_modules_strict", "bf16", BODY * 2 + HEAD * 4),
    ("_keep_in_fp32_modules", "fp32", (BODY + HEAD) * 4),
])
def test_training_keeps_the_modules_transformers_keeps(keep, precision, expected):
    """Pure fp16/bf16 training starts from from_pretrained(dtype=...): the same dtype plan as inference."""
    from vramplan.measure.training import TrainingCase, measure_training

    case = TrainingCase(batch_size=1, precision=precision, device="cpu", image_size=(2, 100))
    probe = PROBE * (4 if precision == "fp32" else 2)
    assert measure_training(_model(**{keep: ["head"]}), case, reference="two-layers").parameter_bytes == expected + probe
