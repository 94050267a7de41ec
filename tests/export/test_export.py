"""ONNX export, manifest and the onnxruntime engine, on a tiny random model.

One module-scoped export (about a minute on two cores) feeds every test.
"""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from fastlic.engines import STAGES, load_engines  # noqa: E402
from fastlic.errors import EngineError, ExportMismatchError, ManifestError  # noqa: E402
from fastlic.export import export_model, load_manifest, main, state_dict_sha256  # noqa: E402
from fastlic.export.check import (PhotoBatch, check_graphs, photo_batches,  # noqa: E402
                                  raise_on_mismatch, reference_io)
from fastlic.model import FastLIC, get_config  # noqa: E402
from fastlic.model.deform import ModulatedDeformConv  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def deforming_tiny_model() -> FastLIC:
    """Tiny random model whose deformable conv really deforms (offsets of a few pixels)."""
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny"))
    for module in model.modules():
        if isinstance(module, ModulatedDeformConv):
            nn.init.normal_(module.offset_mask.weight, std=0.5)
            nn.init.normal_(module.offset_mask.bias, std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    return deforming_tiny_model()


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    lines: list[str] = []
    manifest = export_model(tiny, out, log=lines.append, threads=1)
    return out, manifest, lines


@pytest.fixture(scope="module")
def photos():
    return photo_batches()


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_six_graphs_with_stage_tensor_names_and_dynamic_dims(exported):
    out, _, _ = exported
    for stage, spec in STAGES.items():
        proto = onnx.load(str(out / f"{stage}.onnx"))
        onnx.checker.check_model(proto)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 19
        assert tuple(v.name for v in proto.graph.input) == spec.inputs
        assert tuple(v.name for v in proto.graph.output) == spec.outputs
        for value in list(proto.graph.input) + list(proto.graph.output):
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch" and dims[2].dim_param.startswith("H")
            assert dims[3].dim_param.startswith("W") and dims[1].dim_value > 0


def test_g_a_holds_one_deformconv_node_and_the_fallback_none(exported):
    out, _, _ = exported
    ops = _ops(out / "g_a.onnx")
    assert ops.count("DeformConv") == 1 and "GridSample" not in ops
    node = next(n for n in onnx.load(str(out / "g_a.onnx")).graph.node if n.op_type == "DeformConv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["kernel_shape"] == [3, 3] and attrs["pads"] == [1, 1, 1, 1]
    assert attrs["group"] == 1 and attrs["offset_group"] == 1 and len(node.input) == 5
    fallback = _ops(out / "g_a_gridsample.onnx")
    assert "DeformConv" not in fallback and fallback.count("GridSample") == 9


def test_pixel_shuffles_are_col2im_only_in_the_variant(exported):
    out, _, _ = exported
    default, variant = _ops(out / "g_s.onnx"), _ops(out / "g_s_col2im.onnx")
    assert "Col2Im" not in default
    assert variant.count("Col2Im") == default.count("ConvTranspose") > 0
    assert "ConvTranspose" not in variant
    for stage in ("h_s", "anchor", "nonanchor"):   # the exact stages: GEMMs, no conv at all
        ops = _ops(out / f"{stage}.onnx")
        assert "MatMul" in ops and not {"Conv", "ConvTranspose", "Col2Im"} & set(ops)
        assert not (out / f"{stage}_col2im.onnx").exists()


def test_manifest_records_hashes_signatures_errors_and_engine_files(exported, tiny):
    out, manifest, lines = exported
    loaded = load_manifest(out)
    assert loaded == manifest
    assert manifest.opset >= 19 and manifest.model_name == "tiny"
    assert manifest.weights_sha256 == state_dict_sha256(tiny)
    assert len(manifest.photos) == 2 and manifest.versions["onnxruntime"] == ort.__version__
    col2im = {"g_s": "g_s_col2im.onnx"}
    files = {f"{s}.onnx" for s in STAGES} | {"g_a_gridsample.onnx", *col2im.values()}
    assert {g.file for g in manifest.graphs} == files
    for g in manifest.graphs:
        assert set(g.errors) == set(STAGES[g.stage].outputs)
        assert g.checked_on.startswith("onnxruntime")
        assert all(e.max_abs < 1e-4 and e.max_ref > 0 for e in g.errors.values())
        assert g.inputs[0].dtype == "float32" and g.inputs[0].shape[0] == "batch"
    assert manifest.engines["tensorrt"] == {s: f"{s}.onnx" for s in STAGES}
    assert manifest.engines["onnxruntime"] == {**manifest.engines["tensorrt"], **col2im}
    for g in manifest.graphs:  # one progress line per graph, then the error table
        assert any(line.startswith(f"exported {g.file} ") for line in lines)
        assert f"\n{g.file} " in lines[-1]


def test_onnxruntime_engines_match_torch_on_two_photo_sizes(exported, tiny, photos):
    out, _, _ = exported
    engines = load_engines("onnxruntime", out, threads=1)
    assert engines["g_a"].file == "g_a.onnx"  # this onnxruntime has a DeformConv kernel
    assert engines["g_s"].file == "g_s_col2im.onnx"
    for stage in ("h_s", "anchor", "nonanchor"):   # the exact stages: one file each
        assert engines[stage].file == f"{stage}.onnx"
    assert {e.providers[0] for e in engines.values()} == {"CPUExecutionProvider"}
    sizes = set()
    for batch in photos:
        for stage, (inputs, expected) in reference_io(tiny, batch.image).items():
            got = engines[stage].run(inputs)
            for name, want in expected.items():
                np.testing.assert_allclose(got[name], want, rtol=1e-3, atol=1e-5,
                                           err_msg=f"{batch.label} {stage}:{name}")
        sizes.add(batch.image.shape)
    assert len(sizes) == 2


def test_mismatches_are_collected_into_one_typed_error(exported, tiny, photos):
    out, _, _ = exported
    from fastlic.entropy.tables import build_tables
    from fastlic.model.quant import with_exact
    changed = with_exact(tiny, build_tables(tiny))   # the exported exact stages, unchanged
    with torch.no_grad():
        changed.h_a[-1].bias += 0.5
        changed.g_s.out.bias += 0.5
    files = {"h_a.onnx": "h_a", "anchor.onnx": "anchor", "g_s.onnx": "g_s"}
    checks = check_graphs(changed, out, files, photos[:1], threads=1)
    assert checks["anchor.onnx"].mismatches == ()
    with pytest.raises(ExportMismatchError) as info:
        raise_on_mismatch(checks)
    message = str(info.value)
    assert "h_a.onnx:z" in message and "g_s.onnx:image_hat" in message
    assert "anchor" not in message and message.startswith("2 ")


def test_a_stage_no_file_of_which_runs_is_a_mismatch(exported, tiny, tmp_path):
    shutil.copy(exported[0] / "h_s.onnx", tmp_path / "h_s.onnx")
    (tmp_path / "h_s.onnx").write_bytes(b"not onnx")
    image = np.zeros((1, 3, 64, 64), np.float32)
    checks = check_graphs(tiny, tmp_path, {"h_s.onnx": "h_s"}, [PhotoBatch("black", image)])
    with pytest.raises(ExportMismatchError, match="h_s.onnx did not run"):
        raise_on_mismatch(checks)


def test_tampered_graph_or_missing_manifest_raise_manifest_error(exported, tmp_path):
    copy_dir = tmp_path / "model"
    shutil.copytree(exported[0], copy_dir)
    data = bytearray((copy_dir / "h_a.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy_dir / "h_a.onnx").write_bytes(bytes(data))
    (copy_dir / "g_s.onnx").unlink()
    with pytest.raises(ManifestError, match=r"h_a\.onnx sha256 differs.*g_s\.onnx is missing"):
        load_manifest(copy_dir)
    with pytest.raises(ManifestError):
        load_engines("onnxruntime", copy_dir)
    with pytest.raises(ManifestError, match="fastlic export"):
        load_manifest(tmp_path)


def test_engine_falls_back_to_gridsample_without_deformconv_kernel(exported, tiny, monkeypatch,
                                                                   photos):
    from fastlic.engines.onnxruntime import engine as oe

    real = oe.make_session

    def no_deformconv(path, providers, threads, spinning=False):
        if Path(path).name == "g_a.onnx":
            raise RuntimeError("NOT_IMPLEMENTED : no implementation for DeformConv(19)")
        return real(path, providers, threads, spinning)

    monkeypatch.setattr(oe, "make_session", no_deformconv)
    engines = load_engines("onnxruntime", exported[0], threads=1)
    assert engines["g_a"].file == "g_a_gridsample.onnx"
    image = photos[0].image
    with torch.no_grad():
        want = tiny.analysis(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(engines["g_a"].run({"image": image})["y"], want,
                               rtol=1e-3, atol=1e-5)


def test_engines_are_thread_safe_and_check_names(exported):
    engine = load_engines("onnxruntime", exported[0], threads=1)["g_s"]
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((1, 16, 4 + i, 4), dtype=np.float32) for i in range(4)]
    expected = [engine.run({"y_hat": f})["image_hat"] for f in feeds]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda f: engine.run({"y_hat": f})["image_hat"], feeds))
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(EngineError, match="takes inputs"):
        engine.run({"y": feeds[0]})


def test_providers_default_to_cpu_and_unknown_ones_are_refused():
    from fastlic.engines.onnxruntime.engine import resolve_providers

    assert resolve_providers(None) == ["CPUExecutionProvider"]
    auto = resolve_providers("auto")
    assert auto[-1] == "CPUExecutionProvider" and set(auto) <= set(ort.get_available_providers())
    with pytest.raises(EngineError, match="lacks providers"):
        resolve_providers(["NoSuchExecutionProvider"])


def test_main_exports_a_weights_file(monkeypatch, tmp_path, tiny, capsys):
    import fastlic.export as export
    from fastlic.modelfile import file_hash, save_model

    weights = tmp_path / "tiny.safetensors"
    save_model(tiny, weights)
    seen = {}

    def fake_export(model, out, **kw):
        seen.update(kw, out=out, cfg=model.cfg)
        return export.Manifest("tiny", "", "", 19, {}, (), 0.0, 0.0, (), {})

    monkeypatch.setattr(export, "export_model", fake_export)
    assert main(["--out", str(tmp_path / "o"), "--model", str(weights), "--no-gridsample"]) == 0
    assert seen["weights_sha256"] == file_hash(weights) and seen["gridsample"] is False
    assert seen["cfg"] == tiny.cfg and seen["check"] is True
    assert main(["--out", str(tmp_path / "o"), "--model", str(tmp_path / "none")]) == 5
    assert "fastlic: error: no weights" in capsys.readouterr().err


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_import_fastlic_loads_no_optional_backend():
    code = ("import sys, fastlic, fastlic.engines, fastlic.errors\n"
            "bad = ('onnxruntime', 'onnx', 'onnxscript', 'tensorrt', 'pycuda', 'cupy')\n"
            "print(sorted(m for m in bad if m in sys.modules))")
    assert _fresh_python(code) == "[]"


def test_onnxruntime_engine_from_a_directory_needs_no_torch(exported):
    code = ("import sys\nfrom fastlic.engines import load_engines\n"
            f"e = load_engines('onnxruntime', {str(exported[0])!r}, threads=1)\n"
            "print(e['g_s'].layout.split()[0], "
            "sorted(m for m in ('torch', 'onnxscript') if m in sys.modules))")
    assert _fresh_python(code) == "blocked []"   # onnx: only for g_s's blocked rewrite


def test_onnxruntime_engine_without_the_onnx_package_runs_the_plain_graphs(exported, tmp_path):
    code = ("import sys\nsys.modules['onnx'] = None\n"   # as if onnx were not installed
            "import numpy as np\nfrom fastlic.engines import load_engines\n"
            f"e = load_engines('onnxruntime', {str(exported[0])!r}, threads=1, "
            f"cache_dir={str(tmp_path)!r})\n"   # empty: no blocked graph to read back
            "x = np.zeros((1, e['g_s'].session.get_inputs()[0].shape[1], 2, 3), np.float32)\n"
            "print(e['g_s'].layout, e['g_s'].run({'y_hat': x})['image_hat'].shape, "
            "sorted(m for m in ('torch', 'onnxscript') if m in sys.modules))")
    assert _fresh_python(code) == "plain (the rewrite needs the onnx package) (1, 3, 32, 48) []"


def test_onnxruntime_keeps_the_default_graph_where_its_col2im_variant_did_not_run():
    from types import SimpleNamespace

    from fastlic.export import _engine_files, _plan
    plan = _plan(gridsample=True)
    ran = {f: SimpleNamespace(checked_on="onnxruntime") for _, f, _ in plan}
    ran["g_s_col2im.onnx"] = SimpleNamespace(checked_on="")     # e.g. no Col2Im kernel
    files = _engine_files(plan, ran)
    assert files["onnxruntime"]["g_s"] == "g_s.onnx"
    assert files["onnxruntime"]["h_s"] == "h_s.onnx"
    assert files["tensorrt"] == {s: f"{s}.onnx" for s in STAGES}
    assert _engine_files(_plan(gridsample=False, col2im=False), {})["onnxruntime"] == \
        files["tensorrt"]
