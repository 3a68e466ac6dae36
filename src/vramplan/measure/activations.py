"""Inference memory at the user's input size: the model's own forward, run on tensors without data.

The meta-device model is copied with its parameters recast to the case's dtype, then its own
`forward` runs under `torch.inference_mode()` while a dispatch mode records every storage the
forward creates and the moment Python lets go of it. Nothing is allocated: the 7B at 2048 px
simulates in well under 1.5 GB of RSS. On the CUDA target the stream of allocations and frees
is replayed through a model of PyTorch's caching allocator (`overheads.py`), so the peak is
counted in allocator blocks, as `torch.cuda.max_memory_allocated` counts it.

The peak is broken down with the categories of torch's MemTracker
(`torch/distributed/_tools/mem_tracker.py`):

- Parameter, Buffer: the module's weights, in the case dtype (buffers take the dtype they have
  when built under the case dtype, as from_pretrained(dtype=) builds them: transformers creates
  RoPE frequencies and the like in float32 on purpose, SwinV2's coordinates in the weights' dtype).
- Activation: every tensor the forward creates, the input included (it lives through the
  forward) and the output (it outlives it).
- Temp: memory a kernel allocates for itself, which no tensor of the forward holds:
  attention workspaces (softmax statistics, FlashAttention's split-KV accumulators, the CPU
  flash kernel's per-thread buffers), LayerNorm's mean and rstd, and the cuBLAS/cuBLASLt
  workspaces (allocated through the caching allocator on the first GEMM and kept, so
  `max_memory_allocated` includes them).

Design notes:

- Meta tensors, not FakeTensorMode. Both run the same meta kernels; FakeTensorMode adds about half
  a millisecond of bookkeeping per operator, and on a CPU-only PyTorch it cannot index fake CUDA
  tensors (`THPVariable_getitem` takes a CUDA device guard such a build lacks), so the target
  device could not be simulated as a device anyway. The tensors' device is "meta" whatever the
  target; what depends on the target (attention kernel, allocator, cuBLAS workspaces) is
  decided here. Operators a meta tensor cannot run (`nonzero`, a number `.item()`) raise, as they
  would on fake tensors, and the model gets a `SimulationError` with the reason.
- Not MemTracker itself: it keeps category totals, not the ordered stream of allocations a
  caching-allocator replay needs, and it does not see inside kernels. Its categories and its
  weak-reference bookkeeping are reused.
- Under inference mode, composite operators (`linear`, `layer_norm`, SDPA) reach the dispatch
  mode whole; what they allocate inside is added here per operator (below).
- The output metadata of operators that return fresh tensors is remembered by (operator,
  input metadata): a ViT calls the same operators on the same shapes in every layer, and
  rebuilding an output is a thousand times cheaper than running a meta kernel again.

Attention. PyTorch picks the SDPA kernel at run time; the simulation picks as PyTorch does on
the target (`aten/src/ATen/native/transformers/cuda/sdp_utils.cpp`, pytorch/pytorch@21c3369eded4:
flash > efficient > math, flash only from sm80 (`InferenceCase.gpu`, default an H100 SXM);
`sdp_utils_cpp.cpp` on CPU) and adds the kernel's own allocations:

- CUDA flash (fp16/bf16, head dim <= 256, no mask): a float32 logsumexp (batch, heads, q_len)
  and, when `num_splits_heuristic` (`cuda/flash_attn/flash_api.cpp`, @ef3d5c9ebba1) picks more than one
  split, float32 accumulators (splits, batch, heads, q_len, head_dim rounded up to 32) and
  (splits, batch, heads, q_len).
- CUDA memory-efficient (float32, or with a mask): no logsumexp without grad; a float32 output
  accumulator for half types; the mask padded to a multiple of 16.
- CPU flash (`aten/src/ATen/native/cpu/FlashAttentionKernel.cpp`): a float32 logsumexp
  (batch, q_len, heads) and per-thread buffers sized by the q/kv split heuristics and
  `torch.get_num_threads()` of the simulating process (checked against the CPU allocator).
- `--attn flash` (transformers' flash_attention_2) runs FlashAttention-2's `mha_fwd`, the code
  SDPA's flash kernel is built from: it is simulated as SDPA on that kernel, CUDA and fp16/bf16 only.
- Math fallback: q, k and v upcast to float32 for half types, scaled copies of q and k (k and
  v repeated first for grouped-query attention), two (batch, heads, q_len, kv_len) matrices and
  `_safe_softmax`'s boolean masks; counted as live together, which errs high.

Other kernels' own memory: LayerNorm's mean and rstd; the copy `matmul` makes of an operand it
cannot reshape as a view (eager attention's transposed `value`); on CUDA, the cuBLAS workspace on
the first GEMM and the cuBLASLt one on the first GEMM with a bias. `cpu_kernels.py` adds softmax's
converted input (`softmax(x, dtype=float32)` of half scores; not for CUDA float16, which is fused)
and max-pooling's dropped int64 indices on both targets, and on CPU oneDNN's convolution layout
copies and scratchpads, its bfloat16 `linear` scratchpad and half adaptive pooling's float32 copy.

Tied weights are tied on the copy as `from_pretrained` ties them (`ties.py`); boolean value reads
(`.item()`, `bool(t)`) are answered as the zero inputs would answer them (`data_reads.py`).

Known limitations:
    - Kernel workspaces other than those above are not modelled: cuDNN convolution workspaces
      (PyTorch takes the largest one that fits the allocator's largest free block among the plans
      cuDNN's heuristics give for the device: no figure without a GPU, docs/accuracy.md); on
      CPU, oneDNN's float16 GEMM scratch and the flash kernel's K/V packing on AMX CPUs.
    - The simulated device has unlimited memory: near its capacity the real allocator frees
      cached segments and retries, so its reserved memory stays lower than simulated.
    - Modelling code that branches on `tensor.device.type == "cuda"` takes its other branch.
    - Factory calls with an explicit `device="cpu"` inside a forward make real (small) tensors.
    - Tensors a model caches across calls (DINOv3's `lru_cache` of patch coordinates) are
      counted in every simulation, as in the first forward of a fresh process.
    - Tensors only Python's cycle collector frees are freed when it runs, as in a real process;
      when that happens may differ.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import sys
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SimulationError, UsageError, one_line
from . import cpu_kernels, data_reads, overheads, ties
from .inputs import InputPlan, fit_image_size, make_inputs, plan_inputs

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

DTYPES = ("float32", "float16", "bfloat16")
ATTENTIONS = ("sdpa", "eager", "flash")
DEVICES = ("cuda", "cpu")

PARAMETER, BUFFER, ACTIVATION, TEMP = "Parameter", "Buffer", "Activation", "Temp"
_CATEGORIES = (PARAMETER, BUFFER, ACTIVATION, TEMP)

# NVIDIA H100 SXM5 has 132 streaming multiprocessors; FlashAttention's split heuristic uses 2x that.
H100_SM_COUNT = 132


@dataclass(frozen=True)
class InferenceCase:
    """One input configuration to simulate: size, batch, dtype, attention and target device."""

    batch_size: int
    dtype: str  # "float32" | "float16" | "bfloat16"
    attn: str  # "sdpa" | "eager" | "flash"
    device: str = "cuda"  # the simulated target: "cuda" (an H100) | "cpu"
    image_size: tuple[int, int] | None = None  # (height, width), vision models
    seq_len: int | None = None  # text models: tokens; audio models: samples or frames (seq_unit)
    seq_unit: str | None = None  # None for tokens, "samples" (input_values) or "frames" (input_features)
    inputs: tuple = ()  # inputs.InputShape from --input-shape, in place of an image size or length
    gpu: Any = None  # plan.gpus.GpuSpec of the CUDA target; None: the default, an H100 SXM
    autocast: str | None = None  # "bfloat16" | "float16": float32 weights, the forward under torch.autocast

    def __post_init__(self) -> None:
        if self.autocast is not None and (self.autocast not in ("bfloat16", "float16") or self.dtype != "float32"):
            raise UsageError("autocast is bfloat16 or float16, over float32 weights (--dtype float32)")
        if self.dtype not in DTYPES:
            raise UsageError(f"dtype `{self.dtype}` is not one of {', '.join(DTYPES)}")
        if self.attn not in ATTENTIONS:
            raise UsageError(f"attention `{self.attn}` is not one of {', '.join(ATTENTIONS)}")
        if self.device not in DEVICES:
            raise UsageError(f"device `{self.device}` is not one of {', '.join(DEVICES)}")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {self.batch_size}")
        if sum((self.image_size is not None, self.seq_len is not None, bool(self.inputs))) != 1:
            raise UsageError("give one of an image size (vision models), a sequence length (text, audio) or input shapes")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise UsageError(f"image size must be a positive (height, width), got {self.image_size}")
        if self.seq_len is not None and self.seq_len < 1:
            raise UsageError(f"sequence length must be at least 1, got {self.seq_len}")
        if self.device == "cuda" and "bfloat16" in (self.dtype, self.autocast) and not self.target.bf16:
            raise UsageError(f"{self.target.label} has no bfloat16: use --dtype float16 or float32")

    @property
    def target(self) -> Any:
        """The simulated card (plan.gpus.GpuSpec): the case's, or the default H100 SXM."""
        from ..plan.gpus import default_gpu

        return self.gpu if self.gpu is not None else default_gpu()

    def as_json(self) -> dict[str, Any]:
        """The case's fields as they open each entry of a model's JSON `"inference"` list."""
        size: dict[str, Any] = (
            {"image_size": list(self.image_size)} if self.image_size is not None else {"seq_len": self.seq_len}
        )
        if self.seq_unit:
            size["seq_unit"] = self.seq_unit
        if self.inputs:
            size = {"inputs": [{"name": s.name, "shape": [self.batch_size, *s.shape[1:]], "dtype": s.dtype or self.dtype}
                               for s in self.inputs]}
        named = {"gpu": self.gpu.name} if self.gpu is not None and self.device == "cuda" else {}
        autocast = {"autocast": self.autocast} if self.autocast else {}
        return {**size, "batch_size": self.batch_size, "dtype": self.dtype, **autocast, "attn": self.attn,
                "device": self.device, **named}


@dataclass(frozen=True)
class InferenceMeasurement:
    """Peak memory of one simulated forward; the four parts add up to `peak_allocated_bytes`."""

    case: InferenceCase
    parameter_bytes: int
    buffer_bytes: int
    activation_bytes: int
    temp_bytes: int
    peak_allocated_bytes: int  # what torch.cuda.max_memory_allocated would show
    peak_device_bytes: int  # what the process holds on the card; == peak_allocated_bytes on cpu
    overheads: tuple[tuple[str, int], ...]  # named parts of peak_device_bytes - peak_allocated_bytes
    attention_kernel: str = ""  # "flash", "efficient", "math", "cpu-flash", "eager"; "" without attention
    # The implementation the model ran: "eager" where `sdpa` was asked of a model without an SDPA path.
    attn_implementation: str = ""

    def as_json(self) -> dict[str, Any]:
        """Return the entry of a model's JSON `"inference"` list."""
        return {
            **self.case.as_json(),
            "parameter_bytes": self.parameter_bytes,
            "buffer_bytes": self.buffer_bytes,
            "activation_bytes": self.activation_bytes,
            "temp_bytes": self.temp_bytes,
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_device_bytes": self.peak_device_bytes,
            "attn_implementation": self.attn_implementation or self.case.attn,
        }


def measure_inference(model: "nn.Module", case: InferenceCase, *, reference: str) -> InferenceMeasurement:
    """Simulate one forward of `model` for `case`; the model itself is never modified.

    Args:
        model: the meta-device float32 model `vramplan.build.build_model` returns.
        case: input size, batch, dtype, attention implementation and target device.
        reference: the model's name, for error messages.

    Raises:
        SimulationError: the forward cannot run without data, or not in this configuration.
    """
    return remembered(_RESULTS.setdefault(model, {}), case,
                      lambda: _simulate(_sim_model(model, case, reference), case, reference))


def remembered(results: dict, case: Any, simulate: Any) -> Any:
    """The result of `simulate()` for `case`, computed once; a SimulationError is remembered and raised again."""
    if case not in results:
        try:
            results[case] = simulate()
        except SimulationError as exc:
            results[case] = exc
    result = results[case]
    if isinstance(result, SimulationError):
        raise result
    return result


def sweep(measure: Any, model: "nn.Module", cases: list, reference: str) -> list:
    """`measure(model, case, reference=...)` for each case; a case that cannot be simulated gives its error."""
    out: list = []
    for case in cases:
        try:
            out.append(measure(model, case, reference=reference))
        except SimulationError as exc:
            out.append(exc)
    return out


def measure_inference_sweep(
    model: "nn.Module", cases: list[InferenceCase], *, reference: str
) -> list[InferenceMeasurement | SimulationError]:
    """Simulate each case; a case that cannot be simulated gives its error in place of a result.

    The recast model is built once per (dtype, attention) and shared by sizes, batches and
    target devices; operator outputs are remembered across cases.
    """
    return sweep(measure_inference, model, cases, reference)


def clear_caches() -> None:
    """Forget recast models, results and remembered operator outputs (long-running processes: the fuzzer)."""
    _SIM_MODELS.clear()
    _RESULTS.clear()
    _OP_CACHE.clear()


# ---------------------------------------------------------------------------------------------
# The model to simulate: a copy of the meta model, recast, with its attention implementation set.

@dataclass
class _SimModel:
    module: "nn.Module"
    inputs: InputPlan  # what its forward takes (measure/inputs.py)
    cache_clears: tuple  # cache_clear of the functools caches in the model's modelling modules
    implementation: str = ""  # the attention implementation the model runs ("" for a plain module)


# Keyed by the (cached, shared) meta model, so entries go when the model does.
_SIM_MODELS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str], _SimModel | SimulationError]]" = (
    weakref.WeakKeyDictionary()
)
_RESULTS: "weakref.WeakKeyDictionary[nn.Module, dict[InferenceCase, InferenceMeasurement | SimulationError]]" = (
    weakref.WeakKeyDictionary()
)


def _sim_model(model: "nn.Module", case: InferenceCase, reference: str) -> _SimModel:
    if case.attn == "flash" and case.device != "cuda":
        raise SimulationError(reference, "flash attention (flash_attention_2) runs on CUDA only; use --device cuda")
    if case.attn == "flash" and case.dtype == "float32":
        raise SimulationError(reference, "flash attention (flash_attention_2) supports float16 and bfloat16 only")
    if case.attn == "flash" and not case.target.sdpa_flash:
        raise SimulationError(reference, f"flash attention (flash_attention_2) does not run on {case.target.label}")
    implementation = "eager" if case.attn == "eager" else "sdpa"
    built = _SIM_MODELS.setdefault(model, {})
    key = (case.dtype, implementation)
    if key not in built:
        try:
            built[key] = _build_sim_model(model, case.dtype, implementation, reference)
        except SimulationError as exc:
            built[key] = exc
        except Exception as exc:  # a module that cannot be copied or recast
            reason = f"could not prepare the model: {type(exc).__name__}: {one_line(exc)[:300]}"
            built[key] = SimulationError(reference, reason)
    sim = built[key]
    if isinstance(sim, SimulationError):
        raise sim
    return sim


def _build_sim_model(model: "nn.Module", dtype_name: str, implementation: str, reference: str) -> _SimModel:
    import torch
    import torch.nn as nn

    sim = _rebuilt_with(model, implementation) or copy.deepcopy(model)  # meta tensors: copies no data
    sim.eval()
    ties.tie_in_place(sim)  # as from_pretrained holds them: a tied tensor once (ties.py)
    _set_attention(sim, implementation, reference)
    dtype = getattr(torch, dtype_name)
    keep_fp32 = _fp32_patterns(model, dtype_name)
    built_dtypes = _buffer_dtypes_built_in(model, dtype)
    # Tied parameters (one tensor in several modules) stay one tensor; the originals are kept alive
    # in the dict so that their ids stay unique while it is filled.
    recast: dict[int, tuple[nn.Parameter, nn.Parameter]] = {}
    for module_name, module in sim.named_modules(remove_duplicate=False):
        for name, param in module._parameters.items():
            if param is not None and id(param) not in recast:
                qualified = f"{module_name}.{name}" if module_name else name
                cast = param.is_floating_point() and not _keeps_fp32(qualified, keep_fp32)
                fresh = torch.empty(param.shape, dtype=dtype if cast else param.dtype, device="meta")
                recast[id(param)] = (param, nn.Parameter(fresh, requires_grad=False))
            if param is not None:
                module._parameters[name] = recast[id(param)][1]
        # Batch-norm statistics are made in the default dtype, which from_pretrained(dtype=) sets.
        stats_dtype = dtype if isinstance(module, nn.modules.batchnorm._NormBase) else None
        for name, buf in module._buffers.items():
            if buf is not None:
                built = built_dtypes.get(f"{module_name}.{name}" if module_name else name, buf.dtype)
                cast = stats_dtype if stats_dtype is not None and buf.is_floating_point() else built
                module._buffers[name] = torch.empty(buf.shape, dtype=cast, device="meta")
    sim_config = getattr(sim, "config", None)
    ran = (getattr(sim_config, "_attn_implementation", None) or "eager") if sim_config is not None else ""
    return _SimModel(sim, plan_inputs(model), _model_caches(sim), ran)


def _buffer_dtypes_built_in(model: "nn.Module", dtype) -> dict[str, Any]:
    """The float buffers' dtypes when the model is built as from_pretrained(dtype=) builds it.

    transformers builds under `dtype` as the default dtype: a buffer made in the default dtype
    (SwinV2's `relative_coords_table`, cast "to same dtype as mlp weight") is in `dtype`, one
    made explicitly in float32 (RoPE frequencies) stays so. The model is built again on meta in
    `dtype` to read them; {} where nothing can differ or it cannot be built so.
    """
    import torch

    floats = [b for b in model.buffers() if b.dtype == torch.get_default_dtype()]
    config = getattr(model, "config", None)
    if dtype == torch.get_default_dtype() or not floats or config is None or not hasattr(model, "_from_config"):
        return {}
    from accelerate import init_empty_weights

    from ..build import _skip_weight_init

    try:
        with init_empty_weights(include_buffers=True), _skip_weight_init():
            built = type(model)._from_config(copy.deepcopy(config), dtype=dtype)
    except Exception:  # noqa: BLE001 - a model that cannot be rebuilt keeps the dtypes it was built with
        return {}
    return {name: b.dtype for name, b in built.named_buffers(remove_duplicate=False) if b.is_floating_point()}


def _rebuilt_with(model: "nn.Module", implementation: str) -> "nn.Module | None":
    """Build the model again where its attention classes are picked at construction, else None.

    Some modelling files (SAM, BARK, GPT-Neo, Falcon...) choose an attention class from a
    `*_ATTENTION_CLASSES` dict in `__init__`; `set_attn_implementation` cannot swap those, so the
    model is rebuilt on meta with the implementation, as from_pretrained(attn_implementation=) does.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) == implementation:
        return None
    modules = {sys.modules.get(type(m).__module__) for m in model.modules()}
    if not any(name.endswith("ATTENTION_CLASSES") for mod in modules if mod for name in vars(mod)):
        return None
    from accelerate import init_empty_weights

    from ..build import _skip_weight_init

    with init_empty_weights(), _skip_weight_init():
        return type(model)._from_config(copy.deepcopy(config), attn_implementation=implementation)


def _fp32_patterns(model: "nn.Module", dtype_name: str) -> tuple[str, ...]:
    """The modules from_pretrained keeps in float32 for this dtype (transformers 5, `_get_dtype_plan`).

    `_keep_in_fp32_modules` is applied for float16 only (it guards bf16-trained weights against
    fp16 overflow); `_keep_in_fp32_modules_strict` for float16 and bfloat16.
    """
    patterns: list[str] = []
    if dtype_name == "float16":
        patterns += getattr(model, "_keep_in_fp32_modules", None) or ()
    if dtype_name in ("float16", "bfloat16"):
        patterns += getattr(model, "_keep_in_fp32_modules_strict", None) or ()
    return tuple(sorted(set(patterns)))


def _keeps_fp32(qualified: str, patterns: tuple[str, ...]) -> bool:
    """Say whether transformers keeps this parameter in float32 (`_keep_in_fp32_modules`)."""
    parts = qualified.split(".")
    return any(pattern in parts or pattern in qualified for pattern in patterns)


def _set_attention(module: "nn.Module", implementation: str, reference: str) -> None:
    """Select the attention implementation, as from_pretrained(attn_implementation=...) does.

    A model without SDPA support (ConvNeXt has no attention at all) keeps what transformers gives
    it by default, as from_pretrained does when no implementation is asked for.
    """
    setter = getattr(module, "set_attn_implementation", None)
    if setter is None:
        return  # a plain module runs the one implementation its code calls
    if implementation == "sdpa" and not getattr(module, "_supports_sdpa", True):
        return
    try:
        setter(implementation)
    except (ValueError, ImportError) as exc:  # transformers refuses an implementation the model lacks
        raise SimulationError(reference, f"{implementation} attention is not available: {one_line(exc)[:300]}") from exc


def _model_caches(module: "nn.Module") -> tuple:
    """Find the functools caches in the modules that define the model's classes.

    Modelling code caches tensors across calls (DINOv3's patch coordinates). They are cleared
    before a simulation, so a tensor a real run cached is not mixed with meta ones, and after
    it, so no meta tensor leaks into a real run in the same process.
    """
    # A class's module namespace: from sys.modules, or, for a file torch.hub executed without
    # registering it (classes defined in hubconf.py), from its forward's globals.
    namespaces = {
        type(m).__module__: getattr(sys.modules.get(type(m).__module__), "__dict__", None)
        or getattr(type(m).forward, "__globals__", {})
        for m in module.modules()
    }
    clears = []
    for name in sorted(n for n in namespaces if not n.startswith("torch.")):
        objects = list(namespaces[name].values())
        # methods too: BEiT caches its relative position index in a class-level lru_cache
        objects += [attr for obj in objects if isinstance(obj, type) and obj.__module__ == name
                    for attr in vars(obj).values()]
        for obj in objects:
            obj = getattr(obj, "__func__", obj)  # staticmethod / classmethod
            candidates = [obj] + [_cell_contents(c) for c in getattr(obj, "__closure__", None) or ()]
            clears.extend(c.cache_clear for c in candidates if callable(getattr(c, "cache_clear", None)))
    return tuple(clears)


def _cell_contents(cell) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


# ---------------------------------------------------------------------------------------------
# The simulation.

def _simulate(sim: _SimModel, case: InferenceCase, reference: str) -> InferenceMeasurement:
    import torch

    tracker = _Tracker(case, reference)
    fit_image_size(sim.module, case, reference)
    tracker.add_weights(sim.module)
    for clear in sim.cache_clears:
        clear()
    try:
        # torch.device("meta"): factory calls that name no device make meta tensors too.
        with torch.device("meta"), tracker, torch.inference_mode(), _quiet_transformers():
            args, kwargs = make_inputs(sim.inputs, case, reference)
            with _autocast_forward(sim.module, case):  # nullcontext without --autocast
                output = sim.module(*args, **kwargs)
            del output, args, kwargs
    except SimulationError:
        raise
    except Exception as exc:  # whatever the model or a meta kernel raises means "cannot simulate"
        raise SimulationError(reference, f"{type(exc).__name__}: {one_line(exc)[:300]}") from exc
    finally:
        for clear in sim.cache_clears:
            clear()
    return dataclasses.replace(tracker.measurement(), attn_implementation=sim.implementation or case.attn)


def _autocast_forward(module: "nn.Module", case: InferenceCase):
    """The user's `torch.autocast` around the forward (`inference_autocast.py`), or nothing."""
    if case.autocast is None:
        return contextlib.nullcontext()
    from .inference_autocast import autocast_forward

    return autocast_forward(module, case)


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' warnings about the inputs (the padding warning): they are ours, not the user's."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Tracker:
    """Record the storages a forward allocates and frees; keep the peak and its breakdown.

    Entered, it pushes a TorchDispatchMode that sees each operator the model calls, with its
    outputs, and nothing of what happens inside it.
    """

    def __init__(self, case: InferenceCase, reference: str = "") -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        self.case = case
        self.reference = reference
        self.allocator = overheads.CachingAllocatorModel() if case.device == "cuda" else None
        self.current = dict.fromkeys(_CATEGORIES, 0)
        self.total = 0
        self.peak = dict(self.current)
        self.peak_total = 0
        self.attention_kernels: set[str] = set()
        self._live: dict[int, tuple[weakref.ref, str, Any]] = {}
        self._workspaces: set[str] = set()
        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return tracker.dispatch(func, args, kwargs or {})

        self._mode = _Mode()

    def __enter__(self) -> "_Tracker":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)

    def add_weights(self, module: "nn.Module") -> None:
        """Allocate parameters and buffers in the order `module.to(device)` moves them."""
        for child in module.children():
            self.add_weights(child)
        for param in module._parameters.values():
            if param is not None:
                self._track(param, PARAMETER)
        for buf in module._buffers.values():
            if buf is not None:
                self._track(buf, BUFFER)

    def dispatch(self, func, args: tuple, kwargs: dict) -> Any:
        """Run one operator; allocate its new outputs and what its kernel takes for itself."""
        if data_reads.is_scalar_read(func):  # .item(), bool(t): no data on meta (data_reads.py)
            return data_reads.answer_scalar_read(args[0], self.reference)
        held = self._kernel_memory_before(func, args, kwargs)
        out = _run_meta(func, args, kwargs)
        for leaf in _tensor_leaves(out):
            self._track(leaf, ACTIVATION)
        for handle in reversed(held):
            self._free(TEMP, handle)
        self._kernel_memory(func, args, kwargs, out)
        return out

    def measurement(self) -> InferenceMeasurement:
        """Return the peak, its breakdown and, for CUDA, what the card holds besides."""
        case = self.case
        peak_allocated = self.peak_total
        extra: tuple[tuple[str, int], ...] = ()
        if self.allocator is not None:
            extra = (
                ("CUDA context", overheads.cuda_context_bytes(case.target)),
                ("allocator cache (reserved - allocated)", self.allocator.peak_reserved - peak_allocated),
            )
        kernels = ", ".join(sorted(self.attention_kernels))
        return InferenceMeasurement(
            case=case,
            parameter_bytes=self.peak[PARAMETER],
            buffer_bytes=self.peak[BUFFER],
            activation_bytes=self.peak[ACTIVATION],
            temp_bytes=self.peak[TEMP],
            peak_allocated_bytes=peak_allocated,
            peak_device_bytes=peak_allocated + sum(size for _, size in extra),
            overheads=extra,
            attention_kernel=kernels or ("eager" if case.attn == "eager" else ""),
        )

    # -- storages -------------------------------------------------------------------------------
    def _track(self, tensor: "torch.Tensor", category: str) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return  # a view of, or the same tensor as, something already counted
        handle = self._alloc(storage.nbytes(), category)
        # The storage object lives exactly as long as the storage (PyObject preservation).
        ref = weakref.ref(storage, lambda _ref, key=key: self._release(key))
        self._live[key] = (ref, category, handle)

    def _release(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self._free(entry[1], entry[2])

    def _alloc(self, nbytes: int, category: str) -> Any:
        if self.allocator is None:
            size = handle = nbytes
        else:
            handle = self.allocator.malloc(nbytes)
            size = handle.size if handle is not None else 0
        self.current[category] += size
        self.total += size
        if self.total > self.peak_total:
            self.peak_total = self.total
            self.peak = dict(self.current)
        return handle

    def _free(self, category: str, handle: Any) -> None:
        if handle is None:
            return
        if self.allocator is None:
            size = handle
        else:
            size = handle.size  # read before free(): merging grows the block
            self.allocator.free(handle)
        self.current[category] -= size
        self.total -= size

    # -- kernels' own memory --------------------------------------------------------------------
    def _kernel_memory(self, func, args: tuple, kwargs: dict, out: Any = None) -> None:
        import torch

        aten = torch.ops.aten
        packet = func._overloadpacket
        cuda = self.case.device == "cuda"
        if packet is aten.scaled_dot_product_attention:
            kernel, temps = _sdpa_kernel_memory(self.case, *_sdpa_args(args, kwargs))
            self.attention_kernels.add(kernel)
            self._transient(cpu_kernels.sdpa_mask_conversion(*_sdpa_args(args, kwargs)) + temps)
        elif packet is aten.layer_norm:
            self._transient(_layer_norm_temps(args, cuda))
        if packet is aten.matmul:
            self._transient(_matmul_temps(*args[:2]))
        if not cuda and packet is aten.linear:
            self._transient(cpu_kernels.bf16_linear_scratch(args[0], args[1]))
        if packet in (aten.max_pool2d, aten.adaptive_avg_pool2d):
            self._transient(cpu_kernels.pooling_temps(func, args[0], out, cuda))
        if cuda and packet in _gemm_ops():
            # cuBLAS takes its workspace on the first GEMM; a GEMM with a bias epilogue
            # (addmm, linear with a bias) goes through cuBLASLt, which takes its own.
            self._persistent("cublas", overheads.cublas_workspace_bytes(self.case.target))
            if packet is aten.addmm or (packet is aten.linear and len(args) > 2 and args[2] is not None):
                self._persistent("cublaslt", overheads.cublaslt_workspace_bytes(self.case.target))

    def _kernel_memory_before(self, func, args: tuple, kwargs: dict) -> list:
        """Allocate what a kernel takes before its output; return the handles it holds past the output."""
        transient, held = _kernel_copies(self.case, func, args, kwargs)
        if not transient and not held:
            return []
        handles = [self._alloc(size, TEMP) for size in transient]
        kept = [self._alloc(size, TEMP) for size in held]
        for handle in reversed(handles):
            self._free(TEMP, handle)
        return kept

    def _transient(self, sizes: list[int]) -> None:
        handles = [self._alloc(size, TEMP) for size in sizes]
        for handle in reversed(handles):
            self._free(TEMP, handle)

    def _persistent(self, key: str, nbytes: int) -> None:
        if key not in self._workspaces:
            self._workspaces.add(key)
            self._alloc(nbytes, TEMP)


def _kernel_copies(case: InferenceCase, func, args: tuple, kwargs: dict) -> tuple[list[int], list[int]]:
    """(transient, held) copies a kernel makes of its operands before its output (cpu_kernels.py)."""
    import torch

    aten = torch.ops.aten
    packet = func._overloadpacket
    if packet is aten.softmax:
        dtype = args[2] if len(args) > 2 else kwargs.get("dtype")
        return [], cpu_kernels.softmax_copies(args[0], dtype, case.device == "cuda")
    if case.device == "cpu" and packet in (aten.conv1d, aten.conv2d):
        conv = cpu_kernels.conv_arguments(args, kwargs)
        return cpu_kernels.conv_copies(*conv) if conv is not None else ([], [])
    return [], []


@functools.cache
def _gemm_ops() -> tuple:
    """Operators that run a cuBLAS GEMM on CUDA: composites as inference mode shows them, and parts."""
    import torch

    aten = torch.ops.aten
    return (
        aten.linear, aten.matmul, aten.einsum, aten.bilinear, aten.mm, aten.addmm, aten.bmm,
        aten.baddbmm, aten.addbmm, aten.mv, aten.addmv, aten._addmm_activation,
    )


def _matmul_temps(a, b) -> list[int]:
    """Copies matmul makes of operands it cannot reshape as views (aten/src/ATen/native/LinearAlgebra.cpp).

    Batched products expand both operands to the broadcast batch shape and reshape them to 3-D;
    an operand whose strides do not allow a view (a transposed `value` in eager attention) is
    copied for the bmm and freed after it. A >=3-D by 2-D product folds the first operand to 2-D.
    """
    import torch

    if a.dim() < 3 and b.dim() < 3:
        return []
    if b.dim() <= 2:  # fold: (..., n, k) @ (k, p) as one mm
        return [] if _can_view(a, (-1, a.shape[-1])) else [a.numel() * a.element_size()]
    a2 = a if a.dim() >= 2 else a.unsqueeze(0)
    batch = torch.broadcast_shapes(a2.shape[:-2], b.shape[:-2])
    count = math.prod(batch)
    temps = []
    for t, tail in ((a2, a2.shape[-2:]), (b, b.shape[-2:])):
        expanded = t.expand(*batch, *tail)
        if not _can_view(expanded, (count, *tail)):
            temps.append(count * math.prod(tail) * t.element_size())
    return temps


def _can_view(tensor, shape) -> bool:
    try:
        tensor.view(shape)
    except RuntimeError:
        return False
    return True


def _layer_norm_temps(args: tuple, cuda: bool) -> list[int]:
    """The mean and rstd native_layer_norm returns and layer_norm drops (float32 on CUDA)."""
    import torch

    x, normalized_shape = args[0], args[1]
    rows = x.numel() // max(1, math.prod(normalized_shape))
    size = 4 if cuda and x.dtype != torch.float64 else x.element_size()
    return [rows * size, rows * size]


# ---------------------------------------------------------------------------------------------
# Operators on meta tensors, with the output metadata of fresh outputs remembered.
# Operators whose outputs may alias their inputs (views, in-place, out=) always run.

_OP_CACHE: dict[tuple, Any] = {}
_UNCACHEABLE = object()
_PLAIN_TYPES = (bool, int, float, str)


def _torch_plain_types() -> tuple:
    import torch

    return (torch.dtype, torch.device, torch.memory_format, torch.layout)


class _NoKey(Exception):
    """An argument the operator cache cannot key on."""


_REMEMBERING = [True]


@contextlib.contextmanager
def operators_run_afresh():
    """Run every operator's meta kernel, remembering nothing: the reference the remembered outputs must match."""
    _REMEMBERING[0] = False
    try:
        yield
    finally:
        _REMEMBERING[0] = True


def _run_meta(func, args: tuple, kwargs: dict) -> Any:
    import torch

    _TENSOR_TYPE[0] = torch.Tensor
    if not _REMEMBERING[0]:
        return func(*args, **kwargs)
    try:
        key = (func, torch.get_default_dtype(), _meta_key(args), _meta_key(kwargs))
    except _NoKey:
        return func(*args, **kwargs)
    hit = _OP_CACHE.get(key)
    if hit is _UNCACHEABLE:
        return func(*args, **kwargs)
    if hit is None:
        before = _storages(args, kwargs) if func._schema.is_mutable else ()
        out = func(*args, **kwargs)
        _OP_CACHE[key] = _describe_outputs(func, args, kwargs, out, (key, before))
        return out
    kind, specs = hit
    if kind is _IN_PLACE:
        return _in_place_result(specs, args, kwargs)
    tensors = [None if spec is None else _rebuild(spec) for spec in specs]
    return tensors[0] if kind is None else kind(tensors)


def _meta_key(obj: Any) -> Any:
    kind = type(obj)
    if kind is _TENSOR_TYPE[0]:  # the common cases first, by exact type (the same keys as below)
        if not obj.is_meta:
            raise _NoKey
        return (obj.shape, obj.stride(), obj.storage_offset(), obj.dtype)
    if kind is tuple or kind is list:
        tensor = _TENSOR_TYPE[0]
        if obj and all(type(o) is tensor and o.is_meta for o in obj):  # the optimizer's foreach lists
            return (kind, tuple([(o.shape, o.stride(), o.storage_offset(), o.dtype) for o in obj]))
        return (kind, tuple([_meta_key(o) for o in obj]))
    if obj is None or kind in _PLAIN_TYPES:
        return (kind, obj)
    return _meta_key_slow(obj)


def _meta_key_slow(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        if obj.device.type != "meta":
            raise _NoKey
        return (obj.shape, obj.stride(), obj.storage_offset(), obj.dtype)
    if isinstance(obj, (list, tuple)):
        return (type(obj), tuple(_meta_key(o) for o in obj))
    if isinstance(obj, dict):
        return tuple((k, _meta_key(v)) for k, v in obj.items())
    if obj is None or isinstance(obj, _PLAIN_TYPES) or isinstance(obj, _torch_plain_types()):
        return (type(obj), obj)  # the type too: 1, 1.0 and True promote differently
    raise _NoKey


def _tensor_leaves(out: Any) -> list:
    """The tensors of an operator's output (a tensor, or a tuple or list of them and other values), in order."""
    kind = type(out)
    if kind is _TENSOR_TYPE[0]:
        return [out]
    if kind is tuple or kind is list:
        if all(type(o) is _TENSOR_TYPE[0] for o in out):
            return list(out)
    from torch.utils._pytree import tree_leaves

    return [leaf for leaf in tree_leaves(out) if isinstance(leaf, _TENSOR_TYPE[0])]


class _NotYet:
    """Stands for torch.Tensor until `_run_meta` has imported torch (importing vramplan does not)."""


_TENSOR_TYPE: list[type] = [_NotYet]


def _storages(args: tuple, kwargs: dict) -> list[int]:
    import torch
    from torch.utils._pytree import tree_leaves

    return [id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]


def _describe_outputs(func, args: tuple, kwargs: dict, out: Any, before: tuple = ((), ())) -> Any:
    """Describe an operator's fresh tensor outputs so they can be rebuilt; _UNCACHEABLE otherwise.

    Outputs may include None (a backward's unneeded gradients). An in-place operator is described
    by `_describe_in_place`.
    """
    import torch
    from torch.utils._pytree import tree_leaves

    schema = func._schema
    if schema.is_mutable:
        return _describe_in_place(func, args, kwargs, out, *before)
    if any(r.alias_info is not None for r in schema.returns):
        return _UNCACHEABLE
    if isinstance(out, torch.Tensor):
        kind, tensors = None, [out]
    elif (isinstance(out, (tuple, list)) and any(isinstance(t, torch.Tensor) for t in out)
          and all(t is None or isinstance(t, torch.Tensor) for t in out)):
        kind, tensors = type(out), list(out)
    else:
        return _UNCACHEABLE
    fresh = [t for t in tensors if t is not None]
    inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
    storages = [id(t.untyped_storage()) for t in fresh]
    if len(set(storages)) != len(storages) or inputs.intersection(storages):
        return _UNCACHEABLE
    specs = [None if t is None else (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype,
                                     t.untyped_storage().nbytes()) for t in tensors]
    return kind, specs


_IN_PLACE = object()
# Mutable operators that may give a tensor another storage or change its metadata: always run.
_STORAGE_CHANGING = ("set_", "resize_", "resize_as_", "_resize_output_", "as_strided_", "swap_", "_set_")


def _describe_in_place(func, args: tuple, kwargs: dict, out: Any, key: tuple, storages: list[int]) -> Any:
    """An in-place (or `out=`) operator that returned its own arguments and changed no metadata or storage.

    On meta tensors such an operator only checks its arguments: with the same argument metadata
    (the cache key) it returns the same arguments again, so the result is rebuilt from them.
    """
    import torch
    from torch.utils._pytree import tree_leaves

    if not key or func._schema.name.split("::")[-1].startswith(_STORAGE_CHANGING):
        return _UNCACHEABLE
    leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    if key[2:] != (_meta_key(args), _meta_key(kwargs)) or _storages(args, kwargs) != storages:
        return _UNCACHEABLE  # metadata or a storage changed (a view's in-place reshape)
    if out is None or (isinstance(out, (tuple, list)) and not out):
        return _IN_PLACE, (type(out), ())
    outs = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, (tuple, list)) else None
    if outs is None:
        return _UNCACHEABLE
    positions = []
    for tensor in outs:
        at = next((i for i, leaf in enumerate(leaves) if leaf is tensor), None)
        if at is None:
            return _UNCACHEABLE
        positions.append(at)
    return _IN_PLACE, (None if isinstance(out, torch.Tensor) else type(out), tuple(positions))


def _in_place_result(spec: tuple, args: tuple, kwargs: dict) -> Any:
    import torch
    from torch.utils._pytree import tree_leaves

    kind, positions = spec
    if not positions:
        return None if kind is type(None) else kind()
    leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    outs = [leaves[i] for i in positions]
    return outs[0] if kind is None else kind(outs)


def _rebuild(spec: tuple) -> "torch.Tensor":
    import torch

    shape, stride, offset, dtype, nbytes = spec
    tensor = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    if offset == 0 and tensor.untyped_storage().nbytes() == nbytes:
        return tensor
    storage = torch.UntypedStorage(nbytes, device="meta")
    return torch.empty(0, dtype=dtype, device="meta").set_(storage, offset, shape, stride)


# ---------------------------------------------------------------------------------------------
# Attention kernels: which one PyTorch runs, and what it allocates besides its output.

def _sdpa_args(args: tuple, kwargs: dict) -> tuple:
    names = ("query", "key", "value", "attn_mask")
    values = list(args[:4]) + [kwargs.get(name) for name in names[len(args[:4]):]]
    return tuple(values)


def _sdpa_kernel_memory(case: InferenceCase, q, k, v, mask) -> tuple[str, list[int]]:
    """Return the SDPA kernel the target runs and the sizes of its own allocations."""
    kernel = _sdpa_backend(case, q, k, v, mask)
    if kernel == "flash":
        return kernel, _cuda_flash_temps(q, k, case.target.sm_count)
    if kernel == "efficient":
        return kernel, _cuda_efficient_temps(q, v, mask)
    if kernel == "cpu-flash":
        return kernel, _cpu_flash_temps(q, k, v)
    return kernel, _math_temps(q, k, v)


def _sdpa_backend(case: InferenceCase, q, k, v, mask) -> str:
    """Pick the kernel as sdp_utils.cpp does on the target card (flash > efficient > math), or on CPU.

    Flash needs sm80 or later (gpus.GpuSpec.sdpa_flash); T4 and V100 fall to memory-efficient.
    """
    import torch

    dense = q.dim() == 4 and all(t.stride(-1) == 1 for t in (q, k, v))
    same_head = q.shape[-1] == k.shape[-1] == v.shape[-1]
    if case.device == "cpu":
        # sdp_utils_cpp.cpp: the CPU flash kernel takes 4-D inputs with equal head dims and a
        # last-dim stride of 1, in float, double, bfloat16 or half; anything else runs math.
        return "cpu-flash" if dense and same_head else "math"
    half = q.dtype in (torch.float16, torch.bfloat16)
    flash_ok = case.target.sdpa_flash and half and mask is None and dense and same_head and q.shape[-1] <= 256
    if case.attn == "flash" or flash_ok:
        return "flash"
    # Memory-efficient: head dims divisible by the GEMM alignment (8 for half types, 4 for float32),
    # and as many key/value heads as query heads (no grouped-query attention).
    align = 8 if half else 4
    aligned = q.shape[-1] % align == 0 == v.shape[-1] % align
    same_heads = q.shape[-3] == k.shape[-3] == v.shape[-3]
    if dense and same_heads and aligned and q.dtype in (torch.float16, torch.bfloat16, torch.float32):
        return "efficient"
    return "math"


def _cuda_flash_temps(q, k, sm_count: int = H100_SM_COUNT) -> list[int]:
    """Logsumexp and split-KV accumulators of FlashAttention-2's mha_fwd (flash_api.cpp)."""
    batch, heads, q_len, head = q.shape
    kv_len = k.shape[-2]
    head_rounded = _round_up(_round_up(head, 8), 32)
    lse = batch * heads * q_len * 4
    block_n = 256 if head <= 64 else (128 if head <= 128 else 64)
    splits = _num_splits(batch * heads * _ceil_div(q_len, 64), sm_count * 2, _ceil_div(kv_len, block_n), 128)
    if splits <= 1:
        return [lse]
    return [lse, splits * batch * heads * q_len * 4, splits * batch * heads * q_len * head_rounded * 4]


def _num_splits(batch_nheads_mblocks: int, num_sms: int, num_n_blocks: int, max_splits: int) -> int:
    """FlashAttention's num_splits_heuristic, step for step."""
    if batch_nheads_mblocks >= 0.8 * num_sms:
        return 1
    max_splits = min(max_splits, num_sms, num_n_blocks)

    def eligible(s: int) -> bool:
        return s == 1 or _ceil_div(num_n_blocks, s) != _ceil_div(num_n_blocks, s - 1)

    efficiency = []
    for s in range(1, max_splits + 1):
        waves = batch_nheads_mblocks * s / num_sms
        efficiency.append(waves / math.ceil(waves) if eligible(s) else 0.0)
    best = max(efficiency, default=0.0)
    for s in range(1, max_splits + 1):
        if eligible(s) and efficiency[s - 1] >= 0.85 * best:
            return s
    return 1


def _cuda_efficient_temps(q, v, mask) -> list[int]:
    """Memory-efficient attention (attention.cu): fp32 accumulator for half outputs; padded mask."""
    import torch

    batch, heads, q_len, _ = q.shape
    temps = []
    if q.dtype != torch.float32:
        temps.append(batch * heads * q_len * v.shape[-1] * 4)
    if mask is not None and mask.shape[-1] % 16:
        # preprocess_mask pads the bias's last dim to a multiple of 16 (pad_bias<mem_eff_alignment>).
        temps.append(math.prod(mask.shape[:-1]) * _round_up(mask.shape[-1], 16) * mask.element_size())
    return temps


def _cpu_flash_temps(q, k, v) -> list[int]:
    """Logsumexp and per-thread buffers of cpu_flash_attention (FlashAttentionKernel.cpp)."""
    import torch

    batch, heads, q_len, _ = q.shape
    kv_len = k.shape[-2]
    q_split = min(256 if q_len >= 768 else (64 if q_len >= 192 else 32), q_len)
    kv_split = min(512, kv_len)
    threads = torch.get_num_threads()
    accum = 8 if q.dtype == torch.float64 else 4
    per_thread = q_split * kv_split + 2 * q_split + q_split * v.shape[-1]  # qk, max, sum, dst
    temps = [batch * q_len * heads * accum, threads * per_thread * accum]
    if q.dtype in (torch.float16, torch.bfloat16):
        temps.append(threads * q_split * kv_split * q.element_size())  # qk in the input dtype
    return temps


def _math_temps(q, k, v) -> list[int]:
    """The math path's temporaries (attention.cpp `_scaled_dot_product_attention_math`), counted high.

    Half types are computed in float32 (`allowFP16BF16ReductionMathSDP` is off by default): q, k
    and v are upcast first. Then k and v repeated for grouped-query attention, scaled q and k, the
    scores and their softmax, and `_safe_softmax`'s boolean masks (scores' size, and one per row).
    All are counted live at once, with the output, which errs high by about scaled k and the output.
    """
    import torch

    batch, heads, q_len, _ = q.shape
    kv_len = k.shape[-2]
    size = 4 if q.dtype in (torch.float16, torch.bfloat16) else q.element_size()
    temps = [t.numel() * size for t in (q, k, v)] if size != q.element_size() else []
    if k.shape[-3] != heads:  # enable_gqa: k and v repeated to the query's heads
        temps += [batch * heads * kv_len * k.shape[-1] * size, batch * heads * v.shape[-2] * v.shape[-1] * size]
    scores = batch * heads * q_len * kv_len
    temps += [q.numel() * size, batch * heads * kv_len * k.shape[-1] * size, scores * size, scores * size]
    return temps + [scores, batch * heads * q_len]  # _safe_softmax: isneginf(scores), and its all() per row


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, b: int) -> int:
    return _ceil_div(a, b) * b

