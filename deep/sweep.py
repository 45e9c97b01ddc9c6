"""Sweeps of ``deep.train`` runs, datasets × algorithms × settings × seeds, on Ray.

::

    python -m deep.sweep sweep.toml                       # a spec file (TOML or JSON)
    python -m deep.sweep --algos cql bc --datasets pendulum-medium --seeds 0 1 2 \\
        --set steps=2000 cql:critic_hidden=[64,64] bc:hidden=[64,64] \\
        --grid cql:cql_weight=[1,5] --out runs/sweep
    python -m deep.sweep sweep.toml --address auto --gpus-per-trial 0.25   # on a cluster
    python -m deep.sweep sweep.toml --workers 1           # in this process, without Ray

A spec file holds the same lists (command-line ones replace the file's)::

    algos = ["cql", "bc"]
    datasets = ["pendulum-medium"]
    seeds = [0, 1, 2]              # or a count: seeds = 3 means 0, 1, 2
    out = "runs/sweep"

    [train]                        # train options of every trial
    steps = 2000
    [grid]                         # each list is an axis of the grid, for every trial
    batch_size = [128, 256]
    [cql.train]                    # options of cql's trials only (options differ by algo)
    critic_hidden = [64, 64]
    [cql.grid]
    cql_weight = [1.0, 5.0]

Option names are those of ``python -m deep.train ALGO --help`` (``cql_weight`` or
``cql-weight``); values are JSON / TOML values (a list for a multi-value option, true/false for
a flag). Each trial is an ordinary training run in its own folder under the sweep folder,
named from algo, dataset, grid settings and seed (``cql-pendulum-medium-cql_weight=5-seed0``),
so ``deep.evaluate``, ``deep.train resume`` and the plots work on it unchanged (it holds
nothing else: deep.train refuses folders with foreign files). The sweep folder also holds
``sweep.json`` (the last spec), ``sweep.jsonl`` (one line per trial event: start, resume,
skip, done, failed, interrupted), ``.sweep/<trial>.json`` (the trial's definition, which
deep.report reads for its labels), ``.sweep/<trial>.log`` (its output), and at the end the
:mod:`deep.report` of all its trials.

Running the same command again continues a sweep: a trial whose folder has ``summary.json``
is finished and skipped, one with ``checkpoint.pt`` but no summary is resumed (``deep.train``
resumes exactly), any other starts afresh. The trial folders are the sweep's whole state.

Each trial is a :class:`~deep.config.TrainConfig` (:meth:`Trial.config`), built and checked
for every trial before the first one runs (a misspelt option, a value of the wrong type, an
unknown dataset: exit 2 naming the trial), and run by :func:`deep.train.start_or_resume`,
the rule every tool uses for a run folder: new -> start, same settings -> resume or read,
other settings -> refuse.

Ray: each trial is one Ray *task* (``ray.remote(num_cpus=…, num_gpus=…)``, placed by
:mod:`deep.tasks`) that runs its config in the worker process, not Ray Tune. The grid is fixed and every
trial runs to its end, so Tune's search algorithms, schedulers and result reporting have
nothing to do, while its experiment state (``Tuner.restore``) would be a second record of
progress beside the trial folders, able to disagree with them; with tasks, "continue" is just
running the sweep again, and the folders are plain ``deep.train`` runs. Locally ``ray.init``
starts on ``--workers`` × ``--cpus-per-trial`` CPUs (default: every core, one trial per core,
one torch thread each); ``--address`` (or ``RAY_ADDRESS``) joins a cluster, whose nodes need
this package installed and the sweep folder on shared storage. ``--workers 1`` without an
address runs the trials one after the other in this process and needs no Ray. Ray starts its
workers at niceness 15: on a machine busy with other work, the trials get what that work
leaves (and their ``steps_per_second`` shows it).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tyro

from deep import cli, train
from deep import report as report_module
from deep.algos import ALGORITHMS
from deep.config import TrainConfig, options_config
from deep.data import spec_kind
from deep.files import atomic_write_text
from deep.layout import (
    CHECKPOINT_NAME,
    REPORT_DIR,
    REPORT_FILES,
    SWEEP_EVENTS,
    SWEEP_META,
    SWEEP_SPEC,
    FolderError,
    claim,
)
from deep.tasks import PlacementError, check_address, ray_map, ray_session, require_ray

SPEC_NAME = SWEEP_SPEC
EVENTS_NAME = SWEEP_EVENTS
META_DIR = SWEEP_META

# Everything a sweep folder may hold besides its trial folders: the sweep's files, its report
# folder, and the report files that earlier versions wrote into the sweep folder itself.
_OWN = frozenset({SPEC_NAME, EVENTS_NAME, META_DIR, REPORT_DIR, *REPORT_FILES})
# The longest trial name kept whole; a longer one is cut and ends with a digest of the whole.
_MAX_NAME = 150
# Set by the sweep itself (its lists and resources), so not allowed among the settings.
_RESERVED = frozenset({"algo", "dataset", "seed", "out", "resume", "threads", "device"})
_SPEC_KEYS = frozenset({"algos", "datasets", "seeds", "out", "train", "grid"})


def _meta(root: Path, name: str, kind: str) -> Path:
    """``root/.sweep/<name>.<kind>``: a trial's definition (json), output (log) or lock."""
    return root / META_DIR / f"{name}.{kind}"


class SweepError(ValueError):
    """Bad input to a sweep; its message is one line naming the problem."""


# ------------------------------------------------------------------------------ trials


@dataclass(frozen=True)
class Trial:
    """One training run of the sweep."""

    algo: str
    dataset: str
    seed: int
    settings: tuple[tuple[str, Any], ...] = ()
    """Train options (name, value), sorted by name: the fixed ones and this grid point's."""
    grid: tuple[str, ...] = ()
    """Names of the settings that vary across the sweep (they name the folder)."""
    threads: int = 1
    """torch threads (the CPUs Ray reserves for the trial)."""
    device: str = "cpu"

    @property
    def name(self) -> str:
        """Folder name: ``algo-dataset[-key=value...]-seedN``; beyond 150 characters, cut and
        ended by a digest of the whole name (the full settings are in ``.sweep/<name>.json``
        and the run's config)."""
        parts = [self.algo, _slug(self.dataset)]
        values = dict(self.settings)
        parts += [f"{k}={_slug(_value_text(values[k]))}" for k in self.grid]
        name = "-".join([*parts, f"seed{self.seed}"])
        if len(name) <= _MAX_NAME:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        return f"{name[: _MAX_NAME - 25]}-{digest}-seed{self.seed}"

    def config(self, root: str | Path) -> TrainConfig[Any]:
        """The trial's training run in ``root / name``; ValueError naming the trial and the
        option when a setting is unknown, of the wrong type or impossible."""
        return options_config(
            self.algo,
            dict(self.settings),
            where=f"trial {self.name}",
            dataset=self.dataset,
            seed=self.seed,
            out=str(Path(root) / self.name),
            threads=self.threads,
            device=self.device,
            progress=False,
        )

    def to_dict(self) -> dict[str, Any]:
        """What ``.sweep/<name>.json`` holds (deep.report reads ``settings``)."""
        return {
            "name": self.name,
            "algo": self.algo,
            "dataset": self.dataset,
            "seed": self.seed,
            "settings": dict(self.settings),
            "grid": list(self.grid),
        }


def _value_text(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "x".join(_value_text(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _slug(text: str) -> str:
    """A dataset spec or value as a file-name part: a path's stem, unsafe characters as _."""
    if "/" in text and not text.startswith("minari:"):
        text = Path(text).stem
    text = text.removeprefix("minari:")
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "_"


# ------------------------------------------------------------------------------ the spec


@dataclass
class Spec:
    """What to sweep: the lists, and train options for every trial or one algo's."""

    algos: list[str]
    datasets: list[str]
    seeds: list[int]
    train: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    per_algo: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """algo -> {"train": {...}, "grid": {...}}."""
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "algos": self.algos,
            "datasets": self.datasets,
            "seeds": self.seeds,
            "train": self.train,
            "grid": self.grid,
        }
        data.update(self.per_algo)
        if self.out is not None:
            data["out"] = self.out
        return data


def _option_name(key: str, where: str) -> str:
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
        raise SweepError(f"{where}: {key!r} is not an option name")
    name = key.replace("-", "_")
    if name in _RESERVED:
        hint = {
            "algo": "algos",
            "dataset": "datasets",
            "seed": "seeds",
            "threads": "--cpus-per-trial",
            "device": "--gpus-per-trial",
        }.get(name, "the sweep folder")
        raise SweepError(f"{where}: {key!r} is set by the sweep (use {hint})")
    return name


def _options(table: Any, where: str, grid: bool) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise SweepError(f"{where} must be a table of options, got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        name = _option_name(key, where)
        if grid:
            if not isinstance(value, list):
                raise SweepError(f"{where}.{key} must be a list of values, got {value!r}")
            if not value:
                raise SweepError(f"{where}.{key} is an empty list")
        out[name] = value
    return out


def _str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SweepError(f"{key} must be a list of names, got {value!r}")
    if not value:
        raise SweepError(f"{key} is an empty list")
    if len(set(value)) != len(value):
        raise SweepError(f"{key} lists a name twice: {value}")
    return list(value)


def _seed_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SweepError(f"seeds = {value}: need at least one seed")
        return list(range(value))
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise SweepError(f"seeds must be a list of integers or a count, got {value!r}")
    if not value:
        raise SweepError("seeds is an empty list")
    if len(set(value)) != len(value):
        raise SweepError(f"seeds lists a seed twice: {value}")
    return list(value)


def spec_from_dict(data: Mapping[str, Any], source: str = "spec") -> Spec:
    """A :class:`Spec` from a spec file's data; raises :class:`SweepError` on bad input."""
    if not isinstance(data, Mapping):
        raise SweepError(f"{source}: a spec is a table, got {type(data).__name__}")
    for key in ("algos", "datasets", "seeds"):
        if key not in data:
            raise SweepError(f"{source}: no {key} given")
    algos = _str_list(data["algos"], "algos")
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown:
        raise SweepError(f"unknown algo {unknown[0]!r}; choose among {', '.join(ALGORITHMS)}")
    per_algo: dict[str, dict[str, dict[str, Any]]] = {}
    for key, value in data.items():
        if key in _SPEC_KEYS:
            continue
        if not isinstance(value, Mapping) or not value or set(value) - {"train", "grid"}:
            raise SweepError(
                f"{source}: unknown key {key!r} (expected {', '.join(sorted(_SPEC_KEYS))}, "
                "or an algo's table holding train and/or grid)"
            )
        if key not in ALGORITHMS:
            raise SweepError(
                f"{source}: [{key}] is a table for an algorithm, but {key!r} is none; "
                f"algorithms: {', '.join(ALGORITHMS)}"
            )
        if key not in algos:
            continue  # options of an algo this sweep leaves out (e.g. --algos bc on the CLI)
        per_algo[key] = {
            "train": _options(value.get("train", {}), f"{key}.train", grid=False),
            "grid": _options(value.get("grid", {}), f"{key}.grid", grid=True),
        }
    out = data.get("out")
    if out is not None and not isinstance(out, str):
        raise SweepError(f"{source}: out must be a folder name, got {out!r}")
    spec = Spec(
        algos=algos,
        datasets=_str_list(data["datasets"], "datasets"),
        seeds=_seed_list(data["seeds"]),
        train=_options(data.get("train", {}), "train", grid=False),
        grid=_options(data.get("grid", {}), "grid", grid=True),
        per_algo=per_algo,
        out=out,
    )
    fixed_and_grid = sorted(set(spec.train) & set(spec.grid))
    if fixed_and_grid:
        raise SweepError(
            f"{source}: {fixed_and_grid} set both as a fixed option and as a grid axis"
        )
    for algo, tables in per_algo.items():
        twice = sorted(set(tables["train"]) & set(tables["grid"]))
        if twice:
            raise SweepError(f"{algo}: {twice} set both in {algo}.train and in {algo}.grid")
        for kind in ("train", "grid"):
            both = (set(spec.train) | set(spec.grid)) & set(tables[kind])
            if both:
                raise SweepError(f"{algo}.{kind}: {sorted(both)} already set for every trial")
    return spec


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """A spec file's data: TOML (``.toml``) or JSON (anything else)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SweepError(f"cannot read spec {path}: {e.strerror or e}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as e:
        raise SweepError(f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a spec is a table, got {type(data).__name__}")
    return data


def trials(spec: Spec, threads: int = 1, device: str = "cpu") -> list[Trial]:
    """Every trial of ``spec``: algos × datasets × grid points × seeds, in that order."""
    out: list[Trial] = []
    for algo in spec.algos:
        tables = spec.per_algo.get(algo, {})
        fixed = {**spec.train, **tables.get("train", {})}
        grid = {**spec.grid, **tables.get("grid", {})}
        keys = sorted(grid)
        # Name by every grid axis of the sweep with more than one value (for this algo).
        named = tuple(k for k in keys if len(grid[k]) > 1)
        for dataset in spec.datasets:
            for point in itertools.product(*(grid[k] for k in keys)):
                settings = {**fixed, **dict(zip(keys, point, strict=True))}
                for seed in spec.seeds:
                    out.append(
                        Trial(
                            algo=algo,
                            dataset=dataset,
                            seed=seed,
                            settings=tuple(sorted(settings.items())),
                            grid=named,
                            threads=threads,
                            device=device,
                        )
                    )
    counts = collections.Counter(t.name for t in out)
    dup = sorted(n for n, k in counts.items() if k > 1)
    if dup:
        raise SweepError(f"two trials would share the folder {dup[0]} (datasets with one stem?)")
    return out


# ------------------------------------------------------------------------------ checks


def one_line(text: str) -> str:
    """The message of a (tyro-formatted) error as one line: its title and first lines, without
    the box, the separators and the help that follows."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip().strip("│╭╮╰╯─ ")
        if not line or set(line) <= set("─-━═ "):
            continue  # blank or a separator (a box rule, or its plain-text dashes)
        lowered = line.lower()
        if lowered.startswith(("for full helptext", "argument helptext")):
            break
        if lowered.startswith("usage:"):
            continue
        lines.append(line)
    lines = lines[:3]
    # A box title is repeated by its first line ("Value error" / "Value error: ..."): keep one.
    kept = [a for i, a in enumerate(lines) if not any(b.startswith(a) for b in lines[i + 1 :])]
    return ": ".join(kept[:2]) or "(no message)"


def _canonical(settings: Any) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def check_trials(items: Sequence[Trial], root: Path) -> None:
    """Every trial's config and dataset, checked before any trial runs: the first that cannot
    run raises :class:`SweepError` naming it, its position and the problem."""
    datasets: dict[str, str | None] = {}
    checked: set[tuple[Any, ...]] = set()  # trials that differ only in a valid seed check once
    for i, trial in enumerate(items, 1):
        if trial.dataset not in datasets:
            try:
                spec_kind(trial.dataset)
                datasets[trial.dataset] = None
            except (OSError, ValueError, KeyError) as e:
                datasets[trial.dataset] = cli.one_line(e)
        problem = datasets[trial.dataset]
        key = (trial.algo, trial.dataset, _canonical(trial.settings), trial.seed < 0)
        if problem is not None:
            problem = f"trial {trial.name}: {problem}"
        elif key not in checked:
            try:
                trial.config(root)
                checked.add(key)
            except ValueError as e:
                problem = cli.one_line(e)
        if problem is not None:
            raise SweepError(
                f"trial {i} of {len(items)} cannot run, so none was started: {problem}"
            )


def check_folder(root: Path, items: Sequence[Trial], create: bool = False) -> None:
    """Refuse a sweep folder holding anything not made by a sweep, or a trial folder made
    with other settings than its trial's now; ``create``: make a new one, or say in one line
    why it cannot be made."""
    if root.exists() and not root.is_dir():
        raise SweepError(f"{root} is a file, not a sweep folder")
    if not root.exists():
        if create:
            try:
                claim(root, (), "deep.sweep")
            except FolderError as e:
                raise SweepError(str(e)) from None
        return
    names = {t.name: t for t in items}
    trial_dirs = {
        e.name
        for e in root.iterdir()
        if e.is_dir() and (_meta(root, e.name, "json").is_file() or not any(e.iterdir()))
    }
    try:
        claim(root, _OWN | trial_dirs, "deep.sweep")
    except FolderError as e:
        raise SweepError(str(e)) from None
    for name, trial in names.items():
        path = _meta(root, name, "json")
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            continue  # rewritten when the trial starts afresh
        # Through JSON, so tuples and lists compare equal.
        now = json.loads(json.dumps(trial.to_dict()))
        if saved != now:
            diff = sorted(
                k
                for k in set(saved.get("settings", {})) | set(now["settings"])
                if saved.get("settings", {}).get(k) != now["settings"].get(k)
            )
            raise SweepError(
                f"{root / name} was made with other settings ({', '.join(diff) or 'definition'} "
                "differ); choose another --out"
            )


# ------------------------------------------------------------------------------ running


@dataclass
class TrialResult:
    name: str
    status: str
    """done (trained now), skipped (finished before), failed."""
    code: int = 0
    message: str = ""
    seconds: float = 0.0
    score: float | None = None


def _event(root: Path, trial: str, event: str, **extra: Any) -> None:
    # One short line per write with O_APPEND: concurrent trials do not interleave lines.
    line = json.dumps(
        {"time": time.time(), "trial": trial, "event": event, "pid": os.getpid(), **extra}
    )
    with open(root / EVENTS_NAME, "a") as f:
        f.write(line + "\n")


def read_events(root: str | Path) -> list[dict[str, Any]]:
    """The events of ``sweep.jsonl``, oldest first (a torn last line is skipped)."""
    path = Path(root) / EVENTS_NAME
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def trial_state(run_dir: Path) -> str:
    """``done`` (a readable summary.json), ``resume`` (a checkpoint, no summary) or ``fresh``."""
    if train.read_summary(run_dir) is not None:
        return "done"
    if (run_dir / CHECKPOINT_NAME).is_file():
        return "resume"
    return "fresh"


def _score(summary: Mapping[str, Any] | None) -> float | None:
    x = (summary or {}).get("normalized_score")
    return float(x) if isinstance(x, int | float) and x == x else None


@contextlib.contextmanager
def _trial_lock(root: Path, name: str) -> Iterator[None]:
    """Hold ``root/.sweep/<name>.lock`` exclusively (``flock``; released when the process
    dies, however). A trial is therefore never trained by two processes at once: the worker
    of a killed sweep that is still finishing its trial, and the sweep that continues it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    path = _meta(root, name, "lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_trial(trial: Trial, root: str | Path) -> TrialResult:
    """Run, continue or skip one trial in ``root / trial.name`` (in this process)."""
    root = Path(root)
    with _trial_lock(root, trial.name):
        return _run_trial_locked(trial, root)


def _run_trial_locked(trial: Trial, root: Path) -> TrialResult:
    run_dir = root / trial.name
    state = trial_state(run_dir)
    if state == "done":
        _event(root, trial.name, "skip")
        return TrialResult(trial.name, "skipped", score=_score(train.read_summary(run_dir)))
    config = trial.config(root)
    if state == "fresh":
        atomic_write_text(
            _meta(root, trial.name, "json"), json.dumps(trial.to_dict(), indent=2) + "\n"
        )
    _event(root, trial.name, "start" if state == "fresh" else "resume")
    start = time.perf_counter()
    log_path = _meta(root, trial.name, "log")
    with (
        open(log_path, "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        print(f"$ {state} {json.dumps(trial.to_dict())}", flush=True)
        try:
            summary = train.start_or_resume(config)
        except KeyboardInterrupt:
            _event(root, trial.name, "interrupted")
            raise
        except Exception as e:
            message = cli.one_line(e)
            print(f"error: {type(e).__name__}: {message}")
            failed = True
        else:
            failed = False
    seconds = time.perf_counter() - start
    if failed:
        _event(root, trial.name, "failed", code=1, message=message)
        return TrialResult(trial.name, "failed", 1, message, seconds)
    _event(root, trial.name, "done", seconds=seconds)
    return TrialResult(trial.name, "done", seconds=seconds, score=_score(summary))


def _run_trial_safely(trial: Trial, root: str) -> TrialResult:
    """:func:`run_trial`; an error outside training (a trial reports its own) comes back
    as a failed result, not a traceback."""
    try:
        return run_trial(trial, root)
    except Exception as e:
        return TrialResult(trial.name, "failed", 1, f"{type(e).__name__}: {cli.one_line(e)}")


def _ray_results(
    ray: Any, items: Sequence[Trial], root: Path, cpus: int, gpus: float
) -> Iterator[TrialResult]:
    """Every trial as a Ray task; results in the order they finish."""
    calls = [(t, str(root.resolve())) for t in items]
    for i, result in ray_map(ray, _run_trial_safely, calls, cpus, gpus):
        if isinstance(result, BaseException):
            message = cli.one_line(result)
            yield TrialResult(items[i].name, "failed", 1, message)
        else:
            yield result


def run_sweep(
    spec: Spec,
    out: str | Path,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_trial: int = 1,
    gpus_per_trial: float = 0.0,
    report: bool = True,
    reps: int = 2000,
    echo: bool = True,
) -> list[TrialResult]:
    """Check, run (or continue) every trial of ``spec`` in ``out``, then report on ``out``.

    ``workers``: concurrent trials on a local Ray instance (default: the machine's cores over
    ``cpus_per_trial``); ``1`` without an ``address`` runs them in this process, no Ray.
    Raises :class:`SweepError` on bad input, before any trial starts.
    """
    if cpus_per_trial < 1:
        raise SweepError(f"--cpus-per-trial must be at least 1, got {cpus_per_trial}")
    if gpus_per_trial < 0:
        raise SweepError(f"--gpus-per-trial must be at least 0, got {gpus_per_trial}")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be at least 1, got {workers}")
    if report and reps < 1:
        raise SweepError(f"--reps must be at least 1, got {reps}")
    address = address or os.environ.get("RAY_ADDRESS") or None
    local = workers == 1 and address is None
    if not local:
        require_ray()
    if address is not None:
        check_address(address)  # seconds, not Ray's minutes of retries, and before any write
    root = Path(out)
    items = trials(spec, cpus_per_trial, "cuda" if gpus_per_trial > 0 else "cpu")
    check_trials(items, root)
    check_folder(root, items, create=True)

    def say(text: str) -> None:
        if echo:
            print(text, file=sys.stderr, flush=True)

    def start() -> None:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / SPEC_NAME, json.dumps(spec.to_dict(), indent=2) + "\n")

    results: list[TrialResult] = []

    def collect(stream: Iterator[TrialResult]) -> None:
        for i, r in enumerate(stream, 1):
            results.append(r)
            score = "" if r.score is None else f", score {r.score:.1f}"
            detail = f": {r.message}" if r.status == "failed" else f" ({r.seconds:.1f} s{score})"
            say(f"[{i}/{len(items)}] {r.status} {r.name}{detail}")

    if local:
        start()
        say(f"{len(items)} trials in {root}, one after the other in this process")
        collect(run_trial(t, root) for t in items)
    else:
        cores = os.cpu_count() or 1
        n = workers if workers is not None else max(1, cores // cpus_per_trial)
        with ray_session(
            None if address else n, address, cpus_per_trial, gpus_per_trial
        ) as ray_module:
            start()
            say(f"{len(items)} trials in {root} on Ray ({address or f'local, {n} at a time'})")
            collect(_ray_results(ray_module, items, root, cpus_per_trial, gpus_per_trial))
    if report and any(r.status != "failed" for r in results):
        results_md = report_module.report(root, reps=reps)
        if echo:
            print(report_module.to_markdown(results_md), end="")
    return results


# ------------------------------------------------------------------------------ command line


def _parse_assignment(item: str, flag: str) -> tuple[str | None, str, Any]:
    """``[algo:]key=value`` with value read as JSON (else kept as a string)."""
    if "=" not in item:
        raise SweepError(f"{flag} {item!r}: expected KEY=VALUE or ALGO:KEY=VALUE")
    target, text = item.split("=", 1)
    algo, _, key = target.rpartition(":")
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return algo or None, key, value


@dataclass
class SweepConfig:
    """Run a grid of deep.train trials (datasets × algorithms × settings × seeds) on Ray."""

    spec: Annotated[tyro.conf.Positional[str | None], tyro.conf.arg(metavar="SPEC")] = None
    """Spec file (.toml, else JSON); the options below replace its lists."""

    algos: tuple[str, ...] | None = None
    """Algorithms, e.g. cql bc."""

    datasets: tuple[str, ...] | None = None
    """Datasets (any deep.train --dataset)."""

    seeds: tuple[int, ...] | None = None
    """Seeds."""

    set: tuple[str, ...] = ()
    """Train options of every trial, KEY=VALUE (VALUE as JSON, else a string), or
    ALGO:KEY=VALUE for one algorithm's trials: steps=2000 cql:critic_hidden=[64,64]."""

    grid: tuple[str, ...] = ()
    """Grid axes, KEY=[V1,V2,...] or ALGO:KEY=[...]: cql:cql_weight=[1,5]."""

    out: str | None = None
    """Sweep folder (default: the spec's out, else runs/sweep)."""

    workers: int | None = None
    """Trials at a time on the local Ray instance (default: cores / --cpus-per-trial);
    1 runs them in this process without Ray."""

    address: str | None = None
    """Ray cluster to join ("auto", or host:port); default: $RAY_ADDRESS, else local."""

    cpus_per_trial: int = 1
    """CPUs Ray reserves per trial, and its torch threads."""

    gpus_per_trial: float = 0.0
    """GPUs per trial, fractions allowed (0.25: four trials share a GPU); > 0 trains on cuda."""

    report: bool = True
    """Run deep.report on the sweep folder at the end."""

    reps: int = 2000
    """Bootstrap resamples of the report's intervals."""

    dry_run: bool = False
    """Check the spec and list the trials (and their state), run nothing."""


def spec_from_config(config: SweepConfig) -> Spec:
    """The spec file's data with the command line's lists and options applied."""
    data: dict[str, Any] = load_spec_file(config.spec) if config.spec is not None else {}
    if config.algos is not None:
        data["algos"] = list(config.algos)
    if config.datasets is not None:
        data["datasets"] = list(config.datasets)
    if config.seeds is not None:
        data["seeds"] = list(config.seeds)
    for flag, items in (("--set", config.set), ("--grid", config.grid)):
        kind = "train" if flag == "--set" else "grid"
        for item in items:
            algo, key, value = _parse_assignment(item, flag)
            if algo is None:
                data.setdefault(kind, {})[key] = value
            else:
                data.setdefault(algo, {}).setdefault(kind, {})[key] = value
    return spec_from_dict(data, config.spec or "command line")


def _parse(argv: Sequence[str] | None) -> SweepConfig:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            config: SweepConfig = tyro.cli(
                SweepConfig,
                args=argv,
                prog="python -m deep.sweep",
                description=(__doc__ or "").split("\n\n")[0],
            )
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise SweepError(one_line(err.getvalue())) from None
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m deep.sweep``). Exit codes: 0 every trial finished;
    1 some trial failed; 2 bad input (one line on stderr)."""
    try:
        config = _parse(argv)
        spec = spec_from_config(config)
        out = config.out or spec.out or "runs/sweep"
        if config.dry_run:
            items = trials(spec, config.cpus_per_trial)
            check_folder(Path(out), items)
            check_trials(items, Path(out))
            for t in items:
                print(f"{trial_state(Path(out) / t.name):6s} {t.name}")
            return 0
        results = run_sweep(
            spec,
            out,
            workers=config.workers,
            address=config.address,
            cpus_per_trial=config.cpus_per_trial,
            gpus_per_trial=config.gpus_per_trial,
            report=config.report,
            reps=config.reps,
        )
    except (SweepError, PlacementError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue the sweep", file=sys.stderr)
        return 130
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"failed: {r.name} (exit {r.code}): {r.message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
