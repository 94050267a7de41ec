"""onnxruntime backend: one InferenceSession per stage of an exported model directory.

Providers: CPU by default; ``providers="auto"`` adds the TensorRT and CUDA providers
when ``onnxruntime.get_available_providers()`` lists them (onnxruntime-gpu). Each
stage runs the file ``manifest.engines["onnxruntime"]`` names; if a session cannot be
built from it (e.g. no DeformConv kernel before onnxruntime 1.25), the other variant
of that stage is used (``g_a_gridsample.onnx``). InferenceSession.run is thread-safe.

Layout: on the CPU provider alone, g_a and g_s run a rewrite of their graph that keeps
onnxruntime's blocked convolution layout between the convolutions (:mod:`.layout`),
cached and checked bit for bit against the exported graph on every load
(:mod:`.blocked`); ``layout="plain"`` runs the exported graphs.

Threads: each session owns an intra-op thread pool, unless :func:`share_thread_pool`
has created onnxruntime's process-wide pool; then every session runs on that one.
The stages run one after another, so one pool is enough, and it decodes faster than
six pools whose idle threads sleep between operators (``benchmarks/ort_threads.py``).
onnxruntime then refuses sessions with pools of their own anywhere in the process,
which is why a library does not create it unasked: the ``fastlic`` command does, and
a service that runs onnxruntime only through fastlic (or only on that pool) can.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ...cache import cache_root
from ...errors import EngineError
from ...manifest import load_manifest
from ...stages import STAGES, StageSpec
from .. import require_extra
from ..base import Engine, export_directory

require_extra("export", "onnxruntime", what="backend onnxruntime")   # typed, not ImportError
import onnxruntime as ort  # noqa: E402

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_POOL_LOCK = threading.Lock()
_SHARED_POOL: list[int | None] = [None]   # the process-wide pool's threads; -1: size unknown
_POOL_REFUSAL = "use_per_session_threads must be false"   # onnxruntime's message


class OrtEngine(Engine):
    """Runs one stage graph. ``file`` and ``providers`` say what runs where; ``layout``
    says whether the CPU graph was rewritten to stay blocked (:mod:`.layout`)."""

    def __init__(self, spec: StageSpec, session: "ort.InferenceSession", file: str,
                 layout: str = "plain"):
        super().__init__(spec)
        self.session = session
        self.file = file
        self.layout = layout
        self.providers = tuple(session.get_providers())

    def describe(self) -> str:
        return f"onnxruntime {self.file} on {', '.join(self.providers)}, {self.layout}"

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


def share_thread_pool(threads: int = 0) -> int:
    """Create onnxruntime's process-wide intra-op pool with ``threads`` threads (0:
    onnxruntime decides) and run every later session of this process on it.

    Call once, early, in a process that runs onnxruntime only through fastlic (every
    session of the process must then use the pool; fastlic's do). Returns the pool's
    thread count: ``threads``, that of an earlier call, or -1 if something else in the
    process created the pool first.
    """
    with _POOL_LOCK:
        if _SHARED_POOL[0] is None:
            try:
                ort.set_global_thread_pool_sizes(threads, 1)
            except Exception:  # noqa: BLE001 - "Global thread pools have already been created"
                _SHARED_POOL[0] = -1
            else:
                _SHARED_POOL[0] = threads
        return _SHARED_POOL[0]


def shared_pool_threads() -> int | None:
    """The process-wide pool's thread count (-1: unknown), or None while there is none."""
    return _SHARED_POOL[0]


def session_options(threads: int = 0, spinning: bool = False) -> "ort.SessionOptions":
    """SessionOptions on the process-wide pool if it exists, else on a pool of the
    session's own with ``threads`` intra-op threads (0: onnxruntime decides).

    spinning: let that pool's idle threads busy-wait for work (onnxruntime's default).
    Off here: the threads of one stage's pool would spin against the next stage and
    the entropy coder on the same cores (``experiments/decode_variants.py``).
    """
    options = ort.SessionOptions()
    if _SHARED_POOL[0] is not None:
        options.use_per_session_threads = False
        return options
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def make_session(model: Path | bytes, providers: list, threads: int = 0,
                 spinning: bool = False, **settings) -> "ort.InferenceSession":
    """An InferenceSession on ``model`` (a file, or a serialised ModelProto) with
    :func:`session_options` plus ``settings`` (further SessionOptions attributes, e.g.
    ``graph_optimization_level``). If onnxruntime refuses a pool of its own because a
    process-wide one exists (created outside fastlic), the session joins that one."""
    source = model if isinstance(model, bytes) else str(model)

    def build() -> "ort.InferenceSession":
        options = session_options(threads, spinning)
        for name, value in settings.items():
            setattr(options, name, value)
        return ort.InferenceSession(source, options, providers=providers)

    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises plain RuntimeErrors
        if _POOL_REFUSAL not in str(exc) or _SHARED_POOL[0] is not None:
            raise
    share_thread_pool()   # records the foreign pool (-1); build() then joins it
    return build()


LAYOUTS = ("blocked", "plain")


def error_line(exc: BaseException) -> str:
    """The first line of an onnxruntime exception (its messages run to pages), at most
    200 characters."""
    return (str(exc).splitlines() or [repr(exc)])[0][:200]


def _stage_engine(directory: Path, manifest, stage: str, providers, threads,
                  spinning: bool = False, layout: str = "blocked",
                  cache: Path | None = None) -> OrtEngine:
    reasons = []
    for graph in manifest.candidates("onnxruntime", stage):
        try:
            session = make_session(directory / graph.file, providers, threads, spinning)
        except Exception as exc:  # noqa: BLE001 - NOT_IMPLEMENTED, INVALID_GRAPH, ...
            reasons.append(f"{graph.file}: {error_line(exc)}")
            continue
        if layout == "blocked" and providers == ["CPUExecutionProvider"] \
                and stage in BLOCKED_STAGES:
            return _blocked_engine(directory / graph.file, session, stage, graph.file,
                                   providers, threads, spinning, cache)
        return OrtEngine(STAGES[stage], session, graph.file)
    raise EngineError(f"onnxruntime {ort.__version__} cannot run stage {stage}: "
                      + ("; ".join(reasons) or "no graph in the manifest")
                      + "; re-export with a matching onnxruntime or use another backend")


# The stages whose CPU graph is rewritten, with the spatial size of the probe input
# that checks the rewrite (an image for g_a, a latent for g_s). Each runs 8-10 %
# faster so; h_s's smaller tensors gained nothing, and anchor and nonanchor have
# nothing to move (benchmarks/layout.py).
BLOCKED_STAGES = {"g_a": 64, "g_s": 4}


def _blocked_engine(path: Path, plain, stage: str, file: str, providers, threads,
                    spinning, cache: Path | None) -> OrtEngine:
    """The stage on :func:`.blocked.blocked_session`'s rewritten graph, or on the
    plain session if nothing moved or the rewrite does not match it."""
    from . import blocked  # noqa: PLC0415

    def make(model: bytes, **settings):
        return make_session(model, providers, threads, spinning, **settings)

    try:
        session, why = blocked.blocked_session(path, make, plain, BLOCKED_STAGES[stage],
                                                   cache)
    except Exception as exc:  # noqa: BLE001 - an unforeseen graph: run the plain one
        session, why = None, f"rewrite failed: {error_line(exc)}"
    if session is None:
        return OrtEngine(STAGES[stage], plain, file, layout=f"plain ({why})")
    return OrtEngine(STAGES[stage], session, file, layout=f"blocked ({why})")


def load_engines(directory, providers=None, *, threads: int = 0, verify: bool = True,
                 spinning: bool = False, layout: str = "blocked",
                 cache_dir: str | Path | None = None) -> dict[str, Engine]:
    """One engine per stage from an exported directory (:func:`fastlic.export.export_model`;
    engines never export: :mod:`fastlic.runtime.sources` does). ``verify`` checks the graph hashes; ``threads``
    and ``spinning``: see :func:`session_options` (neither applies once
    :func:`share_thread_pool` has run). ``layout``: "blocked" rewrites the CPU graphs of
    g_a and g_s (``BLOCKED_STAGES``) to stay in onnxruntime's blocked layout
    (:mod:`.layout`; same outputs bit for bit, checked on load), "plain" runs
    them as exported. The rewritten graphs are cached under ``cache_dir`` (default
    :func:`fastlic.cache.cache_root`)/onnxruntime-blocked."""
    if layout not in LAYOUTS:
        raise EngineError(f"unknown onnxruntime layout {layout!r}; choose one of {list(LAYOUTS)}")
    providers = resolve_providers(providers)
    directory = export_directory(directory)
    manifest = load_manifest(directory, verify=verify)
    cache = cache_root(cache_dir) / "onnxruntime-blocked"
    return {s: _stage_engine(directory, manifest, s, providers, threads, spinning, layout, cache)
            for s in STAGES}
