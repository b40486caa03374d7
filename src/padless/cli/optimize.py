"""``padless optimize`` and ``padless verify``: build gated variants, and check any variant against its reference.

Both take a classifier (the accuracy gate, :mod:`padless.optimize.gate`) or an embedding model (the fidelity gate,
:mod:`padless.optimize.fidelity`); ``--task auto`` tells them apart by the folder (:func:`padless.tasks.resolve_task`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from padless.cli.common import ensure_default, quiet_libraries
from padless.cli.options import ThreadsOpt
from padless.optimize.fidelity import FidelityConfig
from padless.optimize.gate import GateConfig
from padless.optimize.openvino import AccuracyControl
from padless.optimize.search import CANDIDATES, OptimizeConfig

DropOpt = Annotated[float, typer.Option(envvar="PADLESS_MAX_ACCURACY_DROP", help="Gate: most accuracy a variant may lose, in points.")]
AgreeOpt = Annotated[float, typer.Option(envvar="PADLESS_MIN_AGREEMENT", help="Gate: least share of labels that must equal the reference's (a student's variants: its own torch fp32's).")]
TaskOpt = Annotated[str, typer.Option(envvar="PADLESS_TASK", help="classify, embed, or auto: embed for a sentence-transformers folder or an encoder without a classification head (and an optimize folder made for embed), else classify; 'default' with --task embed is all-MiniLM-L6-v2, as for padless embed.")]
CosMeanOpt = Annotated[float, typer.Option(envvar="PADLESS_MIN_COSINE_MEAN", help="Embed gate: least mean cosine between a variant's and torch fp32's vector of each eval text.")]
CosP1Opt = Annotated[float, typer.Option(envvar="PADLESS_MIN_COSINE_P1", help="Embed gate: least 1st percentile of that per-text cosine.")]
RecallOpt = Annotated[float, typer.Option("--min-recall-at-10", envvar="PADLESS_MIN_RECALL_AT_10", help="Embed gate: least recall@10 against fp32 (each query's 10 nearest eval texts, itself left out, that fp32's 10 share).")]
CorpusOpt = Annotated[int, typer.Option(envvar="PADLESS_FIDELITY_TEXTS", help="Embed gate: eval texts embedded and searched (the retrieval corpus); an --eval file with fewer distinct texts is refused.")]
QueriesOpt = Annotated[int, typer.Option(envvar="PADLESS_FIDELITY_QUERIES", help="Embed gate: of those, texts used as retrieval queries.")]
TextColOpt = Annotated[str, typer.Option(envvar="PADLESS_TEXT_COLUMN", help="Text column of an eval file.")]


def optimize(
    model: Annotated[str, typer.Argument(help="'default', a local Hugging Face folder, or a Hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", envvar="PADLESS_OPTIMIZE_OUT", help="Folder to write (model copy, variants, manifest.json, report.md, pareto.png).")],
    task: TaskOpt = "auto",
    eval_set: Annotated[str | None, typer.Option("--eval", envvar="PADLESS_EVAL", help="Named set (vader-movies-test, vader-amazon, …) or a CSV/JSONL/Parquet file with text and label columns [default: vader-movies-test for 'default']; embed: a named set or a CSV/TSV/JSONL/Parquet/text file of texts [default: the built-in English and Chinese mix].")] = None,
    text_column: TextColOpt = "text",
    calibration: Annotated[str | None, typer.Option(envvar="PADLESS_CALIBRATION", help="Text for calibration and the sensitivity sweep: named set or file [default: vader-amazon for 'default', else the eval texts; embed: built-in texts outside the eval corpus].")] = None,
    calibration_rows: Annotated[int, typer.Option(envvar="PADLESS_CALIBRATION_ROWS", help="Calibration texts used.")] = OptimizeConfig.calibration_rows,
    candidates: Annotated[str, typer.Option(envvar="PADLESS_CANDIDATES", help="Comma-separated candidates to build.")] = ",".join(CANDIDATES),
    bench_texts: Annotated[int, typer.Option(envvar="PADLESS_OPTIMIZE_BENCH_TEXTS", help="Realistic-mix texts per timing round.")] = OptimizeConfig.bench_texts,
    long_texts: Annotated[int, typer.Option(envvar="PADLESS_OPTIMIZE_LONG_TEXTS", help="Long-mix texts per timing round (0 skips the long mix).")] = OptimizeConfig.long_texts,
    rounds: Annotated[int, typer.Option(envvar="PADLESS_OPTIMIZE_ROUNDS", help="Interleaved timing rounds (medians reported).")] = OptimizeConfig.rounds,
    students: Annotated[str, typer.Option(envvar="PADLESS_STUDENTS", help="Comma-separated folders from padless prune / distill; each joins as torch fp32, ONNX fp32, ONNX int8, OpenVINO int8 and (with native bf16) OpenVINO bf16 candidates, gated on accuracy against the reference and agreement with the student's own torch fp32.")] = "",
    max_accuracy_drop: DropOpt = GateConfig.max_accuracy_drop,
    min_agreement: AgreeOpt = GateConfig.min_agreement,
    min_cosine_mean: CosMeanOpt = FidelityConfig.min_cosine_mean,
    min_cosine_p1: CosP1Opt = FidelityConfig.min_cosine_p1,
    min_recall_at_10: RecallOpt = FidelityConfig.min_recall_at_10,
    fidelity_texts: CorpusOpt = FidelityConfig.corpus_texts,
    fidelity_queries: QueriesOpt = FidelityConfig.queries,
    ac_rows: Annotated[int, typer.Option("--accuracy-control-rows", envvar="PADLESS_ACCURACY_CONTROL_ROWS", help="openvino-int8-accuracy: eval rows held out of the gate to validate on (at most a quarter of the eval set).")] = AccuracyControl.rows,
    ac_ranking_rows: Annotated[int, typer.Option("--accuracy-control-ranking-rows", envvar="PADLESS_ACCURACY_CONTROL_RANKING_ROWS", help="openvino-int8-accuracy: of those, rows NNCF ranks the quantized layers on.")] = AccuracyControl.ranking_rows,
    ac_iterations: Annotated[int, typer.Option("--accuracy-control-iterations", envvar="PADLESS_ACCURACY_CONTROL_ITERATIONS", help="openvino-int8-accuracy: most layer groups NNCF may revert to float.")] = AccuracyControl.max_iterations,
    ac_calibration_rows: Annotated[int, typer.Option("--accuracy-control-calibration-rows", envvar="PADLESS_ACCURACY_CONTROL_CALIBRATION_ROWS", help="openvino-int8-accuracy: calibration texts NNCF uses (its subset_size).")] = AccuracyControl.calibration_rows,
    threads: ThreadsOpt = 0,
    overwrite: Annotated[bool, typer.Option(envvar="PADLESS_OVERWRITE", help="Replace a non-empty output folder.")] = False,
) -> None:
    """Build faster variants (ONNX Runtime, int8 dynamic/static/mixed/fallback, bf16, compiled bf16, and any pruned
    or distilled students), gate and time them, select one. An embedding model's variants are gated on cosine and
    recall@10 against its torch fp32 vectors."""
    from rich.console import Console

    from padless.optimize.report import render_table
    from padless.optimize.search import optimize as run
    from padless.tasks import resolve_task

    cfg = OptimizeConfig(task=task, eval_set=eval_set, text_column=text_column, calibration=calibration,
                         calibration_rows=calibration_rows,
                         candidates=tuple(c.strip() for c in candidates.split(",") if c.strip()),
                         bench_texts=bench_texts, long_texts=long_texts, rounds=rounds, threads=threads,
                         students=tuple(f.strip() for f in students.split(",") if f.strip()),
                         gate=GateConfig(max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement),
                         fidelity=_fidelity(min_cosine_mean, min_cosine_p1, min_recall_at_10, fidelity_texts,
                                            fidelity_queries),
                         accuracy_control=AccuracyControl(rows=ac_rows, ranking_rows=ac_ranking_rows,
                                                          max_iterations=ac_iterations,
                                                          calibration_rows=ac_calibration_rows))
    cfg.validate()
    quiet_libraries()
    if resolve_task(model, task) == "classify":
        ensure_default(model)
    err = Console(stderr=True)
    manifest = run(model, output, cfg, overwrite=overwrite, say=lambda line: err.print(line, highlight=False))
    Console(width=max(Console().width, 160)).print(render_table(manifest))
    typer.echo(f"selected {manifest['selected']}; wrote {output / 'manifest.json'}, {output / 'report.md'}, "
               f"{output / 'pareto.png'}")


def _fidelity(mean: float, p1: float, recall: float, texts: int, queries: int) -> FidelityConfig:
    return FidelityConfig(min_cosine_mean=mean, min_cosine_p1=p1, min_recall_at_10=recall, corpus_texts=texts,
                          queries=queries)


def verify(
    variant: Annotated[str, typer.Argument(help="The model to check: a padless optimize folder or a model folder/name.")],
    reference: Annotated[str | None, typer.Option(envvar="PADLESS_REFERENCE", help="Reference model, run on torch fp32 [default: VARIANT's own weights].")] = None,
    task: TaskOpt = "auto",
    eval_set: Annotated[str | None, typer.Option("--eval", envvar="PADLESS_EVAL", help="Named set or CSV/JSONL/Parquet file with text and label columns [default: vader-movies-test]; embed: a named set or a file of texts [default: the built-in English and Chinese mix].", show_default=False)] = None,
    backend: Annotated[str, typer.Option(envvar="PADLESS_BACKEND", help="VARIANT's backend (auto: an optimize folder's selected variant).")] = "auto",
    variant_name: Annotated[str | None, typer.Option("--variant", envvar="PADLESS_VARIANT", help="A named candidate of an optimize folder instead of the selected one.")] = None,
    text_column: TextColOpt = "text",
    label_column: Annotated[str, typer.Option(envvar="PADLESS_LABEL_COLUMN", help="Label column of an eval file.")] = "label",
    max_accuracy_drop: DropOpt = GateConfig.max_accuracy_drop,
    min_agreement: AgreeOpt = GateConfig.min_agreement,
    min_cosine_mean: CosMeanOpt = FidelityConfig.min_cosine_mean,
    min_cosine_p1: CosP1Opt = FidelityConfig.min_cosine_p1,
    min_recall_at_10: RecallOpt = FidelityConfig.min_recall_at_10,
    fidelity_texts: CorpusOpt = FidelityConfig.corpus_texts,
    fidelity_queries: QueriesOpt = FidelityConfig.queries,
    threads: ThreadsOpt = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
) -> None:
    """Compare a variant with its fp32 reference (a classifier on labelled data, an embedding model on cosine and
    recall@10 over eval texts); exit 0 if it passes the gate, 1 if not."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from padless.config import ModelConfig
    from padless.tasks import resolve_task

    ModelConfig(model=variant, backend=backend).validate()
    quiet_libraries()
    if resolve_task(variant, task) == "embed":
        from padless.optimize.embed import embed_gate_line, figures, verify_embed

        fidelity = _fidelity(min_cosine_mean, min_cosine_p1, min_recall_at_10, fidelity_texts, fidelity_queries)
        fidelity.validate()
        report = verify_embed(variant, reference=reference, eval_set=eval_set, text_column=text_column,
                              backend=backend, variant_name=variant_name, gate=fidelity, threads=threads)
        measures, gate_line = figures(report), embed_gate_line(asdict(fidelity))
    else:
        gate = GateConfig(max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
        report, measures = _verify_classify(variant, reference, eval_set or "vader-movies-test", backend, variant_name,
                                            text_column, label_column, gate, threads)
        gate_line = f"≤ {gate.max_accuracy_drop:g} points lost and ≥ {gate.min_agreement:.0%} agreement"
    table = Table(title=f"padless verify: {'PASS' if report['passed'] else 'FAIL'} on {report['eval_set']} "
                        f"({report['rows']} rows)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for row in (*measures, ("gate", gate_line)):
        table.add_row(*row)
    Console().print(table)
    for reason in report["reasons"]:
        typer.echo(f"fails: {reason}")
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    raise typer.Exit(0 if report["passed"] else 1)


def _verify_classify(variant: str, reference: str | None, eval_set: str, backend: str, variant_name: str | None,
                     text_column: str, label_column: str, gate: GateConfig,
                     threads: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A classifier's gate report against its reference, and its measures as (name, value) rows."""
    from padless.engine import Classifier
    from padless.optimize.gate import compare, label_ids, load_eval

    gate.validate()
    data = load_eval(eval_set, text_column=text_column, label_column=label_column)
    ensure_default(variant)
    var = Classifier(variant, backend=backend, variant=variant_name, threads=threads)
    ref = Classifier(reference or variant, backend="torch", threads=threads)
    if ref.labels != var.labels:
        from padless.errors import ConfigError

        raise ConfigError(f"the variant's labels {var.labels} differ from the reference's {ref.labels}")
    own, own_name = None, ""
    if var.weights_dir != var.path:  # a student of an optimize folder: agreement with its own fp32, as optimize gates
        from padless.optimize.candidates import student_fp32_name

        own_name = student_fp32_name(var.weights_dir.name)  # the name optimize's manifest gives it
        own = Classifier(str(var.weights_dir), backend="torch", threads=threads).logits(data.texts)[0]
    report = compare(ref.logits(data.texts)[0], var.logits(data.texts)[0], label_ids(data.labels, ref.labels), gate,
                     agreement_reference=own, agreement_of=own_name)
    report = {"variant": var.describe(), "reference": ref.describe(), "eval_set": data.name, **report}
    measures = []
    for key in ("reference_accuracy", "variant_accuracy", "accuracy_change_points", "reference_macro_f1",
                "variant_macro_f1", "agreement", "max_abs_logit_diff", "mean_abs_logit_diff"):
        measures.append((key.replace("_", " "), f"{report[key]:.4g}"))
        if key == "agreement" and own is not None:
            measures += [("agreement of", own_name),
                         ("agreement with the reference", f"{report['reference_agreement']:.4g}")]
    return report, measures


def register(app: typer.Typer) -> None:
    app.command()(optimize)
    app.command()(verify)
