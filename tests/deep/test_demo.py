"""deep.demo: the table, the plots and the README; a second demo reuses its runs, also after
a report was made of its folder; a changed setting or a foreign folder is refused before any
training."""

from __future__ import annotations

from pathlib import Path

import pytest

from deep import demo, evaluate, report
from deep.data import generate_builtin, save_npz


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    return save_npz(generate_builtin("pendulum-medium", n_transitions=1000), folder / "p.npz")


def demo_args(out: Path, dataset: Path, *extra: str) -> list[str]:
    return [
        "--out", str(out), "--dataset", str(dataset), "--cql-steps", "4",
        "--sac-steps", "4", "--bc-steps", "4", "--eval-every", "2", "--eval-episodes", "1",
        "--final-episodes", "2", "--hidden-dims", "16", "--workers", "1", *extra,
    ]  # fmt: skip


def test_demo_writes_table_plots_readme_and_reuses_finished_runs(
    pendulum: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    args = demo_args(out, pendulum)
    assert demo.main(args) == 0
    printed = capsys.readouterr().out
    for name in ("README.md", "results.md", "comparison.png"):
        assert (out / name).is_file()
    table = (out / "results.md").read_text()
    assert table in printed and table in (out / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"CQL", "offline SAC", "BC"}
    # The CQL row holds the final evaluation of its checkpoint: recompute it independently.
    final = evaluate.evaluate_checkpoint(out / "cql", episodes=2, device="cpu")
    cells = [c.strip() for c in rows["CQL"].split("|")[1:-1]]
    assert cells[1] == f"{final['eval/normalized_score']:.1f}"
    assert cells[3] == f"{final['eval/q_estimate']:.1f}"
    assert cells[5] == f"{final['eval/q_estimate'] - final['eval/mc_return']:.1f}"
    assert rows["BC"].split("|")[4].strip() == "n/a"  # no critic, no Q estimate

    # A second demo with the same settings reuses the finished runs instead of retraining.
    before = (out / "cql" / "metrics.csv").read_text()
    stamp = (out / "cql" / "checkpoint.pt").stat().st_mtime_ns
    assert demo.main(args) == 0
    assert (out / "cql" / "metrics.csv").read_text() == before
    assert (out / "cql" / "checkpoint.pt").stat().st_mtime_ns == stamp

    # A report of the demo folder goes to its own subfolder; the demo then still resumes.
    report.report(out, reps=50, plots=False)
    assert (out / "results.md").read_text() == table
    assert demo.main(args) == 0
    assert (out / "cql" / "checkpoint.pt").stat().st_mtime_ns == stamp

    # Another setting in the same folder is refused before any training, naming it.
    capsys.readouterr()
    assert demo.main([*args, "--cql-weight", "3"]) == 2
    err = capsys.readouterr().err
    assert "agent.cql_weight differ" in err and "Traceback" not in err
    assert (out / "cql" / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_a_folder_that_is_not_the_demos_is_refused(
    pendulum: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert demo.main(demo_args(out, pendulum)) == 2
    assert "holds files deep.demo did not write (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
