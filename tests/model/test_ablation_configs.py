"""The ablation variants of the model (technique 1 and 2 switched off), the packed
context kernel in weight files, and starting an ablation from a trained model."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fastlic.model import FastLIC, get_config
from fastlic.modelfile import load_model, save_model
from fastlic.runtime.codec import Codec
from fastlic.training.loop import Objective, TrainArgs, load_matching


def test_the_shared_network_ablation_has_no_exact_path_and_the_runtime_says_so(photo):
    from fastlic.errors import ModelLoadError
    model = FastLIC(get_config("tiny", shared_params=True)).eval()
    with pytest.raises(ModelLoadError, match="separate anchor and non-anchor"):
        Codec.from_model(model)


@pytest.mark.parametrize("change", [{"deformable": False}])
def test_ablation_variant_round_trips_through_the_runtime(change, photo):
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny", **change)).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(40.0)
    codec = Codec.from_model(model, name="fastlic-tiny-ablation")
    data, recon = codec.compress(photo[:96, :128], return_reconstruction=True)
    np.testing.assert_array_equal(codec.decompress(data), recon)


def test_plain_block_keeps_the_deformable_slot_names():
    deform = set(FastLIC(get_config("tiny")).g_a[4].state_dict())
    plain = set(FastLIC(get_config("tiny", deformable=False)).g_a[4].state_dict())
    assert plain == {"deform.weight", "deform.bias", "conv.weight", "conv.bias"}
    assert deform - plain == {"deform.offset_mask.weight", "deform.offset_mask.bias"}


def test_shared_network_has_no_anchor_net_and_learns_from_the_anchor_rate():
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny", shared_params=True))
    assert not any(k.startswith("anchor_net.") for k in model.state_dict())
    hyper = torch.randn(1, 2 * model.cfg.latent_channels, 4, 5)
    scale, mean = model.anchor_params(hyper)
    (scale.sum() + mean.sum()).backward()   # anchors alone train the one shared network
    grads = [p.grad for p in model.nonanchor_net.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_weight_file_stores_only_the_live_context_taps(tiny_model, tmp_path):
    model = FastLIC(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():   # taps the mask hides must not matter, nor be stored
        model.context.weight.add_(1.0)
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    with safe_open(str(path), framework="pt") as f:
        assert "context.weight" not in f.keys()
        assert f.get_tensor("context.weight_live_taps").shape[-1] == 12
    loaded = load_model(path)[0]
    y = torch.randn(1, model.cfg.latent_channels, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded.context(y), model.context(y), rtol=0, atol=0)


def test_files_with_the_full_context_kernel_still_load(tiny_model, tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path),
              metadata={"fastlic": json.dumps({"config": tiny_model.cfg.to_json()})})
    loaded = load_model(path)[0]
    torch.testing.assert_close(loaded.context.weight, tiny_model.context.weight)


def test_ablation_flags_start_from_a_trained_model(tiny_model, tmp_path):
    path = tmp_path / "trained.safetensors"
    save_model(tiny_model, path)
    args = TrainArgs(data="", out="", init=str(path), no_deformable=True, shared_params=True,
                     anchor_family="gaussian", nonanchor_family="gaussian")
    objective = Objective(args)
    cfg = objective.config()
    assert cfg == dataclasses.replace(tiny_model.cfg, deformable=False, shared_params=True,
                                      anchor_family="gaussian", nonanchor_family="gaussian")
    model = FastLIC(cfg)
    objective.init(model)
    source = load_model(path)[0].state_dict()
    for name, tensor in model.state_dict().items():   # every tensor exists in the source
        torch.testing.assert_close(tensor, source[name])
    assert Objective(TrainArgs(data="", out="", init=str(path))).config() == tiny_model.cfg


def test_load_matching_reports_what_it_could_not_copy(tiny_model):
    model = FastLIC(get_config("tiny", dec_channels=6))
    copied, fresh = load_matching(model, tiny_model.state_dict())
    assert fresh and all(k.startswith("g_s.") for k in fresh)
    assert not any(k.startswith("g_s.stages.0.0") for k in copied)
