"""Progress: a rich bar on a terminal (checked under a real pseudo-terminal), silent in pipes, with -o, --quiet."""

from __future__ import annotations

import argparse
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vramplan.cli import show_progress

ROOT = Path(__file__).resolve().parent.parent


def run_in_terminal(*args: str, columns: int = 100) -> str:
    """Run `vramplan ARGS` with stdin, stdout and stderr on a new pseudo-terminal; return what it showed."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "TERM": "xterm-256color", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "vramplan.cli", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode("utf-8", errors="replace")


def test_a_multi_model_run_on_a_terminal_shows_progress():
    shown = run_in_terminal("estimate", "dinov3-vits16", "dinov3-convnext-tiny", "--mode", "inference",
                            "--image-size", "224,256")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert "\x1b[?25l" in shown and "━" in plain, shown[:2000]  # rich's live display and its bar
    # the models' count (0/2, 1/2, 2/2) and which model or case is under way, whichever frames were drawn
    assert re.search(r"\b[012]/2\b", plain) and re.search(r"model [12]/2|: case [12]/2", plain), plain[:2000]
    assert "\x1b[?25l" in shown  # rich hides the cursor while it draws
    assert shown.count("Memory Usage for loading") == 2  # then the output, as usual


def test_piped_output_has_no_progress(run_cli):
    result = run_cli("estimate", "dinov3-vits16", "dinov3-convnext-tiny")  # stdout and stderr are not terminals
    assert result.err == "" and "model 1/2" not in result.out


@pytest.mark.parametrize(("flags", "shown"), [
    ({}, True), ({"quiet": True}, False), ({"output": "out.txt"}, False), ({"output": "-"}, True),
])
def test_progress_only_for_a_person_at_a_terminal(monkeypatch, flags, shown):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setattr(sys, "stderr", Terminal())
    args = argparse.Namespace(**{"quiet": False, "output": None, **flags})
    assert show_progress(args) is shown
