"""FP16 variants of the stage graphs (for GPU engines): FP16 weights and compute,
FP32 where measured ranges or the op's arithmetic need it. g_a, h_a and g_s only: the
exact stages (h_s, anchor, nonanchor) are integer arithmetic and get no FP16 twin.

The runtime API stays FP32: graph inputs and outputs keep their names and stay
float32, with ``Cast`` nodes at the boundary, so an engine feeds and reads an FP16
graph exactly like the FP32 one::

    image (f32) ─Cast─▶ [FP16 nodes] ─Cast─▶ [FP32 nodes] ─Cast─▶ [FP16 nodes] ─Cast─▶ y (f32)

A node stays FP32 (:func:`plan_fp16`; the reason is recorded per node) when

- ``range``: a float tensor it reads or writes reached ``max|x| > 65504 / margin`` on
  the measured images (:mod:`fastlic.export.ranges`); such a tensor is never stored
  in FP16;
- ``sampling``: it is a ``DeformConv``, a ``GridSample``, or computes a ``GridSample``
  grid from the offsets (back to the offset convolution, which stays FP16). Sampling
  positions are pixel coordinates: FP16 steps by 0.25 between 256 and 512, so at
  the deformable layer (1/4 of the image) of a 2048-pixel-wide image a position is
  off by up to an eighth of a pixel (a quarter in GridSample's normalised grid), and
  by whole pixels beyond 8192 pixels. Measured on Kodak (``benchmarks/results/fp16.txt``):
  FP16 positions make g_a's max |y| error 25x larger (0.15 vs 0.006), 50x at 4x size;
- ``forced``: the caller named it, or it makes a constant (``Constant``,
  ``ConstantOfShape``: typed by an attribute).

The GDN divisions ``x / (beta + gamma * |x|)`` stay FP16: the denominator is at
least ``beta + 1e-3`` (a normal FP16 number; measured on Kodak: >= 0.75) and the
quotients are small (max 9.6); the range rule keeps one FP32 if that changes.

Initializers read only by FP16 nodes are stored as FP16 under their own names; one
read by both kinds is kept and an FP16 copy ``<name>_fp16`` added.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..stages import STAGES
from .ranges import GraphRanges, float_tensors

FP16_MAX = 65504.0
MARGIN = 4.0
SAMPLING_OPS = ("DeformConv", "GridSample")
CONV_OPS = ("Conv", "ConvTranspose")
CONSTANT_OPS = ("Constant", "ConstantOfShape")
SHAPE_OPS = ("Shape", "Size")          # read only the shape: fed whatever type is at hand


def plan_fp16(proto, ranges: GraphRanges | None, margin: float = MARGIN,
              keep: tuple[str, ...] = ()) -> dict[str, str]:
    """Node name -> reason, for every node of ``proto`` (an FP32 stage graph) that stays
    FP32. ``ranges``: measured on this graph (None: no range rule); ``keep``: node names."""
    nodes = {n.name: n for n in proto.graph.node}
    if len(nodes) != len(proto.graph.node) or "" in nodes:
        raise ExportError("the graph's nodes need unique, non-empty names to be planned")
    unknown = [k for k in keep if k not in nodes]
    if unknown:
        raise ValueError(f"no nodes {unknown} in the graph; choose from {sorted(nodes)}")
    plan = {n.name: "forced: constant" for n in proto.graph.node if n.op_type in CONSTANT_OPS}
    plan.update({k: "forced" for k in keep})
    plan.update(_sampling_nodes(proto))
    if ranges is not None:
        plan.update(_range_nodes(proto, ranges, FP16_MAX / margin))
    return plan


def _producers(proto) -> dict:
    return {t: n for n in proto.graph.node for t in n.output}


def _upstream(proto, tensors, stop_ops, include_stop: bool) -> list:
    """Nodes that compute ``tensors``, walking back until (and, with ``include_stop``,
    including) a node whose op is in ``stop_ops``; shape reads are not followed."""
    producers, seen, todo, found = _producers(proto), set(), list(tensors), []
    while todo:
        node = producers.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in stop_ops and not include_stop:
            continue
        found.append(node)
        if node.op_type not in stop_ops and node.op_type not in SHAPE_OPS:
            todo.extend(node.input)
    return found


def _sampling_nodes(proto) -> dict[str, str]:
    plan = {}
    for node in proto.graph.node:
        if node.op_type in SAMPLING_OPS:
            plan[node.name] = f"sampling: {node.op_type} (pixel coordinates)"
        if node.op_type == "GridSample":
            for up in _upstream(proto, node.input[1:2], CONV_OPS, include_stop=False):
                plan.setdefault(up.name, f"sampling: grid of {node.name}")
    return plan


def _range_nodes(proto, ranges: GraphRanges, limit: float) -> dict[str, str]:
    tensors = float_tensors(proto)
    missing = sorted(set(tensors) - set(ranges.tensors))
    if missing:
        raise ExportError(f"the activation ranges lack {len(missing)} tensor(s) of this graph "
                          f"({', '.join(missing[:4])}…): they were measured on another export; "
                          "measure them again for this model and torch version")
    big = {t: ranges.tensors[t].max_abs for t in tensors if ranges.tensors[t].max_abs > limit}
    plan = {}
    for node in proto.graph.node:
        hits = [t for t in list(node.input) + list(node.output) if t in big]
        if hits:
            t = max(hits, key=big.get)
            plan[node.name] = f"range: max|{t}| = {big[t]:.4g} > {limit:g}"
    return plan


def convert_fp16(proto, fp32_nodes) -> "onnx.ModelProto":  # noqa: F821
    """A copy of ``proto`` computing in FP16 except ``fp32_nodes`` (names), with float32
    graph inputs and outputs of the same names. Raises ExportError if a weight
    overflows FP16 or the result fails ``onnx.checker`` (full check)."""
    import onnx  # noqa: PLC0415 - export-only dependency

    model = copy.deepcopy(proto)
    graph = model.graph
    floats = set(float_tensors(proto)) | {i.name for i in graph.initializer
                                          if i.data_type == onnx.TensorProto.FLOAT}
    half = {n.name for n in graph.node if n.name not in fp32_nodes}
    out_names = _rename_half_outputs(graph, half, floats)
    floats |= set(out_names)
    cast = _Casts(graph, floats)
    nodes = []
    for node in graph.node:
        dtype = onnx.TensorProto.FLOAT16 if node.name in half else onnx.TensorProto.FLOAT
        if node.op_type not in SHAPE_OPS:
            for i, name in enumerate(node.input):
                if name in floats:
                    node.input[i] = cast.want(name, dtype, nodes)
        if node.op_type == "Cast" and node.name in half:
            _retarget_cast(node)
        cast.produced(node, dtype)
        nodes.append(node)
    for inner, name in out_names.items():
        nodes.append(onnx.helper.make_node("Cast", [inner], [name], name=f"{name}_to_fp32",
                                           to=onnx.TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    cast.finish()
    model.doc_string = (proto.doc_string + "; FP16 with FP32 inputs/outputs, "
                        f"{len(fp32_nodes)} node(s) FP32").lstrip("; ")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError / InferenceError
        raise ExportError(f"the FP16 graph fails the ONNX checker: {str(exc)[:300]}") from exc
    return model


def _rename_half_outputs(graph, half: set, floats: set) -> dict[str, str]:
    """Graph outputs made by FP16 nodes: rename them ``<name>_fp16`` inside the graph;
    returns inner name -> output name (a Cast to float32 is appended for each)."""
    outputs = {o.name for o in graph.output}
    renamed = {n for node in graph.node if node.name in half
               for n in node.output if n in outputs and n in floats}
    for node in graph.node:
        for seq in (node.input, node.output):
            for i, name in enumerate(seq):
                if name in renamed:
                    seq[i] = f"{name}_fp16"
    return {f"{n}_fp16": n for n in renamed}


def _retarget_cast(node) -> None:
    import onnx  # noqa: PLC0415

    for attr in node.attribute:
        if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
            attr.i = onnx.TensorProto.FLOAT16


class _Casts:
    """Gives every float tensor in the type a consumer wants: the tensor itself, a Cast
    node (made once per tensor and type), or a converted initializer."""

    def __init__(self, graph, floats: set):
        import onnx  # noqa: PLC0415

        self.onnx = onnx
        self.graph = graph
        self.floats = floats
        self.inits = {i.name: i for i in graph.initializer if i.name in floats}
        self.dtype = {i.name: onnx.TensorProto.FLOAT for i in graph.input}
        self.dtype.update({name: onnx.TensorProto.FLOAT for name in self.inits})
        self.made: dict[tuple[str, int], str] = {}
        self.wanted: dict[str, set] = {}

    def want(self, name: str, dtype: int, nodes: list) -> str:
        if name in self.inits:
            self.wanted.setdefault(name, set()).add(dtype)
            return name if dtype == self.onnx.TensorProto.FLOAT else f"{name}__as_fp16"
        if self.dtype.get(name, dtype) == dtype:
            return name
        key = (name, dtype)
        if key not in self.made:
            suffix = "fp16" if dtype == self.onnx.TensorProto.FLOAT16 else "fp32"
            out = f"{name}_to_{suffix}"
            nodes.append(self.onnx.helper.make_node("Cast", [name], [out], name=out, to=dtype))
            self.made[key] = out
        return self.made[key]

    def produced(self, node, dtype: int) -> None:
        for name in node.output:
            if name in self.floats:
                self.dtype[name] = dtype

    def finish(self) -> None:
        """Store initializers read in FP16: in place when nothing reads them in FP32,
        else as an added ``<name>_fp16``; rename the placeholders accordingly."""
        renames = {}
        for name, dtypes in self.wanted.items():
            if self.onnx.TensorProto.FLOAT16 not in dtypes:
                continue
            init = self.inits[name]
            both = self.onnx.TensorProto.FLOAT in dtypes
            half = _to_fp16(init, f"{name}_fp16" if both else name)
            if both:
                self.graph.initializer.append(half)
            else:
                init.CopyFrom(half)
            renames[f"{name}__as_fp16"] = half.name
        for node in self.graph.node:
            for i, name in enumerate(node.input):
                node.input[i] = renames.get(name, name)


def _to_fp16(init, name: str):
    from onnx import numpy_helper  # noqa: PLC0415

    values = numpy_helper.to_array(init)
    if np.abs(values).max(initial=0.0) > FP16_MAX:
        raise ExportError(f"weight {init.name} has |w| up to {np.abs(values).max():.4g}, "
                          f"beyond FP16 ({FP16_MAX:g}); keep its node FP32 (keep=...)")
    return numpy_helper.from_array(values.astype(np.float16), name)


def write_fp16(src: str | Path, dst: str | Path, ranges: GraphRanges | None,
               margin: float = MARGIN, keep: tuple[str, ...] = ()) -> dict[str, str]:
    """Convert the FP32 graph ``src`` into ``dst``; returns the FP32 node plan."""
    import onnx  # noqa: PLC0415

    proto = onnx.load(str(src))
    plan = plan_fp16(proto, ranges, margin, keep)
    onnx.save_model(convert_fp16(proto, plan), str(dst))
    return plan


def fp16_file(file: str) -> str:
    """``g_a.onnx`` -> ``g_a_fp16.onnx``."""
    return f"{Path(file).stem}_fp16.onnx"


# ---- export: ranges, conversion and check of every graph of a model directory --------
def check_fp16(path: Path, stage: str, refs: list[dict], threads: int = 0):
    """Run an FP16 graph in onnxruntime (CPU) on each reference; returns (errors per
    output against the FP32 PyTorch outputs, runtime, problems: outputs not finite)."""
    import onnxruntime as ort  # noqa: PLC0415

    from ..engines.onnxruntime.engine import make_session  # noqa: PLC0415
    from .check import ATOL, RTOL, _compare, _max  # noqa: PLC0415

    # log_severity_level 3: not the "cannot constant-fold FP16 Mul" warnings
    session = make_session(path, ["CPUExecutionProvider"], threads, log_severity_level=3)
    outputs = STAGES[stage].outputs
    worst, problems = {}, []
    for ref in refs:
        inputs, expected = ref[stage]
        for name, value in zip(outputs, session.run(list(outputs), inputs)):
            worst[name] = _max(worst.get(name), _compare(value, expected[name], RTOL, ATOL)[0])
            if not np.isfinite(value).all():
                problems.append(f"{path.name}:{name} is not finite (FP16 overflow)")
    where = (f"onnxruntime {ort.__version__} CPUExecutionProvider (FP16 nodes run in FP32: "
             "no FP16 CPU kernels)")
    return worst, where, sorted(set(problems))


def export_fp16(out: Path, plan, ranges, margin: float = MARGIN, refs=(), threads: int = 0,
                log=None) -> tuple:
    """Write ``<stem>_fp16.onnx`` next to each FP32 graph of ``plan`` ((stage, file,
    variant)) in ``out``; returns their GraphInfo. ``refs`` (reference_io results): run
    each in onnxruntime; ExportMismatchError if an output is not finite."""
    from ..errors import ExportMismatchError  # noqa: PLC0415
    from ..manifest import GraphInfo, read_signature, sha256_file  # noqa: PLC0415

    infos, problems = [], []
    for stage, file, variant in plan:
        if file not in ranges.graphs:
            raise ExportError(f"the activation ranges lack {file}; measure them again")
        dst = fp16_file(file)
        kept = write_fp16(out / file, out / dst, ranges.graphs[file], margin)
        errors, where, bad = check_fp16(out / dst, stage, refs, threads) if refs else ({}, "", [])
        problems += bad
        if log:
            log(f"converted {file:<22} -> {dst:<27} {len(kept)} node(s) FP32")
        infos.append(GraphInfo(
            stage, dst, variant, sha256_file(out / dst), *read_signature(out / dst), errors,
            where, "" if refs else "not checked (--no-check)", precision="fp16",
            source=file, fp32_nodes=kept))
    if problems:
        raise ExportMismatchError("FP16 graph outputs overflow: " + "; ".join(problems)
                                  + "; measure ranges on more images or raise the margin")
    return tuple(infos)
