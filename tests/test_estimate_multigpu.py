"""`vramplan estimate|report --mode train --gpus N`: the issue's command, the same plans as `vramplan plan`,
per-GPU and per-node figures in every format, and the configs --emit writes loaded by the engines' parsers."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest

from vramplan.cli import main

ISSUE = ["dinov3-vit7b16", "--mode", "train", "--gpus", "8", "--strategy", "fsdp,zero3", "--precision", "amp-bf16",
         "--image-size", "512", "--batch-size", "4"]
SMALL = ["dinov3-vits16", "--mode", "train", "--image-size", "224", "--batch-size", "2"]


def _stdout(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def issue_json():
    """The issue's exact command as JSON, and `vramplan plan` of the same step."""
    estimated = json.loads(_stdout(["estimate", *ISSUE, "--format", "json"]))["models"][0]
    planned = json.loads(_stdout(["plan", "dinov3-vit7b16", "--gpus", "8", "--strategy", "fsdp,zero3",
                                  "--precision", "amp-bf16", "--image-size", "512", "--batch-size", "4",
                                  "--format", "json"]))["models"][0]
    return estimated, planned


def test_issue_command_gives_per_gpu_fields_equal_to_vramplan_plan(issue_json):
    estimated, planned = issue_json
    cases = estimated["training"]
    assert [(c["strategy"], c["offload"], c["gpus"], c["nodes"]) for c in cases] == [
        ("fsdp", "none", 8, 1), ("zero3", "none", 8, 1)]
    for case, plan in zip(cases, planned["training"], strict=True):
        assert case["image_size"] == [512, 512] and case["batch_size"] == 4
        assert case["per_gpu_peak_bytes"] == plan["per_gpu_peak_bytes"]
        assert case["cpu_bytes_per_node"] == plan["cpu_bytes_per_node"] == 0
        assert case["per_gpu"] == plan["per_gpu"]
        assert case["peak_allocated_bytes"] == plan["peak_allocated_bytes"]  # the one-GPU step, kept beside
    fsdp, zero3 = cases
    # sharded over 8 GPUs, the 7B step fits where one GPU's (125 GiB) does not
    assert fsdp["per_gpu_peak_bytes"] < fsdp["peak_allocated_bytes"] / 2
    assert fsdp["per_gpu_peak_bytes"] == sum(fsdp["per_gpu"][k] for k in (
        "parameter_bytes", "buffer_bytes", "gradient_bytes", "optimizer_state_bytes", "comm_bytes",
        "activation_bytes"))


def test_issue_command_text_shows_the_busiest_rank_per_strategy(issue_json, capsys):
    from vramplan.report.table import binary_bytes

    assert main(["estimate", *ISSUE]) == 0
    out = capsys.readouterr().out
    assert "Training `facebook/dinov3-vit7b16-pretrain-lvd1689m` 512px b4 full on 8 GPUs per node" in out
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.split() == ["fsdp", "zero3"]))
    rows = {line[:10].strip(): line[10:].split("  ") for line in lines[header + 2:header + 11]}
    cells = {k: [c.strip() for c in v if c.strip()] for k, v in rows.items()}
    fsdp, zero3 = issue_json[0]["training"]
    assert cells["per GPU"] == [binary_bytes(fsdp["per_gpu_peak_bytes"]), binary_bytes(zero3["per_gpu_peak_bytes"])]
    assert cells["on card"] == [binary_bytes(fsdp["per_gpu_device_bytes"]),
                                binary_bytes(zero3["per_gpu_device_bytes"])]
    assert cells["CPU/node"] == ["-", "-"] and cells["peak in"] == ["bwd", "bwd"]


def test_emit_writes_every_engine_and_the_engines_load_them(tmp_path, monkeypatch, capsys):
    from accelerate import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.commands.config.config_args import load_config_from_file
    from test_emit import _launcher_env

    argv = ["estimate", *SMALL, "--gpus", "4", "--nodes", "2", "--strategy", "fsdp,zero3+optimizer",
            "--emit", "accelerate,deepspeed,torchrun", "-o", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "on 4 GPUs per node x 2 nodes, busiest rank" in " ".join(captured.out.split())  # report: stdout
    assert f"wrote {tmp_path}/zero3-offload-optimizer/ds_config.json" in captured.err
    assert "fsdp: nothing for --emit deepspeed" in captured.err
    assert sorted(p.name for p in (tmp_path / "fsdp").iterdir()) == [
        "accelerate_config.yaml", "launch-accelerate.sh", "launch-torchrun.sh"]
    fsdp = load_config_from_file(str(tmp_path / "fsdp" / "accelerate_config.yaml"))
    assert (fsdp.distributed_type, fsdp.num_processes, fsdp.num_machines, fsdp.mixed_precision) == (
        "FSDP", 8, 2, "bf16")
    with monkeypatch.context() as m:
        _, _, env = _launcher_env(tmp_path / "fsdp" / "accelerate_config.yaml", m)
        for key, value in env.items():
            m.setenv(key, value)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2
        assert set(plugin.transformer_cls_names_to_wrap) == {"DINOv3ViTEmbeddings", "DINOv3ViTLayer"}
    zero = tmp_path / "zero3-offload-optimizer"
    args, _, env = _launcher_env(zero / "accelerate_config.yaml", monkeypatch)
    assert args.use_deepspeed and args.num_processes == 8
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    assert (plugin.zero_stage, plugin.offload_optimizer_device, plugin.offload_param_device) == (3, "cpu", "none")
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 2
    assert (zero / "launch-deepspeed.sh").read_text().splitlines()[1] == (
        "deepspeed --num_gpus 4 --num_nodes 2 --hostfile hostfile train.py --deepspeed ds_config.json")
    assert "--nnodes 2 --nproc-per-node 4" in (zero / "launch-torchrun.sh").read_text()


def test_emitted_deepspeed_json_loads_in_deepspeeds_config_class(tmp_path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    argv = ["estimate", *SMALL, "--gpus", "2", "--strategy", "zero2", "--offload", "optimizer", "--grad-accum", "3",
            "--precision", "fp32", "--emit", "deepspeed", "-o", str(tmp_path), "-q"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(argv) == 0
    assert err.getvalue() == ""  # -q: no `wrote` lines
    config = DeepSpeedConfig(str(tmp_path / "zero2-offload-optimizer" / "ds_config.json"))
    assert (config.train_micro_batch_size_per_gpu, config.gradient_accumulation_steps) == (2, 3)
    assert config.zero_config.stage == 2 and config.zero_config.offload_optimizer.device == "cpu"
    assert not config.float16_config.enabled and not config.bfloat16_config.enabled  # the case: fp32


@pytest.fixture(scope="module")
def offloaded():
    """Two nodes, offload by flag and by suffix, in JSON, and the same plans from `vramplan plan`."""
    flags = ["--gpus", "2", "--nodes", "2", "--strategy", "ddp,zero3+params,fsdp", "--offload", "none"]
    estimated = json.loads(_stdout(["estimate", *SMALL, *flags, "--format", "json"]))["models"][0]["training"]
    planned = json.loads(_stdout(["plan", "dinov3-vits16", "--image-size", "224", "--batch-size", "2", *flags,
                                  "--format", "json"]))["models"][0]["training"]
    return estimated, planned


def test_nodes_and_offload_follow_the_flags_and_equal_plan(offloaded):
    estimated, planned = offloaded
    assert [(e["strategy"], e["offload"], e["gpus"], e["nodes"]) for e in estimated] == [
        ("ddp", "none", 2, 2), ("zero3", "params", 2, 2), ("fsdp", "none", 2, 2)]
    for e, p in zip(estimated, planned, strict=True):
        assert (e["per_gpu_peak_bytes"], e["cpu_bytes_per_node"]) == (p["per_gpu_peak_bytes"], p["cpu_bytes_per_node"])
    assert estimated[1]["cpu_bytes_per_node"] > 0 and estimated[0]["cpu_bytes_per_node"] == 0


def test_report_csv_and_markdown_carry_the_per_gpu_figures():
    flags = ["--gpus", "2", "--strategy", "ddp,zero2+optimizer"]
    rows = list(csv.DictReader(io.StringIO(_stdout(["report", *SMALL, *flags, "--format", "csv"]))))
    assert [(r["strategy"], r["offload"], r["gpus"], r["nodes"]) for r in rows] == [
        ("ddp", "none", "2", "1"), ("zero2", "optimizer", "2", "1")]
    data = json.loads(_stdout(["report", *SMALL, *flags, "--format", "json"]))["models"][0]["training"]
    for row, entry in zip(rows, data, strict=True):
        assert int(row["per_gpu_peak_bytes"]) == entry["per_gpu_peak_bytes"]
        assert int(row["cpu_bytes_per_node"]) == entry["cpu_bytes_per_node"]
        assert int(row["peak_allocated_bytes"]) == entry["peak_allocated_bytes"]
    assert int(rows[1]["cpu_bytes_per_node"]) > 0
    markdown = _stdout(["report", *SMALL, *flags, "--format", "markdown"])
    assert "on 2 GPUs per node, busiest rank:" in markdown
    assert "--trains full --gpus 2 --strategy ddp,zero2+optimizer`" in markdown  # the command that asks again
    assert "|  | ddp | zero2+optimizer |" in markdown
    from vramplan.report.table import binary_bytes

    per_gpu = " | ".join(binary_bytes(e["per_gpu_peak_bytes"]) for e in data)
    assert f"| per GPU | {per_gpu} |" in markdown
    assert f"| CPU/node | - | {binary_bytes(data[1]['cpu_bytes_per_node'])} |" in markdown


def test_multi_gpu_inference_cases_have_cpu_bytes_per_node():
    out = _stdout(["estimate", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--gpus", "2",
                   "--memory", "80GB", "--format", "json"])
    case = json.loads(out)["models"][0]["inference"][0]
    assert (case["gpus"], case["nodes"], case["strategy"], case["offload"]) == (2, 1, "device_map", "none")
    assert case["cpu_bytes_per_node"] == 0 and case["per_gpu_peak_bytes"] > 0
    rows = list(csv.DictReader(io.StringIO(_stdout(["estimate", "dinov3-vits16", "--mode", "inference",
                                                    "--image-size", "224", "--gpus", "2", "--memory", "80GB",
                                                    "--format", "csv"]))))
    assert [(r["gpus"], r["strategy"], int(r["per_gpu_peak_bytes"]), int(r["cpu_bytes_per_node"])) for r in rows] == [
        ("2", "device_map", case["per_gpu_peak_bytes"], 0)]


@pytest.mark.parametrize("argv,message", [
    (["--mode", "train", "--strategy", "fsdp"], "--strategy need --gpus N"),
    (["--mode", "train", "--nodes", "2", "--offload", "optimizer"], "--nodes, --offload need --gpus N"),
    (["--mode", "inference", "--gpus", "2", "--strategy", "fsdp"], "--strategy need --mode train --gpus N"),
    (["--mode", "weights", "--gpus", "2"], "--gpus needs --mode inference or --mode train"),
    (["--mode", "train", "--gpus", "2", "--strategy", "ddp+params"], "--offload params is not offered by ddp"),
    (["--mode", "train", "--gpus", "2", "--strategy", "tp"], "--strategy `tp` is not one of"),
    (["--mode", "train", "--gpus", "2", "--nodes", "0"], "must be at least 1"),
    (["--mode", "train", "--gpus", "2", "--emit", "accelerate"], "--emit needs -o DIR"),
    (["--mode", "train", "--gpus", "2", "--emit", "slurm", "-o", "x"], "--emit `slurm` is not one of"),
    (["--mode", "train", "--gpus", "2", "--batch-size", "1,2", "--emit", "torchrun", "-o", "x"],
     "give one --batch-size and one --precision"),
])
def test_bad_combinations_are_one_line(argv, message, capsys):
    assert main(["estimate", "dinov3-vits16", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
