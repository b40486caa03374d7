"""``padless tune``: measure a model's batch and thread settings on this machine and write them where every face
reads them (:mod:`padless.tuned`).

Phases, inside one time budget (``minutes``, counted from the start; Ctrl-C ends it early, keeping the best so far):

1. the GPU step (:mod:`padless.tune.gpu`), one line on a CPU: on a GPU, the token budget memory and utilisation
   allow, where the offline search starts (and which bounds it);
2. offline (:mod:`padless.tune.offline`): the engine ``classify``/``embed`` runs, timed on one workload; a coordinate
   search (:mod:`padless.tune.search`) over the token budget, row cap and thread layout, then the chosen point and
   the defaults timed against each other, interleaved;
3. serving (:mod:`padless.tune.serving`), per p99 bound: the batcher settings of ``padless serve`` with the highest
   capacity at the bound, against the defaults' capacity measured in the same run.

The offline phase gets ``OFFLINE_SHARE`` of the budget when serving is tuned too; the bounds share the rest.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from padless.config import TASKS, EngineSpec
from padless.errors import ConfigError
from padless.tune.search import CoordinateSearch, Interleaved, Outcome, Point, key

OFFLINE_SHARE = 0.35
END_RESERVE_S = 8.0  # stopping the last server and writing the report (at most a tenth of the budget)
SERVE_TEXTS = 400


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """What ``padless tune`` measures, each field a flag and a ``PADLESS_TUNE_*`` variable of the command."""

    model: str = "default"
    task: str = "auto"
    backend: str = "auto"
    mix: str = "realistic"  # a workload mix (realistic, short, long) or a file of texts
    column: str = "text"  # the text column when ``mix`` is a file
    p99_ms: tuple[float, ...] = (200.0,)  # empty: no serving phase
    offline: bool = True
    minutes: float = 10.0
    repeats: int = 3
    seed: int = 0

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.minutes <= 0:
            raise ConfigError(f"--minutes must be positive, got {self.minutes:g}")
        if any(p <= 0 for p in self.p99_ms):
            raise ConfigError("every --p99-ms bound must be positive")
        if not self.offline and not self.p99_ms:
            raise ConfigError("nothing to tune: --no-offline and no --p99-ms bound")
        if self.repeats < 2:
            raise ConfigError("--repeats must be at least 2 (one measurement has no spread)")
        if self.backend == "dummy":
            raise ConfigError("the dummy backend has nothing to tune")


@dataclass
class Events:
    """What the run reports as it goes: a line, the phase starting (its name and deadline), each challenge."""

    say: Callable[[str], None] = lambda msg: None
    phase: Callable[[str, float], None] = lambda name, deadline: None
    outcome: Callable[[str, Outcome, Point], None] = lambda phase, outcome, best: None


@dataclass
class TuneResult:
    """The settings document (what :func:`padless.tuned.write` stores) and whether Ctrl-C ended the run."""

    document: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


def run_tune(cfg: TuneConfig, events: Events | None = None, *, log_dir: Path,
             clock: Callable[[], float] = time.monotonic,
             load: Callable[[EngineSpec], Any] | None = None) -> TuneResult:
    """Run the phases of the module docstring; returns what was found, however the run ended. The servers' logs go
    to ``log_dir``."""
    from padless.machine import describe
    from padless.tasks import load_engine, resolve_task
    from padless.tuned import fingerprint

    cfg.validate()
    events = events or Events()
    started = clock()
    end = started + cfg.minutes * 60 - min(END_RESERVE_S, cfg.minutes * 6)
    load = load or load_engine
    task = resolve_task(cfg.model, cfg.task)
    result = TuneResult({"model": cfg.model, "task": task, "date": datetime.date.today().isoformat(),
                         "machine": fingerprint(), "software": describe(), "tune": {**asdict(cfg), "task": task}})
    doc = result.document
    try:
        spec = EngineSpec.of(model=cfg.model, task=task, backend=cfg.backend)
        engine = load(spec)
        texts = _workload(cfg, engine)
        from padless.tune.gpu import tune_gpu

        doc["gpu"] = tune_gpu(engine, texts, events.say)
        offline_end = end if not cfg.p99_ms else started + (end - started) * OFFLINE_SHARE
        if cfg.offline:
            doc["offline"] = {}
            _offline(doc["offline"], cfg, spec, engine, load, texts, offline_end, events, clock, doc["gpu"])
        serve_texts = _serve_texts(cfg, engine)
        max_length = engine.max_length
        del engine
        bounds = list(cfg.p99_ms)
        doc["serving_by_p99"] = []
        for i, p99 in enumerate(bounds):
            share_end = clock() + (end - clock()) / (len(bounds) - i)
            doc["serving_by_p99"].append(found := {"p99_ms": p99})
            _serving(found, cfg, task, serve_texts, max_length, share_end, events, clock, log_dir)
    except KeyboardInterrupt:
        result.interrupted = True
    if not (doc.get("offline") or {}).get("settings"):  # stopped before the defaults were even measured
        doc.pop("offline", None)
    # `padless serve` runs the first bound's settings (kept even when Ctrl-C stopped its search part-way).
    first: dict[str, Any] = next(iter(doc.get("serving_by_p99") or []), {})
    if first.get("settings"):
        doc["serving"] = first
    doc["elapsed_s"] = round(clock() - started, 1)
    doc["interrupted"] = result.interrupted
    return result


def _workload(cfg: TuneConfig, engine: Any) -> list[str]:
    """The offline workload, sized so one pass takes about a 400th of the budget (0.3–2 s): enough passes for
    the search, each long enough to time."""
    from padless.tune.offline import load_texts

    sample = load_texts(cfg.mix, engine.encoder.tokenizer, n=128, seed=cfg.seed, column=cfg.column)
    engine.outputs(sample)
    t0 = time.perf_counter()
    engine.outputs(sample)
    rate = len(sample) / (time.perf_counter() - t0)
    target_s = min(2.0, max(0.3, cfg.minutes * 60 / 400))
    n = int(min(4000, max(64, rate * target_s)))
    return load_texts(cfg.mix, engine.encoder.tokenizer, n=n, seed=cfg.seed, column=cfg.column)


def _serve_texts(cfg: TuneConfig, engine: Any) -> list[str]:
    from padless.tune.offline import load_texts

    return load_texts(cfg.mix, engine.encoder.tokenizer, n=SERVE_TEXTS, seed=cfg.seed + 1, column=cfg.column)


def _offline(section: dict[str, Any], cfg: TuneConfig, spec: EngineSpec, engine: Any,
             load: Callable[[EngineSpec], Any], texts: list[str], deadline: float, events: Events,
             clock: Callable[[], float], gpu: dict[str, Any] | None = None) -> None:
    """Phase 2, filled into ``section`` as it goes (so Ctrl-C keeps the best so far): the search (from the GPU
    step's budget where there was one), then the chosen point against the defaults, interleaved."""
    from padless.tune.offline import OfflineBench

    events.phase("offline", deadline)
    bench = OfflineBench(spec, engine, load, texts)
    start = defaults = bench.start()
    if gpu is not None:
        start = {**defaults, "max_batch_tokens": gpu["max_batch_tokens"]}
    dimensions = bench.dimensions(start, gpu["allowed_tokens"] if gpu is not None else None)
    t0 = clock()
    bench.measure(start)
    one = clock() - t0
    confirm = 2 * cfg.repeats * one + 5.0
    judge = Interleaved(bench.measure, repeats=cfg.repeats)

    def challenge(best: Point, candidate: Point) -> Outcome:
        bench.hold(best, candidate)
        return judge(best, candidate)

    search = CoordinateSearch(dimensions, start, challenge, deadline=deadline - confirm, clock=clock,
                              valid=bench.valid, min_cost=2 * cfg.repeats * one,
                              on_outcome=lambda o: events.outcome("offline", o, search.best))
    section.update(backend=cfg.backend, resolved_backend=bench.backend, workload=cfg.mix, texts=len(texts),
                   defaults=defaults, settings=start, dimensions={d.name: list(d.values) for d in dimensions})
    try:
        search.run()
    finally:
        section.update(settings=search.best, stopped_by=search.stopped_by,
                       trials=[_trial(o) for o in search.outcomes])
    best = search.best
    bench.hold(defaults, best)
    if best != defaults:
        defaults_s, chosen_s = judge.pair(defaults, best)
    else:
        defaults_s = chosen_s = [bench.measure(defaults) for _ in range(cfg.repeats)]
    section["comparison"] = _comparison(defaults_s, chosen_s)
    if section["comparison"]["ratio"] < 1:
        # The search's steps each won, yet the end point lost to the defaults head to head: keep the defaults.
        events.say("offline: the chosen settings did not beat the defaults head to head; keeping the defaults")
        section.update(settings=defaults, kept_defaults=True)


def _comparison(defaults: list[float], chosen: list[float]) -> dict[str, Any]:
    import statistics

    d, c = statistics.median(defaults), statistics.median(chosen)
    return {"defaults_texts_per_s": round(d, 1), "defaults_spread": round(max(defaults) - min(defaults), 1),
            "chosen_texts_per_s": round(c, 1), "chosen_spread": round(max(chosen) - min(chosen), 1),
            "ratio": round(c / d, 3), "samples": {"defaults": [round(x, 1) for x in defaults],
                                                  "chosen": [round(x, 1) for x in chosen]}}


def _trial(outcome: Outcome) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {"point": outcome.point, "against": outcome.best, "kept": outcome.kept, "figure": r(outcome.figure),
            "spread": r(outcome.spread), "best_figure": r(outcome.best_figure), "best_spread": r(outcome.best_spread),
            "note": outcome.note}


def _serving(section: dict[str, Any], cfg: TuneConfig, task: str, texts: list[str], max_length: int,
             deadline: float, events: Events, clock: Callable[[], float], log_dir: Path) -> None:
    """Phase 3 for the bound in ``section``, filled in as it goes (so Ctrl-C keeps what was found): the defaults'
    capacity, then the search from them, then the defaults re-checked."""
    from padless.server.run import serving_backend
    from padless.tasks import model_path
    from padless.tune import serving

    p99 = section["p99_ms"]
    events.phase(f"serving p99<={p99:g}ms", deadline)
    backend = serving_backend(str(model_path(cfg.model, task)), cfg.backend, task)
    trials = serving.ServingTrials(model=cfg.model, task=task, backend=backend, texts=texts, p99_ms=p99,
                                   deadline=deadline, log_dir=log_dir, route="/embed" if task == "embed" else
                                   "/predict")
    start = serving.start_point()
    section.update(backend=cfg.backend, resolved_backend=backend, defaults=start, inputs_per_request=1)
    try:
        t0 = clock()
        alone = section["alone_p99_ms"] = trials.alone_p99_ms(start)
        if alone is None or alone > p99:
            section["not_tuned"] = (f"requests sent one at a time already have a p99 of {alone or float('nan'):.0f} ms "
                                    "on this workload: no setting can hold the bound")
            events.say(f"serving p99<={p99:g} ms: {section['not_tuned']}")
            return
        base = trials.first(start, start_rate=20.0)
        first_cost = clock() - t0
        section["defaults_capacity_rps"] = base
        if base is None:
            section["not_tuned"] = f"the defaults held no rate of {serving.MIN_RATE:g} req/s or more in the time"
            events.say(f"serving p99<={p99:g} ms: {section['not_tuned']}")
            return
        reserve = trials.recheck_cost(base * 2)
        search = CoordinateSearch(serving.dimensions(p99, max_length), start, trials.challenge,
                                  deadline=deadline - reserve, clock=clock, min_cost=min(first_cost, 40.0),
                                  on_outcome=lambda o: events.outcome(f"p99<={p99:g}ms", o, search.best))
        try:
            search.run()
        finally:
            best = search.best
            section.update(settings=best, capacity_rps=trials.capacity.get(key(best)),
                           stopped_by=search.stopped_by, trials=[_trial(o) for o in search.outcomes])
        section.update(_recheck(trials, start, best, base, deadline, clock, events))
        section["ratio"] = round((section["capacity_rps"] or 0) / section["defaults_capacity_rps"], 3)
    finally:
        trials.close()


def _recheck(trials: Any, start: Point, best: Point, base: float, deadline: float, clock: Callable[[], float],
             events: Events) -> dict[str, Any]:
    """The defaults run again at the chosen point's capacity, after the search (the first server of a run may have
    started cold). If they hold it twice, the gain was not real: the defaults stay, at that capacity."""
    chosen = trials.capacity.get(key(best))
    if best == start or chosen is None:
        return {}
    if clock() + trials.recheck_cost(chosen) > deadline:
        events.say("serving: no time left to re-check the defaults at the chosen capacity")
        return {"defaults_rechecked": None}
    if trials.holds(start, chosen):
        events.say(f"serving: the defaults also hold {chosen:.1f} req/s; keeping the defaults")
        return {"defaults_rechecked": True, "settings": start, "defaults_capacity_rps": chosen,
                "capacity_rps": chosen}
    return {"defaults_rechecked": False}

