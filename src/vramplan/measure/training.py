"""Training memory on one GPU: two real training steps of the model, on tensors without data.

A copy of the meta-device model is made trainable (the task class with its own loss, or a
linear probe on a bare backbone; frozen, LoRA-wrapped through peft, or gradient-checkpointed
as asked), and the loop a user writes runs twice through the inference tracker
(`activations._Tracker`, extended here):

    optimizer.zero_grad(set_to_none=True); loss = model(batch); loss.backward(); optimizer.step()

Two steps, because the optimizer creates its state lazily in the first step and that state
lives through the second step's forward. Autograd runs on the meta tensors, so what it saves
for backward lives exactly as long as on the device; the optimizer is torch's own, run on the
meta parameters (its state tensors are meta tensors of the real sizes).

Breakdown, in MemTracker's words (`torch/distributed/_tools/mem_tracker.py`): Parameter,
Buffer, Gradient (a parameter's `.grad`, from the moment autograd accumulates it), Optstate (the
optimizer's state tensors, once a step has made them), Activation (made in the forward), Temp
(made in the backward or the optimizer step and not kept, and kernels' own buffers); and the
phase in which the peak happens.

Mixed precision: `amp-*` keeps float32 weights and optimizer and runs the forward under
autocast, simulated by `autocast.AutocastCaster` (autocast itself ignores meta tensors);
amp-fp16 runs through torch's GradScaler. The optimizers beyond AdamW and SGD (fused AdamW,
transformers' Adafactor, bitsandbytes' 8-bit AdamW) are in `optimizers.py`.

Attention: the SDPA kernel the target would run is called explicitly (outside inference mode,
`scaled_dot_product_attention` on meta tensors would decompose into the math path), so autograd
saves what that kernel's backward needs (the logsumexp of the flash kernels).

Kernel memory beyond the inference tracker's: the CPU flash-attention kernels' per-thread
buffers (forward and backward), FlashAttention-2's backward dq accumulator and softmax_d on CUDA,
and PyTorch's own CPU convolution's im2col buffers (checked against the CPU allocator).

Known limitations:
    - adamw-8bit is modelled from bitsandbytes' source (`optimizers.AdamW8bitStates`), not run;
      amp-fp16 assumes every step runs (GradScaler finds no inf): a step it skips allocates less.
    - CUDA memory-efficient attention's backward workspace and cuDNN convolution workspaces are
      not modelled; on CPU, oneDNN's convolution scratchpad (x86 default; a few weight-sizes per
      thread in the backward) and grouped (depthwise) convolutions' buffers are not modelled.
    - Python-level torch composites (`F.multi_head_attention_forward`, used by
      `nn.MultiheadAttention`) run whole below the function mode: their projections are not cast
      under autocast and their attention takes the math path (errs high).
    - Models whose training forward makes a data-dependent check (transformers' packed-sequence
      detection with gradient checkpointing on GPT-2) cannot be simulated: `.item()` on meta.
    - The linear probe's head is sized from the backbone's output on a one-image forward.
    - Tensors of the previous step (its batch and loss) are released where Python would release
      them in the loop above; a loop that keeps more (logging the logits) peaks higher.
    - A model's own `torch.autocast(...)` is honoured for its target device type or "meta";
      `torch.autocast("cpu")` inside a model simulated for CUDA also applies (CUDA's op lists).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
import weakref
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import SimulationError, UsageError, one_line
from . import data_reads, optimizers, overheads
from .activations import (
    ACTIVATION,
    BUFFER,
    PARAMETER,
    TEMP,
    InferenceCase,
    remembered,
    sweep,
    _cpu_flash_temps,
    _cuda_flash_temps,
    _fp32_patterns,
    _keeps_fp32,
    _model_caches,
    _round_up,
    _run_meta,
    _sdpa_backend,
    _set_attention,
    _tensor_leaves,
    _Tracker,
)
from .autocast import AutocastCaster
from .training_cases import OPTIMIZERS, PRECISIONS

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

GRADIENT, OPTSTATE = "Gradient", "Optstate"
TRAIN_CATEGORIES = (PARAMETER, BUFFER, GRADIENT, OPTSTATE, ACTIVATION, TEMP)
FREEZE = ("none", "backbone")
PHASES = ("forward", "backward", "optimizer step")
DEFAULT_NUM_LABELS = 1000
_DTYPE_OF = {"fp32": "float32", "amp-bf16": "float32", "amp-fp16": "float32", "bf16": "bfloat16", "fp16": "float16"}
_AUTOCAST_OF = {"amp-bf16": "bfloat16", "amp-fp16": "float16"}


@dataclass(frozen=True)
class TrainingCase:
    """One training configuration: input, batch, precision, optimizer and what trains."""

    batch_size: int
    precision: str = "amp-bf16"
    optimizer: str = "adamw"
    attn: str = "sdpa"
    device: str = "cuda"
    image_size: tuple[int, int] | None = None
    seq_len: int | None = None
    grad_checkpointing: bool = False
    freeze: str = "none"  # "none" | "backbone": only the head (the linear probe) trains
    lora_rank: int = 0  # 0: no LoRA
    lora_targets: tuple[str, ...] = ()  # module names for peft's target_modules; () = all linear layers
    num_labels: int = DEFAULT_NUM_LABELS  # the linear probe's classes (bare backbones)
    gpu: Any = None  # plan.gpus.GpuSpec of the CUDA target (kernels, workspaces, context); None: the H100 SXM

    def __post_init__(self) -> None:
        for value, choices, what in ((self.precision, PRECISIONS, "precision"),
                                     (self.optimizer, OPTIMIZERS, "optimizer"), (self.freeze, FREEZE, "freeze")):
            if value not in choices:
                raise UsageError(f"{what} `{value}` is not one of {', '.join(choices)}")
        if self.lora_rank < 0 or self.num_labels < 1:
            raise UsageError("the LoRA rank must be 0 or more and the number of labels at least 1")
        if self.lora_rank and self.freeze == "backbone":
            raise UsageError("--lora-rank and --freeze backbone exclude each other: LoRA trains adapters in the backbone")
        self.inference_case()  # validates size, batch, attention and device

    @property
    def dtype(self) -> str:
        """The dtype of the weights (and of the input): float32 for fp32 and amp."""
        return _DTYPE_OF[self.precision]

    def inference_case(self) -> InferenceCase:
        """The forward's input configuration, as the inference simulation takes it."""
        return InferenceCase(batch_size=self.batch_size, dtype=self.dtype, attn=self.attn, device=self.device,
                             image_size=self.image_size, seq_len=self.seq_len, gpu=self.gpu)

    def as_json(self) -> dict[str, Any]:
        """The case's fields as they open each entry of a model's JSON `"training"` list."""
        size: dict[str, Any] = (
            {"image_size": list(self.image_size)} if self.image_size is not None else {"seq_len": self.seq_len}
        )
        return {
            **size, "batch_size": self.batch_size, "precision": self.precision, "optimizer": self.optimizer,
            "attn": self.attn, "device": self.device, "grad_checkpointing": self.grad_checkpointing,
            "freeze": self.freeze, "lora_rank": self.lora_rank,
            **({"gpu": self.gpu.name} if self.gpu is not None else {}),
        }


@dataclass(frozen=True)
class TrainingMeasurement:
    """Peak memory of two simulated training steps; the six parts add up to `peak_allocated_bytes`."""

    case: TrainingCase
    parameter_bytes: int
    buffer_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    activation_bytes: int
    temp_bytes: int
    peak_allocated_bytes: int  # what torch.cuda.max_memory_allocated would show
    peak_device_bytes: int  # what the process holds on the card; == peak_allocated_bytes on cpu
    peak_phase: str  # "forward" | "backward" | "optimizer step"
    overheads: tuple[tuple[str, int], ...]  # named parts of peak_device_bytes - peak_allocated_bytes
    trainable_parameters: int = 0  # parameters the optimizer updates
    total_parameters: int = 0
    phase_peaks: tuple[tuple[str, int], ...] = ()  # (phase, highest allocated bytes in it), second step
    peak_step: int = 2  # the step (1 or 2) whose peak is reported
    phase_gradients: tuple[tuple[str, int], ...] = ()  # (phase, Gradient bytes at that phase's peak), second step

    def as_json(self) -> dict[str, Any]:
        """Return the entry of a model's JSON `"training"` list."""
        return {
            **self.case.as_json(),
            "parameter_bytes": self.parameter_bytes,
            "buffer_bytes": self.buffer_bytes,
            "gradient_bytes": self.gradient_bytes,
            "optimizer_state_bytes": self.optimizer_state_bytes,
            "activation_bytes": self.activation_bytes,
            "temp_bytes": self.temp_bytes,
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_device_bytes": self.peak_device_bytes,
            "peak_phase": self.peak_phase,
            "overheads": {name: size for name, size in self.overheads},
        }


def measure_training(model: "nn.Module", case: TrainingCase, *, reference: str) -> TrainingMeasurement:
    """Simulate two training steps of `model` for `case`; the model itself is never modified.

    Args:
        model: the meta-device float32 model `vramplan.build.build_model` returns.
        case: input, batch, precision, optimizer and what trains.
        reference: the model's name, for error messages.

    Raises:
        SimulationError: the step cannot run without data, or not in this configuration.
    """
    return remembered(_RESULTS.setdefault(model, {}), case, lambda: _simulate(model, case, reference))


def measure_training_sweep(
    model: "nn.Module", cases: list[TrainingCase], *, reference: str
) -> list[TrainingMeasurement | SimulationError]:
    """Simulate each case; a case that cannot be simulated gives its error in place of a result.

    The trainee prepared for a case serves its other batch sizes; it is dropped when the sweep ends.
    """
    try:
        return sweep(measure_training, model, cases, reference)
    finally:
        forget_trainees(model)


def forget_trainees(model: "nn.Module") -> None:
    """Drop the trainees prepared for `model` (a search over batches reuses one; measure_training_sweep drops them too)."""
    _TRAINEES.pop(model, None)


_RESULTS: "weakref.WeakKeyDictionary[nn.Module, dict[TrainingCase, Any]]" = weakref.WeakKeyDictionary()
# Per built model: prepared trainees by `_trainee_key`, and the linear probe's feature count by `_probe_key`.
_TRAINEES: "weakref.WeakKeyDictionary[nn.Module, dict[TrainingCase, Trainee]]" = weakref.WeakKeyDictionary()
_PROBE_FEATURES: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]]" = weakref.WeakKeyDictionary()


def _trainee_key(case: TrainingCase) -> TrainingCase:
    """What the prepared trainee depends on: the case less its batch size (only the batch it is fed changes)."""
    return replace(case, batch_size=1)


def _probe_key(case: TrainingCase) -> tuple:
    """What the probe's feature count depends on: the one-image forward's input, dtype and attention.

    Not the batch, LoRA (peft adds `B(A(x))` of the base layer's output shape), freezing or checkpointing,
    none of which changes an output shape.
    """
    return case.image_size, case.dtype, case.attn, case.device


def _prepared(model: "nn.Module", case: TrainingCase, reference: str) -> Trainee:
    """The trainee for `case`: prepared once per `_trainee_key` and fed the case's batch."""
    trainees = _TRAINEES.setdefault(model, {})
    key = _trainee_key(case)
    trainee = trainees.get(key)
    if trainee is None:
        try:
            with warnings.catch_warnings(), _model_autocast(case.device):  # deprecation notices are not the user's
                warnings.simplefilter("ignore", FutureWarning)
                trainee = prepare_trainee(model, case, reference, meta=True,
                                          probe_features=_PROBE_FEATURES.setdefault(model, {}))
        except SimulationError:
            raise
        except Exception as exc:
            raise SimulationError(reference, f"could not prepare the model for training: {type(exc).__name__}: "
                                             f"{one_line(exc)[:300]}") from exc
        trainees[key] = trainee
    return replace(trainee, make_batch=trainee.batch_for(case))


# ---------------------------------------------------------------------------------------------
# What trains: the task class with its loss, or the linear probe on a bare backbone.

TASK_SUFFIXES = ("ForImageClassification", "ForSequenceClassification", "LMHeadModel", "ForCausalLM")


@dataclass
class Trainee:
    """A trainable model and how to feed it: `loss = module(**batch)`."""

    module: "nn.Module"
    make_batch: Any  # (device=None) -> dict of input tensors for the case's batch
    head_names: tuple[str, ...] = ()  # parameter-name prefixes of the head (trains under --freeze backbone)
    cache_clears: tuple = field(default_factory=tuple)
    batch_for: Any = None  # (case) -> make_batch for another batch size of the same trainee


def task_class(model: "nn.Module") -> Any:
    """The transformers task class the config names in `architectures[0]`, if it is one we train."""
    import transformers

    config = getattr(model, "config", None)
    names = getattr(config, "architectures", None) or ()
    name = names[0] if names else ""
    if not name.endswith(TASK_SUFFIXES) or type(model).__name__ == name:
        return None
    return getattr(transformers, name, None)


def build_task_model(model: "nn.Module", cls, dtype: "torch.dtype"):
    """Build `cls` from the model's config on the meta device, as the trainee."""
    from accelerate import init_empty_weights

    from ..build import _skip_weight_init

    with init_empty_weights(), _skip_weight_init():
        task = cls._from_config(model.config, dtype=dtype)
    if callable(getattr(task, "tie_weights", None)):
        task.tie_weights()  # skipped with weight initialisation; from_pretrained ties them
    return task


class LinearProbe:
    """Factory of the DINOv3 linear probe: class token ++ mean of patch tokens -> Linear -> cross-entropy."""

    @staticmethod
    def build(backbone: "nn.Module", features: int, num_labels: int, prefix_tokens: int, call) -> "nn.Module":
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class _Probe(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.backbone = backbone
                self.head = nn.Linear(features, num_labels)

            def forward(self, pixel_values, labels):
                feats = probe_features(call(self.backbone, pixel_values), prefix_tokens)
                # A backbone that ends under its own autocast returns half-precision tokens.
                return F.cross_entropy(self.head(feats.to(self.head.weight.dtype)), labels)

        with torch.device("meta"):
            return _Probe()


def count_prefix_tokens(module: "nn.Module") -> int:
    """Tokens before the patches: the class token plus DINOv3's registers (`config.num_register_tokens`
    in transformers, `n_storage_tokens` on torch.hub) or timm's `num_prefix_tokens`, which counts the class token."""
    config = getattr(module, "config", None)
    return 1 + int(getattr(config, "num_register_tokens", None) or getattr(module, "n_storage_tokens", 0)
                   or max(0, getattr(module, "num_prefix_tokens", 1) - 1))


def probe_features(output: Any, prefix_tokens: int) -> "torch.Tensor":
    """The probe's input from a backbone output: tokens -> cls ++ mean(patches); maps -> mean; vectors as they are."""
    import torch

    x = output
    if not isinstance(x, torch.Tensor):
        x = getattr(output, "last_hidden_state", None)
        if x is None and isinstance(output, (tuple, list)):
            x = output[0]
        elif x is None and callable(getattr(output, "to_tuple", None)):
            x = output.to_tuple()[0]  # a transformers ModelOutput without last_hidden_state: its first field
        elif x is None:
            x = output
    if x.dim() == 3:
        return torch.cat([x[:, 0], x[:, prefix_tokens:].mean(dim=1)], dim=-1)
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    return x


# ---------------------------------------------------------------------------------------------
# The simulation.

def _simulate(model: "nn.Module", case: TrainingCase, reference: str) -> TrainingMeasurement:
    if case.attn == "flash" and (case.device != "cuda" or case.dtype == "float32" and case.precision == "fp32"):
        raise SimulationError(reference, "flash attention (flash_attention_2) needs --device cuda and fp16/bf16 compute")
    trainee = _prepared(model, case, reference)
    try:
        return _run_simulation(trainee, case, reference)
    except BaseException:
        _TRAINEES.get(model, {}).pop(_trainee_key(case), None)  # a failed run may leave hooks: never reuse it
        raise
    finally:
        for param in trainee.module.parameters():
            param.grad = None  # the reused trainee starts the next case as prepare_trainee left it


def _run_simulation(trainee: Trainee, case: TrainingCase, reference: str) -> TrainingMeasurement:
    tracker = _TrainTracker(case)
    tracker.reference = reference
    tracker.add_weights(trainee.module)
    for clear in trainee.cache_clears:
        clear()
    modes = _SimulationModes(case, tracker)
    try:
        with _model_autocast(case.device), optimizers.meta_stands_for_target(), modes, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            optimizer = make_optimizer(trainee.module, case)
            tracker.watch_optimizer(optimizer)
            run_steps(trainee, optimizer, case, on_phase=modes.on_phase, steps=2, device="meta",
                      autocast=modes.autocast)
    except SimulationError:
        raise
    except Exception as exc:  # whatever the model, autograd or a meta kernel raises means "cannot simulate"
        raise SimulationError(reference, f"{type(exc).__name__}: {one_line(exc)[:300]}") from exc
    finally:
        for clear in trainee.cache_clears:
            clear()
    params = list(trainee.module.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return tracker.measurement(trainable, sum(p.numel() for p in params))


def prepare_trainee(model: "nn.Module", case: TrainingCase, reference: str, *, meta: bool,
                    probe_features: dict | None = None) -> Trainee:
    """Copy (meta) or take (real) the model, make it the trainee the case asks for, in train mode.

    With `meta=False` the model is a real one (the CPU check in the tests) and is changed in place.
    `probe_features` remembers the linear probe's feature count by `_probe_key` across calls.
    """
    import torch

    dtype = getattr(torch, case.dtype)
    cls = task_class(model)
    base = build_task_model(model, cls, torch.float32) if cls is not None and meta else model
    module = copy.deepcopy(base) if meta and base is model else base
    implementation = "eager" if case.attn == "eager" else "sdpa"
    _set_attention(module, implementation, reference)
    if meta:
        _recast(module, dtype)
    elif dtype != torch.float32:
        module.to(dtype)
    input_name = getattr(module, "main_input_name", None)
    by_keyword = input_name is not None
    input_name = input_name or "pixel_values"
    config = getattr(module, "config", None)
    channels = int(getattr(config, "num_channels", None) or getattr(module, "in_chans", None) or 3)
    if case.grad_checkpointing:
        _enable_checkpointing(module, reference)
    is_task = cls is not None or type(module).__name__.endswith(TASK_SUFFIXES)
    causal = type(module).__name__.endswith(("LMHeadModel", "ForCausalLM"))
    heads = _head_names(module) if is_task else ()
    if case.lora_rank:
        module = _add_lora(module, case, heads if is_task and not causal else ())
    if is_task:
        batch_for = functools.partial(_task_batch, input_name=input_name, channels=channels, causal=causal)
        trainee = Trainee(module, batch_for(case), heads, batch_for=batch_for)
    else:
        trainee = _probe(module, case, input_name, by_keyword, channels, dtype, reference,
                         {} if probe_features is None else probe_features)
    if case.freeze == "backbone":
        for name, param in trainee.module.named_parameters():
            param.requires_grad_(name.startswith(trainee.head_names))
    trainee.module.train()
    trainee.cache_clears = _model_caches(trainee.module)
    return trainee


def _recast(module: "nn.Module", dtype: "torch.dtype") -> None:
    """Give the copy fresh meta parameters in the case dtype (transformers' fp32-kept modules stay)."""
    import torch
    import torch.nn as nn

    keep_fp32 = _fp32_patterns(module, str(dtype).removeprefix("torch."))  # as from_pretrained(dtype=...)
    fresh_of: dict[int, nn.Parameter] = {}  # tied weights (GPT-2's lm_head and wte) stay one tensor
    for module_name, sub in module.named_modules(remove_duplicate=False):
        for name, param in sub._parameters.items():
            if param is not None and id(param) not in fresh_of:
                qualified = f"{module_name}.{name}" if module_name else name
                cast = param.is_floating_point() and not _keeps_fp32(qualified, keep_fp32)
                fresh = torch.empty(param.shape, dtype=dtype if cast else param.dtype, device="meta")
                fresh_of[id(param)] = nn.Parameter(fresh, requires_grad=param.is_floating_point())
            if param is not None:
                sub._parameters[name] = fresh_of[id(param)]
        for name, buf in sub._buffers.items():
            if buf is not None:
                sub._buffers[name] = torch.empty(buf.shape, dtype=buf.dtype, device="meta")


def _head_names(module: "nn.Module") -> tuple[str, ...]:
    """Prefixes of the parameters outside the task model's base model: its head."""
    base = getattr(module, "base_model_prefix", "")
    names = {n.split(".")[0] for n, _ in module.named_parameters()}
    return tuple(f"{n}." for n in sorted(names) if n != base)


def _task_batch(case: TrainingCase, input_name: str, channels: int, causal: bool):
    """Inputs and labels for a task class: class ids, or the token ids themselves for a causal LM."""
    import torch

    dtype = getattr(torch, case.dtype)

    def make(device=None) -> dict[str, "torch.Tensor"]:
        if case.image_size is not None:
            pixels = torch.zeros((case.batch_size, channels, *case.image_size), dtype=dtype, device=device)
            return {input_name: pixels, "labels": torch.zeros(case.batch_size, dtype=torch.int64, device=device)}
        ids = torch.zeros((case.batch_size, case.seq_len), dtype=torch.int64, device=device)
        target = ids.clone() if causal else torch.zeros(case.batch_size, dtype=torch.int64, device=device)
        return {input_name: ids, "labels": target}

    return make


def _probe(module, case: TrainingCase, input_name: str, by_keyword: bool, channels: int, dtype, reference,
           known: dict) -> Trainee:
    """Wrap a bare backbone in the linear probe; its head is sized from a one-image forward (`known` by `_probe_key`)."""
    import torch

    if case.image_size is None:
        raise SimulationError(reference, "the linear probe is for vision backbones: a text model needs a task class "
                                         "(architectures[0] such as BertForSequenceClassification)")

    def call(backbone, pixels):
        return backbone(**{input_name: pixels}) if by_keyword else backbone(pixels)

    prefix = count_prefix_tokens(module)
    device = next(module.parameters()).device
    features = known.get(_probe_key(case))
    if features is None:
        with torch.no_grad(), _remembering_operators(device.type == "meta"):
            probe_input = torch.zeros((1, channels, *case.image_size), dtype=dtype, device=device)
            features = known[_probe_key(case)] = probe_features(call(module, probe_input), prefix).shape[-1]
    probe = LinearProbe.build(module, features, case.num_labels, prefix, call)
    if device.type != "meta":
        probe.head.to_empty(device=device)
        torch.nn.init.normal_(probe.head.weight, std=0.01)
        torch.nn.init.zeros_(probe.head.bias)
    probe.head.to(dtype)

    batch_for = functools.partial(_probe_batch, channels=channels, dtype=dtype)
    return Trainee(probe, batch_for(case), ("head.",), batch_for=batch_for)


@contextlib.contextmanager
def _remembering_operators(enabled: bool):
    """Run a meta forward's operators through the operator cache the simulation shares (`_run_meta`)."""
    if not enabled:
        yield
        return
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return _run_meta(func, args, kwargs or {})

    with _Mode():
        yield


def _probe_batch(case: TrainingCase, channels: int, dtype):
    """The linear probe's inputs: images and class ids."""
    import torch

    def make(device=None) -> dict[str, "torch.Tensor"]:
        pixels = torch.zeros((case.batch_size, channels, *case.image_size), dtype=dtype, device=device)
        return {"pixel_values": pixels, "labels": torch.zeros(case.batch_size, dtype=torch.int64, device=device)}

    return make


def _add_lora(module: "nn.Module", case: TrainingCase, head: tuple[str, ...]) -> "nn.Module":
    """Wrap the model with peft's LoRA (`get_peft_model`); a classification head (`head`) trains whole."""
    from peft import LoraConfig, get_peft_model

    targets: Any = list(case.lora_targets) or "all-linear"
    config = LoraConfig(r=case.lora_rank, lora_alpha=case.lora_rank, target_modules=targets,
                        modules_to_save=[h.rstrip(".") for h in head] or None)
    peft_model = get_peft_model(module, config)
    return peft_model


def _enable_checkpointing(module: "nn.Module", reference: str) -> None:
    """transformers' gradient checkpointing, or torch.utils.checkpoint around each block of a plain module."""
    if getattr(module, "supports_gradient_checkpointing", False):
        kwargs = {"use_reentrant": False}
        if callable(getattr(module, "activation_checkpointing_enable", None)):  # transformers >= 5.2x
            module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return
    blocks = _largest_block_list(module)
    if blocks is None:
        raise SimulationError(reference, "gradient checkpointing: the model has no list of blocks to checkpoint")
    for block in blocks:
        _checkpoint_forward(block)


def _largest_block_list(module: "nn.Module"):
    import torch.nn as nn

    lists = [m for m in module.modules() if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 1]
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()), default=None)


def _checkpoint_forward(block: "nn.Module") -> None:
    from torch.utils.checkpoint import checkpoint

    forward = block.forward

    def checkpointed(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed


def make_optimizer(module: "nn.Module", case: TrainingCase):
    """torch's optimizer as it runs on the target: foreach on CUDA, the for-loop on CPU."""
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    foreach = case.device == "cuda"
    if case.optimizer not in ("adamw", "sgd"):
        return optimizers.make_optimizer(params, case)
    if case.optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=foreach)
    return torch.optim.AdamW(params, lr=1e-4, foreach=foreach)


def run_steps(trainee: Trainee, optimizer, case: TrainingCase, *, on_phase=None, steps: int = 2,
              device=None, autocast=None, scaler=None) -> None:
    """The loop a user writes, `steps` times; `on_phase(name, step)` is told where it is.

    `autocast(dtype)` returns the autocast context (default: `torch.autocast` on the CPU, for
    the real check). The batch and the loss are loop variables: the previous ones are released
    when the next batch and loss replace them. amp-fp16 runs through `scaler` (default:
    `optimizers.grad_scaler(case)`).
    """
    import torch

    note = on_phase or (lambda phase, step: None)
    amp = _AUTOCAST_OF.get(case.precision)
    autocast = autocast or (lambda dtype: torch.autocast("cpu", dtype=dtype))
    batch = loss = None
    scaler = scaler or optimizers.grad_scaler(case)  # amp-fp16: scale the loss, unscale, check the gradients
    for step in range(steps):
        note("zero_grad", step)
        optimizer.zero_grad(set_to_none=True)
        note("forward", step)
        batch = trainee.make_batch(device)
        if amp:
            with autocast(getattr(torch, amp)):
                loss = _loss(trainee.module(**batch))
        else:
            loss = _loss(trainee.module(**batch))
        note("backward", step)
        (loss if scaler is None else scaler.scale(loss)).backward()
        note("optimizer step", step)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        note("done", step)
    del batch, loss


def _loss(output: Any) -> "torch.Tensor":
    import torch

    return output if isinstance(output, torch.Tensor) else output.loss


# ---------------------------------------------------------------------------------------------
# The tracker and the function-level mode (autocast, SDPA kernel choice).

class _TrainTracker(_Tracker):
    """The inference tracker with Gradient and Optstate categories and the phase of the peak."""

    def __init__(self, case: TrainingCase) -> None:
        super().__init__(case.inference_case())
        self.train_case = case
        self.current = dict.fromkeys(TRAIN_CATEGORIES, 0)
        self.peak = dict(self.current)
        self.phase = "forward"
        self.peak_phase = "forward"
        self.new_category = ACTIVATION
        self._optimizer_tensors: list = []
        self._first_step: tuple | None = None
        self._grad_hooks: list = []
        self.phase_peaks: dict[str, int] = {}
        self.phase_gradients: dict[str, int] = {}
        self._phase_serial: dict[str, int] = {}  # the allocation serial at each phase's peak
        self._serial = 0  # allocations so far; a storage's birth serial says whether it was live at the peak
        self._born: dict[int, int] = {}
        self._peak_serial = 0
        self.peak_step = 1

    def add_weights(self, module: "nn.Module") -> None:
        super().add_weights(module)
        for param in module.parameters():
            if param.requires_grad:
                self._grad_hooks.append(param.register_post_accumulate_grad_hook(self._on_grad))

    def _on_grad(self, param) -> None:
        self.retag(param.grad, GRADIENT)

    def enter_phase(self, phase: str, step: int) -> None:
        """Called by the loop: label new storages by phase; after each step, tag the optimizer state."""
        if phase == "done":
            self._tag_optimizer_state()
            if step == 0:  # the second step's peak is the one to report unless the first was higher
                self._first_step = (self.peak_total, dict(self.peak), self.peak_phase)
                self.peak_total, self.peak = self.total, dict(self.current)
                self._peak_serial = self._serial  # every live storage is live at this new "peak"
                self.phase_peaks, self.phase_gradients, self._phase_serial = {}, {}, {}
            return
        if phase in PHASES:
            self.phase = phase
            if self.total > self.phase_peaks.get(phase, -1):
                self._phase_peak()
        self.new_category = ACTIVATION if phase == "forward" else TEMP

    def watch_optimizer(self, optimizer) -> None:
        self._optimizer = optimizer

    def _tag_optimizer_state(self) -> None:
        import torch

        optimizer = getattr(self, "_optimizer", None)
        if optimizer is None:
            return
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    self.retag(value, OPTSTATE)

    def retag(self, tensor: "torch.Tensor", category: str) -> None:
        """Move a live storage's bytes to another category (a gradient, an optimizer state).

        A storage born before the peak and still live was live at the peak: the peak's
        breakdown moves it too (the optimizer state made in the step that peaks, a gradient
        allocated at the peak and accumulated just after).
        """
        key = id(tensor.untyped_storage())
        entry = self._live.get(key)
        if entry is None or entry[1] == category:
            return
        ref, old, handle = entry
        size = 0 if handle is None else (handle if self.allocator is None else handle.size)
        self.current[old] -= size
        self.current[category] += size
        self._live[key] = (ref, category, handle)
        born = self._born.get(key)
        if born is not None and born <= self._peak_serial:
            self.peak[old] -= size
            self.peak[category] += size
        if GRADIENT in (old, category) and born is not None:
            for phase, serial in self._phase_serial.items():
                if born <= serial:
                    self.phase_gradients[phase] += size if category == GRADIENT else -size

    def _track(self, tensor: "torch.Tensor", category: str) -> None:
        key = id(tensor.untyped_storage())
        new = key not in self._live
        super()._track(tensor, category)
        if new:
            self._born[key] = self._serial

    def _release(self, key: int) -> None:
        self._born.pop(key, None)
        super()._release(key)

    def _alloc(self, nbytes: int, category: str) -> Any:
        before = self.peak_total
        self._serial += 1
        handle = super()._alloc(nbytes, category)
        if self.peak_total != before:
            self.peak_phase = self.phase
            self._peak_serial = self._serial
        if self.total > self.phase_peaks.get(self.phase, 0):
            self._phase_peak()
        return handle

    def _phase_peak(self) -> None:
        """The current phase's highest point so far, with the gradients live then (`retag` adds those
        allocated by then and accumulated after)."""
        self.phase_peaks[self.phase] = self.total
        self.phase_gradients[self.phase] = self.current[GRADIENT]
        self._phase_serial[self.phase] = self._serial

    def dispatch(self, func, args: tuple, kwargs: dict) -> Any:
        if data_reads.is_scalar_read(func) and args[0].device.type == "meta":
            return optimizers.answer_read(args[0], self.phase, self.reference)
        out = _run_meta(func, args, kwargs)
        for leaf in _tensor_leaves(out):
            # Host tensors (the optimizer's step counters) live in CPU memory when the target is a GPU.
            if self.allocator is None or leaf.is_meta:
                self._track(leaf, self.new_category)
        self._kernel_memory(func, args, kwargs)
        return out

    def _kernel_memory(self, func, args: tuple, kwargs: dict) -> None:
        import torch

        aten = torch.ops.aten
        packet = func._overloadpacket
        cuda = self.case.device == "cuda"
        super()._kernel_memory(func, args, kwargs)
        if packet is aten._scaled_dot_product_flash_attention_for_cpu:
            q, k, v = args[:3]
            self._transient(_cpu_flash_temps(q, k, v)[1:])  # the logsumexp is an output here
        elif packet is aten._scaled_dot_product_flash_attention_for_cpu_backward:
            self._transient(_cpu_flash_backward_temps(*args[1:4]))
        elif packet is aten._scaled_dot_product_flash_attention:
            self._transient(_cuda_flash_temps(args[0], args[1], self.case.target.sm_count)[1:])
        elif packet is aten._scaled_dot_product_flash_attention_backward:
            self._transient(_cuda_flash_backward_temps(args[1]))
        elif not cuda and packet in (aten.convolution, aten.convolution_backward):
            self._transient(_cpu_conv_columns(packet is aten.convolution_backward, args))

    def measurement(self, trainable: int, total: int) -> TrainingMeasurement:
        if self._first_step is not None and self._first_step[0] > self.peak_total:
            self.peak_total, self.peak, self.peak_phase = self._first_step
            self.peak_step = 1
        elif self._first_step is not None:
            self.peak_step = 2
        for hook in self._grad_hooks:
            hook.remove()
        extra: tuple[tuple[str, int], ...] = ()
        if self.allocator is not None:
            extra = (
                ("CUDA context", overheads.cuda_context_bytes(self.case.target)),
                ("allocator cache (reserved - allocated)", self.allocator.peak_reserved - self.peak_total),
            )
        return TrainingMeasurement(
            case=self.train_case,
            parameter_bytes=self.peak[PARAMETER],
            buffer_bytes=self.peak[BUFFER],
            gradient_bytes=self.peak[GRADIENT],
            optimizer_state_bytes=self.peak[OPTSTATE],
            activation_bytes=self.peak[ACTIVATION],
            temp_bytes=self.peak[TEMP],
            peak_allocated_bytes=self.peak_total,
            peak_device_bytes=self.peak_total + sum(size for _, size in extra),
            peak_phase=self.peak_phase,
            overheads=extra,
            trainable_parameters=trainable,
            total_parameters=total,
            phase_peaks=tuple((phase, self.phase_peaks[phase]) for phase in PHASES if phase in self.phase_peaks),
            peak_step=self.peak_step,
            phase_gradients=tuple((phase, self.phase_gradients[phase]) for phase in PHASES
                                  if phase in self.phase_gradients),
        )


def _cpu_flash_backward_temps(q, k, v) -> list[int]:
    """Per-thread buffers of cpu_flash_attention_backward (FlashAttentionKernel.cpp)."""
    import torch

    q_len, kv_len = q.shape[-2], k.shape[-2]
    q_split = min(256 if q_len >= 768 else (64 if q_len >= 192 else 32), q_len)
    kv_split = min(512, kv_len)
    threads = torch.get_num_threads()
    accum = 8 if q.dtype == torch.float64 else 4
    temps = [threads * 2 * q_split * kv_split * accum]  # attn, grad_attn
    if q.dtype in (torch.float16, torch.bfloat16):
        temps.append(threads * q_split * kv_split * q.element_size())
    return temps


def _cpu_conv_columns(backward: bool, args: tuple) -> list[int]:
    """The im2col buffers of PyTorch's own CPU convolution (slow_conv2d, `ConvolutionMM2d.cpp`).

    Forward: `columns`, (batch, C_in * kh * kw, out_h * out_w), unless the kernel is 1x1 with
    stride 1 and no padding; backward: `columns` again for the weight gradient and
    `grad_columns` for the input gradient. Grouped (depthwise) convolutions and oneDNN's path
    (x86 default, whose scratchpad differs) are not modelled.
    """
    if backward:
        grad, x, weight = args[:3]
        stride, padding, groups, mask = args[4], args[5], args[9], args[10]
    else:
        x, weight = args[:2]
        stride, padding, groups, mask = args[3], args[4], args[8], None
    if x.dim() != 4 or groups != 1:
        return []
    kh, kw = weight.shape[-2:]
    if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0):
        return []
    out = grad if backward else None
    out_hw = (out.shape[-2] * out.shape[-1]) if out is not None else _conv_out(x, weight, stride, padding)
    size = x.shape[0] * weight.shape[1] * kh * kw * out_hw * x.element_size()
    if not backward:
        return [size]
    copy = [] if grad.is_contiguous() else [grad.numel() * grad.element_size()]  # grad_output.contiguous()
    return copy + [size] * (int(bool(mask[0])) + int(bool(mask[1])))


def _conv_out(x, weight, stride, padding) -> int:
    dims = [(x.shape[2 + i] + 2 * padding[i] - weight.shape[2 + i]) // stride[i] + 1 for i in range(2)]
    return dims[0] * dims[1]


def _cuda_flash_backward_temps(q) -> list[int]:
    """FlashAttention-2 mha_bwd (flash_api.cpp): float32 dq_accum and softmax_d, rows rounded to 128."""
    batch, heads, q_len, head = q.shape
    rows = _round_up(q_len, 128)
    return [batch * rows * heads * _round_up(head, 32) * 4, batch * heads * rows * 4]


class _SimulationModes:
    """Enter the tracker and a TorchFunctionMode (autocast, SDPA kernel, meta default device).

    Also hooks `torch.clear_autocast_cache`, which `torch.autocast.__exit__` calls when the
    outermost autocast context exits, so the simulated weight-cast cache is dropped with it.
    """

    def __init__(self, case: TrainingCase, tracker: _TrainTracker) -> None:
        self.case = case
        self.tracker = tracker
        self.caster = AutocastCaster(case.device)
        self.function_mode = _FunctionMode(self.caster, case.inference_case())
        self._saved_clear = None

    def on_phase(self, phase: str, step: int) -> None:
        """The loop's phases: the optimizer step runs with CPU as default device (its step counters)."""
        self.function_mode.meta_default = phase != "optimizer step"
        self.tracker.enter_phase(phase, step)

    def autocast(self, dtype):
        """The user's autocast context: CPU autocast's state stands for the target's (see autocast.py)."""
        import torch

        return torch.autocast("cpu", dtype=dtype)

    def __enter__(self) -> "_SimulationModes":
        import torch

        caster = self.caster
        original_clear = torch.clear_autocast_cache

        def clear_autocast_cache() -> None:
            caster.clear_cache()
            original_clear()

        self._saved_clear = original_clear
        torch.clear_autocast_cache = clear_autocast_cache
        self.tracker.__enter__()
        self.function_mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        try:
            self.function_mode.__exit__(*exc)
            self.tracker.__exit__(*exc)
        finally:
            torch.clear_autocast_cache = self._saved_clear
            self.caster.clear_cache()


@contextlib.contextmanager
def _model_autocast(target: str):
    """Let a model's own `torch.autocast(...)` drive the simulated casts while the simulation runs.

    A model that opens `torch.autocast("cuda", ...)` (DINOv3's depth head) or names its tensors'
    device (`x.device.type`, "meta" here) gets CPU autocast, whose state the simulated casts read
    (`autocast.AutocastCaster`), with the target's op lists. Enabled or disabled, dtype and cache
    setting are kept.
    """
    import torch

    cls = torch.amp.autocast_mode.autocast
    original = cls.__init__

    def __init__(self, device_type: str, *args, **kwargs) -> None:
        original(self, "cpu" if device_type in (target, "meta") else device_type, *args, **kwargs)

    cls.__init__ = __init__
    try:
        yield
    finally:
        cls.__init__ = original


def _function_mode_base():
    from torch.overrides import TorchFunctionMode

    return TorchFunctionMode


class _FunctionMode(_function_mode_base()):  # type: ignore[misc]
    """Above autograd: autocast's casts, the SDPA kernel the target picks, meta as default device."""

    def __init__(self, caster: AutocastCaster, case: InferenceCase) -> None:
        import torch
        import torch.nn.functional as F
        from torch.utils._device import _device_constructors

        super().__init__()
        self.caster = caster
        self.case = case
        self.meta_default = True
        self._constructors = _device_constructors()
        # Functions handled below; any other one, unless autocast lists it, is called as it is.
        self._handled = frozenset({torch.Tensor.backward, F.scaled_dot_product_attention, *self._constructors})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        try:
            plain = func not in self._handled and getattr(func, "__name__", "") not in self.caster.listed
        except TypeError:  # an unhashable callable
            plain = False
        if plain:  # most calls (tensor attributes, views, elementwise operators): nothing to do
            return func(*args, **(kwargs or {}))
        return self._handle(func, args, kwargs or {})

    def _handle(self, func, args: tuple, kwargs: dict):
        import torch
        import torch.nn.functional as F

        if func is torch.Tensor.backward and len(args) == 1 and not kwargs.get("inputs"):
            # A mode is off while it handles a call: keep it on for the backward, where
            # torch.utils.checkpoint recomputes forwards that must be cast as in the forward.
            # (torch.autograd.backward would hand the call back here: run the engine as it does.)
            from torch.autograd.graph import _engine_run_backward

            loss = args[0]
            with self:
                grad = kwargs.get("gradient")
                grad = torch.ones_like(loss, memory_format=torch.preserve_format) if grad is None else grad
                _engine_run_backward((loss,), (grad,), bool(kwargs.get("retain_graph")),
                                     bool(kwargs.get("create_graph")), (), allow_unreachable=True,
                                     accumulate_grad=True)
            return None
        if self.meta_default and func in self._constructors and kwargs.get("device") is None:
            kwargs["device"] = "meta"  # as torch.device("meta") does
        args, kwargs = self.caster.cast(func, args, kwargs)
        if func is F.scaled_dot_product_attention:
            return _sdpa(self.case, args, kwargs, func)
        return func(*args, **kwargs)


def training_sdpa_kernel(case: InferenceCase, q, k, v, mask, dropout: float) -> str:
    """The SDPA kernel of a training forward: the target's pick, or "math" where that kernel cannot run it."""
    kernel = _sdpa_backend(case, q, k, v, mask)
    cpu_flash_cannot = kernel == "cpu-flash" and (dropout > 0 or (mask is not None and mask.requires_grad))
    if k.shape[-3] != q.shape[-3] or q.dim() != 4 or cpu_flash_cannot:
        kernel = "math"  # the CPU flash kernel has no dropout and no mask gradient: sdp_utils_cpp.cpp picks math
    return kernel


def _sdpa(case: InferenceCase, args: tuple, kwargs: dict, func):
    """Run the SDPA kernel the target picks, as its own aten operator, so autograd saves what it saves."""
    import torch

    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    bound = dict(zip(names, args))
    bound.update(kwargs)
    q, k, v, mask = bound["query"], bound["key"], bound["value"], bound.get("attn_mask")
    dropout, causal, scale = bound.get("dropout_p", 0.0), bound.get("is_causal", False), bound.get("scale")
    kernel = training_sdpa_kernel(case, q, k, v, mask, dropout)
    aten = torch.ops.aten
    if mask is not None and mask.dtype == torch.bool and kernel != "math":
        mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill_(mask.logical_not(), float("-inf"))
    if kernel == "cpu-flash":
        return aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout, causal, attn_mask=mask, scale=scale)[0]
    if kernel == "flash" and mask is None:
        return aten._scaled_dot_product_flash_attention(q, k, v, dropout, causal, False, scale=scale)[0]
    if kernel == "efficient":
        return aten._scaled_dot_product_efficient_attention(q, k, v, mask, True, dropout, causal, scale=scale)[0]
    return func(*args, **kwargs)
