"""Kernels' own memory, checked where it is live: each modelled allocation is part of the peak.

In the DINOv3 cases of test_cpu_allocator.py and bench/validate_cpu.py no kernel temporary is
live at the peak, so those cases cannot tell whether the kernel models are right. Here each
forward is built around one kernel so that its own allocations are a large part of the peak;
the real CPU allocator (torch.profiler's memory events) is the reference, within 2%, and each
test fails when the model of that allocation is removed (`test_..._is_live_at_the_peak`).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vramplan.measure.activations import InferenceCase, InferenceMeasurement, measure_inference
from vramplan.testing.allocator import cpu_peak_above_baseline

TOLERANCE = 0.02


class _LayerNorm(nn.Module):
    """LayerNorm over a short last dim: mean and rstd (one value per row each) are 2/16 of the output."""

    in_chans = 3

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)

    def forward(self, pixel_values):
        return self.norm(pixel_values)


class _TransposedValue(nn.Module):
    """Eager attention's product with a transposed value: matmul copies the value to run one bmm."""

    in_chans = 8

    def forward(self, pixel_values):
        value = pixel_values.transpose(1, 2)  # (B, H, C, W): not viewable as (B*H, C, W)
        scores = pixel_values.new_ones((value.shape[0], value.shape[1], value.shape[2], value.shape[2]))
        return scores @ value


class _Attention(nn.Module):
    """SDPA over the input taken as (batch, heads, tokens, head_dim); `value_dim` < head_dim forces math."""

    def __init__(self, heads: int, value_cut: int = 0) -> None:
        super().__init__()
        self.in_chans = heads
        self.value_cut = value_cut

    def forward(self, pixel_values):
        value = pixel_values[..., : pixel_values.shape[-1] - self.value_cut]
        return F.scaled_dot_product_attention(pixel_values, pixel_values, value)


def _compare(make, size: tuple[int, int], batch: int, dtype: str) -> tuple[InferenceMeasurement, int, int]:
    """Return the simulation, its peak above weights and input, and the real allocator's peak."""
    with torch.device("meta"):
        meta = make()
    case = InferenceCase(batch_size=batch, dtype=dtype, attn="sdpa", device="cpu", image_size=size)
    m = measure_inference(meta, case, reference=type(meta).__name__)
    torch.manual_seed(0)
    real_model = make().to(getattr(torch, dtype)).eval()
    pixels = torch.randn(batch, meta.in_chans, *size, dtype=getattr(torch, dtype))
    real = cpu_peak_above_baseline(real_model, {"pixel_values": pixels})
    simulated = m.peak_allocated_bytes - m.parameter_bytes - m.buffer_bytes - pixels.numel() * pixels.element_size()
    return m, simulated, real


def _check(make, size, batch, dtype, *, kernel: str = "") -> InferenceMeasurement:
    m, simulated, real = _compare(make, size, batch, dtype)
    assert abs(simulated - real) <= TOLERANCE * real, f"simulated {simulated} vs allocator {real} bytes"
    # The kernel's own memory is live at the peak, and large enough that dropping it breaks the 2%.
    assert m.temp_bytes > 2 * TOLERANCE * real, f"kernel memory {m.temp_bytes} is not live at the peak"
    assert m.attention_kernel == kernel
    return m


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_layer_norm_mean_and_rstd(dtype):
    m = _check(_LayerNorm, (512, 16), 2, dtype)
    rows = 2 * 3 * 512
    assert m.temp_bytes == 2 * rows * torch.finfo(getattr(torch, dtype)).bits // 8


def test_matmul_copies_a_value_it_cannot_view():
    # float32 only: bfloat16 GEMMs on CPU also take oneDNN scratch memory, which is not modelled
    # (activations.py, Known limitations).
    m = _check(_TransposedValue, (64, 32), 2, "float32")
    assert m.temp_bytes == 2 * 64 * 8 * 32 * 4  # the value, copied contiguous for the bmm


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cpu_flash_logsumexp_and_per_thread_buffers(dtype):
    """Many heads and long sequences with a small head dim: the logsumexp and buffers are ~30-50% of the peak."""
    m = _check(lambda: _Attention(heads=64), (2048, 8), 1, dtype, kernel="cpu-flash")
    threads = torch.get_num_threads()
    logsumexp = 2048 * 64 * 4
    per_thread = (256 * 512 + 2 * 256 + 256 * 8) * 4 + (256 * 512 * 2 if dtype == "bfloat16" else 0)
    assert m.temp_bytes == logsumexp + threads * per_thread


def test_cpu_flash_splits_for_short_queries():
    """Under 192 queries the kernel splits queries by 32 (q_split) and keys by the whole length."""
    m = _check(lambda: _Attention(heads=16), (150, 8), 2, "float32", kernel="cpu-flash")
    threads = torch.get_num_threads()
    assert m.temp_bytes == 2 * 150 * 16 * 4 + threads * (32 * 150 + 2 * 32 + 32 * 8) * 4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_math_attention_temporaries(dtype):
    """A value head dim unlike the query's sends SDPA to the math path; its scores dominate the peak."""
    _check(lambda: _Attention(heads=4, value_cut=8), (1024, 16), 1, dtype, kernel="math")
