"""onnxruntime backend: one InferenceSession per stage of an exported model directory.

Providers: CPU by default; ``providers="auto"`` adds the TensorRT and CUDA providers
when ``onnxruntime.get_available_providers()`` lists them (onnxruntime-gpu). Each
stage runs the file ``manifest.engines["onnxruntime"]`` names; if a session cannot be
built from it (e.g. no DeformConv kernel before onnxruntime 1.25), the other variant
of that stage is used (``g_a_gridsample.onnx``). InferenceSession.run is thread-safe.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import EngineError
from .base import STAGES, Engine, StageSpec

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OrtEngine(Engine):
    """Runs one stage graph. ``file`` and ``providers`` say what runs where."""

    def __init__(self, spec: StageSpec, session: "ort.InferenceSession", file: str):
        super().__init__(spec)
        self.session = session
        self.file = file
        self.providers = tuple(session.get_providers())

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {n: np.ascontiguousarray(inputs[n], dtype=np.float32) for n in self.spec.inputs}
        outputs = self.session.run(list(self.spec.outputs), feed)
        return dict(zip(self.spec.outputs, outputs))


def resolve_providers(providers=None) -> list:
    """None -> CPU; "auto" -> TensorRT, CUDA, CPU where available; a list is checked.

    List items are provider names or (name, options) pairs, as onnxruntime takes them.
    """
    available = ort.get_available_providers()
    if providers is None:
        return ["CPUExecutionProvider"]
    if providers == "auto":
        return [p for p in PREFERRED if p in available]
    missing = [p for p in providers if (p[0] if isinstance(p, tuple) else p) not in available]
    if missing:
        raise EngineError(f"onnxruntime {ort.__version__} lacks providers {missing}; "
                          f"available: {available} (install onnxruntime-gpu for CUDA/TensorRT)")
    return list(providers)


def make_session(path: Path, providers: list, threads: int = 0,
                 spinning: bool = False) -> "ort.InferenceSession":
    """An InferenceSession on ``path``; ``threads`` intra-op threads (0: onnxruntime decides).

    spinning: let idle intra-op threads busy-wait for work (onnxruntime's default).
    Off by default here: the six stage sessions each own a thread pool, and threads
    spinning after one stage compete with the next stage and with the entropy coder
    on the same cores (``benchmarks/decode_variants.py`` measures both settings).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=providers)


def _stage_engine(directory: Path, manifest, stage: str, providers, threads,
                  spinning: bool = False) -> OrtEngine:
    reasons = []
    for graph in manifest.candidates("onnxruntime", stage):
        try:
            session = make_session(directory / graph.file, providers, threads, spinning)
        except Exception as exc:  # noqa: BLE001 - NOT_IMPLEMENTED, INVALID_GRAPH, ...
            reasons.append(f"{graph.file}: {(str(exc).splitlines() or [repr(exc)])[0][:200]}")
            continue
        return OrtEngine(STAGES[stage], session, graph.file)
    raise EngineError(f"onnxruntime {ort.__version__} cannot run stage {stage}: "
                      + ("; ".join(reasons) or "no graph in the manifest")
                      + "; re-export with a matching onnxruntime or use another backend")


def load_engines(model, providers=None, *, threads: int = 0, verify: bool = True,
                 spinning: bool = False) -> dict[str, Engine]:
    """One engine per stage from an exported directory (or a FastLIC, exported unchecked
    to a temporary directory first). ``verify`` checks the graph hashes; ``spinning``:
    see :func:`make_session`."""
    from ..export.manifest import load_manifest  # noqa: PLC0415 - stdlib only

    providers = resolve_providers(providers)
    if not isinstance(model, (str, Path)):
        from ..export import export_model  # noqa: PLC0415 - needs torch + onnx

        with tempfile.TemporaryDirectory(prefix="fastlic-onnx-") as tmp:
            export_model(model, tmp, check=False)
            return load_engines(tmp, providers, threads=threads, verify=verify, spinning=spinning)
    directory = Path(model)
    manifest = load_manifest(directory, verify=verify)
    return {s: _stage_engine(directory, manifest, s, providers, threads, spinning) for s in STAGES}
