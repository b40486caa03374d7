"""Side-by-side offline benchmark: padless against the ways people usually run a classifier over a list of texts.

Configs (all on the same model folder, the same workload, in one process):

* ``pipeline-b1``: ``transformers.pipeline("text-classification")`` called one text at a time;
* ``pipeline-b32``: the same pipeline called on the whole list with ``batch_size=32`` (pads each chunk of 32
  consecutive inputs to its longest);
* ``pad512-b32``: a hand-written loop over chunks of 32, every row padded to 512 tokens;
* ``padless``: :meth:`padless.engine.Classifier.run` with its defaults on the torch fp32 backend;
* ``padless-<backend>`` (``--backend onnx,onnx-int8,auto,…``): the same engine on another backend; ``auto`` on a
  ``padless optimize`` folder is its selected variant. Their ratios to ``padless`` come from the same rounds.

Every round times each config on the whole workload with ``time.perf_counter`` (tokenization included); the order
of configs rotates from round to round so no config always runs first or on a warmer cache. Figures are medians over
rounds. "% of peak" is useful model FLOPs (padding excluded, :func:`padless.engine.model_flops`, of the model the
config runs: a pruned student computes less than its teacher for the same texts) per second over the
best fp32 matmul rate measured in the same run (:mod:`padless.bench.peak`); a bf16 or int8 config is also held
against the bf16 matmul or ``torch._int_mm`` peak measured in the same run ("% own peak": int8 GOP/s over int8 GOP/s).

Where torch sees a CUDA GPU, the torch backends run on it, and so do the baselines (the pipeline on ``device``
cuda, the hand loop's tensors moved there), as a user of that machine would run them; a config is held against the
peaks of the device it ran on (an ONNX or OpenVINO config beside them still runs on the CPU, against the CPU's).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from padless.bench.offline_configs import (
    CHUNK_ROWS,
    DESCRIPTIONS,
    PAD_WIDTH,
    PADLESS,
    Runner,
    chunk_padded_tokens,
    config_names,
    device_of,
    padless_config_name,
    runners,
)
from padless.bench.peak import compute_precision, measure_matmul_peak, peak_size_on
from padless.bench.workload import describe_lengths, describe_mix, make_workload
from padless.config import OPENVINO_BACKENDS, BatchConfig, EngineSpec, ModelConfig
from padless.default_model import ensure_default
from padless.engine import Classifier, Stats, model_flops
from padless.errors import ConfigError, ItemError
from padless.machine import describe

if TYPE_CHECKING:
    from rich.table import Table

WARMUP_TEXTS = 8


def _loadavg() -> float | None:
    # Recorded because other processes competing for the cores slow every config; a high figure flags a noisy run.
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _notes(load_start: float | None) -> list[str]:
    # Threads spin-wait on each other, so a forward pass on a core shared with another busy process can take many
    # times longer; such a run says more about the neighbour than about the configs, and the report should say so.
    if load_start is not None and load_start > 0.5:
        return [f"1-minute load average was {load_start:.1f} at the start: other processes were using the CPU, "
                "so these timings are not representative of an idle machine"]
    return []


def run_offline_bench(
    model: str = "default",
    *,
    mix: str = "realistic",
    n: int = 500,
    rounds: int = 3,
    seed: int = 0,
    configs: list[str] | None = None,
    out_dir: Path | None = None,
    max_batch_tokens: int = BatchConfig.max_batch_tokens,
    max_batch_size: int = BatchConfig.max_batch_size,
    width_multiple: int = BatchConfig.width_multiple,
    streams: int = ModelConfig.streams,
    progress: bool = False,
    peak_size: int = 2048,
    backends: list[str] | None = None,
) -> dict[str, Any]:
    """Run the configs interleaved over ``rounds`` and return the results (see the module docstring).

    If ``out_dir`` is given, also write ``bench.json`` and ``bench.png`` there. ``streams`` applies to the
    OpenVINO backends (and ``auto``); the others run one batch at a time whatever it says.
    """
    # transformers.pipeline sets this to "false" on its first call when unset, which would also halve padless's
    # batch tokenization later in this process; setting it first keeps the comparison fair.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    backends, names = _plan_configs(backends, configs, n, rounds)
    from rich.console import Console

    console = Console(stderr=True) if progress else None
    load_start = _loadavg()
    ensure_default(model)  # the default model is built on first use, as by padless.Classifier
    spec = EngineSpec.of(model=model, backend="torch", max_batch_tokens=max_batch_tokens,
                         max_batch_size=max_batch_size, width_multiple=width_multiple)
    clf = Classifier.from_spec(spec)
    extra = {padless_config_name(b): Classifier.from_spec(
                 spec.replace(backend=b, streams=streams if b in ("auto", *OPENVINO_BACKENDS) else 0))
             for b in backends if b != "torch" and padless_config_name(b) in names}
    if "pad512-b32" in names and (clf.max_length < PAD_WIDTH or not hasattr(clf.runtime, "model")):
        raise ConfigError(f"pad512-b32 needs the torch backend and a model that accepts {PAD_WIDTH} tokens")
    texts = make_workload(clf.encoder.tokenizer, mix, n, seed)
    lengths = _scored_lengths(clf, texts)
    # Each config's own model: one that runs a student (an optimize folder's pruned variant) computes less.
    flops_of = {name: sum(model_flops(extra.get(name, clf).info, length) for length in lengths) for name in names}

    run_config = runners(clf, names, extra)
    reference_device = device_of(clf)
    precision, device, wanted = _placement(names, extra, reference_device)
    peaks_before = _measure_peaks(wanted, peak_size)
    # One untimed call each pays one-off costs (lazy imports, first-call allocation) outside the measurement. On a
    # GPU every new batch shape's first call is slow too (kernel selection), so there the warm-up is the whole
    # workload.
    warmup_texts = len(texts) if "cuda" in device.values() else WARMUP_TEXTS
    for name in names:
        run_config[name](texts[:warmup_texts])
    timed = _timed_rounds(run_config, names, texts, rounds, console)
    peaks_after = _measure_peaks(wanted, peak_size)
    own_peak = {d: {p: max(peaks_before[d][p], peaks_after[d][p]) for p in ps} for d, ps in wanted.items()}

    results = {name: _config_entry(name, timed, lengths, flops_of[name], device[name], precision[name],
                                   own_peak[device[name]], extra) for name in names}
    info = clf.info
    result: dict[str, Any] = {
        "benchmark": "offline",
        "machine": {**describe(), "loadavg_1m_start": load_start, "loadavg_1m_end": _loadavg()},
        "backends": {name: other.describe() for name, other in extra.items()},
        "model": {**clf.describe(), "hidden_size": info.hidden_size, "num_layers": info.num_layers,
                  "non_embedding_params": info.non_embedding_params},
        "workload": {"mix": mix, "n": n, "seed": seed, "buckets": describe_mix(mix),
                     "lengths": describe_lengths(lengths), "real_tokens": sum(lengths),
                     "useful_gflops": sum(model_flops(info, length) for length in lengths) / 1e9},
        "method": {"rounds": rounds, "orders": timed.orders, "warmup_texts": warmup_texts, "statistic": "median",
                   "timing": "time.perf_counter around the whole workload, tokenization included",
                   "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM")},
        "peak": _peak_record(wanted, peaks_before, peaks_after, own_peak, reference_device, peak_size),
        "configs": results,
        "ratios": _ratios(names, timed.seconds),
        "notes": _notes(load_start),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
        write_chart(result, out_dir / "bench.png")
    return result


def _plan_configs(backends: list[str] | None, configs: list[str] | None, n: int,
                  rounds: int) -> tuple[list[str], list[str]]:
    """The backends (torch first among them: padless on torch fp32 is what every ratio is taken against) and the
    configs to run; :class:`ConfigError` for unknown or repeated configs, or a count that is not positive."""
    backends = list(backends or ["torch"])
    if "torch" not in backends:
        backends.insert(0, "torch")
    every = config_names(backends)
    names = list(configs or every)
    unknown = [name for name in names if name not in every]
    if unknown or not names or len(set(names)) != len(names):
        raise ConfigError(f"configs must be distinct names from {', '.join(every)}; got {names}")
    if n < 1 or rounds < 1:
        raise ConfigError("n and rounds must be positive")
    return backends, names


def _scored_lengths(clf: Classifier, texts: list[str]) -> list[int]:
    """What every config computes: each text's token count after truncation to the model's limit, special tokens
    included. :class:`ConfigError` if a workload item cannot be scored."""
    encoded = clf.encoder.encode(texts)
    bad = [e for e in encoded if isinstance(e, ItemError)]
    if bad:
        raise ConfigError(f"{len(bad)} workload items cannot be scored: {bad[0]}")
    return [len(e) for e in encoded]  # type: ignore[arg-type]


def _placement(names: list[str], extra: dict[str, Classifier],
               reference_device: str) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """Each config's precision and device (the baselines and padless's torch reference compute in fp32 on
    ``reference_device``), and the peaks wanted per device in use: fp32 always (every "% of peak" uses it), the
    others only where a config computes in them."""
    precision = {name: compute_precision(extra[name].describe().get("dtype", "float32")) if name in extra
                 else "float32" for name in names}
    device = {name: device_of(extra[name]) if name in extra else reference_device for name in names}
    wanted = {d: ["float32"] + sorted({precision[n] for n in names if device[n] == d} - {"float32"})
              for d in sorted({reference_device, *device.values()})}
    return precision, device, wanted


_PEAK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.int8}


def _measure_peaks(wanted: dict[str, list[str]], peak_size: int) -> dict[str, dict[str, float]]:
    """The matmul peak (GFLOP/s; GOP/s for int8) of each device at each precision ``wanted`` there."""
    return {d: {p: measure_matmul_peak(peak_size, dtype=_PEAK_DTYPES[p], device=d) for p in ps}
            for d, ps in wanted.items()}


@dataclass
class _Timed:
    """What the timed rounds measured: each config's seconds per round, its labels and padless's engine stats (of
    the last round), and each round's order."""

    seconds: dict[str, list[float]]
    labels: dict[str, list[str | None]] = field(default_factory=dict)
    stats: dict[str, Stats] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)


def _timed_rounds(run_config: dict[str, Runner], names: list[str], texts: list[str], rounds: int,
                  console: Any) -> _Timed:
    """Every config on the whole workload in each round, the order rotated from round to round."""
    timed = _Timed(seconds={name: [] for name in names})
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        timed.orders.append(order)
        for name in order:
            started = time.perf_counter()
            timed.labels[name], call_stats = run_config[name](texts)
            elapsed = time.perf_counter() - started
            timed.seconds[name].append(elapsed)
            if call_stats is not None:
                timed.stats[name] = call_stats
            if console:
                console.print(f"round {r + 1}/{rounds}  {name:<13} {elapsed:7.2f} s  "
                              f"{len(texts) / elapsed:9.1f} texts/s")
    return timed


def _config_entry(name: str, timed: _Timed, lengths: list[int], flops: float, device: str, precision: str,
                  peak: dict[str, float], extra: dict[str, Classifier]) -> dict[str, Any]:
    """One config's figures: medians over rounds, its share of its device's peaks (``peak``), the tokens it computed
    and its agreement with ``pipeline-b1``."""
    n, real, secs = len(lengths), sum(lengths), timed.seconds[name]
    entry: dict[str, Any] = {
        "description": DESCRIPTIONS.get(name) or f"padless Classifier.run, {_backend_of(name, extra)} backend",
        "seconds": statistics.median(secs),
        "seconds_per_round": secs,
        "texts_per_s": statistics.median(n / s for s in secs),
        "real_tokens_per_s": statistics.median(real / s for s in secs),
        "useful_gflops": flops / 1e9,
        "device": device,
        "model_flops_pct_of_peak": statistics.median(100 * flops / s / (peak["float32"] * 1e9) for s in secs),
        "precision": precision,
        "model_flops_pct_of_precision_peak": statistics.median(
            100 * flops / s / (peak[precision] * 1e9) for s in secs),
    }
    if name.startswith(PADLESS):
        st = timed.stats[name]
        entry.update(padding_fraction=st.padding_fraction, computed_tokens=st.padded_tokens,
                     batches=st.batches, stats_real_tokens=st.real_tokens)
    else:
        computed = {
            "pipeline-b1": real,  # one text per forward: nothing padded
            "pipeline-b32": chunk_padded_tokens(lengths, CHUNK_ROWS),
            "pad512-b32": PAD_WIDTH * n,
        }[name]
        entry.update(padding_fraction=1 - real / computed, computed_tokens=computed)
    reference = timed.labels.get("pipeline-b1")
    entry["agreement_with_pipeline_b1"] = (
        None if reference is None else sum(a == b for a, b in zip(timed.labels[name], reference)) / n)
    return entry


def _ratios(names: list[str], seconds: dict[str, list[float]]) -> dict[str, float]:
    """padless's speed-up over every other config, and each other padless backend's over every baseline."""
    # Paired per round (same round, adjacent in time), then the median: robust to the machine drifting mid-run.
    ratios = {f"padless_vs_{name}": statistics.median(b / a for a, b in zip(seconds["padless"], seconds[name]))
              for name in names if name != "padless" and "padless" in names}
    ratios.update({f"{name}_vs_{other}": statistics.median(b / a for a, b in zip(seconds[name], seconds[other]))
                   for name in names if name.startswith(PADLESS + "-") for other in names if other != name
                   and not other.startswith(PADLESS + "-")})
    return ratios


def _peak_record(wanted: dict[str, list[str]], before: dict[str, dict[str, float]],
                 after: dict[str, dict[str, float]], own: dict[str, dict[str, float]], reference_device: str,
                 peak_size: int) -> dict[str, Any]:
    """The reference device's peaks at the top level; every device's (the CPU beside a GPU too) under
    ``by_device``."""
    by_device = {d: {p: {"before_gflops": before[d][p], "after_gflops": after[d][p], "gflops": own[d][p]}
                     for p in ps} for d, ps in wanted.items()}
    size_on = {d: peak_size_on(d, peak_size) for d in wanted}
    return {"size": size_on[reference_device], "sizes": size_on, "dtype": "float32", "device": reference_device,
            "before_gflops": before[reference_device]["float32"],
            "after_gflops": after[reference_device]["float32"],
            "gflops": own[reference_device]["float32"],
            "by_precision": by_device[reference_device], "by_device": by_device,
            "int8_kernel": "torch._int_mm (int8 x int8 -> int32)"}


def _backend_of(name: str, extra: dict[str, Classifier]) -> str:
    described = extra[name].describe() if name in extra else {}
    return f"{described.get('variant') or name.removeprefix(PADLESS + '-')} ({described.get('dtype', '?')})"


def write_chart(result: dict[str, Any], path: Path) -> None:
    """A bar chart of texts/s per config, each bar labelled with its padding share, saved as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result["configs"])
    rates = [result["configs"][name]["texts_per_s"] for name in names]
    fig = Figure(figsize=(7, 4), dpi=120)
    FigureCanvasAgg(fig)  # Agg directly: no pyplot, no GUI backend, no global state
    ax = fig.add_subplot()
    bars = ax.bar(names, rates, color=["#1f77b4" if name.startswith(PADLESS) else "#9e9e9e" for name in names])
    for bar, name, rate in zip(bars, names, rates):
        padding = result["configs"][name]["padding_fraction"]
        ax.annotate(f"{rate:.0f}/s\npadding {padding:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    work, machine = result["workload"], result["machine"]
    ax.set_ylabel("texts / s (median)")
    ax.set_ylim(0, max(rates) * 1.25)
    ax.set_title(f"{Path(result['model']['path']).name}: {work['mix']} mix, {work['n']} texts, "
                 f"{machine.get('gpu') or str(machine['torch_threads']) + ' threads'}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def render_table(result: dict[str, Any]) -> Table:
    """A rich Table of the per-config figures, for the CLI."""
    from rich.table import Table

    by_device = result["peak"].get("by_device") or {"cpu": result["peak"].get("by_precision", {})}
    peaks = "; ".join(f"{d}: " + ", ".join(f"{p} {v['gflops']:.0f}" for p, v in ps.items())
                      for d, ps in by_device.items())
    table = Table(title=f"offline benchmark, matmul peaks (GFLOP/s, GOP/s for int8): {peaks}",
                  caption="\n".join(result.get("notes", [])) or None)
    for column in ("config", "texts/s", "real tok/s", "padding", "agree b1", "% of fp32 peak", "% own peak",
                   "padless ×", "× padless"):
        table.add_column(column, justify="left" if column == "config" else "right", no_wrap=True)
    for name, entry in result["configs"].items():
        agreement = entry["agreement_with_pipeline_b1"]
        ratio = result["ratios"].get(f"padless_vs_{name}")
        shown = name if entry.get("device", "cpu") == "cpu" else f"{name} ({entry['device']})"
        table.add_row(shown, f"{entry['texts_per_s']:.1f}", f"{entry['real_tokens_per_s']:.0f}",
                      f"{entry['padding_fraction']:.1%}", "-" if agreement is None else f"{agreement:.1%}",
                      f"{entry['model_flops_pct_of_peak']:.1f}%",
                      f"{entry['model_flops_pct_of_precision_peak']:.1f}% {entry['precision']}",
                      "-" if ratio is None else f"{ratio:.2f}×",
                      f"{result['ratios'][f'{name}_vs_padless']:.2f}×" if f"{name}_vs_padless" in result["ratios"]
                      else "-")
    return table
