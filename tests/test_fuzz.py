"""A short hypothesis run over configs, CLI arguments and references (the long one: bench/fuzz.py).

Property (vramplan.testing.fuzz.check_case): a result or one line per fault, with a documented exit code, no
traceback, within a time and a memory limit.
"""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vramplan.testing.fuzz import KINDS, PropertyViolation, case_for, check_case, fuzz_environment  # noqa: E402

EXAMPLES = {"config": 30, "cli": 40, "reference": 30}


@pytest.fixture(scope="module")
def env():
    from vramplan.cli import preload_libraries

    preload_libraries()
    with fuzz_environment() as env:
        yield env


@pytest.mark.parametrize("kind", KINDS)
def test_fuzz(env, kind):
    @settings(max_examples=EXAMPLES[kind], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        check_case(case_for(kind, data, env), time_limit=30)

    run()


def test_the_property_catches_a_multi_line_failure(env):
    """The checker is not vacuous: a traceback-free but two-line failure breaks it."""
    from vramplan.testing.fuzz import Outcome, _problem

    two_lines = Outcome(("estimate", "x"), 1, 0.1, 0, "vramplan: x: failed\n  and more\n")
    assert _problem(two_lines, "", 30, 1 << 30) is not None
    with pytest.raises(PropertyViolation):
        check_case(["estimate", "x", "--timeout", "2"], time_limit=0)  # over the time limit
