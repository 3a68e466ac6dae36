"""vramplan: how much GPU memory a model needs, before you download a single weight."""

from __future__ import annotations

__version__ = "0.1.0"

from .measure.cases import InferenceRequest  # noqa: E402
from .pipeline import estimate  # noqa: E402
from .results import InferenceFailure, ModelResult, RunResult  # noqa: E402

__all__ = ["estimate", "InferenceRequest", "InferenceFailure", "ModelResult", "RunResult", "__version__"]
