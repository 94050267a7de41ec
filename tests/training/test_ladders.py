"""benchmarks/ladders.py: the pre-shipping comparison of two rate ladders."""
from __future__ import annotations

import shutil

import pytest

from fastlic.modelfile import WEIGHTS_DIR

ladders = pytest.importorskip("benchmarks.ladders")


def test_rungs_are_the_folders_models_in_quality_order(shipped_tiny, tmp_path):
    for q in (2, 1, 3):
        shutil.copy(shipped_tiny, tmp_path / f"q{q}.safetensors")
    assert [p.name for p in ladders.rungs(tmp_path, tmp_path)] == [
        "q1.safetensors", "q2.safetensors", "q3.safetensors"]
    with pytest.raises(SystemExit, match="no q"):
        ladders.rungs(tmp_path / "empty", tmp_path)


def test_the_shipped_ladder_against_itself(kodak_dir, capsys):
    assert ladders.main([str(WEIGHTS_DIR), "--kodak", str(kodak_dir), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "BD-rate (PSNR) of new against old: +0.00 %" in out
    assert out.count("| False |") == 4          # equal, so no rung is better on both
