"""The TensorRT backend with a fake ``tensorrt`` module, its DeformConv plugin and g_a rewrite.

TensorRT cannot run here: a fake module (put in ``sys.modules``) records what the
backend asks of the builder, parser and runtime. The plugin's computation and the
rewritten g_a are checked on the CPU against fastlic's reference and PyTorch; the two
tests that need CUDA (and a real TensorRT) skip without them. The export is conftest's
session-scoped ``tiny_export`` (shared with the other backend tests).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fastlic.engines import load_engines  # noqa: E402
from fastlic.engines.tensorrt import build as tensorrt_build  # noqa: E402
from fastlic.engines.tensorrt import engine as tensorrt_engine  # noqa: E402
from fastlic.engines.tensorrt import plugin as tensorrt_plugin  # noqa: E402
from fastlic.engines.tensorrt.build import BuildOptions, Profile, engine_key  # noqa: E402
from fastlic.engines.tensorrt.plugin import (PLUGIN_ID, PLUGIN_NAME,  # noqa: E402
                                             PLUGIN_NAMESPACE, deform_conv, plugin_graph)
from fastlic.errors import EngineError  # noqa: E402
from fastlic.manifest import (GraphInfo, load_manifest, read_signature,  # noqa: E402
                                     sha256_file, write_manifest)
from fastlic.model.deform import deform_conv2d_reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
has_tensorrt = importlib.util.find_spec("tensorrt") is not None


# ---- a fake tensorrt ---------------------------------------------------------------
class _Layer:
    def __init__(self, name: str, kind: str, log: list):
        self.name, self.type, self.num_outputs, self.log = name, kind, 1, log
        self.precision = None

    def get_output(self, j):
        return types.SimpleNamespace(dtype="float32")

    def set_output_type(self, j, dtype):
        self.log.append(("output_type", self.name, j, dtype))


class _Network:
    def __init__(self):
        self.layers, self.graph, self.doc = [], None, ""

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


def fake_tensorrt(log: list, version: str = "10.8.0.43") -> types.ModuleType:
    """A ``tensorrt`` module that records calls in ``log`` and makes engines that list
    the parsed graph's inputs and outputs."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = "float32", "float16"
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", TF32="TF32",
                                            OBEY_PRECISION_CONSTRAINTS="OBEY")
    trt.LayerType = types.SimpleNamespace(CONSTANT="constant")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")

    class Logger:
        WARNING = "warning"

        def __init__(self, level):
            self.level = level

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class Config:
        def __init__(self):
            self.flags, self.cleared, self.profiles = set(), set(), []

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.cleared.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            log.append(("create_network", flags))
            return _Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            log.append(("build", network.doc, config, network))
            io = {"inputs": [v.name for v in network.graph.input],
                  "outputs": [v.name for v in network.graph.output]}
            return b"fake-engine" + json.dumps(io).encode()

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            proto = onnx.load_from_string(data)
            log.append(("parse", proto.doc_string,
                        sorted({(n.op_type, n.domain) for n in proto.graph.node})))
            self.network.graph, self.network.doc = proto.graph, proto.doc_string
            self.network.layers = [_Layer(n.name, "constant" if n.op_type == "Constant"
                                          else "layer", log) for n in proto.graph.node]
            return True

    class Engine:
        def __init__(self, io):
            self.io = [(n, "input") for n in io["inputs"]] + [(n, "output")
                                                              for n in io["outputs"]]

        num_io_tensors = property(lambda self: len(self.io))

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return dict(self.io)[name]

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return types.SimpleNamespace()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            log.append(("deserialize",))
            if not blob.startswith(b"fake-engine"):
                return None
            return Engine(json.loads(blob[len(b"fake-engine"):]))

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    trt.init_libnvinfer_plugins = lambda logger, ns: log.append(("init_libnvinfer_plugins", ns))
    trt.plugin = fake_plugin_module(log)
    return trt


def fake_plugin_module(log: list) -> types.ModuleType:
    """``tensorrt.plugin``: the decorators record (kind, plugin id) and keep the function."""
    trtp = types.ModuleType("tensorrt.plugin")
    trtp.functions = {}

    class TensorDesc:
        def __init__(self, shape_expr=None, dtype=None):
            self.shape_expr, self.dtype = shape_expr, dtype

    def decorator(kind):
        def outer(plugin_id):
            def inner(fn):
                hints = fn.__annotations__
                assert not any(isinstance(h, str) for h in hints.values()), "string type hints"
                log.append((kind, plugin_id))
                trtp.functions[kind] = fn
                return fn
            return inner
        return outer

    trtp.TensorDesc, trtp.Tensor = TensorDesc, object
    trtp.register, trtp.autotune, trtp.impl = (decorator(k) for k in ("register", "autotune",
                                                                       "impl"))
    trtp.from_shape_expr = lambda shape, dtype: TensorDesc(tuple(shape), dtype)
    trtp.AutoTuneCombination = lambda io_types, layouts=None: (io_types, layouts)
    return trtp


@pytest.fixture()
def trt_log(monkeypatch, tmp_path) -> list:
    """Install a fake TensorRT 10.8 and pretend cuda:0 exists; returns the call log."""
    log: list = []
    install_fake(monkeypatch, fake_tensorrt(log))
    monkeypatch.setattr(tensorrt_engine, "check_device", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(tensorrt_engine, "on_device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(tensorrt_engine, "gpu_name", lambda device: "Fake GPU sm_90")
    monkeypatch.setenv("FASTLIC_CACHE_DIR", str(tmp_path / "cache"))
    return log


def install_fake(monkeypatch, trt) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trt.plugin)
    monkeypatch.setattr(tensorrt_plugin, "_registered", False)   # a new process, as it were


@pytest.fixture(scope="module")
def model_dir(tiny_export, tmp_path_factory) -> Path:
    """The tiny export plus an FP16 g_a (``g_a_fp16.onnx``) in its manifest."""
    from fastlic.export.fp16 import write_fp16
    out = tmp_path_factory.mktemp("trt") / "export"
    shutil.copytree(tiny_export, out)
    kept = write_fp16(out / "g_a.onnx", out / "g_a_fp16.onnx", None)
    manifest = load_manifest(out)
    half = GraphInfo("g_a", "g_a_fp16.onnx", "deformconv", sha256_file(out / "g_a_fp16.onnx"),
                     *read_signature(out / "g_a_fp16.onnx"), {}, precision="fp16",
                     source="g_a.onnx", fp32_nodes=kept)
    write_manifest(out, type(manifest)(**{**manifest.__dict__,
                                          "graphs": manifest.graphs + (half,)}))
    return out


def builds(log: list) -> dict[str, tuple]:
    """stage -> (config, network) of every build in ``log``."""
    return {re.search(r"fastlic stage (\w+)", doc)[1]: (config, network)
            for kind, doc, config, network in (e for e in log if e[0] == "build")}


def channels(tiny_export) -> dict[str, int]:
    manifest = load_manifest(tiny_export)
    return {t.name: t.shape[1] for g in manifest.graphs for t in g.inputs}


# ---- the plugin's computation and the g_a rewrite (CPU) ------------------------------
def test_plugin_compute_equals_the_reference_deformable_conv_on_cpu():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, 5, 7, generator=gen)
    weight, bias = torch.randn(3, 4, 3, 3, generator=gen), torch.randn(3, generator=gen)
    offset = 3 * torch.randn(2, 18, 5, 7, generator=gen)          # samples far outside too
    mask = 2 * torch.rand(2, 9, 5, 7, generator=gen)
    out = deform_conv(x, weight, offset, bias, mask)              # ONNX input order
    ref = deform_conv2d_reference(x, offset, mask, weight, bias)
    assert out.shape == (2, 3, 5, 7) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def _g_a(tiny_export):
    return onnx.load(str(tiny_export / "g_a.onnx"))


def test_plugin_graph_renames_only_the_deformconv_node(tiny_export):
    proto = _g_a(tiny_export)
    rewritten = plugin_graph(proto)
    onnx.checker.check_model(rewritten, full_check=True)
    before = [n for n in proto.graph.node if n.op_type == "DeformConv"]
    after = [n for n in rewritten.graph.node if n.op_type == PLUGIN_NAME]
    assert len(before) == len(after) == 1 and before[0].op_type == "DeformConv"   # a copy
    node = after[0]
    assert (node.domain, node.name, list(node.input), list(node.output)) == (
        PLUGIN_NAMESPACE, before[0].name, list(before[0].input), list(before[0].output))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"plugin_namespace": PLUGIN_NAMESPACE.encode()}   # version: default "1"
    assert (PLUGIN_NAMESPACE, 1) in {(o.domain, o.version) for o in rewritten.opset_import}
    others = [n for n in rewritten.graph.node if n.op_type != PLUGIN_NAME]
    assert others == [n for n in proto.graph.node if n.op_type != "DeformConv"]
    assert rewritten.graph.input == proto.graph.input
    assert rewritten.graph.output == proto.graph.output
    assert PLUGIN_ID == f"{node.domain}::{node.op_type}"          # what the parser looks up


def test_rewritten_g_a_with_the_plugin_compute_equals_pytorch(tiny_export, shipped_tiny):
    """The plugin node gets its inputs in the order the compute function reads them:
    onnx's reference evaluator, with the plugin op = deform_conv, reproduces model g_a."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    from fastlic.modelfile import load_model

    class Plugin(OpRun):
        op_domain = PLUGIN_NAMESPACE

        def _run(self, *inputs, plugin_namespace=None):
            args = [torch.from_numpy(np.array(a)) for a in inputs]
            return (deform_conv(*args).numpy(),)

    Plugin.__name__ = PLUGIN_NAME
    model = load_model(shipped_tiny)[0]
    image = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(2))
    run = ReferenceEvaluator(plugin_graph(_g_a(tiny_export)), new_ops=[Plugin])
    got = run.run(None, {"image": image.numpy()})[0]
    with torch.no_grad():
        want = model.analysis(image).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_deformconv_the_plugin_does_not_compute_is_refused(tiny_export):
    proto = _g_a(tiny_export)
    node = next(n for n in proto.graph.node if n.op_type == "DeformConv")
    pads = next(a for a in node.attribute if a.name == "pads")
    del pads.ints[:]
    pads.ints.extend([2, 2, 2, 2])
    with pytest.raises(EngineError, match="deform='native'") as info:
        plugin_graph(proto)
    assert "\n" not in str(info.value) and "'pads': [2, 2, 2, 2]" in str(info.value)
    node.attribute.remove(pads)                                    # ONNX default: no padding
    with pytest.raises(EngineError, match="'pads': \\[0, 0, 0, 0\\]"):
        plugin_graph(proto)


def test_plugin_registers_shape_types_and_implementation(monkeypatch):
    log: list = []
    install_fake(monkeypatch, fake_tensorrt(log))
    tensorrt_plugin.register_plugin()
    tensorrt_plugin.register_plugin()                              # once per process
    assert log == [("register", PLUGIN_ID), ("autotune", PLUGIN_ID), ("impl", PLUGIN_ID)]
    fns = sys.modules["tensorrt.plugin"].functions
    desc = sys.modules["tensorrt.plugin"].TensorDesc
    x, w = desc(("B", 12, "H", "W"), "float32"), desc((16, 12, 3, 3), "float32")
    out = fns["register"](x, w, desc(), desc(), desc())
    assert (out.shape_expr, out.dtype) == (("B", 16, "H", "W"), "float32")
    assert fns["autotune"](x, w, None, None, None, None) == [("FP32, FP32, FP32, FP32, FP32, FP32",
                                                             "LINEAR")]
    assert list(fns["impl"].__code__.co_varnames[:7]) == ["x", "weight", "offset", "bias",
                                                          "mask", "outputs", "stream"]


# ---- building: flags, profile, plugin order, cache (fake tensorrt) -------------------
def test_fp16_flag_and_one_profile_per_stage_with_the_expected_shapes(trt_log, model_dir,
                                                                       tiny_export):
    engines = load_engines("tensorrt", model_dir)
    c = channels(tiny_export)
    m, nh = c["y"], c["z_hat"]
    expected = {  # (min 64x64, opt 512x768, max 2048x2048), batch 1
        "g_a": {"image": ((1, 3, 64, 64), (1, 3, 512, 768), (1, 3, 2048, 2048))},
        "h_a": {"y": ((1, m, 4, 4), (1, m, 32, 48), (1, m, 128, 128))},
        "g_s": {"y_hat": ((1, m, 4, 4), (1, m, 32, 48), (1, m, 128, 128))}}
    built = builds(trt_log)
    assert sorted(built) == sorted(expected)
    assert sorted(engines) == sorted([*expected, "h_s", "anchor", "nonanchor"])
    for stage in ("h_s", "anchor", "nonanchor"):   # the exact stages: torch CUDA beside TensorRT
        assert type(engines[stage]).__name__ == "TorchEngine"
        assert type(engines[stage].fn.__self__).__name__ == "ExactEntropy"
        assert engines[stage].device.type == "cuda" and engines[stage].dtype == torch.float32
    engines = {s: e for s, e in engines.items() if s in expected}
    for stage, (config, _) in built.items():
        assert "FP16" in config.flags and "TF32" in config.cleared, stage
        assert len(config.profiles) == 1, stage
        assert config.profiles[0].shapes == expected[stage], stage
    assert ("create_network", 0) in trt_log                         # explicit batch: default
    assert all(isinstance(e, tensorrt_engine.TensorRTEngine) for e in engines.values())
    assert engines["g_a"].file == "g_a_fp16.onnx" and engines["h_a"].file == "h_a.onnx"


def test_the_fp32_nodes_are_pinned(trt_log, model_dir):
    load_engines("tensorrt", model_dir)
    built = builds(trt_log)
    manifest = load_manifest(model_dir)
    kept = manifest.graph("g_a_fp16.onnx").fp32_nodes
    config, network = built["g_a"]
    pinned = {layer.name for layer in network.layers if layer.precision == "float32"}
    deform = next(n for n in kept if kept[n].startswith("sampling: DeformConv"))
    assert deform in pinned and pinned <= set(kept) and "OBEY" in config.flags
    assert all(layer.type != "constant" for layer in network.layers if layer.name in pinned)


def test_custom_profile_and_fp32(trt_log, model_dir):
    load_engines("tensorrt", model_dir, precision="fp32", min_size=(128, 128),
                 opt_size=[256, 256], max_size=(1024, 2048), max_batch=4)
    config, _ = builds(trt_log)["g_a"]
    assert config.profiles[0].shapes == {"image": ((1, 3, 128, 128), (1, 3, 256, 256),
                                                   (4, 3, 1024, 2048))}
    assert not config.flags and config.cleared == {"TF32"}
    assert [e[1] for e in trt_log if e[0] == "parse"][0] == "fastlic stage g_a"   # not FP16
    for bad in (dict(max_size=(100, 100)), dict(min_size=(1024, 1024)), dict(max_batch=0),
                dict(precision="int8"), dict(deform="cpu")):
        with pytest.raises(EngineError):
            load_engines("tensorrt", model_dir, **bad)


def _order(log: list, kind: str) -> int:
    return next(i for i, e in enumerate(log) if e[0] == kind)


def test_the_plugin_is_registered_before_parsing(trt_log, model_dir):
    load_engines("tensorrt", model_dir)
    assert _order(trt_log, "register") < _order(trt_log, "parse")
    assert not any(e[0] == "init_libnvinfer_plugins" for e in trt_log)
    g_a = next(e[2] for e in trt_log if e[0] == "parse" and "stage g_a" in e[1])
    assert (PLUGIN_NAME, PLUGIN_NAMESPACE) in g_a and ("DeformConv", "") not in g_a


def test_native_deformconv_registers_the_standard_plugins_first(trt_log, model_dir,
                                                               monkeypatch):
    install_fake(monkeypatch, fake_tensorrt(trt_log, version="10.3.0"))   # no tensorrt.plugin
    load_engines("tensorrt", model_dir)                                   # auto -> native
    assert _order(trt_log, "init_libnvinfer_plugins") < _order(trt_log, "parse")
    assert not any(e[0] == "register" for e in trt_log)
    g_a = next(e[2] for e in trt_log if e[0] == "parse" and "stage g_a" in e[1])
    assert ("DeformConv", "") in g_a
    with pytest.raises(EngineError, match="10.6 or newer"):
        load_engines("tensorrt", model_dir, deform="plugin")
    install_fake(monkeypatch, fake_tensorrt(trt_log, version="10.0.1"))
    with pytest.raises(EngineError, match="too old"):
        load_engines("tensorrt", model_dir)


def test_engines_are_cached_and_reused(trt_log, model_dir, tmp_path):
    load_engines("tensorrt", model_dir)
    files = sorted((tmp_path / "cache" / "tensorrt").iterdir())
    assert len(files) == 3 and all(f.suffix == ".engine" for f in files)   # no temp files
    trt_log.clear()
    load_engines("tensorrt", model_dir)
    assert not any(e[0] in ("parse", "build") for e in trt_log)
    files[0].write_bytes(b"garbage")                  # TensorRT rejects it: rebuilt once
    load_engines("tensorrt", model_dir)
    assert [e[0] for e in trt_log].count("build") == 1
    assert files[0].read_bytes().startswith(b"fake-engine")


def test_the_cache_key_holds_graph_hash_tensorrt_gpu_and_profile(model_dir):
    graph = load_manifest(model_dir).graph("g_a.onnx")
    options = BuildOptions("fp16", "plugin", Profile())
    key = engine_key(graph, "10.8.0", "H100 sm_90", options)
    changed = [engine_key(type(graph)(**{**graph.__dict__, "sha256": "0" * 64}), "10.8.0",
                          "H100 sm_90", options),
               engine_key(graph, "10.9.0", "H100 sm_90", options),
               engine_key(graph, "10.8.0", "L4 sm_89", options),
               engine_key(graph, "10.8.0", "H100 sm_90",
                          BuildOptions("fp16", "plugin", Profile(max_size=(4096, 4096)))),
               engine_key(graph, "10.8.0", "H100 sm_90", BuildOptions("fp32", "plugin")),
               engine_key(graph, "10.8.0", "H100 sm_90", BuildOptions("fp16", "native"))]
    assert key == engine_key(graph, "10.8.0", "H100 sm_90", options)
    assert len({key, *changed}) == 1 + len(changed)
    assert tensorrt_build.cache_path(Path("/c"), "g_a", key).name == f"g_a-{key[:24]}.engine"


def test_a_changed_graph_is_built_again(trt_log, model_dir, tmp_path):
    load_engines("tensorrt", model_dir)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    manifest = load_manifest(other)
    proto = onnx.load(str(other / "h_a.onnx"))
    proto.doc_string += " (changed)"
    onnx.save_model(proto, str(other / "h_a.onnx"))
    graphs = tuple(g if g.file != "h_a.onnx" else
                   type(g)(**{**g.__dict__, "sha256": sha256_file(other / "h_a.onnx")})
                   for g in manifest.graphs)
    write_manifest(other, type(manifest)(**{**manifest.__dict__, "graphs": graphs}))
    trt_log.clear()
    load_engines("tensorrt", other, verify=False)
    assert sorted(builds(trt_log)) == ["h_a"]


class _Context:
    """An execution context on host memory: output = 2 * the input's first values."""

    def __init__(self, out_shape, accept=True):
        self.out_shape, self.accept, self.calls, self.addresses = out_shape, accept, [], {}

    def set_input_shape(self, name, shape):
        self.calls.append(("shape", name, shape))
        self.in_shape = shape
        return self.accept

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def get_tensor_shape(self, name):
        return self.out_shape

    def execute_async_v3(self, stream):
        import ctypes
        n_in, n_out = int(np.prod(self.in_shape)), int(np.prod(self.out_shape))
        y = np.ctypeslib.as_array((ctypes.c_float * n_in).from_address(self.addresses["y"]))
        z = np.ctypeslib.as_array((ctypes.c_float * n_out).from_address(self.addresses["z"]))
        z[:] = 2 * y[:n_out]
        self.calls.append(("execute", stream))
        return True


def test_run_binds_shapes_and_addresses_and_returns_the_outputs(monkeypatch):
    """The run path on host memory: a fake context reads and writes the bound buffers."""
    trt = fake_tensorrt([])
    engine = trt.Runtime(None).deserialize_cuda_engine(
        b"fake-engine" + json.dumps({"inputs": ["y"], "outputs": ["z"]}).encode())
    context = _Context((1, 2, 1, 1))
    engine.create_execution_context = lambda: context
    monkeypatch.setattr(tensorrt_engine, "on_device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(
        synchronize=lambda: None, cuda_stream=77))
    from fastlic.engines import STAGES
    run = tensorrt_engine.TensorRTEngine(STAGES["h_a"], trt, engine, torch.device("cpu"),
                                         Profile(), "h_a.onnx")
    y = np.arange(32, dtype=np.float64).reshape(1, 2, 4, 4)          # converted to float32
    out = run.run({"y": y})
    assert context.calls == [("shape", "y", (1, 2, 4, 4)), ("execute", 77)]
    np.testing.assert_array_equal(out["z"], [[[[0.0]], [[2.0]]]])
    assert out["z"].dtype == np.float32
    context.accept = False
    with pytest.raises(EngineError, match="outside the TensorRT profile .*max_size"):
        run.run({"y": y})
    with pytest.raises(EngineError, match="takes inputs"):
        run.run({"x": y})
    engine.get_tensor_dtype = lambda name: "float16"
    with pytest.raises(EngineError, match="float32 tensors"):
        tensorrt_engine.TensorRTEngine(STAGES["h_a"], trt, engine, torch.device("cpu"),
                                       Profile(), "h_a.onnx")


# ---- errors and imports without tensorrt ---------------------------------------------
def test_missing_tensorrt_is_a_typed_one_line_error(monkeypatch, model_dir, tiny_model):
    monkeypatch.setitem(sys.modules, "tensorrt", None)              # import tensorrt fails
    from fastlic.runtime.codec import Codec
    for call in (lambda: load_engines("tensorrt", model_dir),
                 lambda: Codec.from_model(tiny_model, backend="tensorrt", device="cuda")):
        with pytest.raises(EngineError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "pip install tensorrt" in message


def test_cli_without_tensorrt_fails_fast_with_the_engine_exit_code(monkeypatch, tmp_path,
                                                                   photo, capsys):
    from PIL import Image

    from fastlic.cli import main
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    png = tmp_path / "p.png"
    Image.fromarray(photo).save(png)
    code = main(["compress", str(png), "--backend", "tensorrt", "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert code == EngineError.exit_code and err.count("\n") == 0
    assert err.startswith("fastlic: error: backend 'tensorrt' needs") and not (
        tmp_path / "p.flic").exists()


def test_tensorrt_needs_a_cuda_device(monkeypatch):
    install_fake(monkeypatch, fake_tensorrt([]))
    with pytest.raises(EngineError, match="runs on a CUDA GPU, not 'cpu'"):
        tensorrt_engine.check_device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="needs a CUDA GPU"):
            load_engines("tensorrt", "unused", device="cuda")


def test_import_fastlic_and_cpu_backends_work_without_tensorrt(tiny_export):
    code = f"""
import sys
import fastlic, fastlic.engines, fastlic.engines.tensorrt.engine, fastlic.engines.tensorrt.plugin
assert "tensorrt" not in sys.modules and "tensorrt" in fastlic.engines.BACKENDS
sys.modules["tensorrt"] = None                      # as if it were not installed
import numpy as np, torch
torch.set_num_threads(1)
from fastlic.runtime.codec import Codec
image = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
for codec in (Codec.load({str(tiny_export / 'weights.safetensors')!r}),
              Codec.load(backend="onnxruntime", model_dir={str(tiny_export)!r}, threads=1)):
    data, recon = codec.compress(image, return_reconstruction=True)
    assert (codec.decompress(data) == recon).all()
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


# ---- CUDA only -----------------------------------------------------------------------
@needs_cuda
def test_plugin_compute_on_cuda_equals_cpu():
    gen = torch.Generator().manual_seed(1)
    args = [torch.rand(1, 4, 9, 11, generator=gen), torch.randn(3, 4, 3, 3, generator=gen),
            2 * torch.randn(1, 18, 9, 11, generator=gen), torch.randn(3, generator=gen),
            torch.rand(1, 9, 9, 11, generator=gen)]
    cpu = deform_conv(*args)
    cuda = deform_conv(*(a.cuda() for a in args)).cpu()
    np.testing.assert_allclose(cuda.numpy(), cpu.numpy(), rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.skipif(not has_tensorrt, reason="needs TensorRT")
@pytest.mark.parametrize("deform", ["plugin", "native"])
def test_real_tensorrt_engines_match_torch(tiny_export, shipped_tiny, deform, tmp_path):
    """Never run where this was written: the first check on a machine with TensorRT."""
    from fastlic.engines import load_engines as load
    from fastlic.export.check import reference_io
    from fastlic.modelfile import load_model
    trt = tensorrt_engine.import_tensorrt()
    if deform == "plugin" and tensorrt_build.version_tuple(trt.__version__) < (10, 6):
        pytest.skip("tensorrt.plugin needs TensorRT 10.6")
    engines = load("tensorrt", tiny_export, precision="fp32", deform=deform,
                   max_size=(256, 256), cache_dir=tmp_path)
    model = load_model(shipped_tiny)[0]
    image = np.random.default_rng(0).random((1, 3, 128, 192), dtype=np.float32)
    with torch.no_grad():
        reference = reference_io(model, image)
    for stage, (inputs, expected) in reference.items():
        for name, value in engines[stage].run(inputs).items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-3, atol=1e-3,
                                       err_msg=f"{stage}:{name}")


def test_pin_fp32_returns_the_names_it_found():
    from fastlic.engines.tensorrt.build import pin_fp32

    class Out:
        dtype = "float16"

    class Layer:
        type = "conv"
        num_outputs = 1

        def __init__(self, name):
            self.name, self.precision, self.types = name, None, {}

        def get_output(self, j):
            return Out()

        def set_output_type(self, j, t):
            self.types[j] = t

    layers = [Layer("a"), Layer("b")]
    network = types.SimpleNamespace(num_layers=2, get_layer=lambda i: layers[i])
    trt = types.SimpleNamespace(float32="float32", float16="float16",
                                LayerType=types.SimpleNamespace(CONSTANT="constant"))
    assert pin_fp32(trt, network, {"a", "renamed_by_the_parser"}) == {"a"}
    assert layers[0].precision == "float32" and layers[0].types == {0: "float32"}
    assert layers[1].precision is None
