"""Autocast for tensors without data: autocast's casting policy applied above autograd.

`torch.autocast` works in the dispatcher (the AutocastCPU / AutocastCUDA keys) and only casts
tensors of its own device type (`is_autocast_eligible` in `aten/src/ATen/autocast_mode.h`):
meta tensors pass through it uncast, so a simulated forward under autocast ran in float32.
This module applies the same policy itself, in a TorchFunctionMode, with `Tensor.to`, so
autograd records the casts exactly as it records autocast's, and keeps autocast's weight-cast
cache (`cached_cast` in `aten/src/ATen/autocast_mode.cpp`): the lower-precision copy of a
float32 leaf that requires grad is made once and held until the outermost autocast context
exits (`torch.autocast.__exit__` calls `torch.clear_autocast_cache()`; the mode hooks that call).

It follows the *host's* CPU autocast state, whatever the target: the simulation opens a real
`torch.autocast("cpu", ...)` (harmless for meta tensors; a CPU-only torch cannot enable CUDA's),
`torch.utils.checkpoint` re-enters it when it recomputes, and a model's own
`torch.autocast("cuda", ...)` is mapped onto it (`training._SimulationModes`); the casts follow
the target's op lists.

The op lists are those of `aten/src/ATen/autocast_mode.cpp` (pytorch/pytorch, the
`TORCH_LIBRARY_IMPL(aten, AutocastCUDA, m)` and `(aten, AutocastCPU, m)` blocks, macros
`AT_FORALL_LOWER_PRECISION_FP`, `AT_FORALL_FP32`, `AT_FORALL_FP32_SET_OPT_DTYPE`,
`AT_FORALL_PROMOTE`), restricted to the operators a model reaches through a Python-visible
torch function; the names below are those functions' `__name__`.

Known limitations:
    - Autocast acts on every aten operator, this mode on torch functions: a composite whose
      inner operator autocast would cast (einsum's bmm) is cast as a whole here, with the same
      result dtype; an operator outside the lists runs in the dtypes it is given, as under autocast.
    - Only the listed operators are cast; the rest of `autocast_mode.cpp`'s lists (linear
      algebra, FFTs, RNN cells, rarely seen in vision and text models) run uncast, which
      undercounts only their own casts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# AT_FORALL_LOWER_PRECISION_FP (CUDA) / the CPU block's lower_precision_fp KERNEL_CPU lines.
_LOWER_CUDA = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "convolution", "_convolution", "prelu", "addmm", "addmv", "addr", "matmul", "__matmul__", "__rmatmul__",
    "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
    "multi_dot", "scaled_dot_product_attention",
})
_LOWER_CPU = frozenset({
    "conv1d", "conv2d", "conv3d", "bmm", "mm", "linalg_vecdot", "baddbmm", "addmm", "addbmm", "linear",
    "_convolution", "matmul", "__matmul__", "__rmatmul__", "einsum", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "prelu", "scaled_dot_product_attention",
})
_LOSSES = frozenset({
    "cosine_embedding_loss", "nll_loss", "nll_loss2d", "hinge_embedding_loss", "kl_div", "l1_loss",
    "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss", "multilabel_margin_loss",
    "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits",
    "poisson_nll_loss",
})
# AT_FORALL_FP32 (CUDA). cross_entropy is not listed there: it runs log_softmax, which is in
# FP32_SET_OPT_DTYPE, and nll_loss, in FP32; both make float32 copies, as the cast here does.
_FP32_CUDA = _LOSSES | frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal",
    "rsqrt", "sinh", "tan", "pow", "__pow__", "softplus", "layer_norm", "native_layer_norm", "group_norm",
    "frobenius_norm", "nuclear_norm", "cosine_similarity", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "cross_entropy", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
    "upsample_bilinear2d", "upsample_bicubic2d", "interpolate",
})
# The CPU block's fp32 KERNEL_CPU lines that models reach (losses, 3-D pooling, padding).
_FP32_CPU = _LOSSES | frozenset({
    "cross_entropy", "binary_cross_entropy", "avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "grid_sample",
    "cdist", "prod", "quantile", "nanquantile", "stft", "trace",
})
# AT_FORALL_FP32_SET_OPT_DTYPE (CUDA only): run in float32 when no dtype is given.
_FP32_SET_OPT_DTYPE_CUDA = frozenset({
    "prod", "softmax", "log_softmax", "cumprod", "cumsum", "vector_norm", "matrix_norm", "sum",
})
# AT_FORALL_PROMOTE: run in the widest floating dtype among the arguments.
_PROMOTE = frozenset({
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put",
    "tensordot", "scatter_add", "cat", "stack",
})
_ALL_NAMES = _LOWER_CUDA | _LOWER_CPU | _FP32_CUDA | _FP32_CPU | _FP32_SET_OPT_DTYPE_CUDA | _PROMOTE


def policy(name: str, device: str) -> str:
    """The autocast policy of a torch function on `device`: lower, fp32, fp32_opt, promote or ""."""
    cuda = device == "cuda"
    if name in (_LOWER_CUDA if cuda else _LOWER_CPU):
        return "lower"
    if name in (_FP32_CUDA if cuda else _FP32_CPU):
        return "fp32"
    if cuda and name in _FP32_SET_OPT_DTYPE_CUDA:
        return "fp32_opt"
    if name in _PROMOTE:
        return "promote"
    return ""


class AutocastCaster:
    """Cast a torch function's tensor arguments as autocast would on the target device."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._cache: dict[int, tuple[Any, Any]] = {}  # id(weight) -> (weight, its cast copy)
        # The names with a policy on this device: any other function is never cast (most calls).
        self.listed = frozenset(name for name in _ALL_NAMES if policy(name, device))

    def enabled_dtype(self) -> "torch.dtype | None":
        """The autocast dtype if the host's (CPU) autocast is on, else None."""
        import torch

        if not torch.is_autocast_enabled("cpu"):
            return None
        return torch.get_autocast_dtype("cpu")

    def cast(self, func, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Return (args, kwargs) cast per the function's policy; unchanged when autocast is off."""
        name = getattr(func, "__name__", "")
        if name not in self.listed:
            return args, kwargs
        import torch
        from torch.utils._pytree import tree_leaves, tree_map
        dtype = self.enabled_dtype()
        rule = policy(name, self.device) if dtype is not None else ""
        if not rule:
            return args, kwargs
        if rule == "fp32_opt":
            if kwargs.get("dtype") is not None or any(isinstance(a, torch.dtype) for a in args):
                return args, kwargs
            if not any(_eligible(t) and t.dtype != torch.float32 for t in tree_leaves((args, kwargs))):
                return args, kwargs
            return args, {**kwargs, "dtype": torch.float32}
        if rule == "promote":
            floats = [t.dtype for t in tree_leaves((args, kwargs)) if _eligible(t)]
            if len(set(floats)) < 2:
                return args, kwargs
            target = max(floats, key=lambda d: torch.finfo(d).bits)
        else:
            target = dtype if rule == "lower" else torch.float32

        def convert(x: Any) -> Any:
            return self._cached_cast(x, target, dtype) if _eligible(x) and x.dtype != target else x

        return tree_map(convert, args), tree_map(convert, kwargs)

    def _cached_cast(self, x, target, lower) -> Any:
        """`cached_cast`: float32 leaves that require grad keep their lower-precision copy."""
        import torch

        cacheable = (
            target == lower and x.dtype == torch.float32 and self._requires_grad_leaf(x)
            and not x._is_view() and torch.is_autocast_cache_enabled()
        )
        if not cacheable:
            return x.to(target)
        hit = self._cache.get(id(x))
        if hit is not None and hit[0] is x:
            return hit[1]
        copy = x.to(target)
        self._cache[id(x)] = (x, copy)
        return copy

    def _requires_grad_leaf(self, x) -> bool:
        """`arg.requires_grad() && arg.is_leaf()` of `cached_cast`: a weight the caller trains or loaded."""
        return x.requires_grad and x.is_leaf

    def clear_cache(self) -> None:
        """Drop the cached copies, as `torch.clear_autocast_cache()` does."""
        self._cache.clear()


def _eligible(x: Any) -> bool:
    """`is_eligible`: a floating tensor that is not float64 (the device is the simulation's)."""
    import torch

    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64
