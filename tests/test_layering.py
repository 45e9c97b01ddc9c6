"""The two layering rules of the project: theory/ never imports torch or deep/, and deep/ never
imports theory/ (tests and notebooks are the only bridge between them)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
