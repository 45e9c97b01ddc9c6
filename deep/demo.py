"""Demo: CQL against naive offline SAC and behaviour cloning on ``pendulum-medium``.

::

    python -m deep.demo                 # about 2.5 minutes on two CPU cores
    python -m deep.demo --out runs/demo --seed 1

Trains the three agents with :mod:`deep.train` (two processes, one core each: CQL on one,
SAC then BC on the other) and writes into one folder (default ``runs/demo``):

- ``results.md``: normalised score, return, and the conservative-value diagnostic (the
  critic's Q(s₀, π(s₀)) next to the discounted return actually obtained from s₀) per algorithm;
- ``comparison.png``: evaluation score and Q estimate vs Monte-Carlo return over training;
- ``<algo>/``: each run's metrics.csv, learning_curves.png, summary.json, TensorBoard logs and
  checkpoint;
- ``README.md``: where to look.

What to expect: offline SAC's critic, trained on the dataset only, over-estimates the value
of the actions its own policy picks (Q far above the return it obtains), while CQL's estimate
stays at or below the obtained return: the lower bound of the paper's Theorem 3.2.
Measured on seeds 0, 1, 2 (final evaluation on 200 episodes, normalised scores): CQL 66.1 /
58.1 / 47.7, offline SAC -22.2 / -25.5 / -30.1, BC 55.3 / 51.6 / 57.1; Q - MC of CQL -6.6 /
-4.1 / -3.2, of SAC +42.1 / +45.9 / +51.9. CQL's margin over BC varies from seed to seed
(here -9.4 to +10.8) and is small next to that spread: the medium controller's own actions
are already good, and CQL improves on them only where the data show how. The gap to SAC is a
matter of budget on this dataset: its noisy behaviour covers the one-dimensional action
space, and with 30,000 steps offline SAC recovers (99.4 on seed 10, with τ = 0.05) once its
critic has corrected the over-estimation that CQL never makes.

Four settings differ from the agents' gym-mujoco defaults so that the demo fits its budget
(about 15,000 gradient steps) and its critics converge within it: networks of 2×64 units
(instead of 3×256: Pendulum's state has 3 dimensions), γ = 0.95 (an effective horizon of 20
steps instead of 100, so values need about 5x fewer Bellman backups), a target rate
τ = 0.02 (instead of 0.005: each backup needs fewer steps) and the CQL weight 10, the top of
the usual 5..10 (see ``DemoConfig.cql_weight`` and ``DemoConfig.target_tau`` for how they
were chosen). With γ = 0.99 and 10⁴ steps the critics are still far from their fixed points
and every policy stays near random. Re-running reuses finished runs with the same settings
(re-evaluating them) and resumes interrupted ones.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import tyro

from deep import plots
from deep.cli import main_guard
from deep.config import RunConfig, TrainConfig, make_config
from deep.data import episode_returns, load_dataset
from deep.envs import normalized_score
from deep.evaluate import evaluate_checkpoint
from deep.files import atomic_write_text
from deep.layout import METRICS_NAME, REPORT_DIR, RESULTS_JSON, RESULTS_MD, claim
from deep.runlog import write_json
from deep.train import run_state, start_or_resume

LABELS = {"cql": "CQL", "sac": "offline SAC", "bc": "BC"}


@dataclass
class DemoConfig:
    """CQL vs offline SAC vs BC on one dataset, written to one folder."""

    out: str = "runs/demo"
    """Folder for the three runs, the plots, the table and a README."""

    dataset: str = "pendulum-medium"
    """Dataset (any spec deep.train accepts)."""

    seed: int = 0
    """Seed of every run."""

    cql_steps: int = 15_000
    """Gradient steps of CQL (the most expensive agent: 3N extra critic evaluations)."""

    sac_steps: int = 15_000
    """Gradient steps of offline SAC."""

    bc_steps: int = 15_000
    """Gradient steps of behaviour cloning."""

    eval_every: int = 1_000
    """Evaluate every this many steps."""

    eval_episodes: int = 10
    """Episodes per evaluation during training."""

    final_episodes: int = 200
    """Episodes of the final evaluation of each checkpoint, the one the table reports (the
    first eval_episodes of them are the run's own last evaluation). Pendulum's returns depend
    on the start state (normalised std ~45 per episode), so 200 episodes (a few seconds) put
    the standard error of a score near 3 points; all three agents see the same start states."""

    hidden_dims: tuple[int, ...] = (64, 64)
    """Hidden widths of every network."""

    gamma: float = 0.95
    """Discount factor of every agent (and of the Monte-Carlo returns it is compared with)."""

    target_tau: float = 0.02
    """Polyak rate of the target critics. Chosen between 0.05 and 0.02 with CQL on seeds 12, 13,
    14 (not the demo's seeds): normalised scores 67.4 / 55.7 / 77.8 at 0.05, 65.8 / 68.8 /
    68.9 at 0.02 (100 episodes each): the same mean with a third of the spread."""

    cql_weight: float = 10.0
    """Weight w of CQL's gap term (the paper's alpha = w/2). Chosen among 1, 2, 5, 10 on seeds
    10 and 11 (not the demo's seeds): normalised scores 15/16, 26/14, 24/24 and 69/69; only
    10 kept the critic below the obtained return on both."""

    workers: int = 2
    """Training processes run at once (one CPU thread each); 1 trains the three agents one
    after the other in this process."""


def run_configs(demo: DemoConfig) -> dict[str, TrainConfig[Any]]:
    """The :class:`~deep.config.TrainConfig` of each algorithm, in the order they are started."""
    root = Path(demo.out)

    def settings(algo: str, steps: int, **extra: Any) -> RunConfig:
        return RunConfig(
            dataset=demo.dataset,
            seed=demo.seed,
            steps=steps,
            out=str(root / algo),
            eval_every=demo.eval_every,
            eval_episodes=demo.eval_episodes,
            log_every=min(250, demo.eval_every),
            device="cpu",
            threads=1,
            progress=False,
            **extra,
        )

    hidden = tuple(demo.hidden_dims)
    critic = {"actor_hidden": hidden, "critic_hidden": hidden, "gamma": demo.gamma}
    critic["target_tau"] = demo.target_tau
    return {
        "cql": make_config(
            "cql", settings("cql", demo.cql_steps), cql_weight=demo.cql_weight, **critic
        ),
        "sac": make_config("sac", settings("sac", demo.sac_steps), **critic),
        # BC has no critic: γ only discounts its evaluation returns.
        "bc": make_config(
            "bc", settings("bc", demo.bc_steps, eval_gamma=demo.gamma), hidden=hidden
        ),
    }


def _train(config: TrainConfig[Any]) -> dict[str, Any]:
    return start_or_resume(config)


def _progress(configs: dict[str, TrainConfig[Any]], futures: dict[str, Future[Any]]) -> None:
    """One progress bar per run, fed from the rows each run writes to its metrics.csv."""
    from tqdm import tqdm

    bars = {
        algo: tqdm(total=c.run.steps, desc=f"{LABELS[algo]:>12}", position=i, dynamic_ncols=True)
        for i, (algo, c) in enumerate(configs.items())
    }
    try:
        while True:
            for algo, bar in bars.items():
                path = Path(configs[algo].run.out or "") / METRICS_NAME
                try:
                    rows = plots.read_metrics(path)
                except (FileNotFoundError, ValueError):
                    continue
                steps = rows.get("step")
                if steps is not None and steps.size:
                    bar.update(int(steps[-1]) - bar.n)
                    score = rows.get("eval/normalized_score")
                    if score is not None and (score == score).any():
                        last = score[score == score][-1]
                        bar.set_postfix(score=f"{last:.1f}", refresh=False)
            if all(f.done() for f in futures.values()):
                break
            time.sleep(1.0)
    finally:
        for bar in bars.values():
            bar.close()


def _num(v: Any, fmt: str = ".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def results_table(final: dict[str, dict[str, Any]], summaries: dict[str, dict[str, Any]]) -> str:
    """Markdown table per algorithm: the final evaluation (``deep.evaluate`` results) and the
    run's length and throughput (its summary)."""
    lines = [
        "| algorithm | normalised score | return (mean ± std) | Q(s₀, π(s₀)) predicted "
        "| discounted return obtained (MC) | Q − MC | steps | steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for algo, r in final.items():
        q, mc = r["eval/q_estimate"], r["eval/mc_return"]
        lines.append(
            f"| {LABELS.get(algo, algo)} | {_num(r['eval/normalized_score'])} "
            f"| {_num(r['eval/return_mean'])} ± {_num(r['eval/return_std'])} | {_num(q)} "
            f"| {_num(mc)} | {_num(q - mc)} | {summaries[algo]['steps']} "
            f"| {_num(summaries[algo]['steps_per_second'], '.0f')} |"
        )
    return "\n".join(lines) + "\n"


README = """# Demo: CQL vs offline SAC vs behaviour cloning

Made by `python -m deep.demo` on `{dataset}` (seed {seed}), in {minutes:.1f} minutes.
Gradient steps: {steps}; networks {hidden}, γ = {gamma}, target τ = {tau} (chosen so the
critics converge within the budget), CQL weight {weight}; `python -m deep.demo --help` explains them.

Where to look:

- `results.md`: the final table (also below): each final checkpoint evaluated on
  {episodes} episodes. Q(s₀, π(s₀)) is the critic's prediction at the episodes' start states,
  MC the discounted return (γ = {gamma}) the policy actually obtained from them.
- `comparison.png`: left, the evaluation score of each agent over training; right, the
  critic's over-estimation Q − MC at each evaluation (above 0: over-estimates its own value;
  below: conservative).
- `cql/`, `sac/`, `bc/`: one run each. `learning_curves.png` (losses, score, Q vs MC),
  `metrics.csv` (every logged number), `summary.json`, `config.json` (resolved settings),
  `checkpoint.pt` (re-evaluate with `python -m deep.evaluate {out}/cql`), and `tb/` for
  `tensorboard --logdir {out}`.

What the theory predicts: naive offline SAC bootstraps from actions the dataset never
shows, so its critic can rise far above the return its policy obtains. CQL's regulariser
pushes the values of such actions down, so its estimate should stay at or below the obtained
return (a lower bound, paper Theorem 3.2). The normalised score is 0 for a uniformly random
policy and 100 for the expert controller.

What this run shows:

{observations}

{table}"""


README_NAME = "README.md"
_OWN = frozenset({*LABELS, README_NAME, RESULTS_MD, RESULTS_JSON, plots.COMPARISON, REPORT_DIR})
"""Everything a demo folder holds (and the report a user may make of it)."""
"""The demo's settings and final numbers, read by notebook 08 (``docs/results/demo.json`` is
the committed copy of one run of ``python -m deep.demo``)."""


def results_record(demo: DemoConfig, final: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The demo's settings (every :class:`DemoConfig` field but ``out`` and ``workers``) and,
    per algorithm, the final score, the critic's Q(s0, pi(s0)) and the Monte-Carlo return."""
    settings = {k: v for k, v in dataclasses.asdict(demo).items() if k not in ("out", "workers")}
    return {
        "command": "python -m deep.demo",
        "settings": settings,
        "final": {
            algo: {
                "normalized_score": r["eval/normalized_score"],
                "q_estimate": r["eval/q_estimate"],
                "mc_return": r["eval/mc_return"],
            }
            for algo, r in final.items()
        },
    }


def observations(final: dict[str, dict[str, Any]], behaviour: str) -> str:
    """Bullet points stating, from the numbers, what each critic did and who scored best."""
    lines = []
    for algo, r in final.items():
        q, mc = r["eval/q_estimate"], r["eval/mc_return"]
        if math.isnan(q):
            continue
        verdict = "an over-estimate" if q > mc else "a conservative under-estimate"
        lines.append(
            f"- {LABELS.get(algo, algo)}: the critic predicts {q:.1f} at the start states; the "
            f"policy obtained {mc:.1f} from them: {verdict} by {abs(q - mc):.1f}."
        )
    scores = {a: r["eval/normalized_score"] for a, r in final.items()}
    finite = {a: v for a, v in scores.items() if math.isfinite(v)}
    if finite:
        best = max(finite, key=lambda a: finite[a])
        lines.append(
            f"- Best normalised score: {LABELS.get(best, best)} ({finite[best]:.1f}); "
            f"the dataset's own behaviour policy scores {behaviour}."
        )
    return "\n".join(lines)


def behaviour_score(dataset: str) -> str:
    """Mean normalised score of the dataset's own episodes, or "n/a"."""
    try:
        ds = load_dataset(dataset)
        return f"{float(normalized_score(ds.name, episode_returns(ds)).mean()):.1f}"
    except (ValueError, KeyError, FileNotFoundError):
        return "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    """Train the three agents, then write the plots, the table and the README."""
    return main_guard(_main, argv)


def _main(argv: list[str]) -> int:
    demo = tyro.cli(
        DemoConfig,
        args=argv,
        prog="python -m deep.demo",
        description=(__doc__ or "").split("\n\n")[0],
    )
    if demo.final_episodes < 1 or demo.workers < 1:
        raise SystemExit(
            f"--final-episodes and --workers must be >= 1, got {demo.final_episodes} and "
            f"{demo.workers}"
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread each is fastest on a shared machine
    try:
        return _demo(demo)
    finally:
        torch.set_num_threads(threads)


def _demo(demo: DemoConfig) -> int:
    """Train (or reuse) the runs, evaluate their final checkpoints, write the folder."""
    start = time.perf_counter()
    out = claim(demo.out, _OWN, "deep.demo")
    configs = run_configs(demo)
    states = {algo: run_state(c) for algo, c in configs.items()}  # all refused before any work
    # Generate (or read from the cache) the dataset once, before the workers race for it.
    behaviour = behaviour_score(demo.dataset)

    summaries: dict[str, dict[str, Any]] = {}
    if demo.workers == 1:
        for algo, config in configs.items():
            doing = {"start": "training", "resume": "resuming", "done": "reading"}[states[algo]]
            print(f"{doing} {LABELS[algo]} ({config.run.steps} steps)", flush=True)
            summaries[algo] = start_or_resume(config)
    else:
        # spawn: fresh interpreters, so no torch/OpenMP state is inherited through fork.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=demo.workers, mp_context=context) as pool:
            futures = {algo: pool.submit(_train, c) for algo, c in configs.items()}
            _progress(configs, futures)
            summaries = {algo: f.result() for algo, f in futures.items()}

    plots.plot_comparison(
        {LABELS[a]: Path(c.run.out or "") for a, c in configs.items()},
        out / plots.COMPARISON,
        behaviour_score=float(behaviour) if behaviour != "n/a" else None,
    )
    final = {
        algo: evaluate_checkpoint(c.run.out or "", episodes=demo.final_episodes, device="cpu")
        for algo, c in configs.items()
    }
    table = results_table(final, summaries)
    atomic_write_text(out / RESULTS_MD, table)
    write_json(out / RESULTS_JSON, results_record(demo, final))
    minutes = (time.perf_counter() - start) / 60
    atomic_write_text(
        out / README_NAME,
        README.format(
            dataset=demo.dataset,
            seed=demo.seed,
            minutes=minutes,
            out=demo.out,
            observations=observations(final, behaviour),
            table=table,
            episodes=demo.final_episodes,
            gamma=demo.gamma,
            tau=demo.target_tau,
            weight=demo.cql_weight,
            hidden="×".join(map(str, demo.hidden_dims)),
            steps=", ".join(f"{LABELS[a]} {c.run.steps:,}" for a, c in configs.items()),
        ),
    )
    print()
    print(table)
    print(
        f"Wrote {out}/README.md, results.md, {RESULTS_JSON}, comparison.png in "
        f"{minutes:.1f} minutes."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
