"""One ONNX graph per codec stage, exported with ``torch.onnx.export(dynamo=True)``.

Each graph takes and returns the float32 NCHW tensors named in
:data:`fastlic.engines.STAGES`; batch, height and width are dynamic. The graph
inputs and outputs carry symbolic dims named after the image size::

    image, image_hat                              (batch, 3, H, W)
    y, y_hat, y_hat_anchor, hyper, scale, mean    (batch, C, H/16, W/16)
    z, z_hat                                      (batch, C, H/64, W/64)

g_a has two variants. ``deformconv`` (the default file ``g_a.onnx``) holds the
modulated deformable convolution as one ONNX ``DeformConv`` node (opset 19),
emitted with :func:`torch.onnx.ops.symbolic` while exporting; in eager mode the
layer still runs the plain-PyTorch ``grid_sample`` code, so numerics are unchanged.
``gridsample`` (``g_a_gridsample.onnx``) traces that plain code instead (nine
``GridSample`` reads), for runtimes without a ``DeformConv`` kernel
(onnxruntime before 1.25 on CPU).

The pixel shuffles of h_s and g_s (:mod:`fastlic.model.subpixel`) are grouped
one-hot ``ConvTranspose`` nodes, and those interleaving the checkerboard phases in
anchor and nonanchor (:mod:`fastlic.model.packed`) ``DepthToSpace``, in the default
files (TensorRT parses both); the ``col2im`` variant (``<stage>_col2im.onnx`` of
those four stages) writes them all as ``Col2Im``, which onnxruntime's CPU provider
runs fastest (``experiments/shuffle_ops.py``).
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..stages import EXACT_STAGES, SPATIAL_FACTOR, STAGES
from ..model.deform import ModulatedDeformConv
from ..model.packed import PackedFastLIC, to_packed
from ..model.subpixel import SubPixelConvTranspose, to_subpixel

MIN_OPSET = 19
STAGE_METHODS = {"g_a": "analysis", "h_a": "hyper_analysis", "h_s": "hyper_synthesis",
                 "anchor": "anchor_params", "nonanchor": "nonanchor_params", "g_s": "synthesis"}
VARIANTS = ("deformconv", "gridsample", "col2im")


class DeformConvOnnx(ModulatedDeformConv):
    """ModulatedDeformConv that exports as a single ONNX ``DeformConv`` node.

    ONNX inputs X, W, offset (B, 18, H, W: dy, dx per tap as in torchvision), B,
    mask (B, 9, H, W); 3x3 kernel, stride 1, pad 1, one group and offset group.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return super().forward(x)
        offset, mask = self.offsets_and_mask(x)
        b, _, h, w = x.shape
        attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1],
                     dilations=[1, 1], group=1, offset_group=1)
        return torch.onnx.ops.symbolic(
            "::DeformConv", (x, self.weight, offset, self.bias, mask), attrs,
            dtype=x.dtype, shape=(b, self.weight.shape[0], h, w), version=MIN_OPSET)


class _Stage(nn.Module):
    """Calls one stage method of the model; forward takes the stage's inputs in order."""

    def __init__(self, model: nn.Module, stage: str):
        super().__init__()
        self.model = model
        self.method = STAGE_METHODS[stage]

    def forward(self, *inputs):
        return getattr(self.model, self.method)(*inputs)


def _export_copy(model: nn.Module, variant: str, shuffle: str | None = None) -> nn.Module:
    """A float32 CPU eval copy in the torch engine's inference form: transposed
    convolutions as conv + pixel shuffle (:mod:`fastlic.model.subpixel`), checkerboard
    stages on the phase grids (:mod:`fastlic.model.packed`). ``gridsample`` keeps the
    plain-PyTorch deformable conv; the others swap in :class:`DeformConvOnnx` (same
    weights); ``col2im`` writes the pixel shuffles as ``Col2Im``. ``shuffle`` (a key of
    :data:`fastlic.model.subpixel.SHUFFLES`) overrides the variant's pixel-shuffle form."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown export variant {variant!r}; choose one of {VARIANTS}")
    clone = to_packed(to_subpixel(model), inplace=True).float().cpu().eval()
    shuffle = shuffle or ("col2im" if variant == "col2im" else None)   # None: class defaults
    for module in clone.modules():
        if type(module) is ModulatedDeformConv and variant != "gridsample":
            module.__class__ = DeformConvOnnx
        if shuffle and isinstance(module, (SubPixelConvTranspose, PackedFastLIC)):
            module.onnx_shuffle = shuffle
    return clone


def example_inputs(model: nn.Module, stage: str, batch: int = 2, h64: int = 2, w64: int = 3):
    """Random inputs of ``stage`` for an image of (64*h64, 64*w64); sizes avoid 0/1."""
    cfg = model.cfg
    m, nh = cfg.latent_channels, cfg.hyper_channels
    channels = {"image": 3, "y": m, "z_hat": nh, "hyper": 2 * m, "y_hat_anchor": m, "y_hat": m}
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.rand(batch, channels[n], 64 * h64 // SPATIAL_FACTOR[n],
                            64 * w64 // SPATIAL_FACTOR[n], generator=gen)
                 for n in STAGES[stage].inputs)


def _dynamic_shapes(stage: str) -> tuple:
    """Per input (in order): batch, and H, W tied to one image size (multiple of 64)."""
    batch = torch.export.Dim("batch", min=1)
    h64, w64 = torch.export.Dim("h64", min=1), torch.export.Dim("w64", min=1)
    shapes = []
    for name in STAGES[stage].inputs:
        f = 64 // SPATIAL_FACTOR[name]
        shapes.append({0: batch, 2: f * h64 if f > 1 else h64, 3: f * w64 if f > 1 else w64})
    return (tuple(shapes),)


def _name_dims(proto, stage: str) -> None:
    """Symbolic dims of graph inputs/outputs -> (batch, C, H/f, W/f); drop inner shape hints."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        f = SPATIAL_FACTOR[value.name]
        dims = value.type.tensor_type.shape.dim
        for i, sym in ((0, "batch"), (2, "H" if f == 1 else f"H/{f}"),
                       (3, "W" if f == 1 else f"W/{f}")):
            dims[i].Clear()
            dims[i].dim_param = sym
    del proto.graph.value_info[:]
    proto.doc_string = f"fastlic stage {stage}"


def export_stage(model: nn.Module, stage: str, path: str | Path, opset: int = MIN_OPSET,
                 variant: str = "deformconv", shuffle: str | None = None) -> Path:
    """Write the ONNX graph of ``stage`` to ``path`` (one file, weights inside);
    ``variant`` and ``shuffle``: see :func:`_export_copy`."""
    import onnx  # noqa: PLC0415 - export-only dependency

    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; DeformConv needs {MIN_OPSET} or newer")
    spec = STAGES[stage]
    if stage in EXACT_STAGES:   # the integer form: MatMul, Slice, Concat, float64 elementwise
        if model.exact is None:
            raise ValueError("the model has no exact entropy path; convert it first "
                             "(fastlic.model.quant.with_exact)")
        module = _Stage(copy.deepcopy(model.exact).cpu(), stage).eval()
    else:
        module = _Stage(_export_copy(model, variant, shuffle), stage).eval()
    quiet = logging.getLogger("torch.onnx")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        with warnings.catch_warnings():  # exporter chatter (axis renames, deprecations)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                module, example_inputs(model, stage), input_names=list(spec.inputs),
                output_names=list(spec.outputs), opset_version=opset, dynamo=True,
                dynamic_shapes=_dynamic_shapes(stage), verbose=False, external_data=False)
    finally:
        quiet.level = level
    proto = program.model_proto
    _name_dims(proto, stage)
    onnx.checker.check_model(proto)
    path = Path(path)
    onnx.save_model(proto, str(path))
    return path
