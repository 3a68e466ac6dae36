"""What kernels allocate for themselves: convolution copies (oneDNN, slow_conv2d), float32 softmax, pooling indices.

Each function returns the sizes a kernel allocates beside the output the simulation already
counts, in the order the kernel allocates them, as (transient, held): `transient` buffers are
freed before the kernel's output is allocated, `held` ones after it. The figures were read from
the sources named below and checked, operator by operator, against the CPU allocator's stream of
allocations (`torch.profiler`, `profile_memory=True`) on an AVX-512 Xeon (torch 2.13 CPU build).

Which convolution runs (`aten/src/ATen/native/Convolution.cpp`, `ConvParams::use_mkldnn`): float32
convolutions of one small image with one group and a kernel not larger than 3 in both dimensions
run PyTorch's own `slow_conv2d` (im2col into `finput`, `ConvolutionMM2d.cpp`); the rest oneDNN's.
A 1-D convolution is run as a 2-D one of height 1 (`view1d_as_2d`) on a contiguous input.

Convolution (`aten/src/ATen/native/mkldnn/Conv.cpp`, `_mkldnn_convolution`, see its note
"MKLDNN Convolution Memory Formats"): for a contiguous (NCHW) input, oneDNN reorders the input
and the weight into its blocked layout (channels padded to the ISA's block: 16 on AVX-512, 8 on
AVX2), computes into a blocked output, and `mkldnn_to_dense` copies that into the dense output
PyTorch returns. So the kernel holds, at its peak, the input copy, the weight copy and the
blocked output; then the blocked output beside the dense one. Exceptions, as oneDNN picks its
implementation (`src/cpu/x64/jit_avx512_core_*conv*`, `gemm_convolution.cpp`):

- a first layer (one group, fewer input channels than a block, a kernel larger than 1x1: RGB
  stems and patch embeddings) reads the plain input: no input copy; in bfloat16 its weight's input channels are padded to 4;
- a grouped convolution whose channels per group are not a multiple of 8 runs oneDNN's gemm
  convolution: an im2col scratchpad per thread and no layout copies;
- 1x1 convolutions take a per-thread scratchpad: the strided input gathered when the stride is
  above 1, and a float32 accumulator for bfloat16 outputs;
- depthwise convolutions in bfloat16, or with channels off the block, pad their bias in float32.

oneDNN's scratchpads carry 128 bytes besides (seen in every one of them).

Known limitations:
    - Block sizes and implementations are oneDNN's choice for the CPU it runs on; the sizes are
      those of an AVX-512 machine (`torch.backends.cpu.get_cpu_capability()` picks 8-channel
      blocks on AVX2). AMX machines (bfloat16 on Sapphire Rapids) pick other kernels.
    - 1-D convolutions are 2-D ones of height 1. For float32 kernels wider than 7 with padding,
      oneDNN's choice between its direct and gemm convolution is predicted only where the direct
      kernel's code would be too large (wav2vec2's 128-wide positional conv); elsewhere the larger
      of the two is counted. The gemm convolution's im2col blocks are taken as the whole L2 cache
      per thread (oneDNN's heuristic picks somewhat less): high by up to ~25% of that kernel's memory.
    - oneDNN's bfloat16 matmul scratch is modelled for `linear` (fitted on AVX-512-BF16); other
      bfloat16 GEMMs (eager attention's batched products) take none in the shapes tried.
    - Channels-last inputs are recognised by their strides; the weight reorder is counted unpadded.
    - Grouped convolutions with channels per group off a multiple of 8 are counted as oneDNN's
      gemm convolution; that matches float32 with 6 channels per group, but oneDNN runs other
      kernels for some shapes (12 per group: the model is 2.7x the allocator's peak in float32;
      bfloat16 grouped convolutions 1.4x to 4.9x): high, never low, in the shapes tried.
    - Padding "same" with an odd total (an even kernel) is not modelled: ATen pads the input
      into a copy first; the convolution's copies are then not counted (low).
"""

from __future__ import annotations

_SCRATCH_PAD = 128  # oneDNN scratchpads are 128 bytes larger than their parts


def conv_copies(x, w, stride, padding, dilation, groups: int) -> tuple[list[int], list[int]]:
    """(transient, held) sizes of a 1-D or 2-D CPU convolution: oneDNN's, or PyTorch's slow one."""
    import torch

    if x.dtype not in (torch.float32, torch.bfloat16):
        return [], []
    if x.dim() == 3 and w.dim() == 3:
        return _conv1d_copies(x, w, stride, padding, dilation, groups)
    if x.dim() != 4 or w.dim() != 4:
        return [], []
    if not uses_onednn(x, w, stride, dilation, groups):
        return [], _slow_conv2d_held(x, w, stride, padding, dilation)
    transient, held = _onednn_conv_copies(x, w, stride, padding, dilation, groups)
    return transient, _contiguous_copy(x) + held


def _contiguous_copy(x) -> list[int]:
    """`_convolution` hands oneDNN `input.contiguous(backend_memory_format)`: a strided input is copied.

    A channels-last input is kept as it is; any other non-contiguous one (a transposed height and
    width) is copied, and the copy lives until the operator returns (measured: 33% of the peak of
    a 16-channel 3x3 convolution of a transposed input).
    """
    import torch

    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return []
    return [x.numel() * x.element_size()]


def _onednn_conv_copies(x, w, stride, padding, dilation, groups: int) -> tuple[list[int], list[int]]:
    """(transient, held) sizes of a 2-D oneDNN convolution on the CPU."""
    import torch

    es = x.element_size()
    block = _block()
    n, cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    ho, wo = _conv_out(h, kh, stride[0], padding[0], dilation[0]), _conv_out(wd, kw, stride[1], padding[1], dilation[1])
    out_hw = ho * wo
    threads = torch.get_num_threads()
    depthwise = groups > 1 and cin_g == 1 and cout == cin
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return [], _channels_last_held(w, depthwise, threads)
    if groups > 1 and not depthwise and (cin_g % 8 or (cout // groups) % 8):
        return _gemm_conv_copies(x, w, stride, padding, dilation, groups)
    transient = []
    if kh == kw == 1 and groups == 1 and (stride[0] > 1 or stride[1] > 1 or x.dtype == torch.bfloat16):
        # both in oneDNN's blocked layout: channels padded to the block (12-25% low unpadded, measured)
        gathered = _pad(cin, block) * out_hw * es if (stride[0] > 1 or stride[1] > 1) else 0
        accumulator = _pad(cout, block) * out_hw * 4 if x.dtype == torch.bfloat16 else 0
        transient.append(threads * (gathered + accumulator) + _SCRATCH_PAD)
    if depthwise and (x.dtype == torch.bfloat16 or cin % block):
        transient.append(_pad(cin, block) * 4 + _SCRATCH_PAD)
    first_layer = groups == 1 and cin < block and kh * kw > 1  # 1x1 kernels block every input
    if not first_layer:
        transient.append(n * _pad(cin, block) * h * wd * es)
    if depthwise:
        transient.append(_pad(cout, block) * kh * kw * es)
    elif first_layer:
        transient.append(_pad(cout, block) * (_pad(cin, 4) if x.dtype == torch.bfloat16 else cin) * kh * kw * es)
    else:
        transient.append(_pad(cout, block) * _pad(cin_g, block) * kh * kw * es)
    return transient, [n * _pad(cout, block) * out_hw * es]


def uses_onednn(x, w, stride, dilation, groups: int) -> bool:
    """Whether ATen runs a 4-D CPU convolution through oneDNN (`ConvParams::use_mkldnn`).

    `aten/src/ATen/native/Convolution.cpp`: bfloat16 always does (on a CPU with AVX-512 BF16 or
    emulation, `mkldnn_bf16_device_check`); float32 does unless the convolution is small ("for some
    case, native is faster"): one image, one group, a kernel not larger than 3 in both dimensions,
    and at most 20480 input elements; or a 1x1 unstrided kernel run on one thread. Those go to
    `slow_conv2d` (`ConvolutionMM2d.cpp`).
    """
    import torch

    if x.dtype != torch.float32:
        return True
    n = x.shape[0]
    kh, kw = w.shape[-2:]
    strided, dilated = any(s != 1 for s in stride), any(d != 1 for d in dilation)
    threads = torch.get_num_threads()
    worth = strided or dilated or n >= 16 or kw != 1 or kh != 1 or threads > 1
    large = groups > 1 or (kw > 3 and kh > 3) or n > 1 or x.numel() > 20480
    return worth and large


def _slow_conv2d_held(x, w, stride, padding, dilation) -> list[int]:
    """What `slow_conv2d_forward` holds past its output (`aten/src/ATen/native/ConvolutionMM2d.cpp`).

    `_convolution` passes `input.contiguous()` (a copy of a strided input; a channels-last input
    is kept, and the weight made channels-last beside it), and the kernel unfolds
    each image into `finput`, (C_in * kh * kw, out_h * out_w), unless the kernel is 1x1 with stride
    1 and no padding; both are freed when the operator returns.
    """
    es = x.element_size()
    n, cin, h, wd = x.shape
    kh, kw = w.shape[-2:]
    import torch

    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if channels_last:  # the input as it is; the weight made channels-last too (a copy unless 1x1)
        held = [] if w.is_contiguous(memory_format=torch.channels_last) else [w.numel() * w.element_size()]
    else:
        held = [] if x.is_contiguous() else [x.numel() * es]
    if (kh, kw) != (1, 1) or any(s != 1 for s in stride) or any(p != 0 for p in padding):
        ho = _conv_out(h, kh, stride[0], padding[0], dilation[0])
        wo = _conv_out(wd, kw, stride[1], padding[1], dilation[1])
        held.append(n * cin * kh * kw * ho * wo * es)
    return held


def _channels_last_held(w, depthwise: bool, threads: int) -> list[int]:
    """What a convolution of a channels-last input holds beside its output.

    oneDNN reads the input and writes the output in place (Conv.cpp: "input view ... weight
    reorder ... output view"); the weight is reordered beside the output. Except for depthwise
    convolutions (oneDNN's `jit_uni_dw` kernel, whose (C, 1, kh, kw) weight is already
    channels-last), `_mkldnn_convolution` first makes the weight channels-last
    (`weight.contiguous(memory_format)`: a copy unless it is 1x1), and the brgemm convolution
    oneDNN runs (`brg_conv_fwd`) takes a scratchpad of 4120 bytes per thread and 3968 besides
    (measured, the same from 16 to 768 channels and 1x1 to 3x3 kernels).
    """
    import torch

    nbytes = w.numel() * w.element_size()
    if depthwise:
        return [nbytes]
    copy = [] if w.is_contiguous(memory_format=torch.channels_last) else [nbytes]
    return copy + [3968 + 4120 * threads + _SCRATCH_PAD, nbytes]


def _conv1d_copies(x, w, stride, padding, dilation, groups: int) -> tuple[list[int], list[int]]:
    """A 1-D convolution runs as a 2-D one of height 1 (`Convolution.cpp`, `view1d_as_2d`).

    The input is made contiguous first (a transposed (batch, length, channels) input, as audio
    models' positional convolutions take it, is copied; the copy lives through the kernel). Kernels
    wider than 7 with padding may leave oneDNN's direct kernel for its gemm convolution
    (`_onednn_picks_gemm`); where that choice is not predicted, the larger of the two is counted.
    """
    import torch

    copy = [] if x.is_contiguous() else [x.numel() * x.element_size()]
    x4 = torch.empty((x.shape[0], x.shape[1], 1, x.shape[2]), dtype=x.dtype, device="meta")
    w4 = torch.empty((w.shape[0], w.shape[1], 1, w.shape[2]), dtype=w.dtype, device="meta")
    stride2, padding2, dilation2 = [1, stride[-1]], [0, padding[-1]], [1, dilation[-1]]
    if not uses_onednn(x4, w4, stride2, dilation2, groups):
        return [], copy + _slow_conv2d_held(x4, w4, stride2, padding2, dilation2)
    transient, held = _onednn_conv_copies(x4, w4, stride2, padding2, dilation2, groups)
    if w.shape[-1] > 7 and padding[-1] > 0:
        gemm = _gemm_conv_copies(x4, w4, stride2, padding2, dilation2, groups, l2_cap=True)
        if _onednn_picks_gemm(x.shape[-1], w.shape[-1], stride[-1], padding[-1], dilation[-1]):
            transient, held = gemm
        elif x.dtype == torch.float32 and sum(gemm[0]) + sum(gemm[1]) > sum(transient) + sum(held):
            transient, held = gemm  # register blocking may still refuse the direct kernel: err high
    return transient, copy + held


def _onednn_picks_gemm(length: int, kernel: int, stride: int, padding: int, dilation: int) -> bool:
    """oneDNN's direct AVX-512 kernel refuses wide kernels whose generated code would be too large.

    `jit_avx512_common_conv_kernel.cpp`, `init_conf`: the unroll over output columns `ur_w` is
    `min(l_pad, 29)` once the left padding reaches 16 (else at most 15 for one 16-channel block);
    the code size `(1 + [l_pad > 0] + [r_pad > 0]) * kw * 16 * ur_w * 15` bytes must fit in the
    256 KiB JIT buffer, or the primitive is unimplemented and the gemm convolution runs.
    """
    out = _conv_out(length, kernel, stride, padding, dilation)
    ur_w = min(padding, 29) if padding >= 16 else min(out, 15)
    r_pad = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - length - padding)
    mult = 1 + (padding > 0) + (r_pad > 0)
    return mult * kernel * 16 * ur_w * 15 > 256 * 1024


def _gemm_conv_copies(x, w, stride, padding, dilation, groups: int, l2_cap: bool = False) -> tuple[list[int], list[int]]:
    """oneDNN's gemm convolution: im2col of one image and group per thread; the output computed in place.

    With `l2_cap`, each thread's im2col block is taken as at most the core's L2 cache: oneDNN
    blocks channels and output columns to fit it (`gemm_convolution_utils.cpp`, `init_conf`,
    `calc_max_icb`); the blocks it picks are smaller (1.5-1.8 MiB of 2 MiB measured), so this errs high.
    """
    import torch

    n, _, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    out_hw = _conv_out(h, kh, stride[0], padding[0], dilation[0]) * _conv_out(wd, kw, stride[1], padding[1], dilation[1])
    per_thread = cin_g * kh * kw * out_hw * 4
    if l2_cap:
        per_thread = min(per_thread, _l2_bytes())
    scratch = torch.get_num_threads() * per_thread + _SCRATCH_PAD
    return [scratch], [n * cout * out_hw * x.element_size()]


def softmax_copies(x, dtype, cuda: bool) -> list[int]:
    """The converted input `softmax(x, dtype=)` holds while it computes (`aten/src/ATen/native/SoftMax.cpp`).

    `softmax` converts the input to `dtype` first (`input_.toType(dtype)`) and frees the copy after
    the output is made; only CUDA float16 -> float32 is fused (`_softmax(input, dim, half_to_float)`).
    Eager attention in transformers asks for float32 of bfloat16/float16 scores.
    """
    import torch

    if dtype is None or dtype == x.dtype or (cuda and x.dtype == torch.float16 and dtype == torch.float32):
        return []
    return [x.numel() * torch.empty((), dtype=dtype, device="meta").element_size()]


def bf16_linear_scratch(x, w) -> list[int]:
    """oneDNN's scratchpad for a bfloat16 `linear` on CPU, allocated after the output and freed at once.

    oneDNN's brgemm matmul (`src/cpu/x64/matmul/brgemm_matmul.cpp`) accumulates bfloat16 products
    in a float32 C buffer (rows x a 64- or 128-column block, capped at 32K elements) and packs B
    (up to 512 rows x 64 columns); sizes fitted to the CPU allocator's stream on AVX-512-BF16
    over 19 shapes (exact, or up to 512 bytes high).
    """
    import torch

    if x.dtype != torch.bfloat16 or w.dim() != 2:
        return []
    n, k = w.shape
    m = x.numel() // max(1, k)
    n_block = n if n <= 128 else (128 if n % 128 == 0 else 64)
    accumulator = min(4 * _pad(m, 2) * n_block, 128 * 1024)
    packed_b = 4 * min(k, 512) * min(n, 64)
    return [accumulator + packed_b + 1536 + _SCRATCH_PAD]


def sdpa_mask_conversion(q, k, v, mask) -> list[int]:
    """SDPA turns a boolean mask into an additive one of the query's dtype before any kernel runs.

    `aten/src/ATen/native/transformers/attention.cpp`, `convert_boolean_attn_mask`:
    `at::where(attn_mask->logical_not(), -inf, 0.0)`: the float mask lives through the kernel (the
    negated boolean one is gone before the kernel's peak). Same on CUDA (not checked on a GPU).
    """
    import torch

    if mask is None or mask.dtype != torch.bool:
        return []
    return [mask.numel() * q.element_size()]


def pooling_temps(func, x, out, cuda: bool) -> list[int]:
    """What pooling kernels allocate after their output (`aten/src/ATen/native/Pooling.cpp`, `AdaptiveAveragePooling.cpp`).

    `max_pool2d` without grad still runs `max_pool2d_with_indices` on CPU and CUDA and drops the
    int64 indices; CPU adaptive average pooling of a half input reduces a float32 copy of it.
    """
    import torch

    aten = torch.ops.aten
    packet = func._overloadpacket
    if packet is aten.max_pool2d:
        return [out.numel() * 8]
    if packet is aten.adaptive_avg_pool2d and not cuda and x.dtype in (torch.bfloat16, torch.float16):
        return [_SCRATCH_PAD, x.numel() * 4]
    return []


def _block() -> int:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return 16 if "AVX512" in capability else 8


def _l2_bytes() -> int:
    """The L2 cache of one core (Linux sysfs); 2 MiB where it cannot be read."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size", encoding="ascii") as f:
            return cache_size_bytes(f.read())
    except (OSError, ValueError, KeyError, IndexError):
        return 2 * 1024 * 1024


def cache_size_bytes(text: str) -> int:
    """Bytes of a cache size as sysfs writes it: "2048K", "2M", or a plain number."""
    text = text.strip().upper()
    return int(text[:-1]) * {"K": 1024, "M": 1024 * 1024}[text[-1]] if text[-1] in "KM" else int(text)


def _pad(c: int, block: int) -> int:
    return -(-c // block) * block


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_arguments(args: tuple, kwargs: dict) -> tuple | None:
    """(input, weight, stride, padding, dilation, groups) of aten.conv1d or conv2d.

    Padding "same" is the symmetric padding `_convolution_mode` (`Convolution.cpp`) computes,
    dilation * (kernel - 1) / 2 on each side; None where that total is odd (ATen then pads the
    input into a copy first, which is not modelled).
    """
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    values = dict(zip(names, args))
    values.update(kwargs)
    x, w = values["input"], values["weight"]
    pairs = []
    for name, default in (("stride", 1), ("padding", 0), ("dilation", 1)):
        value = values.get(name, default)
        if value == "valid":
            value = 0
        elif value == "same":
            pairs.append(None)
            continue
        value = list(value) if isinstance(value, (list, tuple)) else [value]
        pairs.append(value * 2 if len(value) == 1 else value)
    if pairs[1] is None:
        totals = [d * (k - 1) for k, d in zip(w.shape[2:], pairs[2][-(w.dim() - 2):])]
        if any(t % 2 for t in totals):
            return None
        pairs[1] = [t // 2 for t in totals] * (2 if len(totals) == 1 else 1)
    return x, w, *pairs, int(values.get("groups", 1))
