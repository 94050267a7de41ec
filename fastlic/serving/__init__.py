"""Serving fastlic. Importing this package needs nothing beyond fastlic's own
dependencies; each module that needs an extra imports it itself.

- :mod:`.batch`: pipelined ``compress_many`` / ``decompress_many``.
- :mod:`.service`, :mod:`.app`: the HTTP service, ``fastlic serve``
  (:func:`.app.serve_main`; the ``serve`` extra: uvicorn, starlette, prometheus-client).
"""
from .batch import Result, compress_many, decompress_many

__all__ = ["Result", "compress_many", "decompress_many"]
