"""The layering rules of the project: theory/ never imports torch or deep/, and deep/ never
imports theory/ (tests and notebooks are the only bridge between them); inside deep/, imports
form no cycle, and the dataset container and the environments stay independent of the rest."""

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEEP = ROOT / "deep"


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_theory_sources_import_only_numpy_scipy_and_stdlib() -> None:
    forbidden = {"torch", "deep", "gymnasium", "h5py", "minari", "matplotlib"}
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_roots(p) & forbidden)
        for p in sorted((ROOT / "theory").rglob("*.py"))
        if imported_roots(p) & forbidden
    }
    assert not offenders, f"theory/ must not import these: {offenders}"


def test_deep_sources_never_import_theory() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "deep").rglob("*.py"))
        if "theory" in imported_roots(p)
    ]
    assert not offenders, f"deep/ must not import theory/: {offenders}"


def test_importing_theory_loads_no_torch() -> None:
    code = (
        "import sys, theory, theory.bench, theory.demo; "
        "bad = [m for m in ('torch', 'deep') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# --- the import graph of deep/ ---------------------------------------------------------------


def module_name(path: Path) -> str:
    """``deep/data/builtin.py`` -> ``deep.data.builtin``; ``deep/data/__init__.py`` -> ``deep.data``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def deep_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(DEEP.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.AST, *, module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported (``module_level``: outside function
    bodies and ``if TYPE_CHECKING:`` blocks), or else only those inside function bodies."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[ast.Import | ast.ImportFrom]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                if in_function != module_level:
                    yield child
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, True)
            elif isinstance(child, ast.If) and _is_type_checking(child.test) and not in_function:
                for stmt in child.orelse:  # the TYPE_CHECKING body never runs
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), in_function)
            else:
                yield from visit(child, in_function)

    yield from visit(tree, False)


def resolve(
    node: ast.Import | ast.ImportFrom, importer: Path, modules: dict[str, Path]
) -> set[str]:
    """Modules of ``modules`` that an import statement in ``importer`` names.

    ``from deep.data import builtin`` names the submodule ``deep.data.builtin``; ``from deep.data
    import load_dataset`` names the package ``deep.data`` (its ``__init__``); relative imports
    resolve against the importer's package. Every import of a submodule also runs its parent
    packages' ``__init__`` first; that edge is not drawn, as Python allows it (the package is
    already in ``sys.modules`` while its ``__init__`` imports its own submodules).
    """
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            for k in range(len(parts), 0, -1):
                if ".".join(parts[:k]) in modules:
                    found.add(".".join(parts[:k]))
                    break
        return found
    if node.level:
        name = module_name(importer)
        package = name if importer.name == "__init__.py" else name.rpartition(".")[0]
        base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            found.add(f"{base}.{alias.name}")
        elif base in modules:
            found.add(base)
    return found


def import_graph(*, module_level: bool = True) -> dict[str, set[str]]:
    modules = deep_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in import_nodes(tree, module_level=module_level):
            edges |= resolve(node, path, modules)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of a directed graph, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)) is not None:
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)) is not None:
            return cycle
    return None


def test_find_cycle_names_the_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_import_resolution_on_the_data_package() -> None:
    graph = import_graph()
    # A submodule named in a from-import, a package, and a relative-free from-import of names.
    assert "deep.data.builtin" in graph["deep.data"]
    assert {"deep.data.dataset", "deep.data.formats", "deep.envs"} <= graph["deep.data.builtin"]
    assert "deep.data" in graph["deep.data.__main__"]


def test_deep_module_level_imports_are_acyclic() -> None:
    """Module-level imports only (those run on import, ``if TYPE_CHECKING:`` blocks excepted):
    some modules of deep/ still import inside functions, which the next test forbids only in
    the modules it lists."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in deep/: " + " -> ".join(cycle or [])


# Every module of deep/ imports the project's modules at module level (no function-local
# imports, no importlib), so the import graph above is the whole graph.
NO_LOCAL_IMPORTS = tuple(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deep").rglob("*.py")))


def test_listed_modules_import_project_modules_at_module_level_only() -> None:
    """Restricted to NO_LOCAL_IMPORTS; function-local imports of third-party packages (h5py,
    minari, mujoco: optional or slow to import) stay allowed."""
    modules = deep_modules()
    offenders: dict[str, list[str]] = {}
    for rel in NO_LOCAL_IMPORTS:
        path = ROOT / rel
        tree = ast.parse(path.read_text(), filename=str(path))
        local = set()
        for node in import_nodes(tree, module_level=False):
            local |= resolve(node, path, modules)
        dynamic = {
            "importlib"
            for node in ast.walk(tree)
            if (
                isinstance(node, ast.Import)
                and any(a.name.startswith("importlib") for a in node.names)
            )
            or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("importlib"))
        } | {
            "__import__"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        }
        if local or dynamic:
            offenders[rel] = sorted(local | dynamic)
    assert not offenders, f"function-local or dynamic imports of project modules: {offenders}"


def test_envs_never_imports_the_data_package() -> None:
    # Any import, module-level or not: evaluation must not depend on how datasets are made.
    modules = deep_modules()
    path = DEEP / "envs.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    named = set()
    for module_level in (True, False):
        for node in import_nodes(tree, module_level=module_level):
            named |= resolve(node, path, modules)
    data = sorted(m for m in named if m == "deep.data" or m.startswith("deep.data."))
    assert not data, f"deep/envs.py imports {data}"


def test_dataset_container_is_a_leaf() -> None:
    path = DEEP / "data" / "dataset.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    # Only the minibatch type, itself a leaf.
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in modules if m.split(".")[0] in ("deep", "theory")} == {"deep.batch"}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    assert imported_roots(DEEP / "batch.py") & {"deep", "theory"} == set()


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def test_data_flows_one_way_evaluation_never_loads_the_training_loop() -> None:
    """command line -> config -> registry -> agent -> losses: re-evaluation, evaluation and
    the agents never reach the training loop; the losses and networks reach no other project
    module; the registry never reaches the config or the loop."""
    graph = {k: v for k, v in import_graph().items()}
    for module in ("deep.evaluate", "deep.evaluation", "deep.algos", "deep.config"):
        assert "deep.train" not in _reachable(graph, module), module
    for leaf in ("deep.losses", "deep.nets"):
        assert _reachable(graph, leaf) == {leaf}, leaf
    assert not {"deep.config", "deep.train"} & _reachable(graph, "deep.algos")


def test_importing_the_algorithms_loads_no_data_or_environment_code() -> None:
    # The agents need torch, the losses and the networks only: not the data loaders,
    # gymnasium or MuJoCo (the minibatch type lives in deep.batch for that reason).
    code = (
        "import sys, deep.algos\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gymnasium', 'mujoco', "
        "'h5py', 'minari') or m.startswith(('deep.data', 'deep.envs', 'deep.policies')))\n"
        "print(' '.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
