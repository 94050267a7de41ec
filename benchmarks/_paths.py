"""Where the benchmarks find the shared data by default: ``../shared/data`` beside the
checkout (see its README). Every script also takes the folder as an argument."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
KODAK = SHARED_DATA / "kodak"
TRAIN = SHARED_DATA / "train"
