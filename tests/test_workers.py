"""Models measured in worker processes (vramplan.workers): the same results, in order; nothing lost or left behind.

The work functions below are module-level so that a worker (a fresh interpreter with this process's
sys.path) can unpickle them: it imports this test module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vramplan.errors import UsageError
from vramplan.measure.training_cases import TrainingRequest
from vramplan.pipeline import estimate
from vramplan.report.json_report import render_json
from vramplan.spec import DeferredSpec
from vramplan.workers import cores, measure_each, resolve_jobs

PARENT = int(os.environ.setdefault("VRAMPLAN_TEST_WORKERS_PARENT", str(os.getpid())))  # a worker inherits it
TINY_VIT = {"model_type": "dinov3_vit", "hidden_size": 96, "intermediate_size": 384, "num_attention_heads": 3,
            "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16}


def where(item):
    """The item and which process measured it; in a worker, item "die" ends the worker without a reply (as the
    out-of-memory killer would) and item "stuck" returns what cannot be pickled back."""
    if os.getpid() != PARENT and item == "die":
        os._exit(3)
    if os.getpid() != PARENT and item == "stuck":
        return lambda: item
    return item, os.getpid()


def test_workers_measure_in_order_and_nothing_is_lost_or_left_running():
    local = lambda x: x  # noqa: E731  a lambda cannot be pickled: measured here
    items = [0, 1, local, "die", "stuck", 5, 6]
    results = measure_each(where, items, jobs=3, here_too=False)
    assert [item for item, _ in results] == items
    pids = [pid for _, pid in results]
    assert pids[2] == PARENT and pids[3] == PARENT and pids[4] == PARENT  # measured here after the worker failed
    assert PARENT not in pids[:2] + pids[5:] and len(set(pids[:2] + pids[5:])) <= 2  # the two workers
    found = subprocess.run(["pgrep", "-f", "-P", str(PARENT), "vramplan.workers import serve"],
                           capture_output=True, text=True)
    assert found.stdout == ""


def test_serial_run_calls_started_for_each_model_in_order():
    seen = []
    assert measure_each(where, ["a", "b"], jobs=1, started=lambda done, index: seen.append((done, index))) == [
        ("a", PARENT), ("b", PARENT)]
    assert seen == [(0, 0), (1, 1)]


def test_auto_uses_every_core_only_for_simulations_of_two_or_more_models():
    assert resolve_jobs("auto", 12, simulates=True) == min(cores(), 12)
    assert resolve_jobs("auto", 12, simulates=False) == 1
    assert resolve_jobs(None, 1, simulates=True) == 1
    assert resolve_jobs("3", 2, simulates=False) == 2  # never more processes than models
    assert resolve_jobs(4, 12, simulates=False) == 4
    for bad in ("0", "-1", "two", 0):
        with pytest.raises(UsageError, match="--jobs"):
            resolve_jobs(bad, 3, simulates=True)


def test_bad_jobs_is_a_usage_error(run_cli):
    for bad in ("none", "0", "-2"):
        result = run_cli("report", "--jobs", bad, "--mode", "train")
        assert result.code == 2 and result.out == ""
        assert "argument --jobs: a number of processes (1 or more) or auto" in result.err.splitlines()[-1]


def test_training_in_workers_gives_the_serial_json_byte_for_byte(write_config, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    models = [str(write_config(f"vit{n}", {**TINY_VIT, "num_hidden_layers": n})) for n in (1, 2, 3)]
    models.insert(1, "no-such-model-here")  # one bad model among them: the same error either way
    request = TrainingRequest(image_sizes=((64, 64),), batch_sizes=(1, 2), trains=("probe", "full"))
    serial = estimate(models, training=request, checkpoint=False, jobs=1)
    import vramplan.pipeline as pipeline

    real = pipeline.measure_each
    monkeypatch.setattr(pipeline, "measure_each", lambda *a, **k: real(*a, **{**k, "here_too": False}))
    shared = estimate(models, training=request, checkpoint=False, jobs=2)
    assert [m.status for m in shared.models] == ["ok", "error", "ok", "ok"]
    assert json.loads(render_json(shared)) == json.loads(render_json(serial))
    assert render_json(shared) == render_json(serial)


def test_a_deferred_spec_made_in_code_is_measured_here(write_config):
    from vramplan.sources import resolve_model
    from vramplan.spec import SourceOptions

    path = str(write_config("vit", TINY_VIT))
    deferred = DeferredSpec(name="made-here", make=lambda: resolve_model(path, SourceOptions()))
    run = estimate([path, deferred], training=TrainingRequest(image_sizes=((64, 64),)), checkpoint=False, jobs=2)
    assert [m.status for m in run.models] == ["ok", "ok"]
    assert run.models[0].training == run.models[1].training


@pytest.mark.skipif(sys.platform != "linux", reason="pgrep and sessions as on Linux")
def test_cli_jobs_2_and_jobs_1_print_the_same_report(write_config, tmp_path):
    models = [str(write_config(f"m{n}", {**TINY_VIT, "num_hidden_layers": n})) for n in (1, 2)]
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    outputs = []
    for jobs in ("1", "2"):
        done = subprocess.run([sys.executable, "-m", "vramplan.cli", "report", *models, "--mode", "train",
                               "--image-size", "64", "--format", "markdown", "--jobs", jobs],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and "m2" in outputs[0]


def test_models_that_build_the_same_module_go_to_one_process():
    items = ["a1", "b1", "a2", "c", "b2", "a3"]
    together = [item[0] if item != "c" else None for item in items]
    results = measure_each(where, items, jobs=3, here_too=False, together=together)
    pid = {item: p for item, p in results}
    assert [item for item, _ in results] == items
    assert pid["a1"] == pid["a2"] == pid["a3"] and pid["b1"] == pid["b2"]  # which worker took which key is a race


def test_the_dinov3_weights_of_one_architecture_share_a_build_key():
    from vramplan.pipeline import _build_key

    assert _build_key("dinov3-vitl16") == _build_key("facebook/dinov3-vitl16-pretrain-sat493m") is not None
    assert _build_key("dinov3-vitl16") != _build_key("dinov3-vits16")
    assert _build_key("./some/local/dir") is None


def test_the_board_keeps_a_key_for_the_process_that_took_it_and_returns_a_dead_workers_models():
    from vramplan.workers import HERE, _Board

    board = _Board(["a1", "b1", "a2", "c", "b2", "a3"], together=["a", "b", "a", None, "b", "a"])
    assert [board.next_for_worker("w1"), board.next_for_worker("w2"), board.next_for_here()] == [0, 1, 3]
    assert board.next_for_worker("w2") == 4 and board.next_for_worker("w2") is None  # b2 was kept for w2
    assert board.next_for_worker("w1") == 2  # a2 kept for w1
    board.give_back(2, "w1")  # w1 died measuring a2: a2 to this process, a3 (kept for w1) to anyone ...
    assert board.next_for_here() == 2 and board._kept[HERE] == [5]  # ... which is this process, taking a2
    assert board.next_for_worker("w2") is None and board.next_for_here() == 5
