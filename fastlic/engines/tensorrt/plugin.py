"""g_a's deformable convolution on TensorRT 10: the parser's own DeformConv, or fastlic's plugin.

What TensorRT 10 does with the ONNX ``DeformConv`` node (opset 19) of ``g_a.onnx``
(read in the TensorRT and onnx-tensorrt sources and release notes; never run here):

- TensorRT 10.0: not supported; the parser has no DeformConv importer, so the node
  fails as an unknown op (no plugin of that name).
- TensorRT 10.1 and newer: supported natively. The 10.1 release notes list "Added
  support for DeformConv operation" under parser changes (NVIDIA/TensorRT release
  v10.1.0; onnx/onnx-tensorrt PR #975). The importer adds no core layer: it inserts
  TensorRT's standard plugin ``ModulatedDeformConv2d`` version 2 from
  libnvinfer_plugin (onnx-tensorrt ``modulatedDeformableConvPluginHelper``), inputs
  reordered to (X, offset, mask, W, B), so the standard plugins must be
  registered first (``trt.init_libnvinfer_plugins``); FP32 or FP16, 1-D or 2-D,
  equal begin and end pads.

How the parser maps a node to a plugin (onnx-tensorrt ``ModelImporter.cpp``,
``parseNode``, and ``onnxOpImporters.cpp``, ``FallbackPluginImporter``): it picks the
importer by ``op_type`` alone, so a built-in op name (``DeformConv`` from 10.1) goes
to the built-in importer whatever the node's domain. Any other op_type goes to the
plugin fallback, which asks the plugin registry for name = op_type, version = the
string attribute ``plugin_version`` (default "1"), namespace = the string attribute
``plugin_namespace`` (default ""; recent releases then try the node's domain).
TensorRT's Python-plugin sample (``samples/python/quickly_deployable_plugins``) states
the same rule.

fastlic's plugin, ``fastlic::DeformConvTorch`` (``tensorrt.plugin``, the decorator
Python plugins of TensorRT 10.6 and newer): the shape function returns
(B, O, H, W); the implementation runs :func:`fastlic.model.deform.deform_conv2d`, the
PyTorch model's own math, with torch on TensorRT's CUDA stream; all five inputs and
the output are FP32 (sampling positions stay FP32, see :mod:`fastlic.export.fp16`).
Since ``DeformConv`` is a built-in name, :func:`plugin_graph` renames the node::

    DeformConv(X, W, offset, B, mask)            domain ""        kernel 3x3, pads 1 ...
      -> DeformConvTorch(X, W, offset, B, mask)   domain "fastlic"  plugin_namespace "fastlic"

(no ``plugin_version`` attribute: the parser's default "1" is the version Python
plugins register with, as in TensorRT's sample, which sets only the namespace).

A JIT Python plugin is not stored in the engine: the process that deserializes an
engine built with it must call :func:`register_plugin` first.

No ``from __future__ import annotations`` here: ``tensorrt.plugin.register`` reads the
type hints of the shape function, which must be classes, not strings.
"""
import threading

import torch

from ...errors import EngineError
from ...model.deform import deform_conv2d

PLUGIN_NAMESPACE = "fastlic"
PLUGIN_NAME = "DeformConvTorch"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
PLUGIN_REVISION = 1    # part of the engine cache key: bump when shape or types change
ONNX_OP = "DeformConv"
# The only DeformConv fastlic exports, and the only one deform_conv2d computes.
SUPPORTED_ATTRS = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1],
                   "dilations": [1, 1], "group": 1, "offset_group": 1}
# ONNX's defaults for absent attributes (kernel_shape: taken from W, 3x3 in fastlic).
ONNX_DEFAULTS = {"kernel_shape": [3, 3], "pads": [0, 0, 0, 0], "strides": [1, 1],
                 "dilations": [1, 1], "group": 1, "offset_group": 1}

_lock = threading.Lock()
_registered = False


def deform_conv(x: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor,
                bias: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The plugin's computation, in ONNX DeformConv input order (X, W, offset, B, mask).

    x (B, C, H, W), weight (O, C, 3, 3), offset (B, 18, H, W), bias (O,),
    mask (B, 9, H, W) -> (B, O, H, W); any device, the dtype of x.
    """
    return deform_conv2d(x, offset, mask, weight, bias)


def register_plugin() -> None:
    """Register ``fastlic::DeformConvTorch`` with TensorRT (once per process).

    Needs ``tensorrt.plugin`` (TensorRT >= 10.6); EngineError otherwise.
    """
    global _registered
    with _lock:
        if _registered:
            return
        try:
            import tensorrt.plugin as trtp  # noqa: PLC0415 - optional backend
        except ImportError as exc:
            raise EngineError(f"the fastlic DeformConv plugin needs tensorrt.plugin (TensorRT "
                              f"10.6 or newer): {exc}; upgrade with pip install -U tensorrt "
                              "or pass deform='native'") from None
        _define(trtp)
        _registered = True


def _define(trtp) -> None:
    """The shape, type and implementation functions of the plugin, registered with ``trtp``."""

    @trtp.register(PLUGIN_ID)
    def shape(x: trtp.TensorDesc, weight: trtp.TensorDesc, offset: trtp.TensorDesc,
              bias: trtp.TensorDesc, mask: trtp.TensorDesc) -> trtp.TensorDesc:
        s = x.shape_expr
        return trtp.from_shape_expr((s[0], weight.shape_expr[0], s[2], s[3]), dtype=x.dtype)

    @trtp.autotune(PLUGIN_ID)
    def formats(x, weight, offset, bias, mask, outputs):   # hints optional, checked if given
        return [trtp.AutoTuneCombination("FP32, FP32, FP32, FP32, FP32, FP32", "LINEAR")]

    @trtp.impl(PLUGIN_ID)
    def run(x, weight, offset, bias, mask, outputs, stream) -> None:
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            args = [torch.as_tensor(t, device="cuda") for t in (x, weight, offset, bias, mask)]
            torch.as_tensor(outputs[0], device="cuda").copy_(deform_conv(*args))


def plugin_graph(proto):
    """A copy of the ONNX model ``proto`` whose DeformConv nodes are fastlic plugin nodes.

    Inputs, outputs and node names stay; the node's attributes must be those fastlic
    exports (:data:`SUPPORTED_ATTRS`), else EngineError. A graph without DeformConv
    comes back unchanged. Needs the ``onnx`` package.
    """
    import onnx  # noqa: PLC0415 - only when building an engine

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    nodes = [n for n in model.graph.node if n.op_type == ONNX_OP and n.domain in ("", "ai.onnx")]
    for node in nodes:
        _check_attrs(node, onnx)
        del node.attribute[:]
        node.op_type, node.domain = PLUGIN_NAME, PLUGIN_NAMESPACE
        node.attribute.append(onnx.helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE))
    if nodes and all(o.domain != PLUGIN_NAMESPACE for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(PLUGIN_NAMESPACE, 1))
    return model


def _check_attrs(node, onnx) -> None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    attrs = {**ONNX_DEFAULTS, **{k: list(v) if isinstance(v, (list, tuple)) else v
                                 for k, v in attrs.items()}}
    wrong = {k: v for k, v in attrs.items() if v != SUPPORTED_ATTRS.get(k)}
    if wrong or len(node.input) != 5:
        raise EngineError(f"DeformConv node {node.name!r} ({len(node.input)} inputs, attributes "
                          f"{wrong or 'ok'}) is not the 3x3, stride 1, pad 1, one-group, masked "
                          "form the fastlic plugin computes; pass deform='native'")
