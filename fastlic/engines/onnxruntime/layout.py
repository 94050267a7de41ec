"""Keep onnxruntime's CPU convolutions in their blocked layout across (I)GDN and pixel shuffles.

onnxruntime's NCHWc transformer runs every ``Conv`` on channel-blocked tensors
(``NCHWc``: channels in blocks of 8 or 16 floats, the SIMD width) and reorders back to
NCHW for every operator it does not know. In ``g_s`` those are the IGDN's ``Abs`` and
``Mul`` and the pixel shuffles (``Col2Im``), so each of the four upsampling stages
pays a reorder out, the shuffle, and a reorder in, three times over the largest
tensors of the decoder; in ``g_a`` the GDN's ``Abs`` and ``Div``. This module
rewrites a stage graph so that they run on the blocked tensors too::

    plain graph ──prepare──▶ subpixel convs phase-major + DepthToSpace(DCR)  (ONNX, exact)
                ──onnxruntime ORT_ENABLE_ALL──▶ optimised graph with NCHWc nodes
                ──keep_blocked──▶ Abs, Mul, Div and the shuffles on the blocked tensors
                ──probe──▶ same bits as the plain session, else the plain session

``prepare`` permutes a shuffled convolution's output channels from torch's
``4 c + 2 r_y + r_x`` to ``(2 r_y + r_x) C + c`` and writes the shuffle as
``DepthToSpace`` in DCR mode, the same function. In the blocked layout each block of
a phase-major tensor then holds one phase of ``b`` consecutive channels, and the
shuffle is a transpose that moves whole blocks (``_blocked_depth_to_space``).
``Abs``, ``Mul`` and ``Div`` are elementwise, so they give the same values in any
layout (padding channels hold zeros, which Abs and Mul keep; Div moves only where no
channel pads). The optimised graph is specific to
this machine's SIMD width and onnxruntime version: the cache key holds both.

Every rewrite moves or permutes values and leaves all arithmetic as onnxruntime's
optimiser planned it, so the rewritten session must return the plain session's
outputs bit for bit; :mod:`.blocked` checks that on a random probe input every
time it loads one, caches the rewritten graph, and falls back to the plain session
otherwise. ``benchmarks/layout.py`` measures it.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper


NCHWC = "com.microsoft.nchwc"
# Elementwise ops moved onto the blocked tensors. Abs and Mul keep the zeros of the
# padding channels; Div would make them 0/0, so it moves only where no channel pads.
POINTWISE = ("Abs", "Mul", "Div")


# ---- step 1: phase-major subpixel convolutions ---------------------------------------
def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and _attr(node, "value") is not None:
            consts[node.output[0]] = numpy_helper.to_array(_attr(node, "value"))
    return consts


def _is_shuffle(node: onnx.NodeProto, consts) -> bool:
    """A ``Col2Im`` that is ``pixel_shuffle(x, 2)`` (2x2 blocks, stride 2, no padding)."""
    return (node.op_type == "Col2Im" and len(node.input) == 3
            and np.array_equal(consts.get(node.input[2], []), [2, 2])
            and list(_attr(node, "strides", [1, 1])) == [2, 2]
            and list(_attr(node, "dilations", [1, 1])) == [1, 1]
            and not any(_attr(node, "pads", [0, 0, 0, 0])))


def phase_major(channels: int) -> np.ndarray:
    """perm with ``new[j] = old[perm[j]]``: channel ``4 c + p`` moves to ``p C + c``."""
    j = np.arange(4 * channels)
    return 4 * (j % channels) + j // channels


def _shuffled_conv(node, producers, consumers, inits, block: int):
    """The ``Conv`` whose output the shuffle ``node`` reads through one ``Reshape``, if
    nothing else reads its values (``Shape`` may read its size), its weight and bias are
    initializers used nowhere else, and its channels are a multiple of 4 ``block``."""
    reshape = producers.get(node.input[0])
    if reshape is None or reshape.op_type != "Reshape" or len(consumers[reshape.output[0]]) != 1:
        return None
    conv = producers.get(reshape.input[0])
    if conv is None or conv.op_type != "Conv" or len(conv.input) != 3:
        return None
    if any(c is not reshape and c.op_type != "Shape" for c in consumers[conv.output[0]]):
        return None
    if any(name not in inits or len(consumers[name]) != 1 for name in conv.input[1:]):
        return None
    return conv if inits[conv.input[1]].dims[0] % (4 * block) == 0 else None


def prepare(model: onnx.ModelProto, block: int) -> int:
    """Rewrite, in place, every ``Conv -> Reshape -> Col2Im`` pixel shuffle whose
    channels are a multiple of ``block``, or whose output is a graph output, as a
    phase-major ``Conv -> DepthToSpace(DCR)``. Returns how many it rewrote."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    consts, consumers = _constants(graph), _consumers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    inits = {t.name: t for t in graph.initializer}
    done = 0
    for node in list(graph.node):
        conv = _shuffled_conv(node, producers, consumers, inits,
                              1 if node.output[0] in outputs else block) \
            if _is_shuffle(node, consts) else None
        if conv is None:
            continue
        perm = phase_major(inits[conv.input[1]].dims[0] // 4)
        for name in conv.input[1:]:
            inits[name].CopyFrom(numpy_helper.from_array(consts[name][perm], name))
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, helper.make_node(
            "DepthToSpace", [conv.output[0]], [node.output[0]], blocksize=2, mode="DCR",
            name=f"{node.name}_dcr"))
        done += 1
    _drop_dead(graph)
    return done


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Remove nodes whose outputs nothing reads (repeatedly), then unused initializers."""
    needed = {o.name for o in graph.output}
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
        else:
            graph.node.remove(node)
    for init in [t for t in graph.initializer if t.name not in needed]:
        graph.initializer.remove(init)
    del graph.value_info[:]   # shapes of removed or rewritten tensors would be stale


# ---- step 3: keep the blocked layout ------------------------------------------------
class _Blocked:
    """Graph builder for step 3: twin[t] names the blocked tensor holding NCHW tensor
    t's values, channels[t] its logical channel count."""

    def __init__(self, graph: onnx.GraphProto, block: int):
        self.graph, self.block = graph, block
        self.twin: dict[str, str] = {}
        self.channels: dict[str, int] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.rename: dict[str, str] = {}   # a dropped ReorderInput's output -> the twin
        self.outputs = {o.name for o in graph.output}
        self.nhwc: list[str] = []           # graph outputs now written channels-last
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_blk{self.count}"

    def const(self, values) -> str:
        name = self.name("shape")
        self.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def emit(self, op: str, inputs, outputs=None, **attrs) -> str:
        outputs = outputs or [self.name(op.lower())]
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs),
                                           name=self.name(op), **attrs))
        return outputs[0]


def _blocked_depth_to_space(b: _Blocked, source: str, channels: int) -> str:
    """DCR DepthToSpace(2) of a blocked (N, 4C, h, w) tensor: its blocks are phase-major,
    so (N, 2, 2, C/b, h, w, b) -> (N, C/b, h, 2, w, 2, b) is the blocked (N, C, 2h, 2w)."""
    blocks = channels // b.block
    batch = b.emit("Shape", [source], end=1)
    hw = b.emit("Shape", [source], start=2, end=4)
    split = b.emit("Concat", [batch, b.const([2, 2, blocks]), hw, b.const([b.block])], axis=0)
    moved = b.emit("Transpose", [b.emit("Reshape", [source, split])], perm=[0, 3, 4, 1, 5, 2, 6])
    out_hw = b.emit("Mul", [hw, b.const([2])])
    merged = b.emit("Concat", [batch, b.const([channels]), out_hw], axis=0)
    return b.emit("Reshape", [moved, merged])


def _nhwc_depth_to_space(b: _Blocked, source: str, channels: int, out: str) -> None:
    """DCR DepthToSpace(2) of a blocked (N, 4C, h, w) tensor into the NHWC (N, 2h, 2w, C)
    tensor ``out``: reorder to channels-last (N, h, w, 2, 2, C), then move whole
    (r_x, c) runs of 2C floats to (N, h, 2, w, 2, C)."""
    nhwc = b.emit("ReorderOutput", [source], domain=NCHWC, channels=4 * channels, channels_last=1)
    batch = b.emit("Shape", [source], end=1)
    hw = b.emit("Shape", [source], start=2, end=4)
    split = b.emit("Concat", [batch, hw, b.const([2, 2, channels])], axis=0)
    moved = b.emit("Transpose", [b.emit("Reshape", [nhwc, split])], perm=[0, 1, 3, 2, 4, 5])
    merged = b.emit("Concat", [batch, b.emit("Mul", [hw, b.const([2])]), b.const([channels])],
                    axis=0)
    b.emit("Reshape", [moved, merged], [out])
    b.nhwc.append(out)


def _move(b: _Blocked, node: onnx.NodeProto) -> bool:
    """Run ``node`` on the blocked twins of its inputs if it can; record its twin."""
    if not all(i in b.twin for i in node.input):
        return False
    src, out = b.twin[node.input[0]], node.output[0]
    c = b.channels[node.input[0]]
    if node.op_type == "DepthToSpace":
        if _attr(node, "mode", b"DCR") not in (b"DCR", "DCR") or _attr(node, "blocksize") != 2:
            return False
        if out in b.outputs:
            _nhwc_depth_to_space(b, src, c // 4, out)
            return True
        if c % (4 * b.block):
            return False
        b.twin[out], b.channels[out] = _blocked_depth_to_space(b, src, c // 4), c // 4
    elif node.op_type in POINTWISE:
        if node.op_type in ("Mul", "Div") and b.channels[node.input[1]] != c:
            return False
        if node.op_type == "Div" and c % b.block:
            return False
        b.twin[out] = b.emit(node.op_type, [b.twin[i] for i in node.input])
        b.channels[out] = c
    else:
        return False
    return True


def keep_blocked(model: onnx.ModelProto, block: int) -> tuple[int, tuple[str, ...]]:
    """Rewrite onnxruntime's optimised graph in place: DepthToSpace(DCR), Abs and Mul
    between a ReorderOutput and a ReorderInput run on the blocked tensors, and Shape
    reads their sizes there; reorders that become unneeded go. A DepthToSpace that
    writes a graph output writes it channels-last (N, H, W, C) instead. Returns how
    many operators moved and the names of the outputs now channels-last."""
    graph = model.graph
    b = _Blocked(graph, block)
    moved, kept = 0, []
    for node in graph.node:
        if node.domain == NCHWC and node.op_type == "ReorderOutput" \
                and not _attr(node, "channels_last", 0):
            b.twin[node.output[0]] = node.input[0]
            b.channels[node.output[0]] = _attr(node, "channels")
        if node.domain == NCHWC and node.op_type == "ReorderInput" \
                and node.input[0] in b.twin and not _attr(node, "channels_last", 0):
            b.rename[node.output[0]] = b.twin[node.input[0]]
            continue
        if node.op_type == "Shape" and node.input[0] in b.twin and _attr(node, "start", 0) >= 2:
            node.input[0] = b.twin[node.input[0]]   # height and width: the twin's are the same
        if _move(b, node):
            moved += 1
            kept.append(node)    # the NCHW original, in case something still reads it
            continue
        b.nodes.append(node)
    for node in b.nodes:
        node.input[:] = [b.rename.get(i, i) for i in node.input]
    _materialise(b, kept)
    del graph.node[:]
    graph.node.extend(b.nodes)
    for out in graph.output:
        if out.name in b.nhwc:
            shape = out.type.tensor_type.shape
            dims = [onnx.TensorShapeProto.Dimension() for _ in shape.dim]
            for d, k in zip(dims, (0, 2, 3, 1)):   # (N, C, H, W) -> (N, H, W, C)
                d.CopyFrom(shape.dim[k])
            del shape.dim[:]
            shape.dim.extend(dims)
    _drop_dead(graph)
    return moved, tuple(b.nhwc)


def _materialise(b: _Blocked, moved: list[onnx.NodeProto]) -> None:
    """An NCHW output of a moved node that something still reads (an operator that
    stayed NCHW, or a graph output) is reordered from its twin where it is needed."""
    readers = {i for n in b.nodes for i in n.input} | {o.name for o in b.graph.output}
    for node in moved:
        out = node.output[0]
        if out in readers and out not in b.nhwc:
            b.nodes.insert(_first_reader(b.nodes, out), helper.make_node(
                "ReorderOutput", [b.twin[out]], [out], domain=NCHWC, name=b.name("ReorderOutput"),
                channels=b.channels[out], channels_last=0))


def _first_reader(nodes: list[onnx.NodeProto], name: str) -> int:
    return next((k for k, n in enumerate(nodes) if name in n.input), len(nodes))


# ---- the whole rewrite --------------------------------------------------------------
def rewrite(graph: bytes, block: int, make, keys: tuple[str, str]) -> bytes | None:
    """The blocked graph of the stage graph ``graph`` (serialised ONNX), optimised by
    onnxruntime for this machine, or None if nothing moved. make(model_bytes,
    **session_settings) builds a session with the engine's options. The result's
    metadata holds, under ``keys`` (its reader's: :data:`.blocked.NHWC_KEY`,
    ``NOTE_KEY``), its channels-last outputs (comma-separated) and a one-line note;
    load it with optimisations off."""
    model = onnx.ModelProto.FromString(graph)
    shuffles = prepare(model, block)
    with tempfile.TemporaryDirectory(prefix="fastlic-ort-") as tmp:
        path = os.path.join(tmp, "optimised.onnx")
        make(model.SerializeToString(), optimized_model_filepath=path,
             log_severity_level=3)   # onnxruntime warns that the file is machine-specific
        optimised = onnx.load(path)
    moved, nhwc = keep_blocked(optimised, block)
    if not moved:
        return None
    note = (f"{moved} operators moved, {shuffles} shuffles phase-major"
            + (f", {', '.join(nhwc)} channels-last" if nhwc else ""))
    nhwc_key, note_key = keys
    helper.set_model_props(optimised, {nhwc_key: ",".join(nhwc), note_key: note})
    return optimised.SerializeToString()
