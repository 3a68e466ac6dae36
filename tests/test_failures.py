"""One bad model never stops the others; every format carries the reason; exit codes."""

from __future__ import annotations

import csv
import io

import pytest

GOOD = "dinov3-vits16"


@pytest.fixture
def bad_models(write_config, tmp_path):
    return {
        "missing": str(tmp_path / "does-not-exist" / "config.json"),
        "malformed": str(write_config("malformed", '{"model_type": "bert", ')),
        "not-object": str(write_config("list", "[1, 2, 3]")),
        "unknown-type": str(write_config("unknown", {"model_type": "no_such_arch_xyz"})),
        "rejected": str(write_config("rejected", {"model_type": "bert", "hidden_size": "big"})),
        "no-config": str(tmp_path),  # a directory without config.json
    }


def test_each_bad_model_errors_and_the_good_ones_complete(run_cli, bad_models):
    result = run_cli("estimate", GOOD, *bad_models.values(), "dinov3-convnext-tiny", "--format", "json")
    assert result.code == 1
    models = result.json()["models"]
    assert [m["status"] for m in models] == ["ok"] + ["error"] * len(bad_models) + ["ok"]
    for entry in models[1:-1]:
        assert entry["weights"] is None
        assert entry["error"] and "\n" not in entry["error"]
    reasons = {name: models[i + 1]["error"] for i, name in enumerate(bad_models)}
    assert "no such file" in reasons["missing"]
    assert "not valid JSON" in reasons["malformed"]
    assert "not an object" in reasons["not-object"]
    assert "no_such_arch_xyz" in reasons["unknown-type"] and "--trust-remote-code" in reasons["unknown-type"]
    assert "transformers could not build" in reasons["rejected"]
    assert "no config.json" in reasons["no-config"]
    assert "Traceback" not in result.err


@pytest.mark.parametrize("fmt", ["table", "markdown", "json", "csv"])
def test_error_shows_in_every_estimate_format(run_cli, bad_models, fmt):
    result = run_cli("estimate", GOOD, bad_models["malformed"], "--format", fmt)
    assert result.code == 1
    assert "not valid JSON" in result.out
    good_total = "86386240" if fmt in ("json", "csv") else "82.38 MB"
    assert good_total in result.out  # the good model is still there


@pytest.mark.parametrize("fmt", ["text", "markdown", "json", "csv"])
def test_error_shows_in_every_report_format(run_cli, bad_models, fmt):
    result = run_cli("report", GOOD, bad_models["unknown-type"], "--format", fmt)
    assert result.code == 1
    assert "no_such_arch_xyz" in result.out
    if fmt in ("text", "markdown"):
        assert "error" in result.out and "Model count: 2" in result.out


def test_unknown_reference_names_catalogue_and_path_option(run_cli):
    result = run_cli("estimate", "not a model!")
    assert result.code == 1
    assert "vramplan list" in result.out and "config.json" in result.out and "Hub id" in result.out


def test_traceback_only_with_debug(run_cli, bad_models):
    quiet = run_cli("estimate", bad_models["rejected"])
    assert quiet.code == 1 and "Traceback" not in quiet.err
    loud = run_cli("estimate", bad_models["rejected"], "--debug")
    assert loud.code == 1 and "Traceback" in loud.err


@pytest.mark.parametrize(
    "args",
    [
        ("estimate",),  # no model
        ("estimate", GOOD, "--dtypes", "float64"),
        ("estimate", GOOD, "--format", "yaml"),
        ("report", "--format", "table"),
        ("no-such-command",),
        (),
    ],
)
def test_usage_errors_exit_2(run_cli, args):
    assert run_cli(*args).code == 2


@pytest.mark.parametrize("args, line", [
    (("estimat",), "vramplan: error: argument COMMAND: invalid choice: 'estimat' (choose from 'estimate', 'report', "
                   "'plan', 'list', 'gpus', 'fit') (see `vramplan --help`)"),
    (("estimate", GOOD, "--mode", "foo"), "vramplan estimate: error: argument --mode: invalid choice: 'foo' (choose "
                                          "from 'weights', 'inference', 'train') (see `vramplan estimate --help`)"),
    (("fit", GOOD, "--bogus", "1"), "vramplan fit: error: unrecognized arguments: --bogus 1 "
                                    "(see `vramplan fit --help`)"),
    (("report", "--headroom"), "vramplan report: error: argument --headroom: expected one argument "
                               "(see `vramplan report --help`)"),
])
def test_an_argparse_usage_error_is_one_line_naming_the_subcommands_help(run_cli, args, line):
    """Not argparse's usage block (30 lines for `estimate`): the one line, and where the options are listed."""
    result = run_cli(*args)
    assert (result.code, result.err, result.out) == (2, line + "\n", "")


def test_unwritable_output_is_a_usage_error(run_cli, tmp_path):
    result = run_cli("estimate", GOOD, "-o", str(tmp_path / "no" / "such" / "dir" / "out.txt"))
    assert result.code == 2
    assert result.err.startswith("vramplan: error: Cannot write") and "Traceback" not in result.err


def test_all_ok_exits_0(run_cli):
    assert run_cli("estimate", GOOD, "dinov3-vitb16").code == 0


def test_csv_failed_model_keeps_a_row_per_dtype(run_cli, bad_models):
    result = run_cli("estimate", bad_models["missing"], "--format", "csv", "--dtypes", "float32", "int4")
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [r["dtype"] for r in rows] == ["float32", "int4"]
    assert all(r["status"] == "error" and r["total_bytes"] == "" for r in rows)
