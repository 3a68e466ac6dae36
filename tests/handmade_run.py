"""A run built by hand for the renderers' tests (charts, fit matrix, HTML, --plot): every figure a literal, so each
rendered number can be worked out from it. Not a simulation: the renderers only read these typed results."""

from __future__ import annotations

from vramplan.measure.activations import InferenceCase, InferenceMeasurement
from vramplan.measure.cases import InferenceRequest
from vramplan.measure.weights import DtypeWeights, WeightsEstimate
from vramplan.plan.fit import FitCell, FitRequest
from vramplan.plan.gpus import GpuSpec
from vramplan.results import InferenceFailure, ModelResult, RunResult

MiB, GiB = 2**20, 2**30
ODD = 'org/<b>&"x|y"'  # a model id with HTML and a Markdown cell separator in it

BIG = GpuSpec(name="big", label="Big Card", memory_bytes=16 * GiB, vendor="nvidia", compute_capability="9.0",
              sm_count=100, bf16=True, fp8=True, aliases=("big-card", "bc", "third"))
OLD = GpuSpec(name="old", label="Old <Card>", memory_bytes=8 * GiB, vendor="nvidia", compute_capability="7.5",
              sm_count=40, bf16=False, fp8=False)


def case(size, batch: int = 1, dtype: str = "bfloat16", attn: str = "sdpa") -> InferenceCase:
    hw = (size, size) if isinstance(size, int) else size
    return InferenceCase(batch_size=batch, dtype=dtype, attn=attn, image_size=hw)


def measured(c: InferenceCase, *, params: int = 100 * MiB, buffers: int = 0, activ: int = 50 * MiB,
             temp: int = 10 * MiB, context: int = 500 * MiB, cache: int = 0) -> InferenceMeasurement:
    """The parts, and the peak on the card they add up to (as measure_inference's overheads name them)."""
    overheads = (("CUDA context", context), ("allocator cache (reserved - allocated)", cache))
    allocated = params + buffers + activ + temp
    return InferenceMeasurement(case=c, parameter_bytes=params, buffer_bytes=buffers, activation_bytes=activ,
                                temp_bytes=temp, peak_allocated_bytes=allocated,
                                peak_device_bytes=allocated + context + cache, overheads=overheads)


def cell(gpu: GpuSpec, size, batch: int, peak: int, **kw) -> FitCell:
    hw = (size, size) if isinstance(size, int) else size
    return FitCell(gpu=gpu, mode="inference", dtype="bfloat16" if gpu.bf16 else "float16", attn="sdpa",
                   image_size=hw, seq_len=None, largest_batch_size=batch, peak_device_bytes=peak,
                   memory_bytes=gpu.memory_bytes, headroom_bytes=0, simulations=5, **kw)


def _model(name: str, **kw) -> ModelResult:
    return ModelResult(model=name, reference=name, library="transformers", source=None,
                       status="error" if kw.get("error") else "ok", **kw)


def handmade_run(fit: bool = True) -> RunResult:
    weights = WeightsEstimate(total_bytes=300 * MiB, largest_layer_bytes=10 * MiB, largest_layer_name="blocks.0",
                              parameter_count=75 * 2**20,
                              rows=(DtypeWeights("float32", 10 * MiB, 300 * MiB, 1200 * MiB),))
    a = _model("org/a", inference=(
        measured(case(224), cache=2 * MiB),  # 662 MiB on the card
        measured(case(512), buffers=3 * MiB, activ=300 * MiB),  # 913 MiB
        measured(case(224, 2), activ=100 * MiB),  # 710 MiB
        InferenceFailure(case(1024), "too big"),
        measured(case(224, 1, "float16"), activ=40 * MiB),  # another dtype: on neither line
        measured(case((512, 256), 1), activ=600 * MiB),  # 1210 MiB
    ), fit=(
        cell(BIG, 224, 12, 15 * GiB, cheapest_precision="float32"),
        cell(BIG, (512, 256), 0, 20 * GiB),
        cell(OLD, 224, 3, 7 * GiB, cheapest_precision="float16"),
        cell(OLD, (512, 256), 0, 0, error="broke"),
        cell(BIG, 1024, 1, 12 * GiB, cheapest_precision="bfloat16"),
    ))
    odd = _model(ODD, inference=(measured(case(224), params=3 * GiB, activ=0, temp=0, context=0),
                                 measured(case(512), params=3 * GiB, activ=GiB, temp=0, context=0)),
                 fit=(cell(BIG, 224, 7, 14 * GiB), cell(BIG, (512, 256), 8, 14 * GiB)))
    only_weights = _model("org/w", weights=weights)
    failed = _model("org/f", error="could not build: <bad>")
    gone = _model("org/g", error="gone")
    request = FitRequest(gpus=(BIG, OLD), headroom_percent=12.5) if fit else None
    asked = InferenceRequest(image_sizes=((224, 224), (512, 512), (512, 256), (1024, 1024)), batch_sizes=(1, 2),
                             dtypes=("bfloat16", "float16"))
    return RunResult(models=(a, odd, only_weights, failed, gone), dtypes=("float32",),
                     generated="2026-11-22T09:00:00+00:00", inference=asked, fit=request)
