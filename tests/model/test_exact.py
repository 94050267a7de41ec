"""The exact entropy path (fastlic.model.exact): construction, bounds, and the same bits
across thread counts, oneDNN, memory layouts, a float64 reference and onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastlic.entropy.tables import build_tables
from fastlic.model import FastLIC, get_config
from fastlic.model import exact as ex
from fastlic.model.layers import checkerboard_mask
from fastlic.model.quant import calibration_photos, with_exact

STAGE_FN = {"h_s": "hyper_synthesis", "anchor": "anchor_params", "nonanchor": "nonanchor_params"}


@pytest.fixture(scope="module")
def exact_model():
    torch.manual_seed(3)
    model = FastLIC(get_config("tiny")).eval()
    return with_exact(model, build_tables(model))


def hostile_inputs(model, seed: int, h64: int = 2, w64: int = 3):
    """Stage inputs a hostile file can produce: integers far outside the clamps, the
    extremes themselves, and ordinary values."""
    g = torch.Generator().manual_seed(seed)
    m, nh = model.cfg.latent_channels, model.cfg.hyper_channels
    h, w = 4 * h64, 4 * w64

    def mixed(shape, big):
        x = torch.randint(-3, 4, shape, generator=g).float()
        pick = torch.rand(shape, generator=g)
        x = torch.where(pick < 0.1, torch.randint(-big, big + 1, shape, generator=g).float(), x)
        x = torch.where(pick > 0.95, torch.sign(x + 0.5) * big, x)
        return x

    z_hat = mixed((1, nh, h // 4, w // 4), 1 << 20)
    hyper = mixed((1, 2 * m, h, w), ex.ACT_MAX + 50)
    sym = mixed((1, m, h, w), 1 << 18)
    mean = torch.randint(-ex.MEAN_MAX, ex.MEAN_MAX + 1, (1, m, h, w), generator=g) * 2.0 ** -6
    y_hat = ((sym + mean) * checkerboard_mask(h, w, anchor=True)).float()
    return {"h_s": (z_hat,), "anchor": (hyper,), "nonanchor": (hyper, y_hat)}


def run_all(exact, inputs) -> dict:
    with torch.inference_mode():
        out = {}
        for stage, args in inputs.items():
            res = getattr(exact, STAGE_FN[stage])(*args)
            out[stage] = [r.numpy().copy() for r in (res if isinstance(res, tuple) else (res,))]
        return out


def assert_same(a: dict, b: dict) -> None:
    for stage in a:
        for x, y in zip(a[stage], b[stage]):
            assert x.dtype == y.dtype == np.float32
            np.testing.assert_array_equal(x, y, err_msg=stage)


# ---- construction ----------------------------------------------------------------------
def test_deconv_and_conv_matrices_are_the_float_convolutions():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 5, 7, dtype=torch.float64)
    w_t = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    ref = F.conv_transpose2d(x, w_t, stride=2, padding=2, output_padding=1)
    cols = torch.cat([ex._shifted(ex._pad1(x.permute(0, 2, 3, 1)), dy, dx)
                      for dy, dx in ex.TAPS_3X3], dim=-1)
    out = (cols @ ex.deconv_matrix(w_t)).reshape(1, 5, 7, 2, 2, 4).permute(0, 1, 3, 2, 4, 5)
    torch.testing.assert_close(out.reshape(1, 10, 14, 4).permute(0, 3, 1, 2), ref)
    w = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    torch.testing.assert_close((cols @ ex.conv3x3_matrix(w)).permute(0, 3, 1, 2),
                               F.conv2d(x, w, padding=1))


def test_context_taps_are_the_twelve_live_taps_of_each_non_anchor_phase():
    for ry, rx in ex.NONANCHOR_PHASES:
        taps = ex.context_taps(ry, rx)
        assert len(taps) == 12 and len({(dy, dx) for *_, dy, dx in taps}) == 12
        assert all((dy + dx) % 2 for *_, dy, dx in taps)


def test_chunk_bounds_keep_every_partial_sum_below_2_24():
    torch.manual_seed(1)
    w = torch.randint(-127, 128, (2000, 7), dtype=torch.int8)
    w[:600, 3] = 127                      # a column at the worst case
    bounds = ex.chunk_bounds(w)
    assert bounds[0] == 0 and bounds[-1] == 2000 and len(bounds) > 2
    for a, b in zip(bounds[:-1], bounds[1:]):
        assert ex.ACT_MAX * int(w[a:b].abs().long().sum(0).max()) < 1 << 24


def test_worst_case_weights_and_activations_are_exact_in_float32():
    """All weights ±127 and activations ±255: the float32 path equals a float64 GEMM
    (which no rounding can touch at these sizes) bit for bit."""
    g = torch.Generator().manual_seed(2)
    k = 1536
    w = torch.where(torch.rand(k, 16, generator=g) < 0.5, -127, 127).to(torch.int8)
    cols = torch.where(torch.rand(64, k, generator=g) < 0.5, -255.0, 255.0)
    cols[:, : k // 2] = 255.0
    w[: k // 2, :8] = 127
    got = ex._accumulate(cols, w.float(), ex.chunk_bounds(w))
    want = cols.double() @ w.double()
    assert torch.equal(got, want)
    assert got.abs().max() > 1 << 24      # the sum itself exceeds float32's exact range


# ---- the same bits everywhere -----------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_stages_are_identical_across_threads_onednn_layouts_and_float64(exact_model, seed):
    exact = exact_model.exact
    inputs = hostile_inputs(exact_model, seed)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref = run_all(exact, inputs)
        for threads in (2, 3):
            torch.set_num_threads(threads)
            assert_same(ref, run_all(exact, inputs))
        with torch.backends.mkldnn.flags(enabled=False):
            assert_same(ref, run_all(exact, inputs))
        channels_last = {k: tuple(t.to(memory_format=torch.channels_last) for t in v)
                         for k, v in inputs.items()}
        assert_same(ref, run_all(exact, channels_last))
        exact.gemm_dtype = torch.float64
        try:
            assert_same(ref, run_all(exact, inputs))
        finally:
            exact.gemm_dtype = torch.float32
    finally:
        torch.set_num_threads(saved)


def test_outputs_respect_their_formats(exact_model):
    out = run_all(exact_model.exact, hostile_inputs(exact_model, 9))
    (hyper,) = out["h_s"]
    assert np.all(hyper == np.round(hyper)) and np.abs(hyper).max() <= ex.ACT_MAX
    for stage in ("anchor", "nonanchor"):
        index, mean = out[stage]
        assert np.all(index == np.round(index)) and 0 <= index.min() and index.max() < 64
        assert np.all(mean * 64 == np.round(mean * 64)) and np.abs(mean).max() <= 512
        other = checkerboard_mask(*index.shape[2:], anchor=stage == "nonanchor").bool().numpy()
        other = np.broadcast_to(other, index.shape)
        assert not index[other].any() and not mean[other].any()


def test_onnxruntime_runs_the_exported_stages_bit_for_bit(exact_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from fastlic.export.graphs import export_stage
    inputs = hostile_inputs(exact_model, 5)
    ref = run_all(exact_model.exact, inputs)
    for stage, args in inputs.items():
        path = export_stage(exact_model, stage, tmp_path / f"{stage}.onnx")
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert not ops & {"Conv", "ConvTranspose", "Gemm"}, ops
        for threads in (1, 2):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
            for x, y in zip(got, ref[stage]):
                np.testing.assert_array_equal(x, y, err_msg=stage)


def test_the_simulation_trained_against_matches_the_integers(exact_model):
    """QAT's float simulation (fastlic.model.quant) gives the exact stages' indices and
    means at nearly every position: the network trains against what it ships."""
    model = exact_model
    tables = build_tables(model)
    x = calibration_photos(128)[1]
    with torch.no_grad():
        y = model.analysis(x)
        z = torch.round(model.hyper_analysis(y))
        hyper_sim = model.hyper_synthesis(z)
        hyper = model.exact.hyper_synthesis(z)
        step = model.qat.steps()["hyper"]
        assert (hyper_sim / step - hyper).abs().max() <= 1.0 + 1e-3
        scale, mean = model.anchor_params(hyper_sim)
        index, mean_exact = model.exact.anchor_params(hyper)
        am = checkerboard_mask(*y.shape[2:], anchor=True).bool().expand_as(scale)
        sim_index = torch.from_numpy(tables.scale_index(scale.numpy()).astype(np.float32))
        assert (sim_index[am] == index[am]).float().mean() > 0.95
        assert (mean[am] - mean_exact[am]).abs().max() <= 0.25


# ---- hostile model files ------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["weight", "multiplier", "shift", "lut"])
def test_check_refuses_tensors_outside_the_bounds(exact_model, damage):
    import copy
    exact = copy.deepcopy(exact_model.exact)
    assert exact.check() is None
    if damage == "weight":
        exact.a1_w[0, 0] = -128
    elif damage == "multiplier":
        exact.n2_m[0] = 1 << 17
    elif damage == "shift":
        exact.hs1_s[0] = 60
    else:
        exact.scale_lut[7] = 64
    assert exact.check()


def test_integer_buffers_survive_half_and_bfloat16(exact_model):
    import copy
    model = copy.deepcopy(exact_model)
    inputs = hostile_inputs(model, 4)
    ref = run_all(model.exact, inputs)
    model.half()
    assert model.exact.a1_w.dtype == torch.int8 and model.exact.a1_m.dtype == torch.int32
    assert_same(ref, run_all(model.exact, inputs))
