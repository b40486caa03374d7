"""The GPU step of ``padless tune``: size the token budget from memory, then grow it while the GPU is under-used.

The rule: budget tokens = (free GPU memory − model memory) × ``margin`` / activation bytes per token, where the
activation bytes per token are measured on one planned batch (peak allocated memory over the loaded model's). From
the engine's budget, the budget doubles while the GPU's utilisation (NVML, through ``torch.cuda.utilization``) stays
under ``target`` during a pass over the workload and the doubled budget still fits the rule. On a machine without a
CUDA GPU, or a backend that does not run on one, the step says so in one line and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from padless.engine import Engine

MARGIN = 0.8  # of the memory the rule allows: allocator fragmentation and the tokenizer's own batches
TARGET_UTILISATION = 90.0
PROBE_ROWS, PROBE_WIDTH = 8, 256


def budget_tokens(free_bytes: float, model_bytes: float, per_token_bytes: float, margin: float = MARGIN) -> int:
    """The token budget that memory allows: (free − model) × margin / bytes per token (0 if nothing is left)."""
    if per_token_bytes <= 0:
        raise ValueError("per_token_bytes must be positive")
    return max(0, int((free_bytes - model_bytes) * margin / per_token_bytes))


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def tune_gpu(engine: Engine, texts: list[str], say: Callable[[str], None]) -> dict[str, Any] | None:
    """The step of the module docstring on a loaded ``engine``; None (and one line said) where it does not apply."""
    if not gpu_available():
        say("GPU step skipped: no CUDA GPU on this machine")
        return None
    if getattr(engine.runtime, "device", "cpu") == "cpu":
        say(f"GPU step skipped: the {engine.backend} backend runs on the CPU here")
        return None
    import torch

    torch.cuda.synchronize()
    model_bytes = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    width = min(PROBE_WIDTH, engine.max_length)
    engine.forward_padded([[engine.encoder.pad_id] * width] * PROBE_ROWS, width)
    torch.cuda.synchronize()
    per_token = (torch.cuda.max_memory_allocated() - model_bytes) / (PROBE_ROWS * width)
    free, _total = torch.cuda.mem_get_info()
    # mem_get_info's free already excludes the loaded model: the rule's "− model" is applied once, through it.
    allowed = budget_tokens(free, 0, per_token)
    tokens, seen = engine.batch_config.max_batch_tokens, []
    while tokens * 2 <= allowed:
        busy = _utilisation(engine.with_options(max_batch_tokens=tokens), texts)
        seen.append({"max_batch_tokens": tokens, "utilisation": busy})
        if busy is None or busy >= TARGET_UTILISATION:
            break
        tokens *= 2
    say(f"GPU: {per_token / 1024:.1f} KiB of activations per token, memory allows {allowed} tokens a batch; "
        f"budget {tokens}")
    return {"per_token_bytes": per_token, "model_bytes": model_bytes, "free_bytes": free, "allowed_tokens": allowed,
            "max_batch_tokens": tokens, "utilisation": seen}


def _utilisation(engine: Engine, texts: list[str]) -> float | None:
    """The GPU's mean utilisation (%) sampled every 0.1 s during a pass over ``texts``; None where NVML cannot be
    read."""
    import threading

    import torch

    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            try:
                samples.append(float(torch.cuda.utilization()))
            except Exception:  # noqa: BLE001 - pynvml missing or NVML unavailable: the growth cannot be judged
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        engine.outputs(texts)
    finally:
        done.set()
        sampler.join(timeout=5)
    return sum(samples) / len(samples) if samples else None
