"""PyTorch backend: each stage calls the matching FastLIC method under inference_mode
(h_s, anchor and nonanchor: those of ``model.exact``, :mod:`fastlic.model.exact`, in
every dtype).

Options: ``device`` ("cpu", "cuda", "cuda:N"), ``dtype`` ("float32"; "float16" on
CUDA: the networks run in half precision except the layers the FP16 graphs keep in
FP32, :mod:`fastlic.model.precision`, and the exact stages; "bfloat16": g_s alone runs in bf16 with a
float32-accurate output, :mod:`fastlic.model.bfloat16`, for CPUs with AMX or
AVX512-BF16, and every other stage stays float32, so bitstreams are those of float32;
inputs and outputs stay float32 numpy),
``cuda_graphs`` (capture one CUDA graph per stage and input shape, replayed on later
calls; CUDA only). On CUDA each engine times its copies as the sub-stages
``<stage>.h2d`` and ``<stage>.d2h`` of the active profiling timer.

All engines are safe to call from several threads: eager modules do not mutate state
in inference mode, and a captured graph's static buffers are guarded by a lock.
"""
from __future__ import annotations

import contextlib
import copy
import threading

import numpy as np
import torch

from ...errors import EngineError
from ...model.bfloat16 import native_bf16, to_bf16_synthesis
from ...model.packed import to_packed
from ...model.precision import to_half
from ...model.subpixel import to_subpixel
from ...timing import sub_stage
from ...stages import EXACT_STAGES, STAGES, StageSpec

from ..base import Engine
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BF16_STAGES = ("g_s",)   # the stages dtype bfloat16 runs in bf16 (module docstring)
METHODS = {"g_a": "analysis", "h_a": "hyper_analysis", "h_s": "hyper_synthesis",
           "anchor": "anchor_params", "nonanchor": "nonanchor_params", "g_s": "synthesis"}
MAX_GRAPHS = 8   # captured shapes kept per stage; the least recently used is dropped beyond this


class TorchEngine(Engine):
    """Runs ``fn`` (a FastLIC method) on ``device`` in ``dtype``; float32 numpy in and out."""

    def __init__(self, spec: StageSpec, fn, device: str = "cpu", dtype: str = "float32",
                 channels_last: bool = False):
        super().__init__(spec)
        self.fn = fn
        self.device = torch.device(device)
        self.compute = DTYPES[dtype]
        # a bf16 stage's module takes float32 and casts itself (fastlic.model.bfloat16)
        self.dtype = torch.float32 if dtype == "bfloat16" else self.compute
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.copies = self.device.type != "cpu"   # time copies only where they are copies

    def describe(self) -> str:
        layout = "channels_last" if self.memory_format == torch.channels_last else "NCHW"
        compute = str(self.compute)
        if self.compute == torch.bfloat16 and self.device.type == "cpu":
            compute += " (native)" if native_bf16() else " (emulated: slower than float32)"
        return f"torch {type(self).__name__} on {self.device}, {compute}, {layout}"

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._maybe(f"{self.spec.name}.h2d"):
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n], dtype=np.float32))
                    .to(self.device, self.dtype, non_blocking=False,
                        memory_format=self.memory_format) for n in self.spec.inputs]
        with torch.inference_mode():
            result = self._call(args)
        if isinstance(result, torch.Tensor):
            result = (result,)
        if self.copies:
            self.synchronize()   # so that d2h below times the copies, not the network
        with self._maybe(f"{self.spec.name}.d2h"):
            return {n: t.float().cpu().numpy() for n, t in zip(self.spec.outputs, result)}

    def _call(self, args: list[torch.Tensor]):
        return self.fn(*args)

    def _maybe(self, name: str):
        return sub_stage(name) if self.copies else contextlib.nullcontext()


class GraphedTorchEngine(TorchEngine):
    """CUDA-graph variant: the first call per input shape captures, later calls replay.

    At most MAX_GRAPHS shapes stay captured; a new shape beyond that drops the one
    used least recently, so a service's common size is not re-captured after a few
    odd ones."""

    def __init__(self, spec: StageSpec, fn, device: str = "cuda", dtype: str = "float32",
                 channels_last: bool = False):
        super().__init__(spec, fn, device, dtype, channels_last)
        self._graphs: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def _call(self, args: list[torch.Tensor]):
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        with self._lock:
            entry = self._graphs.pop(key, None) or self._capture(args)
            self._graphs[key] = entry      # (re)inserted last: the most recently used
            graph, static_in, static_out = entry
            for buf, a in zip(static_in, args):
                buf.copy_(a)
            graph.replay()
            return tuple(t.clone() for t in static_out)

    def _capture(self, args: list[torch.Tensor]) -> tuple:
        static_in = [a.clone() for a in args]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):        # warm-up: lazy init and cuDNN autotuning outside capture
                self.fn(*static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*static_in)
        out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        while len(self._graphs) >= MAX_GRAPHS:
            self._graphs.pop(next(iter(self._graphs)))   # the least recently used
        return graph, static_in, out


def check_options(device: str, dtype: str, cuda_graphs: bool) -> torch.device:
    """The torch device for these options; EngineError naming the problem otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise EngineError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    if dtype not in DTYPES:
        raise EngineError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if dev.type == "cuda":
        _check_cuda(dev)
    elif dtype == "float16" or cuda_graphs:
        what = "dtype float16" if dtype == "float16" else "CUDA graphs"
        raise EngineError(f"{what} needs a CUDA device; pass device cuda or drop the option")
    return dev


def _check_cuda(dev: torch.device) -> None:
    if not torch.cuda.is_available():
        raise EngineError(f"CUDA is not available (torch {torch.__version__}, built with CUDA "
                          f"{torch.version.cuda or 'none'}, no GPU visible); use device cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise EngineError(f"no GPU {dev}: {torch.cuda.device_count()} visible; use cuda:0..")


def load_engines(model, device: str = "cpu", dtype: str = "float32",
                 cuda_graphs: bool = False, threads: int = 0,
                 subpixel: bool = True, packed: bool = True,
                 channels_last: bool | None = None) -> dict[str, Engine]:
    """One engine per stage of ``model`` on ``device`` in ``dtype`` (bfloat16: g_s only,
    see BF16_STAGES).

    threads > 0 sets torch's intra-op thread count (process-wide). subpixel: run
    the transposed convolutions of h_s and g_s as conv + pixel shuffle
    (:mod:`fastlic.model.subpixel`, as the exported graphs do), on a copy of
    ``model``. packed: compute the checkerboard stages only at the positions they
    serve (:mod:`fastlic.model.packed`, as the exported graphs do; their outputs are
    zero at the other pass's positions). With neither, on the CPU in float32 the
    engines call ``model`` itself.
    channels_last: run the networks on NHWC tensors (a copy of ``model`` too); None
    (default): on the CPU, where it decodes about a quarter faster
    (``experiments/decode_variants.py``), off on CUDA, where it has not been measured.
    """
    dev = check_options(device, dtype, cuda_graphs)
    if getattr(model, "exact", None) is None:
        raise EngineError("this model has no exact entropy path (model.exact); ship it with "
                          "`fastlic train-ship` or wrap it with Codec.from_model")
    if dtype == "bfloat16" and not subpixel:
        raise EngineError("dtype bfloat16 runs g_s in its subpixel form; drop subpixel=False")
    if channels_last is None:
        channels_last = dev.type == "cpu"
    if threads > 0:
        torch.set_num_threads(threads)
    if subpixel:
        model = to_subpixel(model)
    elif packed or dev.type != "cpu" or dtype != "float32" or channels_last:
        model = copy.deepcopy(model)   # leave the caller's module
    if packed:
        model = to_packed(model, inplace=True)
    model = model.to(dev).eval()
    if dtype == "float16":    # with the FP32 layers of the FP16 graphs
        model = to_half(model)
    elif dtype == "bfloat16":
        model = to_bf16_synthesis(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cls = GraphedTorchEngine if cuda_graphs else TorchEngine

    def stage_dtype(name: str) -> str:
        if name in EXACT_STAGES:
            return "float32"   # the integer arithmetic picks its own float32/float64
        return dtype if dtype != "bfloat16" or name in BF16_STAGES else "float32"

    def stage_fn(name: str):
        return getattr(model.exact if name in EXACT_STAGES else model, METHODS[name])
    return {name: cls(STAGES[name], stage_fn(name), str(dev), stage_dtype(name), channels_last)
            for name in STAGES}
