"""``padless optimize``: build faster variants of a classifier or an embedding model, measure them, and keep only
what passes the gate.

Stages, one module each: :mod:`~padless.optimize.config` (the run's settings), :mod:`~padless.optimize.quantize`
(int8 static and the mixed-precision sensitivity sweep), :mod:`~padless.optimize.gate` (a classifier's accuracy
gate, also behind ``padless verify``), :mod:`~padless.optimize.fidelity` (an embedding model's gate: cosine and
recall@10 against fp32), :mod:`~padless.optimize.openvino` (the OpenVINO candidates, NNCF int8 with accuracy control,
and the eval rows it validates on), :mod:`~padless.optimize.measure` (building, timing, selecting and the manifest's
shared fields, for both tasks), :mod:`~padless.optimize.search` (a classifier's run, and the dispatch by task) and
:mod:`~padless.optimize.embed` (an embedding model's run and verify). What loading needs too lives below, in
:mod:`padless.loader`: the checked ONNX export (:mod:`~padless.loader.export`) and OpenVINO IR
(:mod:`~padless.loader.openvino`), the plain dynamic-int8 file (:mod:`~padless.loader.int8`) and the manifest's
format and load-time checks (:mod:`~padless.loader.manifest`).
"""
