"""The TensorRT backend: engines built from a ``fastlic export`` directory and cached
(:mod:`.build`), run by :mod:`.engine`, with the DeformConv plugin (:mod:`.plugin`).
``tensorrt`` itself is imported only when this backend is chosen."""
