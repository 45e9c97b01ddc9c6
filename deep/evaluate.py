"""Re-evaluate a saved checkpoint in its environment.

::

    python -m deep.evaluate runs/cql-pendulum-medium-seed0            # the run directory
    python -m deep.evaluate runs/.../checkpoint.pt --episodes 50 --json
    cql-evaluate --help

The agent is rebuilt from the config saved in the checkpoint and loaded with
``torch.load(weights_only=True)`` (a foreign or tampered file is refused, see
:mod:`deep.checkpoint`). By default the episodes are the ones the run itself evaluated at the
checkpoint's step (seed ``eval_seed(seed, step)``), so with the same number of episodes the
numbers reproduce the run's last evaluation row exactly.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from deep.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint_path
from deep.cli import main_guard
from deep.config import (
    DatasetInfo,
    build_agent,
    config_from_dict,
    evaluation_gamma,
    resolve_device,
    reward_transform,
)
from deep.data import ObservationNormalizer
from deep.evaluation import check_environment, eval_seed, evaluate_agent
from deep.runlog import json_text


@dataclass
class EvaluateConfig:
    """Evaluate a checkpoint's deterministic policy and its conservative-value diagnostic."""

    checkpoint: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="CHECKPOINT")]
    """Checkpoint file, or a run directory holding checkpoint.pt."""

    episodes: int = 10
    """Number of evaluation episodes (run as vectorised batches)."""

    seed: int | None = None
    """Seed of the first episode (episode i uses seed + i); default: the run's own evaluation
    seed at the checkpoint's step."""

    env_id: str | None = None
    """Gymnasium id to evaluate on; default: the one the run evaluated on."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run the networks."""

    json: bool = False
    """Print the result as JSON instead of a table."""


def evaluate_checkpoint(
    checkpoint: str | Path,
    episodes: int = 10,
    seed: int | None = None,
    env_id: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Load ``checkpoint`` and evaluate it; returns the ``eval/*`` numbers plus identification.

    Keys: ``checkpoint``, ``algo``, ``dataset``, ``env_id``, ``step``, ``episodes``, ``seed``,
    ``gamma`` and the metrics of :func:`deep.evaluation.evaluate_agent` (``eval/return_mean``,
    ``eval/normalized_score``, ``eval/q_estimate``, ``eval/mc_return``, ...).
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if seed is not None and not 0 <= seed < 2**31:
        raise ValueError(f"--seed must be in [0, 2^31), got {seed}")
    path = resolve_checkpoint_path(checkpoint)
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, map_location=dev)
    try:
        config = config_from_dict(ckpt["config"], ckpt["agent_config"], source=str(path))
        info = DatasetInfo(**ckpt["dataset"])
        step = int(ckpt["step"])
        agent_state = ckpt["agent"]
        normalizer_state = ckpt["normalizer"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint lacks or mangles an entry: {e}") from None
    env = env_id or info.env_id
    if env is None:
        raise ValueError(
            f"{path}: the run's dataset {info.name!r} names no environment; pass --env-id"
        )
    env = check_environment(env, info.obs_dim, info.act_dim, info.discrete, info.name)
    agent = build_agent(config, info, dev)
    agent.load_state_dict(agent_state)
    normalizer = (
        ObservationNormalizer.from_state_dict(normalizer_state)
        if normalizer_state is not None
        else None
    )
    gamma = evaluation_gamma(config)
    scale, bias = reward_transform(config.agent)
    first_seed = eval_seed(config.run.seed, step) if seed is None else seed
    metrics = evaluate_agent(
        agent,
        env=env,
        dataset_name=info.name,
        normalizer=normalizer,
        episodes=episodes,
        seed=first_seed,
        gamma=gamma,
        device=dev,
        reward_scale=scale,
        reward_bias=bias,
    )
    return {
        "checkpoint": str(path),
        "algo": config.algo,
        "dataset": info.name,
        "env_id": env,
        "step": step,
        "episodes": episodes,
        "seed": first_seed,
        "gamma": gamma,
        **metrics,
    }


def format_result(result: dict[str, Any]) -> str:
    """A few human-readable lines for the terminal."""

    def num(key: str, fmt: str = ".2f") -> str:
        v = result[key]
        return "n/a" if isinstance(v, float) and math.isnan(v) else format(v, fmt)

    return "\n".join(
        [
            f"{result['algo']} on {result['dataset']} ({result['env_id']}), step {result['step']}, "
            f"{result['episodes']} episodes from seed {result['seed']}",
            f"  return           {num('eval/return_mean')} ± {num('eval/return_std')}"
            f"  (mean length {num('eval/length_mean', '.1f')})",
            f"  normalised score {num('eval/normalized_score')}",
            f"  Q(s0, pi(s0))    {num('eval/q_estimate')}  predicted by the critic",
            f"  MC return        {num('eval/mc_return')}  obtained (gamma = {result['gamma']})",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m deep.evaluate``, ``cql-evaluate``)."""

    def body(argv: list[str]) -> int:
        args = tyro.cli(
            EvaluateConfig,
            args=argv,
            prog="python -m deep.evaluate",
            description=(__doc__ or "").split("\n\n")[0],
        )
        result = evaluate_checkpoint(
            args.checkpoint, args.episodes, args.seed, args.env_id, args.device
        )
        if args.json:
            print(json_text(result), end="")
        else:
            print(format_result(result))
        return 0

    return main_guard(body, argv)


if __name__ == "__main__":
    sys.exit(main())
