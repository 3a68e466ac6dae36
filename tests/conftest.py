"""Shared fixtures: the seed report, golden files, and an in-process CLI runner."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from vramplan.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"


# The seed report (accelerate estimate-memory, once per DINOv3 backbone), kept in the repository: see data/README.md.
SEED_REPORT = Path(__file__).resolve().parent / "data" / "seed_000_dinov3_vram_report.txt"

# A factory module (`--factory gate.py:make`) whose forward reads a value: it cannot be simulated without data.
DATA_DEPENDENT = '''
import torch.nn as nn


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, 4)

    def forward(self, pixel_values):
        x = self.proj(pixel_values)
        if x.mean().item() > 0:  # data-dependent: cannot run without data
            x = x * 2
        return x


def make():
    return Gate()
'''


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* from current output")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def run_cli():
    """Run `vramplan ARGS...` in-process and capture exit code, stdout and stderr."""

    def _run(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
        return CliResult(code, out.getvalue(), err.getvalue())

    return _run


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """Compare text with tests/golden/NAME, or rewrite it with --update-golden."""

    def _check(name: str, text: str) -> None:
        path = GOLDEN / name
        if request.config.getoption("--update-golden"):
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), f"missing golden file {path}; run pytest --update-golden"
        assert text == path.read_text(encoding="utf-8")

    return _check


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config dict (or raw text) to tmp_path/NAME/config.json and return the directory."""

    def _write(name: str, config: dict | str) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        text = config if isinstance(config, str) else json.dumps(config)
        (directory / "config.json").write_text(text, encoding="utf-8")
        return directory

    return _write
