"""dtype "bfloat16": g_s in bf16 with a float32-accurate output (fastlic.model.bfloat16),
every other stage float32. CPU torch runs bf16 convolutions on any CPU (emulated where
the CPU has no AMX / AVX512-BF16), so all of this runs everywhere; only the speed
depends on the CPU (benchmarks/cpu_bf16.py)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fastlic.engines.pytorch import engine as torch_engine
from fastlic.errors import EngineError, ReconstructionMismatchError
from fastlic.model.bfloat16 import (Bf16Synthesis, CompensatedSubPixel, FrozenGDN,
                                    SplitInputSubPixel, native_bf16)
from fastlic.model.layers import GDN
from fastlic.model.subpixel import SubPixelConvTranspose, to_subpixel
from fastlic.runtime.codec import Codec

B = torch.bfloat16


def _subpixel_layer(cin: int, cout: int, seed: int) -> SubPixelConvTranspose:
    torch.manual_seed(seed)
    return SubPixelConvTranspose(torch.nn.ConvTranspose2d(cin, cout, 5, 2, 2, output_padding=1))


def test_frozen_gdn_rounds_its_bias_once():
    torch.manual_seed(0)
    gdn = GDN(64, inverse=True)
    with torch.no_grad():
        gdn.beta.uniform_(0.2, 1.0)
        gdn.gamma.normal_(0.0, 0.1)
    x = torch.randn(1, 64, 5, 7)
    frozen = FrozenGDN(gdn)
    torch.testing.assert_close(frozen(x), gdn(x))
    once = (gdn.beta.abs() + 1e-3).to(B)
    assert torch.equal(frozen.to(B).bias, once)
    twice = gdn.beta.to(B).abs() + 1e-3          # what GDN.forward computes in bf16
    assert (twice != once).any()                 # a whole bf16 step off in some channels


def _bf16_weights(layer: SubPixelConvTranspose) -> SubPixelConvTranspose:
    """``layer`` with its kernel rounded as bf16 runs it, computing in float32."""
    rounded = copy.deepcopy(layer)
    rounded.weight.data = rounded.weight.to(B).float()
    return rounded


def test_compensated_output_is_far_closer_than_a_bf16_output():
    layer = _subpixel_layer(16, 3, 1)
    h = torch.randn(1, 16, 12, 10).to(B)
    ref = _bf16_weights(layer)(h.float())         # the same bf16 operands, float32 output
    naive = copy.deepcopy(layer).to(B)(h).float()
    comp = CompensatedSubPixel(layer)(h)
    assert comp.dtype == torch.float32
    naive_err, comp_err = ((t - ref).abs().max().item() for t in (naive, comp))
    assert comp_err < naive_err / 30, (comp_err, naive_err)
    # in float32 the remainder is zero up to rounding: the layer's own output
    torch.testing.assert_close(CompensatedSubPixel(layer, torch.float32)(h.float()),
                               layer(h.float()))


def test_split_input_sees_y_hat_to_about_16_bits():
    layer = _subpixel_layer(8, 4, 2)
    y = 20 * torch.randn(1, 8, 6, 6) + 0.37                # ŷ-like values, up to tens
    ref = _bf16_weights(layer)
    ref.bias.data = ref.bias.to(B).float()
    ref = ref(y).to(B)                    # float32 input, the rest rounded as in bf16
    split = SplitInputSubPixel(layer).to(B)(y)
    plain = copy.deepcopy(layer).to(B)(y.to(B))
    # the split input gives the float32 input's bf16 output nearly everywhere
    split_same, plain_same = ((t == ref).float().mean().item() for t in (split, plain))
    assert split_same > 0.9 and plain_same < split_same - 0.2, (split_same, plain_same)


def test_bf16_synthesis_tracks_float32(tiny_model):
    model = to_subpixel(tiny_model)
    y_hat = torch.round(4 * torch.randn(2, model.cfg.latent_channels, 5, 7)) + 0.3
    exact = model.g_s(y_hat)
    bf16 = Bf16Synthesis(model.g_s)
    out = bf16(y_hat)
    assert out.dtype == torch.float32 and out.shape == exact.shape
    assert {b.dtype for n, b in bf16.named_buffers() if n != "out.bias"} == {B}
    naive = copy.deepcopy(model.g_s).to(B)(y_hat.to(B)).float()
    # a random model's error is its inner layers' (beta = 1, a small output): no worse
    err, naive_err = ((t - exact).abs().max().item() for t in (out, naive))
    assert err <= naive_err and err < 0.02 * exact.abs().max().item(), (err, naive_err)
    with pytest.raises(ValueError, match="subpixel"):
        Bf16Synthesis(tiny_model.g_s)


def test_bf16_synthesis_keeps_residual_blocks():
    from fastlic.model import FastLIC, get_config
    from fastlic.model.layers import ResidualBlock
    torch.manual_seed(3)
    model = to_subpixel(FastLIC(get_config("tiny_teacher")).eval())     # dec_blocks=1
    bf16 = Bf16Synthesis(model.g_s)
    blocks = [m for m in bf16.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 3 and all(b.conv1.weight.dtype == B for b in blocks)
    y_hat = torch.round(4 * torch.randn(1, model.cfg.latent_channels, 3, 4))
    with torch.inference_mode():
        exact, out = model.g_s(y_hat), bf16(y_hat)
    assert (out - exact).abs().max() < 0.02 * exact.abs().max()


def test_bfloat16_engines_run_only_g_s_in_bf16(tiny_exact):
    tiny_model = tiny_exact
    engines = torch_engine.load_engines(tiny_model, dtype="bfloat16")
    assert {n for n, e in engines.items() if e.compute == B} == set(torch_engine.BF16_STAGES)
    assert all(e.dtype == torch.float32 for e in engines.values())   # float32 in and out
    assert "bfloat16" in engines["g_s"].describe() and "float32" in engines["h_s"].describe()
    assert ("(native)" in engines["g_s"].describe()) == native_bf16()
    assert isinstance(engines["g_s"].fn.__self__.g_s, Bf16Synthesis)
    assert not isinstance(tiny_model.g_s, Bf16Synthesis)              # the caller's untouched
    with pytest.raises(EngineError, match="subpixel"):
        torch_engine.load_engines(tiny_model, dtype="bfloat16", subpixel=False)
    with pytest.raises(EngineError, match="CUDA"):
        torch_engine.load_engines(tiny_model, dtype="float16")


def test_bfloat16_codec_writes_float32_bitstreams(tiny_model, photo):
    fp32 = Codec.from_model(tiny_model)
    bf16 = Codec.from_model(tiny_model, dtype="bfloat16")
    plain = fp32.compress(photo, checksum=False)
    assert bf16.compress(photo, checksum=False) == plain        # the same symbols and tables
    a, b = fp32.decompress(plain).astype(int), bf16.decompress(plain).astype(int)
    assert np.abs(a - b).max() <= 2 and (a != b).mean() < 0.05
    # with the checksum each reproduces its own image; strict decoding refuses the other's
    for enc, dec in ((fp32, bf16), (bf16, fp32)):
        data, recon = enc.compress(photo, return_reconstruction=True)
        np.testing.assert_array_equal(enc.decompress(data, strict=True), recon)
        np.testing.assert_array_equal(dec.decode_latent(data), enc.decode_latent(data))
        try:
            np.testing.assert_array_equal(dec.decompress(data, strict=True), recon)
        except ReconstructionMismatchError as exc:
            assert "dtype" in str(exc)


def test_shipped_model_loses_no_visible_quality(photo):
    from fastlic.evaluation.metrics import psnr
    fp32, bf16 = Codec.load(), Codec.load(dtype="bfloat16")
    data = fp32.compress(photo, checksum=False)
    assert abs(psnr(photo, bf16.decompress(data)) - psnr(photo, fp32.decompress(data))) < 0.01


def test_shipped_g_s_is_far_closer_than_a_plain_bf16_copy(photo):
    from fastlic.modelfile import load_model
    from fastlic.runtime.codec import DEFAULT_WEIGHTS
    model = to_subpixel(load_model(DEFAULT_WEIGHTS)[0])
    x = torch.from_numpy(photo[:112, :144].transpose(2, 0, 1).copy())[None].float() / 255
    with torch.inference_mode():
        y_hat = torch.round(model.g_a(x))
        exact = model.g_s(y_hat)
        ours = Bf16Synthesis(model.g_s)(y_hat)
        naive = copy.deepcopy(model.g_s).to(B)(y_hat.to(B)).float()
    def levels(t):
        return (t.clamp(0, 1) * 255).round()
    differ = [(levels(t) != levels(exact)).float().mean().item() for t in (ours, naive)]
    rms = [(t - exact).pow(2).mean().sqrt().item() for t in (ours, naive)]
    assert differ[0] < differ[1] / 2 and rms[0] < rms[1] / 1.5, (differ, rms)


def test_cli_takes_dtype_bfloat16(tmp_path, photo):
    from PIL import Image

    from fastlic.cli import main
    src = tmp_path / "p.png"
    Image.fromarray(photo).save(src)
    assert main(["compress", str(src), "-o", str(tmp_path / "p.flic"), "--dtype", "bfloat16"]) == 0
    assert main(["decompress", str(tmp_path / "p.flic"), "-o", str(tmp_path / "p2.png"),
                 "--dtype", "bfloat16"]) == 0
    assert np.asarray(Image.open(tmp_path / "p2.png")).shape == photo.shape


def test_the_benchmark_finds_the_same_bitstreams(shipped_tiny, photo, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image
    root = Path(__file__).resolve().parents[2]
    for k, crop in enumerate((photo[:64, :96], photo[:37, :53])):
        Image.fromarray(crop).save(tmp_path / f"p{k}.png")
    done = subprocess.run([sys.executable, "-m", "benchmarks.cpu_bf16", str(tmp_path),
                           "--model", str(shipped_tiny), "--threads", "1", "--repeat", "2"],
                          cwd=root, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bytes identical to float32's: 2/2" in done.stdout
    assert "verified by bfloat16: 2/2" in done.stdout
    assert "| decode, --no-checksum |" in done.stdout and "| p1.png |" in done.stdout
