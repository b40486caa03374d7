"""OpenVINO backend: runs an IR from :mod:`padless.loader.openvino` on the CPU with an explicit precision.

Inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the IR has them: zeros for single texts, the
segments of a text pair), output ``logits`` (the embed task's IR: ``embeddings``, chosen by ``info.task``), dynamic
batch and sequence axes. The precision hint is always set:
``float32`` → ``f32``, ``bfloat16`` → ``bf16`` (only on CPUs with native bf16, avx512_bf16 or AMX), because OpenVINO
otherwise picks bf16 by itself on such CPUs. An int8 IR (NNCF's FakeQuantize ops) runs its quantized MatMuls in int8
whatever the hint; the hint sets the precision of everything else (attention, softmax, layer norms).

``streams`` (batches computed at once): 1 is ``PERFORMANCE_HINT`` LATENCY, one infer request, all threads on each
batch — what a server wants, since a lone one-row request must not run on one stream's share of the cores. Above 1
(or 0: OpenVINO's own THROUGHPUT choice) :meth:`OpenVinoRuntime.forward_many` keeps that many whole batches in
flight through an ``AsyncInferQueue``, which the offline engine uses for a whole plan (costliest batches first, so
that no big batch started last leaves the other streams idle), and :meth:`~OpenVinoRuntime.forward` splits one
batch across the streams. Shapes are dynamic and threads are the usable cores either way: planned batches take any
rows × width, and a compiled model per shape would pay a compilation for each new one. ``CACHE_DIR``
(:func:`padless.loader.openvino.compile_cache_dir`) keeps compiled models, so a second start does not recompile.
``SNIPPETS_MODE`` stays OpenVINO's default: disabling it made a new shape's first batch cheaper but recurring shapes
slower.

Widths (``width_multiple``, :func:`padless.planner.padded_width`): on an AMX CPU the bf16 IR and an int8 IR with the
f32 hint pad each batch's width up to a multiple of 16, since AMX works in tiles of 16 (and fewer distinct widths
recur, so fewer first-time shape costs); fp32 stays exact, since padding made it slower.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ConfigError, ModelError
from padless.loader.export import output_name
from padless.loader.openvino import check_ir, compile_cache_dir, reason
from padless.machine import cpu_has_amx, cpu_has_native_bf16
from padless.runtime.base import Feed, ModelInfo, Runtime, check_graph_inputs, graph_feed, usable_cores

PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}
WIDTH_MULTIPLE_AMX = 16


def precision_hint(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for a padless precision; ConfigError where this CPU cannot run it."""
    if precision not in PRECISION_HINTS:
        raise ConfigError(f"unknown OpenVINO precision {precision!r}; choose one of {', '.join(PRECISION_HINTS)}")
    if precision == "bfloat16" and not cpu_has_native_bf16():
        raise ConfigError("OpenVINO bfloat16 needs a CPU with native bf16 (avx512_bf16 or AMX); use float32")
    return PRECISION_HINTS[precision]


class OpenVinoRuntime(Runtime):
    name = "openvino"

    def __init__(self, ir_file: str | Path, info: ModelInfo, *, threads: int = 0,
                 precision: str = "float32", streams: int = 1) -> None:
        try:
            import openvino as ov
        except ImportError:  # declared as a dependency; a broken install still deserves one clear line
            raise ModelError("the openvino backend needs OpenVINO: pip install openvino") from None
        hint = precision_hint(precision)
        if streams < 0:
            raise ConfigError(f"streams must be 0 (OpenVINO's choice) or positive, got {streams}")
        self.info = info
        self.file = check_ir(ir_file)
        self.precision = precision
        self.threads = threads or usable_cores()
        self.version = ov.get_version().split("-")[0]
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": self.threads,
                                  "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT"}
        if streams > 1:
            config["NUM_STREAMS"] = streams
        try:
            compile_cache_dir().mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(compile_cache_dir())
        except OSError:  # a read-only cache costs a recompilation per start, nothing else
            pass
        self.config = config
        self.output_name = output_name(info.embedding)
        try:
            self._compile()
        except Exception as err:  # RuntimeError with a stack of C++ checks: corrupt file, missing .bin, unsupported CPU
            raise ModelError(f"OpenVINO cannot load {self.file}: {reason(err)}") from None
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        check_graph_inputs(self.input_names, self.file)
        self.lock = threading.Lock()
        # NNCF marks what it quantized with FakeQuantize ops; the XML is small (the weights are in the .bin).
        self.int8 = 'type="FakeQuantize"' in self.file.read_text(errors="replace")
        # AMX computes bf16 and int8 in tiles of 16 rows (see the module docstring). The int8 IR with the bf16 hint is
        # left exact: its outputs move with the padding (its agreement with torch fp32 fell).
        if cpu_has_amx() and (precision == "bfloat16") != self.int8:
            self.width_multiple = WIDTH_MULTIPLE_AMX

    def _compile(self) -> None:
        """Compile the IR (loaded from ``CACHE_DIR`` after the first time) with fresh infer requests.

        Also the recovery from a failed inference: after one, OpenVINO's CPU plugin keeps stale shape state (the next
        batch of the last good shape fails the same way, in the same request and in fresh requests of the same
        compiled model), which only a new compiled model clears; recompiling from the cache is cheap and paid only
        after a failure."""
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(self.file), "CPU", self.config)
        outputs = [name for o in self.compiled.outputs for name in o.get_names()]
        if self.output_name not in outputs:
            raise RuntimeError(f"the IR has outputs {outputs}, not {self.output_name!r}: it is not an IR for the "
                               f"{self.info.task} task")
        self.output = self.compiled.output(self.output_name)
        # One request, reused: its buffers are allocated once. Requests are not re-entrant, hence the lock (the
        # server's forward thread and a warm-up must not share one at the same moment; forward_many holds it too).
        self.request = self.compiled.create_infer_request()
        self.streams = max(1, int(self.compiled.get_property("NUM_STREAMS")))  # what OpenVINO made of the hint
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams) if self.streams > 1 else None

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        if self.queue is not None and len(input_ids) > 1:
            # Each stream has only its share of the threads: split the rows so that every stream works on them.
            parts = np.array_split(np.arange(len(input_ids)), min(self.streams, len(input_ids)))
            return np.concatenate(self.forward_many(
                (input_ids[p], attention_mask[p], None if token_type_ids is None else token_type_ids[p])
                for p in parts))
        feed = graph_feed(self.input_names, self.file, input_ids, attention_mask, token_type_ids)
        with self.lock:
            # share_inputs: the planned int64 arrays are fed without a copy; the logits are copied out, since the
            # request's output buffer is reused by the next call.
            try:
                result = self.request.infer(feed, share_inputs=True)
            except BaseException:
                self._compile()  # a failed inference leaves stale state behind (see _compile)
                raise
            return np.array(result[self.output], dtype=np.float32)

    def forward_many(self, batches: Iterable[Feed]) -> list[np.ndarray]:
        """Every batch's logits, in the order given, with up to ``streams`` batches in flight."""
        if self.queue is None:
            return super().forward_many(batches)
        results: dict[int, np.ndarray] = {}
        failures: list[str] = []

        def done(request: Any, index: int) -> None:  # on an OpenVINO thread; must not raise
            try:
                results[index] = np.array(request.get_tensor(self.output).data, dtype=np.float32)
            except Exception as err:  # noqa: BLE001  # reported below, after every request has finished
                failures.append(reason(err))

        count = 0
        with self.lock:
            queue = self.queue
            queue.set_callback(done)
            try:
                for count, batch in enumerate(batches, 1):
                    # share_inputs=False: the padded arrays are copied in, so the caller may drop them at once
                    # (a batch waiting for a free stream is not kept alive by its generator).
                    queue.start_async(graph_feed(self.input_names, self.file, *batch), count - 1,
                                      share_inputs=False)
                queue.wait_all()
            except BaseException:
                # A failed request raises its error again at every later use, and fresh requests of the same
                # compiled model still failed (see _compile): let whatever is still running finish, then start
                # again from a new compiled model.
                for i in range(len(queue)):
                    try:
                        queue[i].wait()
                    except Exception:  # noqa: BLE001  # the error already being raised is the one to report
                        pass
                self._compile()
                raise
        if failures or len(results) != count:
            raise ModelError(f"OpenVINO failed on {count - len(results)} of {count} batches: "
                             f"{failures[0] if failures else 'no result'}")
        return [results[i] for i in range(count)]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": f"int8, {self.precision}" if self.int8 else self.precision,
                "threads": self.threads, "streams": self.streams, "file": self.file.name, "openvino": self.version}
