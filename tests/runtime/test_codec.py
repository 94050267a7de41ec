"""End-to-end codec: bit-exact round trips, image layouts, typed errors, fuzzing, rate."""
import numpy as np
import pytest
import torch

from fastlic.errors import (BackendMismatchError, BitstreamError, FastlicError, ImageFormatError,
                            ModelMismatchError, ReconstructionMismatchError)
from fastlic.runtime.bitstream import reconstruction_crc
from fastlic.runtime.codec import Codec

SIZES = [(1, 1), (1, 9), (9, 1), (17, 33), (64, 64), (65, 130), (130, 65), (300, 200)]


@pytest.mark.parametrize("h,w", SIZES)
def test_round_trip_is_bit_exact(tiny_codec, h, w):
    rng = np.random.default_rng(h * 1000 + w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    data, recon = tiny_codec.compress(image, return_reconstruction=True)
    out = tiny_codec.decompress(data)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, recon)


def test_large_image_round_trip(tiny_codec):
    image = np.random.default_rng(0).integers(0, 256, (1100, 1300, 3), dtype=np.uint8)
    data, recon = tiny_codec.compress(image, return_reconstruction=True)
    np.testing.assert_array_equal(tiny_codec.decompress(data), recon)


def test_greyscale_comes_back_greyscale(tiny_codec, photo):
    grey = photo.mean(axis=2).astype(np.uint8)
    data, recon = tiny_codec.compress(grey, return_reconstruction=True)
    out = tiny_codec.decompress(data)
    assert out.shape == grey.shape
    np.testing.assert_array_equal(out, recon)


def test_alpha_is_refused_unless_dropped_or_opaque(tiny_codec, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    with pytest.raises(ImageFormatError, match="drop-alpha"):
        tiny_codec.compress(rgba)
    assert tiny_codec.decompress(tiny_codec.compress(rgba, drop_alpha=True)).shape == photo.shape
    rgba[..., 3] = 255
    assert tiny_codec.decompress(tiny_codec.compress(rgba)).shape == photo.shape


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.uint16), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4), np.float32)])
def test_odd_arrays_are_refused(tiny_codec, bad):
    with pytest.raises(ImageFormatError):
        tiny_codec.compress(bad)


def test_other_model_is_detected(tiny_codec, photo):
    from fastlic.model import FastLIC, get_config
    torch.manual_seed(7)
    other = Codec.from_model(FastLIC(get_config("tiny")).eval())
    with pytest.raises(ModelMismatchError, match="decode with model"):
        other.decompress(tiny_codec.compress(photo))


def test_different_table_indices_are_detected(tiny_model, tiny_codec, photo):
    """A decoder whose networks compute other scales must fail, not return a wrong image."""
    import copy
    drifted = copy.deepcopy(tiny_model)
    with torch.no_grad():
        drifted.anchor_net[-1].bias[: tiny_model.cfg.latent_channels] += 0.7
    decoder = Codec.from_model(drifted, weights_hash=tiny_codec.info.weights_hash,
                               tables=tiny_codec.tables)
    with pytest.raises(BackendMismatchError):
        decoder.decompress(tiny_codec.compress(photo))


def _nudged_g_s_decoder(tiny_model, tiny_codec) -> Codec:
    """Same identity and tables as tiny_codec, g_s output bias +0.5/255: equal symbols,
    an image a level off in places (what another backend's float noise looks like)."""
    import copy
    nudged = copy.deepcopy(tiny_model)
    with torch.no_grad():
        nudged.g_s.out.bias += 0.5 / 255
    return Codec.from_model(nudged, weights_hash=tiny_codec.info.weights_hash,
                            tables=tiny_codec.tables)


@pytest.mark.parametrize("grey", [False, True])
def test_checksum_is_stored_and_a_same_backend_decode_passes(tiny_codec, photo, grey):
    image = photo[:, :, 1].copy() if grey else photo
    data, recon = tiny_codec.compress(image, return_reconstruction=True, checksum=True)
    assert tiny_codec.read_header(data).header.recon_crc == reconstruction_crc(recon)
    assert data[5] == 1 and len(data) == len(tiny_codec.compress(image, checksum=False)) + 4
    assert tiny_codec.compress(image) == data   # the checksum is the default
    out = tiny_codec.decompress(data)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out, recon)


def test_a_differing_image_decodes_by_default_and_strict_refuses_it(tiny_model, tiny_codec,
                                                                     photo):
    """The reconstruction policy: another g_s's image is returned (a file decodes
    everywhere), matches_encoder says it differs, strict=True raises."""
    decoder = _nudged_g_s_decoder(tiny_model, tiny_codec)
    data, recon = tiny_codec.compress(photo, return_reconstruction=True)
    np.testing.assert_array_equal(decoder.decode_latent(data), tiny_codec.decode_latent(data))
    out = decoder.decompress(data)
    diff = np.abs(out.astype(np.int16) - recon)
    assert diff.any() and diff.max() <= 1
    assert Codec.matches_encoder(data, out) is False
    assert Codec.matches_encoder(data, tiny_codec.decompress(data, strict=True)) is True
    with pytest.raises(ReconstructionMismatchError, match="--strict") as info:
        decoder.decompress(data, strict=True)
    assert isinstance(info.value, BackendMismatchError) and "\n" not in str(info.value)
    plain = tiny_codec.compress(photo, checksum=False)
    assert Codec.matches_encoder(plain, out) is None
    with pytest.raises(ReconstructionMismatchError, match="does not hold"):
        tiny_codec.decompress(plain, strict=True)


def test_without_checksum_a_differing_image_is_returned(tiny_model, tiny_codec, photo):
    """Documented behaviour: only the symbols are checked; g_s float noise passes through."""
    decoder = _nudged_g_s_decoder(tiny_model, tiny_codec)
    data, recon = tiny_codec.compress(photo, return_reconstruction=True, checksum=False)
    diff = np.abs(decoder.decompress(data).astype(np.int16) - recon)
    assert diff.any() and diff.max() <= 1


@pytest.mark.parametrize("checksum", [False, True])
def test_fuzzed_bitstreams_fail_cleanly(tiny_codec, photo, checksum):
    data = tiny_codec.compress(photo, checksum=checksum)
    rng = np.random.default_rng(0)
    cases = [data[:n] for n in range(0, len(data), max(1, len(data) // 40))]
    for _ in range(150):
        buf = bytearray(data)
        pos = rng.integers(len(buf))
        if rng.random() < 0.5:
            buf[pos] ^= 1 << rng.integers(8)
        else:
            buf[pos] = rng.integers(256)
        cases.append(bytes(buf))
    cases += [data + b"\0", b"", b"FLIC", bytes(rng.integers(0, 256, 200, dtype=np.uint8))]
    for case in cases:
        try:
            out = tiny_codec.decompress(case)
        except BitstreamError:
            continue
        assert out.shape == photo.shape   # a clean decode of a (by chance) valid stream


def test_coded_size_is_close_to_the_entropy_estimate(tiny_model, tiny_codec):
    from skimage import data as skdata
    image = skdata.astronaut()[:256, :256]
    data = tiny_codec.compress(image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = tiny_model.eval()(x)
    estimate = (out["bits_y"] + out["bits_z"]).item()
    payload_bits = 8 * sum(len(s) for s in tiny_codec.read_header(data).substreams)
    assert abs(payload_bits - estimate) / estimate < 0.05


def test_all_errors_are_one_line(tiny_codec):
    for bad in (b"", b"JUNKJUNKJUNK", b"FLIC\x09" + b"\0" * 40):
        with pytest.raises(FastlicError) as info:
            tiny_codec.decompress(bad)
        assert "\n" not in str(info.value) and str(info.value)


def test_coded_symbols_is_what_the_entropy_decoder_decodes(tiny_codec, photo, monkeypatch):
    from fastlic.entropy.coder import SymbolCoder
    decoded = []
    real = SymbolCoder.decode

    def counting(self, data, table_index):
        decoded.append(len(table_index))
        return real(self, data, table_index)

    monkeypatch.setattr(SymbolCoder, "decode", counting)
    data = tiny_codec.compress(photo)
    tiny_codec.decompress(data)
    assert tiny_codec.coded_symbols(data) == sum(decoded)


@pytest.mark.parametrize("h,w", [(64, 64), (65, 100), (1, 130)])
def test_model_input_edge_pads_to_the_stride(h, w):
    from fastlic.model import STRIDE
    from fastlic.runtime.image import model_input
    rgb = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x = model_input(rgb)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.shape[:2] == (1, 3) and x.shape[2] % STRIDE == 0 and x.shape[3] % STRIDE == 0
    assert x.shape[2] - h < STRIDE and x.shape[3] - w < STRIDE
    img = np.rint(x[0].transpose(1, 2, 0) * 255).astype(np.uint8)
    assert np.array_equal(img[:h, :w], rgb)
    assert np.array_equal(img[h:, :w], np.broadcast_to(rgb[-1:], img[h:, :w].shape))  # last row
    assert np.array_equal(img[:, w:], np.broadcast_to(img[:, w - 1:w], img[:, w:].shape))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])   # onnxruntime's plain, torch's strides
def test_decoder_output_is_the_rounded_clipped_image_in_contiguous_hwc(layout):
    from fastlic.runtime.codec import _to_uint8_hwc
    rng = np.random.default_rng(0)
    chw = rng.uniform(-0.1, 1.1, (3, 17, 23)).astype(np.float32)
    chw[0, 0, :4] = np.array([0.5, 1.5, 2.5, 254.5], np.float32) / 255   # ties round to even
    if layout == "NHWC":
        chw = np.ascontiguousarray(chw.transpose(1, 2, 0)).transpose(2, 0, 1)
    got = _to_uint8_hwc(chw)
    want = np.clip(np.round(chw.transpose(1, 2, 0) * np.float32(255)), 0, 255).astype(np.uint8)
    assert got.flags.c_contiguous and got.dtype == np.uint8 and got.shape == (17, 23, 3)
    np.testing.assert_array_equal(got, want)
