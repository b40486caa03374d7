"""Statistics and reports for :mod:`padless.bench.loadtest`: percentiles, Prometheus parsing, rich tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

#: Every scheduled request ends in exactly one of these (``report["outcomes"]`` sums to ``report["scheduled"]``).
OUTCOMES: tuple[str, ...] = (
    "ok",  # 200 with one result list per input
    "bad_response",  # 200 whose body is not one list per input (a server bug, not a success)
    "rejected_429",  # overload shedding; never retried, since a retry would change the offered load
    "client_error_4xx",  # any other 4xx (413, 422, ...)
    "server_error_5xx",  # 500, 503, 504, ...
    "other_status",  # 1xx/3xx/other 2xx: unexpected for this API
    "timeout",  # no complete response within ``timeout`` (including stragglers cancelled at the end)
    "connection_error",  # refused, reset, protocol errors: the request never got an HTTP answer
    "client_exception",  # anything else raised on the client side (a bug here, kept visible rather than hidden)
    "dropped_client_side",  # not sent because ``max_in_flight`` requests were already outstanding
)

# Metric names of the padless server (all optional: a server without them simply gives no server-side section).
_M_ROWS = "padless_batch_size"
_M_TOKENS = "padless_batch_tokens"
_M_REAL = "padless_batch_real_tokens_total"
_M_PADDED = "padless_batch_padded_tokens_total"
# padless serve --ray: its ingress runs no batch (the metrics above stay at zero there); its tiers' replicas report
# their own running counters, summed over replicas (and, here, over tiers): padless.ray.serve_router.TierMetrics.
_T_BATCHES, _T_ROWS = "padless_tier_batches", "padless_tier_rows"
_T_REAL, _T_PADDED = "padless_tier_real_tokens", "padless_tier_padded_tokens"


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank ``p``-th percentile (0 < p ≤ 100) of ``values``; ``None`` for no values.

    Nearest rank returns an observed value (never an interpolation between two), and for small samples it errs
    towards the slower side, which is the safe direction for a latency limit (the rule of
    ``workload.describe_lengths`` too).
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p90, p99, max of latencies given in seconds, reported in milliseconds."""
    ms = sorted(s * 1000.0 for s in seconds)
    if not ms:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    return {
        "count": len(ms),
        "mean": sum(ms) / len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": ms[-1],
    }


def run_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of a :func:`~padless.bench.loadtest.run_load` report that a benchmark's result keeps for each run:
    offered rate, throughput, p50/p99/max latency of the ok requests, outcomes and the server-side figures."""
    lat = report.get("latency_ms") or {}
    return {"offered_rate": report.get("offered_rate"), "throughput_rps": report.get("throughput_rps"),
            "throughput_texts_per_s": report.get("throughput_texts_per_s"), "p50_ms": lat.get("p50"),
            "p99_ms": lat.get("p99"), "max_ms": lat.get("max"), "outcomes": report.get("outcomes"),
            "server": report.get("server")}


def _split_sample(line: str) -> tuple[str, str, str] | None:
    """``(name, labels, rest)`` of one exposition line, respecting quoted label values (which may hold ``}``)."""
    brace = line.find("{")
    space = line.find(" ")
    if brace == -1 or (space != -1 and space < brace):
        if space == -1:
            return None
        return line[:space], "", line[space + 1:]
    in_quotes = escaped = False
    for i in range(brace + 1, len(line)):
        ch = line[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == "}" and not in_quotes:
            return line[:brace], line[brace + 1: i], line[i + 1:]
    return None


def parse_prometheus(text: str) -> dict[str, float]:
    """Sample name → value from Prometheus/OpenMetrics text, summing samples that differ only in labels.

    Summing over labels is what the load report needs (e.g. one histogram per model or per device still adds up
    to the server's totals). Histogram ``_bucket`` samples are skipped: only ``_sum``/``_count`` are used, and
    keeping buckets would make label-summing meaningless. Comments, malformed lines and non-numeric values are
    ignored, so an unexpected exposition never breaks a load test.
    """
    values: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = _split_sample(line)
        if parts is None:
            continue
        name, _labels, rest = parts
        if name.endswith("_bucket"):
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        values[name] = values.get(name, 0.0) + value
    return values


def server_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None] | None:
    """Server-side batch figures over a window, from two :func:`parse_prometheus` results.

    Keys: ``batches``, ``rows``, ``mean_batch_size``, ``mean_batch_tokens``, ``real_tokens``, ``padded_tokens``,
    ``padding_fraction`` (``1 − real/padded``). A figure is ``None`` when its metrics are absent or did not move;
    the whole result is ``None`` when none of the padless metrics is present. For ``padless serve --ray`` the
    figures are its tiers' replica counters summed over both tiers (its ingress batches nothing). Counters are
    differenced because the server's totals include everything it served before the window. Anything else the
    server did during the window (another client) is included too; metrics cannot tell requests apart.
    """
    def delta(name: str) -> float | None:
        if name not in after:
            return None
        # A counter that went down means the server restarted in between; the difference would be garbage.
        d = after[name] - before.get(name, 0.0)
        return d if d >= 0 else None

    names = (f"{_M_ROWS}_count", f"{_M_ROWS}_sum", f"{_M_TOKENS}_count", f"{_M_TOKENS}_sum", _M_REAL, _M_PADDED)
    if _T_BATCHES in after:  # a Ray server: the tiers' counters, not the ingress's idle batch metrics
        batches, rows = delta(_T_BATCHES), delta(_T_ROWS)
        real, padded = delta(_T_REAL), delta(_T_PADDED)
        token_batches, tokens = batches, padded  # a batch's padded tokens are what a tier counts per batch
    elif any(n in after for n in names):
        batches, rows = delta(f"{_M_ROWS}_count"), delta(f"{_M_ROWS}_sum")
        token_batches, tokens = delta(f"{_M_TOKENS}_count"), delta(f"{_M_TOKENS}_sum")
        real, padded = delta(_M_REAL), delta(_M_PADDED)
    else:
        return None
    return {
        "batches": batches if batches is not None else token_batches,
        "rows": rows,
        "mean_batch_size": rows / batches if rows is not None and batches else None,
        "mean_batch_tokens": tokens / token_batches if tokens is not None and token_batches else None,
        "real_tokens": real,
        "padded_tokens": padded,
        "padding_fraction": 1.0 - real / padded if real is not None and padded else None,
    }


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def render_report(report: dict[str, Any], title: str | None = None) -> Table:
    """A two-column rich table of a :func:`run_load` report (print it with ``rich.console.Console().print``)."""
    table = Table(title=title or f"load test: {report['url']}", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def section(name: str) -> None:
        table.add_row(f"[bold]{name}[/bold]", "", end_section=False)

    section("load")
    table.add_row("offered rate", _fmt(report["offered_rate"], " req/s"))
    table.add_row("scheduled (sent)", f"{report['scheduled']} ({report['sent']}) in {_fmt(report['duration_s'], ' s')}")
    table.add_row("inputs per request", str(report["inputs_per_request"]))
    table.add_row("throughput", f"{_fmt(report['throughput_rps'], ' req/s')} · "
                                f"{_fmt(report['throughput_texts_per_s'], ' texts/s')} "
                                f"over {_fmt(report['window_s'], ' s', 2)}")
    section("outcomes")
    for name in OUTCOMES:
        count = report["outcomes"][name]
        if count or name == "ok":
            style = "green" if name == "ok" else "red"
            table.add_row(f"  {name}", f"[{style}]{count}[/{style}]")
    if report["status_codes"]:
        table.add_row("  status codes", ", ".join(f"{k}: {v}" for k, v in report["status_codes"].items()))
    if report["error_types"]:
        table.add_row("  error types", ", ".join(f"{k}: {v}" for k, v in report["error_types"].items()))
    section("latency of ok requests (ms, from scheduled send)")
    lat = report["latency_ms"]
    for key in ("p50", "p90", "p99", "max", "mean"):
        table.add_row(f"  {key}", _fmt(lat[key]))
    table.add_row("  p99 over all responses", _fmt(report["latency_all_ms"]["p99"]))
    section("client")
    lag = report["send_lag_ms"]
    table.add_row("  send lag p99 / max", f"{_fmt(lag['p99'])} / {_fmt(lag['max'])} ms")
    table.add_row("  peak in flight", str(report["peak_in_flight"]))
    table.add_row("  CPU", _fmt(report["client_cpu_percent"], " %", 0))
    server = report.get("server")
    if server:
        section("server (/metrics over the run)")
        table.add_row("  batches", _fmt(server["batches"], digits=0))
        table.add_row("  mean batch size", _fmt(server["mean_batch_size"], " rows", 2))
        table.add_row("  mean batch tokens", _fmt(server["mean_batch_tokens"], digits=0))
        frac = server["padding_fraction"]
        table.add_row("  padding fraction", "–" if frac is None else f"{100 * frac:.1f} %")
    for warning in report.get("warnings", []):
        table.add_row("[yellow]warning[/yellow]", f"[yellow]{warning}[/yellow]")
    return table


def render_capacity(result: dict[str, Any]) -> Table:
    """A rich table of a :func:`find_capacity` result: one row per trial, and the capacity in the title."""
    rate = result["rate"]
    headline = "no rate held the limit" if rate is None else f"capacity ≈ {rate:,.1f} req/s"
    table = Table(title=f"{headline} (p99 ≤ {result['p99_limit_ms']:g} ms; stopped by {result['stopped_by']})")
    table.add_column("offered req/s", justify="right")
    table.add_column("throughput req/s", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("result")
    for t in result["trials"]:
        verdict = "[green]pass[/green]" if t["passed"] else f"[red]fail[/red] ({t['reason']})"
        table.add_row(_fmt(float(t["rate"])), _fmt(t["throughput_rps"]), _fmt(t["p99_ms"]), verdict)
    return table
