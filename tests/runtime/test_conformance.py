"""The committed conformance files (tests/conformance, written by benchmarks/conformance.py)
decode on every backend here to the recorded ŷ, bit for bit; a GPU session runs this
file on CUDA too (benchmarks/gpu_check.sh)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastlic.errors import UnsupportedVersionError
from fastlic.runtime.bitstream import unpack
from fastlic.runtime.codec import Codec

DIR = Path(__file__).resolve().parents[1] / "conformance"
EXPECTED = json.loads((DIR / "expected.json").read_text())
SETUPS = ["torch 1 thread", "torch 3 threads", "torch bfloat16", "onnxruntime"]
if torch.cuda.is_available():
    SETUPS += ["cuda float32", "cuda float16", "cuda bfloat16", "cuda float32 graphs"]


def _digest(y_hat: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(y_hat, dtype=np.float32).tobytes()).hexdigest()


def _codec(setup: str, quality: int, cache) -> Codec:
    if setup.startswith("torch"):
        return Codec.load(quality=quality, dtype="bfloat16" if "bfloat16" in setup else "float32")
    if setup == "onnxruntime":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
        return Codec.load(quality=quality, backend="onnxruntime", cache_dir=cache, threads=2)
    dtype = setup.split()[1]
    return Codec.load(quality=quality, device="cuda", dtype=dtype,
                      cuda_graphs=setup.endswith("graphs"))


@pytest.mark.parametrize("setup", SETUPS)
def test_conformance_files_decode_to_the_recorded_latent(setup, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "conformance-cache"
    saved = torch.get_num_threads()
    torch.set_num_threads(1 if setup == "torch 1 thread" else 3 if "3" in setup else saved)
    try:
        for file, want in sorted(EXPECTED.items()):
            if setup == "onnxruntime" and want["quality"] != 3:
                continue   # one export (the default rung) keeps CI short; the matrix has all
            data = (DIR / file).read_bytes()
            codec = _codec(setup, want["quality"], cache)
            assert codec.info.weights_hash.hex() == want["weights"]
            assert _digest(codec.decode_latent(data)) == want["y_hat_sha256"], (setup, file)
            image = codec.decompress(data)
            assert list(image.shape) == want["shape"]
    finally:
        torch.set_num_threads(saved)


def test_a_version_1_file_is_refused_with_a_message_naming_the_version():
    data = bytearray((DIR / "astronaut_q1.flic").read_bytes())
    data[4] = 1
    with pytest.raises(UnsupportedVersionError, match="version 1 is not supported.*re-encode"):
        unpack(bytes(data))
