"""The onnxruntime backend: sessions over a ``fastlic export`` directory (:mod:`.engine`),
with the CPU graphs of g_a and g_s rewritten to stay in onnxruntime's blocked layout
(:mod:`.layout`, which imports onnx) and cached (:mod:`.blocked`)."""
