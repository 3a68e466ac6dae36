"""Inference memory by simulation: invariants, the allocator model, error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from vramplan.build import build_model
from vramplan.errors import SimulationError, UsageError
from vramplan.measure import overheads
from vramplan.measure.activations import (
    InferenceCase,
    InferenceMeasurement,
    measure_inference,
    measure_inference_sweep,
)
from vramplan.spec import ModelSpec

CATALOG = Path(__file__).resolve().parents[1] / "src" / "vramplan" / "catalog" / "dinov3"
MiB = 1024 * 1024

TINY_VIT = {
    "model_type": "dinov3_vit",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "num_register_tokens": 4,
    "patch_size": 16,
}
TINY_CONVNEXT = {"model_type": "dinov3_convnext", "depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]}
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 128,
}


def _build(config: dict, name: str = "tiny"):
    return build_model(ModelSpec(reference=name, model_id=name, library="transformers", source="test", config=config))


@pytest.fixture(scope="module")
def vit():
    return _build(TINY_VIT, "tiny-vit")


@pytest.fixture(scope="module")
def vit_s():
    config = json.loads((CATALOG / "dinov3-vits16-pretrain-lvd1689m.json").read_text())
    return _build(config, "dinov3-vits16")


def _vision(size: int, batch: int = 1, dtype: str = "bfloat16", attn: str = "sdpa", device: str = "cuda"):
    return InferenceCase(batch_size=batch, dtype=dtype, attn=attn, device=device, image_size=(size, size))


# --- invariants ------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cuda", "cpu"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_parts_add_up_to_the_peak(vit, device, attn):
    m = measure_inference(vit, _vision(224, 2, attn=attn, device=device), reference="tiny-vit")
    parts = m.parameter_bytes + m.buffer_bytes + m.activation_bytes + m.temp_bytes
    assert parts == m.peak_allocated_bytes
    assert m.peak_device_bytes == m.peak_allocated_bytes + sum(size for _, size in m.overheads)
    assert min(m.parameter_bytes, m.activation_bytes) > 0


def test_cpu_has_no_device_overheads(vit):
    m = measure_inference(vit, _vision(224, device="cpu"), reference="tiny-vit")
    assert m.overheads == ()
    assert m.peak_device_bytes == m.peak_allocated_bytes


def test_cuda_counts_blocks_workspaces_and_context(vit):
    cpu = measure_inference(vit, _vision(224, device="cpu"), reference="tiny-vit")
    cuda = measure_inference(vit, _vision(224, device="cuda"), reference="tiny-vit")
    # Every parameter is at least one 512-byte block on CUDA.
    assert cuda.parameter_bytes >= cpu.parameter_bytes
    assert cuda.parameter_bytes % overheads.MIN_BLOCK_SIZE == 0
    # cuBLAS's workspace is allocated through the caching allocator and kept.
    assert cuda.temp_bytes >= overheads.CUBLAS_WORKSPACE_BYTES
    names = dict(cuda.overheads)
    assert names["CUDA context"] == overheads.CUDA_CONTEXT_BYTES
    assert names["allocator cache (reserved - allocated)"] >= 0


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_activations_grow_with_batch_and_resolution(vit, device):
    def act(size, batch):
        return measure_inference(vit, _vision(size, batch, device=device), reference="tiny-vit").activation_bytes

    assert act(224, 1) < act(224, 2) < act(224, 4)
    assert act(224, 1) < act(320, 1) < act(512, 1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_eager_attention_needs_at_least_sdpa(vit, dtype, device):
    for size in (224, 512):
        sdpa = measure_inference(vit, _vision(size, dtype=dtype, device=device), reference="tiny-vit")
        eager = measure_inference(vit, _vision(size, dtype=dtype, attn="eager", device=device), reference="tiny-vit")
        assert eager.peak_allocated_bytes >= sdpa.peak_allocated_bytes
        assert eager.attention_kernel == "eager"


def test_bfloat16_weights_are_half_of_float32(vit):
    fp32 = measure_inference(vit, _vision(224, dtype="float32", device="cpu"), reference="tiny-vit")
    bf16 = measure_inference(vit, _vision(224, dtype="bfloat16", device="cpu"), reference="tiny-vit")
    assert bf16.parameter_bytes * 2 == fp32.parameter_bytes
    assert bf16.buffer_bytes == fp32.buffer_bytes  # RoPE frequencies stay float32, as transformers builds them


def test_attention_kernel_follows_the_target(vit):
    def kernel(dtype, device):
        return measure_inference(vit, _vision(224, dtype=dtype, device=device), reference="tiny-vit").attention_kernel

    assert kernel("bfloat16", "cuda") == "flash"  # H100: FlashAttention-2 for half types
    assert kernel("float32", "cuda") == "efficient"  # no flash for float32
    assert kernel("float32", "cpu") == "cpu-flash"


def test_flash_attention_is_simulated_as_sdpa_flash(vit):
    sdpa = measure_inference(vit, _vision(512), reference="tiny-vit")
    flash = measure_inference(vit, _vision(512, attn="flash"), reference="tiny-vit")
    assert flash.attention_kernel == "flash"
    assert flash.peak_allocated_bytes == sdpa.peak_allocated_bytes


def test_eager_attention_materialises_the_attention_matrix(vit_s):
    """The issue's figure: eager attention at 1024 px holds (heads, 4101, 4101) scores per image."""
    sdpa = measure_inference(vit_s, _vision(1024, dtype="float32"), reference="dinov3-vits16")
    eager = measure_inference(vit_s, _vision(1024, dtype="float32", attn="eager"), reference="dinov3-vits16")
    scores = 6 * 4101 * 4101 * 4  # ViT-S has 6 heads; 1024 px is 4,101 tokens
    assert eager.activation_bytes - sdpa.activation_bytes >= scores


def test_text_models_take_a_sequence_length():
    bert = _build(TINY_BERT, "tiny-bert")
    short = measure_inference(bert, InferenceCase(batch_size=2, dtype="float32", attn="sdpa", seq_len=32), reference="b")
    long = measure_inference(bert, InferenceCase(batch_size=2, dtype="float32", attn="sdpa", seq_len=128), reference="b")
    assert short.activation_bytes < long.activation_bytes
    entry = long.as_json()
    assert entry["seq_len"] == 128 and "image_size" not in entry


def test_models_without_attention_take_any_attention_setting():
    convnext = _build(TINY_CONVNEXT, "tiny-convnext")
    sdpa = measure_inference(convnext, _vision(224), reference="tiny-convnext")
    eager = measure_inference(convnext, _vision(224, attn="eager"), reference="tiny-convnext")
    assert sdpa.peak_allocated_bytes == eager.peak_allocated_bytes
    assert sdpa.attention_kernel == ""


def test_json_entry_has_the_documented_fields(vit):
    entry = measure_inference(vit, _vision(224, 2), reference="tiny-vit").as_json()
    assert entry["image_size"] == [224, 224]
    assert set(entry) == {
        "image_size", "batch_size", "dtype", "attn", "device", "parameter_bytes", "buffer_bytes",
        "activation_bytes", "temp_bytes", "peak_allocated_bytes", "peak_device_bytes", "attn_implementation",
    }
    assert all(isinstance(entry[k], int) for k in entry if k.endswith("_bytes"))


def test_non_square_images(vit):
    case = InferenceCase(batch_size=1, dtype="bfloat16", attn="sdpa", image_size=(256, 448))
    m = measure_inference(vit, case, reference="t")
    square = measure_inference(vit, _vision(256), reference="t")
    assert m.activation_bytes > square.activation_bytes


# --- what the simulation must not do ---------------------------------------------------------

def test_the_shared_meta_model_is_left_alone(vit):
    before = [(n, p.dtype, p.device) for n, p in vit.named_parameters()]
    attn = vit.config._attn_implementation
    measure_inference(vit, _vision(224, dtype="float16", attn="eager"), reference="tiny-vit")
    assert [(n, p.dtype, p.device) for n, p in vit.named_parameters()] == before
    assert vit.config._attn_implementation == attn


def test_repeated_cases_are_not_simulated_again(vit):
    case = _vision(288, 3)
    assert measure_inference(vit, case, reference="t") is measure_inference(vit, case, reference="t")


def test_a_real_forward_still_works_after_a_simulation():
    """Simulations clear the modelling code's lru_caches, so no meta tensor leaks into real runs."""
    from transformers import AutoConfig, AutoModel

    measure_inference(_build(TINY_VIT), _vision(224, device="cpu"), reference="t")
    config = dict(TINY_VIT)
    real = AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config)).eval()
    with torch.inference_mode():
        out = real(pixel_values=torch.randn(1, 3, 224, 224))
    assert out.last_hidden_state.device.type == "cpu"
    measure_inference(_build(TINY_VIT), _vision(224, 2, device="cpu"), reference="t")


# --- error paths -----------------------------------------------------------------------------

class _DataDependent(nn.Module):
    main_input_name = "pixel_values"

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, pixel_values):
        x = self.proj(pixel_values)
        if x.abs().max().item() > 1:  # needs data
            x = x / 2
        return x


class _Plain(nn.Module):
    """A plain module, as timm builds them: no main_input_name, the image as its one argument."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x):
        return self.proj(x).relu()


def test_data_dependent_models_give_an_error_with_the_reason():
    with torch.device("meta"):
        model = _DataDependent()
    with pytest.raises(SimulationError) as err:
        measure_inference(model, _vision(64, device="cpu"), reference="data-dependent")
    assert err.value.reference == "data-dependent"
    assert "item" in err.value.reason


def test_plain_modules_are_simulated_too():
    with torch.device("meta"):
        model = _Plain()
    m = measure_inference(model, _vision(64, 2, dtype="float32", device="cpu"), reference="plain")
    conv_out = 2 * 8 * 16 * 16 * 4
    assert m.activation_bytes >= 2 * 3 * 64 * 64 * 4 + conv_out


class _Uncopyable(_Plain):
    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle '_thread.lock' object")


def test_models_that_cannot_be_copied_give_an_error():
    with torch.device("meta"):
        model = _Uncopyable()
    with pytest.raises(SimulationError, match="could not prepare the model"):
        measure_inference(model, _vision(64, device="cpu"), reference="uncopyable")


def test_sweeps_return_errors_in_place():
    with torch.device("meta"):
        model = _DataDependent()
    results = measure_inference_sweep(model, [_vision(64), _vision(128)], reference="d")
    assert len(results) == 2 and all(isinstance(r, SimulationError) for r in results)
    cases = [_vision(224), _vision(224, attn="flash", dtype="float32")]
    plain_results = measure_inference_sweep(_build(TINY_VIT), cases, reference="t")
    assert isinstance(plain_results[0], InferenceMeasurement)
    assert isinstance(plain_results[1], SimulationError)


@pytest.mark.parametrize(
    "case, words",
    [
        (dict(attn="flash", device="cpu"), "CUDA only"),
        (dict(attn="flash", dtype="float32"), "float16 and bfloat16"),
    ],
)
def test_flash_attention_limits(vit, case, words):
    with pytest.raises(SimulationError, match=words):
        measure_inference(vit, _vision(224, **case), reference="tiny-vit")


def test_inputs_must_match_the_model(vit):
    bert = _build(TINY_BERT, "tiny-bert")
    with pytest.raises(SimulationError, match="sequence length"):
        measure_inference(bert, _vision(224), reference="b")
    with pytest.raises(SimulationError, match="image size"):
        measure_inference(vit, InferenceCase(batch_size=1, dtype="float32", attn="sdpa", seq_len=16), reference="v")


@pytest.mark.parametrize(
    "fields",
    [
        dict(dtype="int8"),
        dict(attn="flex"),
        dict(device="mps"),
        dict(batch_size=0),
        dict(image_size=None),
        dict(seq_len=16),
        dict(image_size=(0, 224)),
    ],
)
def test_bad_cases_are_usage_errors(fields):
    base = dict(batch_size=1, dtype="bfloat16", attn="sdpa", device="cuda", image_size=(224, 224))
    with pytest.raises(UsageError):
        InferenceCase(**{**base, **fields})


# --- the caching allocator model -------------------------------------------------------------

def test_allocator_rounds_to_512_bytes_and_packs_small_requests():
    alloc = overheads.CachingAllocatorModel()
    a = alloc.malloc(1)
    b = alloc.malloc(513)
    assert (a.size, b.size) == (512, 1024)
    assert alloc.allocated == 1536
    assert alloc.reserved == overheads.SMALL_BUFFER  # both in one 2 MiB small-pool segment
    assert alloc.malloc(0) is None


def test_allocator_segments_for_large_requests():
    alloc = overheads.CachingAllocatorModel()
    alloc.malloc(3 * MiB)  # (1 MiB, 10 MiB): a 20 MiB segment, split
    assert alloc.reserved == overheads.LARGE_BUFFER and alloc.allocated == 3 * MiB
    alloc.malloc(15 * MiB)  # best fit: the 17 MiB left of that segment
    assert alloc.reserved == overheads.LARGE_BUFFER
    alloc.malloc(17 * MiB + 1)  # >= 10 MiB and nothing cached fits: a segment rounded up to 2 MiB
    assert alloc.reserved == overheads.LARGE_BUFFER + 18 * MiB


def test_allocator_counts_an_unsplit_block_whole():
    """allocated_bytes += block->size: a remainder of 1 MiB or less stays in the block."""
    alloc = overheads.CachingAllocatorModel()
    block = alloc.malloc(11 * MiB + MiB // 2)
    assert block.size == 12 * MiB
    assert alloc.allocated == 12 * MiB


def test_allocator_reuses_and_merges_freed_blocks():
    alloc = overheads.CachingAllocatorModel()
    a, b = alloc.malloc(4 * MiB), alloc.malloc(4 * MiB)
    alloc.free(a)
    alloc.free(b)
    assert alloc.allocated == 0 and alloc.peak_allocated == 8 * MiB
    c = alloc.malloc(12 * MiB)  # fits the merged 20 MiB segment: no new cudaMalloc
    assert alloc.reserved == overheads.LARGE_BUFFER and c.size == 12 * MiB


def test_flash_split_heuristic_matches_flash_attention():
    from vramplan.measure.activations import _num_splits

    # ViT-S/16 at 512 px: batch 1 x 6 heads x 17 q blocks = 102 < 0.8 * 264; 5 kv blocks of 256.
    assert _num_splits(102, 264, 5, 128) == 5
    assert _num_splits(1040, 264, 17, 128) == 1  # enough blocks to fill the SMs
    assert _num_splits(24, 264, 1, 128) == 1  # one kv block cannot be split


# --- the GPU validation script on a machine without one --------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: validate_gpu.py would run for real")
def test_validate_gpu_says_there_is_no_gpu(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "bench" / "validate_gpu.py"
    accuracy = script.parents[1] / "docs" / "accuracy.md"
    before = accuracy.read_text() if accuracy.exists() else None
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.startswith("no GPU:")
    assert (accuracy.read_text() if accuracy.exists() else None) == before
