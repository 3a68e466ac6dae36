"""The long fuzz run: thousands of hypothesis cases per input kind against the property of vramplan.testing.fuzz.

    nice python bench/fuzz.py --cases config=4000 cli=4000 reference=3000 --out fuzz-run.json

Runs in chunks with fresh seeds, generation only (no shrinking: a failure is recorded with its case and the run
goes on), and prints a Markdown table per kind: cases, exit codes, slowest case, largest memory growth,
property violations. docs/robustness.md records a run. Nothing leaves the machine (loopback Hub).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vramplan.testing.fuzz import KINDS, PropertyViolation, case_for, check_case, fuzz_environment  # noqa: E402

CHUNK = 250


def run_kind(kind: str, total: int, env, first_seed: int) -> dict:
    """Run `total` cases of `kind` in chunks; count outcomes; keep every violation."""
    codes: Counter[int] = Counter()
    stats = {"cases": 0, "slowest_s": 0.0, "slowest_case": None, "max_rss_growth": 0, "violations": []}
    chunk_index = 0
    while stats["cases"] < total:
        size = min(CHUNK, total - stats["cases"])

        @seed(first_seed + chunk_index)
        @settings(max_examples=size, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def chunk(data):
            if stats["cases"] >= total:
                return
            argv = case_for(kind, data, env)
            stats["cases"] += 1
            try:
                outcome = check_case(argv)
            except PropertyViolation as exc:
                stats["violations"].append(str(exc)[:800])
                return  # recorded; the chunk goes on
            codes[outcome.code] += 1
            if outcome.seconds > stats["slowest_s"]:
                stats["slowest_s"], stats["slowest_case"] = outcome.seconds, list(outcome.argv)
            stats["max_rss_growth"] = max(stats["max_rss_growth"], outcome.rss_growth)

        before = stats["cases"]
        chunk()
        chunk_index += 1
        if stats["cases"] == before:  # hypothesis found nothing new to generate
            break
        print(f"{kind}: {stats['cases']}/{total} cases, {len(stats['violations'])} violations", file=sys.stderr)
    stats["exit_codes"] = {str(k): v for k, v in sorted(codes.items())}
    return stats


def markdown(results: dict, seconds: float) -> str:
    lines = ["| input kind | cases | exit 0 | exit 1 | exit 2 | slowest case (s) | max RSS growth (MiB) | violations |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, r in results.items():
        c = r["exit_codes"]
        lines.append(f"| {kind} | {r['cases']:,} | {c.get('0', 0):,} | {c.get('1', 0):,} | {c.get('2', 0):,} | "
                     f"{r['slowest_s']:.2f} | {r['max_rss_growth'] / 2**20:.0f} | {len(r['violations'])} |")
    total = sum(r["cases"] for r in results.values())
    lines.append(f"\n{total:,} cases in {seconds / 60:.1f} min on {platform.node()} ({platform.machine()}).")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["config=4000", "cli=4000", "reference=3000"],
                        metavar="KIND=N", help=f"kinds: {', '.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--out", type=Path, help="also write the figures and violations as JSON")
    args = parser.parse_args()
    wanted = dict(item.split("=", 1) for item in args.cases)
    from vramplan.cli import preload_libraries

    preload_libraries()
    start = time.monotonic()
    results = {}
    with fuzz_environment() as env:
        for kind, count in wanted.items():
            results[kind] = run_kind(kind, int(count), env, args.seed + 1000 * KINDS.index(kind))
    elapsed = time.monotonic() - start
    print(markdown(results, elapsed))
    for kind, r in results.items():
        for violation in r["violations"]:
            print(f"\n{kind}: {violation}")
    if args.out:
        args.out.write_text(json.dumps({"seconds": elapsed, "results": results}, indent=2))
    return 1 if any(r["violations"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
