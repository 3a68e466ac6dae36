"""One clean line per fault, usage errors before any work, output people can read (issue 8)."""

from __future__ import annotations

import json
import re

import pytest

from vramplan.testing import LoopbackHub, use_loopback_hub
from conftest import DATA_DEPENDENT

GOOD = "dinov3-vits16"


@pytest.fixture
def gate(tmp_path) -> str:
    (tmp_path / "gate.py").write_text(DATA_DEPENDENT)
    return f"{tmp_path / 'gate.py'}:make"


# --- one line per fault -----------------------------------------------------------------------------------------


def test_simulation_failure_is_on_stderr_once_and_a_compact_cell_in_the_table(run_cli, gate):
    result = run_cli("estimate", "--factory", gate, "--mode", "inference", "--image-size", "64,128")
    assert result.code == 1
    reason = "Could not simulate the forward pass"
    assert result.err.count(reason) == 1 and len(result.err.splitlines()) == 1
    assert result.out.count(reason) == 1  # the `Error:` line under the table, not in its rows
    assert result.out.count("error (see below)") == 2  # one compact cell per failed case
    ours = [line for line in result.out.splitlines() if not line.startswith(("Error:", "│", "┌", "├", "└"))]
    assert max(map(len, ours)) <= 100  # accelerate's box grows with its title (the factory's path): not ours


def test_report_summary_has_a_compact_status_cell(run_cli, write_config):
    bad = write_config("bad", {"model_type": "no_such_arch_xyz"})
    result = run_cli("report", GOOD, str(bad))
    summary = [line for line in result.out.splitlines() if line.startswith(str(bad) + " |")]
    assert summary == [f"{bad} | - | - | - | - | error (see below)"]
    assert result.err.count("no_such_arch_xyz") == 1


def test_debug_shows_the_traceback_of_a_simulation_failure(run_cli, gate):
    quiet = run_cli("estimate", "--factory", gate, "--mode", "inference", "--image-size", "64")
    assert "Traceback" not in quiet.err
    loud = run_cli("estimate", "--factory", gate, "--mode", "inference", "--image-size", "64", "--debug")
    assert "Traceback" in loud.err and "SimulationError" in loud.err


# --- usage errors, before any work ------------------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
        yield hub


@pytest.mark.parametrize(("flags", "says"), [
    (("--attn", "flash", "--device", "cpu"), "runs on CUDA only"),
    (("--attn", "flash", "--dtype", "float32"), "supports float16 and bfloat16 only"),
    (("--attn", "flash", "--dtype", "float32", "--device", "cpu"), "flash"),
    (("--batch-size", "1e22"), "--batch-size `1e22` is not a positive whole number"),
    (("--batch-size", "10000000000000000000000"), "is more than 1,048,576"),
    (("--image-size", "99999999"), "pixels a side"),
    (("--seq-len", "²"), "not a positive whole number"),
    (("--image-size", "1_0"), "is not a size"),
])
def test_conflicts_and_absurd_sizes_are_usage_errors_before_any_work(run_cli, hub, flags, says):
    result = run_cli("estimate", "acme/some-model", "--mode", "inference", *flags)
    assert result.code == 2
    assert result.err.startswith("vramplan: error: ") and says in result.err
    assert len(result.err.splitlines()) == 1 and "frame #" not in result.err and "Traceback" not in result.err
    assert hub.requests == []  # nothing was resolved: the Hub was never asked


def test_sweep_skips_impossible_cases_with_a_note(run_cli):
    result = run_cli("estimate", GOOD, "--mode", "inference", "--image-size", "224", "--attn", "sdpa,flash",
                     "--dtype", "float32,bfloat16", "--format", "json")
    assert result.code == 0
    cases = [(c["dtype"], c["attn"]) for c in result.json()["models"][0]["inference"]]
    assert cases == [("float32", "sdpa"), ("bfloat16", "sdpa"), ("bfloat16", "flash")]
    assert result.err.splitlines() == [
        "vramplan: note: skipped --attn flash with --dtype float32 --device cuda: "
        "flash attention (flash_attention_2) supports float16 and bfloat16 only"
    ]


def test_dtype_and_dtypes_cannot_be_confused(run_cli):
    # without --mode inference, --dtype names the weights rows, as --dtypes does
    same = run_cli("estimate", GOOD, "--dtype", "float16,int4", "--format", "json")
    assert same.code == 0 and list(same.json()["models"][0]["weights"]) == ["float16", "int4"]
    wrong = run_cli("estimate", GOOD, "--mode", "inference", "--dtypes", "bfloat16")
    assert wrong.code == 2 and "--dtype bfloat16" in wrong.err
    weights_only = run_cli("estimate", GOOD, "--dtype", "bfloat16")
    assert weights_only.code == 2 and "--mode inference" in weights_only.err
    both = run_cli("estimate", GOOD, "--dtype", "float16", "--dtypes", "int8")
    assert both.code == 2 and "give one of them" in both.err


def test_version(run_cli):
    result = run_cli("--version")
    assert result.code == 0 and re.fullmatch(r"vramplan \S+\n", result.out)


# --- -o ---------------------------------------------------------------------------------------------------------


def test_dash_output_means_stdout(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("estimate", GOOD, "--format", "json", "-o", "-")
    assert result.code == 0 and result.json()["models"][0]["status"] == "ok"
    assert list(tmp_path.iterdir()) == [] and result.err == ""


def test_output_file_gets_one_stderr_line_and_quiet_silences_it(run_cli, tmp_path):
    out = tmp_path / "run.json"
    result = run_cli("estimate", GOOD, "dinov3-vitb16", "--format", "json", "-o", str(out))
    assert result.out == "" and result.err == f"vramplan: wrote {out} (2 models, {out.stat().st_size:,} bytes)\n"
    assert json.loads(out.read_text())["models"][1]["status"] == "ok"
    assert run_cli("estimate", GOOD, "-o", str(out), "-q").err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no temporary left beside it


# --- readable output --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_list_fits_100_columns_and_follows_columns(run_cli, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    out = run_cli("list").out
    assert max(len(line) for line in out.splitlines()) <= min(columns, 100)
    assert (len(out.splitlines()) > 2 + 12) == (columns < 98)  # narrower than the table: long ids fold
    assert "25.1 GiB" in out  # ViT-7B's float32 weights, binary units said so


def test_inference_summary_of_a_four_size_sweep_fits_100_columns(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli("report", "dinov3-convnext-large", "dinov3-vits16plus", "--mode", "inference",
                     "--image-size", "224,512,1024,2048", "--batch-size", "1,8")
    lines = result.out.splitlines()
    summary = lines[: lines.index("Detailed command outputs")]
    assert max(map(len, summary)) <= 100
    header = next(line for line in summary if line.startswith("Model") and "batch" in line)
    assert header.split() == ["Model", "batch", "224px", "512px", "1024px", "2048px"]
    tables = [line for line in lines if not line.startswith(("Command:", "│", "┌", "├", "└"))]
    assert max(map(len, tables)) <= 100


def test_accelerate_tables_say_what_a_gb_is_and_what_largest_layer_means(run_cli, tmp_path):
    (tmp_path / "plain.py").write_text("import torch.nn as nn\n\ndef make():\n"
                                       "    return nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 256))\n")
    out = " ".join(run_cli("estimate", GOOD, "--factory", f"{tmp_path / 'plain.py'}:make").out.split(" "))
    out = out.replace("\n", " ")  # the notes wrap to the width
    assert "Note: 1 GB in accelerate's tables is 2^30 bytes" in out
    assert "Largest Layer: a whole block kept on one device (DINOv3ViTEmbeddings, DINOv3ViTLayer" in out
    assert "Largest Layer: a single module (the model names no _no_split_modules): 1" in out


def test_markdown_escapes_html_in_names(run_cli, write_config):
    evil = write_config("<img src=x onerror=alert(1)>", {"model_type": "no_such_arch_xyz"})
    out = run_cli("report", GOOD, str(evil), "--format", "markdown").out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out  # the summary cell
    for line in out.splitlines():  # raw, only inside code spans (which show it as text)
        outside_code = re.sub(r"(`+).*?\1", "", line)
        assert "<img" not in outside_code, line


def test_binary_bytes_round_up_to_three_figures():
    from vramplan.report.table import binary_bytes

    assert binary_bytes(86_386_240) == "82.4 MiB"  # 82.384...
    assert binary_bytes(1023) == "1023 B" and binary_bytes(1024) == "1.00 KiB"
    assert binary_bytes(1_067_450_368) == "1018 MiB"
    assert binary_bytes(14_033_805_640) == "13.1 GiB"  # 13.0700..., never shown under the size
    assert binary_bytes(2**30 + 1) == "1.01 GiB"


# --- hostile inputs the fuzzer met, pinned -------------------------------------------------------------------------


def test_a_name_with_control_characters_stays_one_stderr_line(run_cli):
    result = run_cli("estimate", "bad\nname\x1e")
    assert result.code == 1 and len(result.err.splitlines()) == 1
    assert result.err.startswith("vramplan: bad\\nname\\x1e: ")


def test_torch_cpp_frames_are_cut_from_a_reason():
    from vramplan.errors import one_line

    exc = RuntimeError('Overflow when unpacking long long Exception raised from THPUtils_unpackLong at x.h:79 '
                       "(most recent call first):\nframe #0: c10::Error::Error(c10::SourceLocation)")
    assert one_line(exc) == "Overflow when unpacking long long"


def test_library_warnings_do_not_surround_the_one_line(run_cli, write_config):
    odd = write_config("gpt2", {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "vocab_size": 100})
    result = run_cli("estimate", str(odd), "dinov3-vits16", "--format", "json")  # bos/eos 50256 > vocabulary
    assert result.code == 0 and result.err == ""


def test_huge_sizes_in_a_config_never_allocate(run_cli, write_config):
    from vramplan.testing.fuzz import _rss_bytes

    huge = write_config("huge", {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 500,
                                 "max_position_embeddings": 10**9})
    before = _rss_bytes()
    result = run_cli("estimate", str(huge), "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["models"][0]["weights"]["float32"]["total_bytes"] > 10**9 * 64 * 4  # the position table
    assert _rss_bytes() - before < 1 << 30  # its 8 GB position_ids buffer was never made


def test_layer_counts_beyond_any_model_are_refused(run_cli, write_config):
    deep = write_config("deep", {"model_type": "bert", "num_hidden_layers": 10**6, "hidden_size": 32,
                                 "num_attention_heads": 2, "intermediate_size": 64})
    result = run_cli("estimate", str(deep))
    assert result.code == 1 and "`num_hidden_layers` = 1000000: more than 10,000 layers" in result.err


def test_a_config_file_larger_than_any_config_is_refused(run_cli, tmp_path):
    big = tmp_path / "big" / "config.json"
    big.parent.mkdir()
    with big.open("wb") as handle:
        handle.truncate((64 << 20) + 1)  # sparse: no disk used
    result = run_cli("estimate", str(big))
    assert result.code == 1 and "is larger than 64 MiB" in result.err


def test_a_size_that_overflows_on_meta_is_not_retried_in_real_memory(run_cli, write_config):
    import time

    from vramplan.testing.fuzz import _rss_bytes

    wide = write_config("wide", {"model_type": "dinov3_vit", "hidden_size": 2**31, "intermediate_size": 64,
                                 "num_attention_heads": 2, "num_hidden_layers": 1, "patch_size": 16})
    before, start = _rss_bytes(), time.monotonic()
    result = run_cli("estimate", str(wide))
    assert result.code == 1 and "built on the meta device only" in result.err
    assert time.monotonic() - start < 30 and _rss_bytes() - before < 1 << 30  # was 100 s and 8 GB of LayerNorm ones
