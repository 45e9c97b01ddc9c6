"""Build the notebooks from their percent-format sources and execute them with outputs.

Each notebook ``NN_name.ipynb`` that has a source ``NN_name.py`` beside it is generated from
that source: a line ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell whose lines
carry a leading ``# `` (removed). The sources are plain Python, so ``ruff`` lints them and
``python NN_name.py`` runs them as a script; the ``.ipynb`` is what a reader opens.

Usage (from the repository root)::

    .venv/bin/python notebooks/build.py              # every source in notebooks/
    .venv/bin/python notebooks/build.py 03 04        # sources whose name starts with 03 or 04
    .venv/bin/python notebooks/build.py --no-execute # cells only, no outputs

Execution uses nbclient with the ``python3`` kernel and ``notebooks/`` as working directory,
the same as ``tests/notebooks/test_notebooks.py``; timing metadata is not recorded, so a
rebuild changes a file only where its content changed.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode

NOTEBOOK_DIR = Path(__file__).resolve().parent
KERNEL_NAME = "python3"
CELL_TIMEOUT_SECONDS = 300
CELL_MARK = "# %%"
MARKDOWN_MARK = "# %% [markdown]"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse_source(text: str, name: str = "<source>") -> list[tuple[str, str]]:
    """Split percent-format text into ``(cell_type, source)`` pairs, in order.

    Text before the first ``# %%`` line is not allowed (it would belong to no cell); markdown
    lines must be comments (``#`` or ``# text``) so the file stays valid Python.
    """
    cells: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith(CELL_MARK):
            marker = line.rstrip()
            if marker == MARKDOWN_MARK:
                cells.append(("markdown", []))
            elif marker == CELL_MARK:
                cells.append(("code", []))
            else:
                raise ValueError(f"{name}:{lineno}: unknown cell marker {marker!r}")
            continue
        if not cells:
            if line.strip():
                raise ValueError(f"{name}:{lineno}: text before the first '# %%' cell marker")
            continue
        kind, lines = cells[-1]
        if kind == "markdown" and line.strip():
            if not line.startswith("#"):
                raise ValueError(f"{name}:{lineno}: markdown line is not a comment: {line!r}")
            line = line[2:] if line.startswith("# ") else line[1:]
        elif kind == "markdown":
            line = ""
        lines.append(line)
    out = []
    for kind, lines in cells:
        source = "\n".join(lines).strip("\n")
        if not source:
            raise ValueError(f"{name}: empty {kind} cell")
        out.append((kind, source))
    return out


def notebook_from_source(path: Path) -> NotebookNode:
    """A fresh (unexecuted) notebook whose cells come from the percent-format file ``path``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in parse_source(path.read_text(encoding="utf-8"), path.name):
        cell = (
            nbformat.v4.new_markdown_cell(source)
            if kind == "markdown"
            else nbformat.v4.new_code_cell(source)
        )
        # nbformat gives each cell a random id; a stable id keeps rebuilt files diff-clean.
        cell["id"] = f"cell-{len(nb.cells):03d}"
        nb.cells.append(cell)
    return nb


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this process's, with one BLAS/OpenMP thread unless set.

    The notebooks and the test suite run side by side on a few shared cores; a multi-threaded
    BLAS then spins against the other processes and a 100 x 100 solve can take 0.3 s instead
    of 0.1 ms. One thread per kernel keeps run times (and the printed timings) meaningful.
    """
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env.setdefault(name, "1")
    return env


def execute(nb: NotebookNode, timeout: int = CELL_TIMEOUT_SECONDS) -> NotebookNode:
    """Run every cell in a fresh ``python3`` kernel with ``notebooks/`` as working directory.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first failing cell (a failed
    ``assert`` included). The kernel gets :func:`kernel_env`.
    """
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        record_timing=False,
        # Stream chunks arrive as the kernel flushes; merged, a rebuild gives the same cells.
        coalesce_streams=True,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute(env=kernel_env())
    return nb


def build(source: Path, run: bool = True) -> tuple[Path, float, int]:
    """Write ``source`` (``NN_name.py``) as ``NN_name.ipynb``; return (path, seconds, bytes)."""
    nb = notebook_from_source(source)
    start = time.perf_counter()
    if run:
        execute(nb)
    seconds = time.perf_counter() - start
    target = source.with_suffix(".ipynb")
    nbformat.validate(nb)
    nbformat.write(nb, target)
    return target, seconds, target.stat().st_size


def sources(prefixes: Sequence[str] = ()) -> list[Path]:
    """Percent-format notebook sources (``NN_*.py``) in ``notebooks/``, filtered by prefix."""
    found = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build notebooks from percent-format sources.")
    parser.add_argument("prefixes", nargs="*", help="build only sources starting with these")
    parser.add_argument("--no-execute", action="store_true", help="write cells without outputs")
    args = parser.parse_args(argv)
    paths = sources(args.prefixes)
    if not paths:
        raise SystemExit(f"no notebook sources match {args.prefixes} in {NOTEBOOK_DIR}")
    for path in paths:
        target, seconds, size = build(path, run=not args.no_execute)
        print(f"{target.name}: {seconds:.1f} s, {size / 1024:.0f} KiB", flush=True)


if __name__ == "__main__":
    main()
