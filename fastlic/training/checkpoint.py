"""Training checkpoints: write atomically, read back, ship as a runtime model.

A checkpoint is a ``torch.save`` dict::

    model     FastLIC state dict (only the model: what ships)
    opt       Adam state; param group 0 is model.parameters() in order
    step      optimizer steps done
    config    ModelConfig JSON
    args      the TrainArgs (or DistillArgs) of the run, as a dict
    adapters  (distillation only) state dict of the feature adapters, never shipped
    scaler    (fp16 AMP only) GradScaler state
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..model import FastLIC, ModelConfig
from ..model.quant import prepare_for


def save_checkpoint(path: Path, model, opt, step: int, args, **extra) -> None:
    """Write ``path`` through a temporary file, so a reader never sees half a checkpoint."""
    tmp = Path(path).with_suffix(".tmp")
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
             "config": model.cfg.to_json(), "args": dataclasses.asdict(args)}
    state.update({k: v for k, v in extra.items() if v is not None})
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (tensors on CPU); ModelLoadError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise ModelLoadError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or not {"model", "config"} <= ckpt.keys():
        raise ModelLoadError(f"{path} is not a fastlic training checkpoint (no model/config)")
    return ckpt


def _model_of(ckpt: dict) -> FastLIC:
    model = FastLIC(ModelConfig.from_json(ckpt["config"]))
    prepare_for(model, ckpt["model"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def load_trained(path: str | Path) -> FastLIC:
    """A FastLIC (float32, eval mode) from a training checkpoint or a shipped .safetensors."""
    if Path(path).suffix == ".safetensors":
        from ..modelfile import load_model
        return load_model(path)[0]
    return _model_of(load_checkpoint(path))


def ship_checkpoint(path: str | Path, out: str | Path, name: str | None = None, quality: int = 0,
                    half: bool = True) -> Path:
    """Write the model of checkpoint ``path`` as a runtime ``.safetensors``.

    Only ``ckpt["model"]`` is shipped: distillation adapters and optimizer state
    are not. The metadata records the steps trained.
    """
    from ..modelfile import ship_model
    ckpt = load_checkpoint(path)
    model = _model_of(ckpt)
    ship_model(model, out, name=name or f"fastlic-{model.cfg.name}", quality=quality, half=half,
               metadata={"trained_steps": str(ckpt.get("step", ""))})
    return Path(out)


def ship_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastlic train-ship",
                                description="Write a training checkpoint as a shippable model "
                                            "(fp16 weights + entropy tables; adapters dropped).")
    p.add_argument("checkpoint", help="checkpoint.pt of a train or distill run")
    p.add_argument("output", help="OUT.safetensors")
    p.add_argument("--name", help="model name in bitstreams (default: fastlic-<config>)")
    p.add_argument("--quality", type=int, default=0, help="rate point 0..255 in bitstreams")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    args = p.parse_args(argv)
    out = ship_checkpoint(args.checkpoint, args.output, args.name, args.quality, half=not args.fp32)
    print(f"wrote {out}")
    return 0
