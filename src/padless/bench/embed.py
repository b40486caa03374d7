"""Embeddings offline: padless's :class:`~padless.embedder.Embedder` against ``SentenceTransformer.encode``, in one
process, on the same model folder and the same texts.

Configs:

* ``st-b32``: ``SentenceTransformer(folder).encode(texts, batch_size=32)`` (its default batch size);
* ``st-b128``: the same with ``batch_size=128``;
* ``padless``: :meth:`padless.embedder.Embedder.vectors` on the torch fp32 backend with its defaults;
* ``padless-<backend>`` (``backends=["onnx", "openvino", …]``): the same embedder on another backend;
* ``padless-classify`` (``classify=True``): :class:`padless.Classifier`, torch fp32, on the same encoder weights with
  a seeded 2-label head (:func:`classify_twin`): what embedding costs over classifying the same texts.

sentence-transformers runs on the device padless's torch backend runs on (the CPU here), with the ``max_seq_length``
padless uses (the folder's). It sorts the texts by character count, longest first (``np.argsort`` of the negated
lengths, exactly as its ``encode`` does), cuts that order into batches of ``batch_size`` and pads each batch to its
longest in tokens: :func:`st_computed_tokens` reproduces that from the texts' character and token counts, so its
padding share is what it really computed. padless's comes from its engine's stats.

Every round times each config on the whole workload with ``time.perf_counter`` (tokenization included), the order
of the configs rotated from round to round; figures are medians over rounds, ratios medians of per-round ratios. Each
config runs once on a few texts before the rounds (one-off costs outside the timing). "% of peak" is useful model
FLOPs (:func:`padless.engine.model_flops` on the real token lengths, padding excluded) per second over the best fp32
matmul rate measured in the same run (:mod:`padless.bench.peak`), before and after the rounds. Each padless config's
vectors are compared to ``st-b32``'s for the same texts (cosine per text: min and mean).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from padless.bench.peak import measure_matmul_peak, peak_size_on
from padless.bench.workload import describe_lengths, describe_mix, make_workload
from padless.config import EngineSpec
from padless.embedder import Embedder
from padless.engine import Classifier, Stats, model_flops
from padless.errors import ConfigError, ItemError
from padless.machine import describe

if TYPE_CHECKING:
    from rich.table import Table

ST_BATCHES = {"st-b32": 32, "st-b128": 128}
REFERENCE = "st-b32"  # sentence-transformers as most people call it: every ratio and cosine is taken against it
PADLESS = "padless"
CLASSIFY = "padless-classify"  # the classify task on the same encoder: no vectors, so no cosine
WARMUP_TEXTS = 8
OUTPUT = "bench-embed.json"

# A runner embeds the texts: their vectors (input order) and, for padless, the engine's stats of that call.
Runner = Callable[[list[str]], tuple[np.ndarray, Stats | None]]


def padless_config_name(backend: str) -> str:
    """``padless`` for the torch fp32 reference, ``padless-<backend>`` for any other backend."""
    return PADLESS if backend == "torch" else f"{PADLESS}-{backend}"


def st_order(char_lengths: Sequence[int]) -> list[int]:
    """The order ``SentenceTransformer.encode`` runs texts in: ``np.argsort`` of the negated character counts (its
    ``_input_length`` of a string is ``len``), the same call, so ties break exactly as they do there."""
    return [int(i) for i in np.argsort([-length for length in char_lengths])]


def st_computed_tokens(char_lengths: Sequence[int], token_lengths: Sequence[int], batch_size: int) -> int:
    """Tokens ``SentenceTransformer.encode(texts, batch_size=batch_size)`` computes, padding included: the texts in
    :func:`st_order`, cut into consecutive batches of ``batch_size``, each padded to its longest in tokens."""
    if len(char_lengths) != len(token_lengths) or batch_size < 1:
        raise ValueError("one character count and one token count per text, and a positive batch size")
    ordered = [token_lengths[i] for i in st_order(char_lengths)]
    return sum(max(ordered[i:i + batch_size]) * len(ordered[i:i + batch_size])
               for i in range(0, len(ordered), batch_size))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-by-row cosine of two equally shaped matrices, computed in float64."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray((a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)))


def classify_twin(emb: Embedder, folder: Path) -> Classifier:
    """A torch fp32 :class:`Classifier` on ``emb``'s own encoder weights with a seeded, untrained 2-label head, saved
    into ``folder``, with ``emb``'s token limit: the same encoder and texts through the classify task."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert emb.folder_info.embedding is not None
    source = Path(emb.path) / emb.folder_info.embedding.transformer_path
    torch.manual_seed(0)
    # A folder that already has a head of another size gets a fresh 2-label one, as any other folder does.
    model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=2,
                                                               ignore_mismatched_sizes=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(folder)
    return Classifier.from_spec(EngineSpec.of(model=str(folder), backend="torch", max_length=emb.max_length))


def _loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def run_embed_bench(
    model: str = "default",
    *,
    mix: str = "realistic",
    n: int = 400,
    rounds: int = 3,
    seed: int = 0,
    backends: list[str] | None = None,
    classify: bool = False,
    out_dir: Path | None = None,
    peak_size: int = 2048,
    command: list[str] | None = None,
    say: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """Run the configs interleaved over ``rounds`` and return the results (see the module docstring); with
    ``out_dir``, also write ``bench-embed.json`` there. ``model``: ``default`` (all-MiniLM-L6-v2, the Embedder's
    default), a sentence-transformers folder, a plain Hugging Face folder (mean pooling) or a Hub id. ``classify``:
    add ``padless-classify``."""
    if not classify:
        return _run(model, mix=mix, n=n, rounds=rounds, seed=seed, backends=backends, twin=None, out_dir=out_dir,
                    peak_size=peak_size, command=command, say=say)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="padless-classify-twin-") as folder:
        return _run(model, mix=mix, n=n, rounds=rounds, seed=seed, backends=backends, twin=Path(folder),
                    out_dir=out_dir, peak_size=peak_size, command=command, say=say)


def _run(model: str, *, mix: str, n: int, rounds: int, seed: int, backends: list[str] | None, twin: Path | None,
         out_dir: Path | None, peak_size: int, command: list[str] | None,
         say: Callable[[str], object] | None) -> dict[str, Any]:
    backends = list(dict.fromkeys(["torch", *(backends or [])]))
    if n < 1 or rounds < 1:
        raise ConfigError("n and rounds must be positive")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # as `padless bench`: the same for every config
    load_start = _loadavg()
    spec = EngineSpec.of(model=model, backend="torch")
    emb = Embedder.from_spec(spec)
    extra = {padless_config_name(b): Embedder.from_spec(spec.replace(backend=b)) for b in backends if b != "torch"}
    classifier = classify_twin(emb, twin) if twin is not None else None
    device = str(emb.describe().get("device", "cpu"))
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(emb.path), device=device)
    st_max_seq_length = st.max_seq_length
    if st.max_seq_length != emb.max_length:
        st.max_seq_length = emb.max_length  # the same truncation for every config
    # Flash-attention packing (a GPU with flash-attn): nothing padded, and an order this module does not model.
    if getattr(st, "_can_flatten_inputs", lambda: False)():
        raise ConfigError("this sentence-transformers model packs inputs without padding; bench embed models padding")

    texts = make_workload(emb.encoder.tokenizer, mix, n, seed)
    lengths = _padless_lengths(emb, texts)
    st_lengths = _st_lengths(st, texts)
    names = [*ST_BATCHES, *(padless_config_name(b) for b in backends), *([CLASSIFY] if classifier else [])]
    run_config = _runners(st, emb, extra, classifier)
    # sentence-transformers runs where padless's torch reference runs; another backend where it says it runs
    devices = {name: str(extra[name].describe().get("device", "cpu")) if name in extra else device for name in names}
    peak_devices = sorted(set(devices.values()))
    peaks_before = {d: measure_matmul_peak(peak_size, device=d) for d in peak_devices}
    for name in names:
        run_config[name](texts[:WARMUP_TEXTS])
    seconds, vectors, stats, orders = _timed_rounds(run_config, names, texts, rounds, say)
    peaks_after = {d: measure_matmul_peak(peak_size, device=d) for d in peak_devices}
    peak = {d: max(peaks_before[d], peaks_after[d]) for d in peak_devices}

    real = sum(lengths)
    char_lengths = [len(t) for t in texts]
    info = emb.info
    configs: dict[str, Any] = {}
    for name in names:
        flops = sum(model_flops(extra.get(name, emb).info, length) for length in lengths)
        secs = seconds[name]
        entry: dict[str, Any] = {
            "description": _description(name, extra),
            "device": devices[name],
            "seconds": statistics.median(secs),
            "seconds_per_round": secs,
            "texts_per_s": statistics.median(n / s for s in secs),
            "texts_per_s_per_round": [n / s for s in secs],
            "real_tokens_per_s": statistics.median(real / s for s in secs),
            "useful_gflops": flops / 1e9,
            "model_flops_pct_of_peak": statistics.median(100 * flops / s / (peak[devices[name]] * 1e9) for s in secs),
        }
        if name in ST_BATCHES:
            computed = st_computed_tokens(char_lengths, st_lengths, ST_BATCHES[name])
            entry.update(batch_size=ST_BATCHES[name], computed_tokens=computed,
                         padding_fraction=1 - sum(st_lengths) / computed, batches=-(-n // ST_BATCHES[name]))
        else:
            engine_stats = stats[name]
            entry.update(computed_tokens=engine_stats.padded_tokens, padding_fraction=engine_stats.padding_fraction,
                         batches=engine_stats.batches, stats_real_tokens=engine_stats.real_tokens)
            if name != CLASSIFY:
                sims = cosines(vectors[name], vectors[REFERENCE])
                entry.update(min_cosine_vs_st_b32=float(sims.min()), mean_cosine_vs_st_b32=float(sims.mean()))
        configs[name] = entry
    result: dict[str, Any] = {
        "benchmark": "embed-offline",
        "command": command if command is not None else list(sys.argv),
        "machine": {**describe(), "loadavg_1m_start": load_start, "loadavg_1m_end": _loadavg()},
        "model": {**emb.describe(), "hidden_size": info.hidden_size, "num_layers": info.num_layers,
                  "non_embedding_params": info.non_embedding_params,
                  "st_max_seq_length": st_max_seq_length, "max_seq_length_used": st.max_seq_length},
        "backends": {name: other.describe() for name, other in extra.items()},
        "workload": {"mix": mix, "n": n, "seed": seed, "buckets": describe_mix(mix),
                     "lengths": describe_lengths(lengths), "real_tokens": real,
                     "st_token_lengths_match": st_lengths == lengths,
                     "characters": describe_lengths(char_lengths),
                     "useful_gflops": sum(model_flops(info, length) for length in lengths) / 1e9},
        "method": {"rounds": rounds, "orders": orders, "warmup_texts": WARMUP_TEXTS, "statistic": "median",
                   "timing": "time.perf_counter around the whole workload, tokenization included",
                   "ratios": "median over rounds of the paired per-round ratio of texts/s",
                   "st_padding": "texts sorted by character count (longest first, np.argsort as encode does), "
                                 "batches of batch_size padded to their longest in tokens",
                   "cosine": "each padless config's vectors against st-b32's, per text, last round",
                   "torch_threads": _torch_threads(),
                   "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM")},
        "peak": {"size": {d: peak_size_on(d, peak_size) for d in peak_devices}, "dtype": "float32",
                 "before_gflops": peaks_before, "after_gflops": peaks_after, "gflops": peak},
        "configs": configs,
        "ratios": _ratios(names, seconds),
        "notes": _notes(load_start),
        "gated_variant": gated_variant(emb.path),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / OUTPUT).write_text(json.dumps(result, indent=2) + "\n")
    return result


def gated_variant(path: Path) -> dict[str, Any] | None:
    """For a ``padless optimize`` folder: the variant ``auto`` runs and the fidelity figures its gate measured
    (mean and 1st-percentile cosine to fp32, recall@10 against fp32); None for a plain folder."""
    from padless.loader import manifest as optimized

    if not optimized.is_optimized(path):
        return None
    manifest = optimized.read(path)
    selected = str(manifest["selected"])
    figures = optimized.candidate(manifest, selected).get("eval", {})
    keep = ("cosine_mean", "cosine_p1", "recall_at_10", "rows", "queries", "passed")
    return {"selected": selected, "gate": manifest.get("gate"), **{k: figures.get(k) for k in keep}}


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _notes(load_start: float | None) -> list[str]:
    if load_start is not None and load_start > 0.5:
        return [f"1-minute load average was {load_start:.1f} at the start: other processes were using the CPU, "
                "so these timings are not representative of an idle machine"]
    return []


def _padless_lengths(emb: Embedder, texts: list[str]) -> list[int]:
    """Each text's token count as padless computes it (prompt, truncation and special tokens included)."""
    encoded = emb.encoder.encode([emb.prompt_text + t for t in texts])
    bad = [e for e in encoded if isinstance(e, ItemError)]
    if bad:
        raise ConfigError(f"{len(bad)} workload items cannot be embedded: {bad[0]}")
    return [len(e) for e in encoded]  # type: ignore[arg-type]


def _st_lengths(st: Any, texts: list[str]) -> list[int]:
    """Each text's token count as sentence-transformers computes it: its own preprocessing (truncation to its
    ``max_seq_length``), counted from the attention mask."""
    out: list[int] = []
    for start in range(0, len(texts), 128):
        features = st.preprocess(texts[start:start + 128])
        out.extend(int(x) for x in features["attention_mask"].sum(1).tolist())
    return out


def _description(name: str, extra: dict[str, Embedder]) -> str:
    if name == CLASSIFY:
        return "padless Classifier, torch backend (float32), the same encoder with a 2-label head"
    if name in ST_BATCHES:
        return f"SentenceTransformer.encode, batch_size={ST_BATCHES[name]} (sorted by characters, padded per batch)"
    described = extra[name].describe() if name in extra else {}
    backend = (described.get("variant") or name.removeprefix(PADLESS + "-")) if name in extra else "torch"
    return f"padless Embedder, {backend} backend ({described.get('dtype', 'float32')})"


def _runners(st: Any, emb: Embedder, extra: dict[str, Embedder], classifier: Classifier | None) -> dict[str, Runner]:
    def st_runner(batch_size: int) -> Runner:
        def run(texts: list[str]) -> tuple[np.ndarray, Stats | None]:
            return np.asarray(st.encode(texts, batch_size=batch_size, show_progress_bar=False)), None

        return run

    def padless_runner(engine: Embedder) -> Runner:
        def run(texts: list[str]) -> tuple[np.ndarray, Stats | None]:
            clone = engine.with_options()  # a fresh clone per call: its stats cover exactly this call
            vectors, errors = clone.vectors(texts)
            failed = [e for e in errors if e is not None]
            if failed:
                raise ConfigError(f"{len(failed)} workload items failed: {failed[0]}")
            return vectors, clone.stats

        return run

    def classify_runner(engine: Classifier) -> Runner:
        def run(texts: list[str]) -> tuple[np.ndarray, Stats | None]:
            clone = engine.with_options()
            failed = [r for r in clone.run(texts) if isinstance(r, ItemError)]
            if failed:
                raise ConfigError(f"{len(failed)} workload items failed: {failed[0]}")
            return np.empty((0,), dtype=np.float32), clone.stats

        return run

    runners = {name: st_runner(size) for name, size in ST_BATCHES.items()}
    runners[PADLESS] = padless_runner(emb)
    runners.update({name: padless_runner(other) for name, other in extra.items()})
    if classifier is not None:
        runners[CLASSIFY] = classify_runner(classifier)
    return runners


def _timed_rounds(run_config: dict[str, Runner], names: list[str], texts: list[str], rounds: int,
                  say: Callable[[str], object] | None) -> tuple[dict[str, list[float]], dict[str, np.ndarray],
                                                                 dict[str, Stats], list[list[str]]]:
    """Every config on the whole workload in each round, the order rotated from round to round; the seconds per
    round, and each config's vectors and padless's stats from its last round."""
    seconds: dict[str, list[float]] = {name: [] for name in names}
    vectors: dict[str, np.ndarray] = {}
    stats: dict[str, Stats] = {}
    orders: list[list[str]] = []
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        orders.append(order)
        for name in order:
            started = time.perf_counter()
            vectors[name], call_stats = run_config[name](texts)
            elapsed = time.perf_counter() - started
            seconds[name].append(elapsed)
            if call_stats is not None:
                stats[name] = call_stats
            if say is not None:
                say(f"round {r + 1}/{rounds}  {name:<16} {elapsed:7.2f} s  {len(texts) / elapsed:9.1f} texts/s")
    return seconds, vectors, stats, orders


def _ratio(seconds: dict[str, list[float]], faster: str, slower: str) -> float:
    """``faster``'s texts/s over ``slower``'s: the median of the per-round ratios (paired, adjacent in time)."""
    return statistics.median(b / a for a, b in zip(seconds[faster], seconds[slower]))


def _ratios(names: list[str], seconds: dict[str, list[float]]) -> dict[str, float]:
    """Every config over ``st-b32``, every padless config over every sentence-transformers config, and with
    ``padless-classify`` the embedder over the classifier (1.0: embedding costs what classifying does)."""
    ratios = {f"{name}_vs_{REFERENCE}": _ratio(seconds, name, REFERENCE) for name in names if name != REFERENCE}
    ratios.update({f"{name}_vs_{other}": _ratio(seconds, name, other) for name in names
                   if name.startswith(PADLESS) for other in ST_BATCHES if other != REFERENCE})
    if CLASSIFY in names:
        ratios[f"{PADLESS}_vs_{CLASSIFY}"] = _ratio(seconds, PADLESS, CLASSIFY)
    return ratios


def render_table(result: dict[str, Any]) -> Table:
    """A rich Table of the per-config figures, for the CLI."""
    from rich.table import Table

    peaks = ", ".join(f"{d} {v:.0f}" for d, v in result["peak"]["gflops"].items())
    work = result["workload"]
    notes = list(result.get("notes", []))
    gated = result.get("gated_variant")
    if gated:
        notes.append(f"auto = the folder's gated {gated['selected']}: mean cosine to fp32 {gated['cosine_mean']}, "
                     f"1st percentile {gated['cosine_p1']}, recall@10 against fp32 {gated['recall_at_10']} "
                     f"({gated['rows']} texts, {gated['queries']} queries, measured by padless optimize)")
    table = Table(title=f"embeddings offline: {work['mix']} mix, {work['n']} texts; fp32 matmul peak (GFLOP/s): "
                        f"{peaks}", caption="\n".join(notes) or None)
    others = [name for name in ST_BATCHES if name != REFERENCE]
    columns = ["config", "texts/s", f"× {REFERENCE}", *(f"× {o}" for o in others), "padding", "% of fp32 peak",
               "min cos", "mean cos"]
    for column in columns:
        table.add_column(column, justify="left" if column == "config" else "right", no_wrap=True)
    ratios = result["ratios"]
    for name, entry in result["configs"].items():
        def ratio(other: str, name: str = name) -> str:
            if name == other:
                return "1.00×"
            value = ratios.get(f"{name}_vs_{other}")
            return "-" if value is None else f"{value:.2f}×"

        cos = entry.get("min_cosine_vs_st_b32")
        table.add_row(name, f"{entry['texts_per_s']:.1f}", ratio(REFERENCE), *(ratio(o) for o in others),
                      f"{entry['padding_fraction']:.1%}", f"{entry['model_flops_pct_of_peak']:.1f}%",
                      "-" if cos is None else f"{cos:.6f}",
                      "-" if cos is None else f"{entry['mean_cosine_vs_st_b32']:.6f}")
    return table
