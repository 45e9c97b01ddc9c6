"""Train the locomotion behaviour policies with ARS V2-t and write the shipped weights.

``python -m deep.policies.train hopper`` (or ``halfcheetah``, ``walker2d``) runs ARS
(:mod:`deep.policies.ars`) from a seed for a fixed budget of env steps and writes

- ``<out>/<env>.npz``: ``{medium,expert}_{W,mu,sigma}`` (plain float64 arrays, read with
  ``allow_pickle=False``);
- ``<out>/<env>.json``: the command, seed, ARS config, library versions, wall time, env
  steps, the iteration of each snapshot and its evaluation returns, and the size of the
  medium-replay buffer (every training rollout up to the medium snapshot).

Snapshots (see :func:`train`): ``medium`` is the first iterate whose noisy evaluation lies in
``deep.policies.locomotion.MEDIUM_BAND`` (evaluated every iteration until then), ``expert``
the most robust of the best iterates evaluated every ``eval_every`` iterations. The run stops
at ``max_steps`` training steps, or once an evaluation reaches ``stop_score``: both are
deterministic; ``max_seconds`` is a wall-clock safety net that is not (it is recorded).

``--out`` defaults to ``runs/policies``; the shipped weights were written with
``--out deep/policies/weights``, which now also needs ``--force`` (they define every built-in
locomotion dataset, so replacing them changes those datasets).
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import gymnasium as gym
import numpy as np
import tyro

from deep.cli import main_guard
from deep.policies.ars import ARSConfig, LinearPolicy, ars
from deep.policies.locomotion import (
    ACTION_NOISE,
    GYM_IDS,
    MEDIUM_BAND,
    WEIGHTS_DIR,
    evaluate,
    normalized_score,
)

EnvName = Literal["hopper", "halfcheetah", "walker2d"]

#: Per-env ARS settings and step budgets (at most about 11 CPU-minutes each on this machine;
#: see each record). HalfCheetah: the paper's V2-t hyper-parameters (appendix table); Hopper:
#: the ones measured on this machine; Walker2d: the paper's N = 40, b = 30 take 80 episodes per
#: update, too few updates in this budget, so N = 16, b = 8. The survival bonus (1 per step) is
#: removed from the training rewards of Hopper and Walker2d (Section 4.1).
DEFAULTS: dict[str, tuple[ARSConfig, int]] = {
    "hopper": (ARSConfig(8, 4, 0.02, 0.03, reward_shift=1.0), 3_000_000),
    "halfcheetah": (ARSConfig(32, 4, 0.02, 0.03, reward_shift=0.0), 5_000_000),
    "walker2d": (ARSConfig(16, 8, 0.03, 0.025, reward_shift=1.0), 4_500_000),
}


@dataclass(frozen=True)
class TrainArgs:
    """Train one behaviour policy with ARS V2-t and write ``<env>.npz`` and ``<env>.json``."""

    env: Annotated[EnvName, tyro.conf.Positional]
    """Environment (short name)."""
    seed: int = 0
    """Seed of the ARS run (directions and reset seeds)."""
    max_steps: int | None = None
    """Training env-step budget (default: the env's entry in DEFAULTS)."""
    max_seconds: float | None = None
    """Wall-clock limit (not deterministic; off by default)."""
    stop_score: float = 95.0
    """Stop once every episode of an evaluation scores at least this (normalised)."""
    eval_every: int = 5
    """Iterations between evaluations once the medium snapshot is found."""
    eval_episodes: int = 5
    """Episodes per evaluation during training."""
    final_episodes: int = 20
    """Episodes of the final evaluations (expert choice, recorded scores; fresh reset seeds)."""
    n_directions: int | None = None
    """N (default: DEFAULTS)."""
    top_directions: int | None = None
    """b (default: DEFAULTS)."""
    step_size: float | None = None
    """α (default: DEFAULTS)."""
    noise: float | None = None
    """ν (default: DEFAULTS)."""
    out: Path = Path("runs/policies")
    """Folder for the weights and the record. The shipped weights (deep/policies/weights)
    define the built-in locomotion datasets; replacing them needs that folder here and
    --force."""

    force: bool = False
    """Replace an existing <out>/<env>.npz and .json."""


def resolved_config(args: TrainArgs) -> tuple[ARSConfig, int]:
    config, steps = DEFAULTS[args.env]
    overrides: dict[str, Any] = {
        k: v
        for k, v in (
            ("n_directions", args.n_directions),
            ("top_directions", args.top_directions),
            ("step_size", args.step_size),
            ("noise", args.noise),
        )
        if v is not None
    }
    return replace(config, **overrides), steps if args.max_steps is None else args.max_steps


def _versions() -> dict[str, str]:
    import mujoco

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gymnasium": gym.__version__,
        "mujoco": mujoco.__version__,
    }


def _summary(returns: np.ndarray, env: str) -> dict[str, object]:
    return {
        "returns": [round(float(r), 3) for r in returns],
        "return_mean": float(returns.mean()),
        "score_mean": float(normalized_score(env, returns).mean()),
    }


#: Iterations whose ``W`` sums are recorded, so a test can check a short re-run of ARS.
CHECKED_ITERATIONS = 10
#: Evaluated iterates re-evaluated on fresh episodes before the expert is chosen.
EXPERT_CANDIDATES = 3


def check_out(args: TrainArgs) -> None:
    """Refuse, before any training, an ``--out`` that is a file or already holds this env's
    weights (without ``--force``): the shipped ones define every built-in locomotion dataset."""
    for name in ("eval_every", "eval_episodes", "final_episodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file, not a folder; choose another --out")
    existing = [
        p for p in (args.out / f"{args.env}.npz", args.out / f"{args.env}.json") if p.exists()
    ]
    if existing and not args.force:
        shipped = args.out.resolve() == WEIGHTS_DIR.resolve()
        what = " (the shipped weights: every built-in dataset of this env depends on them)"
        raise ValueError(
            f"{existing[0]} exists{what if shipped else ''}; choose another --out, or pass "
            "--force to replace it"
        )


def train(args: TrainArgs, command: str) -> dict[str, Any]:
    """Run ARS, keep the medium and expert snapshots, write the files; returns the record.

    Evaluations use the datasets' action noise on ``eval_episodes`` fixed reset seeds.
    ``medium``: the first evaluated iterate whose mean normalised score lies in
    ``MEDIUM_BAND``. ``expert``: of the :data:`EXPERT_CANDIDATES` iterates with the best
    (worst episode, mean) scores, the one with the best mean on ``final_episodes`` fresh
    episodes (a linear policy can fall now and then under action noise; ranking by the worst
    episode prefers the robust ones). The run stops when an evaluation's worst episode reaches
    ``stop_score``.
    """
    check_out(args)
    config, max_steps = resolved_config(args)
    env_id = GYM_IDS[args.env]
    eval_seed = args.seed + 1_000
    band = MEDIUM_BAND[args.env]
    final_seed = args.seed + 2_000
    start = time.perf_counter()
    medium: dict[str, Any] | None = None
    medium_policy: LinearPolicy | None = None
    replay_transitions = replay_episodes = 0
    candidates: list[tuple[float, float, int, int, LinearPolicy]] = []
    history: list[list[float]] = []
    checks: list[list[float]] = []
    n_evaluations = 0
    env = gym.make(env_id)
    stop_reason = "max_steps"
    try:
        for state, batch in ars(env, config, args.seed):
            if state.iteration <= CHECKED_ITERATIONS:
                checks.append([state.iteration, float(state.W.sum()), float(np.abs(state.W).sum())])
            if medium is None:
                replay_transitions += sum(ep.length for ep in batch)
                replay_episodes += len(batch)
            if medium is None or state.iteration % args.eval_every == 0:
                policy = state.policy
                scores = normalized_score(
                    args.env, evaluate(args.env, policy, args.eval_episodes, eval_seed)
                )
                n_evaluations += 1
                mean, worst = float(scores.mean()), float(scores.min())
                history.append([state.iteration, state.env_steps, round(mean, 2), round(worst, 2)])
                print(
                    f"iter {state.iteration:4d} steps {state.env_steps:9d} "
                    f"t {time.perf_counter() - start:6.0f}s score {mean:6.1f} worst {worst:6.1f}",
                    flush=True,
                )
                if medium is None and band[0] <= mean <= band[1]:
                    medium = {
                        "iteration": state.iteration,
                        "env_steps": state.env_steps,
                        "train_eval_score": mean,
                    }
                    medium_policy = policy
                candidates.append((worst, mean, state.iteration, state.env_steps, policy))
                candidates.sort(key=lambda c: (-c[0], -c[1], c[2]))
                del candidates[EXPERT_CANDIDATES:]
                if worst >= args.stop_score and medium is not None:
                    stop_reason = "stop_score"
                    break
            if state.env_steps >= max_steps:
                break
            if args.max_seconds is not None and time.perf_counter() - start > args.max_seconds:
                stop_reason = "max_seconds"
                break
    finally:
        env.close()
    if medium is None or medium_policy is None:
        raise ValueError(
            f"{args.env}: no evaluated iterate scored within {band} in {max_steps} steps; "
            "nothing was written: raise --max-steps"
        )
    finals = [
        float(evaluate(args.env, c[4], args.final_episodes, final_seed).mean()) for c in candidates
    ]
    pick = int(np.argmax(finals))
    worst, mean, iteration, steps, expert_policy = candidates[pick]
    expert: dict[str, Any] = {
        "iteration": iteration,
        "env_steps": steps,
        "train_eval_score": mean,
        "train_eval_worst": worst,
        "candidates": [
            {"iteration": c[2], "train_eval_worst": c[0], "final_return_mean": f}
            for c, f in zip(candidates, finals, strict=True)
        ],
    }
    wall = time.perf_counter() - start
    snapshots = {"medium": medium_policy, "expert": expert_policy}
    for entry, policy in ((medium, medium_policy), (expert, expert_policy)):
        for label, sigma in (("noisy", ACTION_NOISE), ("deterministic", 0.0)):
            returns = evaluate(args.env, policy, args.final_episodes, final_seed + 1, sigma)
            entry[f"eval_{label}"] = _summary(returns, args.env)
    record: dict[str, Any] = {
        "env": args.env,
        "gym_id": env_id,
        "command": command,
        "seed": args.seed,
        "ars_config": asdict(config),
        "max_steps": max_steps,
        "stop_reason": stop_reason,
        "versions": _versions(),
        "wall_seconds": round(wall, 1),
        "env_steps": state.env_steps,
        "iterations": state.iteration,
        "evaluations": n_evaluations,
        "eval_episodes": args.eval_episodes,
        "action_noise": ACTION_NOISE,
        "medium_band": list(band),
        "medium": medium,
        "expert": expert,
        "replay": {"transitions": replay_transitions, "episodes": replay_episodes},
        "W_checks": checks,
        "history": history,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = {
        f"{name}_{key}": getattr(policy, key)
        for name, policy in snapshots.items()
        for key in ("W", "mu", "sigma")
    }
    np.savez(args.out / f"{args.env}.npz", **arrays)
    (args.out / f"{args.env}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    return main_guard(_main, argv)


def _main(argv: list[str]) -> int:
    args = tyro.cli(TrainArgs, args=argv, prog="python -m deep.policies.train")
    record = train(args, "python -m deep.policies.train " + shlex.join(argv))
    print(json.dumps({k: record[k] for k in ("wall_seconds", "env_steps", "medium", "expert")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
