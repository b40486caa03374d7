"""How an optimize run is shown: a Markdown table, a rich table for the terminal, and the Pareto chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = ("variant", "accuracy", "Δ points", "agreement", "max |Δ logit|", "realistic texts/s", "long texts/s",
           "× torch fp32", "verdict")


def rows(manifest: dict[str, Any]) -> list[list[str]]:
    out = []
    for c in manifest["candidates"]:
        ev, tp = c["eval"], c["throughput"]
        out.append([
            c["name"], f"{ev['variant_accuracy']:.2%}", f"{ev['accuracy_change_points']:+.2f}",
            f"{ev['agreement']:.2%}",
            f"{ev['max_abs_logit_diff']:.2g}", f"{tp['realistic']:.1f}", f"{tp.get('long', float('nan')):.1f}",
            f"{c['speedup_vs_torch_fp32']:.2f}×", c["status"],
        ])
    return out


def write_report(manifest: dict[str, Any], path: Path) -> None:
    gate = manifest["gate"]
    lines = [
        f"# padless optimize: {manifest['source_model']}",
        "",
        f"Eval set: {manifest['eval_set']['name']} ({manifest['eval_set']['rows']} rows). Calibration: "
        f"{manifest['calibration']['source']} ({manifest['calibration']['rows']} texts). Gate: lose at most "
        f"{gate['max_accuracy_drop']:g} points of accuracy and agree on at least {gate['min_agreement']:.0%} of "
        f"labels with torch fp32. Throughput: median of {manifest['rounds']} interleaved rounds on "
        f"{manifest['workloads']} texts, one process, {manifest['machine']['usable_cores']} cores "
        f"(CPU capability {manifest['machine']['cpu_capability']}).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(r) + " |" for r in rows(manifest)),
        "",
        f"Selected: **{manifest['selected']}**.",
        "",
    ]
    path.write_text("\n".join(lines))


def render_table(manifest: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"padless optimize: selected {manifest['selected']}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("variant", "verdict") else "right",
                         no_wrap=column != "verdict")
    for r in rows(manifest):
        table.add_row(*r)
    return table


def write_chart(manifest: dict[str, Any], path: Path) -> None:
    """Accuracy against realistic-mix throughput, one point per variant, the gate's accuracy floor drawn in."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ref = next(c for c in manifest["candidates"] if c["name"] == manifest["reference"]["name"])
    floor = ref["eval"]["reference_accuracy"] - manifest["gate"]["max_accuracy_drop"] / 100
    points = [(c["throughput"]["realistic"], c["eval"]["variant_accuracy"]) for c in manifest["candidates"]]
    for i, c in enumerate(manifest["candidates"]):
        x, y = points[i]
        color = "#2ca02c" if c["eval"]["passed"] else "#d62728"
        ax.scatter([x], [y], s=90 if c["name"] == manifest["selected"] else 40, color=color,
                   edgecolors="black" if c["name"] == manifest["selected"] else "none", zorder=3)
        ax.annotate(f"{c['name']}\n{c['eval']['agreement']:.1%} agree", (x, y), textcoords="offset points",
                    xytext=(5, 5 if _label_above(i, points) else -22), fontsize=7)
    ax.axhline(floor, color="#d62728", linestyle="--", linewidth=1,
               label=f"gate: accuracy ≥ reference − {manifest['gate']['max_accuracy_drop']:g} pt "
                     f"and ≥ {manifest['gate']['min_agreement']:.0%} agreement")
    ax.set_xlabel("texts / s, realistic mix")
    ax.set_ylabel(f"accuracy on {manifest['eval_set']['name']}")
    ax.set_title(f"{manifest['source_model']}: green passes the gate, ringed is selected", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _label_above(i: int, points: list[tuple[float, float]]) -> bool:
    """Put a label below its point when a neighbour close in speed sits higher (or level, and comes first), so
    neighbours' labels do not overprint each other."""
    x, y = points[i]
    for j, (xj, yj) in enumerate(points):
        if j != i and abs(xj - x) <= 0.1 * max(x, xj) and (yj > y or (yj == y and j < i)):
            return False
    return True
