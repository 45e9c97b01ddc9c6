"""What a user gets in an hour: on hopper-medium, one core each, our CQL with the fast
settings (cql-fast, mean-action backup) against d3rlpy's CQL with today's standard settings
(deep.parity's translation of `cql`'s defaults: 3×256, N = 10, α = 5; d3rlpy's backup is
the mean action), each trained for MINUTES of training time (evaluations not counted) and
evaluated on the same start states at the same step numbers (eval_seed(seed, step)).

    python docs/results/one_hour.py train ours SEED [OUT] [MINUTES]     # one side, one seed
    python docs/results/one_hour.py train d3rlpy SEED [OUT] [MINUTES]
    python docs/results/one_hour.py collect OUT docs/results/one-hour.json

OUT defaults to runs/one-hour, MINUTES to 60. Ours is a deep.train run with --time-limit
(resumable from its folder); d3rlpy's curve.json is written after every evaluation. collect
writes the curves (training seconds, updates, score, Q − MC) and the last score within the
budget per seed, and plots score against training time next to the JSON.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from deep import stats
from deep.config import RunConfig, make_config
from deep.parity import CURVE_NAME, train_d3rlpy_timed
from deep.runlog import write_json
from deep.train import start_or_resume

DATASET = "hopper-medium"
EPISODES = 10
EVERY = {"ours": 5000, "d3rlpy": 1000}


def train(side: str, seed: int, out: Path, minutes: float) -> None:
    folder = out / side / f"seed{seed}"
    if side == "ours":
        settings = RunConfig(
            dataset=DATASET,
            steps=1_000_000,
            time_limit=minutes,
            seed=seed,
            device="cpu",
            threads=1,
            out=str(folder),
            eval_every=EVERY[side],
            eval_episodes=EPISODES,
            tensorboard=False,
            progress=False,
            plots=False,
        )
        summary = start_or_resume(make_config("cql-fast", settings, backup_action="mean"))
        print(
            f"ours seed {seed}: {summary['steps_done']} updates, {summary['normalized_score']:.1f}"
        )
    elif side == "d3rlpy":
        record = train_d3rlpy_timed(
            make_config("cql").agent,
            DATASET,
            seed,
            folder,
            minutes=minutes,
            eval_every=EVERY[side],
            eval_episodes=EPISODES,
        )
        last = record["curve"][-1]
        print(f"d3rlpy seed {seed}: {last['step']} updates, {last['normalized_score']:.1f}")
    else:
        raise SystemExit(f"side must be ours or d3rlpy, got {side!r}")


def curves(out: Path) -> dict[str, dict[int, list[dict[str, float]]]]:
    found: dict[str, dict[int, list[dict[str, float]]]] = {"ours": {}, "d3rlpy": {}}
    for folder in sorted((out / "ours").glob("seed*")):
        summary = folder / "summary.json"
        if not summary.exists():
            continue
        clock = dict(json.loads(summary.read_text())["eval_clock"])
        rows = [
            r
            for r in _rows(folder / "metrics.csv")
            if "eval/normalized_score" in r and int(r["step"]) in clock
        ]
        found["ours"][int(folder.name[4:])] = [
            {
                "step": int(r["step"]),
                "train_seconds": clock[int(r["step"])],
                "normalized_score": r["eval/normalized_score"],
                "q_minus_mc": r["eval/q_estimate"] - r["eval/mc_return"],
            }
            for r in rows
        ]
    for folder in sorted((out / "d3rlpy").glob("seed*")):
        record = json.loads((folder / CURVE_NAME).read_text())
        if not record.get("finished"):
            continue
        found["d3rlpy"][int(folder.name[4:])] = [
            {
                "step": p["step"],
                "train_seconds": p["train_seconds"],
                "normalized_score": p["normalized_score"],
                "q_minus_mc": p["q_estimate"] - p["mc_return"],
            }
            for p in record["curve"]
        ]
    return found


def _rows(path: Path) -> list[dict[str, float]]:
    import csv

    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def machine() -> str:
    """This machine, as the rates depend on it: cores, vector units, native bf16, versions."""
    import gymnasium
    import mujoco
    import torch

    from deep.algos.sac import cpu_has_native_bf16

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {isa}, {bf16}; torch {torch.__version__}, "
        f"mujoco {mujoco.__version__}, gymnasium {gymnasium.__version__}"
    )


def collect(out: Path, target: Path, minutes: float = 60.0) -> None:
    """The curves under ``out``, merged with the seeds of an existing ``target`` whose folders
    are gone (an earlier sitting's); each new seed is tagged with this machine, so collect
    where the runs trained."""
    found = curves(out)
    earlier = json.loads(target.read_text())["sides"] if target.exists() else {}
    here = machine()
    machines: dict[str, dict[str, str]] = {}
    for side, by_seed in found.items():
        old = earlier.get(side, {})
        machines[side] = {str(s): here for s in by_seed}
        for seed, curve in old.get("curves", {}).items():
            if int(seed) not in by_seed:
                by_seed[int(seed)] = curve
                machines[side][seed] = old.get("machines", {}).get(seed, "not recorded")
        found[side] = dict(sorted(by_seed.items()))
    sides: dict[str, Any] = {}
    for side, by_seed in found.items():
        if not by_seed:
            continue
        within = {
            s: [p for p in c if p["train_seconds"] <= 60.0 * minutes + 1.0]
            for s, c in by_seed.items()
        }
        final = np.array([c[-1]["normalized_score"] for c in within.values()])
        sides[side] = {
            "seeds": sorted(by_seed),
            "final_scores": final.tolist(),
            "final_updates": [c[-1]["step"] for c in within.values()],
            "updates_per_second": [c[-1]["step"] / c[-1]["train_seconds"] for c in within.values()],
            "mean": float(final.mean()),
            "mean_ci": stats.interval_estimate(
                final, stats.mean_statistic, 0, reps=10_000
            ).to_dict()
            if final.size > 1
            else None,
            "iqm_ci": stats.interval_estimate(final, stats.iqm_statistic, 0, reps=10_000).to_dict()
            if final.size > 1
            else None,
            "machines": machines[side],
            "curves": {str(s): c for s, c in by_seed.items()},
        }
    write_json(
        target,
        {
            "what": f"hopper-medium, {minutes:g} minutes of training time on one core per run; "
            f"score = normalised return over {EPISODES} episodes at the last evaluation "
            "within the budget",
            "command": "python docs/results/one_hour.py train {ours,d3rlpy} SEED; "
            f"python docs/results/one_hour.py collect {out} {target}",
            "sides": sides,
        },
    )
    plot(sides, target.with_suffix(".png"))


def plot(sides: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (side, data), colour in zip(sides.items(), ("C0", "C1"), strict=False):
        label = {"ours": "ours, cql-fast (mean backup)", "d3rlpy": "d3rlpy CQL, N = 10"}[side]
        for i, (seed, curve) in enumerate(data["curves"].items()):
            t = [p["train_seconds"] / 60 for p in curve]
            ax.plot(
                t,
                [p["normalized_score"] for p in curve],
                colour,
                linestyle=("-", "--", ":", "-.")[i % 4],
                alpha=0.8,
                label=f"{label}, seed {seed}",
            )
    ax.set_xlabel("training time on one core (minutes)")
    ax.set_ylabel("normalised score (hopper-medium)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["train"] and len(args) >= 3:
        train(
            args[1],
            int(args[2]),
            Path(args[3] if len(args) > 3 else "runs/one-hour"),
            float(args[4]) if len(args) > 4 else 60.0,
        )
    elif args[:1] == ["collect"] and len(args) == 3:
        collect(Path(args[1]), Path(args[2]))
    else:
        raise SystemExit(__doc__)
