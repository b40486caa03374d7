"""How an optimize run is shown: a Markdown table, a rich table for the terminal, and the Pareto chart; a classifier's
run shows accuracy and agreement, an embedding model's (manifest task ``embed``) the three fidelity figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = ("variant", "accuracy", "Δ points", "agreement", "max |Δ logit|", "realistic texts/s", "long texts/s",
           "× torch fp32", "build s", "verdict")
EMBED_COLUMNS = ("variant", "mean cosine", "p1 cosine", "recall@10", "realistic texts/s", "long texts/s",
                 "× torch fp32", "build s", "verdict")


def _embed(manifest: dict[str, Any]) -> bool:
    return manifest.get("task") == "embed"


def columns(manifest: dict[str, Any]) -> tuple[str, ...]:
    return EMBED_COLUMNS if _embed(manifest) else COLUMNS


def _timing(c: dict[str, Any]) -> list[str]:
    tp = c["throughput"]
    return [f"{tp['realistic']:.1f}", f"{tp.get('long', float('nan')):.1f}", f"{c['speedup_vs_torch_fp32']:.2f}×",
            f"{c.get('build_s', 0.0):.1f}", c["status"]]


def rows(manifest: dict[str, Any]) -> list[list[str]]:
    if _embed(manifest):
        return [[c["name"], f"{c['eval']['cosine_mean']:.5f}", f"{c['eval']['cosine_p1']:.5f}",
                 f"{c['eval']['recall_at_10']:.4f}", *_timing(c)] for c in manifest["candidates"]]
    out = []
    for c in manifest["candidates"]:
        ev = c["eval"]
        out.append([c["name"], f"{ev['variant_accuracy']:.2%}", f"{ev['accuracy_change_points']:+.2f}",
                    _agreement(ev), f"{ev['max_abs_logit_diff']:.2g}", *_timing(c)])
    return out


def _agreement(ev: dict[str, Any]) -> str:
    """The gated agreement; for a student, with its own fp32 ("own") and, beside it, with the reference ("ref")."""
    if "agreement_of" not in ev:
        return f"{ev['agreement']:.2%}"
    return f"{ev['agreement']:.2%} own, {ev['reference_agreement']:.2%} ref"


def eval_rows(manifest: dict[str, Any]) -> str:
    """Which eval rows the gate scored: all of them, or all but those accuracy-controlled int8 validated on."""
    ev = manifest["eval_set"]
    if _embed(manifest):
        return f"{ev['name']} ({ev['rows']} texts, {ev['queries']} of them queries)"
    held = ev.get("validation")
    if not held:
        return f"{ev['name']} ({ev['rows']} rows)"
    return (f"{ev['name']} ({ev['rows']} rows; the gate scores {ev['gate_rows']}, the other {len(held['rows'])} — "
            f"{held['rule'].split(';')[0]} — are {held['used_by']}'s validation rows, listed in manifest.json)")


def _gate_words(manifest: dict[str, Any]) -> str:
    gate = manifest["gate"]
    if _embed(manifest):
        return (f"against the torch fp32 vectors, mean cosine ≥ {gate['min_cosine_mean']:g}, 1st-percentile cosine "
                f"≥ {gate['min_cosine_p1']:g} and recall@10 ≥ {gate['min_recall_at_10']:g} (each query's 10 nearest "
                "corpus texts, itself left out, against its 10 under fp32; a student's variants are held to the "
                "reference's vectors too)")
    return (f"lose at most {gate['max_accuracy_drop']:g} points of accuracy and agree on at least "
            f"{gate['min_agreement']:.0%} of labels with torch fp32 (a student: accuracy against the reference, "
            "agreement with its own torch fp32, \"own\"; its agreement with the reference, \"ref\", is shown beside "
            "it)")


def write_report(manifest: dict[str, Any], path: Path) -> None:
    cols = columns(manifest)
    skipped = manifest.get("skipped") or {}
    lines = [
        f"# padless optimize: {manifest['source_model']}{' (embed task)' if _embed(manifest) else ''}",
        "",
        f"Eval set: {eval_rows(manifest)}. Calibration: "
        f"{manifest['calibration']['source']} ({manifest['calibration']['rows']} texts). Gate: "
        f"{_gate_words(manifest)}. "
        f"Throughput: median of {manifest['rounds']} interleaved rounds on "
        f"{manifest['workloads']} texts, one process, {manifest['machine']['usable_cores']} cores "
        f"(CPU capability {manifest['machine']['cpu_capability']}).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(r) + " |" for r in rows(manifest)),
        "",
        f"Selected: **{manifest['selected']}**.",
        "",
        *([f"Not built: {'; '.join(f'{name}, {why}' for name, why in skipped.items())}.", ""] if skipped else []),
    ]
    path.write_text("\n".join(lines))


def render_table(manifest: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"padless optimize: selected {manifest['selected']}",
                  caption=f"gate rows: {eval_rows(manifest)}")
    for column in columns(manifest):
        table.add_column(column, justify="left" if column in ("variant", "verdict") else "right",
                         no_wrap=column != "verdict")
    for r in rows(manifest):
        table.add_row(*r)
    return table


def write_chart(manifest: dict[str, Any], path: Path) -> None:
    """Accuracy (an embedding model: mean cosine to fp32) against realistic-mix throughput, one numbered point per
    variant (the key beside the plot names each with its agreement or recall@10, so a crowded chart stays legible),
    the gate's accuracy (mean cosine) floor drawn in."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.07, 0.1, 0.56, 0.82))
    ref = next(c for c in manifest["candidates"] if c["name"] == manifest["reference"]["name"])
    embed, gate = _embed(manifest), manifest["gate"]
    floor = gate["min_cosine_mean"] if embed else ref["eval"]["reference_accuracy"] - gate["max_accuracy_drop"] / 100
    y_of, second = (("cosine_mean", "recall_at_10") if embed else ("variant_accuracy", "agreement"))
    key = []
    for i, c in enumerate(manifest["candidates"], start=1):
        x, y = c["throughput"]["realistic"], c["eval"][y_of]
        selected = c["name"] == manifest["selected"]
        ax.scatter([x], [y], s=90 if selected else 40, color="#2ca02c" if c["eval"]["passed"] else "#d62728",
                   edgecolors="black" if selected else "none", zorder=3)
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        key.append(f"{i:>2}  {c['name']:<26} {c['eval'][second]:7.2%}{'  selected' if selected else ''}")
    ax.axhline(floor, color="#d62728", linestyle="--", linewidth=1,
               label=f"gate: {_gate_words(manifest).split(' (')[0]}" if embed else
               f"gate: accuracy ≥ reference − {gate['max_accuracy_drop']:g} pt and ≥ {gate['min_agreement']:.0%} "
               "agreement")
    ax.set_xlabel("texts / s, realistic mix")
    ax.set_ylabel("mean cosine to torch fp32" if embed else f"accuracy on {manifest['eval_set']['name']}")
    ax.set_title(f"{manifest['source_model']}: green passes the gate, ringed is selected", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.text(0.65, 0.92, f"    variant                    {'recall@10' if embed else 'agreement'}\n" + "\n".join(key),
             va="top", fontsize=7,
             family="monospace")
    fig.savefig(path)
