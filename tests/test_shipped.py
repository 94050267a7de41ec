"""The shipped default model on real photos: bit-exact, sensible rate and quality."""
import numpy as np
import pytest
import torch
from PIL import Image

from fastlic.evaluation.metrics import psnr
from fastlic.runtime.codec import DEFAULT_WEIGHTS, Codec


@pytest.fixture(scope="module")
def shipped():
    return Codec.load()


def test_shipped_model_round_trips_a_photo(shipped, photo):
    data, recon = shipped.compress(photo, return_reconstruction=True)
    out = shipped.decompress(data)
    np.testing.assert_array_equal(out, recon)
    bpp = 8 * len(data) / (photo.shape[0] * photo.shape[1])
    assert 0.05 < bpp < 2.0
    assert psnr(photo, out) > 24.0        # a trained model, not random weights


def test_shipped_coded_size_matches_its_entropy_estimate(shipped):
    from skimage import data as skdata

    from fastlic.modelfile import load_model
    image = skdata.astronaut()[:256, :256]
    data = shipped.compress(image)
    model = load_model(DEFAULT_WEIGHTS)[0]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = model(x)
    estimate = (out["bits_y"] + out["bits_z"]).item()
    payload = 8 * sum(len(s) for s in shipped.read_header(data).substreams)
    assert abs(payload - estimate) / estimate < 0.03


def test_shipped_model_on_a_kodak_image(shipped, kodak_dir):
    image = np.asarray(Image.open(kodak_dir / "kodim23.png").convert("RGB"))
    data, recon = shipped.compress(image, return_reconstruction=True)
    np.testing.assert_array_equal(shipped.decompress(data), recon)
