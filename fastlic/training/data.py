"""Random crops from an image folder, held in memory as uint8 arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: str | Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


class CropSampler:
    """Holds every training image in RAM; large images also at half size.

    ``batch(n)`` returns (n, 3, crop, crop) float32 in [0, 1] with random flips.
    """

    def __init__(self, folder: str | Path, crop: int = 128, seed: int = 0):
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        self.images: list[np.ndarray] = []
        for path in list_images(folder):
            im = Image.open(path).convert("RGB")
            if min(im.size) >= crop:
                self.images.append(np.asarray(im))
            if min(im.size) >= 2 * crop + 200:
                half = im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
                self.images.append(np.asarray(half))
        if not self.images:
            raise ValueError(f"no image in {folder} is at least {crop} px on its short side")

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(n):
            im = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(im.shape[0] - self.crop + 1)
            x = self.rng.integers(im.shape[1] - self.crop + 1)
            c = im[y:y + self.crop, x:x + self.crop]
            if self.rng.random() < 0.5:
                c = c[:, ::-1]
            if self.rng.random() < 0.5:
                c = c[::-1]
            out[i] = c
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
