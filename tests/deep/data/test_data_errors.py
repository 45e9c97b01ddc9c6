"""Tests for the dataset side of the command lines: every bad file, cache or export target
ends in one line that names it and says what to do, on real files (h5py files cut short,
garbage bytes, zip archives cut short), and every flag those lines suggest works."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from deep import train
from deep.data import (
    DatasetError,
    builtin,
    cache_path,
    formats,
    generate_builtin,
    load_builtin,
    load_dataset,
    main,
    save_npz,
)
from deep.files import atomic_write
from tests.deep.data.test_data import write_h5

TINY_TRAIN = (
    "bc --hidden 8 --steps 2 --batch-size 16 --log-every 2 --eval-every 2 --eval-episodes 1 "
    "--device cpu --no-progress --no-tensorboard --no-plots --env-id Pendulum-v1"
).split()


def d4rl_arrays(n: int = 40, *, timeouts: bool = True, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Pendulum-shaped D4RL rows (obs_dim 3, act_dim 1) with actions in [-scale, scale]."""
    rng = np.random.default_rng(0)
    arrays = {
        "observations": rng.normal(size=(n, 3)).astype(np.float32),
        "actions": (scale * rng.uniform(-1, 1, size=(n, 1))).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, dtype=bool),
    }
    if timeouts:
        arrays["timeouts"] = np.arange(n) % 20 == 19
    return arrays


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Unreadable files
# ---------------------------------------------------------------------------------------------


def unreadable_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = write_h5(tmp_path / "good.hdf5", d4rl_arrays())
    cut = truncate(write_h5(tmp_path / "cut.hdf5", d4rl_arrays()))
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes())
    np.savez(tmp_path / "cut.npz", **d4rl_arrays())
    cut_npz = truncate(tmp_path / "cut.npz")
    text_npz = tmp_path / "notes.npz"
    text_npz.write_text("not an archive\n")
    assert load_dataset(good).actions.shape == (38, 1)  # the same arrays, whole, are fine
    return {
        "truncated hdf5": (cut, "HDF5"),
        "garbage hdf5": (garbage, "HDF5"),
        "truncated npz": (cut_npz, "npz"),
        "text npz": (text_npz, "npz"),
    }


def test_unreadable_files_are_dataset_errors_naming_the_file(tmp_path: Path) -> None:
    for path, kind in unreadable_files(tmp_path).values():
        with pytest.raises(DatasetError) as info:
            load_dataset(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not a readable {kind} file (truncated or corrupt?)")


def test_info_and_train_on_unreadable_files_end_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = unreadable_files(tmp_path)
    for path, kind in files.values():
        assert main(["info", str(path)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(path) in line and f"not a readable {kind} file" in line
    # Training stops before anything is written, with the same line.
    for name in ("truncated hdf5", "truncated npz"):
        path, kind = files[name]
        out = tmp_path / f"run-{path.stem}"
        assert train.main([*TINY_TRAIN, "--dataset", str(path), "--out", str(out)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"not a readable {kind} file" in line
    # --debug still shows where it came from.
    with pytest.raises(DatasetError):
        main(["info", str(files["garbage hdf5"][0]), "--debug"])


# ---------------------------------------------------------------------------------------------
# The built-in cache
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad arrays"])
def test_unreadable_cache_file_is_regenerated(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, n = "pendulum-random", 200
    fresh = generate_builtin(name, n)
    path = cache_path(name, n, cache_dir=tmp_path)
    save_npz(fresh, path)
    if damage == "truncated":
        truncate(path, 0.6)
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 500)
    else:  # a valid archive whose arrays do not fit together
        np.savez(path.open("wb"), observations=np.zeros((3, 3)), actions=np.zeros(2))
    with caplog.at_level(logging.WARNING, logger=builtin.__name__):
        ds = load_builtin(name, n_transitions=n, cache_dir=tmp_path)
    assert any("regenerating pendulum-random" in r.getMessage() for r in caplog.records)
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(getattr(ds, key), getattr(fresh, key))
    # The cache file was replaced by a whole one: read back without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=builtin.__name__):
        again = load_builtin(name, n_transitions=n, cache_dir=tmp_path)
    assert not caplog.records
    np.testing.assert_array_equal(again.actions, fresh.actions)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def test_export_writes_by_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_h5(tmp_path / "src.hdf5", d4rl_arrays())
    expected = load_dataset(src)
    for suffix in (".npz", ".h5", ".hdf5"):
        out = tmp_path / f"copy{suffix}"
        assert main(["export", str(src), str(out)]) == 0
        assert str(out) in capsys.readouterr().out
        if suffix == ".npz":
            with np.load(out, allow_pickle=False) as z:  # a real npz archive
                assert "next_observations" in z.files
        else:
            assert h5py.is_hdf5(out)
        back = load_dataset(out)
        np.testing.assert_array_equal(back.actions, expected.actions)
        np.testing.assert_array_equal(back.next_observations, expected.next_observations)


def test_export_refuses_bad_targets_and_overwrites_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_h5(tmp_path / "src.hdf5", d4rl_arrays())
    folder = tmp_path / "folder.hdf5"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    foreign = tmp_path / "notes.npz"
    foreign.write_text("my notes\n")
    cases = {
        "folder": (folder, "it is a folder"),
        "below a file": (a_file / "out.hdf5", f"{a_file} is a file, not a folder"),
        "wrong suffix": (tmp_path / "out.csv", "unsupported suffix '.csv'; accepted: .hdf5 or .h5"),
        "no suffix": (tmp_path / "out", "unsupported suffix ''"),
        "existing file": (foreign, "exists; pass --force to replace it"),
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for target, expected in cases.values():
        assert main(["export", str(src), str(target)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert expected in line and str(target) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert foreign.read_text() == "my notes\n" and a_file.read_text() == "x"
    assert main(["export", str(src), str(foreign), "--force"]) == 0
    assert len(load_dataset(foreign)) == len(load_dataset(src))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_to_a_read_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_h5(tmp_path / "src.hdf5", d4rl_arrays())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(["export", str(src), str(locked / "out.hdf5")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write {locked / 'out.hdf5'}" in line
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(stat.S_IRWXU)


# ---------------------------------------------------------------------------------------------
# Flags the messages suggest: --max-episode-steps, --action-low/--action-high
# ---------------------------------------------------------------------------------------------


def test_file_without_timeouts_trains_with_max_episode_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_h5(tmp_path / "no_timeouts.hdf5", d4rl_arrays(timeouts=False))
    assert train.main([*TINY_TRAIN, "--dataset", str(path), "--out", str(tmp_path / "r0")]) == 2
    assert "--max-episode-steps N" in one_error_line(capsys.readouterr().err)
    bad = [*TINY_TRAIN, "--dataset", str(path), "--out", str(tmp_path / "r1")]
    assert train.main([*bad, "--max-episode-steps", "0"]) == 2
    assert "--max-episode-steps must be >= 1" in one_error_line(capsys.readouterr().err)

    out = tmp_path / "run"
    argv = [*TINY_TRAIN, "--dataset", str(path), "--out", str(out), "--max-episode-steps", "20"]
    assert train.main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["max_episode_steps"] == 20
    # d4rl's counter drops rows 19 and 39 (19 is the first episode's last step): 38 remain.
    assert len(load_dataset(path, max_episode_steps=20)) == 38
    assert main(["info", str(path), "--max-episode-steps", "20"]) == 0
    assert "transitions: 38" in capsys.readouterr().out


def test_bounds_in_attributes_are_rescaled_to_unit(tmp_path: Path) -> None:
    arrays = d4rl_arrays(scale=2.0)
    path = write_h5(
        tmp_path / "wide.hdf5", arrays, action_low=np.array([-2.0]), action_high=np.array([2.0])
    )
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.action_low, [-1.0])
    np.testing.assert_array_equal(ds.action_high, [1.0])
    kept = ~(np.arange(40) % 20 == 19)
    kept[-1] = False
    np.testing.assert_allclose(ds.actions, arrays["actions"][kept] / 2.0, rtol=1e-6)
    assert np.abs(ds.actions).max() > 0.9  # rescaled, not clipped
    # The same bounds in an npz file's attributes (save_npz's layout).
    npz = tmp_path / "wide.npz"
    np.savez(npz, **arrays, attr_action_low=np.array([-2.0]), attr_action_high=np.array([2.0]))
    np.testing.assert_allclose(load_dataset(npz).actions, ds.actions)
    # Kept in the stored units when asked.
    raw = load_dataset(path, rescale_actions=False)
    np.testing.assert_array_equal(raw.action_high, [2.0])
    np.testing.assert_array_equal(raw.actions, arrays["actions"][kept])


@pytest.mark.parametrize(
    ("low", "high"), [(np.array([1.0]), np.array([-1.0])), (np.array([-np.inf]), np.array([2.0]))]
)
def test_unusable_bounds_are_named(tmp_path: Path, low: np.ndarray, high: np.ndarray) -> None:
    path = write_h5(tmp_path / "bad.hdf5", d4rl_arrays(), action_low=low, action_high=high)
    with pytest.raises(DatasetError, match=r"unusable action bounds low=\[.*\], high=\[.*\]"):
        load_dataset(path)


def test_action_flags_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_h5(tmp_path / "wide.hdf5", d4rl_arrays(scale=2.0))
    assert main(["info", str(path)]) == 2
    assert "--action-low/--action-high" in one_error_line(capsys.readouterr().err)
    assert main(["info", str(path), "--action-low", "1", "--action-high", "-1"]) == 2
    assert "unusable action bounds low=[1.0], high=[-1.0]" in one_error_line(
        capsys.readouterr().err
    )
    out = tmp_path / "unit.npz"
    argv = ["export", str(path), str(out), "--action-low", "-2", "--action-high", "2"]
    assert main(argv) == 0
    capsys.readouterr()
    exported = load_dataset(out)
    assert np.abs(exported.actions).max() <= 1.0 and np.abs(exported.actions).max() > 0.9
    np.testing.assert_array_equal(exported.action_high, [1.0])
    # Built-in datasets already act in [-1, 1]: the flags are refused rather than ignored.
    assert main(["info", "pendulum-random", "--action-low", "-2"]) == 2
    assert "stores its actions in [-1, 1]" in one_error_line(capsys.readouterr().err)


def test_export_write_error_names_the_target_and_keeps_the_old_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a read-only folder or a full disk raises inside the atomic write (root ignores
    # permission bits, so the error is raised where the write would fail).
    src = write_h5(tmp_path / "src.hdf5", d4rl_arrays())
    old = tmp_path / "old.npz"
    old.write_bytes(b"previous")

    def failing(path: Path, write: object) -> None:
        def broken(fh: object) -> None:
            raise OSError(28, "No space left on device")

        atomic_write(path, broken)

    monkeypatch.setattr(formats, "atomic_write", failing)
    for target in (old, tmp_path / "new.hdf5"):
        assert main(["export", str(src), str(target), "--force"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write {target}: No space left on device" in line
    assert old.read_bytes() == b"previous" and not (tmp_path / "new.hdf5").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
