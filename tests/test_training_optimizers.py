"""Optimizers and precisions beyond AdamW/SGD in fp32/bf16: their state, their step, their scaler.

The real ones run against the CPU allocator (`vramplan.testing.training.cpu_training_peak`)
within 2%; bitsandbytes' 8-bit AdamW, which cannot run here, is checked against its state
sizes worked by hand from its source.
"""

from __future__ import annotations

import pytest
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


VIT_CLS = {
    "model_type": "vit", "hidden_size": 96, "intermediate_size": 384, "num_attention_heads": 3,
    "num_hidden_layers": 2, "image_size": 64, "patch_size": 16, "num_labels": 10,
    "architectures": ["ViTForImageClassification"],
}


def _compare(config: dict, case: TrainingCase):
    from vramplan.testing.training import cpu_training_peak, random_task_model

    simulated = measure_training(_meta(config), case, reference="tiny")
    real = cpu_training_peak(random_task_model(config), case)
    assert abs(simulated.peak_allocated_bytes - real.peak) <= 0.02 * real.peak, (
        f"simulated {simulated.peak_allocated_bytes} vs allocator {real.peak} bytes"
    )
    return simulated, real


@pytest.mark.parametrize("precision,optimizer", [
    ("fp32", "adamw-fused"), ("amp-bf16", "adafactor"), ("fp32", "adafactor"),
    ("amp-fp16", "adamw"), ("amp-fp16", "adamw-fused"),
])
def test_optimizer_and_scaler_steps_match_the_cpu_run(precision, optimizer):
    case = TrainingCase(batch_size=2, precision=precision, optimizer=optimizer, device="cpu", image_size=(64, 64))
    simulated, real = _compare(VIT_CLS, case)
    for phase, peak in simulated.phase_peaks:  # each phase of the second step, not only the peak
        assert abs(peak - real.phase_peaks[phase]) <= 0.02 * real.phase_peaks[phase], phase


def test_fused_adamw_step_makes_no_intermediates():
    """torch._fused_adamw_ updates in place: the step adds only the state (and its step counters)."""
    case = TrainingCase(batch_size=1, precision="fp32", optimizer="adamw-fused", device="cpu", image_size=(64, 64))
    fused = measure_training(_meta(VIT_CLS), case, reference="tiny")
    loop = measure_training(_meta(VIT_CLS), TrainingCase(batch_size=1, precision="fp32", device="cpu",
                                                         image_size=(64, 64)), reference="tiny")
    step = dict(fused.phase_peaks)["optimizer step"]
    assert step < dict(loop.phase_peaks)["optimizer step"]
    held = 4 * fused.parameter_bytes  # weights, gradients, two states
    batch = 3 * 64 * 64 * 4
    # + the batch, 40 float32 step counters and the loss; the for-loop's largest-parameter temporaries are 590 kB
    assert held <= step <= held + batch + 16 * 1024


def test_adafactor_keeps_factored_second_moments():
    """Rows + columns for matrices, a full moment for vectors: a small fraction of AdamW's two states."""
    case = TrainingCase(batch_size=2, precision="fp32", optimizer="adafactor", device="cpu", image_size=(64, 64))
    m = measure_training(_meta(VIT_CLS), case, reference="tiny")
    assert 0 < m.optimizer_state_bytes < 0.1 * m.parameter_bytes


def test_adamw_8bit_state_is_bitsandbytes_sizes():
    """The ViT above, worked by hand from bitsandbytes' init_state (see vramplan.measure.optimizers).

    8-bit (>= 4096 elements): 2 B per element + 2 float32 absmax per 256-element block.
      patch projection 96x3x16x16 = 73728: 147456 + 8 * 288 = 149760
      per layer: q, k, v, out 96x96 (9216): 4 * (18432 + 8 * 36) = 74880;
                 fc1, fc2 384x96 (36864): 2 * (73728 + 8 * 144) = 149760
    32-bit (< 4096): 8 B per element.
      cls token 96, position embeddings 17x96 = 1632, patch bias 96: 8 * 1824 = 14592
      per layer: 5 biases of 96 (q, k, v, out, fc2) + fc1 bias 384 + 4 layer-norm vectors of 96: 8 * 1248 = 9984
      final norm 2 x 96, classifier 10x96 + 10: 8 * 1162 = 9296
    Quantisation maps (signed, unsigned), once: 2 * 256 * 4 = 2048.
    Total: 149760 + 2 * (74880 + 149760 + 9984) + 14592 + 9296 + 2048 = 644944.
    """
    case = TrainingCase(batch_size=2, precision="fp32", optimizer="adamw-8bit", device="cpu", image_size=(64, 64))
    m = measure_training(_meta(VIT_CLS), case, reference="tiny")
    assert m.optimizer_state_bytes == 644944




def test_adamw_8bit_small_states_stay_float32_with_bf16_weights():
    """bitsandbytes keeps a parameter under 4096 elements in two float32 states whatever its dtype: with bf16
    weights the total is the fp32 case's 644944 bytes (the 8-bit states are uint8 either way)."""
    case = TrainingCase(batch_size=2, precision="bf16", optimizer="adamw-8bit", device="cpu", image_size=(64, 64))
    assert measure_training(_meta(VIT_CLS), case, reference="tiny").optimizer_state_bytes == 644944

def test_adamw_8bit_state_on_the_cuda_target_holds_its_quantisation_maps():
    """The same states on the CUDA target, each block rounded up to 512 bytes as the caching allocator rounds it.

    8-bit: patch projection 2 x 73728 + 2 x 1536 (288 absmax, 1152 B) = 150528;
      per layer: q, k, v, out 4 * (2 x 9216 + 2 x 512) = 77824; fc1, fc2 2 * (2 x 36864 + 2 x 1024) = 151552.
    32-bit, 2 states of 512-byte blocks: cls token 2 x 512, position embeddings 2 x 6656, patch bias 2 x 512
      = 15360; per layer 5 biases 10 x 512 + fc1 bias 2 x 1536 + 4 norm vectors 8 x 512 = 12288;
      final norm 4 x 512, classifier 2 x 4096 + its bias 2 x 512 = 11264.
    Quantisation maps moved to the device: 2 x 1024 (kept on the host they would be missed, reading low).
    Total: 150528 + 2 * (77824 + 151552 + 12288) + 15360 + 11264 + 2048 = 662528.
    """
    case = TrainingCase(batch_size=2, precision="fp32", optimizer="adamw-8bit", device="cuda", image_size=(64, 64))
    m = measure_training(_meta(VIT_CLS), case, reference="tiny")
    assert m.optimizer_state_bytes == 662528

def test_cli_sweeps_the_optimizers_and_says_8bit_is_modelled(run_cli, write_config):
    import json

    model = str(write_config("tiny-vit", {**SMALL_DINOV3, "hidden_size": 192, "intermediate_size": 768,
                                          "num_attention_heads": 3}))
    done = run_cli("estimate", model, "--mode", "train", "--image-size", "64", "--precision", "amp-fp16",
                   "--optimizer", "adamw,adamw-fused,adafactor,adamw-8bit", "--format", "json")
    assert done.code == 0, done.err
    cases = json.loads(done.out)["models"][0]["training"]
    assert [(c["precision"], c["optimizer"]) for c in cases] == [
        ("amp-fp16", "adamw"), ("amp-fp16", "adamw-fused"), ("amp-fp16", "adafactor"), ("amp-fp16", "adamw-8bit")]
    assert all("error" not in c for c in cases)
    adamw, fused, adafactor, eight = (c["optimizer_state_bytes"] for c in cases)
    assert adafactor < eight < adamw < fused
    assert fused - adamw == 512 * 42  # fused keeps `step` on the device: a float32 per parameter, a 512-byte block
    assert "adamw-8bit is modelled" in done.err
