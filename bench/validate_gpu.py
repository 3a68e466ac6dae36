"""Check the simulated CUDA peak against a real GPU, and write docs/accuracy.md (issue 3, item 5).

For DINOv3 backbones x resolutions (224 to 2048 px) x batch (1, 8) x dtype (float32, bfloat16) x
attention (sdpa, eager where it fits), a random-weight model runs its forward on the GPU and
three numbers are compared with vramplan's prediction for the same case:

- `torch.cuda.max_memory_allocated()`  vs  `peak_allocated_bytes`   (goal: median |error| <= 2%, max <= 5%)
- `torch.cuda.max_memory_reserved()`   vs  the simulated allocator's peak reserved
- the card's used memory after the forward (`torch.cuda.mem_get_info`)  vs  `peak_device_bytes`

How the real run is set up, to match what is simulated: the model is built on meta with the
case's dtype and attention (`AutoModel.from_config`, as `from_pretrained(dtype=...)` builds it),
moved with `to_empty(device="cuda")` (parameters allocated in `module.to()` order), and its
floating parameters drawn from N(0, 0.02). Before each case: the modelling code's lru_caches
are cleared, `empty_cache()` and `reset_peak_memory_stats()`; the input is created on the GPU;
one forward runs under `torch.inference_mode()`.

    .venv/bin/python bench/validate_gpu.py                     # full grid, writes docs/accuracy.md
    .venv/bin/python bench/validate_gpu.py --models vits16 --sizes 224,512 --batches 1
    .venv/bin/python bench/validate_gpu.py --json run1.json    # also keep the raw results
    .venv/bin/python bench/validate_gpu.py --merge run1.json run2.json   # accuracy.md from earlier runs
    .venv/bin/python bench/validate_gpu.py --dry-run           # the planned cases and predictions; no GPU needed

Without a CUDA device it says so and exits 0, leaving docs/accuracy.md as it is.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "accuracy.md"
CATALOG = ROOT / "src" / "vramplan" / "catalog"
SIZES, BATCHES, DTYPES, ATTNS = (224, 512, 1024, 2048), (1, 8), ("float32", "bfloat16"), ("sdpa", "eager")
FIT = 0.92  # run a case only if its predicted card usage is under this share of the card
GOAL_MEDIAN, GOAL_MAX = 2.0, 5.0


@dataclass
class Row:
    """One case: what was predicted and what the GPU showed (None where it did not run)."""

    model: str
    size: int
    batch: int
    dtype: str
    attn: str
    kernel: str
    predicted_allocated: int
    predicted_reserved: int
    predicted_device: int
    measured_allocated: int | None = None
    measured_reserved: int | None = None
    measured_device: int | None = None
    note: str = ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma list of substrings of catalogue ids (default: all backbones)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--attns", default=",".join(ATTNS))
    parser.add_argument("--max-minutes", type=float, default=9.0, help="start no new case after this long (default: 9)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--merge", type=Path, nargs="+", help="write docs/accuracy.md from these --json files; run nothing")
    parser.add_argument("--dry-run", action="store_true", help="list the cases and their predictions; no GPU needed")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/accuracy.md")
    args = parser.parse_args(argv)

    if args.merge:
        runs = [json.loads(path.read_text()) for path in args.merge]
        rows = [Row(**row) for run in runs for row in run["rows"]]
        write_accuracy(runs[0]["environment"], rows)
        print(f"wrote {DOCS.relative_to(ROOT)} from {len(rows)} cases")
        return 0

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            f"no GPU: torch.cuda.is_available() is False (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda or 'none'}). Nothing to validate; {DOCS.relative_to(ROOT)} is unchanged. "
            "Run this on a machine with a CUDA device, or use --dry-run to see the planned cases."
        )
        return 0

    models = select_models(args.models)
    grid = dict(
        sizes=[int(s) for s in args.sizes.split(",")],
        batches=[int(b) for b in args.batches.split(",")],
        dtypes=args.dtypes.split(","),
        attns=args.attns.split(","),
    )
    if args.dry_run:
        for model_id, config in models:
            for row in predictions(model_id, config, capacity=None, **grid):
                print(f"{row.model:48s} {row.size:5d}px b{row.batch} {row.dtype:9s} {row.attn:5s} {row.kernel:10s} "
                      f"allocated {gb(row.predicted_allocated):8.3f} GB  card {gb(row.predicted_device):8.3f} GB")
        return 0

    environment = describe_environment()
    print(json.dumps(environment, indent=1))
    rows = run_grid(models, grid, deadline=time.monotonic() + 60 * args.max_minutes)
    if args.json:
        args.json.write_text(json.dumps({"environment": environment, "rows": [asdict(r) for r in rows]}, indent=1))
    if not args.no_docs:
        write_accuracy(environment, rows)
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


# --- what to run -------------------------------------------------------------------------------

def select_models(filters: str) -> list[tuple[str, dict]]:
    """Catalogue DINOv3 backbones; entries with an identical config are measured once."""
    index = json.loads((CATALOG / "index.json").read_text())
    wanted = [f for f in filters.split(",") if f]
    seen, out = set(), []
    for entry in index["models"]:
        if entry.get("family") != "dinov3" or (wanted and not any(f in entry["id"] for f in wanted)):
            continue
        config = json.loads((CATALOG / entry["config"]).read_text())
        key = json.dumps(config, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((entry["id"], config))
    return out


def predictions(model_id: str, config: dict, capacity: int | None, sizes, batches, dtypes, attns) -> list[Row]:
    """vramplan's prediction for each case of one model, in run order."""
    from vramplan.build import build_model
    from vramplan.errors import SimulationError
    from vramplan.measure.activations import InferenceCase, measure_inference
    from vramplan.spec import ModelSpec

    meta = build_model(ModelSpec(reference=model_id, model_id=model_id, library="transformers", source="catalog", config=config))
    rows = []
    for dtype in dtypes:
        for attn in attns:
            for size in sizes:
                for batch in batches:
                    case = InferenceCase(batch_size=batch, dtype=dtype, attn=attn, device="cuda", image_size=(size, size))
                    try:
                        m = measure_inference(meta, case, reference=model_id)
                    except SimulationError as exc:
                        rows.append(Row(model_id, size, batch, dtype, attn, "", 0, 0, 0, note=f"not simulated: {exc.reason}"))
                        continue
                    cache = dict(m.overheads).get("allocator cache (reserved - allocated)", 0)
                    row = Row(model_id, size, batch, dtype, attn, m.attention_kernel, m.peak_allocated_bytes,
                              m.peak_allocated_bytes + cache, m.peak_device_bytes)
                    if capacity is not None and m.peak_device_bytes > FIT * capacity:
                        row.note = f"skipped: predicted {gb(m.peak_device_bytes):.1f} GB does not fit"
                    rows.append(row)
    return rows


# --- running on the GPU ------------------------------------------------------------------------

def run_grid(models, grid, deadline: float) -> list[Row]:
    import torch

    capacity = torch.cuda.mem_get_info()[1]
    rows: list[Row] = []
    for model_id, config in models:
        planned = predictions(model_id, config, capacity, **grid)
        groups: dict[tuple[str, str], list[Row]] = {}
        for row in planned:
            groups.setdefault((row.dtype, row.attn), []).append(row)
        for (dtype, attn), group in groups.items():
            runnable = [r for r in group if not r.note]
            if runnable and time.monotonic() < deadline:
                run_group(config, dtype, attn, runnable, deadline)
            for row in group:
                if not row.note and row.measured_allocated is None:
                    row.note = "not run: time budget"
                print(format_row(row), flush=True)
            rows.extend(group)
    return rows


def run_group(config: dict, dtype: str, attn: str, rows: list[Row], deadline: float) -> None:
    """Build one random-weight model on the GPU and measure each of its cases."""
    import torch

    from vramplan.measure.activations import _model_caches

    model = real_model(config, dtype, attn)
    caches = _model_caches(model)
    channels = int(config.get("num_channels", 3))
    for row in rows:
        if time.monotonic() > deadline:
            break
        for clear in caches:
            clear()
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            pixels = torch.randn(row.batch, channels, row.size, row.size, dtype=getattr(torch, dtype), device="cuda")
            with torch.inference_mode():
                output = model(pixel_values=pixels)
            torch.cuda.synchronize()
            row.measured_allocated = torch.cuda.max_memory_allocated()
            row.measured_reserved = torch.cuda.max_memory_reserved()
            free, total = torch.cuda.mem_get_info()
            row.measured_device = total - free
            del output, pixels
        except torch.cuda.OutOfMemoryError:
            row.note = "out of memory on the GPU"
    del model
    gc.collect()
    torch.cuda.empty_cache()


def real_model(config: dict, dtype: str, attn: str):
    """Random-weight model on the GPU, built as from_pretrained(dtype=..., attn_implementation=...) builds it."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModel

    config = dict(config)
    cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    implementation = attn if getattr(AutoModel._model_mapping[type(cfg)], "_supports_sdpa", False) or attn == "eager" else None
    with init_empty_weights(include_buffers=True):
        model = AutoModel.from_config(cfg, dtype=getattr(torch, dtype), attn_implementation=implementation)
    model = model.to_empty(device="cuda").eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.is_floating_point():
                param.normal_(0.0, 0.02)
        for buf in model.buffers():
            buf.zero_()
    return model


def describe_environment() -> dict:
    import torch

    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except Exception:  # nvidia-smi is optional
        driver = "unknown"
    # The card's usage with the context up, cuBLAS, cuDNN and an attention kernel loaded, minus
    # what the caching allocator holds: what CUDA_CONTEXT_BYTES stands for.
    x = torch.zeros(1, 2, 64, 64, device="cuda", dtype=torch.bfloat16)
    torch.nn.functional.scaled_dot_product_attention(x, x, x)
    torch.nn.functional.conv2d(x, torch.zeros(2, 2, 3, 3, device="cuda", dtype=torch.bfloat16))
    x[0, 0] @ x[0, 0]
    del x
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    context = (total - free) - torch.cuda.memory_reserved()
    return {
        "device": torch.cuda.get_device_name(0),
        "capability": f"sm{props.major}{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "memory_bytes": total,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": driver,
        "context_bytes": context,
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
    }


# --- the report --------------------------------------------------------------------------------

def error(predicted: int, measured: int | None) -> float | None:
    return None if not measured else 100.0 * (predicted - measured) / measured


def gb(value: int) -> float:
    return value / 1e9


def format_row(row: Row) -> str:
    err = error(row.predicted_allocated, row.measured_allocated)
    shown = f"{err:+6.2f}%" if err is not None else row.note
    return f"{row.model:48s} {row.size:5d}px b{row.batch} {row.dtype:9s} {row.attn:5s} allocated {shown}"


def summary(rows: list[Row], predicted: str, measured: str) -> tuple[int, float, float] | None:
    errors = [abs(error(getattr(r, predicted), getattr(r, measured))) for r in rows if getattr(r, measured)]
    if not errors:
        return None
    return len(errors), statistics.median(errors), max(errors)


def write_accuracy(environment: dict, rows: list[Row]) -> None:
    from vramplan.measure import overheads

    env = environment
    lines = [
        "# Accuracy of the inference simulation on a GPU",
        "",
        "Written by `bench/validate_gpu.py`: random-weight DINOv3 backbones run one forward on the GPU under "
        "`torch.inference_mode()`; each number is compared with `vramplan`'s prediction for the same case "
        "(simulated H100 target). Error = (predicted - measured) / measured.",
        "",
        f"- Device: {env['device']} ({env['capability']}, {env['multiprocessors']} SMs, "
        f"{gb(env['memory_bytes']):.1f} GB), driver {env['driver']}",
        f"- torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}; measured {env['date']}",
        f"- CUDA context and libraries measured on this device: {env['context_bytes'] / 2**20:.0f} MiB "
        f"(`CUDA_CONTEXT_BYTES` in overheads.py assumes {overheads.CUDA_CONTEXT_BYTES / 2**20:.0f} MiB)",
        "",
        "## Summary",
        "",
        "| metric | cases | median \\|error\\| | max \\|error\\| |",
        "|---|---|---|---|",
    ]
    metrics = (
        ("`max_memory_allocated` vs peak allocated", "predicted_allocated", "measured_allocated"),
        ("`max_memory_reserved` vs simulated reserved", "predicted_reserved", "measured_reserved"),
        ("card usage vs peak on the card", "predicted_device", "measured_device"),
    )
    for title, predicted, measured in metrics:
        found = summary(rows, predicted, measured)
        lines.append(f"| {title} | {found[0]} | {found[1]:.2f}% | {found[2]:.2f}% |" if found else f"| {title} | 0 | | |")
    allocated = summary(rows, "predicted_allocated", "measured_allocated")
    if allocated:
        met = allocated[1] <= GOAL_MEDIAN and allocated[2] <= GOAL_MAX
        lines += ["", f"Goal for `max_memory_allocated`: median \\|error\\| <= {GOAL_MEDIAN:.0f}% and max <= "
                  f"{GOAL_MAX:.0f}%: **{'met' if met else 'not met'}**."]
    lines += [
        "",
        "## Cases",
        "",
        "| model | input | batch | dtype | attn | kernel | allocated: predicted | measured | error | "
        "reserved: predicted | measured | error | card: predicted | measured | error | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.model.removeprefix("facebook/"), f"{r.size}px", str(r.batch), r.dtype, r.attn, r.kernel]
        for predicted, measured in ((r.predicted_allocated, r.measured_allocated),
                                    (r.predicted_reserved, r.measured_reserved),
                                    (r.predicted_device, r.measured_device)):
            err = error(predicted, measured)
            cells += [f"{gb(predicted):.3f} GB", f"{gb(measured):.3f} GB" if measured else "",
                      f"{err:+.2f}%" if err is not None else ""]
        cells.append(r.note)
        lines.append("| " + " | ".join(cells) + " |")
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
