"""`vramplan report`, offline, reproduces seed 000 (accelerate's figures for the 12 DINOv3 backbones)."""

from __future__ import annotations

import re

import pytest

from conftest import SEED_REPORT

BOX_CHARS = "┌│├└"


def is_box_line(line: str) -> bool:
    return bool(line) and line[0] in BOX_CHARS


def seed_summary_rows() -> list[str]:
    lines = SEED_REPORT.read_text(encoding="utf-8").splitlines()
    start = lines.index("Model | float32 | float16 | int8 | int4 | status") + 2
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line)
    return rows


def seed_boxes() -> dict[str, list[str]]:
    """Each model's boxed table in the seed, keyed by model id."""
    text = SEED_REPORT.read_text(encoding="utf-8")
    boxes = {}
    parts = re.split(r"^===== (.+?) =====$", text, flags=re.M)
    for model, body in zip(parts[1::2], parts[2::2]):
        boxes[model] = [line for line in body.splitlines() if is_box_line(line)]
    return boxes


@pytest.fixture(scope="module")
def report_text(tmp_path_factory) -> str:
    from vramplan.cli import main

    out = tmp_path_factory.mktemp("report") / "report.txt"
    assert main(["report", "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def test_seed_has_what_we_compare():
    assert len(seed_summary_rows()) == 12
    boxes = seed_boxes()
    assert len(boxes) == 12
    # top, title, rule, header, rule, 4 dtype rows, bottom
    assert all(len(box) == 10 for box in boxes.values())


def test_all_12_summary_rows_match(report_text: str):
    ours = report_text.splitlines()
    for row in seed_summary_rows():
        assert row in ours


def test_all_48_detail_rows_and_their_boxes_match(report_text: str):
    ours = report_text.splitlines()
    detail_rows = 0
    for model, box in seed_boxes().items():
        start = ours.index(f"===== {model} =====")
        our_box = [line for line in ours[start + 1 : start + 14] if is_box_line(line)]
        assert our_box == box, model
        detail_rows += sum(1 for line in box if re.match(r"│\s*(float32|float16|int8|int4)\s*│", line))
    assert detail_rows == 48


def test_report_layout_and_order(report_text: str):
    lines = report_text.splitlines()
    assert lines[0] == "DINOv3 VRAM Requirements (vramplan estimate)"
    assert re.fullmatch(r"Generated: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", lines[1])
    assert lines[2] == "Model count: 12"
    summary = lines[lines.index("Summary (Total Size to load weights)") + 3 : lines.index("Summary (Total Size to load weights)") + 15]
    assert summary == seed_summary_rows()  # same rows, same order
    assert "Command: vramplan estimate facebook/dinov3-vits16-pretrain-lvd1689m" in lines


def test_report_golden(run_cli, golden, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1770000000")
    result = run_cli("report")
    assert result.code == 0
    golden("report_dinov3.txt", result.out)


def test_markdown_report_golden(run_cli, golden, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1770000000")
    result = run_cli("report", "--format", "markdown")
    assert result.code == 0
    golden("report_dinov3.md", result.out)
