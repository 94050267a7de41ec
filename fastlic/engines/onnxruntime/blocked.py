"""The onnxruntime engine's blocked sessions (:mod:`.layout`'s rewrite): made once
per graph, onnxruntime version and CPU, cached, and checked on every load.

::

    graph file, onnxruntime version, NCHWc block ──sha256──▶ key
    <cache>/onnxruntime-blocked/<stage>-<key>.onnx ──load──▶ session ──probe = plain?──▶ used
        absent, unreadable or differing ──layout.rewrite (imports onnx)──▶ written ──▶ …

Only a miss needs the ``onnx`` package (0.6 s to import); a hit needs onnxruntime
alone. Whatever the cache holds, a session is used only if it returns the plain
session's outputs bit for bit on a random probe input.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

VERSION = 1   # of what .layout writes: part of the key, bump when the rewrite changes
NHWC_KEY, NOTE_KEY = "fastlic.nhwc_outputs", "fastlic.layout"   # a rewritten graph's metadata
# A model of one com.microsoft.nchwc ReorderInput node on a (1, 4, 1, 1) float input,
# serialised (tests/engines/test_ort_layout.py reads it with onnx), so that the block size, part
# of the key, needs no onnx package.
_BLOCK_PROBE = bytes.fromhex(
    "08091207666173746c69633a5a0a290a0178120179220c52656f72646572496e7075743a13636f6d2e"
    "6d6963726f736f66742e6e63687763120570726f62655a1b0a017812160a14080112100a0208010a02"
    "08040a0208010a02080162090a017912040a02080142040a00101342170a13636f6d2e6d6963726f73"
    "6f66742e6e636877631001")
_BLOCK: list[int] = []   # block_size's answer, once per process


def block_size(make) -> int:
    """onnxruntime's NCHWc block (channels per SIMD block) on this CPU: the padded channel
    count ReorderInput gives a four-channel tensor (its least). make: see
    :func:`blocked_session`."""
    if not _BLOCK:
        session = make(_BLOCK_PROBE)
        _BLOCK.append(int(session.run(None, {"x": np.zeros((1, 4, 1, 1), np.float32)})[0].shape[1]))
    return _BLOCK[0]


class BlockedSession:
    """An InferenceSession of a rewritten graph that answers like the plain one: the
    outputs it writes channels-last come back as (N, C, H, W) views of them."""

    def __init__(self, session):
        meta = session.get_modelmeta().custom_metadata_map
        nhwc = set(filter(None, meta.get(NHWC_KEY, "").split(",")))
        self.session, self.note = session, meta.get(NOTE_KEY, "rewritten")
        self._names = [o.name for o in session.get_outputs()]
        self._nhwc = nhwc

    def run(self, names, feed) -> list[np.ndarray]:
        names = names or self._names
        return [x.transpose(0, 3, 1, 2) if n in self._nhwc else x
                for n, x in zip(names, self.session.run(names, feed))]

    def get_providers(self) -> list[str]:
        return self.session.get_providers()

    def get_inputs(self):
        return self.session.get_inputs()


def probe_feed(session, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs for ``session``: batch 1, ``size`` for the symbolic sizes."""
    rng = np.random.default_rng(seed)
    feed = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else size for d in arg.shape]
        shape[0] = 1
        feed[arg.name] = (3 * rng.standard_normal(shape)).astype(np.float32)
    return feed


def same_outputs(a, b, feed) -> bool:
    """Whether sessions a and b give bit-identical outputs on ``feed``."""
    return all(np.array_equal(x, y, equal_nan=True)
               for x, y in zip(a.run(None, feed), b.run(None, feed)))


def cache_key(graph: bytes, block: int) -> str:
    import onnxruntime as ort  # noqa: PLC0415

    digest = hashlib.sha256(graph)
    digest.update(f"|onnxruntime {ort.__version__}|block {block}|rewrite {VERSION}".encode())
    return digest.hexdigest()[:24]


def _session(model: bytes, make) -> BlockedSession:
    import onnxruntime as ort  # noqa: PLC0415

    return BlockedSession(make(model, graph_optimization_level=(
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL)))   # already optimised, for this CPU


def _store(path: Path, model: bytes) -> str:
    """Write ``model`` to ``path`` through a temporary sibling; "" or why it failed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(model)
        os.replace(tmp, path)
    except OSError as exc:
        return f", not cached: {exc.strerror or exc}"
    return ""


def blocked_session(graph_file: Path, make, reference, probe_size: int,
                    cache: Path | None) -> tuple[BlockedSession | None, str]:
    """The blocked session of ``graph_file`` and a note on it, or (None, why not).

    make(model_bytes, **session_settings) builds a session with the engine's options;
    reference is the plain session, which the result must match bit for bit on a random
    input of ``probe_size`` x ``probe_size`` positions. ``cache``: the folder of rewritten
    graphs (None: rewrite every time)."""
    graph = Path(graph_file).read_bytes()
    block = block_size(make)
    entry = cache / f"{Path(graph_file).stem}-{cache_key(graph, block)}.onnx" if cache else None
    feed = probe_feed(reference, probe_size)
    if entry is not None and entry.is_file():
        try:
            session = _session(entry.read_bytes(), make)
        except Exception:  # noqa: BLE001 - a truncated or foreign file: rewrite it
            session = None
        if session is not None and same_outputs(reference, session, feed):
            return session, f"{session.note}, cached"
    try:
        from . import layout  # noqa: PLC0415 - imports onnx
    except ImportError:
        return None, "the rewrite needs the onnx package"
    model = layout.rewrite(graph, block, make, (NHWC_KEY, NOTE_KEY))
    if model is None:
        return None, "no operator to move"
    session = _session(model, make)
    if not same_outputs(reference, session, feed):
        return None, "the rewritten graph's outputs differ from the plain graph's"
    return session, session.note + (_store(entry, model) if entry is not None else "")
