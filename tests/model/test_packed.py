"""Checkerboard stages on the phase grids: the reference function where it is used,
zeros where it is not."""
import pytest
import torch

from fastlic.model import FastLIC, get_config
from fastlic.model.layers import checkerboard_mask
from fastlic.model.packed import packed_context_weight, to_packed


def _trained_looking(cfg_name: str, **overrides) -> FastLIC:
    """A random model with non-trivial context taps and biases (init zeroes little)."""
    torch.manual_seed(0)
    model = FastLIC(get_config(cfg_name, **overrides)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("overrides", [{}, {"shared_params": True}])
@pytest.mark.parametrize("h,w", [(4, 4), (4, 8), (8, 12)])
def test_packed_stages_equal_the_reference_at_their_positions(overrides, h, w):
    model = _trained_looking("tiny", **overrides)
    packed = to_packed(model)
    m = model.cfg.latent_channels
    anchor = checkerboard_mask(h, w, anchor=True).double()
    hyper = torch.randn(2, 2 * m, h, w, dtype=torch.float64)
    y_hat_anchor = torch.randn(2, m, h, w, dtype=torch.float64).round() * anchor
    with torch.no_grad():
        for got, want, where in (
                (packed.anchor_params(hyper), model.anchor_params(hyper), anchor),
                (packed.nonanchor_params(hyper, y_hat_anchor),
                 model.nonanchor_params(hyper, y_hat_anchor), 1 - anchor)):
            for g, r in zip(got, want):
                torch.testing.assert_close(g * where, r * where, rtol=0, atol=1e-12)
                assert torch.count_nonzero(g * (1 - where)) == 0


def test_context_taps_map_one_to_one():
    """Each of the 12 live 5x5 taps lands once per (output phase) in the packed kernel."""
    weight = torch.zeros(1, 1, 5, 5)
    live = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy + dx) % 2]
    for n, (dy, dx) in enumerate(live, start=1):
        weight[0, 0, dy + 2, dx + 2] = n
    packed = packed_context_weight(weight)           # (2, 2, 3, 3)
    for phase in range(2):
        values = packed[phase][packed[phase] != 0]
        assert sorted(values.tolist()) == list(range(1, len(live) + 1))


def test_the_original_is_left_alone_and_the_copy_refuses_training(tiny_model):
    packed = to_packed(tiny_model)
    assert type(tiny_model) is FastLIC
    assert "packed_context_weight" not in tiny_model.state_dict()
    assert "packed_context_weight" not in packed.state_dict()   # not part of the weights
    with pytest.raises(TypeError, match="inference copy"):
        packed(torch.zeros(1, 3, 64, 64))


def test_packed_stages_do_half_the_anchor_work_and_less_than_half_the_nonanchor_work():
    from torch.utils.flop_counter import FlopCounterMode
    model = FastLIC(get_config("tiny")).eval()
    packed = to_packed(model)
    m = model.cfg.latent_channels
    hyper, y_hat = torch.randn(1, 2 * m, 8, 12), torch.randn(1, m, 8, 12)

    def flops(fn, *args):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn(*args)
        return counter.get_total_flops()

    assert flops(packed.anchor_params, hyper) * 2 == flops(model.anchor_params, hyper)
    assert flops(packed.nonanchor_params, hyper, y_hat) < 0.5 * flops(model.nonanchor_params,
                                                                       hyper, y_hat)
