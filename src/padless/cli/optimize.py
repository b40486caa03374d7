"""``padless optimize`` and ``padless verify``: build gated variants, and check any variant against its reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from padless.cli.common import ensure_default, quiet_libraries
from padless.cli.options import ThreadsOpt
from padless.optimize.gate import GateConfig
from padless.optimize.openvino import AccuracyControl
from padless.optimize.search import CANDIDATES, OptimizeConfig

DropOpt = Annotated[float, typer.Option(envvar="PADLESS_MAX_ACCURACY_DROP", help="Gate: most accuracy a variant may lose, in points.")]
AgreeOpt = Annotated[float, typer.Option(envvar="PADLESS_MIN_AGREEMENT", help="Gate: least share of labels that must equal the reference's (a student's variants: its own torch fp32's).")]


def optimize(
    model: Annotated[str, typer.Argument(help="'default', a local Hugging Face folder, or a Hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", envvar="PADLESS_OPTIMIZE_OUT", help="Folder to write (model copy, variants, manifest.json, report.md, pareto.png).")],
    eval_set: Annotated[str | None, typer.Option("--eval", envvar="PADLESS_EVAL", help="Named set (vader-movies-test, vader-amazon, …) or a CSV/JSONL/Parquet file with text and label columns [default: vader-movies-test for 'default'].")] = None,
    calibration: Annotated[str | None, typer.Option(envvar="PADLESS_CALIBRATION", help="Text for calibration and the sensitivity sweep: named set or file [default: vader-amazon for 'default', else the eval texts].")] = None,
    calibration_rows: Annotated[int, typer.Option(envvar="PADLESS_CALIBRATION_ROWS", help="Calibration texts used.")] = OptimizeConfig.calibration_rows,
    candidates: Annotated[str, typer.Option(envvar="PADLESS_CANDIDATES", help="Comma-separated candidates to build.")] = ",".join(CANDIDATES),
    bench_texts: Annotated[int, typer.Option(envvar="PADLESS_OPTIMIZE_BENCH_TEXTS", help="Realistic-mix texts per timing round.")] = OptimizeConfig.bench_texts,
    long_texts: Annotated[int, typer.Option(envvar="PADLESS_OPTIMIZE_LONG_TEXTS", help="Long-mix texts per timing round (0 skips the long mix).")] = OptimizeConfig.long_texts,
    rounds: Annotated[int, typer.Option(envvar="PADLESS_OPTIMIZE_ROUNDS", help="Interleaved timing rounds (medians reported).")] = OptimizeConfig.rounds,
    students: Annotated[str, typer.Option(envvar="PADLESS_STUDENTS", help="Comma-separated folders from padless prune / distill; each joins as torch fp32, ONNX fp32, ONNX int8, OpenVINO int8 and (with native bf16) OpenVINO bf16 candidates, gated on accuracy against the reference and agreement with the student's own torch fp32.")] = "",
    max_accuracy_drop: DropOpt = GateConfig.max_accuracy_drop,
    min_agreement: AgreeOpt = GateConfig.min_agreement,
    ac_rows: Annotated[int, typer.Option("--accuracy-control-rows", envvar="PADLESS_ACCURACY_CONTROL_ROWS", help="openvino-int8-accuracy: eval rows held out of the gate to validate on (at most a quarter of the eval set).")] = AccuracyControl.rows,
    ac_ranking_rows: Annotated[int, typer.Option("--accuracy-control-ranking-rows", envvar="PADLESS_ACCURACY_CONTROL_RANKING_ROWS", help="openvino-int8-accuracy: of those, rows NNCF ranks the quantized layers on.")] = AccuracyControl.ranking_rows,
    ac_iterations: Annotated[int, typer.Option("--accuracy-control-iterations", envvar="PADLESS_ACCURACY_CONTROL_ITERATIONS", help="openvino-int8-accuracy: most layer groups NNCF may revert to float.")] = AccuracyControl.max_iterations,
    ac_calibration_rows: Annotated[int, typer.Option("--accuracy-control-calibration-rows", envvar="PADLESS_ACCURACY_CONTROL_CALIBRATION_ROWS", help="openvino-int8-accuracy: calibration texts NNCF uses (its subset_size).")] = AccuracyControl.calibration_rows,
    threads: ThreadsOpt = 0,
    overwrite: Annotated[bool, typer.Option(envvar="PADLESS_OVERWRITE", help="Replace a non-empty output folder.")] = False,
) -> None:
    """Build faster variants (ONNX Runtime, int8 dynamic/static/mixed/fallback, bf16, compiled bf16, and any pruned
    or distilled students), gate and time them, select one."""
    from rich.console import Console

    from padless.optimize.report import render_table
    from padless.optimize.search import optimize as run

    cfg = OptimizeConfig(eval_set=eval_set, calibration=calibration, calibration_rows=calibration_rows,
                         candidates=tuple(c.strip() for c in candidates.split(",") if c.strip()),
                         bench_texts=bench_texts, long_texts=long_texts, rounds=rounds, threads=threads,
                         students=tuple(f.strip() for f in students.split(",") if f.strip()),
                         gate=GateConfig(max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement),
                         accuracy_control=AccuracyControl(rows=ac_rows, ranking_rows=ac_ranking_rows,
                                                          max_iterations=ac_iterations,
                                                          calibration_rows=ac_calibration_rows))
    cfg.validate()
    quiet_libraries()
    ensure_default(model)
    err = Console(stderr=True)
    manifest = run(model, output, cfg, overwrite=overwrite, say=lambda line: err.print(line, highlight=False))
    Console(width=max(Console().width, 160)).print(render_table(manifest))
    typer.echo(f"selected {manifest['selected']}; wrote {output / 'manifest.json'}, {output / 'report.md'}, "
               f"{output / 'pareto.png'}")


def verify(
    variant: Annotated[str, typer.Argument(help="The model to check: a padless optimize folder or a model folder/name.")],
    reference: Annotated[str | None, typer.Option(envvar="PADLESS_REFERENCE", help="Reference model, run on torch fp32 [default: VARIANT's own weights].")] = None,
    eval_set: Annotated[str, typer.Option("--eval", envvar="PADLESS_EVAL", help="Named set or CSV/JSONL/Parquet file with text and label columns.")] = "vader-movies-test",
    backend: Annotated[str, typer.Option(envvar="PADLESS_BACKEND", help="VARIANT's backend (auto: an optimize folder's selected variant).")] = "auto",
    variant_name: Annotated[str | None, typer.Option("--variant", envvar="PADLESS_VARIANT", help="A named candidate of an optimize folder instead of the selected one.")] = None,
    text_column: Annotated[str, typer.Option(envvar="PADLESS_TEXT_COLUMN", help="Text column of an eval file.")] = "text",
    label_column: Annotated[str, typer.Option(envvar="PADLESS_LABEL_COLUMN", help="Label column of an eval file.")] = "label",
    max_accuracy_drop: DropOpt = GateConfig.max_accuracy_drop,
    min_agreement: AgreeOpt = GateConfig.min_agreement,
    threads: ThreadsOpt = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
) -> None:
    """Compare a variant with its fp32 reference on labelled data; exit 0 if it passes the gate, 1 if not."""
    from rich.console import Console
    from rich.table import Table

    from padless.config import ModelConfig
    from padless.engine import Classifier
    from padless.optimize.gate import compare, label_ids, load_eval

    gate = GateConfig(max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
    gate.validate()
    ModelConfig(model=variant, backend=backend).validate()
    data = load_eval(eval_set, text_column=text_column, label_column=label_column)
    quiet_libraries()
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
    table = Table(title=f"padless verify: {'PASS' if report['passed'] else 'FAIL'} on {data.name} "
                        f"({report['rows']} rows)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("reference_accuracy", "variant_accuracy", "accuracy_change_points", "reference_macro_f1",
                "variant_macro_f1", "agreement", "max_abs_logit_diff", "mean_abs_logit_diff"):
        table.add_row(key.replace("_", " "), f"{report[key]:.4g}")
        if key == "agreement" and own is not None:
            table.add_row("agreement of", own_name)
            table.add_row("agreement with the reference", f"{report['reference_agreement']:.4g}")
    table.add_row("gate", f"≤ {gate.max_accuracy_drop:g} points lost and ≥ {gate.min_agreement:.0%} agreement")
    Console().print(table)
    for reason in report["reasons"]:
        typer.echo(f"fails: {reason}")
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    raise typer.Exit(0 if report["passed"] else 1)


def register(app: typer.Typer) -> None:
    app.command()(optimize)
    app.command()(verify)
