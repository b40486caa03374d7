"""Peak resident memory of ``padless embed`` against the number of rows: is it flat?

Writes files of N short rows (the bundled English snippets, repeated in order) and runs ``padless embed`` on each in
a fresh process, reading that process's peak RSS from ``getrusage(RUSAGE_CHILDREN)``. Prints one JSON line per size
and the growth from the smallest to the largest::

    .venv/bin/python scripts/embed_peak_rss.py --rows 50000,200000 --backend torch --out-dir bench-rss
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from padless.datasets import vader_texts
from padless.machine import describe


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """Run ``argv`` in a child of a fresh interpreter; its peak RSS (MiB) and wall seconds."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
    kb = int(done.stdout.strip().splitlines()[-1])
    if kb <= 0:
        raise SystemExit(f"padless embed failed: {done.stderr[-2000:]}")
    return kb / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="50000,200000", help="comma-separated row counts")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--format", default="parquet", choices=["parquet", "jsonl", "npy"])
    parser.add_argument("--out-dir", type=Path, default=Path("bench-rss"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    texts = [" ".join(t.split()) for t in vader_texts() if t.strip()]
    results = []
    for n in (int(x) for x in args.rows.split(",")):
        src = args.out_dir / f"rows-{n}.txt"
        src.write_text("".join(texts[i % len(texts)] + "\n" for i in range(n)))
        dst = args.out_dir / f"vectors-{n}.{args.format}"
        mb, seconds = peak_rss_mb([sys.executable, "-m", "padless.cli.main", "embed", str(src), "-o", str(dst),
                                   "--backend", args.backend, "--overwrite", "--no-progress"])
        row = {"rows": n, "peak_rss_mib": round(mb, 1), "seconds": round(seconds, 1), "backend": args.backend,
               "format": args.format, "output_bytes": dst.stat().st_size}
        results.append(row)
        print(json.dumps(row), flush=True)
    growth = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"] - 1
    summary = {"growth_smallest_to_largest": round(growth, 4), "machine": describe(), "runs": results}
    (args.out_dir / "embed-peak-rss.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"growth_smallest_to_largest": round(growth, 4)}))


if __name__ == "__main__":
    main()
