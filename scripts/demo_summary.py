"""Print what `make demo` measured: how many labels agree with the file's human labels, and which rows errored.

Usage: python scripts/demo_summary.py SCORED.csv [--truth-column human_label]
Reads the CSV that `padless classify` wrote (the input's columns plus `label`, `score`, `error`).
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field


@dataclass
class DemoSummary:
    rows: int = 0
    agree: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (row id or number, error text)

    @property
    def scored(self) -> int:
        return self.rows - len(self.errors)

    def lines(self) -> list[str]:
        pct = 100.0 * self.agree / self.scored if self.scored else 0.0
        out = [f"{self.rows} rows in: {self.scored} scored, {len(self.errors)} errored "
               f"(every row kept, in input order)",
               f"labels agree with human_label on {self.agree} of {self.scored} scored rows ({pct:.1f}%)"]
        out += [f"row {rid} is an error on purpose: {err}" for rid, err in self.errors]
        return out


def summarise(rows: list[dict[str, str]], truth_column: str = "human_label") -> DemoSummary:
    """Count agreement of `label` with `truth_column` over rows without an `error`."""
    summary = DemoSummary(rows=len(rows))
    for number, row in enumerate(rows):
        if row.get("error"):
            summary.errors.append((row.get("id") or str(number), row["error"]))
        elif row.get("label") == row.get(truth_column):
            summary.agree += 1
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scored")
    parser.add_argument("--truth-column", default="human_label")
    args = parser.parse_args(argv)
    with open(args.scored, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or args.truth_column not in rows[0] or "label" not in rows[0]:
        print(f"error: {args.scored} has no rows with 'label' and '{args.truth_column}' columns", file=sys.stderr)
        return 2
    for line in summarise(rows, args.truth_column).lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
