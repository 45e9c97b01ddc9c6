"""File formats: D4RL HDF5 (read and export), ``.npz`` (one reader, one writer) and Minari.

- D4RL HDF5 (``.hdf5`` / ``.h5``) is read with h5py and the transition semantics of d4rl's
  ``qlearning_dataset(env, terminate_on_end=False)`` (no d4rl install needed);
  :func:`export_d4rl` writes any dataset back as a D4RL file that d4rl itself reads to exactly
  the same transitions.
- ``.npz``: :func:`read_npz` reads the D4RL layout (rows are steps) or the transition layout
  (rows are transitions, with ``next_observations``) that :func:`save_npz` writes; the
  built-in datasets' cache (:mod:`deep.data.builtin`) uses the same reader and writer.
- ``minari:<dataset id>`` (:func:`read_minari`) reads the local Minari store
  (``$MINARI_DATASETS_PATH``, default ``~/.minari/datasets``); nothing is ever downloaded.

Every reader validates with :func:`deep.data.dataset.check_arrays`: a bad file raises
``DatasetError`` naming the key and the first bad row; a file that cannot be read at all
(truncated, corrupt, not HDF5 / not a zip archive) raises ``DatasetError`` naming the file.

Continuous actions follow the agents' convention, [-1, 1]. Bounds other than [-1, 1] (given to
the loader, stored in a file's ``action_low``/``action_high`` attributes, or a Minari Box
space) are checked in the data's units, then, with ``rescale_actions`` (the default), the
actions are mapped to ``a = 2 (u - low) / (high - low) - 1`` and the dataset stores [-1, 1] as
its bounds: ``deep.envs.make_env``'s ``RescaleAction`` maps the policy's actions back to the
environment's units.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deep.data.dataset import (
    TRANSITION_KEYS,
    DatasetError,
    OfflineDataset,
    action_bound,
    check_arrays,
    first_given,
    validate_dataset,
)
from deep.files import atomic_write

HDF5_SUFFIXES = (".hdf5", ".h5")
NPZ_SUFFIX = ".npz"
D4RL_KEYS = ("observations", "actions", "rewards", "terminals")

# D4RL's gym-mujoco datasets were recorded on the v2 mujoco-py environments; their Gymnasium
# successors are the v5 MuJoCo environments (the ones Minari's mujoco/* datasets use).
D4RL_ENV_IDS = {
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}


# ---------------------------------------------------------------------------------------------
# D4RL layout (HDF5 or npz): rows are steps, next observation = next row
# ---------------------------------------------------------------------------------------------


def d4rl_name(stem: str) -> str:
    """Dataset name from a D4RL file stem: ``hopper_medium_replay-v2`` -> ``hopper-medium-replay-v2``.

    D4RL's URLs spell the gym-mujoco files with underscores while its dataset (and reference
    score) names use hyphens; other stems are returned unchanged.
    """
    head = re.split(r"[_-]", stem, maxsplit=1)[0]
    return stem.replace("_", "-") if head.lower() in D4RL_ENV_IDS else stem


def infer_env_id(name: str) -> str | None:
    """Gymnasium id for a D4RL-style name (``hopper-medium-v2`` -> ``Hopper-v5``), else None."""
    head = re.split(r"[_\-/]", name, maxsplit=1)[0].lower()
    return D4RL_ENV_IDS.get(head)


def _d4rl_timeout_rows(
    terminals: np.ndarray, timeouts: np.ndarray | None, max_episode_steps: int | None, source: str
) -> np.ndarray:
    """Rows qlearning_dataset treats as the final step of an episode (those it drops).

    With a 'timeouts' key these are simply the timeout rows. Without it, d4rl falls back on a
    step counter compared with ``env._max_episode_steps``; we replay that counter exactly,
    including its quirk that the counter restarts at 1, not 0, after a terminal row.
    """
    n = terminals.shape[0]
    if timeouts is not None:
        return timeouts
    if max_episode_steps is None:
        raise DatasetError(
            f"{source}: no 'timeouts' key. d4rl then ends an episode every "
            "env._max_episode_steps steps; pass --max-episode-steps N (max_episode_steps=N of "
            "load_dataset) to reproduce that, or add a 'timeouts' array (zeros if no episode "
            "was truncated)"
        )
    if max_episode_steps < 1:
        raise ValueError(f"--max-episode-steps must be >= 1, got {max_episode_steps}")
    final = np.zeros(n, dtype=np.bool_)
    episode_step = 0
    for i in range(n - 1):  # mirrors the loop of d4rl.qlearning_dataset
        if episode_step == max_episode_steps - 1:
            final[i] = True
            episode_step = 0
            continue
        if terminals[i]:
            episode_step = 0
        episode_step += 1
    return final


def _from_d4rl_arrays(
    raw: Mapping[str, np.ndarray], *, source: str, fo: _FileOptions, max_episode_steps: int | None
) -> OfflineDataset:
    """Transitions of d4rl's ``qlearning_dataset(env, terminate_on_end=False)``.

    For rows i = 0..N-2: transition ``(observations[i], actions[i], rewards[i],
    observations[i+1], terminals[i])``, skipped when row i is a timeout (its next row belongs
    to another episode). The last row has no next observation and is dropped. A terminal row
    is kept even though its "next observation" is the next episode's first one: it is never
    bootstrapped from. A key 'next_observations' in the file is ignored, as d4rl ignores it.
    Every row of the file is validated, including the rows this reading drops, and messages
    name file rows.
    """
    keys = [k for k in ("observations", "actions", "rewards", "terminals", "timeouts") if k in raw]
    checked = check_arrays(
        {k: raw[k] for k in keys},
        keys=D4RL_KEYS,
        flag_keys=("terminals", "timeouts"),
        discrete=fo.discrete,
        n_actions=fo.n_actions,
        action_low=fo.action_low if fo.check else None,
        action_high=fo.action_high if fo.check else None,
        source=source,
    )
    n = checked["observations"].shape[0]
    if n < 2:
        raise DatasetError(f"{source}: {n} row(s); the D4RL layout needs at least 2 rows")
    final = _d4rl_timeout_rows(
        checked["terminals"], checked.get("timeouts"), max_episode_steps, source
    )
    kept = np.flatnonzero(~final[: n - 1])
    if kept.size == 0:
        raise DatasetError(f"{source}: every row is a timeout; no transition remains")
    terminals = checked["terminals"][kept]
    # The trajectory stops after s' when the following file row is not kept (a timeout row, or
    # the last row): record that as a timeout of the kept transition, unless it is terminal.
    stops = np.append(kept[1:] != kept[:-1] + 1, True)
    return OfflineDataset(
        observations=checked["observations"][kept],
        actions=checked["actions"][kept],
        rewards=checked["rewards"][kept],
        next_observations=checked["observations"][kept + 1],
        terminals=terminals,
        timeouts=stops & ~terminals,
        discrete=fo.discrete,
        n_actions=fo.n_actions,
        env_id=fo.env_id,
        name=fo.name,
        action_low=fo.action_low,
        action_high=fo.action_high,
    )


def _attr_str(attrs: Mapping[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    return str(value) if str(value) else None


def _unreadable(path: Path, kind: str, err: BaseException) -> DatasetError:
    detail = " ".join(str(err).split()) or type(err).__name__
    return DatasetError(
        f"{path}: not a readable {kind} file (truncated or corrupt?): {detail}; "
        "replace it with a complete copy"
    )


# What h5py and numpy raise for a file that is truncated, corrupt or of another format
# (h5py: OSError; np.load: BadZipFile, EOFError, zlib.error, ValueError for a non-zip file).
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    RuntimeError,
    zipfile.BadZipFile,
    zlib.error,
)


def usable_bounds(low: np.ndarray, high: np.ndarray, source: str) -> None:
    """Raise ``DatasetError`` naming bounds that define no action box (non-finite, high <= low)."""
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
        raise DatasetError(
            f"{source}: unusable action bounds low={low.tolist()}, high={high.tolist()} (they "
            "must be finite with high > low in every dimension); pass --action-low/--action-high "
            "(action_low/action_high of load_dataset)"
        )


def rescale_to_unit(
    actions: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a = 2 (u - low) / (high - low) - 1``: actions in [low, high] -> [-1, 1], with the new
    bounds (-1, 1). The inverse of ``gymnasium.wrappers.RescaleAction(env, -1, 1)``.

    Shapes: ``actions`` (N, act_dim), ``low``/``high`` (act_dim,); returns float32 arrays.
    """
    if np.all(low == -1.0) and np.all(high == 1.0):
        return actions, low, high
    scaled = 2.0 * (actions.astype(np.float64) - low) / (high.astype(np.float64) - low) - 1.0
    dims = low.shape[0]
    unit_low, unit_high = action_bound(-1.0, dims), action_bound(1.0, dims)
    assert unit_low is not None and unit_high is not None
    # float64 rounding may step just outside [-1, 1]; the agents' tanh range is closed.
    return np.clip(scaled, -1.0, 1.0).astype(np.float32), unit_low, unit_high


def _in_agent_units(ds: OfflineDataset, opts: LoadOptions) -> OfflineDataset:
    """A file's continuous actions in [-1, 1] when ``opts.rescale_actions`` (see module doc);
    the bounds were checked by :func:`_file_options`."""
    low, high = ds.action_low, ds.action_high
    if ds.discrete or low is None or high is None or not opts.rescale_actions:
        return ds
    actions, low, high = rescale_to_unit(ds.actions, low, high)
    return replace(ds, actions=actions, action_low=low, action_high=high)


@dataclass(frozen=True)
class LoadOptions:
    """The keyword arguments of :func:`deep.data.load_dataset`, passed on to the readers.

    The defaults are ``load_dataset``'s; its docstring says what each one means.
    """

    name: str | None = None
    env_id: str | None = None
    n_actions: int | None = None
    action_low: np.ndarray | float | None = None
    action_high: np.ndarray | float | None = None
    check_action_bounds: bool = True
    max_episode_steps: int | None = None
    layout: Literal["auto", "d4rl", "transitions"] = "auto"
    rescale_actions: bool = True


@dataclass(frozen=True)
class _FileOptions:
    """Arguments of :func:`deep.data.load_dataset` resolved against a file's attributes."""

    name: str
    env_id: str | None
    discrete: bool
    n_actions: int | None
    action_low: np.ndarray | None  # bounds to store and (when check) to check against
    action_high: np.ndarray | None
    check: bool


def _file_options(
    attrs: Mapping[str, Any], raw_actions: np.ndarray, path: Path, opts: LoadOptions
) -> _FileOptions:
    """Arguments > file attributes (written by :func:`export_d4rl`) > defaults."""
    name = opts.name or _attr_str(attrs, "name") or d4rl_name(path.stem)
    env_id = opts.env_id or _attr_str(attrs, "env_id") or infer_env_id(name)
    n_actions = opts.n_actions
    if n_actions is None and "n_actions" in attrs:
        n_actions = int(np.asarray(attrs["n_actions"]))
    discrete = n_actions is not None
    if not discrete and raw_actions.ndim == 1 and np.issubdtype(raw_actions.dtype, np.integer):
        raise DatasetError(
            f"{path}: 'actions' are 1-D integers (a discrete action space?) but the number of "
            "actions is unknown; pass n_actions=..."
        )
    low: Any = None
    high: Any = None
    if not discrete and raw_actions.ndim == 2:
        act_dim = raw_actions.shape[1]
        low = first_given(opts.action_low, attrs.get("action_low"))
        high = first_given(opts.action_high, attrs.get("action_high"))
        if opts.check_action_bounds:
            # D4RL's MuJoCo tasks act in [-1, 1]; the assumption is checked, so it is stored.
            low, high = first_given(low, -1.0), first_given(high, 1.0)
        low, high = action_bound(low, act_dim), action_bound(high, act_dim)
        if low is not None and high is not None:
            usable_bounds(low, high, str(path))
    return _FileOptions(
        name, env_id, discrete, n_actions if discrete else None, low, high, opts.check_action_bounds
    )


def read_hdf5(path: Path, opts: LoadOptions) -> OfflineDataset:
    """A D4RL HDF5 file, read as d4rl's ``qlearning_dataset`` would (see :func:`_from_d4rl_arrays`).

    Attributes written by :func:`export_d4rl` (name, env_id, n_actions, action bounds) are used
    where ``opts`` does not set them.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw: dict[str, np.ndarray] = {}
            for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
                if key in f:
                    item = f[key]
                    if not isinstance(item, h5py.Dataset):
                        raise DatasetError(f"{path}: '{key}' is an HDF5 group, expected an array")
                    raw[key] = np.asarray(item[()])
            keys = sorted(f.keys())
            attrs = dict(f.attrs)
    except DatasetError:
        raise
    except _READ_ERRORS as e:
        raise _unreadable(path, "HDF5", e) from e
    if "observations" not in raw or "actions" not in raw:
        missing = [k for k in D4RL_KEYS if k not in raw]
        raise DatasetError(
            f"{path}: missing key(s) {missing}; top-level keys: {keys}; "
            f"the D4RL layout needs {list(D4RL_KEYS)} and usually 'timeouts'"
        )
    fo = _file_options(attrs, raw["actions"], path, opts)
    ds = _from_d4rl_arrays(raw, source=str(path), fo=fo, max_episode_steps=opts.max_episode_steps)
    return _in_agent_units(ds, opts)


def read_npz(path: Path, opts: LoadOptions) -> OfflineDataset:
    """An ``.npz`` file in the D4RL layout or in the transition layout of :func:`save_npz`.

    ``opts.layout`` ``"auto"`` picks the transition layout when the file has
    ``next_observations``. Metadata (name, env_id, n_actions, action bounds) come from ``opts``,
    else from the file's ``attr_*`` arrays, else from the defaults of :func:`_file_options`.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise DatasetError(f"{path}: a single .npy array, not an .npz archive of arrays")
            raw = {k: z[k] for k in z.files}
    except DatasetError:
        raise
    except _READ_ERRORS as e:
        raise _unreadable(path, "npz", e) from e
    # save_npz stores the metadata as 0-d arrays named attr_*.
    attrs = {k[len("attr_") :]: raw.pop(k) for k in list(raw) if k.startswith("attr_")}
    if "name" not in attrs and "name" in raw and raw["name"].ndim == 0:
        # Built-in cache files written before the cache used save_npz (under the same file
        # names) store only the name, as 'name'.
        attrs["name"] = raw.pop("name")
    if "actions" not in raw or "observations" not in raw:
        raise DatasetError(
            f"{path}: missing key(s) {[k for k in D4RL_KEYS if k not in raw]}; "
            f"keys in the file: {sorted(raw)}"
        )
    layout = opts.layout
    if layout == "auto":
        layout = "transitions" if "next_observations" in raw else "d4rl"
    fo = _file_options(attrs, raw["actions"], path, opts)
    if layout == "d4rl":
        ds = _from_d4rl_arrays(
            raw, source=str(path), fo=fo, max_episode_steps=opts.max_episode_steps
        )
        return _in_agent_units(ds, opts)
    checked = check_arrays(
        raw,
        keys=TRANSITION_KEYS,
        flag_keys=("terminals", "timeouts"),
        discrete=fo.discrete,
        n_actions=fo.n_actions,
        action_low=fo.action_low if fo.check else None,
        action_high=fo.action_high if fo.check else None,
        source=str(path),
    )
    ds = OfflineDataset(
        observations=checked["observations"],
        actions=checked["actions"],
        rewards=checked["rewards"],
        next_observations=checked["next_observations"],
        terminals=checked["terminals"],
        timeouts=checked.get("timeouts"),
        discrete=fo.discrete,
        n_actions=fo.n_actions,
        env_id=fo.env_id,
        name=fo.name,
        action_low=fo.action_low,
        action_high=fo.action_high,
    )
    return _in_agent_units(ds, opts)


# ---------------------------------------------------------------------------------------------
# Minari
# ---------------------------------------------------------------------------------------------


def read_minari(dataset_id: str, opts: LoadOptions) -> OfflineDataset:
    """Transitions ``(o[t], a[t], r[t], o[t+1], terminations[t])`` of every episode.

    ``timeouts[t] = truncations[t] and not terminations[t]``. Episodes are concatenated in the
    dataset's order; the env id is the id of the dataset's ``env_spec`` (None when it has
    none). Continuous actions are checked against the dataset's Box action space (or the given
    bounds) in the environment's units, then, with ``rescale_actions``, mapped to the agent's
    convention ``a = 2 (u - low) / (high - low) - 1`` in [-1, 1] (the inverse of the
    ``RescaleAction`` wrapper that ``deep.envs.make_env`` puts on such environments).
    """
    try:
        import minari
        from gymnasium import spaces
    except ImportError as e:  # pragma: no cover - minari is a dev dependency
        raise ImportError("'minari:' specs need the minari package: pip install minari") from e

    store = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
    try:
        md = minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"Minari dataset {dataset_id!r} is not in the local store {store} "
            "(MINARI_DATASETS_PATH); this loader never downloads. Fetch it once with "
            f"`minari download {dataset_id}` on a machine with network access."
        ) from e

    obs_space, act_space = md.observation_space, md.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise DatasetError(f"minari:{dataset_id}: observations must be a flat Box, got {obs_space}")
    discrete = isinstance(act_space, spaces.Discrete)
    n_actions: int | None = None
    low = high = None
    if discrete:
        assert isinstance(act_space, spaces.Discrete)
        if int(act_space.start) != 0:
            raise DatasetError(
                f"minari:{dataset_id}: Discrete action space starts at {act_space.start}, "
                "expected 0"
            )
        n_actions = int(act_space.n)
    elif isinstance(act_space, spaces.Box) and len(act_space.shape) == 1:
        act_dim = int(act_space.shape[0])
        low = action_bound(first_given(opts.action_low, act_space.low), act_dim)
        high = action_bound(first_given(opts.action_high, act_space.high), act_dim)
    else:
        raise DatasetError(
            f"minari:{dataset_id}: actions must be Discrete or a flat Box, got {act_space}"
        )

    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("observations", "actions", "rewards", "next", "term", "trunc")
    }
    episode_ids: list[int] = []
    lengths: list[int] = []
    for ep in md.iterate_episodes():
        obs = np.asarray(ep.observations)
        steps = len(ep.rewards)
        if obs.shape[0] != steps + 1:
            raise DatasetError(
                f"minari:{dataset_id}: episode {ep.id} has {obs.shape[0]} observations for "
                f"{steps} steps; expected {steps + 1}"
            )
        parts["observations"].append(obs[:-1])
        parts["next"].append(obs[1:])
        parts["actions"].append(np.asarray(ep.actions))
        parts["rewards"].append(np.asarray(ep.rewards))
        parts["term"].append(np.asarray(ep.terminations))
        parts["trunc"].append(np.asarray(ep.truncations))
        episode_ids.append(int(ep.id))
        lengths.append(steps)
    if not episode_ids:
        raise DatasetError(f"minari:{dataset_id}: the dataset has no episodes")

    starts = np.cumsum([0, *lengths])

    def where(i: int) -> str:
        e = int(np.searchsorted(starts, i, side="right")) - 1
        return f"transition {i} (episode {episode_ids[e]}, step {i - starts[e]})"

    checked = check_arrays(
        {
            "observations": np.concatenate(parts["observations"]),
            "actions": np.concatenate(parts["actions"]),
            "rewards": np.concatenate(parts["rewards"]),
            "next_observations": np.concatenate(parts["next"]),
            "terminals": np.concatenate(parts["term"]),
            "timeouts": np.concatenate(parts["trunc"]) & ~np.concatenate(parts["term"]),
        },
        keys=TRANSITION_KEYS,
        flag_keys=("terminals", "timeouts"),
        discrete=discrete,
        n_actions=n_actions,
        action_low=low if opts.check_action_bounds else None,
        action_high=high if opts.check_action_bounds else None,
        where=where,
        source=f"minari:{dataset_id}",
    )
    actions = checked["actions"]
    if not discrete and opts.rescale_actions:
        assert low is not None and high is not None
        usable_bounds(low, high, f"minari:{dataset_id}")
        actions, low, high = rescale_to_unit(actions, low, high)
    spec = md.env_spec
    return OfflineDataset(
        observations=checked["observations"],
        actions=actions,
        rewards=checked["rewards"],
        next_observations=checked["next_observations"],
        terminals=checked["terminals"],
        timeouts=checked["timeouts"],
        discrete=discrete,
        n_actions=n_actions,
        env_id=opts.env_id or (spec.id if spec is not None else None),
        name=opts.name or dataset_id,
        action_low=low,
        action_high=high,
    )


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_d4rl` wrote: file rows = transitions + padding rows."""

    path: Path
    transitions: int
    rows: int
    padding_rows: int


def d4rl_rows(dataset: OfflineDataset) -> dict[str, np.ndarray]:
    """The dataset as D4RL rows (steps), such that qlearning_dataset gives back its transitions.

    Transition j becomes row ``(o_j, a_j, r_j, terminal_j, timeout=0)``. Where the next row's
    observation would not be ``s'_j`` (an episode boundary, a gap, or the end of the data), a
    padding row with observation ``s'_j``, zero action and reward, and ``timeout=1`` follows:
    qlearning_dataset reads ``s'_j`` from it and then drops it (it drops every timeout row and
    the last row). Transitions marked as timeouts are also followed by a padding row, so the
    trajectory boundary survives the round trip. ``next_observations`` holds ``s'_j`` (the
    padding rows repeat their own observation), as D4RL's v2 files carry that key too.
    """
    ds = validate_dataset(dataset, check_action_bounds=False)
    n = len(ds)
    continues = np.zeros(n, dtype=np.bool_)
    continues[:-1] = np.all(ds.next_observations[:-1] == ds.observations[1:], axis=1)
    if ds.timeouts is not None:
        continues &= ~(ds.timeouts & ~ds.terminals)
    pad = ~continues
    # Row index of transition j in the file: j plus the padding rows inserted before it.
    pos = np.arange(n) + np.concatenate([[0], np.cumsum(pad)[:-1]])
    pad_pos = pos[pad] + 1
    rows = n + int(pad.sum())

    def scatter(values: np.ndarray, pad_values: np.ndarray | float) -> np.ndarray:
        out = np.zeros((rows, *values.shape[1:]), dtype=values.dtype)
        out[pos] = values
        out[pad_pos] = pad_values
        return out

    return {
        "observations": scatter(ds.observations, ds.next_observations[pad]),
        "actions": scatter(ds.actions, 0),
        "rewards": scatter(ds.rewards, 0.0),
        "terminals": scatter(ds.terminals, False),
        "timeouts": np.isin(np.arange(rows), pad_pos),
        "next_observations": scatter(ds.next_observations, ds.next_observations[pad]),
    }


def export_d4rl(dataset: OfflineDataset, path: str | os.PathLike[str]) -> ExportSummary:
    """Write ``dataset`` as a D4RL HDF5 file that reads back to exactly the same transitions.

    Keys: observations (M, obs_dim) float32, actions (M, act_dim) float32 or (M,) int64,
    rewards (M,) float32, terminals (M,) bool, timeouts (M,) bool, next_observations; file
    attributes: name, env_id, n_actions (discrete), action_low/high (when known). See
    :func:`d4rl_rows` for the padding rows. Both :func:`deep.data.load_dataset` and d4rl's own
    ``qlearning_dataset(env, dataset=...)`` give back the N transitions unchanged. The file is
    replaced atomically (:func:`deep.files.atomic_write`).
    """
    import h5py

    rows = d4rl_rows(dataset)
    target = Path(path)
    # HDF5 is built in memory, then written through atomic_write: a reader never sees a
    # half-written file, and a failed export leaves the previous file in place.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key, value in rows.items():
            f.create_dataset(key, data=value)
        f.attrs["name"] = dataset.name
        if dataset.env_id is not None:
            f.attrs["env_id"] = dataset.env_id
        if dataset.discrete:
            assert dataset.n_actions is not None
            f.attrs["n_actions"] = int(dataset.n_actions)
        if dataset.action_low is not None:
            f.attrs["action_low"] = np.asarray(dataset.action_low, dtype=np.float32)
        if dataset.action_high is not None:
            f.attrs["action_high"] = np.asarray(dataset.action_high, dtype=np.float32)
    atomic_write(target, lambda fh: fh.write(buffer.getbuffer()))
    m = int(rows["rewards"].shape[0])
    return ExportSummary(target, len(dataset), m, m - len(dataset))


def save_npz(dataset: OfflineDataset, path: str | os.PathLike[str]) -> Path:
    """Write the transitions as ``.npz`` (transition layout, read back by :func:`read_npz`).

    Keys: the five transition arrays, ``timeouts`` (when known), and the metadata as 0-d
    arrays ``attr_name``, ``attr_env_id``, ``attr_n_actions`` (discrete),
    ``attr_action_low``/``attr_action_high`` (when known). The file is replaced atomically
    (:func:`deep.files.atomic_write`): the built-in datasets' cache writes through here too.
    """
    ds = validate_dataset(dataset, check_action_bounds=False)
    arrays: dict[str, Any] = {  # Any: np.savez's stubs type **kwds like its allow_pickle flag
        "observations": ds.observations,
        "actions": ds.actions,
        "rewards": ds.rewards,
        "next_observations": ds.next_observations,
        "terminals": ds.terminals,
        "attr_name": np.asarray(ds.name),
    }
    if ds.timeouts is not None:
        arrays["timeouts"] = ds.timeouts
    if ds.env_id is not None:
        arrays["attr_env_id"] = np.asarray(ds.env_id)
    if ds.discrete:
        arrays["attr_n_actions"] = np.asarray(ds.n_actions)
    if ds.action_low is not None:
        arrays["attr_action_low"] = ds.action_low
    if ds.action_high is not None:
        arrays["attr_action_high"] = ds.action_high
    target = Path(path)
    # A file handle keeps numpy from appending ".npz" to the name.
    atomic_write(target, lambda fh: np.savez(fh, **arrays))
    return target


EXPORT_SUFFIXES = (*HDF5_SUFFIXES, NPZ_SUFFIX)
"""File suffixes :func:`export_file` writes: D4RL HDF5 (``.hdf5``, ``.h5``) or ``.npz``."""


def check_export_target(path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """The export target ``path``, refused (``ValueError`` / ``FileExistsError`` naming it and
    what to do) when its suffix is not in :data:`EXPORT_SUFFIXES`, it is a folder, its parent
    cannot be a folder, or it exists and ``force`` is False. Nothing is written."""
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    if target.is_dir():
        raise ValueError(
            f"cannot export to {target}: it is a folder; give a file path ending in "
            + ", ".join(EXPORT_SUFFIXES)
        )
    if suffix not in EXPORT_SUFFIXES:
        raise ValueError(
            f"cannot export to {target}: unsupported suffix {suffix!r}; accepted: "
            ".hdf5 or .h5 (D4RL HDF5), .npz (transition layout)"
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"cannot export to {target}: {parent} is a file, not a folder; choose a "
                    "path inside a folder"
                )
            break
    if target.exists() and not force:
        raise FileExistsError(
            f"{target} exists; pass --force to replace it, or choose another path"
        )
    return target


def export_file(
    dataset: OfflineDataset, path: str | os.PathLike[str], *, force: bool = False
) -> str:
    """Write ``dataset`` by the suffix of ``path``: ``.hdf5``/``.h5`` with :func:`export_d4rl`,
    ``.npz`` with :func:`save_npz`; returns a one-line summary of what was written.

    The target is checked first (:func:`check_export_target`); the write is atomic, so a failed
    export leaves any previous file untouched. An ``OSError`` of the write (a read-only folder,
    a full disk) becomes an ``OSError`` whose message names the target.
    """
    target = check_export_target(path, force=force)
    write: Callable[[], str]
    if target.suffix.lower() == NPZ_SUFFIX:

        def write() -> str:
            save_npz(dataset, target)
            return (
                f"wrote {target}: {len(dataset)} transitions of {dataset.name!r} as .npz "
                "(transition layout)"
            )

    else:

        def write() -> str:
            summary = export_d4rl(dataset, target)
            return (
                f"wrote {summary.path}: {summary.transitions} transitions of {dataset.name!r} "
                f"as {summary.rows} D4RL rows ({summary.padding_rows} padding rows with "
                "timeouts=1, dropped again by qlearning_dataset)"
            )

    try:
        return write()
    except OSError as e:
        reason = e.strerror or " ".join(str(e).split())
        raise OSError(f"cannot write {target}: {reason}; choose a folder you can write to") from e
