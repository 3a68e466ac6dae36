"""Two simulated training steps against two real ones on the CPU allocator, on small random-weight models.

The real steps run the same loop (`measure.training.run_steps`) under torch.profiler
(profile_memory=True) with oneDNN off (its convolution scratchpad is not modelled); the peak
counts the weights, the batch, gradients, optimizer state, activations and temporaries. The
simulated `peak_allocated_bytes` for the CPU target must agree within 2%.
"""

from __future__ import annotations

import pytest
from vramplan.build import build_model
from vramplan.measure.training import TrainingCase, measure_training
from vramplan.spec import ModelSpec
from vramplan.testing.training import cpu_training_peak, random_task_model

TOLERANCE = 0.02

VIT_CLS = {
    "model_type": "vit", "hidden_size": 96, "intermediate_size": 384, "num_attention_heads": 3,
    "num_hidden_layers": 2, "image_size": 64, "patch_size": 16, "num_labels": 10,
    "architectures": ["ViTForImageClassification"],
}
DINOV3_VIT = {  # a bare backbone: trained through the linear probe
    "model_type": "dinov3_vit", "hidden_size": 192, "intermediate_size": 768, "num_attention_heads": 3,
    "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16,
}
BERT_CLS = {
    "model_type": "bert", "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
    "num_hidden_layers": 2, "vocab_size": 500, "max_position_embeddings": 256,
    "architectures": ["BertForSequenceClassification"],
}
GPT2_LM = {
    "model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 500, "n_positions": 256,
    "bos_token_id": 0, "eos_token_id": 0, "architectures": ["GPT2LMHeadModel"],
}


def _meta(config: dict):
    return build_model(ModelSpec(reference="tiny", model_id="tiny", library="transformers", source="test", config=config))


def _compare(config: dict, case: TrainingCase):
    simulated = measure_training(_meta(config), case, reference="tiny")
    real = cpu_training_peak(random_task_model(config), case)
    assert abs(simulated.peak_allocated_bytes - real.peak) <= TOLERANCE * real.peak, (
        f"simulated {simulated.peak_allocated_bytes} vs allocator {real.peak} bytes"
    )
    return simulated, real


@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_vit_classifier_two_steps(precision, optimizer):
    _compare(VIT_CLS, TrainingCase(batch_size=2, precision=precision, optimizer=optimizer, device="cpu",
                                   image_size=(64, 64)))


@pytest.mark.parametrize("precision", ["fp32", "amp-bf16", "bf16"])
def test_dinov3_linear_probe_full_fine_tune(precision):
    _compare(DINOV3_VIT, TrainingCase(batch_size=2, precision=precision, device="cpu", image_size=(96, 96),
                                      num_labels=10))


@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bert_classifier(precision, attn):
    _compare(BERT_CLS, TrainingCase(batch_size=2, precision=precision, attn=attn, device="cpu", seq_len=64))


@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_gpt2_language_model(precision, optimizer):
    _compare(GPT2_LM, TrainingCase(batch_size=2, precision=precision, optimizer=optimizer, device="cpu", seq_len=64))


def test_adamw_step_temporaries_match_the_cpu_run():
    """The for-loop AdamW's step temporaries (sqrt, division) on top of params + grads + two states."""
    case = TrainingCase(batch_size=1, precision="fp32", optimizer="adamw", device="cpu", image_size=(64, 64))
    simulated, real = _compare(VIT_CLS, case)
    sim_step = dict(simulated.phase_peaks)["optimizer step"]
    assert simulated.peak_phase == "optimizer step"
    assert abs(sim_step - real.phase_peaks["optimizer step"]) <= 0.005 * real.phase_peaks["optimizer step"]
    # Peak = parameters + gradients + two states + the largest parameter's two temporaries.
    assert simulated.gradient_bytes >= simulated.parameter_bytes  # a grad may sit in a larger storage
    assert simulated.optimizer_state_bytes >= 2 * simulated.parameter_bytes
    assert 0 < simulated.temp_bytes < simulated.parameter_bytes


def test_cuda_foreach_adamw_peaks_with_one_parameter_size_of_intermediates():
    """PyTorch's optimizer-in-backward tutorial: foreach AdamW peaks at params + grads + 2 states + ~1 param size."""
    case = TrainingCase(batch_size=1, precision="fp32", optimizer="adamw", device="cuda", image_size=(64, 64))
    m = measure_training(_meta(VIT_CLS), case, reference="tiny")
    assert m.peak_phase == "optimizer step"
    params = m.parameter_bytes
    assert m.gradient_bytes >= params and m.optimizer_state_bytes >= 2 * params
    assert params <= m.temp_bytes - 32 * 1024 * 1024 - 1024 * 1024 <= 1.1 * params  # minus cuBLAS workspaces


@pytest.mark.parametrize("config,size", [(DINOV3_VIT, (96, 96)), (VIT_CLS, (64, 64))])
def test_frozen_backbone_trains_only_the_head(config, size):
    case = TrainingCase(batch_size=2, precision="fp32", freeze="backbone", device="cpu", image_size=size, num_labels=10)
    simulated, _ = _compare(config, case)
    assert simulated.trainable_parameters < simulated.total_parameters
    assert simulated.optimizer_state_bytes <= 2 * 4 * simulated.trainable_parameters + 64


@pytest.mark.parametrize("config,kw", [(DINOV3_VIT, {"image_size": (96, 96)}), (GPT2_LM, {"seq_len": 64})])
def test_lora_through_peft(config, kw):
    case = TrainingCase(batch_size=2, precision="amp-bf16", lora_rank=4, device="cpu", num_labels=10, **kw)
    simulated, _ = _compare(config, case)
    assert simulated.trainable_parameters < simulated.total_parameters / 4


@pytest.mark.parametrize("config,kw", [(DINOV3_VIT, {"image_size": (96, 96)}), (BERT_CLS, {"seq_len": 64})])
@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
def test_gradient_checkpointing(config, kw, precision):
    case = TrainingCase(batch_size=2, precision=precision, grad_checkpointing=True, device="cpu", num_labels=10, **kw)
    checkpointed, _ = _compare(config, case)
    plain = measure_training(_meta(config), TrainingCase(batch_size=2, precision=precision, device="cpu",
                                                         num_labels=10, **kw), reference="tiny")
    assert checkpointed.activation_bytes <= plain.activation_bytes
