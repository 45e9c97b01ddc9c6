"""D4RL-style locomotion datasets from the shipped ARS policies, and ARS V2-t itself.

Small sizes throughout: a random Hopper episode is ~20 steps, every other episode here at most
1000 (a few thousand simulator steps per test).
"""

from __future__ import annotations

import functools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from deep.policies import locomotion as loco
from deep.policies.ars import (
    ARSConfig,
    ARSState,
    LinearPolicy,
    RunningStats,
    ars,
    ars_update,
    rollout,
)
from deep.policies.train import TrainArgs, train

DIMS = {"hopper": (11, 3), "halfcheetah": (17, 6), "walker2d": (17, 6)}


def episode_ends(ds: dict[str, np.ndarray]) -> np.ndarray:
    return np.flatnonzero(ds["terminals"] | ds["timeouts"])


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("env", loco.ENVS)
def test_shapes_dtypes_and_action_range(env: str) -> None:
    obs_dim, act_dim = DIMS[env]
    ds = loco.collect(env, "medium", 30, seed=0)
    n = ds["rewards"].shape[0]
    assert n >= 30
    assert ds["observations"].shape == ds["next_observations"].shape == (n, obs_dim)
    assert ds["actions"].shape == (n, act_dim)
    for key in ("observations", "actions", "rewards", "next_observations"):
        assert ds[key].dtype == np.float32, key
    assert ds["terminals"].dtype == ds["timeouts"].dtype == np.dtype(bool)
    assert ds["terminals"].shape == ds["timeouts"].shape == (n,)
    assert np.abs(ds["actions"]).max() <= 1.0
    # Action noise: some actions are strictly inside the box (not only the clipped corners).
    assert (np.abs(ds["actions"]) < 1.0).mean() > 0.2


def test_gym_ids_levels_and_default_sizes() -> None:
    assert loco.GYM_IDS == {
        "hopper": "Hopper-v5",
        "halfcheetah": "HalfCheetah-v5",
        "walker2d": "Walker2d-v5",
    }
    assert loco.LEVELS == ("random", "medium", "expert", "medium-replay", "medium-expert")
    assert loco.default_size("hopper", "medium") == 1_000_000
    assert loco.default_size("walker2d", "medium-expert") == 2_000_000
    replay = loco.metadata("hopper")["replay"]
    assert isinstance(replay, dict)
    assert loco.default_size("hopper", "medium-replay") == replay["transitions"] > 0


def test_halfcheetah_never_terminates_and_times_out_at_1000() -> None:
    ds = loco.collect("halfcheetah", "random", 1001, seed=0)
    assert ds["rewards"].shape[0] == 2000  # whole episodes: the first holds 1000 < 1001
    assert not ds["terminals"].any()
    np.testing.assert_array_equal(np.flatnonzero(ds["timeouts"]), [999, 1999])


def test_hopper_falls_are_terminal_not_timeouts() -> None:
    ds = loco.collect("hopper", "random", 200, seed=0)
    ends = np.flatnonzero(ds["terminals"])
    assert len(ends) >= 3  # random Hopper falls within ~20 steps
    assert ends[-1] == ds["rewards"].shape[0] - 1
    assert not ds["timeouts"].any()
    assert np.diff(np.concatenate([[-1], ends])).max() < 1000


def test_hopper_expert_reaches_the_time_limit() -> None:
    ds = loco.collect("hopper", "expert", 1, seed=0)
    assert ds["rewards"].shape[0] == 1000
    assert ds["timeouts"][-1] and ds["timeouts"].sum() == 1
    assert not ds["terminals"].any()


@pytest.mark.parametrize("env,level", [("hopper", "random"), ("walker2d", "medium")])
def test_next_observation_is_the_following_observation_inside_episodes(
    env: str, level: str
) -> None:
    ds = loco.collect(env, level, 300, seed=1)
    inside = np.ones(ds["rewards"].shape[0] - 1, dtype=bool)
    inside[episode_ends(ds)[:-1]] = False
    assert inside.sum() > 0
    np.testing.assert_array_equal(
        ds["next_observations"][:-1][inside], ds["observations"][1:][inside]
    )
    # Across an episode boundary the next row is a fresh start, not the final observation.
    boundary = ~inside
    if boundary.any():
        assert not np.array_equal(
            ds["next_observations"][:-1][boundary], ds["observations"][1:][boundary]
        )


def test_true_final_observation_is_kept() -> None:
    ds = loco.collect("hopper", "random", 50, seed=0)
    end = episode_ends(ds)[0]
    # Hopper-v5 is healthy while z > 0.7 and |angle| < 0.2 (obs[0], obs[1]): the terminal
    # next observation is the fallen state itself, not the next episode's start.
    z, angle = ds["next_observations"][end, :2]
    assert z <= 0.7 or abs(angle) >= 0.2
    z0, angle0 = ds["observations"][end + 1, :2]
    assert z0 > 0.7 and abs(angle0) < 0.2


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("level", ["random", "medium", "medium-replay"])
def test_same_arguments_same_arrays(level: str) -> None:
    a = loco.collect("hopper", level, 400, seed=3)
    b = loco.collect("hopper", level, 400, seed=3)
    assert a.keys() == b.keys() == set(loco._ARRAYS)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_another_seed_other_arrays() -> None:
    a = loco.collect("hopper", "medium", 200, seed=0)
    b = loco.collect("hopper", "medium", 200, seed=1)
    assert not np.array_equal(a["observations"][:10], b["observations"][:10])


def test_medium_expert_is_medium_then_expert() -> None:
    me = loco.collect("halfcheetah", "medium-expert", 2000, seed=4)
    med = loco.collect("halfcheetah", "medium", 1000, seed=4)
    exp = loco.collect("halfcheetah", "expert", 1000, seed=4)
    for key in me:
        np.testing.assert_array_equal(me[key], np.concatenate([med[key], exp[key]]), key)


def test_medium_replay_is_the_start_of_training() -> None:
    """The replay's first episodes are ARS's first iteration: M_0 = 0 ± ν δ, and with σ = 1,
    μ = 0 the actions are clip(±ν δ s, −1, 1) of the recorded states."""
    record = loco.metadata("hopper")
    config = ARSConfig(**record["ars_config"])  # type: ignore[arg-type]
    eps = loco.replay_episodes("hopper", n_transitions=1)
    assert len(eps) == 1
    rng = np.random.default_rng(np.random.SeedSequence([int(record["seed"]), 0]))  # type: ignore[call-overload]
    delta = rng.standard_normal((config.n_directions, 3, 11))[0]
    expected = np.clip(eps[0].observations @ (config.noise * delta).T, -1, 1)
    np.testing.assert_allclose(eps[0].actions, expected)


@pytest.mark.parametrize("env", loco.ENVS)
def test_rerun_of_ars_matches_the_recorded_training_run(env: str) -> None:
    """The first iterations of a re-run from the recorded seed give the recorded W sums (the
    medium-replay re-run itself checks the shipped medium weights at its end)."""
    record = loco.metadata(env)
    checks = record["W_checks"][: 1 if env == "halfcheetah" else 3]  # 64k steps an iteration
    config = ARSConfig(**record["ars_config"])
    gym_env = gym.make(loco.GYM_IDS[env])
    for (it, total, absolute), (state, _) in zip(
        checks, ars(gym_env, config, record["seed"]), strict=False
    ):
        assert state.iteration == it
        np.testing.assert_allclose([state.W.sum(), np.abs(state.W).sum()], [total, absolute])


# ----------------------------------------------------------------------------- bands
@functools.cache
def scores(env: str, level: str, n: int = 10_000) -> np.ndarray:
    """Normalised returns of the episodes of a 10k-transition collection (10+ episodes: a
    linear policy under action noise has an occasional bad episode)."""
    eps = loco.collect_episodes(env, level, n, seed=0)
    return loco.normalized_score(env, np.array([ep.total_reward for ep in eps]))


@pytest.mark.parametrize("env", loco.ENVS)
def test_random_level_scores_below_10(env: str) -> None:
    assert scores(env, "random").mean() < 10


@pytest.mark.parametrize("env", loco.ENVS)
def test_medium_level_scores_30_to_65(env: str) -> None:
    s = scores(env, "medium")
    assert 30 <= s.mean() <= 65, s


#: Shipped linear policies that miss D4RL's expert band (> 90 normalised): HalfCheetah's
#: expert returns 12,135; a linear ARS policy in this budget stays far below (see the record).
EXPERT_BELOW_90 = {"halfcheetah"}


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(
            env,
            marks=pytest.mark.xfail(
                env in EXPERT_BELOW_90,
                reason=f"the shipped linear {env} policy stays below 90 normalised",
                strict=True,
            ),
        )
        for env in loco.ENVS
    ],
)
def test_expert_level_scores_above_90(env: str) -> None:
    s = scores(env, "expert")
    assert s.mean() > 90, s


@pytest.mark.parametrize("env", loco.ENVS)
def test_expert_beats_medium_beats_random(env: str) -> None:
    r, m, e = (scores(env, lv).mean() for lv in ("random", "medium", "expert"))
    assert r < m < e


def test_normalized_score_matches_d4rl_references() -> None:
    np.testing.assert_allclose(loco.normalized_score("hopper", [-20.272305, 3234.3]), [0, 100])
    assert loco.normalized_score("walker2d", 1.629008 + 0.5 * (4592.3 - 1.629008)) == 50


# ----------------------------------------------------------------------------- errors
def test_bad_input_raises_one_line_errors() -> None:
    with pytest.raises(ValueError, match="unknown env 'ant'"):
        loco.collect("ant", "random", 10, seed=0)
    with pytest.raises(ValueError, match="unknown level 'good'"):
        loco.collect("hopper", "good", 10, seed=0)
    with pytest.raises(ValueError, match="n_transitions must be >= 1"):
        loco.collect("hopper", "random", 0, seed=0)
    n = loco.default_size("hopper", "medium-replay")
    with pytest.raises(ValueError, match=f"hopper-medium-replay holds {n} transitions"):
        loco.collect("hopper", "medium-replay", n + 1, seed=0)


# ----------------------------------------------------------------------------- ARS
def test_running_stats_match_numpy_on_the_concatenation() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 50)]
    stats = RunningStats.empty(4)
    for p in parts:
        stats = stats.merge(p)
    allx = np.concatenate(parts)
    np.testing.assert_allclose(stats.mean, allx.mean(0))
    np.testing.assert_allclose(stats.std, allx.std(0))
    assert stats.count == 58
    np.testing.assert_array_equal(RunningStats.empty(4).merge(parts[0]).std, np.ones(4))


def test_ars_update_worked_example() -> None:
    """N = 3, b = 2, α = 0.1: directions 0 and 2 have the largest max(r₊, r₋) (5 and 4);
    σ_R = std(5, 4, 1, 2) = sqrt(2.5); M' = M + 0.1/(2 σ_R) [(5−1) δ_0 + (4−2) δ_2]."""
    config = ARSConfig(3, 2, 0.1, 0.5)
    W = np.zeros((1, 2))
    deltas = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    new = ars_update(W, deltas, np.array([5.0, 3.0, 4.0]), np.array([1.0, 3.5, 2.0]), config)
    sigma_r = np.std([5.0, 4.0, 1.0, 2.0])
    np.testing.assert_allclose(new, 0.1 / (2 * sigma_r) * np.array([[6.0, 2.0]]))


def test_ars_config_validates() -> None:
    with pytest.raises(ValueError, match="top_directions"):
        ARSConfig(n_directions=2, top_directions=3)


def _short_run(seed: int, iterations: int, config: ARSConfig) -> ARSState:
    env = gym.make("Hopper-v5")
    for state, _ in ars(env, config, seed):
        if state.iteration == iterations:
            return state
    raise AssertionError("unreachable")


def test_ars_is_deterministic_for_a_seed() -> None:
    config = ARSConfig(2, 1, 0.02, 0.03, reward_shift=1.0)
    a, b, c = _short_run(5, 3, config), _short_run(5, 3, config), _short_run(6, 3, config)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.stats.mean, b.stats.mean)
    assert a.env_steps == b.env_steps
    assert not np.array_equal(a.W, c.W)


def test_ars_improves_hopper_on_a_short_budget() -> None:
    config = ARSConfig(8, 4, 0.02, 0.03, reward_shift=1.0)
    state = _short_run(0, 12, config)
    env = gym.make("Hopper-v5")
    zero = LinearPolicy(np.zeros((3, 11)), np.zeros(11), np.ones(11))
    before = np.mean([rollout(env, zero, s).total_reward for s in range(3)])
    after = np.mean([rollout(env, state.policy, s).total_reward for s in range(3)])
    assert after > before + 200, (before, after)


# ----------------------------------------------------------------------------- entry points
def test_shipped_weights_load_as_plain_arrays() -> None:
    for env, (obs_dim, act_dim) in DIMS.items():
        with np.load(loco.WEIGHTS_DIR / f"{env}.npz", allow_pickle=False) as f:
            assert sorted(f.files) == sorted(
                f"{s}_{k}" for s in ("medium", "expert") for k in ("W", "mu", "sigma")
            )
            assert f["expert_W"].shape == (act_dim, obs_dim)
        record = loco.metadata(env)
        assert record["command"] == f"python -m deep.policies.train {env}"
        assert {"numpy", "gymnasium", "mujoco"} <= set(record["versions"])  # type: ignore[arg-type]


def test_train_without_reaching_the_medium_band_says_so(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"no evaluated iterate scored within .* raise --max-steps"
    ):
        train(TrainArgs("hopper", max_steps=1, eval_episodes=1, out=tmp_path), "test")
    assert not list(tmp_path.iterdir())


def test_info_prints_the_behaviour_table(capsys: pytest.CaptureFixture[str]) -> None:
    loco.main(["info", "--envs", "halfcheetah", "--levels", "random", "--n-transitions", "1"])
    out = capsys.readouterr().out
    assert "| halfcheetah-random | 1000 | 1 |" in out


def test_train_refuses_to_replace_weights_before_any_work(tmp_path: Path) -> None:
    # The shipped weights define every built-in locomotion dataset: never replaced silently.
    with pytest.raises(ValueError, match=r"the shipped weights.*--force"):
        train(TrainArgs("hopper", out=loco.WEIGHTS_DIR), "test")
    (tmp_path / "hopper.npz").write_bytes(b"mine")
    with pytest.raises(ValueError, match=r"hopper\.npz exists; choose another --out"):
        train(TrainArgs("hopper", out=tmp_path), "test")
    assert (tmp_path / "hopper.npz").read_bytes() == b"mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        train(TrainArgs("hopper", out=tmp_path / "file"), "test")
