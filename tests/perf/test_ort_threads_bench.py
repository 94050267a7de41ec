"""benchmarks/ort_threads.py runs every setup in processes of its own and reports each."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
ROOT = Path(__file__).resolve().parents[2]


def _bench(shipped_tiny, photo, tmp_path, *args: str) -> str:
    """Run the benchmark on a small crop of ``photo`` with the tiny model; its stdout."""
    png = tmp_path / "p.png"
    Image.fromarray(photo[:64, :96]).save(png)
    env = {"FASTLIC_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.ort_threads", str(png), "--model",
                           str(shipped_tiny), "--threads", "1", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_ort_threads_reports_every_setup(shipped_tiny, photo, tmp_path):
    stdout = _bench(shipped_tiny, photo, tmp_path, "--rounds", "1", "--repeat", "1")
    rows = [line for line in stdout.splitlines() if line.startswith("| ")][1:]  # no header
    assert [r.split(" | ")[0] for r in rows] == [
        "| torch (default engines)", "| onnxruntime, a pool per stage (library default)",
        "| onnxruntime, one shared pool (share_thread_pool; the fastlic command)"]
    assert rows[0].rstrip(" |").endswith("1.000")          # torch against itself
    assert "# round 1/1 ort-shared: decode median" in stdout


def test_missing_image_is_skipped(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.ort_threads", str(tmp_path / "x.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "skipped" in done.stderr


def test_paired_mode_pairs_every_setup_with_torch(shipped_tiny, photo, tmp_path):
    stdout = _bench(shipped_tiny, photo, tmp_path, "--paired", "4", "--pause", "0")
    rows = [line.split(" | ") for line in stdout.splitlines() if line.startswith("| ")][1:]
    assert [r[0] for r in rows] == [
        "| torch (default engines)", "| onnxruntime, a pool per stage (library default)",
        "| onnxruntime, one shared pool (share_thread_pool; the fastlic command)"]
    assert rows[0][2:] == ["1.000", "1.000–1.000", "0/4 |"]   # torch against itself
    assert all(r[4].endswith("/4 |") for r in rows)


def test_paired_stats_ratios_are_per_turn():
    from benchmarks.ort_threads import paired_stats
    # the machine slows down 3x over the run: per-turn ratios stay 0.9, medians do not
    torch_ms = [100.0, 100.0, 300.0, 300.0, 300.0]
    stats = paired_stats({"torch": torch_ms, "ort": [0.9 * t for t in torch_ms]})
    assert stats["ort"]["ratio"] == pytest.approx(0.9)
    assert stats["ort"]["low"] == pytest.approx(0.9) and stats["ort"]["high"] == pytest.approx(0.9)
    assert stats["ort"]["faster"] == 1.0 and stats["torch"]["faster"] == 0.0
    assert stats["ort"]["median_ms"] == pytest.approx(270.0)
