"""What ``padless tune`` shows and writes beside the settings: every point tried (figure and spread against the best
it challenged), the chosen settings against the defaults measured in the same run, and a chart (offline texts/s
against the token budget per thread layout; serving capacity against the p99 bound)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _changed(point: dict[str, Any], against: dict[str, Any]) -> str:
    diff = {k: v for k, v in point.items() if against.get(k) != v}
    return ", ".join(f"{k}={v:g}" for k, v in diff.items()) or "(same)"


def _settings(point: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in (point or {}).items())


def _figure(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" + (f" ±{spread / 2:.1f}" if spread else "")


def rows(document: dict[str, Any]) -> list[list[str]]:
    """One row per point tried, in order: phase, the change tried, its figure, the best's, kept, why."""
    out = []
    phases = [("offline", document.get("offline"))] + [
        (f"serve p99<={s['p99_ms']:g}ms", s) for s in document.get("serving_by_p99") or []]
    for name, section in phases:
        for t in (section or {}).get("trials", []):
            out.append([name, _changed(t["point"], t["against"]), _figure(t["figure"], t["spread"]),
                        _figure(t["best_figure"], t["best_spread"]), "kept" if t["kept"] else "-", t["note"]])
    return out


def summary(document: dict[str, Any]) -> list[list[str]]:
    """The chosen settings against the defaults: offline texts/s (interleaved), and capacity per bound."""
    out = []
    offline = document.get("offline") or {}
    comp = offline.get("comparison")
    if comp:
        out.append([f"offline ({offline['resolved_backend']}, {offline['workload']}) texts/s",
                    f"{comp['defaults_texts_per_s']:.1f} ±{comp['defaults_spread'] / 2:.1f}",
                    f"{comp['chosen_texts_per_s']:.1f} ±{comp['chosen_spread'] / 2:.1f}", f"{comp['ratio']:.2f}x",
                    _settings(offline.get("settings"))])
    for s in document.get("serving_by_p99") or []:
        base, tuned = s.get("defaults_capacity_rps"), s.get("capacity_rps")
        out.append([f"serve ({s.get('resolved_backend', '?')}) req/s at p99<={s['p99_ms']:g} ms", _figure(base),
                    _figure(tuned), f"{s['ratio']:.2f}x" if s.get("ratio") else "-",
                    _settings(s.get("settings")) or f"not tuned: {s.get('not_tuned', 'stopped')}"])
    return out


TRIAL_HEADER = ["phase", "tried", "figure", "best then", "kept", "why"]
SUMMARY_HEADER = ["measure", "defaults", "tuned", "ratio", "tuned settings"]


def render(document: dict[str, Any]) -> list[Any]:
    """Two rich tables: the summary, then every point tried."""
    from rich.table import Table

    tables = []
    for title, header, body in (("padless tune: tuned against defaults, same run", SUMMARY_HEADER,
                                 summary(document)),
                                ("every point tried (± half the spread of its repeats)", TRIAL_HEADER,
                                 rows(document))):
        table = Table(title=title)
        for h in header:
            table.add_column(h)
        for r in body:
            table.add_row(*r)
        tables.append(table)
    return tables


def markdown(document: dict[str, Any]) -> str:
    """The report as Markdown: machine, summary, every point tried."""
    m = document["machine"]
    lines = [f"# padless tune: {document['model']} ({document['task']})", "",
             f"Measured {document['date']} on {m['cpu']} ({m['usable_cores']} cores; "
             f"{' '.join(m.get('cpu_flags') or [])}); {document['elapsed_s']:.0f} s"
             + (" (stopped early by Ctrl-C)" if document.get("interrupted") else "") + ".", ""]
    for header, body in ((SUMMARY_HEADER, summary(document)), (TRIAL_HEADER, rows(document))):
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
        lines.append("")
    return "\n".join(lines)


def write_chart(document: dict[str, Any], path: Path) -> None:
    """The PNG: offline texts/s against the token budget, one series per thread layout; capacity against p99."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    series: dict[str, list[tuple[float, float]]] = {}
    for t in (document.get("offline") or {}).get("trials", []):
        for point, figure in ((t["point"], t["figure"]), (t["against"], t["best_figure"])):
            if figure is not None:
                layout = f"{point['threads']} threads" + (f" x {point['streams']} streams" if "streams" in point
                                                          else "")
                series.setdefault(layout, []).append((point["max_batch_tokens"], figure))
    for layout, pts in sorted(series.items()):
        left.scatter(*zip(*pts, strict=True), label=layout, alpha=0.7)
    left.set_xscale("log", base=2)
    left.set_xlabel("max_batch_tokens")
    left.set_ylabel("texts/s (offline)")
    left.set_title("offline: every timing")
    if series:
        left.legend(fontsize=8)
    bounds = [s for s in document.get("serving_by_p99") or [] if s.get("defaults_capacity_rps")]
    if bounds:
        xs = [s["p99_ms"] for s in bounds]
        right.plot(xs, [s["defaults_capacity_rps"] for s in bounds], "o-", label="defaults")
        right.plot(xs, [s.get("capacity_rps") or 0 for s in bounds], "s-", label="tuned")
        right.set_xscale("log")
        right.legend(fontsize=8)
    right.set_xlabel("p99 bound (ms)")
    right.set_ylabel("capacity (requests/s, one text each)")
    right.set_title("serving: capacity at the bound")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
