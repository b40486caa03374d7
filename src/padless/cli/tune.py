"""``padless tune``: measure batch and thread settings on this machine and write them where classify, embed, serve,
bench and the Ray faces read them (:mod:`padless.tuned`). Registered on the app by :func:`register`."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from padless.cli.common import ensure_default, quiet_libraries
from padless.cli.options import BackendOpt
from padless.errors import PadlessError


def _bounds(text: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none", "off"):
        return ()
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise PadlessError(f"--p99-ms takes comma-separated milliseconds (e.g. 50,200,1000) or none, not {text!r}")\
            from None


def tune(
    model: Annotated[str, typer.Argument(envvar="PADLESS_MODEL", help="'default' (padless's classifier; with --task embed all-MiniLM-L6-v2), a local folder (a padless optimize folder tunes its selected variant), or a Hub id.")] = "default",
    task: Annotated[str, typer.Option(envvar="PADLESS_TASK", help="auto (the folder's own), classify or embed.")] = "auto",
    backend: BackendOpt = "auto",
    mix: Annotated[str, typer.Option(envvar="PADLESS_TUNE_MIX", help="Workload: realistic (3–300 tokens), short (3–32), long (50–512), or a file of texts (CSV, TSV, JSONL, Parquet, .txt).")] = "realistic",
    column: Annotated[str, typer.Option("--column", "-c", envvar="PADLESS_COLUMN", help="Text column when --mix is a file.")] = "text",
    p99_ms: Annotated[str, typer.Option(envvar="PADLESS_TUNE_P99_MS", help="Serving: p99 bounds in ms, comma-separated (50,200,1000); the first is what `padless serve` runs; none skips serving.")] = "200",
    offline: Annotated[bool, typer.Option("--offline/--no-offline", envvar="PADLESS_TUNE_OFFLINE", help="Tune the offline settings (classify, embed, bench).")] = True,
    minutes: Annotated[float, typer.Option(envvar="PADLESS_TUNE_MINUTES", help="The whole run's time budget.")] = 10.0,
    repeats: Annotated[int, typer.Option(envvar="PADLESS_TUNE_REPEATS", help="Interleaved repeats per offline comparison.")] = 3,
    seed: Annotated[int, typer.Option(envvar="PADLESS_TUNE_SEED", help="Workload seed.")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", envvar="PADLESS_TUNE_OUTPUT", help="Settings file to write; its report (.md) and chart (.png) go beside it [default: padless-tuned.json in the model's folder].", show_default=False)] = None,
) -> None:
    """Measure max_batch_tokens, max_batch_size, threads (and OpenVINO streams) offline, and the server's batcher
    settings at each p99 bound, on this machine; write them for every face to read."""
    quiet_libraries()
    from rich.console import Console

    from padless import tuned
    from padless.tune.report import markdown, render, write_chart
    from padless.tune.run import TuneConfig, run_tune

    cfg = TuneConfig(model=model, task=task, backend=backend, mix=mix, column=column, p99_ms=_bounds(p99_ms),
                     offline=offline, minutes=minutes, repeats=repeats, seed=seed)
    cfg.validate()
    if task != "embed":
        ensure_default(model)
    path = output or tuned.beside_model(model, task)
    _check_writable(path)
    console = Console(stderr=True)
    console.print(f"tuning {model} for {minutes:g} min; settings go to {path}")
    with _Display(console, minutes * 60) as display:
        result = run_tune(cfg, display.events(), log_dir=path.parent)
    document = result.document
    if document.get("offline") or document.get("serving"):
        tuned.write(path, document)
        path.with_suffix(".md").write_text(markdown(document) + "\n")
        write_chart(document, path.with_suffix(".png"))
        wide = Console(width=max(Console().width, 140))
        for table in render(document):
            wide.print(table)
        typer.echo(f"wrote {path}, {path.with_suffix('.md')} and {path.with_suffix('.png')}")
    else:
        console.print("nothing measured: no settings written")
    if result.interrupted:
        console.print("stopped by Ctrl-C: kept the best settings found so far")
        raise typer.Exit(130)


def _check_writable(path: Path) -> None:
    """Refuse at once, not after the budget is spent, when the settings cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(path.name + ".probe")
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PadlessError(f"cannot write {path} ({err.strerror}); pass -o FILE") from None


class _Display:
    """A progress bar over the time budget with the best so far (on a terminal), or a line per point tried."""

    def __init__(self, console: Any, total_s: float) -> None:
        self.console, self.total_s = console, total_s
        self.started = time.monotonic()
        self.progress: Any = None
        self.stop = threading.Event()
        self.best = ""

    def __enter__(self) -> _Display:
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.fields[best]}"), console=self.console)
            self.progress.start()
            self.task = self.progress.add_task("starting", total=self.total_s, best="")
            threading.Thread(target=self._tick, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.progress is not None:
            self.progress.stop()

    def _tick(self) -> None:
        while not self.stop.wait(0.5):
            self.progress.update(self.task, completed=time.monotonic() - self.started)

    def events(self) -> Any:
        from padless.tune.run import Events

        return Events(say=self.say, phase=self.phase, outcome=self.outcome)

    def say(self, message: str) -> None:
        self.console.print(message)

    def phase(self, name: str, deadline: float) -> None:
        self.best = ""
        if self.progress is not None:
            self.progress.update(self.task, description=name, best="")
        else:
            self.console.print(f"{name}: until {deadline - self.started:.0f} s")

    def outcome(self, phase: str, outcome: Any, best: dict[str, Any]) -> None:
        unit = "texts/s" if phase == "offline" else "req/s"
        figure = outcome.figure if outcome.kept else outcome.best_figure
        shown = ", ".join(f"{k}={v:g}" for k, v in best.items())
        self.best = f"best {figure:.1f} {unit} ({shown})" if figure is not None else f"best: {shown}"
        if self.progress is not None:
            self.progress.update(self.task, best=self.best)
        else:
            tried = ", ".join(f"{k}={v:g}" for k, v in outcome.point.items() if outcome.best.get(k) != v)
            self.console.print(f"{phase}: tried {tried}: {'kept' if outcome.kept else 'not kept'} ({outcome.note}); "
                               f"{self.best}")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
