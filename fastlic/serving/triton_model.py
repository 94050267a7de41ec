"""Triton Python-backend model of fastlic (copied as ``model.py`` by :mod:`.triton`): the
codec's entropy coding around the stage models, each stage a BLS request.

    decompress: BITSTREAM ─parse─▶ decode ẑ ─BLS h_s─▶ hyper ─BLS anchor─▶ (index, mean)
                ─decode pass 1─▶ ŷ at anchors ─BLS nonanchor─▶ (index, mean)
                ─decode pass 2─▶ ŷ ─BLS g_s─▶ IMAGE
    compress:   IMAGE ─BLS g_a, h_a─▶ y, z ─round─▶ ẑ ─BLS h_s, anchor, nonanchor─▶ symbols
                ─range code─▶ BITSTREAM (BLS g_s too, for the reconstruction CRC)

The passes are :class:`fastlic.runtime.codec.Codec`'s own: this model gives a Codec one
:class:`BlsEngine` per stage, so the Triton service writes and reads the same
bitstreams as every other fastlic backend (the exact stages return the same bits on
onnxruntime everywhere; g_s may round a few pixels a level differently).

Config parameters (written by :func:`fastlic.serving.triton.write_triton_repository`):
``operation`` ("compress"/"decompress"), ``weights`` (file in the version folder: model
identity and entropy tables), ``model_<stage>`` (the stage models' names), ``checksum``.
Needs fastlic in Triton's Python environment; ``triton_python_backend_utils`` is
imported in :meth:`TritonPythonModel.initialize`, so this module imports without Triton.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from fastlic.engines.base import Engine
from fastlic.errors import (BitstreamError, EngineError, FastlicError, ImageFormatError,
                            ResourceLimitError, UsageError)
from fastlic.stages import STAGES

_INVALID = (BitstreamError, ImageFormatError, ResourceLimitError, UsageError)   # the client's


class BlsEngine(Engine):
    """One stage run by the Triton model ``model_name`` through a BLS request; outputs
    are asked for in CPU memory (``preferred_memory``, Triton 23.04+) and copied, so
    they outlive the response."""

    def __init__(self, spec, model_name: str, pb):
        super().__init__(spec)
        self.model_name, self.pb = model_name, pb
        self._options = {}
        if hasattr(pb, "PreferredMemory"):
            self._options["preferred_memory"] = pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0)

    def describe(self) -> str:
        return f"Triton model {self.model_name} (BLS)"

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pb = self.pb
        tensors = [pb.Tensor(n, np.ascontiguousarray(inputs[n], dtype=np.float32))
                   for n in self.spec.inputs]
        response = pb.InferenceRequest(model_name=self.model_name, inputs=tensors,
                                       requested_output_names=list(self.spec.outputs),
                                       **self._options).exec()
        if response.has_error():
            raise EngineError(f"Triton model {self.model_name} failed: "
                              f"{response.error().message()}")
        return {n: np.array(pb.get_output_tensor_by_name(response, n).as_numpy())
                for n in self.spec.outputs}


def bls_codec(weights: str | Path, model_names: dict[str, str], pb):
    """A Codec of the weights file's identity and tables whose stages are Triton models
    (``model_names``: stage -> model name)."""
    from fastlic.modelfile import read_shipped  # noqa: PLC0415 - imports torch
    from fastlic.runtime.codec import Codec  # noqa: PLC0415

    shipped = read_shipped(weights)
    engines = {s: BlsEngine(STAGES[s], model_names[s], pb) for s in STAGES}
    return Codec(shipped.info, engines, shipped.tables, backend="triton", device="cpu")


class TritonPythonModel:
    """``<prefix>_compress``: IMAGE uint8 (H, W, C), C in 1, 3, 4 -> BITSTREAM uint8 (N,);
    ``<prefix>_decompress``: BITSTREAM -> IMAGE uint8 (H, W, 3), (H, W, 1) if greyscale.
    A fastlic error answers its request with a TritonError (INVALID_ARG for bad input)."""

    def initialize(self, args: dict) -> None:
        self.pb = importlib.import_module("triton_python_backend_utils")
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.operation = params["operation"]
        if self.operation not in ("compress", "decompress"):
            raise ValueError(f"parameter operation must be compress or decompress, "
                             f"got {self.operation!r}")
        self.checksum = params.get("checksum", "true") == "true"
        folder = Path(args["model_repository"]) / args["model_version"]
        self.codec = bls_codec(folder / params["weights"],
                               {s: params[f"model_{s}"] for s in STAGES}, self.pb)

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        pb = self.pb
        try:
            if self.operation == "compress":
                image = pb.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                data = self.codec.compress(np.ascontiguousarray(image), checksum=self.checksum)
                out = pb.Tensor("BITSTREAM", np.frombuffer(data, dtype=np.uint8).copy())
            else:
                data = pb.get_input_tensor_by_name(request, "BITSTREAM").as_numpy()
                image = self.codec.decompress(np.ascontiguousarray(data, np.uint8).tobytes())
                out = pb.Tensor("IMAGE", image[:, :, None] if image.ndim == 2 else image)
            return pb.InferenceResponse(output_tensors=[out])
        except Exception as exc:  # noqa: BLE001 - one failed request, not the batch
            return pb.InferenceResponse(output_tensors=[], error=self._error(exc))

    def _error(self, exc: Exception):
        """A TritonError naming the fastlic error type; INVALID_ARG when the input is at
        fault (Triton 23.09+ takes a code; older ones get the message only)."""
        pb = self.pb
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not isinstance(exc, FastlicError):
            message = f"internal error: {message}"
        code = getattr(pb.TritonError, "INVALID_ARG" if isinstance(exc, _INVALID)
                       else "INTERNAL", None)
        return pb.TritonError(message) if code is None else pb.TritonError(message, code)

    def finalize(self) -> None:
        self.codec = None
