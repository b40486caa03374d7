"""``padless optimize``: build faster variants of a classifier, measure them, and keep only what passes the gate.

Stages, one module each: :mod:`~padless.optimize.quantize` (int8 static and the mixed-precision sensitivity sweep),
:mod:`~padless.optimize.gate` (the accuracy gate, also behind ``padless verify``), :mod:`~padless.optimize.openvino`
(the OpenVINO candidates, NNCF int8 with accuracy control, and the eval rows it validates on) and
:mod:`~padless.optimize.search` (candidates, measurement, selection, chart, writing the folder). What loading needs
too lives below, in :mod:`padless.loader`: the checked ONNX export (:mod:`~padless.loader.export`) and OpenVINO IR
(:mod:`~padless.loader.openvino`), the plain dynamic-int8 file (:mod:`~padless.loader.int8`) and the manifest's
format and load-time checks (:mod:`~padless.loader.manifest`).
"""
