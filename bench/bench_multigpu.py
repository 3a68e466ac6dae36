"""Time multi-GPU planning (issue 10): the DINOv3 7B full fine-tune on 8 GPUs x {ddp, fsdp, zero2, zero3,
zero3+optimizer offload} (target: <= 60 s on 2 cores; the step is simulated once, every strategy derived).

Fresh processes (`vramplan` CLI, imports included), timed from outside with their peak RSS:

- `vramplan plan dinov3-vit7b16 --gpus 8 --strategy ddp,fsdp,zero2,zero3,zero3+optimizer` at 512 px, batch 4;
- the same plans through `vramplan estimate --mode train --gpus 8` (one code path: plan_training).

Then, in this process, the split of that time: resolve + build, the one simulation, and the derivation of
the five strategies (which re-simulates nothing).

    .venv/bin/python bench/bench_multigpu.py            # prints a Markdown section
"""

from __future__ import annotations

import os
import platform
import time

from bench_training import run  # one fresh vramplan process, timed, with its peak RSS (same folder)

STRATEGIES = "ddp,fsdp,zero2,zero3,zero3+optimizer"
STEP = ["--precision", "amp-bf16", "--image-size", "512", "--batch-size", "4", "--format", "json"]
PLAN = ["plan", "dinov3-vit7b16", "--gpus", "8", "--strategy", STRATEGIES, *STEP]
ESTIMATE = ["estimate", "dinov3-vit7b16", "--mode", "train", "--gpus", "8", "--strategy", STRATEGIES, *STEP]


def in_process() -> list[tuple[str, float]]:
    """(stage, seconds): resolve + build, the one simulated step, the five strategies derived from it."""
    from vramplan.build import build_model
    from vramplan.measure import training
    from vramplan.plan.cli_args import strategy_plans
    from vramplan.plan.training_plan import plan_training
    from vramplan.sources import resolve_model
    from vramplan.spec import SourceOptions

    start = time.perf_counter()
    spec = resolve_model("dinov3-vit7b16", SourceOptions())
    model = build_model(spec)
    built = time.perf_counter()
    case = training.TrainingCase(image_size=(512, 512), batch_size=4, precision="amp-bf16")
    measured = training.measure_training(model, case, reference=spec.model_id)
    simulated = time.perf_counter()
    calls = []
    original = training.measure_training
    training.measure_training = lambda *a, **k: calls.append(1) or original(*a, **k)  # counts re-simulations
    try:
        plans = plan_training(model, measured, strategy_plans(STRATEGIES, 8, 1), spec.model_id)
    finally:
        training.measure_training = original
    derived = time.perf_counter()
    assert len(plans) == 5 and not calls, "a strategy re-simulated the step"
    return [("resolve + build (meta)", built - start), ("one simulated step", simulated - built),
            ("5 strategies derived", derived - simulated)]


def main() -> None:
    load = os.getloadavg()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average before {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("| run (fresh process) | wall | peak RSS | exit |")
    print("|---|---:|---:|---:|")
    for name, argv in (("vramplan plan, 7B, 8 GPUs x 5 strategies", PLAN),
                       ("vramplan estimate --mode train --gpus 8, same", ESTIMATE)):
        seconds, rss, code = run(argv)
        print(f"| {name} | {seconds:.1f} s | {rss:.0f} MiB | {code} |")
    print()
    print("| in one process | seconds |")
    print("|---|---:|")
    for stage, seconds in in_process():
        print(f"| {stage} | {seconds:.2f} |")
    load = os.getloadavg()
    print(f"\nload average after {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
