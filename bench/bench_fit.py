"""Time `vramplan fit` on the DINOv3 family and the HTML report's cost over the estimate it shows (issue 11).

Targets:
- `vramplan fit dinov3 --gpu rtx4090 --gpu a100-80gb --gpu h100-sxm --gpu t4 --mode inference
  --image-size 224,1024,2048`: at most 60 s on 2 cores.
- the HTML report: at most 1 s beyond the estimate it shows (`report --format html` against `--format text`,
  same models and sweep).
Also: which start-up imports the report pays for Pillow and matplotlib (`python -X importtime`).

Each measurement is a fresh process. The machine may be shared: the load average is recorded.

    .venv/bin/python bench/bench_fit.py                 # print the Markdown section
    .venv/bin/python bench/bench_fit.py --write-docs    # and replace it in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench_fit:start -->", "<!-- bench_fit:end -->"
FIT = ["fit", "dinov3", "--gpu", "rtx4090", "--gpu", "a100-80gb", "--gpu", "h100-sxm", "--gpu", "t4",
       "--mode", "inference", "--image-size", "224,1024,2048"]
REPORT = ["report", "dinov3", "--mode", "inference", "--image-size", "224,1024", "--batch-size", "1,8"]


def vramplan(args: list[str]) -> tuple[float, float, str]:
    """Run `vramplan ARGS` in a fresh process; return (wall seconds, CPU seconds of the process, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vramplan.cli", *args], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"vramplan {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def median_time(args: list[str], repeats: int) -> tuple[float, float, str]:
    runs = [vramplan(args) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[-1][2]


def render_costs() -> tuple[float, float]:
    """In one process: the report's estimate once, then the best of 5 renders as text and as HTML (seconds)."""
    from vramplan.cli import preload_libraries
    from vramplan.measure.cases import InferenceRequest
    from vramplan.pipeline import estimate
    from vramplan.report.html import render_html
    from vramplan.report.text import render_report_text

    preload_libraries()
    request = InferenceRequest(image_sizes=((224, 224), (1024, 1024)), batch_sizes=(1, 8))
    run = estimate(["dinov3"], inference=request, checkpoint=False)

    def best(render) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            render(run)
            times.append(time.perf_counter() - start)
        return min(times)

    return best(lambda r: render_report_text(r, "DINOv3")), best(lambda r: render_html(r, "DINOv3"))


def import_costs(tmp: Path) -> dict[str, float]:
    """Import time (s) in `vramplan report` start-up (-X importtime): torch and transformers cumulative; PIL and
    matplotlib as the sum of their modules' own times (transformers imports PIL's submodules from several places)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "vramplan.cli", "report", "-o", str(tmp / "r.txt")],
                          capture_output=True, text=True, check=False)
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        own, cumulative, name = int(m.group(1)) / 1e6, int(m.group(2)) / 1e6, m.group(4)
        top = name.split(".")[0]
        if name in ("torch", "transformers"):
            costs[name] = costs.get(name, 0.0) + cumulative
        elif top in ("PIL", "matplotlib"):
            costs[top] = costs.get(top, 0.0) + own
    return costs


def measure(repeats: int) -> str:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fit_wall, fit_cpu, fit_json = median_time([*FIT, "--format", "json"], repeats)
        cells = [c for m in json.loads(fit_json)["models"] for c in m["fit"]]
        sims = [c["simulations"] for c in cells]
        text_wall, text_cpu, _ = median_time([*REPORT, "--format", "text", "-o", str(tmp / "r.txt")], repeats)
        html_wall, html_cpu, _ = median_time([*REPORT, "--format", "html", "-o", str(tmp / "r.html")], repeats)
        plot_wall, plot_cpu, _ = median_time([*REPORT, "--format", "html", "-o", str(tmp / "r2.html"),
                                              "--plot", str(tmp / "r.png")], repeats)
        imports = import_costs(tmp)
        text_render, html_render = render_costs()
    load_after = os.getloadavg()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fit_ok = "met" if fit_cpu <= 60 else "NOT met"
    html_ok = "met" if html_render <= 1 else "NOT met"
    table = "\n".join(f"| `{name}` | {f'{imports[name]:.2f} s' if name in imports else 'not imported'} |"
                      for name in ("torch", "transformers", "PIL", "matplotlib"))
    return f"""{START}
## Will it fit: `vramplan fit` and the HTML report

| measurement (median of {repeats} fresh processes) | wall time | CPU time |
|---|---|---|
| `vramplan {' '.join(FIT)}` ({len(cells)} cells) | {fit_wall:.1f} s | {fit_cpu:.1f} s |
| `vramplan {' '.join(REPORT)} --format text` | {text_wall:.2f} s | {text_cpu:.2f} s |
| same, `--format html` | {html_wall:.2f} s | {html_cpu:.2f} s |
| same, `--format html --plot report.png` (matplotlib) | {plot_wall:.2f} s | {plot_cpu:.2f} s |

- fit target (at most 60 s on 2 cores): **{fit_ok}** in CPU time, the figure other processes on the machine do not
  inflate ({fit_cpu:.1f} s, summed over the CLI and its worker process (`--jobs auto`); {fit_wall:.1f} s of wall time). Batches simulated per cell by the search: median
  {statistics.median(sims):g}, max {max(sims)} (the precision column adds one float32 forward at batch 1).
- HTML target (at most 1 s beyond the estimate it shows): **{html_ok}**: in one process, after the estimate,
  rendering the page takes {html_render * 1000:.0f} ms (the text report {text_render * 1000:.0f} ms), best of 5. The page
  is built from strings and hand-written SVG; matplotlib is imported only for `--plot`.

Start-up imports of `vramplan report` (`python -X importtime`, cumulative, one process): matplotlib is absent
unless `--plot` is given; Pillow is imported by transformers when it is installed (it came with matplotlib):

| package | import time |
|---|---|
{table}

Measured {when} on {os.cpu_count()} CPU cores ({platform.machine()}), Python {platform.python_version()}; load average
{load_before[0]:.1f} before and {load_after[0]:.1f} after: other processes shared the cores, so re-measure on a quiet
machine for exact figures. Rerun: `.venv/bin/python bench/bench_fit.py --write-docs`.
{END}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    section = measure(args.repeats)
    print(section)
    if args.write_docs:
        text = DOCS.read_text(encoding="utf-8")
        if START in text:
            text = re.sub(re.escape(START) + ".*?" + re.escape(END) + "\n", lambda _: section, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + section
        DOCS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
