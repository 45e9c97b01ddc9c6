"""The README's code and the numbers quoted in prose come from the code, and still run.

- The README's property test of Theorem 3.1 passes under ``pytest`` as a user would run it
  (a file of its own, outside the repository), and notebook 04 shows the same code.
- ``docs/results/demo.json`` (the demo's final numbers, which notebook 08 reads) was made
  with today's ``deep.demo`` settings: change a default of ``DemoConfig`` and this fails until
  ``python -m deep.demo`` is run again and its ``runs/demo/results.json`` committed there.
- Notebooks quote no setting of the demo by value (they print them from ``DemoConfig``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

from deep.demo import DemoConfig

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _property_test() -> str:
    blocks = [b for b in _readme_python_blocks() if "theory.strategies" in b]
    assert len(blocks) == 1, "the README shows one property test that imports theory.strategies"
    return blocks[0]


def _pytest_file(path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Write ``code`` to ``path`` and run pytest on it there, as a user would."""
    path.write_text(code)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_readme_property_test_is_short_and_passes_under_pytest(tmp_path: Path) -> None:
    code = _property_test()
    assert len(code.strip().splitlines()) <= 20
    done = _pytest_file(tmp_path / "test_theorem_3_1.py", code)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_readme_property_test_fails_on_a_false_claim(tmp_path: Path) -> None:
    # The same test with the conclusion asserted below the threshold (alpha = 0) must fail:
    # the example is a real test, not one that passes whatever the theorem says.
    code = _property_test().replace("st.floats(1.0, 3.0)", "st.just(0.0)")
    code = code.replace("if r.premise_holds:", "if True:")
    done = _pytest_file(tmp_path / "test_false.py", code)
    assert done.returncode == 1, done.stdout + done.stderr


def test_notebook_04_shows_the_readme_property_test() -> None:
    source = (ROOT / "notebooks" / "04_cql1_theorem_3_1.py").read_text()
    assert _property_test().strip() in source


def test_committed_demo_results_match_the_demo_settings() -> None:
    record = json.loads((ROOT / "docs" / "results" / "demo.json").read_text())
    today = {
        k: v for k, v in dataclasses.asdict(DemoConfig()).items() if k not in ("out", "workers")
    }
    today = json.loads(json.dumps(today))  # tuples as lists, as in the file
    assert record["settings"] == today, (
        "deep.demo's settings changed: run `python -m deep.demo` and copy "
        "runs/demo/results.json to docs/results/demo.json"
    )
    assert set(record["final"]) == {"cql", "sac", "bc"}


def test_notebooks_quote_no_demo_setting_by_value() -> None:
    demo = DemoConfig()
    # Phrases that would state one of the demo's settings in prose.
    patterns = [
        rf"deep\.demo[^\n]*(τ|tau)[^\n]*{demo.target_tau}",
        rf"deep\.demo[^\n]*weight[^\n]*{demo.cql_weight:g}",
        r"deep\.demo[^\n]*\d+ (final )?episodes",
    ]
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        markdown = "\n".join(
            line for line in path.read_text().splitlines() if line.startswith("# ")
        )
        for pattern in patterns:
            assert not re.search(pattern, markdown), f"{path.name} quotes the demo: {pattern}"
