"""Every notebook runs top to bottom in a fresh kernel, and what is committed is what runs.

A notebook states its claims as ``assert`` cells, so executing it is the test: any exception,
a failed assertion included, fails the notebook's case. The committed ``.ipynb`` must also be
small (outputs included, < 1 MB so a code host renders it), fully executed, free of errors,
and, when it is generated from a percent-format source ``notebooks/NN_name.py``, built from
the current source (``python notebooks/build.py NN`` rebuilds it).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MAX_BYTES = 1_000_000
# Generous for 2 shared cores: the tabular notebooks take seconds in total.
CELL_TIMEOUT_SECONDS = 240


def _load_build() -> ModuleType:
    # notebooks/ is not a package; load its build script by path.
    spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOK_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()
WITH_SOURCE = [p for p in NOTEBOOKS if p.with_suffix(".py").exists()]


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_notebooks_are_numbered_and_unique() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"
    numbers = []
    for path in NOTEBOOKS:
        match = re.fullmatch(r"(\d\d)_[a-z0-9_]+\.ipynb", path.name)
        assert match, f"{path.name}: notebooks are named NN_lower_case_name.ipynb"
        numbers.append(match.group(1))
    assert len(set(numbers)) == len(numbers), f"two notebooks share a number: {numbers}"


# Executing a notebook that trains deep agents takes tens of seconds to minutes.
SLOW_NOTEBOOKS = {"07_table_to_network", "08_continuous_cql", "09_locomotion"}
EXECUTED = [
    pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_NOTEBOOKS else p for p in NOTEBOOKS
]


@pytest.mark.parametrize("path", EXECUTED, ids=_ids(NOTEBOOKS))
def test_notebook_executes(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    # Raises CellExecutionError (with the cell's traceback) at the first failing cell.
    build.execute(nb, timeout=CELL_TIMEOUT_SECONDS)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_asserts_its_claims(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert re.search(r"^\s*assert\b", code, flags=re.MULTILINE), f"{path.name} asserts nothing"
    assert markdown, f"{path.name} has no text"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_small(path: Path) -> None:
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path.name} is {size} bytes; lower the figure dpi or count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_is_executed_in_order(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name} was not run top to bottom in one fresh kernel (execution counts {counts})"
    )
    for i, cell in enumerate(code):
        bad = [o for o in cell.outputs if o.output_type == "error"]
        assert not bad, f"{path.name}: code cell {i} was saved with an error: {bad[0].ename}"
    assert any(o.output_type == "display_data" for c in code for o in c.outputs), (
        f"{path.name} shows no figure"
    )


@pytest.mark.parametrize("path", WITH_SOURCE, ids=_ids(WITH_SOURCE))
def test_notebook_matches_its_source(path: Path) -> None:
    source = path.with_suffix(".py")
    expected = build.parse_source(source.read_text(encoding="utf-8"), source.name)
    nb = nbformat.read(path, as_version=4)
    actual = [(c.cell_type, c.source) for c in nb.cells]
    assert actual == expected, (
        f"{path.name} is out of date with {source.name}: run "
        f"`.venv/bin/python notebooks/build.py {path.name[:2]}`"
    )


def test_parse_source_splits_cells_and_strips_markdown_comments() -> None:
    text = "# %% [markdown]\n# # Title\n#\n# $x^2$\n\n# %%\nx = 1\n\n\n# %%\nprint(x)\n"
    assert build.parse_source(text) == [
        ("markdown", "# Title\n\n$x^2$"),
        ("code", "x = 1"),
        ("code", "print(x)"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = 1\n# %%\ny = 2\n", "before the first"),
        ("# %% [markdown]\nnot a comment\n", "not a comment"),
        ("# %% [raw]\n# hi\n", "unknown cell marker"),
        ("# %%\n\n# %%\nx = 1\n", "empty code cell"),
    ],
)
def test_parse_source_rejects_malformed_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build.parse_source(text, "bad.py")
