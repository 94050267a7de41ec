"""onnxruntime's blocked-layout rewrite (fastlic/engines/ort_layout.py): the same outputs
bit for bit as the plain graph, or the plain graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from fastlic.engines.onnxruntime import blocked as ort_blocked, layout as ort_layout  # noqa: E402
from fastlic.stages import STAGES  # noqa: E402
from fastlic.engines.onnxruntime.engine import _blocked_engine, make_session  # noqa: E402
from fastlic.errors import EngineError  # noqa: E402

CPU = ["CPUExecutionProvider"]


def _make(model, **settings):
    return make_session(model, CPU, 1, **settings)


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """A random model whose encoder and decoder have 32 channels, so that they (and the
    shuffles' 128) fill whole blocks of 8 or 16 (AVX2, AVX-512)."""
    from fastlic.model import FastLIC, get_config
    torch.manual_seed(0)
    return FastLIC(get_config("tiny", enc_channels=32, dec_channels=32)).eval()


@pytest.fixture(scope="module")
def aligned_g_s(aligned, tmp_path_factory):
    """The aligned model's g_s with Col2Im shuffles (onnxruntime's graph)."""
    from fastlic.export.graphs import export_stage
    path = tmp_path_factory.mktemp("layout") / "g_s_col2im.onnx"
    return export_stage(aligned, "g_s", path, variant="col2im")


@pytest.fixture(scope="module")
def nchwc():
    """The NCHWc block of this CPU; the tests that count moved operators need 8 or 16."""
    block = ort_blocked.block_size(_make)
    if block < 8:
        pytest.skip(f"onnxruntime's NCHWc block is {block} on this CPU (x86 AVX2 or AVX-512 "
                    "give 8 or 16)")
    return block


def _latent(shape, seed=1):
    return (3 * np.random.default_rng(seed).standard_normal(shape)).round().astype(np.float32)


def test_phase_major_channels_make_dcr_depth_to_space_the_pixel_shuffle():
    x = torch.randn(2, 4 * 3, 5, 7)
    perm = ort_layout.phase_major(3)
    b, c4, h, w = x.shape
    dcr = (x[:, perm].reshape(b, 2, 2, 3, h, w).permute(0, 3, 4, 1, 5, 2)   # ONNX DCR mode
           .reshape(b, 3, 2 * h, 2 * w))
    torch.testing.assert_close(dcr, torch.nn.functional.pixel_shuffle(x, 2), rtol=0, atol=0)


def test_prepare_rewrites_the_aligned_and_output_shuffles_only(nchwc, aligned_g_s, tiny_export):
    for path, expected in ((aligned_g_s, 4), (tiny_export / "g_s_col2im.onnx", 1)):
        model = onnx.load(str(path))
        # 32-channel stages fill blocks; the tiny model's 12 do not (only its output shuffle)
        assert ort_layout.prepare(model, nchwc) == expected
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("DepthToSpace") == expected
        assert ops.count("Col2Im") == 4 - expected


@pytest.mark.parametrize("shape", [(1, 16, 4, 6), (2, 16, 3, 5), (1, 16, 1, 1), (1, 16, 9, 2)])
def test_blocked_g_s_matches_the_plain_graph_bit_for_bit(nchwc, aligned_g_s, shape):
    plain = _make(str(aligned_g_s))
    session, note = ort_blocked.blocked_session(aligned_g_s, _make, plain, 4, None)
    assert session is not None, note
    assert "image_hat channels-last" in note and "4 shuffles phase-major" in note
    feed = {"y_hat": _latent(shape)}
    (expected,), (got,) = plain.run(None, feed), session.run(None, feed)
    assert got.shape == expected.shape == (shape[0], 3, 16 * shape[2], 16 * shape[3])
    np.testing.assert_array_equal(got, expected)


def test_blocked_g_s_has_no_reorders_left_but_around_its_convolutions(nchwc, aligned_g_s):
    model = onnx.load(str(aligned_g_s))
    block = ort_blocked.block_size(_make)
    ort_layout.prepare(model, block)
    path = aligned_g_s.with_name("optimised.onnx")
    _make(model.SerializeToString(), optimized_model_filepath=str(path), log_severity_level=3)
    optimised = onnx.load(str(path))
    reorders = lambda m: sum(n.op_type.startswith("Reorder") for n in m.graph.node)  # noqa: E731
    before = reorders(optimised)
    moved, nhwc = ort_layout.keep_blocked(optimised, block)
    assert moved == 3 * 2 + 4 and nhwc == ("image_hat",)   # 3 IGDNs (Abs, Mul), 4 shuffles
    # one reorder in (the latent) and one out (the image, channels-last) remain
    ops = [n.op_type for n in optimised.graph.node]
    assert ops.count("ReorderInput") == ops.count("ReorderOutput") == 1 < before // 2
    assert "Col2Im" not in ops and "DepthToSpace" not in ops


def test_the_tiny_models_engines_decode_as_the_plain_ones(nchwc, tiny_export, photo):
    from fastlic.runtime.codec import Codec
    blocked = Codec.load(backend="onnxruntime", model_dir=tiny_export, threads=1)
    plain = Codec.load(backend="onnxruntime", model_dir=tiny_export, threads=1, layout="plain")
    assert blocked.engines["g_s"].layout.startswith("blocked")
    assert plain.engines["g_s"].layout == "plain"
    data, recon = plain.compress(photo, return_reconstruction=True)
    assert blocked.compress(photo) == data
    np.testing.assert_array_equal(blocked.decompress(data), recon)


def test_a_rewrite_that_changes_outputs_falls_back_to_the_plain_graph(aligned_g_s, monkeypatch):
    monkeypatch.setattr(ort_blocked, "same_outputs", lambda a, b, feed: False)
    plain = _make(str(aligned_g_s))
    engine = _blocked_engine(aligned_g_s, plain, "g_s", aligned_g_s.name, CPU, 1, False, None)
    assert engine.session is plain
    assert engine.layout == "plain (the rewritten graph's outputs differ from the plain graph's)"


def test_a_rewrite_that_fails_falls_back_to_the_plain_graph(aligned_g_s, monkeypatch):
    def broken(model, block):
        raise KeyError("unexpected node")
    monkeypatch.setattr(ort_layout, "keep_blocked", broken)
    plain = _make(str(aligned_g_s))
    engine = _blocked_engine(aligned_g_s, plain, "g_s", aligned_g_s.name, CPU, 1, False, None)
    assert engine.session is plain and engine.layout.startswith("plain (rewrite failed:")
    out = engine.run({"y_hat": _latent((1, 16, 2, 2))})["image_hat"]
    assert out.shape == (1, 3, 32, 32)


def test_a_graph_with_nothing_to_move_keeps_the_plain_session(tiny_export):
    path = tiny_export / "h_a.onnx"
    plain = _make(str(path))
    session, why = ort_blocked.blocked_session(path, _make, plain, 4, None)
    assert session is None and why == "no operator to move"
    assert set(STAGES["h_a"].inputs) == {i.name for i in plain.get_inputs()}


def test_unknown_layout_is_a_typed_error(tiny_export):
    from fastlic.engines.onnxruntime.engine import load_engines
    with pytest.raises(EngineError, match="unknown onnxruntime layout 'nhwc'"):
        load_engines(tiny_export, layout="nhwc")


def _shuffle_graph(extra_reader: bool):
    """Conv(16 -> 4x16, 3x3) -> Reshape -> Col2Im (pixel shuffle) -> y; with
    ``extra_reader`` a Relu also reads the conv's output (a second graph output)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 16, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([1, 64, 16], np.int64), "cols"),
             numpy_helper.from_array(np.array([8, 8], np.int64), "size"),
             numpy_helper.from_array(np.array([2, 2], np.int64), "blk")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "cols"], ["r"]),
             helper.make_node("Col2Im", ["r", "size", "blk"], ["y"], strides=[2, 2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["c"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 4])
    return helper.make_model(helper.make_graph(nodes, "shuffle", [x], outputs, inits),
                             opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("extra_reader", [False, True])
def test_prepare_permutes_a_conv_only_if_the_shuffle_alone_reads_it(extra_reader):
    model = _shuffle_graph(extra_reader)
    prepared = onnx.ModelProto.FromString(model.SerializeToString())
    assert ort_layout.prepare(prepared, 1) == (0 if extra_reader else 1)
    feed = {"x": _latent((1, 16, 4, 4))}
    for want, got in zip(_make(model.SerializeToString()).run(None, feed),
                         _make(prepared.SerializeToString()).run(None, feed)):
        np.testing.assert_array_equal(got, want)   # the same function either way


@pytest.mark.parametrize("channels", [32, 12])   # whole blocks; padded ones (the tiny model)
def test_blocked_g_a_matches_the_plain_graph_and_divides_only_unpadded(nchwc, channels, aligned,
                                                                        tiny_model, tmp_path):
    from fastlic.export.graphs import export_stage
    model = aligned if channels == 32 else tiny_model
    path = export_stage(model, "g_a", tmp_path / "g_a.onnx")
    plain = _make(str(path))
    session, note = ort_blocked.blocked_session(path, _make, plain, 64, None)
    assert session is not None, note
    # three GDNs: their Abs always move, their Div only where no channel pads
    assert note.startswith(f"{6 if channels == 32 else 3} operators moved")
    for shape in ((1, 3, 64, 96), (2, 3, 128, 64)):
        feed = {"image": np.random.default_rng(2).random(shape, dtype=np.float32)}
        np.testing.assert_array_equal(session.run(None, feed)[0], plain.run(None, feed)[0])


def test_the_block_probe_is_one_reorder_input_of_four_channels():
    model = onnx.ModelProto.FromString(ort_blocked._BLOCK_PROBE)
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == ("ReorderInput", ort_layout.NCHWC)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 4, 1, 1] and ort_blocked.block_size(_make) in (1, 4, 8, 16)


def test_a_cached_rewrite_is_reused_checked_and_replaced_when_bad(nchwc, aligned_g_s, tmp_path,
                                                                 monkeypatch):
    plain, cache = _make(str(aligned_g_s)), tmp_path / "blocked"
    first, note = ort_blocked.blocked_session(aligned_g_s, _make, plain, 4, cache)
    (entry,) = cache.iterdir()
    assert first is not None and not note.endswith(", cached")
    calls = []
    real = ort_layout.rewrite
    monkeypatch.setattr(ort_layout, "rewrite", lambda *a: calls.append(1) or real(*a))
    again, note = ort_blocked.blocked_session(aligned_g_s, _make, plain, 4, cache)
    assert note.endswith(", cached") and not calls           # read back, not rewritten
    feed = {"y_hat": _latent((1, 16, 3, 5))}
    np.testing.assert_array_equal(again.run(None, feed)[0], plain.run(None, feed)[0])
    entry.write_bytes(entry.read_bytes()[:1000])              # truncated: rewritten
    fixed, note = ort_blocked.blocked_session(aligned_g_s, _make, plain, 4, cache)
    assert fixed is not None and calls == [1] and not note.endswith(", cached")
    assert entry.stat().st_size > 1000


def test_a_cached_rewrite_needs_no_onnx_package(nchwc, aligned_g_s, tmp_path):
    import subprocess
    import sys
    cache = tmp_path / "blocked"
    plain = _make(str(aligned_g_s))
    assert ort_blocked.blocked_session(aligned_g_s, _make, plain, 4, cache)[0] is not None
    code = ("import sys\nsys.modules['onnx'] = None\nfrom pathlib import Path\n"
            "from fastlic.engines.onnxruntime import blocked as ort_blocked\n"
            "from fastlic.engines.onnxruntime.engine import make_session\n"
            "make = lambda m, **kw: make_session(m, ['CPUExecutionProvider'], 1, **kw)\n"
            f"g = Path({str(aligned_g_s)!r})\n"
            f"s, note = ort_blocked.blocked_session(g, make, make(str(g)), 4, Path({str(cache)!r}))\n"
            "print(note.endswith(', cached'), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "True False", done.stderr[-2000:]


def test_an_unwritable_cache_still_gives_the_blocked_session(nchwc, aligned_g_s, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    plain = _make(str(aligned_g_s))
    session, note = ort_blocked.blocked_session(aligned_g_s, _make, plain, 4, blocker / "sub")
    assert session is not None and ", not cached: " in note
