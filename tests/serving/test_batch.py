"""fastlic.serving.batch: results in order and equal to the sequential loop, typed errors
per item, a bounded window over a lazy input, early stop."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from fastlic.errors import BadMagicError, ImageFormatError, UsageError
from fastlic.runtime.codec import Codec
from fastlic.serving.batch import Result, compress_many, decompress_many


@pytest.fixture(scope="module")
def codec(tiny_exact):
    return Codec.from_model(tiny_exact)


@pytest.fixture(scope="module")
def images(photo):
    """Five crops of different sizes: any mix-up of order shows."""
    return [photo[: 64 + 8 * i, : 80 + 8 * i].copy() for i in range(5)]


class CountingCodec:
    """compress returns the image's first value as bytes, and counts calls."""

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    def compress(self, image, **options):
        with self.lock:
            self.calls += 1
        return bytes([int(image.flat[0])])


def test_compress_many_equals_the_sequential_loop_in_order(codec, images):
    results = list(compress_many(codec, images, workers=2))
    assert [r.index for r in results] == list(range(len(images)))
    assert all(r.ok for r in results)
    assert [r.value for r in results] == [codec.compress(img) for img in images]


def test_decompress_many_round_trips_in_order(codec, images):
    datas = [codec.compress(img) for img in images]
    results = list(decompress_many(codec, iter(datas), workers=2, max_in_flight=3))
    for result, data, img in zip(results, datas, images):
        assert result.ok and result.value.shape == img.shape
        np.testing.assert_array_equal(result.value, codec.decompress(data))


def test_a_failed_item_yields_its_typed_error_and_the_rest_go_on(codec, images):
    translucent = np.zeros((32, 32, 4), np.uint8)        # alpha 0: refused unless dropped
    batch = [images[0], translucent, images[1]]
    results = list(compress_many(codec, batch))
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, ImageFormatError) and results[1].value is None
    datas = [results[0].value, b"not a flic file", results[2].value]
    decoded = list(decompress_many(codec, datas))
    assert isinstance(decoded[1].error, BadMagicError)
    assert decoded[0].ok and decoded[2].ok


def test_the_window_bounds_how_far_the_input_is_read_ahead():
    fake, pulled, ahead = CountingCodec(), [], []

    def lazy():
        for i in range(20):
            pulled.append(i)
            yield np.full((2, 2), i, np.uint8)

    for result in compress_many(fake, lazy(), workers=2, max_in_flight=3):
        ahead.append(len(pulled) - result.index)
        assert result.value == bytes([result.index])
    assert max(ahead) <= 3 and len(pulled) == 20


def test_stopping_early_runs_no_more_than_the_window():
    fake = CountingCodec()
    images = (np.full((2, 2), i, np.uint8) for i in range(100))
    results = compress_many(fake, images, workers=2, max_in_flight=4)
    first = next(results)
    results.close()          # joins the pool: no job runs after this
    calls = fake.calls
    assert first == Result(0, b"\x00") and calls <= 4
    assert fake.calls == calls


def test_a_bug_is_raised_not_wrapped():
    class Broken:
        def compress(self, image):
            raise KeyError("a bug")

    with pytest.raises(KeyError):
        list(compress_many(Broken(), [np.zeros((2, 2), np.uint8)]))


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"workers": 2, "max_in_flight": 1}])
def test_bad_arguments_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        compress_many(CountingCodec(), [], **kwargs)
