"""Entropy tables and the grouped symbol coder: exactness, rates, robustness."""
import numpy as np
import pytest
import torch

from fastlic.entropy import PMF_TOTAL, EntropyTables, SymbolCoder, TableSet, build_tables
from fastlic.errors import CorruptBitstreamError, ModelLoadError
from fastlic.model import SCALE_MIN, FastLIC, get_config
from fastlic.model.distributions import likelihood

INT32 = np.iinfo(np.int32)


@pytest.fixture(scope="module")
def tables(tiny_model) -> EntropyTables:
    return build_tables(tiny_model)


def all_sets(tables: EntropyTables) -> dict[str, TableSet]:
    return {**{f"y.{f}": ts for f, ts in tables.y.items()}, "z": tables.z}


def draw(ts: TableSet, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n symbols drawn from the quantized tables themselves (escapes become |v| > K)."""
    rows, width = ts.pmfs.shape
    index = rng.integers(0, rows, n)
    cum = (np.cumsum(ts.pmfs, axis=1) + ts.total * np.arange(rows)[:, None]).ravel()
    entry = np.searchsorted(cum, rng.integers(0, ts.total, n) + ts.total * index, side="right")
    entry -= width * index
    k = ts.radius[index].astype(np.int64)
    escape_value = (k + 1 + rng.geometric(0.3, n)) * rng.choice([-1, 1], n)
    return np.where(entry == 2 * k + 1, escape_value, entry - k).astype(np.int32), index


# ---- tables --------------------------------------------------------------------------
def test_tables_are_leaky_integer_pmfs_summing_to_the_total(tables, tiny_model):
    assert set(tables.y) == {tiny_model.cfg.anchor_family, tiny_model.cfg.nonanchor_family}
    assert len(tables.z.radius) == tiny_model.cfg.hyper_channels
    for name, ts in all_sets(tables).items():
        assert ts.pmfs.dtype == np.int32 and ts.radius.dtype == np.int32, name
        valid = np.arange(ts.pmfs.shape[1]) < 2 * ts.radius[:, None] + 2
        assert np.all(ts.pmfs[valid] >= 1) and np.all(ts.pmfs[~valid] == 0), name
        assert np.all(ts.pmfs.sum(axis=1) == PMF_TOTAL), name
    for ts in tables.y.values():
        assert len(ts.radius) == len(tables.scale_grid)
        assert np.all(np.diff(ts.radius) >= 0)       # wider tables for larger scales


def test_scale_grid_is_log_spaced_from_the_minimum_scale(tables):
    grid = tables.scale_grid
    assert grid.dtype == np.float64 and grid[0] == SCALE_MIN and len(grid) <= 256
    np.testing.assert_allclose(np.diff(np.log(grid)), np.log(grid[1] / grid[0]), rtol=1e-9)


@pytest.mark.parametrize("family", ["gaussian", "laplace", "logistic"])
def test_y_tables_match_the_training_likelihood(family):
    torch.manual_seed(0)
    tables = build_tables(FastLIC(get_config("tiny", anchor_family=family, nonanchor_family=family)))
    assert list(tables.y) == [family]
    ts = tables.y[family]
    for s in (0, 20, 40, 63):
        k = int(ts.radius[s])
        v = torch.arange(-k, k + 1, dtype=torch.float64)
        scale = torch.full_like(v, tables.scale_grid[s])
        expected = likelihood(family, v, scale).numpy()
        got = ts.pmfs[s, :2 * k + 1] / PMF_TOTAL
        np.testing.assert_allclose(got, expected, atol=2e-4 + 0.01 * expected.max())
        assert ts.pmfs[s, 2 * k + 1] / PMF_TOTAL < 1e-3      # escape: tail mass is tiny


def test_z_tables_match_the_learned_prior(tables, tiny_model):
    for c, k in enumerate(tables.z.radius):
        expected = tiny_model.z_prior.pmf(torch.arange(-k, k + 1))[c].detach().numpy()
        got = tables.z.pmfs[c, :2 * k + 1] / PMF_TOTAL
        np.testing.assert_allclose(got, expected, atol=2e-4 + 0.01 * expected.max())


def test_tables_are_deterministic_and_survive_safetensors(tables, tiny_model):
    from safetensors.torch import load, save
    assert build_tables(tiny_model) == tables
    tensors = tables.to_tensors()
    assert all(key.startswith("tables.") for key in tensors)
    shipped = load(save({**tensors, "g_a.0.weight": torch.zeros(2)}))
    restored = EntropyTables.from_tensors(shipped)
    assert restored == tables
    np.testing.assert_array_equal(restored.scale_index(tables.scale_grid), np.arange(len(tables.scale_grid)))


@pytest.mark.parametrize("damage", ["missing", "dtype", "entry", "radius", "rows", "unknown"])
def test_from_tensors_rejects_missing_or_inconsistent_tables(tables, damage):
    tensors = {k: v.clone() for k, v in tables.to_tensors().items()}
    family = next(iter(tables.y))
    if damage == "missing":
        del tensors["tables.z.radius"]
    elif damage == "dtype":
        tensors["tables.z.pmfs"] = tensors["tables.z.pmfs"].long()
    elif damage == "entry":
        tensors[f"tables.y.{family}.pmfs"][3, 0] += 1          # row no longer sums to the total
    elif damage == "radius":
        tensors["tables.z.radius"][0] = 10_000
    elif damage == "rows":
        tensors[f"tables.y.{family}.pmfs"] = tensors[f"tables.y.{family}.pmfs"][:-1]
        tensors[f"tables.y.{family}.radius"] = tensors[f"tables.y.{family}.radius"][:-1]
    else:
        tensors["tables.y.cauchy.pmfs"] = tensors["tables.z.pmfs"]
    with pytest.raises(ModelLoadError):
        EntropyTables.from_tensors(tensors)


def test_scale_index_is_nearest_in_log_domain_monotone_and_clipped(tables):
    grid = tables.scale_grid
    rng = np.random.default_rng(0)
    scale = np.sort(np.exp(rng.uniform(np.log(grid[0]) - 2, np.log(grid[-1]) + 2, 20_000))).astype(np.float32)
    index = tables.scale_index(scale)
    assert index.dtype == np.uint8 and np.all(np.diff(index.astype(int)) >= 0)
    nearest = np.abs(np.log(scale.astype(np.float64))[:, None] - np.log(grid)[None]).argmin(axis=1)
    assert np.mean(index == nearest) > 0.999                # ties differ only at float32 rounding
    assert np.all(np.abs(index.astype(int) - nearest) <= 1)
    edges = np.sqrt(grid[:-1] * grid[1:]).astype(np.float32)
    around = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    np.testing.assert_array_equal(tables.scale_index(around), np.searchsorted(edges, around, side="right"))
    special = np.array([-np.inf, -1.0, -0.0, 0.0, 1e-30, np.inf, 1e30, np.nan], dtype=np.float32)
    assert list(tables.scale_index(special)[:7]) == [0, 0, 0, 0, 0, len(grid) - 1, len(grid) - 1]
    assert tables.scale_index(special)[7] < len(grid)
    assert tables.scale_index(np.ones((2, 3, 4), np.float32)).shape == (2, 3, 4)


# ---- coder ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["y.gaussian", "y.laplace", "z"])
def test_round_trip_including_out_of_range_values(tables, name):
    ts = all_sets(tables)[name]
    rng = np.random.default_rng(1)
    symbols, index = draw(ts, 5000, rng)
    wild = np.array([10**6, -10**6, INT32.max, INT32.min, INT32.max - 1, INT32.min + 1,
                     65_536, -65_537, 1025, -1025], dtype=np.int32)
    symbols[rng.choice(len(symbols), len(wild), replace=False)] = wild
    coder = SymbolCoder(ts)
    for dtype in (np.uint8, np.int64):
        decoded = coder.decode(coder.encode(symbols, index.astype(dtype)), index.astype(dtype))
        assert decoded.dtype == np.int32
        np.testing.assert_array_equal(decoded, symbols)


def test_every_radius_edge_round_trips(tables):
    ts = tables.y["laplace"]
    k = ts.radius.astype(np.int64)
    symbols = np.concatenate([k, -k, k + 1, -k - 1, k + 2, -k - 2, k * 0]).astype(np.int32)
    index = np.tile(np.arange(len(k)), 7)
    coder = SymbolCoder(ts)
    np.testing.assert_array_equal(coder.decode(coder.encode(symbols, index), index), symbols)


def test_empty_input(tables):
    coder = SymbolCoder(tables.z)
    data = coder.encode(np.zeros(0, np.int32), np.zeros(0, np.uint8))
    assert data == b""
    assert coder.decode(data, np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(CorruptBitstreamError):
        coder.decode(b"\x01\x00\x00\x00", np.zeros(0, np.int64))


def test_coded_size_is_close_to_the_table_estimate(tables):
    ts = tables.y["laplace"]
    coder = SymbolCoder(ts)
    symbols, index = draw(ts, 200_000, np.random.default_rng(2))
    coded = 8 * len(coder.encode(symbols, index))
    estimate = coder.estimate_bits(symbols, index)
    assert estimate <= coded <= 1.01 * estimate + 64


def test_bad_arguments_raise_value_error(tables):
    coder = SymbolCoder(tables.z)
    with pytest.raises(ValueError):
        coder.encode(np.zeros(3, np.int32), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        coder.encode(np.zeros(2, np.int32), np.array([0, len(tables.z.radius)]))
    with pytest.raises(ValueError):
        coder.encode(np.array([2**40, 0]), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        coder.decode(b"", np.array([-1]))


def test_damaged_data_raises_corrupt_bitstream_or_returns(tables):
    ts = tables.y["gaussian"]
    coder = SymbolCoder(ts)
    rng = np.random.default_rng(3)
    symbols, index = draw(ts, 400, rng)
    symbols[::50] = rng.integers(INT32.min, INT32.max, 8)
    data = coder.encode(symbols, index)
    raised = 0
    for trial in range(300):
        damaged = bytearray(data)
        if trial % 3 == 0:
            damaged = damaged[:rng.integers(0, len(damaged))]
        elif trial % 3 == 1:
            damaged[rng.integers(len(damaged))] ^= 1 << int(rng.integers(8))
        else:
            damaged += rng.integers(0, 256, 4).astype(np.uint8).tobytes()
        try:
            out = coder.decode(bytes(damaged), index)
        except CorruptBitstreamError as exc:
            assert "\n" not in str(exc)
            raised += 1
        else:
            assert out.dtype == np.int32 and out.shape == symbols.shape
    assert raised > 250                                     # most damage is detected


def test_one_coder_serves_several_threads(tables):
    from concurrent.futures import ThreadPoolExecutor
    ts = tables.y["gaussian"]
    coder = SymbolCoder(ts)
    symbols, index = draw(ts, 20_000, np.random.default_rng(4))

    def round_trip(_):
        return np.array_equal(coder.decode(coder.encode(symbols, index), index), symbols)
    with ThreadPoolExecutor(2) as pool:
        assert all(pool.map(round_trip, range(4)))
