"""padless: run Hugging Face transformer text classifiers and embedding models on real, mixed-length text without
padding waste."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# OpenVINO's converter and NNCF send usage telemetry to a web analytics service unless a consent file in the home
# folder says no (the converter sends by default). A classifier should not phone home, so unless
# PADLESS_OPENVINO_TELEMETRY=1, the telemetry package is made unimportable before OpenVINO is first imported; both
# libraries then use their own built-in no-op stubs (their documented fallback when the package is absent).
if os.environ.get("PADLESS_OPENVINO_TELEMETRY") != "1":
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from padless.default_model import Classifier
    from padless.embedder import Embedder
    from padless.postprocess import Prediction

__all__ = ["Classifier", "Embedder", "Prediction", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `padless --help` and the data helpers do not pay for importing torch.
    if name == "Classifier":
        # The engine's Classifier, building padless's default model on first use (padless.default_model).
        from padless.default_model import Classifier

        return Classifier
    if name == "Embedder":
        from padless.embedder import Embedder

        return Embedder
    if name == "Prediction":
        from padless.postprocess import Prediction

        return Prediction
    raise AttributeError(name)
