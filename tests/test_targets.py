"""GPU targets: the catalogue, `vramplan gpus`, and the card flowing into the simulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramplan.build import build_model
from vramplan.errors import SimulationError, UsageError
from vramplan.measure import overheads
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.plan.gpus import default_gpu, find_gpu, gpu_catalogue, memory_target, parse_memory
from vramplan.spec import ModelSpec

CATALOG = Path(__file__).resolve().parents[1] / "src" / "vramplan" / "catalog" / "dinov3"
MiB = 1024 * 1024
REQUIRED = ("rtx3060", "rtx3090", "rtx4090", "rtx5090", "rtx-a6000", "l4", "l40s", "t4", "v100-16gb", "v100-32gb",
            "a10g", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "mi250x", "mi300x")


@pytest.fixture(scope="module")
def vit_s():
    config = json.loads((CATALOG / "dinov3-vits16-pretrain-lvd1689m.json").read_text())
    return build_model(ModelSpec(reference="dinov3-vits16", model_id="dinov3-vits16", library="transformers",
                                 source="test", config=config))


def _case(gpu: str | None, size: int = 1024, batch: int = 8, dtype: str = "float16", attn: str = "sdpa"):
    return InferenceCase(batch_size=batch, dtype=dtype, attn=attn, image_size=(size, size),
                         gpu=find_gpu(gpu) if gpu else None)


def test_catalogue_has_every_card_the_issue_names_with_driver_memory():
    names = [g.name for g in gpu_catalogue()]
    assert set(REQUIRED) <= set(names) and len(names) == len(set(names))
    for gpu in gpu_catalogue():
        assert gpu.name == gpu.name.lower() and gpu.source and gpu.sm_count > 0
    # what nvidia-smi prints, not the marketing number: an "80GB" H100 reports 81559 MiB, a "24GB" 4090 24564 MiB
    assert find_gpu("h100-sxm").memory_bytes == 81559 * MiB
    assert find_gpu("rtx4090").memory_bytes == 24564 * MiB
    assert find_gpu("t4").memory_bytes == 15360 * MiB


def test_aliases_and_unknown_names():
    assert find_gpu("RTX 4090").name == find_gpu("rtx-4090").name == "rtx4090"
    assert find_gpu("Tesla T4").name == "t4"
    assert find_gpu("A100").name == "a100-80gb"
    with pytest.raises(UsageError, match="not in the catalogue"):
        find_gpu("rtx9999")


def test_memory_sizes():
    assert parse_memory("24GiB") == 24 * 2**30
    assert parse_memory("24 GB") == 24 * 10**9
    assert parse_memory("80000MiB") == 80000 * MiB
    assert memory_target("24GiB").memory_bytes == 24 * 2**30
    for bad in ("24 parsecs", "-3GB", "GB", ""):
        with pytest.raises(UsageError):
            parse_memory(bad)


def test_gpus_command_json(run_cli):
    result = run_cli("gpus", "--format", "json")
    assert result.code == 0, result.err
    gpus = result.json()["gpus"]
    assert {g["name"] for g in gpus} >= set(REQUIRED)
    assert set(gpus[0]) == {"name", "aliases", "memory_bytes", "vendor", "compute_capability", "sm_count", "bf16", "fp8"}
    t4 = next(g for g in gpus if g["name"] == "t4")
    assert t4["bf16"] is False and t4["compute_capability"] == "7.5" and t4["sm_count"] == 40


def test_gpus_command_table(run_cli):
    result = run_cli("gpus")
    assert result.code == 0
    assert "h100-sxm" in result.out and "79.65 GB" in result.out


def test_workspaces_follow_pytorch_per_architecture():
    # CublasHandlePool.cpp: 32 MiB on sm90/sm100/sm120, :4096:2:16:8 elsewhere; hipBLAS 32 MiB, 128 MiB on gfx94x.
    assert overheads.cublas_workspace_bytes(find_gpu("h100-sxm")) == 32 * MiB
    assert overheads.cublas_workspace_bytes(find_gpu("b200")) == 32 * MiB
    assert overheads.cublas_workspace_bytes(find_gpu("rtx5090")) == 32 * MiB
    for name in ("t4", "v100-16gb", "a100-80gb", "rtx4090", "a10g"):
        assert overheads.cublas_workspace_bytes(find_gpu(name)) == 8 * MiB + 128 * 1024
    assert overheads.cublas_workspace_bytes(find_gpu("mi300x")) == 128 * MiB
    assert overheads.cublas_workspace_bytes(find_gpu("mi250x")) == 32 * MiB
    assert overheads.cublaslt_workspace_bytes(find_gpu("a100-80gb")) == 1 * MiB


def test_context_estimate_is_the_h100_figure_on_the_h100_and_scales_with_resident_threads():
    assert overheads.cuda_context_bytes(default_gpu()) == overheads.CUDA_CONTEXT_BYTES
    t4, a100 = overheads.cuda_context_bytes(find_gpu("t4")), overheads.cuda_context_bytes(find_gpu("a100-80gb"))
    assert t4 == overheads.CONTEXT_FIXED_BYTES + 40 * 1024 * 1024  # 40 SMs x 1024 threads x 1 KiB
    assert t4 < a100 < overheads.CUDA_CONTEXT_BYTES


def test_t4_and_h100_differ_where_the_hardware_differs(vit_s):
    t4 = measure_inference(vit_s, _case("t4"), reference="s")
    h100 = measure_inference(vit_s, _case("h100-sxm"), reference="s")
    # attention kernel: no FlashAttention below sm80, so SDPA runs memory-efficient attention on a T4
    assert (t4.attention_kernel, h100.attention_kernel) == ("efficient", "flash")
    # same model, same tensors: the parameters match, and the workspaces do not
    assert t4.parameter_bytes == h100.parameter_bytes
    assert dict(t4.overheads)["CUDA context"] < dict(h100.overheads)["CUDA context"]
    # cuBLAS workspace: 32 MiB on Hopper, 8.125 MiB on Turing; both are held as Temp at the peak
    assert h100.temp_bytes - t4.temp_bytes >= 32 * MiB - (8 * MiB + 128 * 1024) - 4 * MiB
    assert t4.peak_device_bytes != h100.peak_device_bytes


def test_default_target_is_the_h100(vit_s):
    explicit = measure_inference(vit_s, _case("h100-sxm"), reference="s")
    default = measure_inference(vit_s, _case(None), reference="s")
    assert default.peak_device_bytes == explicit.peak_device_bytes
    assert "gpu" not in default.as_json() and explicit.as_json()["gpu"] == "h100-sxm"


def test_flash_split_heuristic_sees_the_cards_sms(vit_s):
    # batch 1 at 224 px: 6 heads x 5 query blocks = 30 blocks, below 0.8 x 2 x SMs on both cards, so
    # FlashAttention splits the keys; with fewer SMs (A10G: 80) it picks fewer splits -> smaller accumulators.
    a10g = measure_inference(vit_s, _case("a10g", 224, 1), reference="s")
    a100 = measure_inference(vit_s, _case("a100-80gb", 224, 1), reference="s")
    assert a10g.attention_kernel == a100.attention_kernel == "flash"
    from vramplan.measure.activations import _num_splits

    assert _num_splits(30, 80 * 2, 1, 128) == _num_splits(30, 108 * 2, 1, 128)  # one key block: no split either way
    big_a10g = _num_splits(6 * 17, 80 * 2, 17, 128)
    big_a100 = _num_splits(6 * 17, 108 * 2, 17, 128)
    assert big_a10g != big_a100


def test_bf16_is_a_usage_error_on_cards_without_it():
    with pytest.raises(UsageError, match="no bfloat16"):
        _case("t4", dtype="bfloat16")
    with pytest.raises(UsageError, match="no bfloat16"):
        _case("v100-32gb", dtype="bfloat16")
    _case("a100-80gb", dtype="bfloat16")  # fine


def test_flash_attention_2_refused_below_sm80(vit_s):
    with pytest.raises(SimulationError, match="does not run on NVIDIA Tesla T4"):
        measure_inference(vit_s, _case("t4", attn="flash"), reference="s")


def test_cli_gpu_flag_names_the_card_and_defaults_to_float16_without_bf16(run_cli):
    result = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--gpu", "t4",
                     "--format", "json")
    assert result.code == 0, result.err
    (case,) = result.json()["models"][0]["inference"]
    assert case["gpu"] == "t4" and case["dtype"] == "float16"
    table = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--image-size", "224")
    # the default target is named in the title (the dtype follows it; the title wraps to the width)
    assert "(simulated h100-sxm," in " ".join(table.out.split())
    named = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--gpu", "l4")
    assert "(simulated l4," in " ".join(named.out.split())


def test_cli_bf16_on_t4_is_one_line_and_exit_2(run_cli):
    result = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--gpu", "t4", "--dtype", "bfloat16")
    assert result.code == 2
    assert result.err.strip() == "vramplan: error: NVIDIA Tesla T4 has no bfloat16: use --dtype float16 or float32"


def test_cli_unknown_gpu_and_bad_memory(run_cli):
    unknown = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--gpu", "gtx480")
    assert unknown.code == 2 and "GPU `gtx480` is not in the catalogue" in unknown.err
    assert "Traceback" not in unknown.err
    memory = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--memory", "lots")
    assert memory.code == 2 and "--memory `lots` is not a size" in memory.err
    cpu = run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--gpu", "t4", "--device", "cpu")
    assert cpu.code == 2 and "drop --device cpu" in cpu.err
