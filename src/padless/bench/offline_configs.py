"""The configs ``padless bench`` compares offline (:mod:`padless.bench.offline`): their names, what each is, and how
each classifies a list of texts."""

from __future__ import annotations

from collections.abc import Callable

import torch

from padless.engine import Classifier, Stats
from padless.errors import ItemError

CONFIGS = ("pipeline-b1", "pipeline-b32", "pad512-b32", "padless")
PADLESS = "padless"  # padless on the torch fp32 backend: the reference the ratios are taken against
CHUNK_ROWS = 32
PAD_WIDTH = 512
DESCRIPTIONS = {
    "pipeline-b1": "transformers.pipeline, one text per call",
    "pipeline-b32": "transformers.pipeline, batch_size=32 (each chunk padded to its longest)",
    "pad512-b32": f"hand loop, chunks of {CHUNK_ROWS} in input order, padded to {PAD_WIDTH}",
    "padless": "padless Classifier.run (length-sorted, planned batches)",
}

# A runner classifies the texts and returns one label per text (None for an unscorable item) and, for padless,
# the engine's stats for that call.
Runner = Callable[[list[str]], tuple[list[str | None], Stats | None]]


def padless_config_name(backend: str) -> str:
    """``padless`` for the torch fp32 reference, ``padless-<backend>`` for any other backend."""
    return PADLESS if backend == "torch" else f"{PADLESS}-{backend}"


def config_names(backends: list[str]) -> list[str]:
    """Every config a run can include: the baselines, then one padless config per backend."""
    return [*CONFIGS[:-1], *(padless_config_name(b) for b in backends)]


def _padless_runner(clf: Classifier) -> Runner:
    def padless(texts: list[str]) -> tuple[list[str | None], Stats | None]:
        run = clf.with_options()  # a fresh clone per call, so its stats cover exactly this call
        results = run.run(texts)
        return [None if isinstance(r, ItemError) else r.label for r in results], run.stats

    return padless


def device_of(clf: Classifier) -> str:
    """Where a classifier computes: ``cuda`` for a torch backend on a GPU, ``cpu`` otherwise."""
    return str(clf.describe().get("device", "cpu"))


def runners(clf: Classifier, names: list[str], extra: dict[str, Classifier]) -> dict[str, Runner]:
    """A runner per config in ``names``: the baselines on ``clf``'s model folder and device, ``padless`` on ``clf``,
    each other padless config on its classifier in ``extra``."""
    by_name: dict[str, Runner] = {}
    device = device_of(clf)  # the baselines run where padless's torch reference runs
    if any(name.startswith("pipeline") for name in names):
        from transformers import pipeline

        # Its own copy of the model, loaded from the same folder, exactly as a user of the pipeline would get it.
        pipe = pipeline("text-classification", model=str(clf.path), device=device)
        by_name["pipeline-b1"] = lambda texts: ([pipe(t, truncation=True)[0]["label"] for t in texts], None)
        by_name["pipeline-b32"] = lambda texts: (
            [out["label"] for out in pipe(texts, batch_size=CHUNK_ROWS, truncation=True)], None)
    tokenizer = clf.encoder.tokenizer
    model = getattr(clf.runtime, "model", None)

    def pad512(texts: list[str]) -> tuple[list[str | None], Stats | None]:
        assert model is not None
        labels: list[str | None] = []
        for start in range(0, len(texts), CHUNK_ROWS):
            enc = tokenizer(texts[start:start + CHUNK_ROWS], padding="max_length", max_length=PAD_WIDTH,
                            truncation=True, return_tensors="pt").to(device)
            with torch.inference_mode():
                logits = model(**enc).logits
            labels.extend(model.config.id2label[int(i)] for i in logits.argmax(dim=-1).tolist())
        return labels, None

    by_name["pad512-b32"] = pad512
    by_name[PADLESS] = _padless_runner(clf)
    by_name.update({name: _padless_runner(other) for name, other in extra.items()})
    return {name: by_name[name] for name in names}


def chunk_padded_tokens(lengths: list[int], rows: int) -> int:
    """Tokens computed when consecutive chunks of ``rows`` inputs are each padded to their longest.

    That is what the pipeline's collate function does with ``batch_size=rows``.
    """
    return sum(max(lengths[i:i + rows]) * len(lengths[i:i + rows]) for i in range(0, len(lengths), rows))
