"""FP16 graphs (fastlic.export.fp16) and activation ranges (fastlic.export.ranges), on
the tiny model: one module-scoped ``export --fp16`` (both g_a variants, checked) feeds
every test."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fastlic.stages import EXACT_STAGES

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastlic.errors import ExportError  # noqa: E402
from fastlic.export import export_model, load_manifest, main  # noqa: E402
from fastlic.export.fp16 import (FP16_MAX, MARGIN, convert_fp16, fp16_file,  # noqa: E402
                                 plan_fp16)
from fastlic.export.ranges import (RANGES_NAME, GraphRanges, Ranges,  # noqa: E402
                                   TensorRange, float_tensors, resolve_ranges)
from fastlic.modelfile import file_hash, load_model  # noqa: E402

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


@pytest.fixture(scope="module")
def exported(shipped_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16")
    model = load_model(shipped_tiny)[0]
    manifest = export_model(model, out, weights_file=shipped_tiny, threads=1, fp16=True)
    return out, manifest, model


def fp16_graphs(manifest):
    return [g for g in manifest.graphs if g.precision == "fp16"]


def elem_types(proto) -> dict[str, int]:
    """Tensor name -> element type, from ONNX shape inference (initializers included)."""
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def test_every_gpu_graph_has_an_fp16_twin_with_the_same_float32_signature(exported):
    out, manifest, _ = exported   # the Col2Im graphs are onnxruntime CPU's: no twin
    sources = {g.file: g for g in manifest.graphs   # the exact stages get no twin either
               if g.precision == "fp32" and g.variant != "col2im" and g.stage not in EXACT_STAGES}
    twins = fp16_graphs(manifest)
    assert {g.source for g in twins} == set(sources)
    for g in twins:
        src = sources[g.source]
        assert g.file == fp16_file(src.file) and (g.stage, g.variant) == (src.stage, src.variant)
        assert (g.inputs, g.outputs) == (src.inputs, src.outputs)      # names, float32, dims
        assert all(t.dtype == "float32" for t in g.inputs + g.outputs)
        onnx.checker.check_model(onnx.load(str(out / g.file)), full_check=True)


def test_fp16_nodes_compute_in_fp16_and_kept_nodes_in_fp32(exported):
    out, manifest, _ = exported
    for g in fp16_graphs(manifest):
        proto = onnx.load(str(out / g.file))
        types = elem_types(proto)
        names = {n.name for n in proto.graph.node}
        assert set(g.fp32_nodes) <= names
        for node in proto.graph.node:
            if node.op_type == "Cast" or node.op_type in ("Shape", "Size"):
                continue
            want = FLOAT if node.name in g.fp32_nodes else HALF
            floats = [t for t in list(node.input) + list(node.output)
                      if t and types.get(t) in (FLOAT, HALF)]
            assert all(types[t] == want for t in floats), (g.file, node.name)


def test_initializers_are_fp16_except_those_only_fp32_nodes_read(exported):
    out, manifest, _ = exported
    for g in fp16_graphs(manifest):
        proto = onnx.load(str(out / g.file))
        readers: dict[str, set[bool]] = {}
        for node in proto.graph.node:
            for t in node.input:
                readers.setdefault(t, set()).add(node.name in g.fp32_nodes)
        for init in proto.graph.initializer:
            if init.data_type in (FLOAT, HALF):
                expected = FLOAT if readers[init.name] == {True} else HALF
                assert init.data_type == expected, (g.file, init.name)


def test_policy_keeps_sampling_and_entropy_heads_fp32(exported):
    out, manifest, _ = exported
    plans = {g.source: g.fp32_nodes for g in fp16_graphs(manifest)}
    assert list(plans["g_a.onnx"].values()) == ["sampling: DeformConv (pixel coordinates)"]
    grid = plans["g_a_gridsample.onnx"]
    assert sum(r.startswith("sampling: GridSample") for r in grid.values()) == 9
    assert all(r.startswith("sampling") for r in grid.values())
    for file in ("h_a.onnx", "g_s.onnx"):
        assert plans[file] == {}                # tiny ranges: nothing near the FP16 limit
    assert not {"h_s.onnx", "anchor.onnx", "nonanchor.onnx"} & set(plans)   # exact: no twin


def test_range_rule_and_forced_nodes_are_honoured(exported):
    out, _, _ = exported
    proto = onnx.load(str(out / "h_a.onnx"))
    ranges = Ranges.load(out / RANGES_NAME).graphs["h_a.onnx"]
    relu = next(n for n in proto.graph.node if n.op_type == "LeakyRelu")
    tensors = dict(ranges.tensors)
    tensors[relu.output[0]] = TensorRange("LeakyRelu", 2 * FP16_MAX / MARGIN, 0.0)
    first_conv = proto.graph.node[0].name
    plan = plan_fp16(proto, GraphRanges("h_a", tensors), keep=(first_conv,))
    consumer = next(n for n in proto.graph.node if relu.output[0] in n.input)
    assert plan[first_conv] == "forced"
    assert plan[relu.name].startswith("range:") and plan[consumer.name].startswith("range:")
    types = elem_types(convert_fp16(proto, plan))
    assert types[relu.output[0]] == FLOAT                       # never stored in FP16
    with pytest.raises(ValueError, match="no nodes"):
        plan_fp16(proto, None, keep=("no_such_node",))


def test_ranges_json_schema(exported):
    out, manifest, _ = exported
    data = json.loads((out / RANGES_NAME).read_text())
    assert set(data) == {"format_version", "weights_sha256", "images", "graphs"}
    assert data["format_version"] == 1 and data["weights_sha256"] == manifest.weights_sha256
    assert data["images"] and all(isinstance(i, str) for i in data["images"])
    assert manifest.fp16_ranges == RANGES_NAME
    assert set(data["graphs"]) == {g.file for g in manifest.graphs if g.precision == "fp32"
                                   and g.variant != "col2im" and g.stage not in EXACT_STAGES}
    for file, g in data["graphs"].items():
        assert g["stage"] == manifest.graph(file).stage
        assert set(g["tensors"]) == set(float_tensors(onnx.load(str(out / file))))
        for t in g["tensors"].values():
            assert set(t) == {"op", "max_abs", "min_abs"}
            assert 0.0 <= t["min_abs"] <= t["max_abs"] < FP16_MAX
    assert data["graphs"]["g_a.onnx"]["tensors"]["image"]["op"] == "input"
    assert Ranges.load(out / RANGES_NAME).to_json() + "\n" == (out / RANGES_NAME).read_text()


def test_ranges_of_another_export_or_model_are_refused(exported, tmp_path):
    out, manifest, model = exported
    proto = onnx.load(str(out / "g_s.onnx"))
    with pytest.raises(ExportError, match="lack .* tensor"):
        plan_fp16(proto, GraphRanges("g_s", {}))
    with pytest.raises(ExportError, match="measured on weights"):
        resolve_ranges(model, tmp_path, {}, out / RANGES_NAME, None, "0" * 64)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ExportError, match="cannot read activation ranges"):
        Ranges.load(tmp_path / "bad.json")


def test_fp16_graphs_run_in_onnxruntime_close_to_torch(exported):
    _, manifest, _ = exported
    for g in fp16_graphs(manifest):
        assert "onnxruntime" in g.checked_on and g.errors
        for name, e in g.errors.items():
            assert np.isfinite(e.max_abs) and e.max_abs <= 2e-3 * e.max_ref + 1e-3, (g.file, name)


def _grouped_conv_transpose():
    """onnx's reference ConvTranspose, extended to groups (it handles one): run each
    group alone, concatenate. The exported pixel shuffle is a grouped ConvTranspose."""
    from onnx.reference.ops.op_conv_transpose import ConvTranspose

    class GroupedConvTranspose(ConvTranspose):
        op_domain = ""

        def _run(self, X, W, B=None, group=None, **attrs):
            g = group or 1
            bs = np.split(B, g) if B is not None else [None] * g
            outs = [ConvTranspose._run(self, x, w, b, group=1, **attrs)[0]
                    for x, w, b in zip(np.split(X, g, axis=1), np.split(W, g, axis=0), bs)]
            return (np.concatenate(outs, axis=1),)

    GroupedConvTranspose.__name__ = "ConvTranspose"
    return GroupedConvTranspose


def test_fp16_graphs_in_fp16_arithmetic_stay_close(exported):
    """onnx's reference evaluator computes FP16 ops in FP16 (onnxruntime CPU does not)."""
    from onnx.reference import ReferenceEvaluator

    from fastlic.export.check import reference_io
    out, _, model = exported
    image = np.random.default_rng(0).random((1, 3, 64, 128), dtype=np.float32)
    refs = reference_io(model, image)
    for stage in ("h_a", "g_s"):
        inputs, expected = refs[stage]
        session = ReferenceEvaluator(str(out / fp16_file(f"{stage}.onnx")),
                                     new_ops=[_grouped_conv_transpose()])
        for name, value in zip(expected, session.run(list(expected), inputs)):
            assert value.dtype == np.float32
            ref = np.abs(expected[name]).max()
            assert np.abs(value - expected[name]).max() <= 1e-2 * ref + 1e-3, (stage, name)


def test_engines_keep_choosing_fp32_graphs(exported):
    from fastlic.engines import STAGES, load_engines
    from fastlic.stages import EXACT_STAGES
    out, _, _ = exported
    manifest = load_manifest(out)
    for stage in STAGES:
        assert {g.precision for g in manifest.candidates("onnxruntime", stage)} == {"fp32"}
        if stage in EXACT_STAGES:
            assert not manifest.candidates("tensorrt", stage, precision="fp16")
            continue
        chosen = manifest.candidates("tensorrt", stage)[0].file   # FP16 twins are the GPU graphs'
        fp16 = manifest.candidates("tensorrt", stage, precision="fp16")
        assert fp16[0].source == chosen and fp16[0].fp32_nodes == manifest.graph(
            fp16[0].file).fp32_nodes
    engines = load_engines("onnxruntime", out, threads=1)
    assert not any(e.file.endswith("_fp16.onnx") for e in engines.values())


def test_manifest_without_fp16_fields_still_loads(exported, tmp_path):
    import shutil
    out, _, _ = exported
    for f in out.iterdir():
        shutil.copy(f, tmp_path / f.name)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data.pop("fp16_ranges")
    data["graphs"] = [{k: v for k, v in g.items() if k not in ("precision", "source",
                                                               "fp32_nodes")}
                      for g in data["graphs"] if g["precision"] == "fp32"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    manifest = load_manifest(tmp_path)
    assert {g.precision for g in manifest.graphs} == {"fp32"} and manifest.fp16_ranges == ""


def test_weight_beyond_fp16_is_a_typed_error():
    w = numpy_helper.from_array(np.full((1, 1, 1, 1), 1e5, np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 1, 2, 2])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ExportError, match="beyond FP16"):
        convert_fp16(proto, {})
    types = elem_types(convert_fp16(proto, {"conv": "forced"}))
    assert types["w"] == FLOAT and types["y"] == FLOAT


def test_cli_reuses_saved_ranges_and_checks_flags(exported, shipped_tiny, tmp_path, capsys):
    out, _, _ = exported
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "a"), "--fp16-ranges", str(out / RANGES_NAME)])
    assert "need --fp16" in capsys.readouterr().err
    args = ["--model", str(shipped_tiny), "--no-check", "--no-gridsample", "--fp16"]
    assert main(["--out", str(tmp_path / "b"), "--fp16-ranges", str(out / RANGES_NAME)]
                + args) == 0
    manifest = load_manifest(tmp_path / "b")
    assert len(fp16_graphs(manifest)) == 3 and (tmp_path / "b" / RANGES_NAME).is_file()
    other = dataclasses.replace(Ranges.load(out / RANGES_NAME), weights_sha256="f" * 64)
    other.save(tmp_path / "other.json")
    assert file_hash(shipped_tiny) != "f" * 64
    assert main(["--out", str(tmp_path / "c"), "--fp16-ranges", str(tmp_path / "other.json")]
                + args) == ExportError.exit_code


def test_png_images_are_the_codecs_padded_input(tmp_path):
    from PIL import Image

    from fastlic.export.ranges import png_images
    from fastlic.runtime.image import model_input
    rng = np.random.default_rng(3)
    shapes = {"a.png": (70, 50), "b.png": (64, 129)}
    for name, shape in shapes.items():
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(tmp_path / name)
    got = list(png_images(tmp_path))
    assert [label.split()[0] for label, _ in got] == sorted(shapes)
    for (label, x), name in zip(got, sorted(shapes)):
        rgb = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert np.array_equal(x, model_input(rgb))
        assert f"(padded {x.shape[2]}x{x.shape[3]})" in label
    assert len(list(png_images(tmp_path, limit=1))) == 1
