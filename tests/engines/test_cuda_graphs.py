"""The torch engine's CUDA-graph path (``GraphedTorchEngine``) against a fake ``torch.cuda``.

No GPU is lent here, so the capture-and-replay logic runs on the CPU with the five
``torch.cuda`` names it uses replaced. The fake keeps what matters of a CUDA graph:
work done during capture is recorded, and ``replay()`` runs it again on the *same*
tensors, reading the static inputs and writing the static outputs in place; nothing
else. So a graph that is fed stale inputs, returns its static buffers (which the next
replay overwrites), captures per call, or races between threads gives wrong numbers
here as it would on a GPU. What the fake cannot show (stream ordering, memory pools,
kernels that refuse capture) needs a real GPU: ``test_codec_on_cuda_graphs`` below
skips without one.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import torch

from fastlic.engines.pytorch import engine as torch_engine
from fastlic.engines.pytorch.engine import GraphedTorchEngine, load_engines
from fastlic.runtime.codec import Codec

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class FakeGraph:
    """A captured graph: the calls recorded during capture, replayed in order."""

    def __init__(self):
        self.recorded = []
        self.replays = 0

    def replay(self):
        self.replays += 1
        for step in self.recorded:
            step()


class FakeCuda:
    """Stand-ins for torch.cuda.{Stream, current_stream, stream, CUDAGraph, graph}."""

    def __init__(self):
        self.capturing: FakeGraph | None = None
        self.graphs: list[FakeGraph] = []

    class Stream:
        def __init__(self, device=None):
            self.device = device

        def wait_stream(self, other):
            pass

    def current_stream(self, device=None):
        return FakeCuda.Stream(device)

    @contextlib.contextmanager
    def stream(self, s):
        yield s

    def CUDAGraph(self):   # noqa: N802 - torch's name
        graph = FakeGraph()
        self.graphs.append(graph)
        return graph

    @contextlib.contextmanager
    def graph(self, g):
        assert self.capturing is None, "nested capture"
        self.capturing = g
        try:
            yield g
        finally:
            self.capturing = None

    def recorded(self, fn):
        """``fn`` as the GPU would see it: called under capture, its work is recorded
        on the graph (re-run on the same argument tensors, written into the same
        output tensors); otherwise it just runs. Counts eager (uncaptured) calls."""
        calls = {"eager": 0}

        def run(*args):
            out = fn(*args)
            graph = self.capturing
            if graph is None:
                calls["eager"] += 1
                return out
            outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)

            def step():
                new = fn(*args)
                for buf, value in zip(outs, (new,) if isinstance(new, torch.Tensor) else new):
                    buf.copy_(value)
            graph.recorded.append(step)
            return out
        run.calls = calls
        return run


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda()
    for name in ("Stream", "current_stream", "stream", "CUDAGraph", "graph"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    return fake


@pytest.fixture(scope="module")
def eager(tiny_exact):
    """The CPU engines (subpixel, packed, channels_last: the defaults)."""
    return load_engines(tiny_exact, device="cpu")


def graphed(eager_engines: dict, fake: FakeCuda) -> dict:
    """Each eager engine's network behind a GraphedTorchEngine (on the CPU device)."""
    return {name: GraphedTorchEngine(e.spec, fake.recorded(e.fn), "cpu", "float32",
                                     e.memory_format == torch.channels_last)
            for name, e in eager_engines.items()}


def _inputs(rng, m: int, latent=(4, 6)):
    """Random inputs of the non-anchor stage (two inputs, two outputs) for M latent
    channels at one size."""
    h, w = latent
    return {"hyper": rng.normal(size=(1, 2 * m, h, w)).astype(np.float32),
            "y_hat_anchor": rng.normal(size=(1, m, h, w)).astype(np.float32)}


def test_captures_once_per_shape_and_replays_fresh_inputs(tiny_model, eager, fake_cuda):
    engine = graphed(eager, fake_cuda)["nonanchor"]
    rng = np.random.default_rng(0)
    feeds = [_inputs(rng, tiny_model.cfg.latent_channels) for _ in range(4)]
    results = [engine.run(f) for f in feeds]
    assert len(fake_cuda.graphs) == 1 and fake_cuda.graphs[0].replays == 4
    assert engine.fn.calls["eager"] == 2            # the warm-up, outside the capture
    for feed, got in zip(feeds, results):           # every call sees its own input ...
        want = eager["nonanchor"].run(feed)
        for name in ("index", "mean"):
            np.testing.assert_array_equal(got[name], want[name])
    assert not np.array_equal(results[0]["mean"], results[1]["mean"])
    # ... and keeps its result: outputs are copies, not the static buffers replays rewrite
    np.testing.assert_array_equal(results[0]["index"], eager["nonanchor"].run(feeds[0])["index"])


def test_new_shapes_capture_and_the_least_recently_used_graph_is_dropped(tiny_model, eager, fake_cuda,
                                                            monkeypatch):
    monkeypatch.setattr(torch_engine, "MAX_GRAPHS", 2)
    engine = graphed(eager, fake_cuda)["g_s"]
    rng = np.random.default_rng(1)
    shapes = [(2, 3), (3, 3), (2, 3), (4, 2), (2, 3)]
    for h, w in shapes:
        y_hat = rng.normal(size=(1, tiny_model.cfg.latent_channels, h, w)).astype(np.float32)
        got = engine.run({"y_hat": y_hat})["image_hat"]
        np.testing.assert_array_equal(got, eager["g_s"].run({"y_hat": y_hat})["image_hat"])
    # (2,3) and (3,3) captured; (2,3) replayed, so (4,2) drops (3,3), the least
    # recently used; the last (2,3) replays
    assert len(fake_cuda.graphs) == 3
    assert [k[0][0][2:] for k in engine._graphs] == [(4, 2), (2, 3)]


def test_threads_share_one_engine_safely(tiny_model, eager, fake_cuda):
    engine = graphed(eager, fake_cuda)["nonanchor"]
    rng = np.random.default_rng(2)
    feeds = [_inputs(rng, tiny_model.cfg.latent_channels) for _ in range(24)]
    want = [eager["nonanchor"].run(f)["mean"] for f in feeds]
    got: dict[int, np.ndarray] = {}

    def work(start):
        for i in range(start, len(feeds), 4):
            got[i] = engine.run(feeds[i])["mean"]
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_cuda.graphs) == 1
    for i, w in enumerate(want):
        np.testing.assert_array_equal(got[i], w)


def test_codec_on_graphed_engines_writes_the_eager_codecs_bytes(tiny_codec, eager, fake_cuda,
                                                                photo):
    """The whole codec on captured graphs: the same bitstream and image as eager engines."""
    codec = Codec(tiny_codec.info, graphed(eager, fake_cuda), tiny_codec.tables)
    reference = Codec(tiny_codec.info, eager, tiny_codec.tables)
    for image in (photo, photo[:77, :101]):
        data = codec.compress(image)
        assert data == reference.compress(image)
        np.testing.assert_array_equal(codec.decompress(data), reference.decompress(data))
    # one graph per stage and size (the encoder's reconstruction and the decoder share g_s's)
    assert len(fake_cuda.graphs) == 2 * 6


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_codec_on_cuda_graphs(tiny_model, tiny_codec, photo, dtype, cuda_graphs):
    """On a real GPU: each CUDA configuration decodes its own files bit-exactly (the
    reconstruction checksum is on by default) and close to the CPU codec's image."""
    codec = Codec.from_model(tiny_model, device="cuda", dtype=dtype, cuda_graphs=cuda_graphs)
    for _ in range(2):                       # the second call replays the captured graphs
        data = codec.compress(photo)
        image = codec.decompress(data)
    cpu = tiny_codec.decompress(tiny_codec.compress(photo)).astype(int)
    assert np.abs(image.astype(int) - cpu).mean() < 2.0


def test_the_device_check_runs_on_the_cpu(capsys):
    """benchmarks/gpu_check.py, which a session lent a GPU runs: on the CPU it loads
    float32 and bfloat16, names the CUDA-only setups it could not load, and the CPU's
    own files decode on the CPU float32 codec."""
    import importlib
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:        # plain ``pytest`` does not put the checkout on the path
        sys.path.insert(0, root)
    check = importlib.import_module("benchmarks.gpu_check")
    assert check.main(["--device", "cpu", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "| float32 | 5/5 |" in out and "| bfloat16 | 5/5 |" in out
    assert "| float32 | 5/5 | 5/5 | 5/5 | inf |" in out
    if not torch.cuda.is_available():
        assert "- float16: EngineError: dtype float16 needs a CUDA device" in out
