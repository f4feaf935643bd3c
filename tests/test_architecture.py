"""The shape of the code, checked by parsing it (``ast``): layers, cycles, function length, prints.

Every import is read, at module level and inside functions alike. Imports under
``if TYPE_CHECKING:`` are annotations only (never executed); they may name the adapter
contract from the generic packages, and nothing else above them.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("yolo_prune", "models")

# Top to bottom: a module may import its own package and anything on a lower line, never a higher one.
LAYERS: list[tuple[str, ...]] = [
    ("yolo_prune.cli",),                                   # flags -> settings -> one call
    ("yolo_prune.pipeline", "yolo_prune.recovery"),        # the main job; the recovery experiments
    ("yolo_prune",),                                       # the package itself: its lazy attributes are the API
    ("yolo_prune.api", "yolo_prune.ultralytics"),          # the public facade; the drop-in ultralytics.YOLO
    ("yolo_prune.jobs", "yolo_prune.deploy"),              # whole jobs; export / predict / runtime A/B
    ("yolo_prune.adapters",),                              # one package per detector family + the contract
    ("yolo_prune.pruning",),                               # generic: take an adapter, never name a family
    ("yolo_prune.engine",),
    ("yolo_prune.report", "yolo_prune.benchmark"),
    ("yolo_prune.evaluation",),
    ("yolo_prune.data",),
    ("yolo_prune.settings", "yolo_prune.devices"),
    ("yolo_prune.io",),
    ("yolo_prune.registry", "yolo_prune.paths", "yolo_prune.reporting", "yolo_prune.interrupts"),
    ("models",),                                           # the YOLOv7 module tree
]
# The one sanctioned upward edge: the official ``attempt_load`` reaches (lazily) up to the safe loader.
UPWARD_EXCEPTIONS = {("models.experimental", "yolo_prune.adapters.yolov7.checkpoint")}
# What annotation-only imports (``if TYPE_CHECKING:``) may name from a higher layer.
TYPE_CHECKING_TARGETS = ("yolo_prune.adapters.base",)
GENERIC = ("yolo_prune.pruning", "yolo_prune.engine", "yolo_prune.evaluation", "yolo_prune.benchmark",
           "yolo_prune.report")
FAMILY_WORDS = re.compile(r"yolov7|ultralytics", re.IGNORECASE)
MAX_FUNCTION_LINES = 50


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """``(imported module, annotation_only)`` for every import anywhere in ``tree``."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, annotation_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, annotation_only)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, annotation_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # ``from package import module`` imports the module
                name = f"{node.module}.{alias.name}"
                found.append((name if name in MODULES else node.module, annotation_only))
        for child in ast.iter_child_nodes(node):
            visit(child, annotation_only)

    visit(tree, False)
    return found


def _edges() -> list[tuple[str, str, bool]]:
    edges = []
    for module, path in MODULES.items():
        for target, annotation_only in _imports(ast.parse(path.read_text(), str(path))):
            if target.split(".")[0] in PACKAGES:
                edges.append((module, target, annotation_only))
    return edges


def _layer(module: str) -> tuple[int, str]:
    """(index in LAYERS, the entry it matched) of the longest entry ``module`` falls under."""
    best = None
    for index, entries in enumerate(LAYERS):
        for entry in entries:  # the library's root names only itself, not every module below it
            if module == entry or (module.startswith(entry + ".") and entry != "yolo_prune"):
                if best is None or len(entry) > len(best[1]):
                    best = (index, entry)
    assert best is not None, f"{module} is in no layer of LAYERS; add its package there"
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_only_point_down():
    wrong = []
    for source, target, annotation_only in _edges():
        (src_level, src_pkg), (dst_level, dst_pkg) = _layer(source), _layer(target)
        if src_pkg == dst_pkg or dst_level > src_level or (source, target) in UPWARD_EXCEPTIONS:
            continue
        if annotation_only and target in TYPE_CHECKING_TARGETS:
            continue
        wrong.append(f"{source} -> {target}")
    assert not wrong, "imports from a lower layer to a higher one (or sideways):\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for source, target, annotation_only in _edges():
        if not annotation_only and target in graph and target != source:
            graph[source].add(target)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle (lazy imports included): " + " -> ".join(cycle)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of modules (first == last), or None (depth-first search)."""
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                found = walk(nxt, path + [nxt])
                if found:
                    return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = None if start in done else walk(start, [start])
        if found:
            return found
    return None


def test_the_public_api_is_imported_by_the_top_layers_only():
    api_level = _layer("yolo_prune.api")[0]
    users = {s for s, t, _ in _edges() if t == "yolo_prune.api" and _layer(s)[0] >= api_level}
    assert not users, f"modules below the API import it: {sorted(users)}"


def _code_words(tree: ast.AST) -> list[str]:
    """Identifiers and non-docstring string constants: what a module's code (not its docs) names."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
        elif isinstance(node, ast.alias):
            words.append(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.append(node.value)
    return words


@pytest.mark.parametrize("package", GENERIC)
def test_generic_packages_name_no_family(package):
    hits = []
    for module, path in MODULES.items():
        if module == package or module.startswith(package + "."):
            hits += [f"{module}: {w!r}" for w in _code_words(ast.parse(path.read_text())) if FAMILY_WORDS.search(w)]
    assert not hits, f"{package} names a detector family in code (only docs may):\n" + "\n".join(hits)


def _functions(paths: list[Path]) -> list[tuple[str, int]]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}",
                              node.end_lineno - node.lineno + 1))
    return found


def test_no_function_over_50_lines():
    paths = list(MODULES.values()) + sorted((REPO_ROOT / "scripts").glob("*.py"))
    long = [f"{name} ({n} lines)" for name, n in _functions(paths) if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (docstring included):\n" + "\n".join(long)


def test_the_library_never_prints():
    """Only the command line and the main job (the top layers) write to stdout; the rest logs."""
    allowed = ("yolo_prune.cli", "yolo_prune.pipeline")
    prints = []
    for module, path in MODULES.items():
        if module.startswith(allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                prints.append(f"{module}:{node.lineno}")
    assert not prints, "print() in the library (use logging):\n" + "\n".join(prints)


def test_ci_runs_the_readme_test_command_first():
    readme = (REPO_ROOT / "README.md").read_text()
    command = next(line.split("#")[0].strip() for line in readme.splitlines() if "pytest" in line and "pip" in line)
    ci = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci[0] == command
    assert any("ruff check" in line for line in ci[1:])
