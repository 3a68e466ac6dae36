"""bench/published.py: vramplan against GPU figures others published (docs/accuracy-published.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "published.py"


def _bench():
    spec = importlib.util.spec_from_file_location("published_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_published_cases_stay_within_the_explained_error():
    """Each case's error is what its stated differences explain: within 10%, and max allocated not below."""
    bench = _bench()
    results = [bench.simulate(case) for case in bench.CASES]
    for r in results:
        assert 0 <= r.allocated_error < 10, (r.case.name, r.allocated_error)
    text = bench.render(results)
    assert "optimum-benchmark" in text and "Median error" in text
    assert (SCRIPT.parents[1] / "docs" / "accuracy-published.md").read_text() == text
