"""The fastlic command: round trips through files, typed errors, no partial outputs."""
import numpy as np
import pytest
from PIL import Image

from fastlic.cli import main
from fastlic.modelfile import ship_model


def test_compress_decompress_info(weights, png, tmp_path, capsys):
    assert main(["compress", str(png), "--model", weights]) == 0
    flic = png.with_suffix(".flic")
    assert flic.is_file()
    out = tmp_path / "out" / "photo.png"
    assert main(["decompress", str(flic), "--out-dir", str(out.parent), "--model", weights]) == 0
    decoded = np.asarray(Image.open(out))
    assert decoded.shape == np.asarray(Image.open(png)).shape
    assert main(["info", str(flic)]) == 0
    assert "fastlic-tiny-test" in capsys.readouterr().out


def test_compress_checksum_and_info(weights, png, tmp_path, capsys):
    from fastlic.runtime.bitstream import peek_header
    plain, checked = tmp_path / "plain.flic", tmp_path / "checked.flic"
    assert main(["compress", str(png), "-o", str(plain), "--model", weights, "--no-checksum"]) == 0
    assert main(["compress", str(png), "-o", str(checked), "--model", weights]) == 0
    crc = peek_header(checked.read_bytes()).recon_crc
    assert crc is not None and peek_header(plain.read_bytes()).recon_crc is None
    capsys.readouterr()
    assert main(["info", str(plain), str(checked)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("reconstruction checksum none")
    assert lines[1].endswith(f"reconstruction checksum {crc:#010x}")
    out = tmp_path / "checked.png"
    assert main(["decompress", str(checked), "-o", str(out), "--model", weights]) == 0
    assert np.asarray(Image.open(out)).shape == np.asarray(Image.open(png)).shape


def test_a_differing_reconstruction_decodes_with_a_note_and_strict_refuses_it(weights, png,
                                                                              tmp_path, capsys):
    """A header CRC the decoded image does not match (as after decoding on another backend):
    the image is written with a note on stderr; --strict is a typed error and no output."""
    import dataclasses
    from fastlic.errors import ReconstructionMismatchError
    from fastlic.runtime.bitstream import pack, unpack
    good = tmp_path / "good.flic"
    assert main(["compress", str(png), "-o", str(good), "--model", weights]) == 0
    bs = unpack(good.read_bytes())
    other = dataclasses.replace(bs.header, recon_crc=bs.header.recon_crc ^ 1)
    bad = tmp_path / "bad.flic"
    bad.write_bytes(pack(dataclasses.replace(bs, header=other)))
    out = tmp_path / "bad.png"
    capsys.readouterr()
    strict = tmp_path / "strict.png"
    assert main(["decompress", str(bad), "-o", str(strict), "--model", weights, "--strict"]) == \
        ReconstructionMismatchError.exit_code
    assert "--strict" in capsys.readouterr().err and not strict.exists()
    assert main(["decompress", str(bad), "-o", str(out), "--model", weights]) == 0
    assert "differs from the encoder's reconstruction" in capsys.readouterr().err
    expected = tmp_path / "good.png"
    assert main(["decompress", str(good), "-o", str(expected), "--model", weights,
                 "--strict"]) == 0
    assert "differs" not in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(expected)))


def test_shipped_fp16_model_round_trips_bit_exactly(weights, photo):
    from fastlic.runtime.codec import Codec
    codec = Codec.load(weights)
    data, recon = codec.compress(photo, return_reconstruction=True)
    np.testing.assert_array_equal(Codec.load(weights).decompress(data), recon)


def test_many_files_and_greyscale(weights, tmp_path, photo):
    paths = []
    for i, image in enumerate([photo, photo[:, :, 0], photo[:17, :5]]):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(image).save(paths[-1])
    assert main(["compress", *map(str, paths), "--out-dir", str(tmp_path / "c"), "--model", weights]) == 0
    flics = sorted((tmp_path / "c").glob("*.flic"))
    assert main(["decompress", *map(str, flics), "--out-dir", str(tmp_path / "d"), "--model", weights]) == 0
    grey = np.asarray(Image.open(tmp_path / "d" / "im1.png"))
    assert grey.ndim == 2


def test_corrupt_input_exits_non_zero_without_output(weights, png, tmp_path, capsys):
    main(["compress", str(png), "--model", weights])
    flic = png.with_suffix(".flic")
    data = bytearray(flic.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.flic"
    bad.write_bytes(bytes(data))
    code = main(["decompress", str(bad), "--model", weights])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("fastlic: error:") and err.count("\n") == 1
    assert not bad.with_suffix(".png").exists()
    assert not list(tmp_path.glob(".*.part"))


def test_wrong_model_and_odd_images_are_typed_errors(weights, png, tmp_path, capsys, tiny_model):
    import copy

    import torch
    main(["compress", str(png), "--model", weights])
    other = tmp_path / "other.safetensors"
    drifted = copy.deepcopy(tiny_model)
    with torch.no_grad():
        drifted.g_s.out.bias.add_(0.1)
    ship_model(drifted, other, name="fastlic-tiny-test", quality=1)
    out = tmp_path / "never.png"
    assert main(["decompress", str(png.with_suffix(".flic")), "-o", str(out), "--model", str(other)]) == 3
    assert not out.exists()
    assert "decode with model" in capsys.readouterr().err
    rgba = tmp_path / "alpha.png"
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(rgba)
    assert main(["compress", str(rgba), "--model", weights]) == 4
    deep = tmp_path / "deep.png"
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(deep)
    assert main(["compress", str(deep), "--model", weights]) == 4
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert main(["compress", str(junk), "--model", weights]) == 4
    assert "Traceback" not in capsys.readouterr().err


def test_existing_output_is_not_overwritten(weights, png, capsys):
    from fastlic.errors import OutputError
    main(["compress", str(png), "--model", weights])
    before = png.with_suffix(".flic").read_bytes()
    assert main(["compress", str(png), "--model", weights]) == OutputError.exit_code
    assert "--force" in capsys.readouterr().err
    assert png.with_suffix(".flic").read_bytes() == before


def test_missing_model_is_a_typed_error(png, tmp_path, capsys):
    assert main(["compress", str(png), "--model", str(tmp_path / "none.safetensors")]) == 5
    assert "not found" in capsys.readouterr().err


def test_shipping_the_same_model_twice_gives_the_same_file(tiny_model, tmp_path):
    """The file hash is the model identity in bitstreams: it must not depend on dict order."""
    from fastlic.modelfile import file_hash
    paths = [tmp_path / f"m{i}.safetensors" for i in range(3)]
    for p in paths:
        ship_model(tiny_model, p, name="fastlic-tiny-test", quality=1, metadata={"a": "1", "b": "2"})
    assert len({file_hash(p) for p in paths}) == 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_demo_round_trips_the_photos_bit_exactly(dtype, capsys):
    """The README's main job: the shipped model on scikit-image's photos."""
    assert main(["demo", "--dtype", dtype]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model fastlic-") and (f"dtype {dtype}" in out[0]) == (dtype != "float32")
    rows = out[2:]
    assert len(rows) == 5 and all(row.endswith("  yes") for row in rows)
    psnrs = [float(row.split()[3]) for row in rows]
    assert all(25 < p < 40 for p in psnrs), psnrs
