"""What a Ray user writes from Ray Data's batch-inference docs, run as its own process by ``padless bench ray``.

The docs' recipe for a Hugging Face classifier: read the files with Ray Data, ``map_batches`` a callable class that
builds ``transformers.pipeline("text-classification")`` once per actor and calls it on each batch with
``batch_size=32``, ``concurrency`` = the workers, ``num_cpus`` each, then ``write_parquet``. Nothing of padless runs in
it: no length sorting, no token budget; each pipeline call pads its chunks of 32 consecutive rows to their longest.
``truncation=True`` because a real file has texts over the model's 512 tokens, which would otherwise fail the job.

``python -m padless.bench.ray_baseline INPUT.parquet OUTPUT_DIR MODEL_DIR WORKERS THREADS`` prints one JSON line:
rows written and seconds from the first read to the last write (Ray's start-up excluded, as for padless's job).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

BATCH_SIZE = 32  # the docs' and transformers' usual CPU batch size
ROWS_PER_CALL = 1024  # rows Ray hands the actor per call (map_batches batch_size)


class PipelinePredictor:
    """The docs' callable class: the pipeline is built once per actor, then called on every batch of rows."""

    def __init__(self, model_dir: str, threads: int) -> None:
        import torch
        from transformers import pipeline

        torch.set_num_threads(threads)
        self.pipe = pipeline("text-classification", model=model_dir, device=-1)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        predictions = self.pipe(list(batch["text"]), batch_size=BATCH_SIZE, truncation=True)
        batch["label"] = [p["label"] for p in predictions]
        batch["score"] = [float(p["score"]) for p in predictions]
        return batch


def run(input_path: str, output_dir: str, model_dir: str, workers: int, threads: int) -> dict[str, Any]:
    """Score ``input_path`` into ``output_dir`` the docs' way on a local cluster of ``workers × threads`` CPUs."""
    from padless.ray.cluster import init_ray

    # One logical CPU more than the predictors take: with every CPU held by a predictor actor, Ray Data's file
    # listing, read and write tasks (one CPU each by default) cannot be scheduled and the job hangs for good. The
    # extra slot only runs that light I/O; inference still has workers × threads.
    ray = init_ray(num_cpus=workers * threads + 1)
    started = time.perf_counter()
    # One Parquet file is one block to Ray's reader, and one block is one actor task: without a repartition the
    # whole file runs on one worker. The docs split work across actors this way.
    ds = ray.data.read_parquet(input_path).repartition(workers * 8)
    scored = ds.map_batches(PipelinePredictor, fn_constructor_args=(model_dir, threads), batch_size=ROWS_PER_CALL,
                            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads)
    scored.write_parquet(output_dir)
    seconds = time.perf_counter() - started
    rows = ray.data.read_parquet(output_dir).count()
    ray.shutdown()
    return {"rows": rows, "seconds": seconds, "workers": workers, "threads_per_worker": threads,
            "batch_size": BATCH_SIZE}


def main() -> None:
    input_path, output_dir, model_dir, workers, threads = sys.argv[1:6]
    print(json.dumps(run(input_path, output_dir, model_dir, int(workers), int(threads))))


if __name__ == "__main__":
    main()
