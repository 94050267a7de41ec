"""benchmarks/ort_threads.py runs every setup in processes of its own and reports each."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
ROOT = Path(__file__).resolve().parents[1]


def test_ort_threads_reports_every_setup(shipped_tiny, photo, tmp_path):
    png = tmp_path / "p.png"
    Image.fromarray(photo[:64, :96]).save(png)
    env = {"FASTLIC_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.ort_threads", str(png), "--model",
                           str(shipped_tiny), "--rounds", "1", "--repeat", "1", "--threads", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]  # no header
    assert [r.split(" | ")[0] for r in rows] == [
        "| torch (default engines)", "| onnxruntime, a pool per stage (library default)",
        "| onnxruntime, one shared pool (share_thread_pool; the fastlic command)"]
    assert rows[0].rstrip(" |").endswith("1.000")          # torch against itself
    assert "# round 1/1 ort-shared: decode median" in done.stdout


def test_missing_image_is_skipped(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.ort_threads", str(tmp_path / "x.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "skipped" in done.stderr
