"""How many gradients exist at each phase's peak, so that a multi-GPU plan shards exactly those.

A gradient is allocated by autograd and tagged once accumulated into `.grad`; one allocated before a
phase's peak and tagged after it was live at that peak, and is counted there (as the peak's own breakdown
does). A plan derived from a step whose peak is elsewhere (the optimizer step) takes the backward phase's
gradients out of backward's activations instead of keeping them unsharded.
"""

from __future__ import annotations

import dataclasses

import pytest

from vramplan.build import build_model
from vramplan.sources.resolve import resolve_model
from vramplan.measure.training import TrainingCase, measure_training
from vramplan.plan.parallel import ParallelPlan
from vramplan.plan.training_plan import plan_training
from vramplan.spec import ModelSpec
from vramplan.testing.dist_step import MODELS as CONFIGS


def test_backward_peak_gradients_equal_the_peaks_own_breakdown():
    config = {**CONFIGS["vit"], "architectures": ["ViTForImageClassification"]}
    meta = build_model(ModelSpec(reference="vit", model_id="vit", library="transformers", source="test", config=config))
    case = TrainingCase(image_size=(224, 224), batch_size=2, precision="fp32", optimizer="adamw", device="cpu")
    measured = measure_training(meta, case, reference="vit")
    assert measured.peak_phase == "backward"
    assert dict(measured.phase_gradients)["backward"] == measured.gradient_bytes > 0
    assert dict(measured.phase_gradients)["forward"] == 0  # set_to_none: none in the second step's forward


@pytest.fixture(scope="module")
def step_peaking():
    meta = build_model(resolve_model("dinov3-vits16"))
    case = TrainingCase(image_size=(224, 224), batch_size=1, precision="fp32", optimizer="adamw", device="cuda")
    measured = measure_training(meta, case, reference="dinov3-vits16")
    assert measured.peak_phase == "optimizer step"
    return meta, measured


def test_a_plan_takes_backwards_own_gradients_out_when_the_peak_is_elsewhere(step_peaking):
    meta, measured = step_peaking
    made = dict(measured.phase_gradients)["backward"]
    assert 0 < made < measured.trainable_parameters * 4
    fsdp = [ParallelPlan("fsdp", gpus=4, precision="fp32")]
    [known] = plan_training(meta, measured, fsdp, "dinov3-vits16")
    [unknown] = plan_training(meta, dataclasses.replace(measured, phase_gradients=()), fsdp, "dinov3-vits16")
    if known.peak.peak_phase == "backward":
        # the unknown case keeps every gradient made unsharded in Activ and sizes FSDP2's buffers for all
        assert known.peak.activation_bytes < unknown.peak.activation_bytes
    assert known.peak.per_gpu_peak_bytes <= unknown.peak.per_gpu_peak_bytes
    # the same figures as a measurement whose own peak is backward with those gradients
    as_if = dataclasses.replace(measured, peak_phase="backward", gradient_bytes=made, phase_gradients=())
    [same] = plan_training(meta, as_if, fsdp, "dinov3-vits16")
    assert same.peak.per_gpu_peak_bytes == known.peak.per_gpu_peak_bytes
