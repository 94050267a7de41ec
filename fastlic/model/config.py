"""Model configurations: teacher, student (and its slimmer pass-3 decoder), the
CPU-trainable small one, and tiny ones for tests."""
from __future__ import annotations

import dataclasses
import json

from .distributions import FAMILIES


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Channel widths and probability models of one fastlic model.

    enc_channels: width of the analysis transform g_a (N).
    latent_channels: channels of y (M); L1 sparsity zeroes whole ones.
    hyper_channels: width of h_a / h_s and channels of z.
    dec_channels, dec_blocks: width of g_s and residual blocks per upsampling stage;
        the student slims these (distillation technique 3).
    anchor_family, nonanchor_family: the two probability models of the improved
        checkerboard context model (technique 2).
    deformable: False replaces the deformable convolution of g_a's residual module
        by a plain 3x3 convolution (ablation of technique 1).
    shared_params: True uses one parameter network for both passes, the anchors
        reading the context convolution of an all-zero latent (its bias alone), like
        He et al.'s checkerboard model (ablation of technique 2's separate networks).
    """

    name: str
    enc_channels: int
    latent_channels: int
    hyper_channels: int
    dec_channels: int
    dec_blocks: int = 0
    anchor_family: str = "gaussian"
    nonanchor_family: str = "laplace"
    deformable: bool = True
    shared_params: bool = False

    def __post_init__(self):
        for fam in (self.anchor_family, self.nonanchor_family):
            if fam not in FAMILIES:
                raise ValueError(f"unknown distribution family {fam!r}; choose one of {FAMILIES}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls(**json.loads(text))


CONFIGS = {
    "teacher": ModelConfig("teacher", 128, 192, 128, 128, dec_blocks=1),
    "student": ModelConfig("student", 128, 192, 128, 64, dec_blocks=0),
    "small": ModelConfig("small", 64, 128, 64, 64, dec_blocks=0),
    # The CPU distillation experiment: small's encoder and entropy model, half its decoder.
    "small_slim": ModelConfig("small_slim", 64, 128, 64, 32, dec_blocks=0),
    # Distillation pass 3: the student's decoder at 40 channels, 0.44x its MACs.
    "student_slim": ModelConfig("student_slim", 128, 192, 128, 40, dec_blocks=0),
    "tiny": ModelConfig("tiny", 12, 16, 8, 12, dec_blocks=0),
    # Tests of the three distillation passes: same shape relations, tiny widths.
    "tiny_teacher": ModelConfig("tiny_teacher", 12, 16, 8, 16, dec_blocks=1),
    "tiny_student": ModelConfig("tiny_student", 12, 16, 8, 8, dec_blocks=0),
    "tiny_student_slim": ModelConfig("tiny_student_slim", 12, 16, 8, 4, dec_blocks=0),
}


def get_config(name: str, **overrides) -> ModelConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(CONFIGS)}")
    return dataclasses.replace(CONFIGS[name], **overrides)
