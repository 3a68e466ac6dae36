"""Two simulated training steps against two real ones on the CPU allocator, on small random-weight models.

The real steps run the same loop (`measure.training.run_steps`) under torch.profiler
(profile_memory=True) with oneDNN off (its convolution scratchpad is not modelled); the peak
counts the weights, the batch, gradients, optimizer state, activations and temporaries. The
simulated `peak_allocated_bytes` for the CPU target must agree within 2%.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
DINOV3_CONVNEXT = {"model_type": "dinov3_convnext", "depths": [1, 1, 2, 1], "hidden_sizes": [16, 32, 64, 128]}
SWIN_CLS = {
    "model_type": "swin", "embed_dim": 24, "depths": [1, 1], "num_heads": [2, 4], "image_size": 64, "window_size": 4,
    "num_labels": 10, "architectures": ["SwinForImageClassification"],
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


def _compare(config: dict, case: TrainingCase, *, fresh: bool = False):
    simulated = measure_training(_meta(config), case, reference="tiny")
    real = _real_in_a_fresh_process(config, case) if fresh else cpu_training_peak(random_task_model(config), case)
    assert abs(simulated.peak_allocated_bytes - real.peak) <= TOLERANCE * real.peak, (
        f"simulated {simulated.peak_allocated_bytes} vs allocator {real.peak} bytes"
    )
    return simulated, real


def _real_in_a_fresh_process(config: dict, case: TrainingCase):
    """The real two steps in a new interpreter. Known limitation of the in-process check: after the whole suite's
    earlier tests (not after any one file of them), the profiler of BERT's checkpointed fp32 steps recorded no
    allocation after the trainee's copy (a real peak of weights x 2, 1,283,736 bytes, against 3.3 MB simulated,
    and 3.3 MB real in a fresh process); the cause is not found. The self-autocast check below does the same."""
    import json

    from vramplan.testing.training import RealTrainingPeak

    script = ("import json, sys; from vramplan.measure.training import TrainingCase; "
              "from vramplan.testing.training import cpu_training_peak, random_task_model; "
              f"real = cpu_training_peak(random_task_model(json.loads(sys.argv[1])), {case!r}); "
              "print(json.dumps([real.peak, real.phase_peaks]))")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(config)], capture_output=True, text=True,
                          timeout=300, check=True)
    peak, phase_peaks = json.loads(done.stdout.strip().splitlines()[-1])
    return RealTrainingPeak(peak=peak, phase_peaks=phase_peaks)


# fp32 + AdamW is test_adamw_step_temporaries_match_the_cpu_run; the others cross precision and optimizer.
@pytest.mark.parametrize("precision,optimizer", [("amp-bf16", "adamw"), ("fp32", "sgd"), ("amp-bf16", "sgd")])
def test_vit_classifier_two_steps(precision, optimizer):
    _compare(VIT_CLS, TrainingCase(batch_size=2, precision=precision, optimizer=optimizer, device="cpu",
                                   image_size=(64, 64)))


@pytest.mark.parametrize("precision", ["fp32", "amp-bf16", "bf16"])
def test_dinov3_linear_probe_full_fine_tune(precision):
    _compare(DINOV3_VIT, TrainingCase(batch_size=2, precision=precision, device="cpu", image_size=(96, 96),
                                      num_labels=10))


@pytest.mark.parametrize("precision,optimizer", [("fp32", "adamw"), ("amp-bf16", "sgd")])
def test_dinov3_convnext_linear_probe_full_fine_tune(precision, optimizer):
    _compare(DINOV3_CONVNEXT, TrainingCase(batch_size=2, precision=precision, optimizer=optimizer, attn="eager",
                                           device="cpu", image_size=(96, 96), num_labels=10))


@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
def test_swin_classifier(precision):
    # Swin's attention mask carries the relative position bias, which needs a gradient: the CPU runs math.
    _compare(SWIN_CLS, TrainingCase(batch_size=2, precision=precision, device="cpu", image_size=(64, 64)))


@pytest.mark.parametrize("precision,attn", [("fp32", "sdpa"), ("amp-bf16", "sdpa"), ("amp-bf16", "eager")])
def test_bert_classifier(precision, attn):
    _compare(BERT_CLS, TrainingCase(batch_size=2, precision=precision, attn=attn, device="cpu", seq_len=64))


@pytest.mark.parametrize("precision,optimizer", [("fp32", "adamw"), ("amp-bf16", "sgd")])
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


@pytest.mark.parametrize("config,size", [(DINOV3_VIT, (96, 96))])
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


@pytest.mark.parametrize("config,kw,precision", [(DINOV3_VIT, {"image_size": (96, 96)}, "amp-bf16"),
                                                (BERT_CLS, {"seq_len": 64}, "fp32")])
def test_gradient_checkpointing(config, kw, precision):
    case = TrainingCase(batch_size=2, precision=precision, grad_checkpointing=True, device="cpu", num_labels=10, **kw)
    checkpointed, _ = _compare(config, case, fresh=True)
    plain = measure_training(_meta(config), TrainingCase(batch_size=2, precision=precision, device="cpu",
                                                         num_labels=10, **kw), reference="tiny")
    assert checkpointed.activation_bytes <= plain.activation_bytes


class _SelfAutocastBackbone:
    """A small ViT-like backbone whose forward runs its last block under torch.autocast, as DINOv3's heads do."""

    @staticmethod
    def build(device: str):
        import torch
        import torch.nn as nn

        class Block(nn.Module):  # pre-norm attention and MLP, attention through F.scaled_dot_product_attention
            def __init__(self) -> None:
                super().__init__()
                self.norm1, self.norm2 = nn.LayerNorm(128), nn.LayerNorm(128)
                self.qkv, self.proj = nn.Linear(128, 384), nn.Linear(128, 128)
                self.mlp = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))

            def forward(self, x):
                b, n, _ = x.shape
                q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, 4, 32).permute(2, 0, 3, 1, 4)
                attn = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                x = x + self.proj(attn.transpose(1, 2).reshape(b, n, 128))
                return x + self.mlp(self.norm2(x))

        class Backbone(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.patch = nn.Conv2d(3, 128, 16, stride=16)
                self.blocks = nn.ModuleList(Block() for _ in range(2))
                self.head = nn.Sequential(nn.LayerNorm(128), nn.Linear(128, 512), nn.GELU(), nn.Linear(512, 128))

            def forward(self, x):
                x = self.patch(x).flatten(2).transpose(1, 2)
                for block in self.blocks:
                    x = block(x)
                with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                    return self.head(x)

        torch.manual_seed(0)
        with torch.device(device):
            return Backbone()


@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
def test_model_that_opens_autocast_itself(precision):
    # Batch 8 at 128 px: activations, not weights and optimizer state, make the peak, so casts matter.
    case = TrainingCase(batch_size=8, precision=precision, device="cpu", image_size=(128, 128), num_labels=10)
    simulated = measure_training(_SelfAutocastBackbone.build("meta"), case, reference="self-autocast")
    # The real run gets a fresh process: after some earlier tests of the full suite, the same real run in this
    # process peaks ~2 MB (16%) lower in its forward, from state those tests leave (not yet found; see the notes).
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from test_training_cpu import _SelfAutocastBackbone;"
        "from vramplan.measure.training import TrainingCase;"
        "from vramplan.testing.training import cpu_training_peak;"
        f"case = TrainingCase(batch_size=8, precision={precision!r}, device='cpu', image_size=(128, 128), num_labels=10);"
        "print(cpu_training_peak(_SelfAutocastBackbone.build('cpu'), case).peak)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=300, check=True)
    real = int(done.stdout.split()[-1])
    assert abs(simulated.peak_allocated_bytes - real) <= TOLERANCE * real, (
        f"simulated {simulated.peak_allocated_bytes} vs allocator {real} bytes"
    )
