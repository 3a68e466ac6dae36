"""The breadth suite: small configs of many transformers architectures, simulated and run for real.

Each architecture is a small config written here (random weights, built in a fraction of a
second) and the input vramplan feeds it: `pixel_values` of the case's size for vision models,
zero `input_ids` for text models (and `decoder_input_ids` for encoder-decoders, as
`measure.inputs.make_inputs` makes them), silent audio for wav2vec2 (`audio_length`: 125
samples per unit of size) and Whisper (as many mel frames as the size, its window set to
match). `compare_case` runs the real forward on the CPU under the profiler
(`allocator.cpu_peak_above_baseline`) and vramplan's simulation of the same case (`--device
cpu`) and returns both peaks above weights, buffers and input, the part the simulation predicts
from the forward. `tests/test_breadth.py` runs it at two small sizes per
architecture; `bench/validate_cpu.py --breadth` at larger ones for `docs/accuracy-cpu.md`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_TEXT = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, vocab_size=512,
             max_position_embeddings=512)
_DECODER = {**_TEXT, "num_key_value_heads": 2}

# name -> config; vision configs with an `image_size` get the case's size written in.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # --- vision ---------------------------------------------------------------------------------
    "vit": dict(model_type="vit", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                num_hidden_layers=2, patch_size=16),
    "deit": dict(model_type="deit", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_hidden_layers=2, patch_size=16),
    "beit": dict(model_type="beit", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_hidden_layers=2, patch_size=16, use_relative_position_bias=True),
    "dinov2": dict(model_type="dinov2", hidden_size=64, mlp_ratio=2, num_attention_heads=4, num_hidden_layers=2,
                   patch_size=14),
    "dinov2_with_registers": dict(model_type="dinov2_with_registers", hidden_size=64, mlp_ratio=2,
                                  num_attention_heads=4, num_hidden_layers=2, patch_size=14, num_register_tokens=4),
    "dinov3_vit": dict(model_type="dinov3_vit", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                       num_hidden_layers=2, patch_size=16, num_register_tokens=4),
    "dinov3_convnext": dict(model_type="dinov3_convnext", depths=[1, 1, 2, 1], hidden_sizes=[16, 32, 64, 128]),
    "convnext": dict(model_type="convnext", depths=[1, 1, 2, 1], hidden_sizes=[16, 32, 64, 128]),
    "convnextv2": dict(model_type="convnextv2", depths=[1, 1, 2, 1], hidden_sizes=[16, 32, 64, 128]),
    "swin": dict(model_type="swin", embed_dim=32, depths=[1, 1], num_heads=[2, 4], window_size=4),
    "swinv2": dict(model_type="swinv2", embed_dim=32, depths=[1, 1], num_heads=[2, 4], window_size=4),
    "siglip_vision_model": dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128,
                                num_attention_heads=4, num_hidden_layers=2, patch_size=16),
    "clip_vision_model": dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128,
                              num_attention_heads=4, num_hidden_layers=2, patch_size=16),
    "segformer": dict(model_type="segformer", hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                      num_attention_heads=[1, 2, 4, 8], decoder_hidden_size=64),
    "mobilevit": dict(model_type="mobilevit", hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 48, 64, 80]),
    "mobilenet_v1": dict(model_type="mobilenet_v1", depth_multiplier=0.25),
    "mobilenet_v2": dict(model_type="mobilenet_v2", depth_multiplier=0.35),
    "efficientnet": dict(model_type="efficientnet", width_coefficient=0.25, depth_coefficient=0.25,
                         hidden_dim=320),
    "resnet": dict(model_type="resnet", embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
    "regnet": dict(model_type="regnet", embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                   groups_width=8),
    "levit": dict(model_type="levit", hidden_sizes=[32, 48, 64], num_attention_heads=[1, 2, 2], depths=[1, 1, 1],
                  key_dim=[8, 8, 8]),
    "pvt_v2": dict(model_type="pvt_v2", hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                   num_attention_heads=[1, 2, 4, 8]),
    "hiera": dict(model_type="hiera", embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8]),
    "sam_vision_model": dict(model_type="sam_vision_model", hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=4, output_channels=32, patch_size=16, window_size=4,
                             global_attn_indexes=[1], mlp_dim=128),
    # --- text -----------------------------------------------------------------------------------
    "bert": dict(model_type="bert", **_TEXT),
    "roberta": dict(model_type="roberta", **{**_TEXT, "max_position_embeddings": 514}),  # positions from pad + 1
    "xlm-roberta": dict(model_type="xlm-roberta", **{**_TEXT, "max_position_embeddings": 514}),
    "distilbert": dict(model_type="distilbert", dim=64, hidden_dim=128, n_heads=4, n_layers=2, vocab_size=512,
                       max_position_embeddings=512),
    "deberta-v2": dict(model_type="deberta-v2", **_TEXT),
    "electra": dict(model_type="electra", embedding_size=32, **_TEXT),
    "modernbert": dict(model_type="modernbert", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                       num_hidden_layers=3, vocab_size=512, max_position_embeddings=2048, local_attention=64,
                       pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2, sep_token_id=1),
    "gpt2": dict(model_type="gpt2", n_embd=64, n_head=4, n_layer=2, vocab_size=512, n_positions=1024),
    "gpt2_pad": dict(model_type="gpt2", n_embd=64, n_head=4, n_layer=2, vocab_size=512, n_positions=1024,
                     pad_token_id=0),
    "gpt_neox": dict(model_type="gpt_neox", **_TEXT),
    "llama": dict(model_type="llama", **_DECODER),
    "mistral": dict(model_type="mistral", **_DECODER),
    "qwen2": dict(model_type="qwen2", **_DECODER),
    "gemma": dict(model_type="gemma", head_dim=16, **_DECODER),
    "gemma2": dict(model_type="gemma2", head_dim=16, sliding_window=64, **_DECODER),
    "phi3": dict(model_type="phi3", pad_token_id=0, eos_token_id=1, **_DECODER),
    "opt": dict(model_type="opt", hidden_size=64, ffn_dim=128, num_attention_heads=4, num_hidden_layers=2,
                vocab_size=512, max_position_embeddings=1024, word_embed_proj_dim=64),
    "bart": dict(model_type="bart", d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2,
                 decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=512,
                 max_position_embeddings=1024),
    "t5": dict(model_type="t5", d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=512),
    # --- audio (inputs: issue 12 item 5) ----------------------------------------------------------
    "wav2vec2": dict(model_type="wav2vec2", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                     num_hidden_layers=2, conv_dim=[32, 32, 32], conv_stride=[5, 2, 2], conv_kernel=[10, 3, 3],
                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    "whisper": dict(model_type="whisper", d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2,
                    decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=512,
                    num_mel_bins=80, max_source_positions=1500, pad_token_id=0, bos_token_id=1, eos_token_id=1,
                    decoder_start_token_id=1),
}


@dataclass(frozen=True)
class Comparison:
    """One case: the real CPU allocator's peak and the simulated one, both above weights, buffers and input."""

    real: int
    simulated: int
    weights_real: int  # bytes of the real model's distinct parameter and buffer storages
    weights_simulated: int  # Parameter + Buffer of the simulation
    attention: str  # the implementation the real model ran
    attention_simulated: str

    @property
    def error(self) -> float:
        return (self.simulated - self.real) / self.real if self.real else 0.0


@dataclass(frozen=True)
class Counts:
    """How a run of the suite went, against the issue's bar: 95% simulate, 95% of those within 2%, none 5% under."""

    cases: int
    simulated: int
    exact: int  # to the byte
    within_2: int
    within_10: int
    under_5: int  # more than 5% under the real allocator

    @property
    def unsupported(self) -> int:
        return self.cases - self.simulated

    @property
    def meets_the_bar(self) -> bool:
        return (self.simulated >= 0.95 * self.cases and self.within_2 >= 0.95 * self.simulated
                and self.under_5 == 0)

    def text(self) -> str:
        return (f"{self.simulated} of {self.cases} simulate; of those {self.exact} exact to the byte, "
                f"{self.within_2} within 2%, {self.within_10} within 10%, {self.under_5} more than 5% under; "
                f"{self.unsupported} unsupported")


def count(outcomes: list[tuple[int, int] | None]) -> Counts:
    """Counts of (real, simulated) peaks, None for a case that does not simulate."""
    done = [(real, sim) for real, sim in (o for o in outcomes if o is not None)]
    error = [(sim - real) / real if real else 0.0 for real, sim in done]
    return Counts(
        cases=len(outcomes),
        simulated=len(done),
        exact=sum(1 for real, sim in done if real == sim),
        within_2=sum(1 for e in error if abs(e) <= 0.02),
        within_10=sum(1 for e in error if abs(e) <= 0.10),
        under_5=sum(1 for e in error if e < -0.05),
    )


CI_SIZES = (64, 128)  # pixels (vision), tokens (text), `audio_length` units (audio)
CI_BFLOAT16 = ("vit", "dinov3_vit", "convnext", "swin", "mobilenet_v2", "efficientnet", "resnet", "regnet",
               "mobilevit", "segformer", "sam_vision_model", "bert", "llama", "gemma2", "bart", "deberta-v2",
               "modernbert", "gpt2_pad", "wav2vec2", "whisper", "swinv2")
CI_EAGER = ("vit", "beit", "dinov2", "clip_vision_model", "sam_vision_model", "bert", "llama", "phi3", "opt", "bart",
            "modernbert")
CI_BFLOAT16_EAGER = ("vit", "llama", "qwen2")


def ci_cases() -> list[tuple[str, int, str, str]]:
    """The cases `tests/test_breadth.py` runs: (architecture, size, dtype, attention)."""
    cases = [(name, size, "float32", "sdpa") for name in ARCHITECTURES for size in CI_SIZES]
    cases += [(name, 128, "bfloat16", "sdpa") for name in CI_BFLOAT16]
    cases += [(name, 128, "float32", "eager") for name in CI_EAGER]
    cases += [(name, 128, "bfloat16", "eager") for name in CI_BFLOAT16_EAGER]
    return cases


TEXT = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "deberta-v2", "electra", "modernbert", "gpt2",
                  "gpt2_pad", "gpt_neox", "llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "opt", "bart", "t5"})
AUDIO = frozenset({"wav2vec2", "whisper"})


def is_text(name: str) -> bool:
    """Say whether the architecture's case size is a length (text, audio) rather than pixels."""
    return name in TEXT or name in AUDIO


def audio_length(name: str, size: int) -> int:
    """The `--seq-len` of an audio case of this size: wav2vec2 samples (125 per unit: 8000 at 64), Whisper frames."""
    return size * 125 if name == "wav2vec2" else size


def case_config(name: str, size: int) -> dict[str, Any]:
    """The architecture's config for a case of this size (vision configs carry their image size).

    Whisper's encoder takes exactly `2 * max_source_positions` frames: its config is written with
    `max_source_positions = size // 2`, a shorter window, so that `size` frames are what it takes.
    """
    from transformers import CONFIG_MAPPING

    config = dict(ARCHITECTURES[name])
    if name == "whisper":
        config["max_source_positions"] = size // 2
    default = CONFIG_MAPPING[config["model_type"]]().to_dict().get("image_size")
    if default is not None:
        config["image_size"] = [size, size] if isinstance(default, (list, tuple)) else size
    return config


def compare_case(name: str, size: int, batch: int, dtype: str, attn: str) -> Comparison:
    """Simulate and really run one case; raises SimulationError where the simulation cannot."""
    import torch

    from ..build import build_model
    from ..measure.activations import InferenceCase, measure_inference
    from ..measure.inputs import plan_inputs
    from ..spec import ModelSpec
    from .allocator import cpu_peak_above_baseline

    config = case_config(name, size)
    real_model, ran = real_cpu_model(config, dtype, attn)
    plan = plan_inputs(real_model)
    kind = {"image_size": (size, size)} if plan.kind == "image" else {"seq_len": _length(name, size)}
    case = InferenceCase(batch_size=batch, dtype=dtype, attn=attn, device="cpu", **kind)
    inputs = real_inputs(real_model, size, batch, dtype) if plan.kind == "image" else _fed_inputs(plan, case, name)
    real = cpu_peak_above_baseline(real_model, inputs)
    spec = ModelSpec(reference=name, model_id=name, library="transformers", source="test", config=config)
    meta = build_model(spec)
    sim = measure_inference(meta, case, reference=name)
    input_bytes = sum(t.numel() * t.element_size() for t in inputs.values() if isinstance(t, torch.Tensor))
    storages = {id(t.untyped_storage()): t.untyped_storage().nbytes()
                for t in [*real_model.parameters(), *real_model.buffers()]}
    del real_model
    torch.set_grad_enabled(True)
    return Comparison(
        real=real,
        simulated=sim.peak_allocated_bytes - sim.parameter_bytes - sim.buffer_bytes - input_bytes,
        weights_real=sum(storages.values()),
        weights_simulated=sim.parameter_bytes + sim.buffer_bytes,
        attention=ran,
        attention_simulated=sim.attn_implementation,
    )


def _length(name: str, size: int) -> int:
    return audio_length(name, size) if name in AUDIO else size


def _fed_inputs(plan, case, name: str) -> dict[str, Any]:
    """Text and audio inputs as vramplan makes them (`make_inputs`), as real CPU tensors: zero ids, silent audio."""
    import torch

    from ..measure.inputs import make_inputs

    args, inputs = make_inputs(plan, case, name)  # outside a meta device: real tensors
    assert not args
    return {k: v.zero_() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}


def real_cpu_model(config: dict[str, Any], dtype: str, attn: str):
    """A random-weight model as from_pretrained makes it: tied, in `dtype`, with `attn` where it has it."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = dict(config)
    model_type = config.pop("model_type")
    try:
        cfg = AutoConfig.for_model(model_type, **config)
        model = AutoModel.from_config(cfg, dtype=getattr(torch, dtype), attn_implementation=attn)
    except (ValueError, ImportError):  # no such implementation: from_pretrained's default then
        cfg = AutoConfig.for_model(model_type, **config)
        model = AutoModel.from_config(cfg, dtype=getattr(torch, dtype))
    model.tie_weights()
    return model.eval(), getattr(model.config, "_attn_implementation", None) or "eager"


def real_inputs(model, size: int, batch: int, dtype: str) -> dict[str, Any]:
    """The input vramplan feeds: pixel values of the size, or zero token ids of that length."""
    import torch

    name = getattr(model, "main_input_name", "pixel_values")
    if name == "input_ids":
        return {name: torch.zeros((batch, size), dtype=torch.int64)}
    channels = int(getattr(model.config, "num_channels", 3))
    return {name: torch.randn(batch, channels, size, size, dtype=getattr(torch, dtype))}
