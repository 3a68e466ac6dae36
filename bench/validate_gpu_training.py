"""Simulated training peak against `torch.cuda.max_memory_allocated` on a real GPU (issue 9).

DINOv3 ViT-S/B/L at 224 and 512 px, batch 8, AdamW, amp-bf16: full fine-tune with and without gradient
checkpointing, and the frozen backbone (linear probe). Each case runs the same two steps as the
simulation (`vramplan.measure.training.run_steps`) on the device, with random weights, and compares the
simulated `peak_allocated_bytes` (CUDA target) with `max_memory_allocated`. Goal: median |error| <= 5%,
max <= 10%. On a machine without a GPU it says so and exits 0.

    .venv/bin/python bench/validate_gpu_training.py
"""

from __future__ import annotations

import itertools
import statistics
import sys

MODELS = ("dinov3-vits16", "dinov3-vitb16", "dinov3-vitl16")
SIZES = (224, 512)
SETTINGS = (("full", False), ("full", True), ("probe", False))


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("validate_gpu_training: no CUDA device here; run it on a machine with a GPU")
        return 0
    from vramplan.build import build_model
    from vramplan.measure.training import TrainingCase, make_optimizer, measure_training, prepare_trainee, run_steps
    from vramplan.sources import resolve_model
    from vramplan.testing.training import random_task_model

    errors = []
    for alias, size, (trains, ckpt) in itertools.product(MODELS, SIZES, SETTINGS):
        spec = resolve_model(alias)
        case = TrainingCase(batch_size=8, precision="amp-bf16", device="cuda", image_size=(size, size),
                            grad_checkpointing=ckpt, freeze="backbone" if trains == "probe" else "none")
        sim = measure_training(build_model(spec), case, reference=alias)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = random_task_model(spec.config, bare=True).to("cuda")
        trainee = prepare_trainee(model, case, alias, meta=False)
        optimizer = make_optimizer(trainee.module, case)
        run_steps(trainee, optimizer, case, device="cuda", autocast=lambda d: torch.autocast("cuda", dtype=d))
        real = torch.cuda.max_memory_allocated()
        del model, trainee, optimizer
        error = sim.peak_allocated_bytes / real - 1
        errors.append(abs(error))
        print(f"{alias:16} {size:4} {trains:5} ckpt={ckpt!s:5} real {real / 2**30:7.2f} GiB "
              f"simulated {sim.peak_allocated_bytes / 2**30:7.2f} GiB {100 * error:+.2f}%", flush=True)
    print(f"median |error| {100 * statistics.median(errors):.2f}%, max {100 * max(errors):.2f}%")
    return 0 if statistics.median(errors) <= 0.05 and max(errors) <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
