"""``padless optimize``: build faster variants of a classifier, measure them, and keep only what passes the gate.

Stages, one module each: :mod:`~padless.optimize.export` (ONNX export and fusion), :mod:`~padless.optimize.quantize`
(int8 dynamic, static, and the mixed-precision sensitivity sweep), :mod:`~padless.optimize.gate` (the accuracy
gate, also behind ``padless verify``), :mod:`~padless.optimize.manifest` (what a variant folder records and how it is
re-checked on load) and :mod:`~padless.optimize.search` (candidates, measurement, selection, chart).
"""
