"""Tests for deep.data: D4RL semantics, export round trip, validation, Minari, normalisation.

The D4RL oracle is ``reference_qlearning`` below: a plain loop written from d4rl's
``qlearning_dataset(env, terminate_on_end=False)`` (d4rl/__init__.py), independent of the
vectorised loader. Tiny files also have their kept rows listed by hand.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

from deep.data import (
    DatasetError,
    ObservationNormalizer,
    OfflineDataset,
    ReplaySampler,
    builtin,
    d4rl_name,
    describe,
    episode_returns,
    export_d4rl,
    infer_env_id,
    load_dataset,
    main,
    normalize_dataset,
    returns_to_go,
    save_npz,
    validate_dataset,
)

REPO = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def reference_qlearning(
    raw: dict[str, np.ndarray], max_episode_steps: int | None = None
) -> dict[str, np.ndarray]:
    """d4rl.qlearning_dataset(env, dataset=raw, terminate_on_end=False), one row at a time."""
    n = raw["rewards"].shape[0]
    out: dict[str, list[Any]] = {
        "observations": [],
        "actions": [],
        "rewards": [],
        "next_observations": [],
        "terminals": [],
    }
    episode_step = 0
    for i in range(n - 1):
        if "timeouts" in raw:
            final = bool(raw["timeouts"][i])
        else:
            assert max_episode_steps is not None
            final = episode_step == max_episode_steps - 1
        if final:
            episode_step = 0
            continue
        if bool(raw["terminals"][i]):
            episode_step = 0
        out["observations"].append(raw["observations"][i].astype(np.float32))
        out["actions"].append(raw["actions"][i].astype(np.float32))
        out["rewards"].append(np.float32(raw["rewards"][i]))
        out["next_observations"].append(raw["observations"][i + 1].astype(np.float32))
        out["terminals"].append(np.bool_(raw["terminals"][i]))
        episode_step += 1
    return {k: np.array(v) for k, v in out.items()}


def write_h5(path: Path, arrays: dict[str, np.ndarray], **attrs: object) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        for k, value in attrs.items():
            f.attrs[k] = value
    return path


def read_h5(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: np.asarray(f[k][()]) for k in f if isinstance(f[k], h5py.Dataset)}


def raw_d4rl(n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """A D4RL-layout file body: row i's observation starts with i so rows are recognisable.

    Row 3 is terminal, row 7 a timeout, row 9 both, row 11 (the last) neither.
    """
    rng = np.random.default_rng(seed)
    obs = np.column_stack([np.arange(n), rng.normal(size=(n, 2))]).astype(np.float32)
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    terminals[[3, 9]] = True
    timeouts[[7, 9]] = True
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def assert_same_transitions(ds: OfflineDataset, expected: dict[str, np.ndarray]) -> None:
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        got = getattr(ds, key)
        np.testing.assert_array_equal(got, expected[key], err_msg=key)
        assert got.dtype == expected[key].dtype, key


def mixed_dataset(seed: int = 1) -> OfflineDataset:
    """Transitions with a terminal, a truncation and a run of non-contiguous transitions.

    Episode A: 4 contiguous steps, the last terminal. Episode B: 3 contiguous steps truncated
    by a time limit. Then 5 isolated transitions (next observation unrelated to the next row),
    one of them terminal, and finally one contiguous pair.
    """
    rng = np.random.default_rng(seed)
    obs_dim, act_dim = 3, 2

    def chain(length: int) -> tuple[np.ndarray, np.ndarray]:
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        return states[:-1], states[1:]

    parts = [chain(4), chain(3), *[chain(1) for _ in range(5)], chain(2)]
    obs = np.concatenate([p[0] for p in parts])
    nxt = np.concatenate([p[1] for p in parts])
    n = obs.shape[0]
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    terminals[3] = True  # end of A
    timeouts[6] = True  # end of B
    terminals[9] = True  # one of the isolated transitions
    return OfflineDataset(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        rewards=np.asarray(rng.normal(size=n), dtype=np.float32),
        next_observations=nxt,
        terminals=terminals,
        timeouts=timeouts,
        name="mixed",
        env_id="Hopper-v5",
    )


# ---------------------------------------------------------------------------------------------
# D4RL HDF5 reading
# ---------------------------------------------------------------------------------------------


def test_hdf5_matches_qlearning_dataset(tmp_path: Path) -> None:
    raw = raw_d4rl()
    extra = {
        # d4rl ignores these: next_observations (v2 files carry it) and nested info arrays.
        "next_observations": np.full_like(raw["observations"], 7.0),
        "infos/qpos": np.zeros((12, 5)),
        "metadata/algorithm": np.array(b"SAC"),
    }
    path = write_h5(tmp_path / "hopper_medium-v2.hdf5", {**raw, **extra})
    ds = load_dataset(path)

    assert_same_transitions(ds, reference_qlearning(raw))
    # By hand: rows 0..10 can start a transition (11 is last); 7 and 9 are timeouts.
    kept = [0, 1, 2, 3, 4, 5, 6, 8, 10]
    np.testing.assert_array_equal(ds.observations[:, 0], kept)
    np.testing.assert_array_equal(ds.next_observations[:, 0], np.add(kept, 1))
    np.testing.assert_array_equal(np.flatnonzero(ds.terminals), [3])  # row 3; row 9 dropped
    # The recorded trajectory stops after kept rows 6 (row 7 dropped), 8 (row 9), 10 (end).
    assert ds.timeouts is not None
    np.testing.assert_array_equal(ds.observations[ds.timeouts, 0], [6, 8, 10])
    assert ds.name == "hopper-medium-v2"
    assert ds.env_id == "Hopper-v5"
    assert not ds.discrete
    np.testing.assert_array_equal(ds.action_low, [-1, -1])


def test_hdf5_without_timeouts_needs_max_episode_steps(tmp_path: Path) -> None:
    raw = raw_d4rl(n=10)
    del raw["timeouts"]
    raw["terminals"][:] = False
    raw["terminals"][2] = True
    path = write_h5(tmp_path / "no_timeouts.hdf5", raw)

    with pytest.raises(DatasetError, match=r"no 'timeouts' key.*max_episode_steps"):
        load_dataset(path)

    ds = load_dataset(path, max_episode_steps=4)
    assert_same_transitions(ds, reference_qlearning(raw, max_episode_steps=4))
    # By hand, d4rl's counter: rows 0,1 -> 1,2; row 2 terminal resets to 0 then +1 = 1;
    # rows 3,4 -> 2,3; row 5 sees 3 == 4 - 1, is dropped and resets; rows 6,7,8 kept.
    np.testing.assert_array_equal(ds.observations[:, 0], [0, 1, 2, 3, 4, 6, 7, 8])


def test_rewards_and_flags_of_shape_n_by_1_are_flattened(tmp_path: Path) -> None:
    raw = raw_d4rl()
    column = {k: raw[k][:, None] for k in ("rewards", "terminals", "timeouts")}
    path = write_h5(tmp_path / "cols.h5", {**raw, **column})
    assert_same_transitions(load_dataset(path), reference_qlearning(raw))


def test_name_and_env_id(tmp_path: Path) -> None:
    assert d4rl_name("walker2d_medium_replay-v2") == "walker2d-medium-replay-v2"
    assert d4rl_name("my_data") == "my_data"
    assert infer_env_id("halfcheetah-expert-v2") == "HalfCheetah-v5"
    assert infer_env_id("my_data") is None
    raw = raw_d4rl()
    path = write_h5(tmp_path / "x.hdf5", raw, name="walker2d-medium-v2")
    ds = load_dataset(path)
    assert (ds.name, ds.env_id) == ("walker2d-medium-v2", "Walker2d-v5")
    ds = load_dataset(path, name="custom", env_id="Pendulum-v1")
    assert (ds.name, ds.env_id) == ("custom", "Pendulum-v1")


def test_npz_in_d4rl_layout(tmp_path: Path) -> None:
    raw = raw_d4rl()
    np.savez(tmp_path / "halfcheetah_random-v2.npz", **raw)  # type: ignore[arg-type]
    ds = load_dataset(tmp_path / "halfcheetah_random-v2.npz")
    assert_same_transitions(ds, reference_qlearning(raw))
    assert ds.env_id == "HalfCheetah-v5"


# ---------------------------------------------------------------------------------------------
# Export round trip
# ---------------------------------------------------------------------------------------------


def expected_stops(ds: OfflineDataset) -> np.ndarray:
    """Non-terminal transitions after which the recorded trajectory stops (loop, by definition)."""
    n = len(ds)
    assert ds.timeouts is not None
    out = np.zeros(n, dtype=bool)
    for j in range(n):
        if ds.terminals[j]:
            continue
        last = j == n - 1
        gap = not last and not np.array_equal(ds.next_observations[j], ds.observations[j + 1])
        out[j] = last or gap or bool(ds.timeouts[j])
    return out


def test_export_round_trip_is_exact(tmp_path: Path) -> None:
    ds = mixed_dataset()
    summary = export_d4rl(ds, tmp_path / "mixed.hdf5")
    back = load_dataset(summary.path)

    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key), err_msg=key)
    assert back.timeouts is not None
    np.testing.assert_array_equal(back.timeouts, expected_stops(ds))
    assert (back.name, back.env_id) == ("mixed", "Hopper-v5")
    # Padding rows: after the terminal of A (3), the timeout of B (6), each isolated transition
    # (7..11) and the end of the data (13), so 14 transitions + 8 padding rows.
    assert (summary.transitions, summary.padding_rows, summary.rows) == (14, 8, 22)

    # d4rl itself (the reference loop on the raw file) reads the same transitions.
    rows = read_h5(summary.path)
    assert_same_transitions(back, reference_qlearning(rows))
    assert set(rows) == {
        "observations",
        "actions",
        "rewards",
        "terminals",
        "timeouts",
        "next_observations",
    }


def test_export_of_a_d4rl_file_reproduces_its_transitions(tmp_path: Path) -> None:
    raw = raw_d4rl(n=40, seed=3)
    raw["terminals"][[15, 30]] = True
    raw["timeouts"][[20, 21, 38]] = True  # two timeouts in a row: row 21's obs is never used
    first = load_dataset(write_h5(tmp_path / "a.hdf5", raw))
    again = load_dataset(export_d4rl(first, tmp_path / "b.hdf5").path)
    assert_same_transitions(again, reference_qlearning(raw))
    assert first.timeouts is not None and again.timeouts is not None
    np.testing.assert_array_equal(again.timeouts, first.timeouts)


def test_export_round_trip_discrete_and_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 9
    obs = rng.normal(size=(n + 1, 4)).astype(np.float32)
    ds = OfflineDataset(
        observations=obs[:-1],
        actions=rng.integers(0, 3, size=n),
        rewards=np.ones(n, np.float32),
        next_observations=obs[1:],
        terminals=np.eye(1, n, 4, dtype=bool)[0],  # terminal at 4, then s' continues anyway
        discrete=True,
        n_actions=3,
        name="toy-discrete",
    )
    back = load_dataset(export_d4rl(ds, tmp_path / "d.h5").path)  # n_actions from the file
    assert back.discrete and back.n_actions == 3 and back.actions.dtype == np.int64
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key), err_msg=key)

    via_npz = load_dataset(save_npz(ds, tmp_path / "d.npz"))
    assert via_npz.discrete and via_npz.n_actions == 3 and via_npz.name == "toy-discrete"
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(getattr(via_npz, key), getattr(ds, key), err_msg=key)


def test_episode_returns_split_at_ends() -> None:
    ds = mixed_dataset()
    # Segments: A (0..3), B (4..6), isolated 7, 8, 9, 10, 11, and the pair 12..13. The pair
    # ends with neither a terminal nor a timeout: an episode cut off by the end of the data,
    # not counted (as d4rl.sequence_dataset drops it).
    bounds = [(0, 4), (4, 7), (7, 8), (8, 9), (9, 10), (10, 11), (11, 12)]
    expected = [ds.rewards[a:b].astype(np.float64).sum() for a, b in bounds]
    np.testing.assert_allclose(episode_returns(ds), expected)
    # Marked as a timeout, the last segment is a finished episode and counts.
    assert ds.timeouts is not None
    timeouts = ds.timeouts.copy()
    timeouts[-1] = True
    finished = episode_returns(replace(ds, timeouts=timeouts))
    np.testing.assert_allclose(finished, [*expected, ds.rewards[12:14].astype(np.float64).sum()])


def test_describe_without_a_finished_episode() -> None:
    ds = mixed_dataset()
    assert ds.timeouts is not None
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    tail = replace(ds, **{k: getattr(ds, k)[12:] for k in keys})  # the unfinished pair only
    assert episode_returns(tail).shape == (0,)
    assert "segments: 0 (no transition ends an episode)" in describe(tail)


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------


def _drop(key: str):  # type: ignore[no-untyped-def]
    def f(raw: dict[str, np.ndarray]) -> None:
        del raw[key]

    return f


def _set(key: str, index: tuple[int, ...], value: float):  # type: ignore[no-untyped-def]
    def f(raw: dict[str, np.ndarray]) -> None:
        raw[key] = raw[key].astype(np.float64)
        raw[key][index] = value

    return f


def _replace(key: str, make):  # type: ignore[no-untyped-def]
    def f(raw: dict[str, np.ndarray]) -> None:
        raw[key] = make(raw[key])

    return f


BAD_FILES = {
    "missing actions": (_drop("actions"), r"missing key.*'actions'"),
    "missing terminals": (_drop("terminals"), r"missing key.*'terminals'"),
    "short rewards": (
        _replace("rewards", lambda a: a[:-1]),
        r"'rewards' has 11 rows but 'observations' has 12",
    ),
    "nan observation": (
        _set("observations", (5, 1), np.nan),
        r"'observations' row 5, column 1 is not finite",
    ),
    "inf reward": (_set("rewards", (4,), np.inf), r"'rewards' row 4 is not finite"),
    "float32 overflow": (
        _set("actions", (2, 1), 1e39),
        r"'actions' row 2, column 1 is not finite \(as float32\)",
    ),
    "1-D observations": (
        _replace("observations", lambda a: a[:, 0]),
        r"'observations' must be 2-D \(N, obs_dim\), got shape \(12,\)",
    ),
    "3-D actions": (
        _replace("actions", lambda a: a[:, :, None]),
        r"continuous 'actions' must be 2-D",
    ),
    "action outside [-1, 1]": (
        _set("actions", (3, 0), 1.5),
        r"'actions' row 3, column 0 = 1\.5 is outside the action space \[-1, 1\]",
    ),
    "terminal not 0/1": (
        _set("terminals", (6,), 2.0),
        r"'terminals' row 6 is 2\.0, expected 0 or 1",
    ),
    "timeouts 2-D": (
        _replace("timeouts", lambda a: np.stack([a, a], axis=1)),
        r"'timeouts' must be 1-D",
    ),
    "integer actions without n_actions": (
        _replace("actions", lambda a: np.zeros(a.shape[0], dtype=np.int64)),
        r"1-D integers.*pass n_actions",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_raises_naming_key_and_row(tmp_path: Path, case: str) -> None:
    mutate, message = BAD_FILES[case]
    raw = raw_d4rl()
    mutate(raw)
    path = write_h5(tmp_path / "bad.hdf5", raw)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_action_bounds_can_be_overridden(tmp_path: Path) -> None:
    raw = raw_d4rl()
    raw["actions"][3, 0] = 1.5
    path = write_h5(tmp_path / "wide.hdf5", raw)
    kept = load_dataset(path, action_low=-2.0, action_high=2.0, rescale_actions=False)
    np.testing.assert_array_equal(kept.action_high, [2, 2])
    assert kept.actions[3, 0] == np.float32(1.5)
    # By default the given bounds are the data's units: a = 2 (u + 2) / 4 - 1 = u / 2.
    ds = load_dataset(path, action_low=-2.0, action_high=2.0)
    np.testing.assert_array_equal(ds.action_high, [1, 1])
    assert ds.actions[3, 0] == np.float32(0.75)
    assert load_dataset(path, check_action_bounds=False).action_low is None
    with pytest.raises(DatasetError, match=r"row 3, column 0 = 1\.5 .*\[-1, 1\.2\]"):
        load_dataset(path, action_high=np.array([1.2, 1.2]))


def test_discrete_action_out_of_range(tmp_path: Path) -> None:
    raw = raw_d4rl()
    raw["actions"] = np.array([0, 1, 3, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    path = write_h5(tmp_path / "disc.hdf5", raw)
    with pytest.raises(DatasetError, match=r"'actions' row 2 holds action 3, outside \[0, 3\)"):
        load_dataset(path, n_actions=3)
    assert load_dataset(path, n_actions=4).n_actions == 4


def test_transition_npz_and_dataset_validation(tmp_path: Path) -> None:
    ds = mixed_dataset()
    bad_next = ds.next_observations.copy()
    bad_next[2, 0] = np.nan
    with pytest.raises(DatasetError, match=r"'next_observations' row 2, column 0 is not finite"):
        validate_dataset(OfflineDataset(**{**ds.__dict__, "next_observations": bad_next}))
    np.savez(
        tmp_path / "t.npz",
        observations=ds.observations,
        actions=ds.actions,
        rewards=ds.rewards,
        next_observations=ds.next_observations[:, :2],
        terminals=ds.terminals,
    )
    with pytest.raises(DatasetError, match=r"'next_observations' has shape \(14, 2\)"):
        load_dataset(tmp_path / "t.npz")


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.hdf5"):
        load_dataset(tmp_path / "nope.hdf5")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"unsupported suffix '\.csv'.*minari:"):
        load_dataset(tmp_path / "data.csv")


# ---------------------------------------------------------------------------------------------
# Built-in datasets (deep.data.builtin's generator is replaced by a stand-in)
# ---------------------------------------------------------------------------------------------


def test_builtin_delegates_to_deep_data_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = mixed_dataset()
    monkeypatch.setattr(builtin, "builtin_names", lambda: ["pendulum-random", "cartpole-random"])
    monkeypatch.setattr(
        builtin,
        "load_builtin",
        lambda name: OfflineDataset(
            **{**ds.__dict__, "terminals": ds.terminals.astype(np.float32), "name": name}
        ),
    )

    got = load_dataset("pendulum-random")
    assert got.name == "pendulum-random"
    assert got.terminals.dtype == np.bool_  # validated and made canonical
    np.testing.assert_array_equal(got.terminals, ds.terminals)
    with pytest.raises(KeyError, match=r"unknown dataset 'ant-medium'.*cartpole-random.*minari:"):
        load_dataset("ant-medium")  # hopper-medium is a built-in now (deep.data.locomotion)


# ---------------------------------------------------------------------------------------------
# Minari (datasets created in a temporary store with minari itself)
# ---------------------------------------------------------------------------------------------


def rollouts(env_id: str, episodes: int, max_steps: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Random-policy episodes; the last step of an episode cut at max_steps is a truncation."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        ep: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "term", "trunc")}
        ep["obs"].append(obs)
        for t in range(max_steps):
            a = env.action_space.sample()
            obs, r, term, trunc, _ = env.step(a)
            trunc = trunc or (t == max_steps - 1 and not term)
            for k, v in zip(
                ("obs", "act", "rew", "term", "trunc"), (obs, a, r, term, trunc), strict=True
            ):
                ep[k].append(v)
            if term or trunc:
                break
        out.append({k: np.array(v) for k, v in ep.items()})
    env.close()
    return out


def create_minari(dataset_id: str, env_id: str, episodes: list[dict[str, np.ndarray]]) -> None:
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    # EpisodeBuffer built whole: its step-by-step add_step_data (used by DataCollector) needs
    # jax, creating from complete buffers does not.
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=ep["obs"],
            actions=ep["act"],
            rewards=list(ep["rew"]),
            terminations=list(ep["term"]),
            truncations=list(ep["trunc"]),
            infos={},
        )
        for i, ep in enumerate(episodes)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari warns about missing author/description
        minari.create_dataset_from_buffers(dataset_id, buffers, env=env_id)


@pytest.fixture(scope="module")
def minari_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    store = tmp_path_factory.mktemp("minari")
    pendulum = rollouts("Pendulum-v1", episodes=3, max_steps=15, seed=0)
    pendulum[1]["term"][-1] = True  # Pendulum never terminates; mark one to test terminals
    pendulum[1]["trunc"][-1] = False
    cartpole = rollouts("CartPole-v1", episodes=4, max_steps=40, seed=1)
    bad = [{**pendulum[0], "act": pendulum[0]["act"].copy()}]
    bad[0]["act"][3, 0] = 2.5
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        create_minari("test/pendulum/random-v0", "Pendulum-v1", pendulum)
        create_minari("test/cartpole/random-v0", "CartPole-v1", cartpole)
        create_minari("test/pendulum/bad-v0", "Pendulum-v1", bad)
    yield {"store": store, "pendulum": pendulum, "cartpole": cartpole}


def concat_transitions(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {
        "observations": np.concatenate([e["obs"][:-1] for e in episodes]).astype(np.float32),
        "next_observations": np.concatenate([e["obs"][1:] for e in episodes]).astype(np.float32),
        "actions": np.concatenate([e["act"] for e in episodes]),
        "rewards": np.concatenate([e["rew"] for e in episodes]).astype(np.float32),
        "terminals": np.concatenate([e["term"] for e in episodes]),
        "timeouts": np.concatenate([e["trunc"] for e in episodes]),
    }


def test_minari_continuous(minari_store: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_store["store"]))
    ds = load_dataset("minari:test/pendulum/random-v0")
    exp = concat_transitions(minari_store["pendulum"])
    torque = exp["actions"].astype(np.float32)
    # Pendulum's torque u lies in [-2, 2]; stored actions a = 2 (u + 2) / 4 - 1 = u / 2.
    exp["actions"] = torque / 2
    assert_same_transitions(ds, exp)
    assert ds.timeouts is not None
    np.testing.assert_array_equal(ds.timeouts, exp["timeouts"] & ~exp["terminals"])
    assert len(ds) == 45 and int(ds.terminals.sum()) == 1 and int(ds.timeouts.sum()) == 2
    assert (ds.env_id, ds.name, ds.discrete) == ("Pendulum-v1", "test/pendulum/random-v0", False)
    np.testing.assert_array_equal(ds.action_high, [1.0])

    raw_units = load_dataset("minari:test/pendulum/random-v0", rescale_actions=False)
    np.testing.assert_array_equal(raw_units.actions, torque)
    np.testing.assert_array_equal(raw_units.action_low, [-2.0])


def test_minari_discrete(minari_store: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_store["store"]))
    ds = load_dataset("minari:test/cartpole/random-v0")
    exp = concat_transitions(minari_store["cartpole"])
    exp["actions"] = exp["actions"].astype(np.int64)
    assert_same_transitions(ds, exp)
    assert ds.discrete and ds.n_actions == 2 and ds.act_dim == 2 and ds.env_id == "CartPole-v1"


def test_minari_errors(minari_store: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_store["store"]))
    with pytest.raises(
        DatasetError, match=r"'actions' transition 3 \(episode 0, step 3\), column 0 = 2\.5"
    ):
        load_dataset("minari:test/pendulum/bad-v0")
    with pytest.raises(FileNotFoundError, match=r"never downloads"):
        load_dataset("minari:test/pendulum/missing-v0")


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def small_dataset() -> OfflineDataset:
    obs = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=np.float32)
    return OfflineDataset(
        observations=obs,
        actions=np.zeros((3, 1), np.float32),
        rewards=np.zeros(3, np.float32),
        next_observations=obs + 1.0,
        terminals=np.zeros(3, bool),
    )


def test_normalizer_statistics_and_backends() -> None:
    ds = small_dataset()
    norm = ObservationNormalizer.from_dataset(ds, eps=1e-3)
    # By hand: column 0 has mean 2 and population std sqrt((4 + 0 + 4) / 3); column 1 is
    # constant, so its std is eps alone.
    std0 = np.sqrt(8 / 3) + 1e-3
    np.testing.assert_allclose(norm.mean, [2.0, 1.0])
    np.testing.assert_allclose(norm.std, [std0, 1e-3], rtol=1e-6)
    x = np.array([[4.0, 1.0], [0.0, 3.0]], np.float32)
    want = np.array([[2 / std0, 0.0], [-2 / std0, 2 / 1e-3]])
    np.testing.assert_allclose(norm(x), want, rtol=1e-5)
    t = norm(torch.tensor(x, dtype=torch.float64))
    assert t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(norm.denormalize(norm(x)), x, atol=1e-5)


def test_normalizer_state_dict_survives_weights_only_load() -> None:
    norm = ObservationNormalizer.from_dataset(mixed_dataset())
    buf = io.BytesIO()
    torch.save({"normalizer": norm.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["normalizer"]
    again = ObservationNormalizer.from_state_dict(state)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again(x), norm(x), rtol=0, atol=0)
    with pytest.raises(KeyError, match="std"):
        ObservationNormalizer.from_state_dict({"mean": state["mean"]})


def test_normalize_dataset_returns_a_copy() -> None:
    ds = small_dataset()
    before = ds.observations.copy()
    out, norm = normalize_dataset(ds)
    np.testing.assert_array_equal(ds.observations, before)
    np.testing.assert_allclose(out.observations, norm(before))
    np.testing.assert_allclose(out.next_observations, norm(before + 1.0))
    np.testing.assert_allclose(out.observations.mean(axis=0), [0.0, 0.0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# ReplaySampler
# ---------------------------------------------------------------------------------------------


def indexed_dataset(n: int = 50, discrete: bool = False) -> OfflineDataset:
    """Row i carries i in every field, so a batch row can be checked for consistency."""
    i = np.arange(n, dtype=np.float32)
    return OfflineDataset(
        observations=np.stack([i, -i], axis=1),
        actions=np.arange(n) % 4 if discrete else (i / n)[:, None],
        rewards=i,
        next_observations=np.stack([i + 0.5, -i], axis=1),
        terminals=(np.arange(n) % 7 == 0),
        discrete=discrete,
        n_actions=4 if discrete else None,
    )


def test_sampler_shapes_dtypes_device_and_row_consistency() -> None:
    sampler = ReplaySampler(indexed_dataset(), "cpu", torch.Generator("cpu").manual_seed(0))
    b = sampler.sample(64)
    assert b.observations.shape == (64, 2) and b.next_observations.shape == (64, 2)
    assert b.actions.shape == (64, 1) and b.rewards.shape == (64,) and b.terminals.shape == (64,)
    for t in b[:5]:
        assert t.device == torch.device("cpu") and t.dtype == torch.float32
    assert b.returns_to_go is None  # only when asked for
    idx = b.rewards
    torch.testing.assert_close(b.observations[:, 0], idx)
    torch.testing.assert_close(b.next_observations[:, 0], idx + 0.5)
    torch.testing.assert_close(b.actions[:, 0], idx / 50)
    torch.testing.assert_close(b.terminals, (idx.long() % 7 == 0).float())
    assert len(torch.unique(idx)) > 20  # draws spread over the 50 rows

    discrete = ReplaySampler(indexed_dataset(discrete=True), "cpu", torch.Generator())
    d = discrete.sample(8)
    assert d.actions.shape == (8,) and d.actions.dtype == torch.int64
    torch.testing.assert_close(d.actions, d.rewards.long() % 4)


def test_sampler_is_reproducible_from_the_generator() -> None:
    ds = indexed_dataset()
    a = ReplaySampler(ds, "cpu", torch.Generator().manual_seed(7))
    b = ReplaySampler(ds, "cpu", torch.Generator().manual_seed(7))
    c = ReplaySampler(ds, "cpu", torch.Generator().manual_seed(8))
    first, second = a.sample(32), a.sample(32)
    torch.testing.assert_close(b.sample(32).rewards, first.rewards)
    torch.testing.assert_close(b.sample(32).rewards, second.rewards)
    assert not torch.equal(first.rewards, second.rewards)
    assert not torch.equal(c.sample(32).rewards, first.rewards)


def test_sampler_rejects_bad_arguments() -> None:
    ds = indexed_dataset()
    with pytest.raises(ValueError, match=r"generator is on cpu.*meta"):
        ReplaySampler(ds, "meta", torch.Generator())
    with pytest.raises(ValueError, match="batch_size"):
        ReplaySampler(ds, "cpu", torch.Generator()).sample(0)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_cli_export_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = raw_d4rl()
    src = write_h5(tmp_path / "hopper_medium-v2.hdf5", raw)
    out = tmp_path / "out" / "copy.hdf5"
    assert main(["export", str(src), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "9 transitions" in printed and str(out) in printed
    assert_same_transitions(load_dataset(out), reference_qlearning(raw))

    proc = subprocess.run(
        [sys.executable, "-m", "deep.data", "info", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    assert "transitions: 9" in proc.stdout

    assert main(["info", str(tmp_path / "table.csv")]) == 2
    assert "unsupported suffix '.csv'" in capsys.readouterr().err
    assert "name: hopper-medium-v2" in proc.stdout and "env_id: Hopper-v5" in proc.stdout


# --- returns-to-go (Cal-QL's Monte-Carlo values) ---------------------------------------------


def _three_segments() -> OfflineDataset:
    # Episode A: 3 steps ending in a terminal; episode B: 2 steps cut by a timeout; episode C:
    # 2 steps cut by the end of the data. Observations chain inside each episode only.
    obs = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0], [21.0]], dtype=np.float32)
    nxt = np.array([[1.0], [2.0], [3.0], [11.0], [12.0], [21.0], [22.0]], dtype=np.float32)
    return validate_dataset(
        OfflineDataset(
            observations=obs,
            actions=np.zeros((7, 1), dtype=np.float32),
            rewards=np.array([1.0, 2.0, 4.0, 1.0, 1.0, 3.0, 5.0], dtype=np.float32),
            next_observations=nxt,
            terminals=np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool),
            timeouts=np.array([0, 0, 0, 0, 1, 0, 0], dtype=bool),
        )
    )


def test_returns_to_go_hand_worked() -> None:
    g = 0.5
    expected = [
        1 + g * 2 + g * g * 4,  # 3.0
        2 + g * 4,  # 4.0
        4.0,  # the terminal: its reward alone
        1 + g * 1,  # the timeout ends the sum (no bootstrap)
        1.0,
        3 + g * 5,  # the end of the data ends it too
        5.0,
    ]
    np.testing.assert_allclose(returns_to_go(_three_segments(), g), expected)
    # The agent's reward transform applies before discounting: r' = 2 r - 1.
    scaled = returns_to_go(_three_segments(), g, reward_scale=2.0, reward_bias=-1.0)
    assert scaled[2] == pytest.approx(7.0) and scaled[1] == pytest.approx(3.0 + g * 7.0)
    with pytest.raises(ValueError, match="gamma"):
        returns_to_go(_three_segments(), 1.5)


def test_sampler_puts_returns_to_go_in_the_batch_only_when_asked() -> None:
    data = _three_segments()
    plain = ReplaySampler(data, "cpu", torch.Generator().manual_seed(0)).sample(64)
    assert plain.returns_to_go is None
    batch = ReplaySampler(
        data, "cpu", torch.Generator().manual_seed(0), returns_to_go_gamma=0.5
    ).sample(64)
    assert batch.returns_to_go is not None and batch.returns_to_go.shape == (64,)
    # Each row's return-to-go is the one of its own transition (matched by its observation).
    table = dict(zip(data.observations[:, 0].tolist(), returns_to_go(data, 0.5), strict=True))
    for o, g in zip(batch.observations[:, 0].tolist(), batch.returns_to_go.tolist(), strict=True):
        assert g == pytest.approx(table[o])
    # The same draws as without it: asking for it changes nothing else.
    torch.testing.assert_close(batch.observations, plain.observations)
