"""The network: deformable conv against references, checkerboard context, configs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastlic.model import FastLIC, get_config
from fastlic.model.deform import ModulatedDeformConv, deform_conv2d, deform_conv2d_reference
from fastlic.model.layers import CheckerboardContext, checkerboard_mask


def test_deform_conv_at_zero_offset_is_a_plain_conv():
    torch.manual_seed(0)
    layer = ModulatedDeformConv(5, 7)
    x = torch.randn(2, 5, 9, 11)
    offset, mask = layer.offsets_and_mask(x)
    assert torch.all(offset == 0) and torch.all(mask == 1)
    expected = F.conv2d(x, layer.weight, layer.bias, padding=1)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3, 6, 7), (2, 2, 1, 1), (1, 4, 5, 3)])
def test_deform_conv_matches_direct_bilinear_sampling(shape):
    torch.manual_seed(1)
    b, c, h, w = shape
    x = torch.randn(shape)
    offset = 3 * torch.randn(b, 18, h, w)   # reaches well outside the image
    mask = torch.rand(b, 9, h, w)
    weight, bias = torch.randn(4, c, 3, 3), torch.randn(4)
    got = deform_conv2d(x, offset, mask, weight, bias).double()
    torch.testing.assert_close(got, deform_conv2d_reference(x, offset, mask, weight, bias),
                               atol=1e-4, rtol=1e-4)


def test_checkerboard_context_reads_only_anchors():
    torch.manual_seed(2)
    ctx = CheckerboardContext(3, 4)
    anchors = checkerboard_mask(8, 8, anchor=True)
    x = torch.randn(1, 3, 8, 8)
    base = ctx(x * anchors)
    poked = x.clone()
    nonanchor = ~anchors[0, 0].bool()
    poked[..., nonanchor] += 100.0                     # change only non-anchor values
    out = ctx(poked * anchors)
    torch.testing.assert_close(out[..., nonanchor], base[..., nonanchor])
    # and the output at a non-anchor does depend on neighbouring anchors
    poked = x.clone()
    poked[..., 4, 4] += 100.0                          # (4, 4) is an anchor, next to (4, 5)
    assert not torch.allclose(ctx(poked * anchors)[..., 4, 5], base[..., 4, 5])


def _dec_macs(cfg, size=256):
    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            macs += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
        elif isinstance(mod, torch.nn.ConvTranspose2d):
            macs += inp[0].numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
    model = FastLIC(cfg)
    handles = [m.register_forward_hook(hook) for m in model.g_s.modules()]
    with torch.no_grad():
        model.synthesis(torch.zeros(1, cfg.latent_channels, size // 16, size // 16))
    for h in handles:
        h.remove()
    return macs


def test_student_decoder_is_at_most_half_the_teacher():
    assert _dec_macs(get_config("student")) <= 0.5 * _dec_macs(get_config("teacher"))


def test_forward_shapes_and_rate(tiny_model):
    x = torch.rand(2, 3, 64, 128)
    out = tiny_model(x)
    assert out["x_hat"].shape == x.shape
    assert out["y"].shape == (2, tiny_model.cfg.latent_channels, 4, 8)
    assert torch.all(out["bits_y"] > 0) and torch.all(out["bits_z"] > 0)


def test_training_step_reduces_loss():
    from fastlic.training.loop import rd_loss
    torch.manual_seed(3)
    model = FastLIC(get_config("tiny")).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 64, 64)
    losses = []
    for _ in range(15):
        loss, _ = rd_loss(model(x), x, 0.01, 0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < losses[0]


def test_unknown_family_or_config_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        get_config("tiny", anchor_family="cauchy")
    with pytest.raises(ValueError, match="choose one of"):
        get_config("huge")
