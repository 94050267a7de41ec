"""Activation ranges of exported FP32 graphs: max |value| of every float tensor.

Each graph runs in onnxruntime (CPU, graph optimisations off) with every float
tensor it computes added as a graph output, on the inputs PyTorch itself sees
when coding each image (:func:`~fastlic.export.check.reference_io`: the same
rounding of ẑ and ŷ as the codec), so the ranges are those of real coding::

    image (1, 3, H, W) ─reference_io─▶ stage inputs ─ORT, all tensors out─▶ max |x|

The JSON file (:meth:`Ranges.save`), keyed by graph file because the two g_a
variants hold different tensors::

    {"format_version": 1, "weights_sha256": "<hex>",
     "images": ["kodim01.png 512x768 (padded 512x768)", ...],
     "graphs": {"g_a.onnx": {"stage": "g_a",
                             "tensors": {"conv2d": {"op": "Conv", "max_abs": 3.1,
                                                    "min_abs": 0.0}, ...}}, ...}}

``op`` is the producing node's op type, or "input" for a graph input. Tensor names
are those of ``torch.onnx.export`` for this model and torch version; a file measured
on another export does not match and :func:`fastlic.export.fp16.plan_fp16` says so.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..errors import ExportError

FORMAT_VERSION = 1
RANGES_NAME = "fp16_ranges.json"


@dataclasses.dataclass(frozen=True)
class TensorRange:
    """Over every measured image: max and min of |x| (min is 0 once any element is)."""

    op: str
    max_abs: float
    min_abs: float


@dataclasses.dataclass(frozen=True)
class GraphRanges:
    stage: str
    tensors: dict[str, TensorRange]


@dataclasses.dataclass(frozen=True)
class Ranges:
    weights_sha256: str
    images: tuple[str, ...]
    graphs: dict[str, GraphRanges]     # graph file -> ranges
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Ranges":
        try:
            data = json.loads(Path(path).read_text())
            if data["format_version"] != FORMAT_VERSION:
                raise ValueError(f"format_version {data['format_version']}, "
                                 f"this build reads {FORMAT_VERSION}")
            graphs = {f: GraphRanges(g["stage"], {t: TensorRange(**r)
                                                  for t, r in g["tensors"].items()})
                      for f, g in data["graphs"].items()}
            return cls(data["weights_sha256"], tuple(data["images"]), graphs)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"cannot read activation ranges {path}: {exc}; measure them "
                              "again (fastlic export --fp16 or benchmarks/fp16.py)") from exc


def float_tensors(proto) -> dict[str, str]:
    """Every float32 tensor a graph computes or takes as input -> producing op type
    ("input" for graph inputs); initializers are not included."""
    import onnx  # noqa: PLC0415 - export-only dependency

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    out = {i.name: "input" for i in proto.graph.input
           if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    for node in proto.graph.node:
        out.update({t: node.op_type for t in node.output
                    if t and types.get(t) == onnx.TensorProto.FLOAT})
    return out


class _Probe:
    """One graph run with every float tensor as an output; keeps running max/min |x|."""

    def __init__(self, path: Path, threads: int):
        import onnx  # noqa: PLC0415
        import onnxruntime as ort  # noqa: PLC0415 - lazy backend

        from ..engines.onnxruntime.engine import make_session  # noqa: PLC0415

        proto = onnx.load(str(path))
        self.ops = float_tensors(proto)
        outputs = {o.name for o in proto.graph.output}
        for name in self.ops:
            if name not in outputs and self.ops[name] != "input":
                proto.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        self.session = make_session(
            proto.SerializeToString(), ["CPUExecutionProvider"], threads,
            graph_optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        self.names = [o.name for o in self.session.get_outputs()]
        self.max = dict.fromkeys(self.ops, 0.0)
        self.min = dict.fromkeys(self.ops, float("inf"))

    def update(self, inputs: dict[str, np.ndarray]) -> None:
        values = dict(zip(self.names, self.session.run(self.names, inputs)))
        values.update({k: v for k, v in inputs.items() if k in self.ops})
        for name, v in values.items():
            a = np.abs(v)
            self.max[name] = max(self.max[name], float(a.max()))
            self.min[name] = min(self.min[name], float(a.min()))

    def result(self, stage: str) -> GraphRanges:
        return GraphRanges(stage, {n: TensorRange(self.ops[n], self.max[n], self.min[n])
                                   for n in self.ops})


def measure_ranges(model, directory: str | Path, files: dict[str, str], images,
                   weights_sha256: str, threads: int = 0, log=None) -> Ranges:
    """Ranges of ``files`` (graph file -> stage, in ``directory``) over ``images``.

    model: the FP32 FastLIC the graphs were exported from (gives each stage's inputs).
    images: iterable of (label, float32 array (1 or B, 3, H, W) in [0, 1], H and W
        multiples of 64), e.g. :func:`png_images` (Kodak) or the export check photos.
    """
    from .check import reference_io  # noqa: PLC0415 - imports torch

    probes = {f: _Probe(Path(directory) / f, threads) for f in files}
    labels = []
    for label, image in images:
        refs = reference_io(model, image)
        for file, probe in probes.items():
            probe.update(refs[files[file]][0])
        labels.append(label)
        if log:
            log(f"ranges: {label}")
    if not labels:
        raise ExportError("no images to measure activation ranges on")
    return Ranges(weights_sha256, tuple(labels),
                  {f: p.result(files[f]) for f, p in probes.items()})


def png_images(folder: str | Path, limit: int | None = None):
    """(label, (1, 3, H', W') float32) for each PNG in ``folder``, sorted, edge-padded to
    multiples of 64 as the codec pads."""
    from PIL import Image  # noqa: PLC0415

    from ..runtime.image import model_input  # noqa: PLC0415

    files = sorted(Path(folder).glob("*.png"))[:limit]
    if not files:
        raise ExportError(f"no PNG images in {folder}")
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        x = model_input(rgb)
        yield (f"{path.name} {rgb.shape[0]}x{rgb.shape[1]} "
               f"(padded {x.shape[2]}x{x.shape[3]})", x)


def resolve_ranges(model, out: Path, files: dict[str, str], ranges, images, weights_sha256: str,
                   threads: int = 0, log=None) -> Ranges:
    """The Ranges to convert with, saved to ``out/fp16_ranges.json``.

    ranges: a Ranges or a JSON path (its weights_sha256 must be ``weights_sha256``);
    None: measure on ``images`` ((label, array) pairs; None: the export check photos).
    """
    if ranges is not None:
        ranges = ranges if isinstance(ranges, Ranges) else Ranges.load(ranges)
        if ranges.weights_sha256 != weights_sha256:
            raise ExportError(f"the activation ranges were measured on weights "
                              f"{ranges.weights_sha256[:16]}…, not these "
                              f"({weights_sha256[:16]}…); measure them for this model")
    else:
        if images is None:
            from .check import photo_batches  # noqa: PLC0415

            images = [(b.label, b.image) for b in photo_batches()]
        ranges = measure_ranges(model, out, files, images, weights_sha256, threads, log)
    ranges.save(out / RANGES_NAME)
    return ranges
