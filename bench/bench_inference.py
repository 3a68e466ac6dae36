"""Time the inference simulation over the DINOv3 catalogue and measure its memory (issue 3, item 4).

Each measurement is a fresh process, so nothing simulated earlier is reused:

- phases: in one process, build the 12 catalogue backbones on meta (vramplan.build) and simulate
  224/512/1024/2048 px, batch 1, bfloat16, SDPA, on the CUDA target; the build and the
  simulation are timed apart (the simulation is this module's share; building is transformers').
- CLI: ``vramplan report --mode inference --image-size 224,512,1024,2048 --batch-size 1`` (and
  ``--batch-size 1,8``), the command a user runs, wall time from start to exit.
- RSS: the 7B at 2048 px (batch 1 and 8) alone in a process; peak resident set (ru_maxrss).

Targets: the 12 x 4 sweep in at most 30 s on a 2-core machine; the 7B at 2048 px under 1.5 GB RSS.

    .venv/bin/python bench/bench_inference.py                 # print the Markdown section
    .venv/bin/python bench/bench_inference.py --write-docs    # and replace it in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BIN = Path(sys.executable).parent
START, END = "<!-- bench_inference:start -->", "<!-- bench_inference:end -->"
TITLE = "## Inference simulation: DINOv3 sweep"
SIZES = (224, 512, 1024, 2048)
SWEEP_TARGET_S, RSS_TARGET = 30.0, 1.5e9

# Runs in a fresh process: build each catalogue model, simulate the sweep, print JSON timings.
PHASES_CODE = r"""
import json, sys, time
t0 = time.perf_counter()
from vramplan.build import build_model
from vramplan.measure.activations import InferenceCase, measure_inference_sweep
from vramplan.spec import ModelSpec
import torch, transformers
imported = time.perf_counter() - t0
catalog = json.loads(sys.argv[1])
sizes = json.loads(sys.argv[2])
cases = [InferenceCase(batch_size=1, dtype="bfloat16", attn="sdpa", image_size=(s, s)) for s in sizes]
rows, build_s, sim_s = [], 0.0, 0.0
for model_id, path in catalog:
    config = json.load(open(path))
    spec = ModelSpec(reference=model_id, model_id=model_id, library="transformers", source="catalog", config=config)
    t = time.perf_counter(); model = build_model(spec); b = time.perf_counter() - t
    t = time.perf_counter(); results = measure_inference_sweep(model, cases, reference=model_id); s = time.perf_counter() - t
    build_s += b; sim_s += s
    rows.append([model_id, b, s, [getattr(r, "peak_allocated_bytes", None) for r in results]])
print(json.dumps({"import_s": imported, "build_s": build_s, "simulate_s": sim_s,
                  "total_s": time.perf_counter() - t0, "rows": rows}))
"""

RSS_CODE = r"""
import json, resource, sys, time
from vramplan.build import build_model
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.spec import ModelSpec
config = json.load(open(sys.argv[1]))
batch = int(sys.argv[2])
spec = ModelSpec(reference="7b", model_id="7b", library="transformers", source="catalog", config=config)
model = build_model(spec)
t = time.perf_counter()
m = measure_inference(model, InferenceCase(batch_size=batch, dtype="bfloat16", attn="sdpa", image_size=(2048, 2048)), reference="7b")
print(json.dumps({"simulate_s": time.perf_counter() - t, "peak_allocated": m.peak_allocated_bytes,
                  "activation": m.activation_bytes, "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def catalog() -> list[tuple[str, str]]:
    index = json.loads((ROOT / "src" / "vramplan" / "catalog" / "index.json").read_text())
    return [(m["id"], str(ROOT / "src" / "vramplan" / "catalog" / m["config"])) for m in index["models"]
            if m.get("family") == "dinov3"]


def run_json(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_cli(batches: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(BIN / "vramplan"), "report", "dinov3", "--mode", "inference", "--image-size",
               ",".join(map(str, SIZES)), "--batch-size", batches, "--dtype", "bfloat16", "-o", f"{tmp}/report.txt"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        return time.perf_counter() - start


def measure(repeats: int) -> dict:
    models = catalog()
    subprocess.run([sys.executable, "-c", "import torch, transformers, vramplan"], check=True)  # warm the file cache
    phases = [run_json(PHASES_CODE, json.dumps(models), json.dumps(SIZES)) for _ in range(repeats)]
    cli_b1 = [time_cli("1") for _ in range(repeats)]
    cli_b18 = [time_cli("1,8") for _ in range(repeats)]
    seven_b = next(path for model_id, path in models if "vit7b16" in model_id)
    rss = {batch: run_json(RSS_CODE, seven_b, str(batch)) for batch in (1, 8)}
    load = os.getloadavg()[1]  # other work on the machine during the runs (5-minute average)
    return {"models": len(models), "phases": phases, "cli_b1": cli_b1, "cli_b18": cli_b18, "rss": rss, "load": load}


def render(result: dict) -> str:
    median = statistics.median
    phases = result["phases"]
    sim = median(p["simulate_s"] for p in phases)
    build = median(p["build_s"] for p in phases)
    imp = median(p["import_s"] for p in phases)
    total = median(p["total_s"] for p in phases)
    cli_b1, cli_b18 = median(result["cli_b1"]), median(result["cli_b18"])
    rss1, rss8 = result["rss"][1], result["rss"][8]
    ok = "met" if cli_b1 <= SWEEP_TARGET_S else "NOT met"
    rss_ok = "met" if max(rss1["max_rss"], rss8["max_rss"]) < RSS_TARGET else "NOT met"
    gb = 1e9
    lines = [
        TITLE,
        "",
        f"{result['models']} DINOv3 backbones x {len(SIZES)} resolutions ({', '.join(map(str, SIZES))} px), bfloat16, "
        "SDPA, simulated CUDA target. Median of "
        f"{len(phases)} fresh processes each. Measured {datetime.now(timezone.utc):%Y-%m-%d} on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"torch {metadata.version('torch')}, transformers {metadata.version('transformers')}; load average "
        f"{result['load']:.1f} over the runs (other processes shared the cores).",
        "",
        "| measurement | wall time |",
        "|---|---|",
        f"| `vramplan report dinov3 --mode inference --image-size 224,512,1024,2048 --batch-size 1` | {cli_b1:.1f} s |",
        f"| same, `--batch-size 1,8` (96 cases) | {cli_b18:.1f} s |",
        f"| in one process: imports | {imp:.1f} s |",
        f"| in one process: building the 12 models on meta (transformers, cached by config) | {build:.1f} s |",
        f"| in one process: simulating the 48 cases (this module) | {sim:.1f} s |",
        f"| in one process: total | {total:.1f} s |",
        "",
        f"Target: the sweep in at most {SWEEP_TARGET_S:.0f} s on a 2-core machine: **{ok}** ({cli_b1:.1f} s for the "
        "whole command).",
        "",
        "| 7B (dinov3-vit7b16) at 2048 px, bfloat16 | simulation | simulated peak allocated | peak RSS of the process |",
        "|---|---|---|---|",
        f"| batch 1 | {rss1['simulate_s']:.2f} s | {rss1['peak_allocated'] / gb:.2f} GB | {rss1['max_rss'] / gb:.2f} GB |",
        f"| batch 8 | {rss8['simulate_s']:.2f} s | {rss8['peak_allocated'] / gb:.2f} GB | {rss8['max_rss'] / gb:.2f} GB |",
        "",
        f"Target: under {RSS_TARGET / gb:.1f} GB of RSS: **{rss_ok}**. Nothing is allocated: parameters and activations "
        "are meta tensors; the RSS is the interpreter, torch and transformers, and the model's Python objects.",
        "",
        "What keeps it fast: each catalogue model is built once (two catalogue entries with the same config share "
        "one build), the dtype-recast copy is made once per (dtype, attention) and shared by every size, batch and "
        "target, and an operator's output metadata is remembered by (operator, input shapes): a ViT runs the same "
        "operators on the same shapes in every layer, so most operators are rebuilt from memory instead of "
        "running their meta kernel again.",
    ]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    block = f"{START}\n{section}\n{END}"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per timing (default: 3)")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the section in {DOCS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    result = measure(args.repeats)
    section = render(result)
    print(section)
    if args.write_docs:
        write_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
