"""Time `vramplan report` for the 12 catalogue models against the seed's workflow and the import floor (issue 2).

Three measurements, each a fresh process with an empty Hugging Face cache (cold: no earlier results to reuse):

- seed workflow: one ``accelerate estimate-memory <id> --library_name transformers`` process per catalogue model.
  accelerate insists on a Hub look-up (model info, then config.json), so a loopback Hub
  (``vramplan.testing.LoopbackHub``) serves the catalogue configs; each printed table is checked against the seed's.
- import floor: a process that only imports torch, accelerate and the transformers model classes it builds.
- ``vramplan report -o <file>``: the 12 models in one process.

Targets: vramplan at least 15x faster than the seed workflow, and at most 1.3x the floor.

    .venv/bin/python bench/bench_report.py                  # print the Markdown section
    .venv/bin/python bench/bench_report.py --write-docs     # and replace it in docs/benchmarks.md

Before timing, one untimed floor process warms the OS file cache, so all three measurements read the same
already-cached shared libraries and .py files; what differs is only what each process does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from vramplan.testing import HubRequest, LoopbackHub

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "src" / "vramplan" / "catalog"
DOCS = ROOT / "docs" / "benchmarks.md"
BIN = Path(sys.executable).parent
START, END = "<!-- bench_report:start -->", "<!-- bench_report:end -->"
TITLE = "## vramplan report vs accelerate estimate-memory"
SPEEDUP_TARGET, FLOOR_TARGET = 15.0, 1.3

FLOOR_CODE = "import torch, accelerate, transformers; from transformers import DINOv3ViTModel, DINOv3ConvNextModel"
# The same imports with the cycle collector paused and what they made frozen, as `vramplan` starts
# (cli.preload_libraries): shown beside the floor so the reader sees where vramplan's lead over it comes from.
FLOOR_GC_CODE = f"import gc; gc.disable(); {FLOOR_CODE}; gc.enable(); gc.freeze()"
FLOOR_MODULES = (
    "transformers.models.dinov3_vit.modeling_dinov3_vit",
    "transformers.models.dinov3_convnext.modeling_dinov3_convnext",
)

SEED_FILE = ROOT / "tests" / "data" / "seed_000_dinov3_vram_report.txt"

# The seed's accelerate tables (tests/data/seed_000_dinov3_vram_report.txt), per facebook/dinov3-* model: Largest Layer, Total Size,
# Training using Adam for float32 | float16 | int8 | int4.
SEED_ROWS = """
convnext-base-pretrain-lvd1689m  32.23 MB,334.04 MB,1.3 GB|16.11 MB,167.02 MB,668.08 MB|8.06 MB,83.51 MB,N/A|4.03 MB,41.75 MB,N/A
convnext-large-pretrain-lvd1689m 72.34 MB,748.56 MB,2.92 GB|36.17 MB,374.28 MB,1.46 GB|18.08 MB,187.14 MB,N/A|9.04 MB,93.57 MB,N/A
convnext-small-pretrain-lvd1689m 18.17 MB,188.65 MB,754.62 MB|9.08 MB,94.33 MB,377.31 MB|4.54 MB,47.16 MB,N/A|2.27 MB,23.58 MB,N/A
convnext-tiny-pretrain-lvd1689m  18.17 MB,106.13 MB,424.5 MB|9.08 MB,53.06 MB,212.25 MB|4.54 MB,26.53 MB,N/A|2.27 MB,13.27 MB,N/A
vit7b16-pretrain-lvd1689m        640.19 MB,25.02 GB,100.08 GB|320.09 MB,12.51 GB,50.04 GB|160.05 MB,6.25 GB,N/A|80.02 MB,3.13 GB,N/A
vit7b16-pretrain-sat493m         640.19 MB,25.02 GB,100.08 GB|320.09 MB,12.51 GB,50.04 GB|160.05 MB,6.25 GB,N/A|80.02 MB,3.13 GB,N/A
vitb16-pretrain-lvd1689m         27.04 MB,326.77 MB,1.28 GB|13.52 MB,163.38 MB,653.54 MB|6.76 MB,81.69 MB,N/A|3.38 MB,40.85 MB,N/A
vith16plus-pretrain-lvd1689m     100.09 MB,3.13 GB,12.53 GB|50.04 MB,1.57 GB,6.26 GB|25.02 MB,801.65 MB,N/A|12.51 MB,400.83 MB,N/A
vitl16-pretrain-lvd1689m         48.05 MB,1.13 GB,4.52 GB|24.03 MB,578.17 MB,2.26 GB|12.01 MB,289.09 MB,N/A|6.01 MB,144.54 MB,N/A
vitl16-pretrain-sat493m          48.05 MB,1.13 GB,4.52 GB|24.03 MB,578.17 MB,2.26 GB|12.01 MB,289.09 MB,N/A|6.01 MB,144.54 MB,N/A
vits16-pretrain-lvd1689m         6.77 MB,82.38 MB,329.54 MB|3.39 MB,41.19 MB,164.77 MB|1.69 MB,20.6 MB,N/A|866.62 KB,10.3 MB,N/A
vits16plus-pretrain-lvd1689m     9.03 MB,109.45 MB,437.82 MB|4.51 MB,54.73 MB,218.91 MB|2.26 MB,27.36 MB,N/A|1.13 MB,13.68 MB,N/A
"""
DTYPES = ("float32", "float16", "int8", "int4")


@dataclass(frozen=True)
class Model:
    id: str
    alias: str
    config: Path


@dataclass
class Timing:
    """Seconds of repeated runs of one measurement: wall clock, and CPU (user + system) of the process."""

    runs: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, run: Run) -> None:
        self.runs.append(run.wall)
        self.cpu.append(run.cpu)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def min(self) -> float:
        return min(self.runs)


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    stdout: str


class BenchError(Exception):
    """A measured command failed or printed something other than expected."""


def load_catalog() -> list[Model]:
    """The catalogue models, read through the package's files."""
    index = json.loads((CATALOG / "index.json").read_text())
    return [Model(m["id"], m["alias"], CATALOG / m["config"]) for m in index["models"]]


def seed_rows() -> dict[str, list[list[str]]]:
    """Model id -> the seed's table rows: [dtype, largest layer, total size, training with Adam]."""
    rows = {}
    for line in SEED_ROWS.strip().splitlines():
        name, cells = line.split(maxsplit=1)
        rows[f"facebook/dinov3-{name}"] = [[dtype, *row.split(",")] for dtype, row in zip(DTYPES, cells.split("|"))]
    return rows


def table_rows(output: str) -> list[list[str]]:
    """The dtype rows of accelerate's boxed table."""
    boxed = (line for line in output.splitlines() if line.startswith("│"))
    cells = ([c.strip() for c in line.strip("│").split("│")] for line in boxed)
    return [row for row in cells if row[0] in DTYPES]


def boxed_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line[:1] in ("┌", "│", "├", "└")]


def seed_boxes(path: Path) -> dict[str, list[str]]:
    """Model id -> the boxed table lines of a seed file (its `===== id =====` blocks)."""
    blocks = re.split(r"^===== (.+?) =====$", path.read_text(), flags=re.M)
    return {name: boxed_lines(body) for name, body in zip(blocks[1::2], blocks[2::2])}


def timed(command: Sequence[str], env: dict[str, str]) -> Run:
    """Run a command to completion; return its wall-clock and CPU seconds and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise BenchError(f"`{' '.join(command)}` exited {result.returncode}:\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(elapsed, cpu, result.stdout)


def fresh_env(hub: LoopbackHub, scratch: Path) -> dict[str, str]:
    """Environment of a cold process: empty HF_HOME and XDG cache, the loopback Hub as endpoint."""
    home = Path(tempfile.mkdtemp(dir=scratch))
    env = hub.subprocess_env(home / "hf")
    env["XDG_CACHE_HOME"] = str(home / "cache")
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    return env


def bench_accelerate(
    models: list[Model], hub: LoopbackHub, scratch: Path, repeats: int, seed: Path | None
) -> dict[str, Timing]:
    """Time one `accelerate estimate-memory` process per model and check its table against the seed's."""
    accelerate = shutil.which("accelerate", path=str(BIN)) or "accelerate"
    expected_rows, expected_boxes = seed_rows(), seed_boxes(seed) if seed else {}
    timings = {m.id: Timing() for m in models}
    for _ in range(repeats):
        for model in models:
            command = [accelerate, "estimate-memory", model.id, "--library_name", "transformers"]
            run = timed(command, fresh_env(hub, scratch))
            if table_rows(run.stdout) != expected_rows[model.id]:
                raise BenchError(f"accelerate's table for {model.id} differs from the seed's:\n{run.stdout}")
            if seed and boxed_lines(run.stdout) != expected_boxes[model.id]:
                raise BenchError(f"accelerate's boxed table for {model.id} differs from {seed}:\n{run.stdout}")
            timings[model.id].add(run)
            print(f"  accelerate {model.alias}: {run.wall:.2f} s (CPU {run.cpu:.2f} s)", file=sys.stderr)
    return timings


def floor_command(code: str = FLOOR_CODE) -> list[str]:
    return [sys.executable, "-c", code]


def check_floor(env: dict[str, str]) -> None:
    """Make sure the floor really imports the modelling modules (transformers imports lazily)."""
    probe = f"{FLOOR_CODE}; import sys; print([m for m in {FLOOR_MODULES!r} if m not in sys.modules])"
    printed = timed([sys.executable, "-c", probe], env).stdout.strip()
    if printed != "[]":
        raise BenchError(f"the floor did not import the modelling modules: {printed}")


def vramplan_command(output: Path) -> list[str]:
    return [shutil.which("vramplan", path=str(BIN)) or "vramplan", "report", "-o", str(output)]


def check_report(output: Path, models: list[Model]) -> None:
    text = output.read_text() if output.exists() else ""
    missing = [m.id for m in models if m.id not in text and m.alias not in text]
    if not text or missing:
        raise BenchError(f"`vramplan report` output {output} misses models: {missing or 'all (empty file)'}")


def describe_requests(requests: list[HubRequest], processes: int) -> str:
    """What the accelerate processes asked the Hub, per process."""
    kinds = Counter(f"{r.method} {r.filename or r.kind}" for r in requests)
    per_process = ", ".join(f"{n // processes} x {what}" for what, n in sorted(kinds.items()))
    return f"each accelerate process asked it: {per_process}."


def repeat(run: Callable[[], Run], repeats: int, label: str) -> Timing:
    timing = Timing()
    for _ in range(repeats):
        timing.add(run())
        print(f"  {label}: {timing.runs[-1]:.2f} s (CPU {timing.cpu[-1]:.2f} s)", file=sys.stderr)
    return timing


# --- report ------------------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"CPU": cpu, "nproc": str(usable), "Python": platform.python_version(), "OS": platform.platform()}
    for package in ("torch", "transformers", "accelerate", "huggingface_hub", "timm", "torchvision"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    changes = " (uncommitted changes)" if dirty.stdout.strip() else ""
    info["vramplan commit"] = (commit.stdout.strip() or "unknown") + changes
    return info


def seconds(value: float) -> str:
    return f"{value:.2f} s"


@dataclass(frozen=True)
class Results:
    models: list[Model]
    accelerate: dict[str, Timing] | None
    floor: Timing
    floor_gc: Timing
    vramplan: Timing | None
    vramplan_note: str  # why vramplan was not measured
    hub_note: str  # what the processes asked the loopback Hub
    load: tuple[float, float, float]  # load average before the first timed run
    command: str

    def seed_workflow(self) -> Timing | None:
        """The accelerate runs summed over the models, per repeat."""
        if not self.accelerate:
            return None
        per_model = list(self.accelerate.values())
        total = Timing()
        for i in range(len(per_model[0].runs)):
            total.add(Run(sum(t.runs[i] for t in per_model), sum(t.cpu[i] for t in per_model), ""))
        return total


def timing_row(label: str, timing: Timing | None, note: str = "") -> str:
    if timing is None:
        return f"| {label} | - | {note} | - | - |"
    cpu = statistics.median(timing.cpu)
    return f"| {label} | {len(timing.runs)} | {seconds(timing.median)} | {seconds(timing.min)} | {seconds(cpu)} |"


def render(results: Results) -> str:
    """The Markdown section, markers included."""
    models, floor, vramplan = results.models, results.floor, results.vramplan
    seed = results.seed_workflow()
    lines = [
        START,
        TITLE,
        "",
        f"Issue 2's targets, cold (each run a fresh process with an empty Hugging Face cache): `vramplan report` for"
        f" the {len(models)} catalogue models at least {SPEEDUP_TARGET:g}x faster than the seed's workflow (one"
        f" `accelerate estimate-memory` process per model), and no more than {FLOOR_TARGET:g}x the import floor.",
        "",
        "| Measurement | Runs | Median | Min | CPU (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    if seed is not None:
        label = f"Seed workflow: {len(models)} x `accelerate estimate-memory <id> --library_name transformers`"
        lines.append(timing_row(label, seed))
    lines.append(timing_row(f'Import floor: `python -c "{FLOOR_CODE}"`', floor))
    lines.append(timing_row("The same imports with the cycle collector paused, as `vramplan` imports them"
                            " (`gc.disable()` ... `gc.enable(); gc.freeze()`)", results.floor_gc))
    lines.append(timing_row("`vramplan report -o <file>`", vramplan, results.vramplan_note))
    lines.append("")

    if vramplan is not None and seed is not None:
        speedup, speedup_best = seed.median / vramplan.median, seed.min / vramplan.min
        over_floor, over_floor_best = vramplan.median / floor.median, vramplan.min / floor.min
        lines += [
            "| Ratio (of medians; of mins in brackets) | Value | Target | Met |",
            "|---|---:|---:|:---:|",
            f"| Seed workflow / vramplan | {speedup:.1f}x ({speedup_best:.1f}x) | >= {SPEEDUP_TARGET:g}x"
            f" | {'yes' if speedup >= SPEEDUP_TARGET else 'no'} |",
            f"| vramplan / import floor | {over_floor:.2f}x ({over_floor_best:.2f}x) | <= {FLOOR_TARGET:g}x"
            f" | {'yes' if over_floor <= FLOOR_TARGET else 'no'} |",
            "",
            f"In CPU time (medians), less sensitive to other load on the machine: seed workflow / vramplan"
            f" {statistics.median(seed.cpu) / statistics.median(vramplan.cpu):.1f}x, vramplan / floor"
            f" {statistics.median(vramplan.cpu) / statistics.median(floor.cpu):.2f}x.",
            "",
        ]
    if seed is not None:
        floor_gc = results.floor_gc
        lines += [
            f"Ceiling: seed workflow / import floor = {seed.median / floor.median:.1f}x: a process that imports"
            " what the floor imports, the way the floor imports it, cannot beat that speed-up. vramplan imports"
            " the same libraries with Python's cycle collector paused and then frozen (`cli.preload_libraries`):"
            " the collector's passes over the objects those imports create (all of which live as long as the"
            f" process) are most of the difference: those imports alone take {seconds(floor_gc.median)}"
            f" (median), {floor.median / floor_gc.median:.2f}x less than the floor, and vramplan / those imports ="
            f" {(vramplan.median / floor_gc.median) if vramplan else float('nan'):.2f}x.",
            "",
        ]

    if results.accelerate:
        lines += ["<details><summary>accelerate estimate-memory, per model</summary>", "",
                  "| Model | Median | Min | CPU (median) |", "|---|---:|---:|---:|"]  # fmt: skip
        for model in models:
            timing = results.accelerate[model.id]
            cpu = statistics.median(timing.cpu)
            lines.append(f"| {model.id} | {seconds(timing.median)} | {seconds(timing.min)} | {seconds(cpu)} |")
        lines += ["", "</details>", ""]

    load = ", ".join(f"{x:.2f}" for x in results.load)
    lines += [
        "How it is measured: wall-clock time of each process from start to exit (`time.perf_counter` around"
        " `subprocess.run`), and its CPU time (user + system, from `getrusage`), one process after another. Every"
        " process gets a new empty `HF_HOME` and `XDG_CACHE_HOME`. accelerate must look the model up on the Hub, so"
        " a loopback Hub (`vramplan.testing.LoopbackHub`) on 127.0.0.1 serves each catalogue `config.json` with"
        f" `library_name: transformers`; {results.hub_note} Each accelerate table is checked against the seed's."
        " Answers from 127.0.0.1 take about a millisecond, so the seed workflow times here leave out the network"
        " round trips of those requests to huggingface.co in real use."
        " The floor imports torch, accelerate, transformers and the two DINOv3 model classes (checked to load"
        " their modelling modules). One untimed floor run first warms the OS file cache for all three."
        " `accelerate estimate-memory` imports timm (and through it torchvision) at start-up whenever timm is"
        " installed, so whether it is (below) changes the seed workflow's time.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine().items()) + f"; load average before the runs {load}.",
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "Rerun:",
        "",
        "```",
        results.command,
        "```",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_docs(section: str, path: Path = DOCS) -> None:
    """Replace the marked section of docs/benchmarks.md, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1].removeprefix("\n")
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of the floor and of vramplan (default 5)")
    parser.add_argument("--accelerate-repeats", type=int, default=1,
                        help="runs of the 12 accelerate processes (default 1; about a minute each)")  # fmt: skip
    parser.add_argument("--skip-accelerate", action="store_true", help="leave out the seed workflow")
    parser.add_argument("--skip-vramplan", action="store_true", help="leave out vramplan report")
    parser.add_argument(
        "--seed",
        type=Path,
        default=SEED_FILE,
        help="compare accelerate's boxed tables line by line with this file (default: the repository's copy of seed 000)",
    )
    parser.add_argument("--json", type=Path, help="write the raw timings here")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the section in {DOCS.relative_to(ROOT)}")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, models: list[Model], command: str) -> Results:
    """Serve the catalogue from a loopback Hub and time the three measurements."""
    with LoopbackHub() as hub, tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        scratch = Path(tmp)
        for model in models:
            hub.add_repo(model.id, {"config.json": model.config.read_bytes()}, library_name="transformers")

        check_floor(fresh_env(hub, scratch))  # also the untimed warm-up run
        load = os.getloadavg()
        if load[0] > 0.5 * len(os.sched_getaffinity(0)):
            print(f"warning: the machine is busy (load average {load[0]:.1f}): timings will be noisy", file=sys.stderr)

        accelerate, hub_note = None, "accelerate was not run."
        if not args.skip_accelerate:
            print("seed workflow (accelerate estimate-memory, one process per model):", file=sys.stderr)
            accelerate = bench_accelerate(models, hub, scratch, args.accelerate_repeats, args.seed)
            hub_note = describe_requests(hub.requests, len(models) * args.accelerate_repeats)
        hub.reset_requests()

        print("import floor:", file=sys.stderr)
        floor = repeat(lambda: timed(floor_command(), fresh_env(hub, scratch)), args.repeats, "floor")
        print("import floor, collector paused:", file=sys.stderr)
        floor_gc = repeat(lambda: timed(floor_command(FLOOR_GC_CODE), fresh_env(hub, scratch)), args.repeats,
                          "floor (gc paused)")

        vramplan, vramplan_note = None, "skipped"
        if not args.skip_vramplan:
            print("vramplan report:", file=sys.stderr)
            output = scratch / "report.out"

            def run_vramplan() -> Run:
                run = timed(vramplan_command(output), fresh_env(hub, scratch))
                check_report(output, models)
                output.unlink()
                return run

            try:
                vramplan = repeat(run_vramplan, args.repeats, "vramplan report")
                hub_note += f" `vramplan report` made {len(hub.requests)} Hub requests."
            except (BenchError, OSError) as error:
                vramplan_note = "not measured: `vramplan report` failed"
                print(f"vramplan report could not be measured: {error}", file=sys.stderr)
    return Results(models, accelerate, floor, floor_gc, vramplan, vramplan_note, hub_note, load, command)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs"]
    command = " ".join([".venv/bin/python bench/bench_report.py", *given, "--write-docs"])
    results = measure(args, load_catalog(), command)
    section = render(results)
    print(section)
    if args.json:
        timings = {"floor": results.floor, "floor_gc": results.floor_gc, "vramplan": results.vramplan,
                   **(results.accelerate or {})}
        raw = {name: t and {"wall": t.runs, "cpu": t.cpu} for name, t in timings.items()}
        args.json.write_text(json.dumps({"timings": raw, "machine": machine()}, indent=2) + "\n")
    if args.write_docs:
        write_docs(section)
        print(f"wrote the section into {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
