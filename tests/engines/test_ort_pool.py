"""onnxruntime's process-wide thread pool: each case runs in a fresh Python process,
because once the pool exists onnxruntime binds every later session of the process."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, tmp_path: Path, export: Path) -> str:
    script = tmp_path / "case.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run([sys.executable, str(script), str(export)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


HEAD = """
import sys
import numpy as np
import onnxruntime as ort
from skimage import data
from fastlic.runtime.codec import Codec
from fastlic.engines.onnxruntime import engine as oe
export = sys.argv[1]
image = np.ascontiguousarray(data.astronaut()[:96, :160])
seen = []
real = ort.InferenceSession
def recording(path, options, **kwargs):
    seen.append(options.use_per_session_threads)
    return real(path, options, **kwargs)
ort.InferenceSession = recording
"""


def test_shared_pool_runs_every_stage_and_decodes_bit_exactly(tiny_export, tmp_path):
    out = _run(HEAD + """
before = Codec.load(backend="onnxruntime", model_dir=export, threads=1)
assert set(seen) == {True} and oe.shared_pool_threads() is None   # own pools by default
assert oe.share_thread_pool(1) == 1 and oe.share_thread_pool(2) == 1   # created once
seen.clear()
codec = Codec.load(backend="onnxruntime", model_dir=export, threads=2, spinning=True)
# six stages, and g_a's and g_s's blocked graphs (from the cache the first load filled)
assert len(seen) == 8 and set(seen) == {False}, seen      # threads/spinning: the pool's
data, recon = codec.compress(image, return_reconstruction=True)
np.testing.assert_array_equal(codec.decompress(data), recon)
np.testing.assert_array_equal(before.decompress(data), recon)   # sessions made before still run
print("ok")
""", tmp_path, tiny_export)
    assert out.strip() == "ok"


def test_a_pool_created_outside_fastlic_is_joined(tiny_export, tmp_path):
    out = _run(HEAD + """
ort.set_global_thread_pool_sizes(1, 1)             # the embedding service's own pool
codec = Codec.load(backend="onnxruntime", model_dir=export, threads=1)
assert oe.shared_pool_threads() == -1 and seen[-1] is False
data, recon = codec.compress(image, return_reconstruction=True)
np.testing.assert_array_equal(codec.decompress(data), recon)
print("ok")
""", tmp_path, tiny_export)
    assert out.strip().splitlines()[-1] == "ok"   # after onnxruntime's printed EP Error


def test_the_cli_shares_the_pool_for_onnxruntime_only(monkeypatch, tiny_export, photo, tmp_path):
    import fastlic.cli.options
    from fastlic.cli import main
    from PIL import Image
    calls = []
    monkeypatch.setattr(fastlic.cli.options, "share_onnxruntime_pool", calls.append)
    png = tmp_path / "p.png"
    Image.fromarray(photo).save(png)
    model = ["--model-dir", str(tiny_export)]
    assert main(["compress", str(png), "-o", str(tmp_path / "t.flic"), *model]) == 0
    assert calls == []
    assert main(["compress", str(png), "-o", str(tmp_path / "o.flic"), *model,
                     "--backend", "onnxruntime", "--threads", "1"]) == 0
    assert calls == [1]
