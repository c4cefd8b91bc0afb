"""Import structure of ``omnisparse``: no import cycle between its modules, and every layer imports
only the layers below it. Pure AST reading of ``src/omnisparse``; nothing is imported.

The graph: one node per module (a package is its ``__init__``); an edge for every import of another
omnisparse module anywhere in the file - module level, function-local and ``if TYPE_CHECKING:``
alike. ``import a.b.c`` edges to module ``a.b.c``; ``from a.b import c`` to module ``a.b.c`` when
``c`` is a module, else to ``a.b`` (a package: its ``__init__``); relative imports (``from . import
x``, ``from ..losses.contrastive import f``) are resolved to absolute names first. Importing a
submodule does not add an edge to its parent packages' ``__init__``.

Layers, low to high (a module belongs to the layer of its top-level package or module)::

    io        the package root (``__version__``), ``errors`` and the ``io`` package: atomic and
              checksummed writes (``io.atomic``), JSON files that must hold an object (``io.json_file``),
              the checkpoint directory (``io.checkpoint``), the export directory's on-disk format
              (``io.export_dir``), the one-writer lock of a directory (``io.lock``); what every layer may use. It imports only the standard library,
              numpy, torch and safetensors besides (checked below).
              The artefact file format stays in ``export`` with its writer and reader (they need the masks)
    utils     ``utils.provenance`` (git commit / machine records, on ``io.atomic``), ``utils.faults``
    config
    data      corpus, features, tokenizer, batching, the split manifests (``data.splits``)
    losses
    models
    sparsity  masks, the search space, schedules
    decoding
    train
    export    the artefact file format (layout and sizes ``export.format``, ``export.writer``,
              ``export.reader``), opening any run, checkpoint or export for inference
              (``export.loading.load_model``: it reads the artefact) and exported model directories
    deploy    the CPU kernels, ONNX, sherpa-onnx, and the commands that open a model directory and
              run it (``deploy.apps``: ``omnisparse eval`` and ``omnisparse transcribe``, whose
              ``--fast`` runs ``deploy.fast``)
    search
    report
    cli       thin: argument parsing, one lazy import per command
    testing   shared test dummies (random tiny models and batches); the library never imports it

This is the data flow data -> models -> losses -> sparsity -> train -> decoding/search ->
export/deploy -> report -> CLI, with three changes that real dependencies force:

* ``losses`` below ``models``: a loss is a function of tensors and imports no model, while
  ``models.wav2vec``'s pre-training forward computes its own contrastive loss.
* ``decoding`` below ``train``: training validates on dev with ``decoding.evaluate.evaluate_cuts``
  (greedy / beam search and WER are what training needs of decoding, and they need nothing of it).
* ``search`` above ``export`` and ``deploy``: the search prices configs in the artefact format
  (``export.format.ArtefactPricing``) and times them with the deploy CPU kernels (``search.latency``);
  neither of them needs the search.

There is no allow-list: every upward edge fails, a function-local one (an import moved into a
function to dodge a loop) as much as one at module level. The last ones (``decoding.loading`` reading
exports with ``export.reader``, ``decoding.transcribe`` running ``deploy.fast``) were paid by moving
the loading to ``export.loading`` and the two commands to ``deploy.apps``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "omnisparse"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("omnisparse", "errors", "io"),  # io
    ("utils",),
    ("config",),
    ("data",),
    ("losses",),
    ("models",),
    ("sparsity",),
    ("decoding",),
    ("train",),
    ("export",),
    ("deploy",),
    ("search",),
    ("report",),
    ("cli",),
    ("testing",),
)

IO_THIRD_PARTY = {"numpy", "torch", "safetensors"}  # what io may import besides the standard library


# ---------------------------------------------------------------------------------------------- graph
def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """``{imported omnisparse module: first line}`` of every import in ``path`` (module ``name``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target != PKG and not target.startswith(PKG + "."):
            return
        while target not in modules:  # `import a.b.c` of a non-module c: the closest module above
            target = target.rpartition(".")[0]
        if target != name:
            out.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                add(sub if sub in modules else source, node.lineno)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` over every omnisparse module."""
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, dict[str, int]], limit: int = 100) -> list[list[str]]:
    """The elementary cycles ``[a, b, ..., a]`` of ``graph`` (each once, starting at its smallest
    module; at most ``limit``), found within its strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan, iteratively (no recursion limit to worry about)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        work = [(v, iter(sorted(graph[v])))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out: list[list[str]] = []
    for comp in sorted(components, key=min):
        for start in sorted(comp):  # cycles through `start` and modules after it only: each cycle once
            allowed = {m for m in comp if m >= start}
            paths = [[start]]
            while paths and len(out) < limit:
                path = paths.pop()
                for w in sorted(graph[path[-1]], reverse=True):
                    if w == start:
                        out.append([*path, start])
                    elif w in allowed and w not in path:
                        paths.append([*path, w])
    return sorted(out[:limit])


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise KeyError(f"{module}: {top!r} is in no layer of LAYERS; place it there (and say why in the docstring)")


def upward_edges(graph: dict[str, dict[str, int]]) -> dict[tuple[str, str], int]:
    return {(a, b): line for a, targets in graph.items() for b, line in targets.items() if layer_of(b) > layer_of(a)}


# ---------------------------------------------------------------------------------------------- tests
def test_the_walker_sees_every_kind_of_import():
    graph = import_graph()
    assert "omnisparse" in graph and "omnisparse.data.engines._sox" in graph
    assert "omnisparse.io.checkpoint" in graph["omnisparse.train.trainer"]  # from omnisparse.io import checkpoint
    assert "omnisparse.models.encoder" in graph["omnisparse.models.transducer"]  # from .encoder import ...
    assert "omnisparse.losses.contrastive" in graph["omnisparse.models.wav2vec"]  # from ..losses.contrastive import ...
    assert "omnisparse.export.format" in graph["omnisparse.export"]  # a package's __init__: from .format import ...
    assert "omnisparse.export.subnet" in graph["omnisparse.export"]  # function-local: from . import subnet
    assert "omnisparse" in graph["omnisparse.io.checkpoint"]  # from omnisparse import __version__
    assert "omnisparse.config" in graph["omnisparse.data.augment"]  # under if TYPE_CHECKING:
    assert "omnisparse.train.registry" in graph["omnisparse.cli"]  # function-local, in a command
    assert "omnisparse.sparsity.space" in graph["omnisparse.sparsity"]  # from .space import ...


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"e2": 1}, "e2": {"e": 1}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    two = {"a": {"b": 1, "c": 1}, "b": {"a": 1}, "c": {"a": 1, "b": 1}}
    assert cycles(two) == [["a", "b", "a"], ["a", "c", "a"], ["a", "c", "b", "a"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    lines = [" -> ".join(f"{m} (line {graph[m][n]})" if n else m for m, n in zip(c, [*c[1:], None])) for c in found]
    assert not found, "import cycles between omnisparse modules:\n  " + "\n  ".join(lines)


def test_layers_import_only_downwards():
    graph = import_graph()
    up = upward_edges(graph)
    assert not up, "imports of a higher layer (see LAYERS in tests/test_imports.py):\n  " + "\n  ".join(
        f"{a} (line {line}) -> {b}" for (a, b), line in sorted(up.items()))


def test_decoding_opens_no_export_and_runs_no_deploy_kernel():
    """The two former debts, by name: the inference code training validates with (``decoding``)
    imports nothing of ``export`` or ``deploy``, at module level or inside a function, and the
    modules that do (the loading, the commands) are where the layers put them."""
    graph = import_graph()
    bad = sorted((a, b) for a, targets in graph.items() if a.startswith("omnisparse.decoding")
                 for b in targets if b.startswith(("omnisparse.export", "omnisparse.deploy")))
    assert not bad, bad
    assert "omnisparse.decoding.loading" not in graph
    assert {"omnisparse.export.reader", "omnisparse.export.format"} <= set(graph["omnisparse.export.loading"])
    assert {"omnisparse.export.loading", "omnisparse.deploy.fast"} <= set(graph["omnisparse.deploy.apps"])


def test_io_imports_only_the_standard_library_numpy_torch_safetensors():
    """``io`` is the bottom: of omnisparse only the package root, ``errors`` and ``io`` itself; of the
    rest only the standard library, numpy, torch and safetensors."""
    import sys

    bad = []
    for path in sorted((SRC / PKG / "io").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue  # relative: inside io
            for name in names:
                top = name.split(".")[0]
                if top == PKG:
                    ok = name in (PKG, f"{PKG}.errors") or name == f"{PKG}.io" or name.startswith(f"{PKG}.io.")
                else:
                    ok = top in sys.stdlib_module_names or top in IO_THIRD_PARTY or top == "__future__"
                if not ok:
                    bad.append(f"{path.relative_to(SRC)} (line {node.lineno}): {name}")
    assert not bad, "io imports outside what it may use:\n  " + "\n  ".join(bad)
