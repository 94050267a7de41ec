"""PyTorch modules of the fastlic codec."""
from ..stages import STRIDE
from .codec import FastLIC
from .config import CONFIGS, ModelConfig, get_config
from .distributions import FAMILIES, SCALE_MIN

__all__ = ["FastLIC", "ModelConfig", "CONFIGS", "get_config", "FAMILIES", "SCALE_MIN", "STRIDE"]
