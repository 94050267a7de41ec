"""The shipped rate ladder: its files, its order, and picking a model by quality."""
import numpy as np
import pytest
from PIL import Image

from fastlic.cli import main
from fastlic.errors import UsageError
from fastlic.evaluation.metrics import psnr
from fastlic.modelfile import read_metadata
from fastlic.runtime.codec import Codec
from fastlic.modelfile import DEFAULT_QUALITY, shipped_ladder, shipped_weights

LADDER_BUDGET = 40_000_000   # bytes, all shipped weights together (float + exact.* integers)


def test_at_least_four_qualities_within_the_size_budget():
    ladder = shipped_ladder()
    assert len(ladder) >= 4 and DEFAULT_QUALITY in ladder
    assert sum(p.stat().st_size for p in ladder.values()) <= LADDER_BUDGET
    for quality, path in ladder.items():
        meta = read_metadata(path)
        assert int(meta["quality"]) == quality and meta["name"].endswith(f"-q{quality}")


def test_higher_quality_spends_more_bits_for_a_better_image():
    from skimage import data as skdata
    image = skdata.astronaut()[:192, :256]
    points = []
    for quality in shipped_ladder():
        codec = Codec.load(quality=quality)
        data = codec.compress(image)
        points.append((len(data), psnr(image, codec.decompress(data))))
    sizes, quality_db = zip(*points)
    assert list(sizes) == sorted(sizes) and list(quality_db) == sorted(quality_db), points


def test_decompress_picks_the_model_named_in_each_file(tmp_path, photo):
    low, high = min(shipped_ladder()), max(shipped_ladder())
    png = tmp_path / "p.png"
    Image.fromarray(photo).save(png)
    files = []
    for q in (low, high):
        files.append(tmp_path / f"q{q}.flic")
        assert main(["compress", str(png), "-q", str(q), "-o", str(files[-1])]) == 0
    assert files[0].stat().st_size < files[1].stat().st_size
    out = tmp_path / "out"
    assert main(["decompress", *map(str, files), "--out-dir", str(out)]) == 0
    for q, f in zip((low, high), files):
        expected = Codec.load(quality=q).decompress(f.read_bytes())
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{f.stem}.png")), expected)


def test_unknown_quality_and_unshipped_models_are_typed_errors(tmp_path, photo, shipped_tiny,
                                                               capsys):
    png = tmp_path / "p.png"
    Image.fromarray(photo).save(png)
    assert main(["compress", str(png), "-q", "99"]) == 2
    assert "quality 99 is not shipped" in capsys.readouterr().err
    assert not png.with_suffix(".flic").exists()
    assert main(["compress", str(png), "-q", "1", "--model", str(shipped_tiny)]) == 2
    assert "do not combine it with" in capsys.readouterr().err
    assert main(["compress", str(png), "--model", str(shipped_tiny)]) == 0
    out = tmp_path / "never.png"
    assert main(["decompress", str(png.with_suffix(".flic")), "-o", str(out)]) == 3
    assert "does not ship" in capsys.readouterr().err and not out.exists()
    with pytest.raises(UsageError, match="not shipped"):
        shipped_weights(99)
