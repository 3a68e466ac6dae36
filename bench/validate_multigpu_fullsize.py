"""Full-size DINOv3 ViT-S/16 on 2 ranks (torchrun, gloo, CPU): FSDP2 and DDP, linear probe and full fine-tune,
each rank's real allocator peak against vramplan's busiest-rank prediction. Writes its section of
docs/accuracy-multigpu.md with --write-docs.

    PYTHONPATH=src .venv/bin/python bench/validate_multigpu_fullsize.py [--write-docs]

Real: `python -m torch.distributed.run --nproc-per-node 2 --standalone -m vramplan.testing.dist_step
--catalogue dinov3-vits16 --strategy fsdp,ddp` builds the random-weight model, makes it the trainee the
simulation makes (`prepare_trainee`: the probe head on the frozen backbone, or everything training), wraps it
(FSDP2: `fully_shard` on each `_no_split_modules` block, then the root) and runs two fp32 AdamW steps at
224 px, batch 2 per rank, under torch.profiler; the peak is the CPU allocator's total over every thread
(`dist_step.count_all_threads`) from the first step on. The same process alone (`--strategy single`) checks
the counting against the one-GPU simulation.

Predicted: `vramplan plan`'s derivation (`plan_training`) from one simulated step (`--device cpu`, fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "accuracy-multigpu.md"
ALIAS, TRAINS, STRATEGIES, BATCH = "dinov3-vits16", ("probe", "full"), ("fsdp", "ddp"), 2
START, END = "<!-- validate_multigpu_fullsize:start -->", "<!-- validate_multigpu_fullsize:end -->"


def real_peaks() -> tuple[dict, list[dict]]:
    """(one process's results, each rank's results), keyed `alias/trains/strategy`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    step = ["-m", "vramplan.testing.dist_step", "--catalogue", ALIAS, "--trains", ",".join(TRAINS),
            "--batch-size", str(BATCH)]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, *step, "--strategy", "single", "--out", f"{tmp}/s"], env=env, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                        *step, "--strategy", ",".join(STRATEGIES), "--out", f"{tmp}/m"], env=env, check=True,
                       capture_output=True)
        single = json.loads(Path(tmp, "s", "rank0.json").read_text())["results"]
        ranks = [json.loads(p.read_text())["results"] for p in sorted(Path(tmp, "m").glob("rank*.json"))]
    return single, ranks


def predicted() -> dict[str, int]:
    """`alias/trains/strategy` -> the busiest rank's peak (`single`: the one-GPU simulation's)."""
    sys.path.insert(0, str(ROOT / "src"))
    from vramplan.build import build_model
    from vramplan.measure.training import TrainingCase, measure_training
    from vramplan.plan.cli_args import strategy_plans
    from vramplan.plan.training_plan import plan_training
    from vramplan.sources import resolve_model

    spec = resolve_model(ALIAS)
    out = {}
    for trains in TRAINS:
        model = build_model(spec)
        case = TrainingCase(batch_size=BATCH, precision="fp32", device="cpu", image_size=(224, 224),
                            freeze="backbone" if trains == "probe" else "none")
        measured = measure_training(model, case, reference=spec.model_id)
        out[f"{ALIAS}/{trains}/single"] = measured.peak_allocated_bytes
        for p in plan_training(model, measured, strategy_plans(",".join(STRATEGIES), 2, 1, precision="fp32"),
                               spec.model_id):
            out[f"{ALIAS}/{trains}/{p.peak.plan.strategy}"] = p.peak.per_gpu_peak_bytes
    return out


def render(single: dict, ranks: list[dict], prediction: dict[str, int], seconds: float, load: float) -> str:
    import torch
    import transformers

    rows = []
    for trains in TRAINS:
        key = f"{ALIAS}/{trains}/single"
        real = single[key]["peak_bytes"]
        rows.append(f"| {trains} | one process | {real:,} | | {prediction[key]:,} | {_error(prediction[key], real)} |")
        for strategy in STRATEGIES:
            key = f"{ALIAS}/{trains}/{strategy}"
            r0, r1 = (r[key]["peak_bytes"] for r in ranks)
            errors = f"{_error(prediction[key], r0)} / {_error(prediction[key], r1)}"
            rows.append(f"| {trains} | {strategy}, 2 ranks | {r0:,} | {r1:,} | {prediction[key]:,} | {errors} |")
    return "\n".join([
        START,
        "## Full size: DINOv3 ViT-S/16 on 2 ranks (FSDP2 and DDP)",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, in {seconds:.0f} s wall with load "
        f"average {load:.1f} at the start (other processes shared the cores; byte counts do not depend on it). "
        "Command: `PYTHONPATH=src python bench/validate_multigpu_fullsize.py --write-docs`.",
        "",
        f"`{ALIAS}` (random weights, 21.6 M parameters), fp32, AdamW, 224 px, batch {BATCH} per rank, two steps; "
        "probe = frozen backbone + linear head (as `--trains probe`), full = everything trains. Real: "
        "`torchrun --nproc-per-node 2` (gloo), each rank's CPU-allocator total over every thread from the first "
        "step on (torch.profiler's memory events, with c10's `caffe2_report_cpu_memory_usage` set so frees on "
        "gloo's worker threads count: `vramplan.testing.dist_step.count_all_threads`). Predicted: the busiest "
        "rank from one simulated step (`plan_training`, as `vramplan plan` and `estimate --mode train --gpus 2` "
        "derive it). Error = (predicted - real) / real; negative is an underestimate.",
        "",
        "| trains | run | rank 0 real (B) | rank 1 real (B) | predicted (B) | error rank 0 / rank 1 |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
        "DDP is wrapped with `find_unused_parameters=True`: DINOv3's `mask_token` takes no part in a forward "
        "without a mask, and DDP refuses the second step otherwise. MemTracker, which the small models above use, "
        "is not used here: an earlier attempt with it failed on the probe's frozen parameters.",
        "",
        "FSDP2 is predicted 0.2% (full) and 1.2% (probe, 0.9 MB) low: an underestimate, within the 5% goal, whose "
        "source is not yet identified. Both peaks are in the second step's forward. Candidates not modelled in "
        "`plan/sharding.py`: the flat all-gather output beside the unit's unsharded parameters during the copy-out "
        "(torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py, `foreach_all_gather_copy_out`), and gloo's "
        "own buffers. DDP and the one-process step are exact to within 2 KB.",
        END,
    ]) + "\n"


def _error(predicted: int, real: int) -> str:
    return f"{(predicted - real) / real:+.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"write its section of {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    load, start = os.getloadavg()[0], time.perf_counter()
    single, ranks = real_peaks()
    text = render(single, ranks, predicted(), time.perf_counter() - start, load)
    print(text)
    if args.write_docs:
        old = DOCS.read_text(encoding="utf-8")
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END) + "\n?", re.S)
        DOCS.write_text(pattern.sub(lambda _: text, old) if START in old else old.rstrip() + "\n\n" + text,
                        encoding="utf-8")


if __name__ == "__main__":
    main()
