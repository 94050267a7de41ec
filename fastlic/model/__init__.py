"""PyTorch modules of the fastlic codec."""
from .codec import SCALE_MIN, STRIDE, FastLIC
from .config import CONFIGS, ModelConfig, get_config
from .distributions import FAMILIES

__all__ = ["FastLIC", "ModelConfig", "CONFIGS", "get_config", "FAMILIES", "SCALE_MIN", "STRIDE"]
