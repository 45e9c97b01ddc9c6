"""Built-in datasets and their behaviour policies (deep/data/builtin.py, deep/policies/).

The generators run for real but with small sizes (``n_transitions``), so the whole file takes
seconds; the full sizes are the same code with a larger count.
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from deep import data, envs
from deep.data import OfflineDataset, builtin, episode_returns
from deep.policies import PendulumSwingUp, UniformRandom
from deep.policies.scripted import (
    double_pendulum_linear_model,
    double_pendulum_lqr_gain,
    pendulum_linear_model,
    pendulum_lqr_gain,
)

TASKS = list(builtin.TASKS)
# Small per-task sizes: ~10 pendulum episodes, a few hundred cartpole/double-pendulum steps.
SMALL = {"pendulum": 2000, "cartpole": 1500, "inverted-double-pendulum": 1500}
ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def small(name: str, **kwargs: object) -> OfflineDataset:
    task = builtin.builtin_spec(name).task.key
    return builtin.generate_builtin(name, n_transitions=SMALL[task], **kwargs)  # type: ignore[arg-type]


def assert_same_arrays(a: OfflineDataset, b: OfflineDataset) -> None:
    for key in ARRAYS:
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype, key
        np.testing.assert_array_equal(x, y, err_msg=key)


def episode_slices(ds: OfflineDataset) -> list[slice]:
    assert ds.timeouts is not None
    ends = np.flatnonzero(ds.terminals | ds.timeouts)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [slice(int(s), int(e) + 1) for s, e in zip(starts, ends, strict=True)]


# ------------------------------------------------------------------------------ names
def test_builtin_names_are_task_times_quality_and_all_resolve() -> None:
    names = builtin.builtin_names()
    assert len(names) == len(builtin.TASKS) * len(builtin.QUALITIES) == 12
    assert "pendulum-medium-expert" in names and "cartpole-random" in names
    for name in names:
        spec = builtin.builtin_spec(name)
        assert f"{spec.task.key}-{spec.quality}" == name
        assert envs.resolve_env_id(name) == spec.task.env_id


def test_unknown_builtin_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown built-in dataset 'pendulum-median'.*pendulum"):
        builtin.load_builtin("pendulum-median")
    with pytest.raises(ValueError, match="n_transitions must be >= 1"):
        builtin.generate_builtin("pendulum-random", n_transitions=0)


# ------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("task", TASKS)
def test_generation_is_deterministic_and_seed_dependent(task: str) -> None:
    # "medium" draws policy noise as well as episode starts: both must be seeded.
    a, b = small(f"{task}-medium"), small(f"{task}-medium")
    assert_same_arrays(a, b)
    c = small(f"{task}-medium", seed=7)
    n = min(len(a), len(c))
    assert not np.array_equal(a.observations[:n], c.observations[:n])


def test_cache_hit_returns_identical_arrays_without_regenerating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, n = "cartpole-medium", 600
    first = builtin.load_builtin(name, n_transitions=n, cache_dir=tmp_path)
    path = builtin.cache_path(name, n, cache_dir=tmp_path)
    assert path.exists()
    # Atomic write: only the final file remains, no temporary left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert_same_arrays(first, builtin.generate_builtin(name, n_transitions=n))

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(builtin, "_collect", no_generation)
    second = builtin.load_builtin(name, n_transitions=n, cache_dir=tmp_path)
    assert_same_arrays(first, second)
    assert (second.discrete, second.n_actions, second.env_id, second.name) == (
        True,
        2,
        "CartPole-v1",
        name,
    )
    # A new generator version is a different file, so it must generate (and here, fail).
    monkeypatch.setattr(builtin, "GENERATOR_VERSION", builtin.GENERATOR_VERSION + 1)
    assert builtin.cache_path(name, n, cache_dir=tmp_path) != path
    with pytest.raises(AssertionError, match="cache should have been used"):
        builtin.load_builtin(name, n_transitions=n, cache_dir=tmp_path)


def test_unreadable_cache_file_is_regenerated(tmp_path: Path) -> None:
    name, n = "pendulum-random", 400
    path = builtin.cache_path(name, n, cache_dir=tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an npz file")
    ds = builtin.load_builtin(name, n_transitions=n, cache_dir=tmp_path)
    assert_same_arrays(ds, builtin.generate_builtin(name, n_transitions=n))
    assert_same_arrays(ds, builtin.load_builtin(name, n_transitions=n, cache_dir=tmp_path))


def test_cache_dir_comes_from_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CQL_COMPANION_DATA", str(tmp_path))
    assert builtin.default_cache_dir() == tmp_path
    builtin.load_builtin("cartpole-expert", n_transitions=500)
    assert builtin.cache_path("cartpole-expert", 500).exists()
    monkeypatch.delenv("CQL_COMPANION_DATA")
    assert builtin.default_cache_dir().parts[-2:] == ("cql-companion", "datasets")


def test_load_dataset_serves_validated_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # deep.data.load_dataset(name) -> load_builtin(name) at full size, then its validation,
    # which must accept the arrays unchanged (dtypes, ranges, flags already canonical).
    monkeypatch.setenv("CQL_COMPANION_DATA", str(tmp_path))
    assert set(builtin.builtin_names()) <= set(data.builtin_names())
    ds = data.load_dataset("cartpole-expert")
    assert len(ds) == builtin.DEFAULT_TRANSITIONS and ds.env_id == "CartPole-v1"
    assert_same_arrays(ds, builtin.load_builtin("cartpole-expert"))
    assert builtin.cache_path("cartpole-expert").parent == tmp_path


def test_cache_files_are_save_npz_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One npz format: a cache file loads as any .npz spec, with the dataset's metadata.
    name, n = "cartpole-random", 300
    ds = builtin.load_builtin(name, n_transitions=n, cache_dir=tmp_path)
    path = builtin.cache_path(name, n, cache_dir=tmp_path)
    via_spec = data.load_dataset(path)
    assert_same_arrays(ds, via_spec)
    assert (via_spec.name, via_spec.env_id, via_spec.n_actions) == (name, "CartPole-v1", 2)
    # A file in the layout the cache had before it used save_npz (arrays plus a 'name' key) is
    # still read, not regenerated.
    np.savez(path, **{k: getattr(ds, k) for k in ARRAYS}, name=np.str_(name))

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(builtin, "_collect", no_generation)
    old = builtin.load_builtin(name, n_transitions=n, cache_dir=tmp_path)
    assert_same_arrays(ds, old)
    assert (old.discrete, old.n_actions, old.env_id, old.name) == (True, 2, "CartPole-v1", name)


def test_medium_expert_is_medium_then_expert(tmp_path: Path) -> None:
    n = 800
    both = builtin.load_builtin("pendulum-medium-expert", n_transitions=n, cache_dir=tmp_path)
    medium = builtin.generate_builtin("pendulum-medium", n_transitions=n)
    expert = builtin.generate_builtin("pendulum-expert", n_transitions=n)
    assert len(both) == len(medium) + len(expert) == 1600
    for key in ARRAYS:
        joined = np.concatenate([getattr(medium, key), getattr(expert, key)])
        np.testing.assert_array_equal(getattr(both, key), joined, err_msg=key)
    assert both.name == "pendulum-medium-expert" and both.env_id == "Pendulum-v1"


# ----------------------------------------------------------------- shapes and semantics
@pytest.mark.parametrize("task", TASKS)
def test_shapes_dtypes_and_ranges(task: str) -> None:
    for quality in ("random", "expert"):
        ds = small(f"{task}-{quality}")
        env = envs.make_env(ds.env_id or "")
        obs_dim = env.observation_space.shape[0]  # type: ignore[index]
        n = len(ds)
        # Whole episodes: at least the requested count, the last row ends an episode.
        assert n >= SMALL[task]
        assert ds.timeouts is not None
        assert ds.terminals[-1] == 1 or ds.timeouts[-1]
        assert ds.observations.shape == ds.next_observations.shape == (n, obs_dim)
        assert ds.observations.dtype == ds.next_observations.dtype == np.float32
        assert ds.rewards.shape == ds.terminals.shape == ds.timeouts.shape == (n,)
        assert ds.rewards.dtype == np.float32
        assert ds.terminals.dtype == ds.timeouts.dtype == np.bool_
        # A row is a termination or a truncation, never both.
        assert not np.any(ds.terminals & ds.timeouts)
        if ds.discrete:
            assert ds.actions.shape == (n,) and ds.actions.dtype == np.int64
            assert set(np.unique(ds.actions)) <= {0, 1} and ds.n_actions == 2
        else:
            assert ds.actions.shape == (n, 1) and ds.actions.dtype == np.float32
            assert np.all(np.abs(ds.actions) <= 1.0)
            np.testing.assert_array_equal(ds.action_low, [-1.0])
            np.testing.assert_array_equal(ds.action_high, [1.0])
        # Inside an episode, s' of one row is s of the next.
        for sl in episode_slices(ds):
            np.testing.assert_array_equal(ds.next_observations[sl][:-1], ds.observations[sl][1:])


def test_pendulum_has_only_timeouts_every_200_steps() -> None:
    ds = small("pendulum-medium")
    assert ds.timeouts is not None
    assert not ds.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(ds.timeouts), np.arange(199, len(ds), 200))


def test_cartpole_terminals_are_pole_falls_and_timeouts_the_500_step_limit() -> None:
    medium = small("cartpole-medium")
    # CartPole-v1 terminates when |x| > 2.4 or |θ| > 12° (gymnasium's cartpole.py).
    nxt = medium.next_observations
    fallen = (np.abs(nxt[:, 0]) > 2.4) | (np.abs(nxt[:, 2]) > 12 * 2 * math.pi / 360)
    np.testing.assert_array_equal(medium.terminals, fallen)
    expert = small("cartpole-expert")
    assert expert.timeouts is not None
    assert not expert.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(expert.timeouts), np.arange(499, len(expert), 500))


def test_double_pendulum_terminals_are_falls_of_the_tip() -> None:
    ds = small("inverted-double-pendulum-medium")
    nxt = ds.next_observations.astype(np.float64)
    # Tip height: two 0.6 m links from the cart, z = 0.6 cos θ₁ + 0.6 cos(θ₁ + θ₂)
    # (inverted_double_pendulum.xml); the env terminates when z <= 1.
    sin1, sin2, cos1, cos2 = nxt[:, 1], nxt[:, 2], nxt[:, 3], nxt[:, 4]
    height = 0.6 * cos1 + 0.6 * (cos1 * cos2 - sin1 * sin2)
    np.testing.assert_array_equal(ds.terminals, height <= 1.0)
    assert ds.terminals.any()  # the noisy controller does fall in this sample


@pytest.mark.parametrize(
    "name",
    [
        "pendulum-medium",
        "cartpole-random",  # ~70 short episodes: every sub-env autoresets many times
        "cartpole-medium",
        "inverted-double-pendulum-random",
        "inverted-double-pendulum-medium",
    ],
)
def test_every_episode_replays_exactly_in_the_env(name: str) -> None:
    # Sub-env i of the collection is reset with seed collection_seed + i, and afterwards by
    # autoreset without a seed. Follow each sub-env the same way with a fresh env: replay the
    # stored actions of the episode that starts where the env starts, compare observations,
    # rewards and flags with the env's own, reset, repeat. Every stored episode must be met
    # (a sub-env's kept episodes are a prefix of its sequence), and no transition may be
    # spurious (e.g. the autoreset step, where the env ignores the action).
    ds = small(name)
    spec = builtin.builtin_spec(name)
    assert ds.timeouts is not None
    episodes = episode_slices(ds)
    by_start = {ds.observations[sl][0].tobytes(): sl for sl in episodes}
    assert len(by_start) == len(episodes)
    env = envs.make_env(name)
    replayed = 0
    for i in range(10):
        start, _ = env.reset(seed=spec.collection_seed + i)
        while (sl := by_start.get(np.asarray(start, dtype=np.float32).tobytes())) is not None:
            for row in range(sl.start, sl.stop):
                action = ds.actions[row] if not ds.discrete else int(ds.actions[row])
                obs, reward, terminated, truncated, _ = env.step(action)
                np.testing.assert_allclose(ds.next_observations[row], obs, rtol=1e-6, atol=1e-6)
                assert ds.rewards[row] == pytest.approx(reward, rel=1e-6, abs=1e-5)
                assert bool(ds.terminals[row]) == terminated
                assert bool(ds.timeouts[row]) == (truncated and not terminated)
            assert terminated or truncated, f"episode at rows {sl} did not end in the env"
            replayed += 1
            start, _ = env.reset()
    assert replayed == len(episodes)


@pytest.mark.parametrize("task", TASKS)
def test_behaviour_returns_order_random_medium_expert(task: str) -> None:
    means = {}
    for quality in ("random", "medium", "expert"):
        ds = small(f"{task}-{quality}")
        means[quality] = episode_returns(ds).mean()
    assert means["random"] < means["medium"] < means["expert"], means


def test_episode_returns_on_hand_arrays() -> None:
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    terminals = np.array([0, 1, 0, 0, 0, 0], dtype=bool)
    timeouts = np.array([0, 0, 0, 1, 0, 0], dtype=bool)
    # One contiguous chain of states, so only the flags split it.
    states = np.arange(7, dtype=np.float32)[:, None]
    ds = OfflineDataset(states[:-1], np.zeros((6, 1)), rewards, states[1:], terminals, timeouts)
    # Episodes: rows 0-1 (terminal), rows 2-3 (timeout); rows 4-5 never end: not counted.
    np.testing.assert_allclose(episode_returns(ds), [3.0, 7.0])


@pytest.mark.parametrize("task", TASKS)
def test_reference_scores_agree_with_a_fresh_measurement(task: str) -> None:
    # Ten new episodes (seeds disjoint from the 100 behind the constants); the means must lie
    # within 4 standard errors (std stated with each constant) plus 0.5% of the score range.
    n = 10
    ref = envs.reference_scores(task)
    fresh = builtin.measure_reference_scores(task, n_episodes=n, seed=envs.REFERENCE_SEED + 1000)
    assert ref.min_std is not None and ref.max_std is not None
    slack = 0.005 * (ref.max - ref.min)
    assert abs(fresh.min - ref.min) <= 4 * ref.min_std / math.sqrt(n) + slack
    assert abs(fresh.max - ref.max) <= 4 * ref.max_std / math.sqrt(n) + slack


# -------------------------------------------------------------------- the controllers
def test_pendulum_linear_model_matches_the_env_near_upright() -> None:
    # One env step from (θ, θ̇) = (0.01, -0.02) with torque 0.1 against x' = A x + B u.
    A, B = pendulum_linear_model()
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    x, u = np.array([0.01, -0.02]), 0.1
    env.state = x.copy()  # type: ignore[attr-defined]
    env.step(np.array([u], dtype=np.float32))
    # sin θ ≈ θ leaves an O(θ³) error: ~1e-7 here.
    np.testing.assert_allclose(env.state, A @ x + B[:, 0] * u, atol=1e-6)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "model, gain",
    [
        (pendulum_linear_model, pendulum_lqr_gain),
        (double_pendulum_linear_model, double_pendulum_lqr_gain),
    ],
)
def test_lqr_gains_stabilise_their_linear_models(model: object, gain: object) -> None:
    A, B = model()  # type: ignore[operator]
    K = gain()  # type: ignore[operator]
    # Open loop unstable (an inverted pendulum), closed loop x' = (A - BK) x contracts.
    assert np.max(np.abs(np.linalg.eigvals(A))) > 1.0
    assert np.max(np.abs(np.linalg.eigvals(A - B @ K))) < 1.0


def test_behaviour_policies_draw_noise_only_from_the_given_generator() -> None:
    obs = np.tile(np.array([[1.0, 0.0, 0.1]]), (4, 1))
    noisy = PendulumSwingUp(noise_std=0.3)
    a1 = noisy(obs, np.random.default_rng(3))
    a2 = noisy(obs, np.random.default_rng(3))
    np.testing.assert_array_equal(a1, a2)
    assert len(np.unique(a1)) == 4  # the noise differs per row
    assert a1.shape == (4, 1) and a1.dtype == np.float32
    with pytest.raises(ValueError, match=r"shape \(n, 3\), got \(4, 2\)"):
        noisy(obs[:, :2], np.random.default_rng(0))
    with pytest.raises(ValueError, match="exactly one of act_dim or n_actions"):
        UniformRandom()


def test_first_use_says_what_it_generates_how_long_and_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    builtin.load_builtin("pendulum-random", n_transitions=400, cache_dir=tmp_path)
    err = capsys.readouterr().err
    (path,) = tmp_path.iterdir()
    assert "generating the built-in dataset pendulum-random (400 transitions, about" in err
    assert str(path) in err and "generated pendulum-random in" in err
    builtin.load_builtin("pendulum-random", n_transitions=400, cache_dir=tmp_path)
    assert capsys.readouterr().err == ""  # read from the cache: nothing to say
