"""OpenVINO backend: runs an IR from :mod:`padless.loader.openvino` on the CPU with an explicit precision.

Inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the IR has them: zeros for single texts, the
segments of a text pair), output ``logits``, dynamic batch and sequence axes. The precision hint is always set:
``float32`` → ``f32``, ``bfloat16`` → ``bf16`` (only on CPUs with native bf16, avx512_bf16 or AMX), because OpenVINO
otherwise picks bf16 by itself on such CPUs. An int8 IR (NNCF's FakeQuantize ops) runs its quantized MatMuls in int8
whatever the hint; the hint sets the precision of everything else (attention, softmax, layer norms).

Settings, measured on 2 cores (Xeon with AMX; default MiniLM model; padless's own planned padded batches of 400
realistic-mix texts; texts/s): ``PERFORMANCE_HINT`` LATENCY with one infer request, fp32 205 / bf16 600.
THROUGHPUT with 2 streams halves the threads per request, so a synchronous forward must split each batch across
the two streams to use both cores: 197 / 592, no gain; whole batches in flight at once reached 209 / 637.
Static shapes (one compiled model per batch shape) ran 4% faster in fp32 (201 → 210) but cost 0.23 s of
compilation per new shape, and planned batches take any rows × width: not used.

So ``streams`` (batches computed at once): 1 is LATENCY, one infer request, all threads on each batch — what a
server wants, since a lone one-row request must not run on half the cores (one row on one stream's one thread
against both threads: fp32 1.8× slower, 2.84 → 5.05 ms at 16 tokens and 27.3 → 49.6 ms at 256; bf16 0.93× at 16,
1.27× at 256). Above 1 (or 0: OpenVINO's own
THROUGHPUT choice, 2 streams of one thread on 2 cores) :meth:`OpenVinoRuntime.forward_many` keeps that many whole
batches in flight through an ``AsyncInferQueue``, which the offline engine uses for a whole plan. Measured on 3 ×
400 realistic-mix texts' planned batches (fp32, interleaved rounds): torch fp32 165–169 texts/s, LATENCY 187–190,
2 streams in planner order 193–197, costliest batches first 196–197 (a big batch started last leaves the other
stream idle at the end; the engine sorts). Dynamic shapes, threads = usable cores either way. ``CACHE_DIR``
(:func:`padless.loader.openvino.compile_cache_dir`) keeps compiled models, so a second start does not recompile
(0.45 s → 0.1 s here; most of a start is loading Python, the tokenizer and the IR).

Each batch shape seen for the first time costs extra: about 35 ms for an int8 IR with the f32 hint, 5–8 ms
otherwise (JIT-compiled fused "snippets" kernels, cached per shape afterwards), so the first 400 texts ran int8 at
230 texts/s and the next 400 at 550. ``SNIPPETS_MODE`` DISABLE cut that cost to 8 ms but lost 5–8% once shapes
recur (2,000-text calls: 332–358 texts/s with snippets, 308–338 without), so the default is kept.

Widths (``width_multiple``, :func:`padless.planner.padded_width`): on an AMX CPU the bf16 and int8 kernels work in
tiles of 16, and padding each batch's width up to a multiple of 16 computed ~10% more tokens in less time. The
same planned batches of 2 × 400 realistic-mix texts, all shapes already seen, bf16 IR: exact widths 583 texts/s,
multiples of 8 599, of 16 617, of 32 ~550; int8 IR with the f32 hint 548 → 573 at 16. fp32 lost (196 → 183), as
did torch and ONNX Runtime fp32 (181 → 166, 171 → 154), so only bf16 and int8-with-f32 round. Rounding also leaves
32 widths instead of up to 512, so shapes recur and the first-time cost above is paid less often: the first pass
over 400 new texts went from ~445 to ~515 texts/s.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ConfigError, ModelError
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
        try:
            self._compile()
        except Exception as err:  # RuntimeError with a stack of C++ checks: corrupt file, missing .bin, unsupported CPU
            raise ModelError(f"OpenVINO cannot load {self.file}: {reason(err)}") from None
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        check_graph_inputs(self.input_names, self.file)
        self.lock = threading.Lock()
        # NNCF marks what it quantized with FakeQuantize ops; the XML is small (the weights are in the .bin).
        self.int8 = 'type="FakeQuantize"' in self.file.read_text(errors="replace")
        # AMX computes bf16 and int8 in tiles of 16 rows: widths padded to a multiple of 16 ran faster than exact
        # ones (see the module docstring), and fp32 (no AMX) ran slower padded. The int8 IR with the bf16 hint is
        # left exact: its outputs move with the padding (agreement with torch fp32 on 400 movie snippets fell from
        # 98.0% to 92.3% at 16; bf16 and int8 with the f32 hint did not change at all).
        if cpu_has_amx() and (precision == "bfloat16") != self.int8:
            self.width_multiple = WIDTH_MULTIPLE_AMX

    def _compile(self) -> None:
        """Compile the IR (loaded from ``CACHE_DIR`` after the first time) with fresh infer requests.

        Also the recovery from a failed inference. After one, OpenVINO's CPU plugin keeps stale shape state: the next
        batch of the same shape as the last good one failed with the same error, 10 times in 10, in the same
        request (one stream) and in fresh requests of the same compiled model (two streams; OpenVINO 2026.4.1). A
        batch of another shape first, or a new compiled model, cleared it; a recompilation from the cache takes
        0.04-0.12 s here, paid only after a failure."""
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(self.file), "CPU", self.config)
        self.output = self.compiled.output("logits")
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
