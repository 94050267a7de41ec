"""The package's layers: no import cycles (function-local imports counted), engines never
import export or runtime, and the CPU path works without onnx, onnxruntime and TensorRT."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastlic"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(module: str, path: Path, node, known) -> set[str]:
    """The fastlic modules one import statement loads (a package's own ancestors aside:
    a module is always inside them)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = (".".join(package[:len(package) - node.level + 1] + [node.module] if node.module
                         else package[:len(package) - node.level + 1])
                if node.level else node.module)
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    return {n for n in names if n in known and not module.startswith(n + ".") and n != module}


def import_graph() -> dict[str, set[str]]:
    """Module -> the fastlic modules it imports anywhere in its file."""
    known = _modules()
    return {m: set().union(*(_targets(m, p, node, known) for node in ast.walk(ast.parse(
                p.read_text())) if isinstance(node, (ast.Import, ast.ImportFrom))))
            for m, p in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_engines_only_load_what_export_wrote():
    graph = import_graph()
    for module, deps in graph.items():
        if module.startswith("fastlic.engines"):
            bad = {d for d in deps if d.startswith(("fastlic.export", "fastlic.runtime",
                                                    "fastlic.cli"))}
            assert not bad, f"{module} imports {sorted(bad)}"
    for bottom in ("fastlic.stages", "fastlic.manifest", "fastlic.cache", "fastlic.timing"):
        assert graph[bottom] <= {"fastlic.errors", "fastlic.stages"}, bottom


_WITHOUT_BACKENDS = r"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("onnx", "onnxruntime", "onnxscript", "tensorrt"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
import numpy as np
import fastlic, fastlic.cli
from fastlic.errors import MissingExtraError
from fastlic.runtime.codec import Codec
from skimage import data
image = data.astronaut()[:96, :128]
codec = Codec.load(quality=1, threads=1)
out = codec.decompress(codec.compress(image))
assert out.shape == image.shape
try:
    Codec.load(quality=1, backend="onnxruntime")
except MissingExtraError as exc:
    assert 'fastlic[export]' in str(exc)
else:
    raise AssertionError("onnxruntime loaded without onnxruntime")
assert not {"onnx", "onnxruntime", "tensorrt"} & set(sys.modules)
print("ok")
"""


def test_the_cpu_path_needs_no_onnx_onnxruntime_or_tensorrt():
    out = subprocess.run([sys.executable, "-c", _WITHOUT_BACKENDS], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
