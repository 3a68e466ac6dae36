"""Any config builds in bounded memory and time: the largest real configs, absurd ones refused.

The three big configs are the real config.json values of deepseek-ai/DeepSeek-V3,
meta-llama/Llama-3.1-405B and mistralai/Mixtral-8x22B-v0.1 (written here: no test reaches the Hub).
Their parameter counts are checked against closed-form counts written from the architectures,
so a build that drops or doubles a tensor fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch.nn as nn

from vramplan import build_checks
from vramplan import build
from vramplan.build import build_model
from vramplan.build_checks import BuildBudget, check_config
from vramplan.errors import BuildLimitError, ConfigError
from vramplan.spec import ModelSpec

ROOT = Path(__file__).resolve().parent.parent

DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
    "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432,
    "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
    "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 128, "num_experts_per_tok": 8,
    "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "pretraining_tp": 1,
    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1", "use_cache": True, "v_head_dim": 128, "vocab_size": 129280,
}

LLAMA_31_405B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 16384,
    "initializer_range": 0.02, "intermediate_size": 53248, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 128, "num_hidden_layers": 126,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 128256,
}

MIXTRAL_8X22B = {
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 6144, "initializer_range": 0.02, "intermediate_size": 16384,
    "max_position_embeddings": 65536, "model_type": "mixtral", "num_attention_heads": 48,
    "num_experts_per_tok": 2, "num_hidden_layers": 56, "num_key_value_heads": 8, "num_local_experts": 8,
    "output_router_logits": False, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 32768,
}


def _llama_like_params(c: dict, mlp_per_layer: int) -> int:
    """Embedding, per-layer attention (q, k, v, o), two norms and the MLP, final norm (AutoModel: no lm_head)."""
    h, head = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"]
    attention = 2 * h * h + 2 * h * c["num_key_value_heads"] * head
    return c["vocab_size"] * h + c["num_hidden_layers"] * (attention + 2 * h + mlp_per_layer) + h


def _deepseek_v3_params(c: dict) -> int:
    h, heads = c["hidden_size"], c["num_attention_heads"]
    qk_head = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    attention = (
        h * c["q_lora_rank"] + c["q_lora_rank"] + c["q_lora_rank"] * heads * qk_head  # q_a, q_a norm, q_b
        + h * (c["kv_lora_rank"] + c["qk_rope_head_dim"]) + c["kv_lora_rank"]  # kv_a (+ rope key), kv_a norm
        + c["kv_lora_rank"] * heads * (c["qk_nope_head_dim"] + c["v_head_dim"])  # kv_b
        + heads * c["v_head_dim"] * h  # o
    )
    dense_mlp = 3 * h * c["intermediate_size"]
    moe_mlp = (
        c["n_routed_experts"] * 3 * h * c["moe_intermediate_size"]  # fused gate_up and down
        + c["n_routed_experts"] * h  # router weight (its score-correction bias is a buffer)
        + c["n_shared_experts"] * 3 * h * c["moe_intermediate_size"]
    )
    dense = c["first_k_dense_replace"]
    layers = c["num_hidden_layers"] * (attention + 2 * h) + dense * dense_mlp + (c["num_hidden_layers"] - dense) * moe_mlp
    return c["vocab_size"] * h + layers + h


BIG = {
    "deepseek-v3": (DEEPSEEK_V3, _deepseek_v3_params(DEEPSEEK_V3)),
    "llama-3.1-405b": (LLAMA_31_405B, _llama_like_params(LLAMA_31_405B, 3 * 16384 * 53248)),
    "mixtral-8x22b": (MIXTRAL_8X22B, _llama_like_params(MIXTRAL_8X22B, 8 * 3 * 6144 * 16384 + 8 * 6144)),
}

_CHILD = textwrap.dedent("""
    import json, resource, sys
    from vramplan.pipeline import estimate
    run = estimate(sys.argv[1:], dtypes=("float32", "int4"))
    print(json.dumps({
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "models": [[m.status, m.error, m.weights and m.weights.parameter_count, m.weights and m.weights.total_bytes]
                   for m in run.models],
    }))
""")


def test_largest_real_configs_estimate_in_under_2_gb(tmp_path):
    paths = []
    for name, (config, _) in BIG.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, paths)],
        capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    for (name, (_, expected)), (status, error, params, float32_bytes) in zip(BIG.items(), report["models"]):
        assert status == "ok", f"{name}: {error}"
        assert params == expected, name
        assert float32_bytes >= 4 * expected
    assert report["rss_kib"] < 2 * 1024 * 1024  # DeepSeek-V3 alone is 2.7 TB in float32


def _spec(config: dict, name: str = "cfg") -> ModelSpec:
    return ModelSpec(reference=name, model_id=name, library="transformers", source="local", config=config)


@pytest.mark.parametrize("key, value", [
    ("num_hidden_layers", -3), ("num_hidden_layers", 0), ("hidden_size", 0), ("num_attention_heads", -1),
    ("intermediate_size", 1.5), ("vocab_size", True), ("num_hidden_layers", -0.0),
])
def test_non_positive_counts_are_refused_before_building(key, value):
    config = {"model_type": "bert", "num_hidden_layers": 2, key: value}
    with pytest.raises(ConfigError, match=f"`{key}` = {value!r}"):
        build_model(_spec(config))


def test_sub_configs_and_lists_are_checked():
    with pytest.raises(ConfigError, match=r"`vision_config.depths` = \[2, 0\]"):
        check_config({"model_type": "x", "vision_config": {"depths": [2, 0]}}, "m")
    check_config({"model_type": "x", "vision_config": {"depths": [2, 2]}, "num_key_value_heads": None}, "m")


def test_a_hundred_million_layers_are_refused_at_once(run_cli, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 100_000_000}))
    result = run_cli("estimate", str(path), "--format", "json")
    assert result.code == 1
    [model] = result.json()["models"]
    assert "`num_hidden_layers` = 100000000: more than 10,000 layers" in model["error"]
    check_config({"num_hidden_layers": 10_000, "vision_config": {"depths": [10_000]}}, "m")
    with pytest.raises(ConfigError, match="more than 10,000 layers"):
        check_config({"vision_config": {"depths": [2, 10_001]}}, "m")


def test_a_build_past_the_module_bound_stops_with_a_reason(run_cli, tmp_path, monkeypatch):
    """The CLI path end to end, with the bound lowered so that the test builds 2,000 modules, not 200,000."""
    monkeypatch.setattr(build_checks, "MAX_MODULES", 2_000)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 5_000, "hidden_size": 8,
                                "num_attention_heads": 2, "intermediate_size": 8}))
    result = run_cli("estimate", str(path), "--format", "json")
    assert result.code == 1
    [model] = result.json()["models"]
    assert "Refused to build" in model["error"] and "more than 2,000 modules" in model["error"]
    assert "Traceback" not in result.err


def test_budget_counts_modules_and_time():
    with pytest.raises(BuildLimitError, match="more than 3 modules"):
        with BuildBudget("m", max_modules=3):
            nn.Sequential(*(nn.ReLU() for _ in range(4)))
    with BuildBudget("m", max_modules=4):
        nn.Sequential(*(nn.ReLU() for _ in range(4)))
    with pytest.raises(BuildLimitError, match="longer than 0 s"):
        with BuildBudget("m", max_seconds=0.0):
            nn.Linear(2, 2, device="meta")


def test_a_caught_limit_is_still_reported():
    """User code that catches everything cannot hide that the bound stopped it."""

    def build_swallowing_errors(spec):
        try:
            nn.Sequential(*(nn.ReLU() for _ in range(10)))
        except Exception as exc:
            raise RuntimeError("the model code failed") from exc

    budget = BuildBudget("m", max_modules=5)
    with pytest.raises(RuntimeError), budget:
        build_swallowing_errors(None)
    assert isinstance(budget.tripped, BuildLimitError)


def test_head_count_that_does_not_divide_is_warned(run_cli, tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "vit", "hidden_size": 100, "num_attention_heads": 3,
                                "num_hidden_layers": 1, "intermediate_size": 8}))
    monkeypatch.setattr(build, "_BUILT", {})  # the warning is printed when the model is built, not on a cache hit
    result = run_cli("estimate", str(path), "--dtypes", "float32")
    assert result.code == 0
    assert "hidden_size 100 is not divisible by num_attention_heads 3" in result.err
    assert "99 of 100 features" in result.err
    path.write_text(json.dumps({"model_type": "vit", "hidden_size": 99, "num_attention_heads": 3,
                                "num_hidden_layers": 1, "intermediate_size": 8}))
    assert "divisible" not in run_cli("estimate", str(path), "--dtypes", "float32").err
