"""Any architecture, exact: tied weights once, value checks answered, the attention that ran (issue 12)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from accelerate.utils import calculate_maximum_sizes
from vramplan.build import build_model
from vramplan.errors import SimulationError
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.measure.weights import measure_weights
from vramplan.spec import ModelSpec
from vramplan.testing.breadth import ARCHITECTURES, real_cpu_model


def _meta(name: str):
    config = ARCHITECTURES[name]
    return build_model(ModelSpec(reference=name, model_id=name, library="transformers", source="test", config=config))


def _text(seq_len: int = 64, dtype: str = "float32", attn: str = "sdpa") -> InferenceCase:
    return InferenceCase(batch_size=2, dtype=dtype, attn=attn, device="cpu", seq_len=seq_len)


def _distinct_bytes(model: nn.Module) -> int:
    storages = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers()]}
    return sum(storages.values())


@pytest.mark.parametrize("name", ["bart", "t5"])
def test_tied_weights_count_once_as_from_pretrained_holds_them(name):
    meta = _meta(name)
    real, _ = real_cpu_model(ARCHITECTURES[name], "float32", "sdpa")
    weights = measure_weights(meta)
    assert weights.parameter_count == sum(p.numel() for p in real.parameters())
    assert weights.total_bytes == _distinct_bytes(real)
    # accelerate's own figure, on the untied build, is kept for the note
    assert weights.accelerate_total_bytes == calculate_maximum_sizes(meta)[0] > weights.total_bytes
    assert ("decoder.embed_tokens.weight", "shared.weight") in weights.tied
    note = weights.tie_note()
    assert "accelerate estimate-memory" in note and "decoder.embed_tokens.weight = shared.weight" in note


def test_tied_weights_count_once_in_the_simulation():
    real, _ = real_cpu_model(ARCHITECTURES["bart"], "bfloat16", "sdpa")
    m = measure_inference(_meta("bart"), _text(dtype="bfloat16"), reference="bart")
    assert m.parameter_bytes + m.buffer_bytes == _distinct_bytes(real)


def test_untied_models_keep_accelerates_figures():
    weights = measure_weights(_meta("bert"))
    assert weights.accelerate_total_bytes is None and weights.tie_note() is None
    assert weights.total_bytes == calculate_maximum_sizes(_meta("bert"))[0]


def test_bart_tables_carry_the_accelerate_note(run_cli, write_config):
    directory = write_config("bart", ARCHITECTURES["bart"])
    text = run_cli("estimate", str(directory))
    assert text.code == 0 and "`accelerate estimate-memory` builds them untied and prints" in text.out
    markdown = run_cli("estimate", str(directory), "--format", "markdown")
    assert "- Note: Tied weights counted once" in markdown.out
    entry = run_cli("estimate", str(directory), "--format", "json").json()["models"][0]
    assert entry["accelerate_total_bytes"] > entry["weights"]["float32"]["total_bytes"]
    assert entry["parameters"] == sum(p.numel() for p in real_cpu_model(ARCHITECTURES["bart"], "float32", "sdpa")[0].parameters())


@pytest.mark.parametrize("name", ["gpt2_pad", "deberta-v2", "bart"])
def test_value_checks_are_answered(name):
    """The padding warning (gpt2 with pad_token_id, deberta-v2) and BART's mask check read a bool."""
    m = measure_inference(_meta(name), _text(), reference=name)
    assert m.peak_allocated_bytes > m.parameter_bytes


class _ReadsALength(nn.Module):
    """A forward whose tensor size comes from a value it reads: cannot be simulated without data."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        n = int(x.sum().item())
        return self.proj(x) + torch.zeros(n)


def test_a_number_read_that_can_set_a_size_is_refused_with_its_reason():
    with torch.device("meta"):
        model = _ReadsALength()
    case = InferenceCase(batch_size=1, dtype="float32", attn="sdpa", device="cpu", image_size=(4, 4))
    with pytest.raises(SimulationError, match=r"reads a torch.float32 tensor's value"):
        measure_inference(model, case, reference="reads-a-length")


@pytest.mark.parametrize("name", ["deberta-v2", "gemma2", "convnext"])
def test_the_attention_label_shows_what_ran(name, run_cli, write_config):
    real, ran = real_cpu_model(ARCHITECTURES[name], "float32", "sdpa")
    assert ran == "eager"  # no SDPA path in transformers for these
    meta = _meta(name)
    case = _text() if "input_ids" == meta.main_input_name else InferenceCase(
        batch_size=1, dtype="float32", attn="sdpa", device="cpu", image_size=(64, 64))
    assert measure_inference(meta, case, reference=name).attn_implementation == "eager"
    directory = write_config(name, ARCHITECTURES[name])
    size = ["--seq-len", "64"] if case.seq_len else ["--image-size", "64"]
    result = run_cli("estimate", str(directory), "--mode", "inference", *size, "--device", "cpu", "--format", "json")
    entry = result.json()["models"][0]["inference"][0]
    assert (entry["attn"], entry["attn_implementation"]) == ("sdpa", "eager")


def test_the_attention_label_keeps_sdpa_where_it_ran():
    assert measure_inference(_meta("bert"), _text(), reference="bert").attn_implementation == "sdpa"
    assert measure_inference(_meta("bert"), _text(attn="eager"), reference="bert").attn_implementation == "eager"
