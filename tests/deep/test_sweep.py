"""deep.sweep: trial configs, specs, bad input, a real Ray sweep, and a killed one."""

from __future__ import annotations

import ast
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from deep import report, stats, sweep, tasks

# Small trials: 100 steps of 32x32 networks, a checkpoint every 50 steps (so a killed trial
# has something to resume), one evaluation at the end. Option names are the
# fields of the run config and the algorithms' configs.
TINY = [
    "steps=100",
    "log_every=50",
    "checkpoint_every=50",
    "eval_every=100",
    "eval_episodes=2",
    "plots=false",
    "tensorboard=false",
    "cql:critic_hidden=[32,32]",
    "cql:actor_hidden=[32,32]",
    "bc:hidden=[32,32]",
]
GRID = ["--algos", "cql", "bc", "--datasets", "pendulum-medium", "--seeds", "0", "1"]
REPS = 300


def sweep_args(out: Path, *extra: str) -> list[str]:
    return [*GRID, "--set", *TINY, "--out", str(out), "--reps", str(REPS), *extra]


def table(results: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on how a sweep got to its end (paths aside)."""
    return {k: results[k] for k in ("cells", "aggregates", "probability_of_improvement")}


# ------------------------------------------------------------------------------ no training


def test_trial_config_and_names(tmp_path: Path) -> None:
    data = tmp_path / "hopper-medium-v2.hdf5"
    trial = sweep.Trial(
        "cql",
        str(data),
        3,
        settings=(("cql_weight", 5), ("critic_hidden", [64, 64]), ("normalize_obs", False)),
        grid=("cql_weight",),
    )
    config = trial.config(tmp_path / "s")
    assert config.algo == "cql" and config.run.seed == 3 and config.run.dataset == str(data)
    assert config.run.out == str(tmp_path / "s" / trial.name) and not config.run.progress
    # Values become the fields' types: a JSON list a tuple, a JSON 5 the float 5.0.
    assert config.agent.critic_hidden == (64, 64) and config.agent.cql_weight == 5.0
    assert config.run.normalize_obs is False
    assert trial.name == "cql-hopper-medium-v2-cql_weight=5-seed3"


def test_overlong_trial_names_are_cut_with_a_digest() -> None:
    def named(value: str) -> str:
        return sweep.Trial("bc", "pendulum-medium", 0, (("env_id", value),), ("env_id",)).name

    long_a, long_b = named("a" * 300), named("a" * 299 + "b")
    assert len(long_a) <= 150 and long_a.endswith("-seed0") and long_a != long_b


def test_spec_file_grid(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text(
        'algos = ["cql", "bc"]\ndatasets = ["pendulum-medium", "cartpole-medium"]\nseeds = 3\n'
        "[train]\nsteps = 10\n[grid]\nbatch_size = [64, 128]\n"
        "[cql.grid]\ncql_weight = [1.0, 5.0]\n[bc.train]\nhidden = [32, 32]\n"
    )
    spec = sweep.spec_from_config(sweep.SweepConfig(spec=str(toml)))
    items = sweep.trials(spec)
    # cql: 2 datasets x 2 batch sizes x 2 weights x 3 seeds; bc: 2 x 2 x 3.
    assert Counter(t.algo for t in items) == {"cql": 24, "bc": 12}
    assert len({t.name for t in items}) == 36
    cql = [t for t in items if t.algo == "cql"]
    assert all(dict(t.settings)["steps"] == 10 and "hidden" not in dict(t.settings) for t in cql)
    assert "cql-pendulum-medium-batch_size=64-cql_weight=1.0-seed0" in {t.name for t in cql}
    # The same spec as JSON, with the command line replacing its seeds.
    js = tmp_path / "s.json"
    js.write_text(json.dumps(sweep.load_spec_file(toml)))
    spec2 = sweep.spec_from_config(sweep.SweepConfig(spec=str(js), seeds=(7,)))
    assert {t.seed for t in sweep.trials(spec2)} == {7}
    assert len(sweep.trials(spec2)) == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algos", "cql", "nope"], "unknown algo 'nope'"),
        (["--algos"], "algos is an empty list"),
        (["--seeds"], "seeds is an empty list"),
        (["--set", "no_such_option=1"], "cql has no option 'no_such_option'"),
        (["--algos", "bc", "--set", "bc:cql_weight=5"], "bc has no option 'cql_weight'"),
        (["--set", 'steps="many"'], "steps = 'many' is not of type int"),
        (["--set", 'critic_hidden={"a":1}'], "critic_hidden = {'a': 1} is not of type tuple"),
        (["--seeds", "0", "-1"], "trial 2 of 2 cannot run"),
        (["--datasets", "pendulum-mediun"], "unknown dataset 'pendulum-mediun'"),
        (["--set", "seed=1"], "'seed' is set by the sweep"),
        (["--grid", "cql:cql_weight=[]"], "cql.grid.cql_weight is an empty list"),
        (["--grid", "cql:cql_weight=5"], "must be a list"),
        (["--no-such-flag"], "Unrecognized options: --no-such-flag"),
    ],
)
def test_bad_input_ends_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = ["--algos", "cql", "--datasets", "pendulum-medium", "--seeds", "0"]
    code = sweep.main([*base, *args, "--out", str(tmp_path / "s"), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert message in err
    assert not (tmp_path / "s").exists()


def test_a_bad_value_is_refused_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every trial's config is built and checked before the first one runs.
    args = ["--algos", "bc", "--datasets", "pendulum-medium", "--seeds", "0", "1"]
    grid = ["--grid", 'steps=[5,"abc"]', "--out", str(tmp_path / "s"), "--workers", "1"]
    assert sweep.main([*args, *grid]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: trial 3 of 4 cannot run, so none was started: trial ")
    assert "steps = 'abc' is not of type int" in err
    assert not (tmp_path / "s").exists()


def test_foreign_sweep_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "other-run").mkdir()
    (tmp_path / "other-run" / "summary.json").write_text("{}")
    assert sweep.main(sweep_args(tmp_path, "--workers", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: deep.sweep: {tmp_path} holds files deep.sweep did not write (notes.txt, "
        "other-run/); nothing was written there: choose a new or empty folder (--out)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other-run"]


def test_no_module_imports_ray_at_import_time() -> None:
    # Only inside the functions that need it, so the package works without Ray.
    for module in (sweep, report, stats):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        for node in tree.body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "ray"], module.__name__


def test_without_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = ["--algos", "bc", "--datasets", "pendulum-medium", "--seeds", "0", "--set", *TINY]
    assert sweep.main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Ray is not installed: pip install -e .[sweep]")
    assert "\n" not in err
    # One worker: in this process, no Ray.
    assert sweep.main([*args, "--out", str(tmp_path / "b"), "--workers", "1", "--reps", "50"]) == 0
    assert (tmp_path / "b" / "bc-pendulum-medium-seed0" / "summary.json").is_file()
    assert (
        json.loads((tmp_path / "b" / report.REPORT_DIR / report.RESULTS_JSON).read_text())["cells"][
            0
        ]["runs"]
        == 1
    )
    # Run again: the finished trial is skipped, not redone.
    assert sweep.main([*args, "--out", str(tmp_path / "b"), "--workers", "1", "--reps", "50"]) == 0
    events = [e["event"] for e in sweep.read_events(tmp_path / "b")]
    assert events == ["start", "done", "skip"]


def test_reps_zero_is_refused_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--algos", "bc", "--datasets", "pendulum-medium", "--seeds", "0", "--set", *TINY]
    assert sweep.main([*args, "--workers", "1", "--out", str(tmp_path / "s"), "--reps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --reps must be at least 1, got 0"
    assert not (tmp_path / "s").exists()


def test_a_sweep_with_a_critic_continues_after_its_report(tmp_path: Path) -> None:
    # The report of a sweep with a critic writes values.png; running the same sweep again must
    # count every report file as the sweep's own and continue (skip the finished trial).
    args = ["--algos", "cql", "--datasets", "pendulum-medium", "--seeds", "0", "--set", *TINY]
    args += ["--workers", "1"]
    args += ["--out", str(tmp_path), "--reps", "50"]
    assert sweep.main(args) == 0
    written = {p.name for p in (tmp_path / report.REPORT_DIR).iterdir()}
    assert report.VALUES_PNG in written
    assert written - {sweep.SPEC_NAME, sweep.EVENTS_NAME} <= report.REPORT_FILES
    assert sweep.main(args) == 0
    assert [e["event"] for e in sweep.read_events(tmp_path)] == ["start", "done", "skip"]


# ------------------------------------------------------------------------------ on Ray


@pytest.mark.slow
def test_map_calls_in_this_process_and_on_ray() -> None:
    calls = [(4.0,), (-1.0,), (9.0,)]
    assert dict(tasks.map_calls(math.sqrt, [calls[0], calls[2]])) == {0: 2.0, 1: 3.0}
    with pytest.raises(ValueError, match="math domain error"):
        list(tasks.map_calls(math.sqrt, calls))  # in this process an error propagates
    on_ray = dict(tasks.map_calls(math.sqrt, calls, workers=2))
    assert (on_ray[0], on_ray[2]) == (2.0, 3.0)
    assert isinstance(on_ray[1], Exception) and "math domain error" in str(on_ray[1])
    with pytest.raises(tasks.PlacementError, match="must be >= 1"):
        list(tasks.map_calls(math.sqrt, calls, workers=0))


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted local Ray sweep: 2 algos x 2 seeds, two trials at a time."""
    out = tmp_path_factory.mktemp("ray") / "sweep"
    assert sweep.main(sweep_args(out, "--workers", "2")) == 0
    return out


@pytest.mark.slow
def test_ray_sweep_and_report(ray_sweep: Path) -> None:
    names = {f"{a}-pendulum-medium-seed{s}" for a in ("cql", "bc") for s in (0, 1)}
    assert {p.parent.name for p in ray_sweep.glob("*/summary.json")} == names
    results = json.loads((ray_sweep / report.REPORT_DIR / report.RESULTS_JSON).read_text())
    assert len(results["runs"]) == 4
    cells = {(c["dataset"], c["algorithm"]): c for c in results["cells"]}
    assert set(cells) == {("pendulum-medium", "cql"), ("pendulum-medium", "bc")}
    for c in cells.values():
        assert (c["runs"], c["scored"], c["null"], c["eval_episodes"]) == (2, 2, 0, 2)
        assert c["score_iqm"]["low"] <= c["score_mean"] <= c["score_iqm"]["high"]
    for label in ("cql", "bc"):
        assert results["aggregates"][label]["iqm"] is not None
    assert results["q_minus_mc"]["cql"]["runs"] == 2
    assert {p["x"] for p in results["probability_of_improvement"]} == {"cql", "bc"}
    md = (ray_sweep / report.REPORT_DIR / report.RESULTS_MD).read_text()
    assert "| pendulum-medium | cql | 2 | 0 | 2 |" in md
    for png in (report.INTERVALS_PNG, report.PROFILES_PNG, report.TRAINING_PNG):
        assert (ray_sweep / report.REPORT_DIR / png).is_file()
    events = Counter((e["trial"], e["event"]) for e in sweep.read_events(ray_sweep))
    assert events == Counter({(n, ev): 1 for n in names for ev in ("start", "done")})
    # Each trial is an ordinary run folder: nothing but deep.train's files in it.
    run = ray_sweep / "cql-pendulum-medium-seed0"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "checkpoint.pt"}


def _session_processes(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, session, ...; zombies are gone already
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    return [int(float(line.split(",", 1)[0])) for line in lines]


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc").is_dir(), reason="finds the killed sweep's processes in /proc"
)
def test_killed_sweep_resumes_to_the_same_table(tmp_path: Path, ray_sweep: Path) -> None:
    out = tmp_path / "sweep"
    driver = subprocess.Popen(
        [sys.executable, "-m", "deep.sweep", *sweep_args(out, "--workers", "2")],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*/summary.json")):
            assert driver.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished in 120 s"
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
    # The raylet dies with its driver and the trial workers with their raylet; wait for them,
    # then end Ray's agents, which would linger (all in the killed driver's session).
    for _ in range(100):
        if not [p for p in _session_processes(driver.pid) if "agent" not in _cmd(p).lower()]:
            break
        time.sleep(0.1)
    for pid in _session_processes(driver.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = sweep.read_events(out)
    finished = {e["trial"] for e in before if e["event"] == "done"}
    assert 1 <= len(finished) < 4, "the kill should land midway"

    # Continued in this process (Ray's side was the killed part; this saves a Ray start).
    assert sweep.main(sweep_args(out, "--workers", "1")) == 0

    after = sweep.read_events(out)[len(before) :]
    names = {p.parent.name for p in out.glob("*/summary.json")}
    assert len(names) == 4
    done = Counter(e["trial"] for e in before + after if e["event"] == "done")
    assert done == Counter({n: 1 for n in names}), "every trial finishes exactly once"
    # A trial finished before the kill is skipped, never started or resumed again.
    for e in after:
        if e["trial"] in finished:
            assert e["event"] == "skip", e
    for n in names:
        # A resumed run continues its metrics: no step logged twice, none missing.
        assert _steps(out / n) == [50, 100], n
    assert table(json.loads((out / report.REPORT_DIR / report.RESULTS_JSON).read_text())) == table(
        json.loads((ray_sweep / report.REPORT_DIR / report.RESULTS_JSON).read_text())
    )


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
