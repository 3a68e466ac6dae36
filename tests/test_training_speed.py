"""The training sweep's shortcuts change no figure: a sweep equals each case simulated afresh.

The sweep prepares a trainee once per case less its batch (`training._trainee_key`), sizes the
linear probe once per input (`training._probe_key`), and remembers operator outputs, in-place
operators included (`activations._run_meta`). The reference simulates every case on its own copy
of the model with every operator's meta kernel run (`activations.operators_run_afresh`).
"""

from __future__ import annotations

import copy

import pytest
from vramplan.build import build_model
from vramplan.measure import training
from vramplan.measure.activations import operators_run_afresh
from vramplan.measure.training import TrainingCase, measure_training, measure_training_sweep
from vramplan.spec import ModelSpec

DINOV3_VIT = {
    "model_type": "dinov3_vit", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
    "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16,
}
DINOV3_CONVNEXT = {"model_type": "dinov3_convnext", "depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]}
VIT_CLS = {
    "model_type": "vit", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
    "num_hidden_layers": 2, "image_size": 64, "patch_size": 16, "num_labels": 10,
    "architectures": ["ViTForImageClassification"],
}
TRAINS = ({"freeze": "backbone"}, {"lora_rank": 4}, {})


def _meta(name: str, config: dict):
    return build_model(ModelSpec(reference=name, model_id=name, library="transformers", source="test", config=config))


def _cases(sizes: tuple[int, ...], device: str, precision: str) -> list[TrainingCase]:
    return [TrainingCase(batch_size=batch, image_size=(size, size), device=device, precision=precision, **trains)
            for trains in TRAINS for size in sizes for batch in (1, 3)]


@pytest.mark.parametrize("name, config, sizes, device, precision", [
    ("speed-dinov3-vit", DINOV3_VIT, (32, 64), "cuda", "amp-bf16"),
    ("speed-dinov3-convnext", DINOV3_CONVNEXT, (32, 64), "cuda", "amp-bf16"),
    ("speed-vit-cls", VIT_CLS, (64,), "cpu", "fp32"),  # a task class: its own head and loss
])
def test_sweep_equals_each_case_simulated_afresh(name, config, sizes, device, precision):
    model = _meta(name, config)
    cases = _cases(sizes, device, precision)
    swept = [measure_training(model, case, reference=name) for case in cases]  # what the sweep runs
    # one trainee per (what trains, input size), fed each batch: the reuse being checked happens
    assert len(training._TRAINEES[model]) == len(cases) // 2
    assert measure_training_sweep(model, cases, reference=name) == swept  # remembered results
    assert model not in training._TRAINEES  # the sweep drops its trainees
    with operators_run_afresh():
        afresh = [measure_training(copy.deepcopy(model), case, reference=name) for case in cases]
    for case, got, want in zip(cases, swept, afresh):
        assert got.as_json() == want.as_json(), case
        assert (got.trainable_parameters, got.phase_peaks) == (want.trainable_parameters, want.phase_peaks), case


def test_in_place_operators_are_remembered_only_when_they_change_no_metadata_or_storage():
    import torch
    from vramplan.measure.activations import _run_meta

    aten = torch.ops.aten
    for _ in range(2):  # the second call has the first one's key: it must act as the kernel does
        x = torch.empty(2, 3, device="meta")
        assert _run_meta(aten.add_.Tensor, (x, x), {}) is x  # remembered: returns its argument
        assert _run_meta(aten._foreach_mul_.Scalar, ([x, x], 2.0), {}) is None
        _run_meta(aten.unsqueeze_.default, (x, 0), {})  # changes the shape: always run
        assert x.shape == (1, 2, 3)
        a, b = torch.empty(4, device="meta"), torch.empty(4, device="meta")
        _run_meta(aten.set_.source_Tensor, (a, b), {})  # same metadata, another storage: always run
        assert a.untyped_storage()._cdata == b.untyped_storage()._cdata
