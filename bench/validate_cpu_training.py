"""Simulated training peak against two real training steps on the CPU allocator, on full-size DINOv3 models.

For each case a random-weight catalogue model is made trainable (linear probe, LoRA r16 or full fine-tune)
and runs two real steps on the CPU under torch.profiler (`vramplan.testing.training.cpu_training_peak`,
oneDNN off); the simulation of the same case (`--device cpu`) is compared on the whole peak, weights
included. Writes its section of docs/accuracy-cpu.md with --write-docs.

    .venv/bin/python bench/validate_cpu_training.py
    .venv/bin/python bench/validate_cpu_training.py --write-docs
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "accuracy-cpu.md"
MODELS = ("dinov3-vits16", "dinov3-convnext-tiny")
PRECISIONS = ("fp32", "amp-bf16")
TRAINS = ("probe", "lora", "full")
START, END = "<!-- validate_cpu_training:start -->", "<!-- validate_cpu_training:end -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"write its section of {DOCS.relative_to(ROOT)}")
    args = parser.parse_args(argv)

    from vramplan.build import build_model
    from vramplan.measure.training import TrainingCase, measure_training
    from vramplan.sources import resolve_model
    from vramplan.testing.training import cpu_training_peak, random_task_model

    rows = []
    start = time.perf_counter()
    load = os.getloadavg()[0]
    for alias, precision, trains in itertools.product(MODELS, PRECISIONS, TRAINS):
        spec = resolve_model(alias)
        case = TrainingCase(batch_size=2, precision=precision, device="cpu", image_size=(224, 224),
                            freeze="backbone" if trains == "probe" else "none", lora_rank=16 if trains == "lora" else 0)
        sim = measure_training(build_model(spec), case, reference=alias)
        real = cpu_training_peak(random_task_model(spec.config, bare=True), case).peak
        error = (sim.peak_allocated_bytes - real) / real
        rows.append((alias, precision, trains, real, sim.peak_allocated_bytes, error, sim.peak_phase))
        print(f"{alias:22} {precision:8} {trains:5} real {real / 2**20:9.1f} MiB simulated "
              f"{sim.peak_allocated_bytes / 2**20:9.1f} MiB {100 * error:+.2f}% ({sim.peak_phase})", flush=True)
    text = render(rows, time.perf_counter() - start, load)
    print(text)
    if args.write_docs:
        old = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        DOCS.write_text(pattern.sub(text.strip(), old) if START in old else old.rstrip() + "\n\n" + text,
                        encoding="utf-8")
    return 0 if max(abs(r[5]) for r in rows) <= 0.02 else 1


def render(rows: list[tuple], elapsed: float, load: float) -> str:
    import torch

    lines = [START, "## Training: two real steps on the CPU allocator (full-size DINOv3)", "",
             f"Two training steps (zero_grad, forward, backward, AdamW step) at 224 px, batch 2, random weights, "
             f"on {platform.machine()} with {torch.get_num_threads()} threads, torch {torch.__version__}, oneDNN off; "
             f"measured {datetime.now(timezone.utc):%Y-%m-%d} in {elapsed:.0f} s (load average {load:.1f}: other "
             f"processes shared the cores; the byte counts do not depend on it). Error = simulated / real - 1 on "
             f"the whole peak (weights included).", "",
             "| model | precision | trains | real peak | simulated | error | peak in |", "|---|---|---|---|---|---|---|"]
    for alias, precision, trains, real, sim, error, phase in rows:
        lines.append(f"| {alias} | {precision} | {trains} | {real / 2**20:.1f} MiB | {sim / 2**20:.1f} MiB | "
                     f"{100 * error:+.2f}% | {phase} |")
    return "\n".join(lines + ["", END]) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
