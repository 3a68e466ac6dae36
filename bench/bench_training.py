"""Time the training simulation (issue 9): the 7B full fine-tune, and the 12-backbone train report.

Each measurement is a fresh process (`vramplan` CLI, in-process imports included) timed from
outside, with its peak RSS from `resource.getrusage(RUSAGE_CHILDREN)`:

- `dinov3-vit7b16` full fine-tune, AdamW, amp-bf16, 224 px, batch 1 (target: <= 30 s, <= 2 GB RSS);
- `vramplan report --mode train` for the 12 DINOv3 backbones x {probe, LoRA r16, full} x {224, 512} px
  x batch {1, 32}, amp-bf16 (target: <= 120 s), as a user runs it (`--jobs auto`: one process per core)
  and in one process (`--jobs 1`); the two JSON outputs must be identical (SOURCE_DATE_EPOCH is set).

    .venv/bin/python bench/bench_training.py            # prints a Markdown section
    .venv/bin/python bench/bench_training.py --quick    # the 7B case only
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

SEVEN_B = ["estimate", "dinov3-vit7b16", "--mode", "train", "--image-size", "224", "--batch-size", "1",
           "--precision", "amp-bf16", "--trains", "full", "--format", "json"]
REPORT = ["report", "--mode", "train", "--image-size", "224,512", "--batch-size", "1,32", "--precision",
          "amp-bf16", "--trains", "probe,lora,full", "--lora-rank", "16", "--format", "json"]


def run(args: list[str]) -> tuple[float, float, int, str]:
    """Run `vramplan ARGS` in a fresh process: (seconds, peak RSS in MiB of the largest process so far (the
    CLI or one of its workers), exit code, output)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "vramplan.cli", *args, "-o", os.path.join(out, "o")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "SOURCE_DATE_EPOCH": "0"}).returncode
        seconds = time.perf_counter() - start
        text = open(os.path.join(out, "o"), encoding="utf-8").read() if code == 0 else ""
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux; max over children
    return seconds, rss, code, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the 7B case")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average before {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    seconds, rss, code, _ = run(SEVEN_B)
    print(f"| 7B full fine-tune, amp-bf16, 224 px, batch 1 | {seconds:.1f} s | {rss:.0f} MiB | exit {code} |")
    if args.quick:
        return
    outputs = []
    for jobs in ("auto", "1"):
        seconds, rss, code, text = run([*REPORT, "--jobs", jobs])
        outputs.append(text)
        print(f"| report --mode train --jobs {jobs}, 12 backbones x 12 cases | {seconds:.1f} s | {rss:.0f} MiB "
              f"(max of runs) | exit {code} |")
    same = outputs[0] == outputs[1] and outputs[0] != ""
    print(f"JSON of --jobs auto and --jobs 1: {'identical' if same else 'DIFFERENT'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
