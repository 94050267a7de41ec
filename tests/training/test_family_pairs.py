"""fastlic.training.families: rate oracle against FastLIC.forward, fine-tuning, checkpoint state."""
from __future__ import annotations

import torch

from fastlic.model import FastLIC, get_config
from fastlic.training.families import (HEADS, encode_latents, fine_tune, head_free_optimizer_state,
                                       measure, rate_y, with_families)


def _images(n: int = 2, size: int = 64) -> torch.Tensor:
    """Smooth random images (n, 3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(1)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)


def test_eval_rate_matches_forward(tiny_model):
    x = _images()
    lat = encode_latents(tiny_model, [x])
    bits_a, bits_n = rate_y(tiny_model, lat.y[0], lat.hyper[0])
    with torch.no_grad():
        out = tiny_model.eval()(x)
    torch.testing.assert_close(bits_a + bits_n, out["bits_y"], rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(lat.bits_z, out["bits_z"])
    r = measure(tiny_model, lat)
    expected = ((out["bits_y"] + out["bits_z"]) / (64 * 64)).mean().item()
    assert abs(r["total"] - expected) < 1e-4


def test_with_families_copies_and_freezes(tiny_model):
    m = with_families(tiny_model, "logistic", "gaussian")
    assert (m.cfg.anchor_family, m.cfg.nonanchor_family) == ("logistic", "gaussian")
    assert tiny_model.cfg.anchor_family == "gaussian"
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == set(HEADS)
    assert m.anchor_net[0].weight.data_ptr() != tiny_model.anchor_net[0].weight.data_ptr()


def test_fine_tune_lowers_rate_and_leaves_transforms(tiny_model):
    lat = encode_latents(tiny_model, [_images(4)])
    m = with_families(tiny_model, "laplace", "logistic")
    before = measure(m, lat)["total"]
    g_a = [p.clone() for p in m.g_a.parameters()]
    fine_tune(m, lat, steps=60, batch=4, lr=1e-2, seed=0)
    assert measure(m, lat)["total"] < before
    assert all(torch.equal(a, b) for a, b in zip(g_a, m.g_a.parameters()))


def test_head_free_optimizer_state_loads():
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny"))
    opt = torch.optim.Adam(model.parameters())
    model(_images(1)).get("bits_y").sum().backward()
    opt.step()
    state = head_free_optimizer_state(opt.state_dict(), model)
    names = [n for n, _ in model.named_parameters()]
    kept = {names[i].split(".")[0] for i in state["state"]}
    assert kept and not kept & set(HEADS)
    torch.optim.Adam(model.parameters()).load_state_dict(state)
