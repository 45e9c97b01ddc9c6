"""Nothing lost, nothing silent: every class of misuse ends in one clear message before work
is wasted. Each class is tried with at least two different bad inputs, on real files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from deep import bench, evaluate, train
from deep.config import RunConfig, make_config
from deep.data import generate_builtin, save_npz

REPO = Path(__file__).resolve().parents[2]
TINY = ["--batch-size", "16", "--log-every", "2", "--eval-episodes", "1", "--device", "cpu"]
TINY += ["--no-progress", "--no-tensorboard", "--no-plots"]


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    return save_npz(generate_builtin("pendulum-medium", n_transitions=400), folder / "p.npz")


def tiny(dataset: Path, out: Path, steps: int = 4, **run: object) -> list[str]:
    args = ["bc", "--hidden", "8", "--dataset", str(dataset), "--out", str(out)]
    return [*args, "--steps", str(steps), "--eval-every", str(steps), *TINY, *map(str, run)]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


# ------------------------------------------------------------- 1. nothing is overwritten


def test_a_folder_that_is_not_ours_is_refused_and_left_as_it_was(
    pendulum: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("summary.json", "metrics.csv", "learning_curves.png"):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text("the user's own file")
        assert train.main(tiny(pendulum, folder)) == 2
        assert "holds files deep.train did not write" in one_error_line(capsys)
        assert [p.name for p in folder.iterdir()] == [name]
        assert (folder / name).read_text() == "the user's own file"
    tb = tmp_path / "tensorboard"
    (tb / "tb").mkdir(parents=True)
    assert train.main(tiny(pendulum, tb)) == 2
    assert "holds files deep.train did not write" in one_error_line(capsys)


def test_no_folder_a_file_or_an_unwritable_place_is_refused(
    pendulum: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main(tiny(pendulum, Path(""))) == 2
    assert "no folder named" in one_error_line(capsys)
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    assert train.main(tiny(pendulum, a_file)) == 2
    assert "is a file" in one_error_line(capsys)
    assert a_file.read_text() == "keep"
    # Below a file no folder can be made, whoever runs the test (root ignores mode bits).
    assert train.main(tiny(pendulum, a_file / "run")) == 2
    assert "cannot write to" in one_error_line(capsys)


def test_leftovers_of_killed_writes_are_cleaned_and_files_follow_the_umask(
    pendulum: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".checkpoint.pt.0123456789ab.tmp").write_bytes(b"torn")  # a killed write
    old = os.umask(0o022)
    try:
        assert train.main(tiny(pendulum, out, steps=2)) == 0
    finally:
        os.umask(old)
    for name in ("config.json", "checkpoint.pt", "metrics.csv", "summary.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    (out / ".metrics.csv.ba9876543210.tmp").write_bytes(b"torn")
    (out / "summary.json").unlink()
    assert train.main(["resume", str(out)]) == 0
    assert not list(out.glob(".*.tmp"))


# ------------------------------------------------------- 2. a resumed run keeps its data


def test_resume_refuses_changed_data_and_restores_the_normaliser(
    pendulum: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(pendulum.read_bytes())
    out = tmp_path / "run"
    assert train.main(tiny(data, out, steps=4)) == 0
    # A finished run ends by saying where its files are.
    assert f"run folder: {out}" in capsys.readouterr().err.splitlines()
    saved = json.loads((out / "config.json").read_text())
    assert Path(saved["train"]["dataset"]).is_absolute()  # resumes read the same file
    (out / "summary.json").unlink()
    # Another file under the same name: refused, naming the run and the file.
    save_npz(generate_builtin("pendulum-medium", n_transitions=400, seed=7), data)
    assert train.main(["resume", str(out)]) == 2
    line = one_error_line(capsys)
    assert "is not the data run" in line and str(data) in line
    # The original data again, from another working directory: resumes, and never refits
    # the normaliser (the checkpoint's statistics are used).
    data.write_bytes(pendulum.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "deep.data.ObservationNormalizer.from_dataset",
        lambda *a, **k: pytest.fail("a resumed run refitted its normaliser"),
    )
    assert train.run(out)["steps"] == 4


# ------------------------------------------------ 3. checked before training, in seconds


@pytest.mark.parametrize(
    ("data", "env_id", "message"),
    [
        ("pendulum", "CartPole-v1", "observations of size 3, environment CartPole-v1"),
        ("pendulum", "MountainCarContinuous-v0", "observations of size 3, environment Mountain"),
        ("cartpole", "InvertedPendulum-v5", "has 2 discrete actions, environment InvertedPendulum"),
        ("pendulum", "NoSuchEnv-v9", "cannot map 'NoSuchEnv-v9'"),
    ],
)
def test_dataset_and_environment_are_matched_before_training(
    data: str,
    env_id: str,
    message: str,
    pendulum: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    dataset = pendulum
    argv = tiny(dataset, out)
    if data == "cartpole":
        dataset = save_npz(
            generate_builtin("cartpole-medium", n_transitions=300), tmp_path / "c.npz"
        )
        argv = ["discrete-bc", *tiny(dataset, out)[1:]]
    assert train.main([*argv, "--env-id", env_id]) == 2
    assert message in one_error_line(capsys)
    assert not (out / "checkpoint.pt").exists() and not (out / "config.json").exists()


def test_no_environment_warns_once_and_writes_null(
    pendulum: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with np.load(pendulum) as f:
        arrays = {k: f[k] for k in ("observations", "actions", "rewards", "next_observations")}
        arrays["terminals"] = f["terminals"]
    anonymous = tmp_path / "anonymous.npz"
    np.savez(anonymous, **arrays)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # even so: one line per cause, a sentence
        assert train.main([*tiny(anonymous, out), "--batch-size", "1000"]) == 0
    captured = capsys.readouterr()
    said = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(said) == 2, captured.err
    assert any("names no environment: training without evaluation" in w for w in said)
    assert any("--batch-size 1000 is larger than the 400 transitions" in w for w in said)
    assert "_Run(" not in captured.err and ".py:" not in captured.err  # no source lines
    printed = json.loads(captured.out)  # valid JSON: no bare NaN
    assert printed["normalized_score"] is None and printed["return_mean"] is None
    assert json.loads((out / "summary.json").read_text())["normalized_score"] is None


def test_options_of_another_algorithm_are_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["cql", "--lagrange-threshold-x", "1"], ["bc", "--gamma", "0.9"]):
        with pytest.raises(SystemExit) as exit_info:
            train.main(argv)
        assert exit_info.value.code == 2
    config = make_config("sac", RunConfig(eval_gamma=0.9))
    with pytest.raises(ValueError, match="--eval-gamma is for agents without"):
        train.run(config)


# ------------------------------------------------ 4. one line, non-zero exit, everywhere


def test_command_lines_end_bad_input_in_one_line(
    pendulum: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert train.main(tiny(pendulum, out, steps=2)) == 0
    capsys.readouterr()
    cases = [
        (train.main, tiny(tmp_path / "missing.npz", tmp_path / "r2"), "missing.npz"),
        (evaluate.main, [str(out), "--seed", "-1"], "--seed must be in"),
        (evaluate.main, [str(out), "--env-id", "CartPole-v1"], "environment CartPole-v1"),
        (evaluate.main, [str(tmp_path / "nowhere")], "nowhere"),
        (bench.main, ["--device", "nonsense"], "--device must be auto, cpu or cuda"),
    ]
    if not __import__("torch").cuda.is_available():
        cases.append((bench.main, ["--device", "cuda"], "torch sees no CUDA GPU"))
    for main, argv, message in cases:
        assert main(argv) == 2, argv
        assert message in one_error_line(capsys), argv


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "deep.evaluate", str(tmp_path / "nowhere")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    loud = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=env, cwd=REPO)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_interrupt_before_the_first_checkpoint_says_what_is_left(
    pendulum: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "load_dataset", interrupted)
    assert train.main(tiny(pendulum, tmp_path / "run")) == 130
    assert "nothing was saved" in capsys.readouterr().err


# ------------------------------------------------- one rule for a run folder, every tool


def _bc(dataset: Path, out: Path, steps: int) -> object:
    settings = RunConfig(
        dataset=str(dataset),
        out=str(out),
        steps=steps,
        batch_size=16,
        log_every=2,
        eval_every=steps,
        eval_episodes=1,
        device="cpu",
        progress=False,
        tensorboard=False,
        plots=False,
    )
    return make_config("bc", settings, hidden=(8,))


def test_start_or_resume_starts_reads_or_refuses(
    pendulum: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    first = train.start_or_resume(_bc(pendulum, out, 4))
    assert train.run_state(_bc(pendulum, out, 4)) == "done"

    def no_training(*_: object) -> None:
        raise AssertionError("a finished run was trained again")

    with monkeypatch.context() as m:
        m.setattr(train, "run", no_training)
        again = train.start_or_resume(_bc(pendulum, out, 4))  # read back from summary.json
        assert again["normalized_score"] == first["normalized_score"]
    with pytest.raises(
        train.SettingsChangedError, match=r"other settings \(train\.eval_every, train\.steps differ"
    ):
        train.start_or_resume(_bc(pendulum, out, 6))
    # A folder of files that merely carry a run's names is not a run of ours.
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.csv").write_text("the user's")
    with pytest.raises(train.FolderError, match="did not write"):
        train.run_state(_bc(pendulum, other, 4))
    assert [p.name for p in other.iterdir()] == ["metrics.csv"]


def test_two_tools_racing_for_one_folder_are_serialised(pendulum: Path, tmp_path: Path) -> None:
    import threading

    out = tmp_path / "race"
    outcomes: dict[int, object] = {}

    def go(steps: int) -> None:
        try:
            outcomes[steps] = train.start_or_resume(_bc(pendulum, out, steps))["steps"]
        except train.SettingsChangedError as e:
            outcomes[steps] = e

    threads = [threading.Thread(target=go, args=(n,)) for n in (6, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [n for n, o in outcomes.items() if o == n]
    lost = [n for n, o in outcomes.items() if isinstance(o, train.SettingsChangedError)]
    # One trained; the other, held at the lock, then saw the winner's settings and refused.
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert json.loads((out / "summary.json").read_text())["steps"] == won[0]


# --------------------------------------------- the tools: one line, exit 2, before any work


@pytest.mark.parametrize(
    ("tool", "argv", "message"),
    [
        ("locomotion", ["info", "--envs", "hoper"], "unknown env 'hoper'"),
        ("locomotion", ["info", "--levels", "mediun"], "unknown level 'mediun'"),
        ("locomotion", ["info", "--n-transitions", "0"], "--n-transitions must be >= 1"),
        ("locomotion", ["noise", "--sigmas", "-1"], "so >= 0; got -1.0"),
        ("locomotion", ["noise", "--episodes", "0"], "--episodes must be >= 1"),
        ("policies", ["hopper", "--eval-every", "0"], "--eval-every must be >= 1"),
        ("sweep", ["--out", "/proc/x"], "cannot write to /proc/x"),
        ("sweep", ["--out", "/dev/null/x"], "cannot write to /dev/null/x"),
        ("sweep", ["--address", "127.0.0.1:1", "--out", "OUT"], "no Ray cluster answers"),
    ],
)
def test_tools_refuse_bad_input_in_one_line(
    tool: str,
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deep import sweep
    from deep.policies import locomotion
    from deep.policies import train as policies_train

    argv = [str(tmp_path / "s") if a == "OUT" else a for a in argv]
    if tool == "sweep":
        base = ["--algos", "bc", "--datasets", "pendulum-medium", "--seeds", "0", "--workers"]
        main, argv = sweep.main, [*base, "1" if "--address" not in argv else "2", *argv]
    elif tool == "locomotion":
        main = locomotion.main
    else:
        main, argv = policies_train.main, [*argv, "--out", str(tmp_path / "weights")]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert message in line
    assert not (tmp_path / "weights").exists() and not (tmp_path / "s").exists()
