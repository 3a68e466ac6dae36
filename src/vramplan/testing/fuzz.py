"""Fuzzing vramplan's inputs with hypothesis: config contents, CLI arguments and model references.

The property, for every input: the CLI ends with a documented exit code (0 all ok, 1 some model failed, 2 usage
error), never a traceback; a failure is one line on stderr (argparse's usage block may precede a usage error's
line); and it ends within a time limit without growing the process by more than a memory limit. The short run
is `tests/test_fuzz.py`; the long run, with figures, is `bench/fuzz.py` (docs/robustness.md).

Every case runs in this process, the way `tests/conftest.py`'s `run_cli` does, so an uncaught exception of any
type is seen as what it is. Nothing leaves the machine: Hub ids go to a LoopbackHub with no repos, started by
`fuzz_environment`; factories and torch.hub entrypoints are never fuzzed (naming code runs it).

Needs hypothesis (the `test` extra).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

KINDS = ("config", "cli", "reference")
TIME_LIMIT_S = 60.0
MEMORY_LIMIT_BYTES = 2 << 30
_ERROR_LINE = re.compile(r"^vramplan( [a-z]+)?: error: \S")

# A DINOv3 ViT cut to one narrow layer: any image size works (RoPE), so the simulation is exercised, and fast.
TINY_VIT = {
    "model_type": "dinov3_vit", "architectures": ["DINOv3ViTModel"], "hidden_size": 32, "intermediate_size": 64,
    "num_attention_heads": 2, "num_hidden_layers": 1, "num_register_tokens": 4, "patch_size": 16, "image_size": 32,
}
TINY_BERT = {
    "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 64,
}
TINY_GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "vocab_size": 100, "n_positions": 64}
BASES = (TINY_VIT, TINY_BERT, TINY_GPT2)


# --- strategies ---------------------------------------------------------------------------------------------------

EDGE_INTS = (0, 1, -1, 2, 3, 7, -(2**31), 2**31, 2**53 + 1, 2**63, 10**12, 10**30, -(10**30))
NUMBERS = st.one_of(
    st.sampled_from(EDGE_INTS), st.integers(-3, 70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from((0.5, 1e-300, 1e308, -0.0)),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20))
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)
KEYS = sorted({k for base in BASES for k in base} | {"model_type", "auto_map", "torch_dtype", "text_config",
                                                     "vision_config", "num_experts", "depths", "id2label"})


@st.composite
def config_texts(draw) -> str:
    """config.json contents: a tiny real config with keys dropped, changed and added; or any JSON; or not JSON."""
    shape = draw(st.sampled_from(("mutated", "mutated", "mutated", "any-json", "deep", "text")))
    if shape == "any-json":
        return json.dumps(draw(JSON_VALUES))
    if shape == "deep":
        depth = draw(st.sampled_from((10, 100, 999, 5000, 100_000)))
        opener, closer = draw(st.sampled_from((("[", "]"), ('{"a":', "}"))))
        return '{"model_type": "bert", "x": ' + opener * depth + "1" + closer * depth + "}"
    if shape == "text":
        return draw(st.text(max_size=200))
    config = dict(draw(st.sampled_from(BASES)))
    for key in draw(st.sets(st.sampled_from(sorted(config)), max_size=3)):
        del config[key]
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        config[key] = draw(JSON_VALUES)
    config.update(draw(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=2)))
    return json.dumps(config)


SIZE_TEXTS = st.one_of(
    st.integers(-5, 5000).map(str), st.sampled_from(EDGE_INTS).map(str),
    st.tuples(st.integers(0, 3000), st.integers(0, 3000)).map(lambda hw: f"{hw[0]}x{hw[1]}"),
    st.sampled_from(("1e22", "224,", ",", "", " ", "x", "224x", "1_0", "²", "١٢", "0x10", "+5", "-1", "65536",
                     "65537", "1048576", "1048577", "16777216", "224,512,1024", "NaN", "inf")),
    st.text(max_size=8),
)
FLAG_VALUES = {
    "--image-size": SIZE_TEXTS, "--batch-size": SIZE_TEXTS, "--seq-len": SIZE_TEXTS,
    "--dtype": st.sampled_from(("float32", "float16", "bfloat16", "int8", "fp16", "float32,bfloat16", "", "x")),
    "--attn": st.sampled_from(("sdpa", "eager", "flash", "sdpa,flash", "flash,eager", "paged", "")),
    "--device": st.sampled_from(("cuda", "cpu", "tpu", "")),
    "--mode": st.sampled_from(("weights", "inference", "inference", "train", "")),
    "--format": st.sampled_from(("table", "json", "csv", "markdown", "text", "yaml")),
    "--timeout": st.sampled_from(("10", "0", "-1", "nan", "inf", "1e400", "1e-9", "x", "")),
    "--library": st.sampled_from(("transformers", "timm", "keras", "")),
    "--revision": st.text(max_size=10),
    "-o": st.sampled_from(("-", "OUT", "OUT/nested/x.txt", "/proc/version", "")),
}
# Mostly valid values, so that most cases get past parsing to the simulation; the rest probe the parser.
VALID_VALUES = {
    "--image-size": st.one_of(st.integers(16, 1024).map(str),
                              st.tuples(st.integers(16, 512), st.integers(16, 512)).map(lambda hw: f"{hw[0]}x{hw[1]}")),
    "--batch-size": st.integers(1, 64).map(str), "--seq-len": st.integers(1, 512).map(str),
    "--dtype": st.sampled_from(("float32", "float16", "bfloat16", "float32,bfloat16")),
    "--attn": st.sampled_from(("sdpa", "eager", "flash", "sdpa,eager", "sdpa,flash")),
    "--device": st.sampled_from(("cuda", "cpu")), "--mode": st.just("inference"),
    "--format": st.sampled_from(("table", "json", "csv", "markdown")), "--timeout": st.just("5"),
    "--library": st.just("transformers"), "--revision": st.just("main"), "-o": st.sampled_from(("-", "OUT")),
}
BARE_FLAGS = ("--debug", "--quiet", "--no-checkpoint", "--version", "--help", "--trust-remote-code")


@st.composite
def cli_arguments(draw) -> list[str]:
    """`estimate`/`report` on the tiny ViT with a random mix of flags and values (sizes, batches, dtypes...)."""
    argv = [draw(st.sampled_from(("estimate", "estimate", "report"))), "TINY_VIT"]
    if draw(st.integers(0, 9)) < 7:  # size flags need it: without it, most cases would stop at parsing
        argv += ["--mode", "inference"]
    for flag in draw(st.lists(st.sampled_from(sorted(FLAG_VALUES)), max_size=5)):
        valid = draw(st.integers(0, 9)) < 8
        argv += [flag, draw(VALID_VALUES[flag] if valid else FLAG_VALUES[flag])]
    if draw(st.integers(0, 3)) == 0:
        argv += ["--dtypes", *draw(st.lists(st.sampled_from(("float32", "float16", "int8", "int4", "bfloat16", "x")),
                                            min_size=1, max_size=3))]
    argv += draw(st.lists(st.sampled_from(BARE_FLAGS[:3]), max_size=1))
    if draw(st.integers(0, 20)) == 0:
        argv.append(draw(st.sampled_from(BARE_FLAGS[3:5])))
    return argv


REFERENCE_EXAMPLES = (
    "", " ", ".", "..", "~", "-", "--", "/", "/etc", "/etc/passwd", "../../../../etc/passwd", "/dev/null",
    "/dev/zero", "/proc/self/status", "/proc/self/environ", "config.json", "./config.json", "a/b", "a/../b",
    "../a/b", "a//b", "org/name/extra", "https://huggingface.co/facebook/dinov3-vits16-pretrain-lvd1689m",
    "hf://facebook/x", "http://127.0.0.1:1/x", "facebook/dinov3-vits16-pretrain-lvd1689m", "dinov3", "DINOV3",
    "dinov3-vits16", " dinov3-vits16", "dinov3-vits16\n", "timm/resnet50.a1_in1k", "resnet50", "acme/bert-tiny",
    "a" * 300, "x/" + "y" * 200, "nul\x00byte", "emoji/🙂", "C:\\Windows", "$HOME", "TINY_DIR", "TINY_DIR/config.json",
)
REFERENCES = st.one_of(
    st.sampled_from(REFERENCE_EXAMPLES),
    st.from_regex(r"\A[A-Za-z0-9][\w.\-]{0,20}/[\w.\-]{1,20}\Z"),
    st.text(max_size=40),
    st.lists(st.sampled_from(("..", ".", "etc", "TINY_DIR", "config.json", "~")), min_size=1, max_size=5).map("/".join),
)


@st.composite
def reference_arguments(draw) -> list[str]:
    """`estimate` with one to three references: paths, ids, traversal, URLs, junk."""
    refs = draw(st.lists(REFERENCES, min_size=1, max_size=3))
    return ["estimate", *refs, "--timeout", "2", *draw(st.sampled_from(((), ("--format", "json"), ("--debug",))))]


# --- the property -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one case did."""

    argv: tuple[str, ...]
    code: int
    seconds: float
    rss_growth: int
    err: str


class PropertyViolation(AssertionError):
    """A case broke the property; the message names the case and what it did."""


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`vramplan ARGV` in this process: exit code, stdout, stderr. Any exception but SystemExit propagates."""
    from vramplan.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return code, out.getvalue(), err.getvalue()


def check_case(argv: list[str], *, time_limit: float = TIME_LIMIT_S,
               memory_limit: int = MEMORY_LIMIT_BYTES) -> Outcome:
    """Run one case and check the property.

    Raises:
        PropertyViolation: an uncaught exception, an undocumented exit code, a traceback or a multi-line
            failure on stderr, or a case over the time or memory limit.
    """
    rss, start = _rss_bytes(), time.monotonic()
    try:
        code, out, err = run_cli(argv)
    except BaseException as exc:  # noqa: BLE001 - exactly what the property forbids
        raise PropertyViolation(f"{argv!r}: uncaught {type(exc).__name__}: {str(exc)[:300]}") from exc
    finally:
        _forget_models()
    outcome = Outcome(tuple(argv), code, time.monotonic() - start, _rss_bytes() - rss, err)
    problem = _problem(outcome, out, time_limit, memory_limit)
    if problem:
        raise PropertyViolation(f"{argv!r}: {problem} (exit {code}; stderr: {err[-600:]!r})")
    return outcome


def _problem(outcome: Outcome, out: str, time_limit: float, memory_limit: int) -> str | None:
    lines = outcome.err.splitlines()
    if outcome.code not in (0, 1, 2):
        return "undocumented exit code"
    if "Traceback" in outcome.err and "--debug" not in outcome.argv:
        return "a traceback without --debug"
    if outcome.seconds > time_limit:
        return f"took {outcome.seconds:.1f} s"
    if outcome.rss_growth > memory_limit:
        return f"grew the process by {outcome.rss_growth >> 20} MiB"
    if "--debug" in outcome.argv:
        return None
    if outcome.code == 2 and not (lines and _ERROR_LINE.match(lines[-1])
                                  and (len(lines) == 1 or lines[0].startswith("usage:"))):
        return "a usage error that is not one `vramplan: error:` line"
    if outcome.code == 1 and not (lines and all(line.startswith("vramplan: ") for line in lines)):
        return "a failure that is not one `vramplan:` line per fault"
    written = _output_file(outcome.argv)
    if outcome.code == 0 and not (out or (written and Path(written).is_file())):
        return "success with no output"
    return None


def _output_file(argv: tuple[str, ...]) -> str | None:
    """The last -o/--output value, unless it is `-` (stdout)."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-o", "--output")]
    return values[-1] if values and values[-1] != "-" else None


def _rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _forget_models() -> None:
    """Drop built models and simulation caches, so thousands of cases do not accumulate them."""
    from vramplan.build import clear_build_cache
    from vramplan.measure.activations import clear_caches

    clear_build_cache()
    clear_caches()


# --- the environment ----------------------------------------------------------------------------------------------


@dataclass
class FuzzEnvironment:
    """A scratch folder with the tiny configs, a loopback Hub, and placeholders to put in argv."""

    root: Path

    def materialise(self, argv: list[str], config_text: str | None = None) -> list[str]:
        """Replace TINY_VIT, TINY_DIR and OUT in argv with real paths (writing `config_text` to TINY_DIR)."""
        if config_text is not None:
            (self.root / "tiny" / "config.json").write_text(config_text, encoding="utf-8", errors="surrogatepass")
        for path in self.root.joinpath("out").glob("*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        mapping = {"TINY_VIT": str(self.root / "vit"), "TINY_DIR": str(self.root / "tiny"),
                   "OUT": str(self.root / "out" / "result.txt")}
        return [_substitute(arg, mapping) for arg in argv]


def _substitute(arg: str, mapping: dict[str, str]) -> str:
    for name, value in mapping.items():
        arg = arg.replace(name, value)
    return arg


@contextmanager
def fuzz_environment() -> Iterator[FuzzEnvironment]:
    """Scratch folder, empty loopback Hub, no token, COLUMNS=100; everything restored afterwards."""
    import pytest

    from vramplan.testing import LoopbackHub, use_loopback_hub

    root = Path(tempfile.mkdtemp(prefix="vramplan-fuzz-"))
    try:
        for name, config in (("vit", TINY_VIT), ("tiny", TINY_BERT)):
            (root / name).mkdir()
            (root / name / "config.json").write_text(json.dumps(config), encoding="utf-8")
        (root / "out").mkdir()
        with LoopbackHub() as hub, pytest.MonkeyPatch.context() as monkeypatch:
            use_loopback_hub(monkeypatch, hub, root / "hf")
            monkeypatch.setenv("COLUMNS", "100")
            monkeypatch.chdir(root / "out")
            yield FuzzEnvironment(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def case_for(kind: str, data, env: FuzzEnvironment) -> list[str]:
    """Draw one case of `kind` from hypothesis `data` (st.data()) and make its argv."""
    if kind == "config":
        text = data.draw(config_texts(), label="config.json")
        fmt = data.draw(st.sampled_from(("table", "json", "csv", "markdown")), label="format")
        extra = data.draw(st.sampled_from(((), (), ("--mode", "inference", "--image-size", "32"),
                                           ("--mode", "inference", "--seq-len", "16"))), label="extra")
        return env.materialise(["estimate", "TINY_DIR", "--format", fmt, *extra], text)
    strategy = cli_arguments() if kind == "cli" else reference_arguments()
    return env.materialise(data.draw(strategy, label=kind))
