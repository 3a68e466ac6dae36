"""Per-GPU memory of one training step spread over GPUs: DDP, FSDP2, DeepSpeed ZeRO 1-3, with CPU offload.

The training step is simulated once on one GPU (activations, temporaries, optimizer state per parameter);
what changes with the strategy is derived here from the model's parameter shapes: which model states each
rank holds, and the communication buffers each engine allocates. Nothing is re-simulated per strategy.

Per rank and per phase of the step (forward, backward, optimizer step), the resident bytes are
Parameter + Gradient + Optstate + Buffer + communication buffers + the phase's activations and temporaries;
the per-GPU peak is the largest phase of the busiest rank.

- DDP (`torch.nn.parallel.DistributedDataParallel`): every rank holds everything, plus the reducer's
  buckets: with the default `gradient_as_bucket_view=False` the reducer allocates flat bucket tensors
  covering every trainable parameter when it is built (torch/csrc/distributed/c10d/reducer.cpp,
  `initialize_buckets`: `bucket.gradients = at::empty(...)`) and keeps them, a second copy of the
  gradients. `gradient_as_bucket_view=True` makes the gradients views into them (`ddp_bucket_view=True`).
- FSDP2 (`fully_shard` on each `_no_split_modules` block, then the root, as accelerate's FSDP2
  transformer-based wrap does): each parameter is split on dim 0 in `world` chunks padded to equal size
  (torch/distributed/fsdp/_fully_shard/_fsdp_param.py, `padded_sharded_param_size`), so every rank holds
  ceil(dim0 / world) rows of each, the busiest rank's share. Gathered per unit in the compute dtype of the
  mixed-precision policy: the block being computed and the prefetched next one; the root's parameters stay
  gathered from its forward to the end of backward (`_fsdp_state.py`: the root is not resharded after
  forward). In backward, the block's unsharded gradients and the reduce-scatter input (same size) are
  added. `reshard_after_forward=False` keeps every block gathered from forward to backward. With CPU
  offload (`CPUOffloadPolicy`), the sharded parameters, gradients and optimizer step live on the CPU.
- ZeRO (DeepSpeed 0.19.8, `deepspeed/runtime/zero/stage_1_and_2.py`, `stage3.py`): the counts of
  `estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs` (16-bit parameters;
  per partition 16-bit and 32-bit gradients, 32-bit master weights, optimizer state) for trainable
  parameters; frozen parameters hold only their 16-bit weights (DeepSpeed's estimators count every
  parameter as trainable). Added, as DeepSpeed allocates them with its defaults: the contiguous-gradient
  bucket of `reduce_bucket_size` elements (stage_1_and_2.py:3266, stage3.py:782; fp32 for ZeRO-1, which
  stages the fp32 accumulator, the model's 16-bit dtype otherwise); for ZeRO-3 the gathered largest
  layer and the prefetch bucket (`stage3_prefetch_bucket_size`), and parameters under
  `stage3_param_persistence_threshold` elements, which stay whole on every rank. DeepSpeed always keeps
  fp32 master weights; with `--precision fp32` its "16-bit" copies are float32.

Known limitations:
    - Activations and temporaries are those of the single-GPU step at the per-GPU batch: every strategy
      here replicates activations (no tensor or sequence parallelism).
    - At backward's peak, the gradients the simulation says exist then are sharded; one being made at that
      moment (allocated, not yet accumulated) is counted whole. Without per-phase gradients (an older
      measurement) every gradient made stays in backward's activations, unsharded: errs high.
    - Communication libraries' own buffers (NCCL channels, gloo scratch) are not counted.
    - FSDP2's all-gather input copies (one shard per unit, in the compute dtype) and DeepSpeed's
      alignment padding (a few elements per partition) are not counted.
    - Measured on full-size DINOv3 ViT-S/16 (2 gloo ranks, fp32, docs/accuracy-multigpu.md), FSDP2 is
      predicted 0.2% (full fine-tune) to 1.2% (linear probe, 0.9 MB) under the real peak, in the forward;
      the missing buffer is not identified (the flat all-gather output during the copy-out is a candidate).
    - DeepSpeed's CPU figures are the steady state of offloaded states; loading the model (each process
      materialising it on CPU before partitioning) can need more, which DeepSpeed's estimators cover
      with `additional_buffer_factor`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from .emit import DS_PERSISTENCE_THRESHOLD, DS_PREFETCH_BUCKET, DS_REDUCE_BUCKET
from .parallel import ParallelPlan

PHASES = ("forward", "backward", "optimizer step")


@dataclass(frozen=True)
class Unit:
    """One FSDP unit (a `_no_split_modules` block, or what the root holds itself): its parameters' shapes."""

    name: str
    trainable: tuple[tuple[int, ...], ...]
    frozen: tuple[tuple[int, ...], ...] = ()

    def numel(self, frozen: bool | None = None) -> int:
        shapes = self.trainable + self.frozen if frozen is None else (self.frozen if frozen else self.trainable)
        return sum(math.prod(s) for s in shapes)

    def shard_numel(self, world: int, frozen: bool | None = None) -> int:
        """Elements the busiest rank holds under FSDP2: ceil(dim0 / world) rows of every parameter."""
        shapes = self.trainable + self.frozen if frozen is None else (self.frozen if frozen else self.trainable)
        return sum(_rows(s, world) * math.prod(s[1:]) for s in shapes)


@dataclass(frozen=True)
class ModelStates:
    """What sharding needs from the model: parameter shapes by unit, dtypes, optimizer state per element.

    `units` lists the blocks first and the root's own parameters last. `weight_bytes` is the stored
    parameter dtype (4 for fp32 and amp, 2 for pure bf16/fp16); `compute_bytes` the dtype the step computes
    in (the FSDP2 mixed-precision `param_dtype`, DeepSpeed's 16-bit copy); `optstate_bytes` the optimizer
    state per trainable element on one GPU (8 for AdamW on float32 weights, 4 for SGD with momentum).
    """

    units: tuple[Unit, ...]
    weight_bytes: int = 4
    compute_bytes: int = 2
    optstate_bytes: float = 8.0
    buffer_bytes: int = 0
    largest_layer: int = 0  # DeepSpeed's "largest layer": the most parameters one module holds itself

    @property
    def trainable(self) -> int:
        return sum(u.numel(False) for u in self.units)

    @property
    def frozen(self) -> int:
        return sum(u.numel(True) for u in self.units)

    @property
    def largest_unit(self) -> int:
        blocks = self.units[:-1] or self.units
        return max(u.numel() for u in blocks)


@dataclass(frozen=True)
class StepActivations:
    """The single-GPU step beyond model states: activations and temporaries at each phase's peak.

    `optimizer_bytes` are the optimizer step's temporaries on one GPU holding every trainable parameter
    (the foreach AdamW's intermediates); a rank stepping a shard needs its share of them.
    """

    forward_bytes: int
    backward_bytes: int
    optimizer_bytes: int = 0
    backward_gradients: float = 1.0  # share of the gradients alive at backward's peak, outside backward_bytes
    backward_buffers: float = 1.0  # share of gradients made, for the FSDP2 gradient buffers (1 errs high)


@dataclass(frozen=True)
class ShardedPeak:
    """The busiest rank of one plan, in MemTracker's categories, at the phase of its peak."""

    plan: ParallelPlan
    parameter_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    buffer_bytes: int
    comm_bytes: int
    activation_bytes: int
    per_gpu_peak_bytes: int
    peak_phase: str
    cpu_bytes_per_node: int
    notes: tuple[str, ...] = field(default=())

    def as_json(self) -> dict:
        return {
            "gpus": self.plan.gpus, "nodes": self.plan.nodes, "strategy": self.plan.strategy,
            "offload": self.plan.offload, "per_gpu_peak_bytes": self.per_gpu_peak_bytes,
            "cpu_bytes_per_node": self.cpu_bytes_per_node,
            "per_gpu": {  # the busiest rank at its peak; the one-GPU case's own fields stay beside it
                "parameter_bytes": self.parameter_bytes, "buffer_bytes": self.buffer_bytes,
                "gradient_bytes": self.gradient_bytes, "optimizer_state_bytes": self.optimizer_state_bytes,
                "comm_bytes": self.comm_bytes, "activation_bytes": self.activation_bytes,
                "peak_phase": self.peak_phase,
            },
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Phase:
    """Resident bytes of one rank in one phase."""

    name: str
    parameter: int
    gradient: int
    optstate: int
    comm: int
    activation: int

    @property
    def total(self) -> int:
        return self.parameter + self.gradient + self.optstate + self.comm + self.activation


def step_from_phase_peaks(states: ModelStates, forward: int, backward: int, optimizer: int) -> StepActivations:
    """The activations and temporaries of a one-GPU step from its per-phase peaks (absolute bytes).

    In the second step's forward the optimizer state is alive and the gradients are not (set_to_none); in
    the optimizer step every gradient is. How many gradients backward had made by its peak is not known
    from the peak alone: they stay in backward's remainder, unsharded, and FSDP2's gradient buffers are
    counted as if all were made; both err high (exact for DDP, which shards nothing).
    """
    wb, t = states.weight_bytes, states.trainable
    weights = (t + states.frozen) * wb + states.buffer_bytes
    opt = math.ceil(t * states.optstate_bytes)
    return StepActivations(forward_bytes=max(forward - weights - opt, 0),
                           backward_bytes=max(backward - weights - opt, 0),
                           optimizer_bytes=max(optimizer - weights - t * wb - opt, 0),
                           backward_gradients=0.0, backward_buffers=1.0)


def plan_sharding(states: ModelStates, step: StepActivations, plan: ParallelPlan,
                  ddp_bucket_view: bool = False) -> ShardedPeak:
    """The per-GPU peak of the busiest rank and the per-node CPU memory for one plan."""
    if plan.strategy == "ddp":
        phases, cpu, notes = _ddp(states, step, ddp_bucket_view)
    elif plan.strategy == "fsdp":
        phases, cpu, notes = _fsdp(states, step, plan)
    else:
        phases, cpu, notes = _zero(states, step, plan)
    peak = max(phases, key=lambda p: p.total)
    return ShardedPeak(
        plan=plan, parameter_bytes=peak.parameter, gradient_bytes=peak.gradient,
        optimizer_state_bytes=peak.optstate, buffer_bytes=states.buffer_bytes, comm_bytes=peak.comm,
        activation_bytes=peak.activation, per_gpu_peak_bytes=peak.total + states.buffer_bytes,
        peak_phase=peak.name, cpu_bytes_per_node=cpu * plan.gpus, notes=notes,
    )


def plan_strategies(states: ModelStates, step: StepActivations, plans: Iterable[ParallelPlan]) -> list[ShardedPeak]:
    """Every plan from the same single simulation."""
    return [plan_sharding(states, step, p) for p in plans]


def _three_phases(parameter: int, gradient: int, optstate: int, comm: tuple[int, int, int],
                  step: StepActivations, optimizer_share: float) -> list[_Phase]:
    """Forward (gradients freed by zero_grad(set_to_none=True)), backward, optimizer step."""
    return [
        _Phase("forward", parameter, 0, optstate, comm[0], step.forward_bytes),
        _Phase("backward", parameter, math.ceil(gradient * step.backward_gradients), optstate, comm[1],
               step.backward_bytes),
        _Phase("optimizer step", parameter, gradient, optstate, comm[2], math.ceil(step.optimizer_bytes * optimizer_share)),
    ]


def _ddp(states: ModelStates, step: StepActivations, bucket_view: bool) -> tuple[list[_Phase], int, tuple[str, ...]]:
    wb, t = states.weight_bytes, states.trainable
    params, grads, opt = (t + states.frozen) * wb, t * wb, math.ceil(t * states.optstate_bytes)
    buckets = 0 if bucket_view else grads
    note = ("gradient_as_bucket_view=True: gradients are views into the buckets" if bucket_view else
            "DDP's gradient buckets are a second copy of the gradients (gradient_as_bucket_view=False, "
            f"the default); gradient_as_bucket_view=True saves {_gb(grads)}")
    return _three_phases(params, grads, opt, (buckets, buckets, buckets), step, 1.0), 0, (note,)


def _fsdp(states: ModelStates, step: StepActivations, plan: ParallelPlan) -> tuple[list[_Phase], int, tuple[str, ...]]:
    w, wb, cb = plan.world, states.weight_bytes, states.compute_bytes
    shard_t = sum(u.shard_numel(w, False) for u in states.units)
    shard_all = sum(u.shard_numel(w) for u in states.units)
    params, grads, opt = shard_all * wb, shard_t * wb, math.ceil(shard_t * states.optstate_bytes)
    forward, backward = _fsdp_comm(states, w, cb, plan.reshard_after_forward, step.backward_buffers)
    share = shard_t / max(states.trainable, 1)
    if plan.offloads_params:  # CPUOffloadPolicy: shards, gradients and the optimizer step on the CPU
        params = grads = opt = 0
        cpu = (shard_all * wb + shard_t * wb + math.ceil(shard_t * states.optstate_bytes)
               + math.ceil(step.optimizer_bytes * share))
        step, share = StepActivations(step.forward_bytes, step.backward_bytes, 0, step.backward_gradients,
                                      step.backward_buffers), 0.0
        notes: tuple[str, ...] = ("FSDP2 CPUOffloadPolicy: parameters, gradients and the optimizer step on the CPU",)
    else:
        cpu = 0
        notes = ("reshard_after_forward=False: every block stays gathered from forward to backward",) \
            if not plan.reshard_after_forward else ()
    phases = _three_phases(params, grads, opt, (forward[0], backward[0], 0), step, share)
    # the largest unit gathered, at a moment the activations may be gone (errs high: counted as none left)
    phases += [_Phase("forward", params, 0, opt, forward[1], 0), _Phase("backward", params, grads, opt, backward[1], 0)]
    return phases, cpu, notes


def _fsdp_comm(states: ModelStates, world: int, cb: int, reshard: bool,
               alive: float = 1.0) -> tuple[tuple[int, int], tuple[int, int]]:
    """FSDP2's gathered bytes, (when the last blocks run, when the largest pair runs), for forward and backward.

    The activations peak as forward ends and backward starts, while the last blocks are gathered (the one
    computing and the one prefetched); the largest pair of neighbours (a big embedding, say) may be gathered
    when few activations are left. Backward adds the block's unsharded gradients and the reduce-scatter input
    (both the size of the block) and the root's gradients, reduced only when backward ends. `alive` is the
    share of gradients that exist at backward's peak: backward makes the root's first, then the blocks' from
    the last; a peak reached while the last block's gradients are being made holds those made so far, and the
    reduce-scatter input only once the block is done.
    """
    def gathered(u: Unit) -> int:
        return _rows_numel(u, world) * cb

    def grads(u: Unit) -> int:
        return _rows_numel(u, world, trainable_only=True) * cb

    blocks, root = states.units[:-1], states.units[-1]
    if not blocks:
        return (gathered(root), gathered(root)), (gathered(root) + grads(root),) * 2
    pairs = [gathered(b) + (gathered(blocks[i - 1]) if i else 0) for i, b in enumerate(blocks)]
    if not reshard:
        pairs = [sum(gathered(b) for b in blocks)] * len(blocks)
    big = max(range(len(blocks)), key=lambda i: pairs[i] + 2 * grads(blocks[i]))
    base = gathered(root)
    forward = (base + pairs[-1], base + pairs[big])
    made = alive * states.trainable  # gradient elements made by backward's peak
    root_made = min(made, root.numel(False))
    root_grads = math.ceil(grads(root) * root_made / root.numel(False)) if root.numel(False) else 0
    # the last block's unsharded gradients as they are made; once all are, the reduce-scatter input beside them
    in_block = max(made - root.numel(False), 0)
    block_buffers = (2 * grads(blocks[-1]) if in_block >= blocks[-1].numel(False)
                     else math.ceil(in_block * cb))
    backward = (base + root_grads + pairs[-1] + block_buffers,
                base + grads(root) + pairs[big] + 2 * grads(blocks[big]))
    return forward, backward


def zero_model_states(states: ModelStates, plan: ParallelPlan) -> dict[str, int]:
    """The model states of DeepSpeed's estimators for one rank, and where they live (GPU or CPU).

    Keys: params16, grads16, grads32, master32, optstate (GPU residents unless offloaded), gathered16
    (ZeRO-3's gathered largest layer, parameters and gradients), and cpu (what offload moved there).
    """
    w, t, f, h = plan.world, states.trainable, states.frozen, states.compute_bytes
    stage = plan.zero_stage
    part = math.ceil(t / w)
    out = {
        "params16": (t + f) * h if stage < 3 else math.ceil((t + f) / w) * h,
        # ZeRO-2 with the optimizer offloaded copies each reduced gradient straight into the CPU's fp32
        # partition (stage_1_and_2.py, async_accumulate_grad_in_cpu_via_gpu): no 16-bit partition stays.
        "grads16": t * h if stage == 1 else part * h if stage == 2 and not plan.offloads_optimizer else 0,
        "grads32": part * 4,
        "master32": part * 4,
        "optstate": math.ceil(part * states.optstate_bytes),
        "gathered16": 2 * (states.largest_layer or states.largest_unit) * h if stage == 3 else 0,
        "cpu": 0,
    }
    if plan.offloads_optimizer:
        out["cpu"] += out["grads32"] + out["master32"] + out["optstate"]
        out["grads32"] = out["master32"] = out["optstate"] = 0
    if plan.offloads_params:
        out["cpu"] += out["params16"]
        out["params16"] = 0
    return out


def _zero(states: ModelStates, step: StepActivations, plan: ParallelPlan) -> tuple[list[_Phase], int, tuple[str, ...]]:
    h, stage = states.compute_bytes, plan.zero_stage
    s = zero_model_states(states, plan)
    bucket = DS_REDUCE_BUCKET * (4 if stage == 1 else h)
    comm = bucket + s["gathered16"]
    notes = [f"DeepSpeed's contiguous-gradient bucket ({DS_REDUCE_BUCKET:.0e} elements, "
             f"reduce_bucket_size): {_gb(bucket)} per GPU"]
    persistent = 0
    if stage == 3:
        persistent = _persistent_numel(states) * h
        comm += DS_PREFETCH_BUCKET * h
        notes.append(f"ZeRO-3 keeps parameters under {DS_PERSISTENCE_THRESHOLD:.0e} elements whole on every "
                     f"GPU ({_gb(persistent)}) and prefetches {DS_PREFETCH_BUCKET:.0e} elements")
    params = s["params16"] + persistent
    grads = s["grads16"] + s["grads32"]
    opt = s["master32"] + s["optstate"]
    share = 0.0 if plan.offloads_optimizer else 1 / plan.world
    cpu = s["cpu"] + (math.ceil(step.optimizer_bytes / plan.world) if plan.offloads_optimizer else 0)
    return _three_phases(params, grads, opt, (comm, comm, bucket), step, share), cpu, tuple(notes)


def model_states(model, precision: str = "amp-bf16", optstate_bytes: float = 8.0,
                 wrap_classes: Iterable[str] | None = None) -> ModelStates:
    """ModelStates of a built model: a unit per outermost `_no_split_modules` block, the root's rest last.

    Tied parameters count once. `optstate_bytes` is the optimizer state per trainable element on one GPU
    (from the training simulation: its optimizer state bytes over its trainable elements).
    """
    classes = set(wrap_classes if wrap_classes is not None else (getattr(model, "_no_split_modules", None) or ()))
    seen: set[int] = set()
    units = [_unit(name, module, seen) for name, module in _outermost(model, classes)]
    units.append(_unit("(root)", model, seen))
    weight, compute = {"fp32": (4, 4), "bf16": (2, 2), "fp16": (2, 2)}.get(precision, (4, 2))
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    return ModelStates(units=tuple(u for u in units if u.trainable or u.frozen) or (Unit("(root)", ()),),
                       weight_bytes=weight, compute_bytes=compute, optstate_bytes=optstate_bytes,
                       buffer_bytes=buffers, largest_layer=largest)


def _outermost(model, classes: set[str]) -> list:
    """(name, module) of the blocks to wrap, not descending into a block already taken."""
    out, taken = [], []
    for name, module in model.named_modules():
        if any(name.startswith(t + ".") for t in taken):
            continue
        if name and type(module).__name__ in classes:
            out.append((name, module))
            taken.append(name)
    return out


def _unit(name: str, module, seen: set[int]) -> Unit:
    trainable, frozen = [], []
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (trainable if p.requires_grad else frozen).append(tuple(p.shape))
    return Unit(name, tuple(trainable), tuple(frozen))


def _persistent_numel(states: ModelStates) -> int:
    return sum(math.prod(s) for u in states.units for s in u.trainable + u.frozen
               if math.prod(s) < DS_PERSISTENCE_THRESHOLD)


def _rows(shape: tuple[int, ...], world: int) -> int:
    return -(-shape[0] // world) if shape else 1


def _rows_numel(unit: Unit, world: int, trainable_only: bool = False) -> int:
    """Elements of the unit gathered: dim 0 padded to a multiple of the world, as FSDP2 all-gathers it."""
    shapes = unit.trainable if trainable_only else unit.trainable + unit.frozen
    return sum(_rows(s, world) * world * math.prod(s[1:]) for s in shapes)


def _gb(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"
