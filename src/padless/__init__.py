"""padless: run Hugging Face transformer text classifiers on real, mixed-length text without padding waste."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from padless.default_model import Classifier
    from padless.postprocess import Prediction

__all__ = ["Classifier", "Prediction", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `padless --help` and the data helpers do not pay for importing torch.
    if name == "Classifier":
        # The engine's Classifier, building padless's default model on first use (padless.default_model).
        from padless.default_model import Classifier

        return Classifier
    if name == "Prediction":
        from padless.postprocess import Prediction

        return Prediction
    raise AttributeError(name)
