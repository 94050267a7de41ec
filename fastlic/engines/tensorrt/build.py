"""Build (or load from the cache) one serialized TensorRT engine per stage graph.

::

    manifest ─▶ graph of the stage (its FP16 variant if listed, precision "fp16")
             ─▶ g_a, deform "plugin": DeformConv ─▶ fastlic plugin node (plugin.py)
             ─▶ OnnxParser ─▶ FP16 flag, TF32 off, FP32 nodes pinned, one profile
             ─▶ build_serialized_network ─▶ <cache>/tensorrt/<stage>-<key>.engine

Written against TensorRT 10's Python API (>= 10.1); ``trt`` is the imported
``tensorrt`` module, passed in so that nothing here imports it.

Precision ("fp16"): TensorRT 10's weakly typed mode with ``BuilderFlag.FP16`` lets the
builder run any layer in FP16, so the nodes :mod:`fastlic.export.fp16` keeps FP32
(deformable sampling, entropy heads, measured ranges) are pinned: layers named after
them (onnx-tensorrt names a node's layer after the node) get FP32 precision and
output types under ``OBEY_PRECISION_CONSTRAINTS``; layers the parser adds around a
node under other names are not pinned. TF32 (on by default for FP32 layers) is
turned off, so FP32 layers, pinned ones included, keep FP32 arithmetic. The names come from the manifest
(FP16 variants list them) or :func:`fastlic.export.fp16.plan_fp16` without the range
rule. TensorRT deprecates weak typing from 10.12; strongly typed networks are not
done here.

One optimization profile covers every input: batch 1..``max_batch``, image sizes
``min_size``..``max_size`` pixels (H, W, multiples of 64), latents /16 and /64
(:data:`fastlic.stages.SPATIAL_FACTOR`).

Cache key: sha256 of the graph file (from the manifest), TensorRT version, GPU name
and compute capability, precision, DeformConv path and profile. Files are written to
a temporary name and renamed, so readers never see half an engine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from ...errors import EngineError
from ...stages import SPATIAL_FACTOR

MIN_VERSION = (10, 1)           # DeformConv in the ONNX parser
PYTHON_PLUGINS = (10, 6)        # tensorrt.plugin (decorator Python plugins)
DEFORM_PATHS = ("auto", "plugin", "native")
PRECISIONS = ("fp16", "fp32")


@dataclasses.dataclass(frozen=True)
class Profile:
    """Image sizes (H, W) in pixels the engines accept, and the batch range."""

    min_size: tuple[int, int] = (64, 64)
    opt_size: tuple[int, int] = (512, 768)
    max_size: tuple[int, int] = (2048, 2048)
    max_batch: int = 1

    def __post_init__(self):
        for field in ("min_size", "opt_size", "max_size"):
            object.__setattr__(self, field, tuple(int(v) for v in getattr(self, field)))
        sizes = (self.min_size, self.opt_size, self.max_size)
        if any(len(s) != 2 or any(int(v) != v or v < 64 or v % 64 for v in s) for s in sizes):
            raise EngineError(f"profile sizes {sizes} must be (H, W) pairs of multiples of 64")
        if not all(a <= b <= c for a, b, c in zip(*sizes)) or self.max_batch < 1:
            raise EngineError(f"profile needs min <= opt <= max per side and max_batch >= 1, "
                              f"got {sizes}, max_batch {self.max_batch}")

    def shapes(self, name: str, channels: int) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) NCHW shapes of the stage tensor ``name`` with ``channels``."""

        f = SPATIAL_FACTOR[name]
        return tuple((b, channels, h // f, w // f) for b, (h, w) in
                     zip((1, 1, self.max_batch), (self.min_size, self.opt_size, self.max_size)))

    def describe(self) -> str:
        (h0, w0), (h1, w1) = self.min_size, self.max_size
        return f"{h0}x{w0}..{h1}x{w1} pixels, batch 1..{self.max_batch}"


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """precision "fp16"/"fp32"; deform "plugin", "native" (resolved, see resolve_deform)."""

    precision: str = "fp16"
    deform: str = "plugin"
    profile: Profile = Profile()


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def check_version(trt) -> None:
    if version_tuple(trt.__version__) < MIN_VERSION:
        raise EngineError(f"TensorRT {trt.__version__} is too old: fastlic needs 10.1 or newer "
                          "(DeformConv in the ONNX parser); pip install -U tensorrt")


def resolve_deform(trt, deform: str) -> str:
    """"auto" -> "plugin" from TensorRT 10.6 (tensorrt.plugin), else "native" (>= 10.1)."""
    if deform not in DEFORM_PATHS:
        raise EngineError(f"unknown deform {deform!r}; choose one of {DEFORM_PATHS}")
    has_plugins = version_tuple(trt.__version__) >= PYTHON_PLUGINS
    if deform == "auto":
        return "plugin" if has_plugins else "native"
    if deform == "plugin" and not has_plugins:
        raise EngineError(f"deform='plugin' needs TensorRT 10.6 or newer (tensorrt.plugin), "
                          f"this is {trt.__version__}; pass deform='native'")
    return deform


def stage_graph(manifest, stage: str, precision: str):
    """The GraphInfo TensorRT runs for ``stage``: the FP16 variant of the manifest's
    ``tensorrt`` file when ``precision`` is "fp16" and one was exported, else that file."""
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    fp32 = manifest.candidates("tensorrt", stage)
    if not fp32:
        raise EngineError(f"the manifest lists no graph for stage {stage}; export the model again")
    chosen = manifest.engines.get("tensorrt", {}).get(stage, fp32[0].file)
    half = [g for g in manifest.candidates("tensorrt", stage, "fp16") if g.source == chosen]
    return half[0] if precision == "fp16" and half else fp32[0]


def engine_key(graph, trt_version: str, gpu: str, options: BuildOptions) -> str:
    """sha256 over everything the serialized engine depends on."""
    from .plugin import PLUGIN_ID, PLUGIN_REVISION  # noqa: PLC0415

    deform = options.deform if graph.stage == "g_a" else ""   # only g_a has a DeformConv
    parts = {"graph": graph.sha256, "file": graph.file, "tensorrt": trt_version, "gpu": gpu,
             "precision": options.precision, "deform": deform,
             "plugin": f"{PLUGIN_ID}/{PLUGIN_REVISION}" if deform == "plugin" else "",
             "profile": dataclasses.asdict(options.profile)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, stage: str, key: str) -> Path:
    return Path(cache_dir) / "tensorrt" / f"{stage}-{key[:24]}.engine"


def register_plugins(trt, logger, deform: str) -> None:
    """Make the DeformConv implementation known to TensorRT (before parsing or loading)."""
    if deform == "plugin":
        from .plugin import register_plugin  # noqa: PLC0415

        register_plugin()
    else:
        trt.init_libnvinfer_plugins(logger, "")


def onnx_bytes(directory: Path, graph, deform: str) -> bytes:
    """The graph file's bytes; g_a with deform "plugin" rewritten for the fastlic plugin."""
    data = (Path(directory) / graph.file).read_bytes()
    if graph.stage != "g_a" or deform != "plugin":
        return data
    onnx = _import_onnx("rewriting g_a for the fastlic DeformConv plugin")
    from .plugin import plugin_graph  # noqa: PLC0415

    return plugin_graph(onnx.load_from_string(data)).SerializeToString()


def fp32_nodes(graph) -> set[str]:
    """Names of the nodes that stay FP32 (see the module docstring): export planned them
    into the manifest, for FP32 graphs and their FP16 twins alike."""
    return set(graph.fp32_nodes)


def _import_onnx(why: str):
    try:
        import onnx  # noqa: PLC0415 - export extra
    except ImportError:
        raise EngineError(f"{why} needs the onnx package: pip install onnx") from None
    return onnx


def build(trt, logger, data: bytes, graph, options: BuildOptions, fp32: set[str],
          log=None) -> bytes:
    """Parse ``data`` (the ONNX graph ``graph`` describes) and build a serialized engine."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)      # explicit batch: the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT {trt.__version__} cannot parse {graph.file}: "
                          + ("; ".join(errors) or "no parser error given").replace("\n", " "))
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)       # FP32 layers compute in FP32
    if options.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = pin_fp32(trt, network, fp32)
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        missed = sorted(fp32 - pinned)
        if missed and log is not None:   # the parser named its layers otherwise: say so
            log(f"warning: {graph.file}: no TensorRT layer named {', '.join(missed)}; "
                "these nodes may run in FP16")
    profile = builder.create_optimization_profile()
    for t in graph.inputs:
        profile.set_shape(t.name, *options.profile.shapes(t.name, int(t.shape[1])))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT {trt.__version__} could not build {graph.file} "
                          "(its log above says why)")
    return bytes(serialized)


def pin_fp32(trt, network, names: set[str]) -> set[str]:
    """FP32 precision and output types for layers named after ``names``; returns the
    names pinned (layers are matched by ONNX node name, which onnx-tensorrt keeps)."""
    pinned = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in names or layer.type == trt.LayerType.CONSTANT:
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
        pinned.add(layer.name)
    return pinned


def load_or_build(trt, logger, directory: Path, graph, options: BuildOptions, gpu: str,
                  cache_dir: Path, log, rebuild: bool = False) -> tuple[bytes, bool]:
    """(serialized engine of ``graph``, built now?): from the cache unless ``rebuild``,
    else built and cached."""
    path = cache_path(cache_dir, graph.stage, engine_key(graph, trt.__version__, gpu, options))
    if path.is_file() and not rebuild:
        return path.read_bytes(), False
    deform = f", DeformConv {options.deform}" if graph.stage == "g_a" else ""
    log(f"building the TensorRT engine of {graph.file} ({options.precision}, "
        f"{options.profile.describe()}{deform}) into {path}")
    fp32 = fp32_nodes(graph) if options.precision == "fp16" else set()
    blob = build(trt, logger, onnx_bytes(directory, graph, options.deform), graph, options, fp32,
                 log)
    write_atomic(path, blob)
    return blob, True


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

