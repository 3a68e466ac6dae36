"""Two real training steps on CPU, alone or under DDP / FSDP2 with gloo, measured by the CPU allocator.

Run alone (`python -m vramplan.testing.dist_step --strategy single ...`) it gives the one-GPU step that
sharding is derived from; under `torchrun --nproc-per-node 2 -m vramplan.testing.dist_step --strategy
ddp|fsdp ...` each rank writes its own allocator peak. vramplan never launches distributed training for
a user: this module is the test's and the bench's real run, checked against `plan.sharding`.

torch.profiler (profile_memory=True) records every CPU-allocator allocation and free from before the model
is built, so the running sum is what the process holds; the phases of the step are marked with
`record_function` ranges, and each phase's peak is read from the events inside its range.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

PHASES = ("forward", "backward", "optimizer step")

TINY_VIT = {"model_type": "vit", "hidden_size": 192, "intermediate_size": 768, "num_attention_heads": 3,
            "num_hidden_layers": 4, "image_size": 224, "patch_size": 16, "num_labels": 10}
TINY_BERT = {"model_type": "bert", "hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4,
             "num_hidden_layers": 4, "vocab_size": 4000, "max_position_embeddings": 256, "num_labels": 3}
MODELS = {"vit": TINY_VIT, "bert": TINY_BERT}


def task_model(name: str):
    """A real random-weight task model (its own loss from labels), float32, eager attention on the CPU."""
    import torch
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    config = dict(MODELS[name])
    cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    auto = AutoModelForImageClassification if name == "vit" else AutoModelForSequenceClassification
    torch.manual_seed(0)
    return auto.from_config(cfg, attn_implementation="sdpa").train()


def task_inputs(name: str, batch: int) -> dict[str, Any]:
    import torch

    if name == "vit":
        return {"pixel_values": torch.randn(batch, 3, 224, 224), "labels": torch.randint(0, 10, (batch,))}
    return {"input_ids": torch.randint(0, 4000, (batch, 128)), "labels": torch.randint(0, 3, (batch,))}


def wrap(model, strategy: str):
    """DDP, or FSDP2 as accelerate's transformer-based wrap does: each `_no_split_modules` block, then the root."""
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        classes = set(model._no_split_modules or ())
        for module in list(model.modules()):
            if type(module).__name__ in classes:
                fully_shard(module)
        return fully_shard(model)
    return model


def run(name: str, strategy: str, batch: int) -> dict[str, Any]:
    """Build, wrap and train two steps under the profiler; return the peak and each phase's peak."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model = wrap(task_model(name), strategy)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        inputs = task_inputs(name, batch)
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            with record_function("forward"):
                loss = model(**inputs).loss
            with record_function("backward"):
                loss.backward()
            with record_function("optimizer step"):
                optimizer.step()
            del loss
    return _peaks(prof)


def run_memtracker(name: str, strategy: str, batch: int) -> dict[str, Any]:
    """The same two steps counted by torch's MemTracker (storages freed by weak reference, on any thread)."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    with MemTracker() as tracker:
        model = wrap(task_model(name), strategy)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        tracker.track_external(model, optimizer)
        inputs = task_inputs(name, batch)
        for step in range(2):
            optimizer.zero_grad(set_to_none=True)
            loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            del loss
            if step == 0:
                tracker.reset_mod_stats()  # its per-module stats allow one iteration; the peak is kept
    snapshot = tracker.get_tracker_snapshot("peak")
    return {"peak_bytes": max(v["Total"] for v in snapshot.values())}


def count_all_threads() -> None:
    """Make torch's CPU allocator count every thread's allocations and frees in its running total.

    The profiler's memory events report `total_allocated`, the CPU allocator's live bytes after each event;
    by default an allocation or free made on a thread that is not profiling (gloo's workers free the
    tensors a collective held last) is left out of that total. c10's `caffe2_report_cpu_memory_usage` flag
    (c10/core/CPUAllocator.cpp, ProfiledCPUMemoryReporter) counts them all; it has no Python setter, so it is
    set in libc10 directly. Set it before the model is built: earlier allocations are not in the total.
    """
    import ctypes

    import torch

    lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libc10.so"))
    ctypes.c_bool.in_dll(lib, "FLAGS_caffe2_report_cpu_memory_usage").value = True


def run_catalogue(alias: str, trains: str, strategy: str, batch: int) -> dict[str, Any]:
    """Two real fp32 steps of a full-size catalogue model (random weights, `probe` or `full`), alone or wrapped.

    The model is built, made the trainee (`measure.training.prepare_trainee`, as the simulation does) and
    wrapped inside the profiled region; the peak is the CPU allocator's total (every thread: see
    `count_all_threads`) at the profiler's memory events from the first step on, so it counts the sharded
    weights, gradients, optimizer state, communication buffers and activations a rank holds while training.
    """
    import gc
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from ..measure.training import TrainingCase, make_optimizer, prepare_trainee, run_steps
    from ..sources import resolve_model
    from .training import random_task_model

    spec = resolve_model(alias)
    case = TrainingCase(batch_size=batch, precision="fp32", device="cpu", image_size=(224, 224),
                        freeze="backbone" if trains == "probe" else "none")

    def mark(phase: str, step: int) -> None:
        with record_function(f"vramplan-phase:{phase}:{step}"):
            pass

    gc.collect()  # what an earlier run left in reference cycles is freed, not counted in this one
    with warnings.catch_warnings():  # oneDNN's convolution scratchpad is not modelled (as testing/training.py)
        warnings.simplefilter("ignore", UserWarning)
        no_onednn = torch.backends.mkldnn.flags(enabled=False)
        no_onednn.__enter__()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model = random_task_model(spec.config, bare=True)
            classes = set(getattr(model, "_no_split_modules", None) or ())
            trainee = prepare_trainee(model, case, alias, meta=False)
            trainee.module = wrap_blocks(trainee.module, strategy, classes)
            optimizer = make_optimizer(trainee.module, case)
            run_steps(trainee, optimizer, case, steps=2, on_phase=mark)
            del trainee, optimizer, model
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            no_onednn.__exit__(None, None, None)
    return _total_peaks(prof)


def wrap_blocks(module, strategy: str, classes: set[str]):
    """`wrap` for a trainee whose blocks are named by the base model's `_no_split_modules`.

    DDP is told to look for unused parameters: DINOv3's `mask_token` takes no part in a forward without
    a mask, and DDP refuses the second step otherwise (as a user's script would set it).
    """
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, find_unused_parameters=True)
    if strategy != "fsdp":
        return wrap(module, strategy)
    from torch.distributed.fsdp import fully_shard

    for sub in list(module.modules()):
        if sub is not module and type(sub).__name__ in classes:
            fully_shard(sub)
    return fully_shard(module)


def _total_peaks(prof) -> dict[str, Any]:
    """The allocator's total at each memory event, less what was live before the run: its peak from the first
    step on, and before it (building and sharding the model)."""
    from torch._C._profiler import _ExtraFields_Allocation

    allocations, marks, stack = [], [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack += event.children
        extra = event.extra_fields
        if isinstance(extra, _ExtraFields_Allocation) and extra.device.type == "cpu":
            allocations.append((event.start_time_ns, extra.total_allocated, extra.alloc_size))
        elif event.name.startswith("vramplan-phase:"):
            marks.append((event.start_time_ns, event.name.split(":", 1)[1]))
    allocations.sort()
    marks.sort()
    start, before = marks[0][0], allocations[0][1] - allocations[0][2]
    when, peak, _ = max((a for a in allocations if a[0] >= start), key=lambda a: a[1])
    return {"peak_bytes": peak - before,
            "build_peak_bytes": max((t for w, t, _ in allocations if w < start), default=before) - before,
            "live_before_bytes": before, "peak_phase": [name for t, name in marks if t <= when][-1]}


def _peaks(prof) -> dict[str, Any]:
    import torch

    events = list(prof.profiler.kineto_results.events())
    ranges = {p: [] for p in PHASES}
    for e in events:
        if e.name() in ranges:
            ranges[e.name()].append((e.start_ns(), e.start_ns() + e.duration_ns()))
    memory = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == "[memory]" and e.device_type() == torch.profiler.DeviceType.CPU)
    current = peak = 0
    phase_peak = dict.fromkeys(PHASES, 0)
    for t, nbytes in memory:
        current += nbytes
        peak = max(peak, current)
        for phase, spans in ranges.items():
            if any(a <= t <= b for a, b in spans):
                phase_peak[phase] = max(phase_peak[phase], current)
    return {"peak_bytes": peak, "phase_peak_bytes": phase_peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="vit,bert", help="comma list of: " + ", ".join(sorted(MODELS)))
    parser.add_argument("--strategy", default="ddp,fsdp", help="comma list of: single, ddp, fsdp")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--profiler", action="store_true", help="also count with torch.profiler's memory events")
    parser.add_argument("--catalogue", metavar="ALIAS",
                        help="instead: a full-size catalogue model (dinov3-vits16), random weights, fp32, 224 px, "
                             "--trains each, counted by the allocator's total over every thread")
    parser.add_argument("--trains", default="probe,full", help="with --catalogue: comma list of probe, full")
    parser.add_argument("--out", required=True, help="folder for rank<N>.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.catalogue:
        count_all_threads()
    strategies = args.strategy.split(",")
    distributed = strategies != ["single"]
    rank = 0
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank = dist.get_rank()
    results = {}
    for trains in args.trains.split(",") if args.catalogue else ():
        for strategy in strategies:
            results[f"{args.catalogue}/{trains}/{strategy}"] = run_catalogue(args.catalogue, trains, strategy,
                                                                             args.batch_size)
    for name in () if args.catalogue else args.model.split(","):
        for strategy in strategies:
            entry = {"memtracker_peak_bytes": run_memtracker(name, strategy, args.batch_size)["peak_bytes"]}
            if args.profiler:
                entry.update(run(name, strategy, args.batch_size))
            results[f"{name}/{strategy}"] = entry
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"rank{rank}.json").write_text(json.dumps({"rank": rank, "batch_size": args.batch_size,
                                                              "results": results}))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
