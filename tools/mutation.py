"""Mutation score of measure/ and report/: run mutmut on a scratch copy and print the score per module.

Not part of the default test run (it runs each mutant's tests, minutes to an hour on 2 cores).

    python tools/mutation.py                          # measure/ and report/, 2 workers
    python tools/mutation.py --only src/vramplan/measure/overheads.py --children 1
    python tools/mutation.py --survivors              # also print each surviving mutant's diff
    python tools/mutation.py --only src/vramplan/report/listing.py --tests tests/test_formats.py
    python tools/mutation.py --only src/vramplan/measure/activations.py --sample 200 --seed 13   # a random sample

The working tree is copied (tracked and untracked-but-not-ignored files) to a scratch directory
(`--workdir`, default /tmp/vramplan-mutation), mutmut's configuration is written into the copy's
pyproject.toml, and `mutmut run` runs there under `nice`, so the worktree gains no `mutants/`.
mutmut collects which tests call each function once, then runs only those tests per mutant;
`TESTS` below restricts the candidates to the test files that exercise measure/ and report/.
The score is killed (and timed-out) mutants over all mutants: a mutant no test reaches counts
as a survivor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["src/vramplan/measure/*", "src/vramplan/report/*"]
TESTS = [  # fast, targeted ones first
    "tests/test_allocator_replay.py",
    "tests/test_cuda_kernel_temps.py",
    "tests/test_cases.py",
    "tests/test_checkpoint_listing.py",
    "tests/test_kernel_memory.py",
    "tests/test_activations.py",
    "tests/test_inference_golden.py",
    "tests/test_formats.py",
    "tests/test_seed_golden.py",
    "tests/test_inference_cli.py",
    "tests/test_local_configs.py",
    "tests/test_failures.py",
    "tests/test_small_fixes.py",
    "tests/test_local_checkpoint.py",
    "tests/test_hub_source.py",
    "tests/test_cpu_allocator.py",
]
LINE = re.compile(r"^\s*(?P<name>[\w.]+__mutmut_\d+): (?P<status>.+)$")


def _copy_tree(workdir: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    if workdir.exists():
        shutil.rmtree(workdir)
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            dst = workdir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _configure(workdir: Path, only: list[str], isolation: str, candidates: list[str],
               timeout_multiplier: float = 15.0) -> None:
    tests = [t for t in candidates if (workdir / t).exists()]
    toml = workdir / "pyproject.toml"
    toml.write_text(
        toml.read_text()
        + "\n[tool.mutmut]\n"
        + 'source_paths = ["src"]\n'
        + f"only_mutate = {only!r}\n".replace("'", '"')
        + f"pytest_add_cli_args_test_selection = {tests!r}\n".replace("'", '"')
        # A fresh `vramplan` process imports the installed package, not the mutated copy.
        + 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-k", "not fresh_process and not validate_gpu"]\n'
        + f'process_isolation = "{isolation}"\n'
        # A mutant's CPU-time limit is (its tests' time + 1 s) x this x 2: mutmut's 15 lets a looping mutant of
        # a function every slow test reaches run for most of an hour.
        + f"timeout_multiplier = {timeout_multiplier}\n"
        + "use_git_change_detection = false\n"
        + 'also_copy = ["bench", "docs", "README.md", "constraints.txt"]\n'
    )


def _sampled(workdir: Path, run: list[str], env: dict, size: int, seed: int) -> list[str]:
    """Generate the mutants and record which tests reach each (a run filtered to no mutant), then draw `size`."""
    subprocess.run([*run, "__no_mutant__"], cwd=workdir, env=env, check=False, capture_output=True)
    names = sorted(
        name for meta in (workdir / "mutants").rglob("*.py.meta")
        for name in json.loads(meta.read_text())["exit_code_by_key"]
    )
    return sorted(random.Random(seed).sample(names, min(size, len(names))))


def _module(mutant: str) -> str:
    # vramplan.measure.overheads.x_round_block__mutmut_3 -> vramplan.measure.overheads
    dotted = mutant.split("__mutmut_")[0].rsplit(".", 1)[0]
    return dotted.replace(".xǁ", ".").split("ǁ")[0]


def _score(results: str) -> dict[str, Counter]:
    by_module: dict[str, Counter] = defaultdict(Counter)
    for line in results.splitlines():
        match = LINE.match(line)
        if match:
            by_module[_module(match["name"])][match["status"].strip()] += 1
    return by_module


def _print_scores(by_module: dict[str, Counter]) -> None:
    print(f"{'module':36} {'checked':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'other':>6} "
          f"{'score':>7} {'unrun':>6}")
    totals: dict[str, Counter] = defaultdict(Counter)
    for module in sorted(by_module):
        _row(module, by_module[module])
        totals[".".join(module.split(".")[:2])].update(by_module[module])
    for package in sorted(totals):
        _row(package + "/ (all)", totals[package])


def _row(name: str, c: Counter) -> None:
    """Score over the mutants that ran; `unrun` counts those a stopped run never reached."""
    unrun = c["not checked"]
    total = sum(c.values()) - unrun
    killed = c["killed"] + c["timeout"]
    other = total - killed - c["survived"] - c["no tests"]
    score = 100.0 * killed / total if total else 0.0
    print(f"{name:36} {total:7} {killed:7} {c['survived']:8} {c['no tests']:8} {other:6} {score:6.1f}% {unrun:6}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=MODULES, help="glob patterns of files to mutate")
    parser.add_argument("--children", type=int, default=2, help="parallel mutant runs (2)")
    parser.add_argument("--isolation", choices=("fork", "forkserver"), default="fork",
                        help="mutmut's process_isolation (fork: fastest; forkserver if fork misbehaves)")
    parser.add_argument("--tests", nargs="+", default=TESTS,
                        help="candidate test files (default: TESTS); fewer make the first, recording run shorter")
    parser.add_argument("--sample", type=int, default=0,
                        help="run only this many mutants drawn at random (the others are reported as unrun)")
    parser.add_argument("--seed", type=int, default=13, help="the random draw of --sample (13)")
    parser.add_argument("--timeout-multiplier", type=float, default=15.0,
                        help="mutmut's timeout_multiplier (15): lower it where a looping mutant would run for long")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vramplan-mutation"))
    parser.add_argument("--reuse", action="store_true", help="score the last run in --workdir, run nothing")
    parser.add_argument("--survivors", action="store_true", help="print the diff of each survivor")
    args = parser.parse_args(argv)
    mutmut = [sys.executable, "-m", "mutmut"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if not args.reuse:
        _copy_tree(args.workdir)
        _configure(args.workdir, args.only, args.isolation, args.tests, args.timeout_multiplier)
        run = ["nice", "-n", "10", *mutmut, "run", "--max-children", str(args.children)]
        picked = _sampled(args.workdir, run, env, args.sample, args.seed) if args.sample else []
        subprocess.run([*run, *picked], cwd=args.workdir, env=env, check=False)
    results = subprocess.run(
        [*mutmut, "results", "--all", "true"], cwd=args.workdir, env=env, capture_output=True, text=True
    ).stdout
    _print_scores(_score(results))
    if args.survivors:
        for line in results.splitlines():
            match = LINE.match(line)
            if match and match["status"].strip() in ("survived", "no tests"):
                shown = subprocess.run([*mutmut, "show", match["name"]], cwd=args.workdir, env=env,
                                       capture_output=True, text=True)
                print(shown.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
