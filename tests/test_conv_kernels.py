"""CPU convolutions' own memory, 1-D and small 2-D: oneDNN's copies and PyTorch's slow path.

Each forward is one convolution, so that what the kernel allocates besides its output is a large
part of the peak; the real CPU allocator (torch.profiler's memory events) is the reference. The
kernel models are in `vramplan.measure.cpu_kernels` (sources cited there).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vramplan.measure import cpu_kernels
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.measure.inputs import InputShape
from vramplan.testing.allocator import cpu_peak_above_baseline

TOLERANCE = 0.02


class _Conv1d(nn.Module):
    """One Conv1d; `transposed` feeds it a (batch, length, channels) input transposed, as audio models' positional convs."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1,
                 transposed: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.transposed = transposed

    def forward(self, x):
        return self.conv(x.transpose(1, 2) if self.transposed else x)


def _compare(make, shape: tuple[int, ...], dtype: str) -> tuple[int, int, int]:
    """(simulated peak above weights and input, its kernel memory, the real allocator's peak)."""
    with torch.device("meta"):
        meta = make()
    case = InferenceCase(batch_size=shape[0], dtype=dtype, attn="sdpa", device="cpu",
                         inputs=(InputShape("x", shape),))
    m = measure_inference(meta, case, reference="conv")
    torch.manual_seed(0)
    real_model = make().to(getattr(torch, dtype)).eval()
    x = torch.randn(*shape, dtype=getattr(torch, dtype))
    real = cpu_peak_above_baseline(real_model, {"x": x})
    simulated = m.peak_allocated_bytes - m.parameter_bytes - m.buffer_bytes - x.numel() * x.element_size()
    return simulated, m.temp_bytes, real


@pytest.mark.parametrize("make,shape,dtype", [
    # one short image: slow_conv2d's im2col `finput`, not oneDNN (Convolution.cpp, use_mkldnn)
    (lambda: _Conv1d(1, 32, 10, stride=5), (1, 1, 16000), "float32"),
    (lambda: _Conv1d(32, 32, 3, stride=2), (1, 32, 300), "float32"),
    # two images: oneDNN, the input reordered to 16-channel blocks and a blocked output
    (lambda: _Conv1d(32, 32, 3, stride=2), (2, 32, 3199), "float32"),
    (lambda: _Conv1d(32, 32, 3, stride=2), (2, 32, 3199), "bfloat16"),
    # a transposed input is copied to contiguous first, and the copy lives through the kernel
    (lambda: _Conv1d(64, 64, 16, padding=8, groups=4, transposed=True), (2, 200, 64), "float32"),
    (lambda: _Conv1d(64, 64, 16, padding=8, groups=4, transposed=True), (2, 200, 64), "bfloat16"),
    (lambda: _Conv1d(64, 64, 3, padding=1, transposed=True), (1, 100, 64), "float32"),
], ids=["slow-first-layer", "slow-strided", "onednn-f32", "onednn-bf16", "positional-f32", "positional-bf16",
        "slow-transposed"])
def test_conv1d_matches_the_cpu_allocator(make, shape, dtype):
    simulated, kernel, real = _compare(make, shape, dtype)
    assert abs(simulated - real) <= TOLERANCE * real, f"simulated {simulated} vs allocator {real} bytes"
    assert kernel > 2 * TOLERANCE * real, f"kernel memory {kernel} is not live at the peak"


def test_a_wide_positional_conv_runs_as_gemm_and_is_not_under():
    """wav2vec2-base's positional conv (768 channels, kernel 128, 16 groups): oneDNN's gemm convolution.

    Its im2col is blocked to the L2 cache by a heuristic not reproduced, so the simulation errs
    high, by less than a quarter here; counting the direct kernel's 18 MiB weight reorder instead
    would be four times over.
    """
    make = lambda: _Conv1d(768, 768, 128, padding=64, groups=16, transposed=True)  # noqa: E731
    simulated, _, real = _compare(make, (1, 200, 768), "float32")
    assert real <= simulated <= 1.25 * real, f"simulated {simulated} vs allocator {real} bytes"


def test_the_direct_kernels_code_size_limit():
    # (1 + 1 + 1) * 128 * 16 * 29 * 15 bytes > 256 KiB: gemm; kernel 16 with padding 8 fits
    assert cpu_kernels._onednn_picks_gemm(200, 128, 1, 64, 1)
    assert not cpu_kernels._onednn_picks_gemm(200, 16, 1, 8, 1)
    assert not cpu_kernels._onednn_picks_gemm(3000, 3, 1, 1, 1)


def test_which_convolutions_take_the_slow_path():
    meta = dict(device="meta")
    one, two = torch.empty(1, 32, 1, 300, **meta), torch.empty(2, 32, 1, 300, **meta)
    w = torch.empty(32, 32, 1, 3, **meta)
    assert not cpu_kernels.uses_onednn(one, w, [1, 2], [1, 1], 1)  # 9600 elements, one image
    assert cpu_kernels.uses_onednn(two, w, [1, 2], [1, 1], 1)
    assert cpu_kernels.uses_onednn(one.to(torch.bfloat16), w.to(torch.bfloat16), [1, 2], [1, 1], 1)
    assert cpu_kernels.uses_onednn(one, w, [1, 2], [1, 1], 2)  # grouped
    big = torch.empty(1, 32, 1, 700, **meta)  # 22400 elements
    assert cpu_kernels.uses_onednn(big, w, [1, 2], [1, 1], 1)
    wide = torch.empty(32, 32, 5, 5, **meta)
    assert cpu_kernels.uses_onednn(torch.empty(1, 32, 8, 8, **meta), wide, [1, 1], [1, 1], 1)


class _ChannelsLastConv(nn.Module):
    """ConvNeXt's downsampling: a LayerNorm over channels (permuted to the last dim and back) before a conv."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cin)
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0,
                              groups=groups, bias=False)

    def forward(self, x):
        return self.conv(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))  # a channels-last input


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("make,shape", [
    (lambda: _ChannelsLastConv(64, 128, 2, 2), (2, 64, 4, 4)),  # the weight made channels-last, brgemm scratch
    (lambda: _ChannelsLastConv(16, 32, 3, 1), (2, 16, 8, 8)),
    (lambda: _ChannelsLastConv(64, 64, 7, 1, groups=64), (2, 64, 4, 4)),  # depthwise: only the reorder
    (lambda: _ChannelsLastConv(384, 768, 2, 2), (1, 384, 4, 6)),  # float32: slow_conv2d, the weight made channels-last
], ids=["downsample", "3x3", "depthwise", "one-small-image"])
def test_channels_last_convolutions_match_the_cpu_allocator(make, shape, dtype):
    simulated, kernel, real = _compare(make, shape, dtype)
    assert abs(simulated - real) <= TOLERANCE * real, f"simulated {simulated} vs allocator {real} bytes"
    assert kernel > 2 * TOLERANCE * real, f"kernel memory {kernel} is not live at the peak"
