"""Multi-GPU plans against real DDP and FSDP2 runs on a machine with 2 or more CUDA GPUs (issue 10).

NOT YET RUN: written on a CPU-only machine (no multi-GPU machine was lent); the CPU 2-rank checks
(tests/test_multigpu_real.py, bench/validate_multigpu_fullsize.py) run the same wrapping with gloo.

DINOv3 ViT-S/16 and ViT-B/16 at 224 px, batch 8 per GPU, AdamW, amp-bf16, full fine-tune and linear probe,
under DDP and FSDP2 (`fully_shard` on each `_no_split_modules` block, then the root, with
`MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)`, as accelerate's FSDP2 does for
mixed_precision bf16), two steps of the simulation's own loop (`measure.training.run_steps`) under
`torch.autocast("cuda", bfloat16)`, NCCL. Each rank's `torch.cuda.max_memory_allocated()` over the steps
(less what was allocated before the model was built) is compared with vramplan's busiest-rank prediction
(`plan_training` from one simulated step, CUDA target), as `vramplan plan --gpus N` prints it.
Goal: every rank within 10%, and not under by more than 5%. On a machine with fewer than 2 GPUs it
says so and exits 0.

    PYTHONPATH=src .venv/bin/python bench/validate_gpu_multigpu.py          # launches torchrun itself
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

MODELS = ("dinov3-vits16", "dinov3-vitb16")
TRAINS = ("full", "probe")
STRATEGIES = ("ddp", "fsdp")
BATCH, SIZE = 8, 224


def main() -> int:
    if "LOCAL_RANK" in os.environ:
        return worker()
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2:
        print(f"validate_gpu_multigpu: {gpus} CUDA GPU(s) here; run it on a machine with 2 or more")
        return 0
    return subprocess.call([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc-per-node", str(gpus), os.path.abspath(__file__)])


def worker() -> int:
    import torch
    import torch.distributed as dist

    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    world, rank = dist.get_world_size(), dist.get_rank()
    worst = 0.0
    for alias, trains, strategy in itertools.product(MODELS, TRAINS, STRATEGIES):
        real = real_peak(alias, trains, strategy)
        peaks = [None] * world
        dist.all_gather_object(peaks, real)
        if rank == 0:
            predicted = predicted_peak(alias, trains, strategy, world)
            errors = [predicted / r - 1 for r in peaks]
            worst = max(worst, *(abs(e) for e in errors))
            print(f"{alias:15} {trains:5} {strategy:4} x{world}: predicted {predicted / 2**30:7.3f} GiB, ranks "
                  + ", ".join(f"{r / 2**30:.3f} GiB ({e:+.2%})" for r, e in zip(peaks, errors)), flush=True)
    dist.destroy_process_group()
    if rank == 0:
        print(f"worst |error| {worst:.2%} (goal <= 10%)")
    return 0


def _case(trains: str, device: str):
    from vramplan.measure.training import TrainingCase

    return TrainingCase(batch_size=BATCH, precision="amp-bf16", device=device, image_size=(SIZE, SIZE),
                        freeze="backbone" if trains == "probe" else "none")


def real_peak(alias: str, trains: str, strategy: str) -> int:
    """This rank's max allocated over two steps, less what was allocated before the model was built."""
    import gc

    import torch

    from vramplan.measure.training import make_optimizer, prepare_trainee, run_steps
    from vramplan.sources import resolve_model
    from vramplan.testing.training import random_task_model

    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    case = _case(trains, "cuda")
    model = random_task_model(resolve_model(alias).config, bare=True).to("cuda")
    classes = set(getattr(model, "_no_split_modules", None) or ())
    trainee = prepare_trainee(model, case, alias, meta=False)
    trainee.module = _wrap(trainee.module, strategy, classes)
    optimizer = make_optimizer(trainee.module, case)
    torch.cuda.reset_peak_memory_stats()  # the unsharded build is a loading concern, not the step's
    run_steps(trainee, optimizer, case, device="cuda", autocast=lambda d: torch.autocast("cuda", dtype=d))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del model, trainee, optimizer
    return peak


def _wrap(module, strategy: str, classes: set[str]):
    import torch

    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # DINOv3's mask_token takes no part in a forward without a mask
        return DistributedDataParallel(module, device_ids=[torch.cuda.current_device()], find_unused_parameters=True)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for sub in list(module.modules()):
        if sub is not module and type(sub).__name__ in classes:
            fully_shard(sub, mp_policy=policy)
    return fully_shard(module, mp_policy=policy)


def predicted_peak(alias: str, trains: str, strategy: str, world: int) -> int:
    """vramplan's busiest rank for the plan, from one simulated step on the CUDA target."""
    from vramplan.build import build_model
    from vramplan.measure.training import measure_training
    from vramplan.plan.parallel import ParallelPlan
    from vramplan.plan.training_plan import plan_training
    from vramplan.sources import resolve_model

    spec = resolve_model(alias)
    model = build_model(spec)
    measured = measure_training(model, _case(trains, "cuda"), reference=spec.model_id)
    [plan] = plan_training(model, measured, [ParallelPlan(strategy, gpus=world, precision="amp-bf16",
                                                          micro_batch=BATCH)], spec.model_id)
    return plan.peak.per_gpu_peak_bytes


if __name__ == "__main__":
    sys.exit(main())
