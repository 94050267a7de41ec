"""Tiled coding of large images: the exact stages give the same bits tiled or not, g_s
the same image, and memory errors, pixel limits and non-finite images are typed."""
import numpy as np
import pytest

from fastlic.errors import CorruptBitstreamError, OutOfMemoryError, PixelLimitError
from fastlic.runtime.codec import Codec
from fastlic.runtime.tiling import run_tiled, windows


@pytest.mark.parametrize("height,width,tile,halo", [(7, 5, 3, 1), (64, 64, 64, 8), (9, 20, 4, 0)])
def test_windows_cover_every_position_once(height, width, tile, halo):
    owned = np.zeros((height, width), int)
    for win in windows(height, width, tile, halo):
        owned[win.core] += 1
        for c, o, n in zip(win.core, win.outer, (height, width)):
            assert o.start == max(c.start - halo, 0) and o.stop == min(c.stop + halo, n)
            assert c.start % tile == 0
    assert (owned == 1).all()


def test_run_tiled_pastes_each_core_at_its_place():
    x = np.arange(2 * 10 * 14, dtype=np.float32).reshape(1, 2, 10, 14)
    twice = run_tiled(lambda d: {"out": np.repeat(np.repeat(d["x"], 2, -2), 2, -1)},
                      {"x": x}, 2, tile=4, halo=1)
    np.testing.assert_array_equal(twice["out"], np.repeat(np.repeat(x, 2, -2), 2, -1))


@pytest.fixture(scope="module")
def image():
    """A real photo of 200x330: 4x6 tiles of 64 pixels, the last row and column partial."""
    from skimage import data
    return np.ascontiguousarray(data.coffee()[:200, :330])


@pytest.fixture(scope="module")
def codecs(tiny_exact):
    """The same model untiled and in 64-pixel tiles (4 latent positions, one of ẑ): every
    stage sees many tile edges."""
    return Codec.from_model(tiny_exact), Codec.from_model(tiny_exact, tile=64)


def test_exact_stages_give_the_same_bits_in_tiles(codecs, image):
    whole, tiled = codecs
    data = whole.compress(image)
    bs = whole.read_header(data)
    z = whole._decode_z(bs.substreams[0], _geometry(bs), None)
    hyper = whole._hyper(z, None)
    np.testing.assert_array_equal(hyper, tiled._hyper(z, None))
    for a, b in zip(whole._params("anchor", None, hyper=hyper),
                    tiled._params("anchor", None, hyper=hyper)):
        np.testing.assert_array_equal(a, b)
    y_hat = whole.decode_latent(data)
    np.testing.assert_array_equal(y_hat, tiled.decode_latent(data))   # both passes
    anchor = (np.add.outer(np.arange(y_hat.shape[2]), np.arange(y_hat.shape[3])) % 2) == 0
    y_hat_anchor = np.where(anchor, y_hat, 0).astype(np.float32)
    for a, b in zip(whole._params("nonanchor", None, hyper=hyper, y_hat_anchor=y_hat_anchor),
                    tiled._params("nonanchor", None, hyper=hyper, y_hat_anchor=y_hat_anchor)):
        np.testing.assert_array_equal(a, b)


def _geometry(bs):
    from fastlic.runtime.codec import _Latent
    return _Latent(bs.header.height, bs.header.width)


def test_tiled_files_decode_untiled_and_back(codecs, image):
    """Either codec decodes the other's file (the symbols are exact), and tiled g_s gives
    the untiled image: its halo covers g_s's receptive field."""
    whole, tiled = codecs
    for encoder in codecs:
        data = encoder.compress(image)
        a, b = whole.decompress(data), tiled.decompress(data)
        assert a.shape == image.shape
        assert np.abs(a.astype(int) - b).max() <= 1


def test_tiled_encoding_is_close_to_untiled(codecs, image):
    from fastlic.evaluation.metrics import psnr
    whole, tiled = codecs
    plain, tiles = whole.compress(image), tiled.compress(image)
    assert abs(len(plain) - len(tiles)) <= 0.05 * len(plain)
    assert abs(psnr(image, whole.decompress(plain)) - psnr(image, tiled.decompress(tiles))) < 0.2


def test_pixel_limit_is_checked_before_any_work(tiny_exact, image):
    small = Codec.from_model(tiny_exact, max_pixels=100 * 100)
    with pytest.raises(PixelLimitError, match="pixel limit"):
        small.compress(image)
    data = Codec.from_model(tiny_exact).compress(image)
    small.engines = {}   # a decoder that got past the header would fail with KeyError
    with pytest.raises(PixelLimitError):
        small.decompress(data)


class _Failing:
    def __init__(self, error):
        self.error = error

    def run(self, inputs):
        raise self.error


@pytest.mark.parametrize("error", [MemoryError(),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: "
                                                "you tried to allocate 5368709120 bytes.")])
def test_an_allocation_failure_is_typed(tiny_exact, image, error):
    codec = Codec.from_model(tiny_exact)
    codec.engines = {**codec.engines, "g_a": _Failing(error)}
    with pytest.raises(OutOfMemoryError, match="out of memory in g_a"):
        codec.compress(image)


def test_other_runtime_errors_are_not_called_memory(tiny_exact, image):
    codec = Codec.from_model(tiny_exact)
    codec.engines = {**codec.engines, "g_s": _Failing(RuntimeError("shape mismatch"))}
    with pytest.raises(RuntimeError, match="shape mismatch"):
        codec.compress(image)


class _NaN:
    def run(self, inputs):
        y = inputs["y_hat"]
        return {"image_hat": np.full((1, 3, y.shape[2] * 16, y.shape[3] * 16), np.nan,
                                     np.float32)}


def test_a_non_finite_image_is_an_error_not_a_black_image(tiny_exact, image):
    codec = Codec.from_model(tiny_exact)
    data = codec.compress(image)
    codec.engines = {**codec.engines, "g_s": _NaN()}
    with pytest.raises(CorruptBitstreamError, match="non-finite"):
        codec.decompress(data)
