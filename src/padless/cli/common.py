"""What every ``padless`` command shares: quiet libraries, building the default model with a progress bar, and
applying ``padless tune``'s settings file to the options the user left at their defaults.

The command modules (:mod:`~padless.cli.main`, :mod:`~padless.cli.optimize`, :mod:`~padless.cli.compress`) import
these; this module imports none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from padless.loader.folders import quiet_libraries as quiet_libraries  # defined below the engine; named here too

if TYPE_CHECKING:
    from padless.config import EngineSpec, QueueConfig


# click's ParameterSource members, by name: recent typer vendors its own click, whose enum is not click's.
GIVEN_SOURCES = ("COMMANDLINE", "ENVIRONMENT")


def explicit_options(ctx: typer.Context) -> set[str]:
    """The parameters of ``ctx``'s command the user gave, by flag or ``PADLESS_*`` environment variable."""
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None) in GIVEN_SOURCES}


def apply_tuned(ctx: typer.Context, engine: EngineSpec, *, section: str, tuned: str | None,
                queue: QueueConfig | None = None, task: str | None = None,
                keep: tuple[str, ...] = ()) -> tuple[EngineSpec, QueueConfig | None]:
    """``engine`` (and ``queue``) with the tuned file's ``section`` applied to every setting the user left at its
    default (see :func:`padless.tuned.apply`), except those named in ``keep``; the file's note or warning printed
    on stderr. ``task``: the task whose model folder holds the file, when ``engine`` does not say (``embed``'s
    ``default`` is the embedding model); the returned engine keeps ``engine``'s own task. Loads nothing; a
    ``--tuned`` file that is missing or not padless's raises :class:`~padless.errors.ConfigError`."""
    from padless import tuned as tuned_file

    looked_up = engine if task is None else engine.replace(task=task)
    applied = tuned_file.apply(looked_up, section=section, explicit=explicit_options(ctx) | set(keep), tuned=tuned,
                               queue=queue)
    applied.announce(lambda line: typer.echo(line, err=True))
    spec = applied.spec if task is None else applied.spec.replace(task=engine.model.task)
    return spec, applied.queue


def build_progress(console: object) -> object:
    """A rich progress bar for the default model's fine-tune: steps done of all, and the loss."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("building default model"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                    TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), console=console)  # type: ignore[arg-type]


def build_default_with_progress() -> dict[str, Any]:
    """Build the default model, reporting progress on stderr (a bar on a terminal, a line per 100 steps
    otherwise); returns its model card."""
    from rich.console import Console

    from padless.default_model import build_default
    from padless.loader import default_model_dir

    console = Console(stderr=True)
    console.print(f"[bold]building the default model[/] into {default_model_dir()} (one-off, ~10 min on 2 cores)")
    progress = build_progress(console) if console.is_terminal else None
    if progress is not None:
        with progress:  # type: ignore[attr-defined]
            task = progress.add_task("build", total=None, loss=0.0)  # type: ignore[attr-defined]

            def on_step(step: int, total: int, loss: float) -> None:
                progress.update(task, completed=step, total=total, loss=loss)  # type: ignore[attr-defined]

            card = build_default(on_step=on_step)
    else:
        def on_step(step: int, total: int, loss: float) -> None:
            if step % 100 == 0 or step == total:
                console.print(f"step {step}/{total} loss {loss:.3f}")

        card = build_default(on_step=on_step)
    console.print(f"held-out accuracy {card['held_out_accuracy']:.2%} on {card['eval_set']}")
    return card


def ensure_default(model: str) -> None:
    """Build the default model first, with progress, if ``model`` names it and it is not built yet."""
    from padless.default_model import ensure_default as ensure

    ensure(model, build=build_default_with_progress)
