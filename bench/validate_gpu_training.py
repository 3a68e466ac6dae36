"""Simulated training peak against `torch.cuda.max_memory_allocated` on a real GPU (issue 9).

The issue's cases: DINOv3 ViT-S/B/L at 224 and 512 px, batch 8, AdamW (foreach, as torch picks it on
CUDA), amp-bf16: full fine-tune with and without gradient checkpointing, and the frozen backbone
(linear probe). Then the other optimizers and precisions on ViT-B at 224 px, full fine-tune: fused
AdamW, SGD, transformers' Adafactor, bitsandbytes' 8-bit AdamW (real `bitsandbytes.optim.AdamW8bit`
when it is installed on the GPU machine, else skipped: the simulation models it from bitsandbytes'
source), and amp-fp16 through `torch.amp.GradScaler("cuda")`.

Each case runs the same two steps as the simulation (`vramplan.measure.training.run_steps`) on the
device, with random weights loaded first (they count, as in the simulation), and compares the
simulated `peak_allocated_bytes` (CUDA target) with `max_memory_allocated`. Goal: median |error| <= 5%,
max <= 10%. On a machine without a GPU it says so and exits 0. Not run yet: no GPU was lent when the
optimizer cases were added.

    .venv/bin/python bench/validate_gpu_training.py [--only-issue]
"""

from __future__ import annotations

import itertools
import statistics
import sys

MODELS = ("dinov3-vits16", "dinov3-vitb16", "dinov3-vitl16")
SIZES = (224, 512)
SETTINGS = (("full", False), ("full", True), ("probe", False))
# (precision, optimizer) on ViT-B/16 at 224 px, batch 8, full fine-tune.
OPTIMIZER_CASES = (("amp-bf16", "adamw-fused"), ("amp-bf16", "sgd"), ("amp-bf16", "adafactor"),
                   ("amp-bf16", "adamw-8bit"), ("amp-fp16", "adamw"), ("fp32", "adamw"))


def cases():
    """(alias, TrainingCase) in the order they run: the issue's matrix, then the optimizers."""
    from vramplan.measure.training import TrainingCase

    for alias, size, (trains, ckpt) in itertools.product(MODELS, SIZES, SETTINGS):
        yield alias, TrainingCase(batch_size=8, precision="amp-bf16", optimizer="adamw", device="cuda",
                                  image_size=(size, size), grad_checkpointing=ckpt,
                                  freeze="backbone" if trains == "probe" else "none")
    if "--only-issue" in sys.argv:
        return
    for precision, optimizer in OPTIMIZER_CASES:
        yield "dinov3-vitb16", TrainingCase(batch_size=8, precision=precision, optimizer=optimizer, device="cuda",
                                            image_size=(224, 224))


def real_optimizer(trainee, case):
    """The optimizer of the real run: vramplan's (torch, transformers), or bitsandbytes' own 8-bit AdamW."""
    from vramplan.measure.training import make_optimizer

    if case.optimizer != "adamw-8bit":
        return make_optimizer(trainee.module, case)
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    return bnb.optim.AdamW8bit([p for p in trainee.module.parameters() if p.requires_grad], lr=1e-4)


def real_peak(spec, alias: str, case) -> int | None:
    """Two real steps on the GPU; max_memory_allocated from before the weights were loaded."""
    import torch
    from vramplan.measure.training import prepare_trainee, run_steps
    from vramplan.testing.training import random_task_model

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = random_task_model(spec.config, bare=True).to("cuda")
    trainee = prepare_trainee(model, case, alias, meta=False)
    optimizer = real_optimizer(trainee, case)
    if optimizer is None:
        return None
    scaler = torch.amp.GradScaler("cuda") if case.precision == "amp-fp16" else None
    run_steps(trainee, optimizer, case, device="cuda", autocast=lambda d: torch.autocast("cuda", dtype=d),
              scaler=scaler)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, trainee, optimizer
    return peak


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("validate_gpu_training: no CUDA device here; run it on a machine with a GPU")
        return 0
    from vramplan.build import build_model
    from vramplan.measure.training import measure_training
    from vramplan.report.training import trains_label
    from vramplan.sources import resolve_model

    errors = []
    for alias, case in cases():
        spec = resolve_model(alias)
        sim = measure_training(build_model(spec), case, reference=alias)
        real = real_peak(spec, alias, case)
        size = case.image_size[0]
        label = f"{alias:16} {size:4} {trains_label(case):10} {case.precision:8} {case.optimizer:11}"
        if real is None:
            print(f"{label} skipped: bitsandbytes is not installed (simulated "
                  f"{sim.peak_allocated_bytes / 2**30:.2f} GiB, modelled)", flush=True)
            continue
        error = sim.peak_allocated_bytes / real - 1
        errors.append(abs(error))
        print(f"{label} real {real / 2**30:7.2f} GiB simulated {sim.peak_allocated_bytes / 2**30:7.2f} GiB "
              f"{100 * error:+.2f}% (sim peak in {sim.peak_phase})", flush=True)
    print(f"median |error| {100 * statistics.median(errors):.2f}%, max {100 * max(errors):.2f}%")
    return 0 if statistics.median(errors) <= 0.05 and max(errors) <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
