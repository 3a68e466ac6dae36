"""`vramplan plan`: one simulated step, every strategy derived; JSON fields; --emit files the engines load."""

from __future__ import annotations

import json

import pytest

from vramplan.cli import main

MODEL = ["dinov3-vits16", "--gpus", "2", "--image-size", "224", "--batch-size", "2"]


@pytest.fixture(scope="module")
def planned():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["plan", *MODEL, "--strategy", "ddp,fsdp,zero2,zero3,zero3+optimizer,fsdp+params",
                     "--format", "json"])
    assert code == 0
    return json.loads(out.getvalue())["models"][0]["training"]


def test_json_has_the_multi_gpu_fields_and_they_add_up(planned):
    assert [(e["strategy"], e["offload"]) for e in planned] == [
        ("ddp", "none"), ("fsdp", "none"), ("zero2", "none"), ("zero3", "none"), ("zero3", "optimizer"),
        ("fsdp", "params")]
    for e in planned:
        assert (e["gpus"], e["nodes"], e["batch_size"], e["precision"]) == (2, 1, 2, "amp-bf16")
        parts = sum(e["per_gpu"][k] for k in ("parameter_bytes", "gradient_bytes", "optimizer_state_bytes",
                                              "buffer_bytes", "comm_bytes", "activation_bytes"))
        assert e["per_gpu_peak_bytes"] == parts
        assert e["per_gpu_device_bytes"] > e["per_gpu_peak_bytes"]  # the CUDA context at least
        assert (e["cpu_bytes_per_node"] > 0) == (e["offload"] != "none")


def test_strategies_order_as_they_shard(planned):
    by = {(e["strategy"], e["offload"]): e["per_gpu_peak_bytes"] for e in planned}
    assert by[("fsdp", "none")] < by[("ddp", "none")]
    assert by[("zero3", "optimizer")] < by[("zero3", "none")]
    assert by[("fsdp", "params")] < by[("fsdp", "none")]


def test_ddp_adds_its_bucket_copy_to_the_one_gpu_step(planned):
    ddp = planned[0]
    gpu = ddp["per_gpu"]
    assert gpu["comm_bytes"] == gpu["parameter_bytes"]  # every parameter trains, float32 buckets
    # the one-GPU step plus the bucket copy (within the allocator's rounding of the one-GPU figures)
    assert abs(ddp["per_gpu_peak_bytes"] - ddp["peak_allocated_bytes"] - gpu["comm_bytes"]) < 2 * 2**20


def test_emit_writes_configs_accelerate_loads(tmp_path, capsys):
    from accelerate.commands.config.config_args import load_config_from_file

    code = main(["plan", *MODEL, "--strategy", "fsdp,zero3+optimizer", "--emit", "accelerate", "-o", str(tmp_path)])
    assert code == 0
    fsdp = load_config_from_file(str(tmp_path / "fsdp" / "accelerate_config.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.num_processes == 2
    assert set(fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")) == {
        "DINOv3ViTEmbeddings", "DINOv3ViTLayer"}
    zero = json.loads((tmp_path / "zero3-offload-optimizer" / "ds_config.json").read_text())
    assert zero["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert zero["train_micro_batch_size_per_gpu"] == 2
    assert "Training `facebook/dinov3-vits16-pretrain-lvd1689m` across GPUs" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--strategy", "ddp", "--emit", "torchrun"], "--emit needs -o DIR"),
    (["--strategy", "ddp+params"], "--offload params is not offered by ddp"),
    (["--strategy", "tp"], "--strategy `tp` is not one of"),
    (["--gpus", "0"], "must be at least 1"),
])
def test_bad_flags_are_one_line(argv, message, capsys):
    assert main(["plan", "dinov3-vits16", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_a_bad_model_does_not_stop_the_others(capsys):
    code = main(["plan", "no-such-model-xyz", "dinov3-vits16", "--gpus", "2", "--strategy", "fsdp", "--format", "json"])
    assert code == 1
    models = json.loads(capsys.readouterr().out)["models"]
    assert models[0]["status"] == "error" and models[1]["status"] == "ok"
