"""Transposed convolutions as conv + pixel shuffle: the same function as the original."""
import pytest
import torch
from torch import nn

from fastlic.model import FastLIC, get_config
from fastlic.model.subpixel import SubPixelConvTranspose, to_subpixel


@pytest.mark.parametrize("cin,cout,h,w", [(3, 5, 1, 1), (4, 2, 3, 7), (8, 8, 6, 5)])
def test_subpixel_equals_the_transposed_convolution(cin, cout, h, w):
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1).double()
    x = torch.randn(2, cin, h, w, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(SubPixelConvTranspose(deconv)(x), deconv(x), rtol=0, atol=1e-12)


def test_other_transposed_convolutions_are_refused_and_left_alone():
    odd = nn.ConvTranspose2d(3, 3, 3, stride=2, padding=1, output_padding=1)
    with pytest.raises(ValueError, match="only ConvTranspose2d"):
        SubPixelConvTranspose(odd)
    assert isinstance(to_subpixel(nn.Sequential(odd))[0], nn.ConvTranspose2d)


def test_model_copy_keeps_every_stage_and_leaves_the_original(tiny_model):
    fast = to_subpixel(tiny_model)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in fast.modules())
    assert any(isinstance(m, nn.ConvTranspose2d) for m in tiny_model.modules())
    y_hat = torch.randn(1, tiny_model.cfg.latent_channels, 3, 4)
    z_hat = torch.randn(1, tiny_model.cfg.hyper_channels, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(fast.synthesis(y_hat), tiny_model.synthesis(y_hat))
        torch.testing.assert_close(fast.hyper_synthesis(z_hat), tiny_model.hyper_synthesis(z_hat))


def test_teacher_decoder_with_residual_blocks_converts():
    model = FastLIC(get_config("tiny_teacher")).eval()
    y_hat = torch.randn(1, model.cfg.latent_channels, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(to_subpixel(model).synthesis(y_hat), model.synthesis(y_hat))


@pytest.mark.parametrize("kind", ["deconv", "col2im", "depth_to_space"])
def test_exported_shuffles_are_pixel_shuffle_exactly(kind):
    from fastlic.model.subpixel import SHUFFLES
    x = torch.randn(2, 12, 3, 5)
    assert torch.equal(SHUFFLES[kind](x), torch.nn.functional.pixel_shuffle(x, 2))
