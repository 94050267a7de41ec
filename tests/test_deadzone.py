"""benchmarks/deadzone.py changes only the encoder's rounding: files still decode exactly."""
from __future__ import annotations

import numpy as np
import pytest

deadzone = pytest.importorskip("benchmarks.deadzone")


def test_a_deadzone_codes_fewer_bits_and_the_decoder_follows(shipped_tiny, photo):
    plain = deadzone.offset_codec(shipped_tiny, 0.0)
    pulled = deadzone.offset_codec(shipped_tiny, 0.3)
    data, recon = pulled.compress(photo, return_reconstruction=True)
    assert len(data) < len(plain.compress(photo))
    np.testing.assert_array_equal(plain.decompress(data), recon)   # any shipped decoder reads it
    assert plain.decode_latent(data).tolist() != plain.decode_latent(plain.compress(photo)).tolist()


def test_the_shipped_encoder_rounds_to_nearest():
    from fastlic.runtime.codec import Codec
    r = np.array([-1.6, -0.4, 0.49, 0.51, 2.5], dtype=np.float32)
    assert Codec._symbols(r).tolist() == [-2.0, -0.0, 0.0, 1.0, 2.0]
