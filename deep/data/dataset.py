"""The offline dataset container: arrays, validation, sampling, normalisation and episodes.

An :class:`OfflineDataset` holds transitions ``(s, a, r, s', done)`` as numpy arrays. A
:class:`ReplaySampler` copies them once to the training device and samples batches there with
an explicit ``torch.Generator``, so the training loop never moves data from the host.
:func:`validate_dataset` (and :func:`check_arrays`, which the file readers of
:mod:`deep.data.formats` share) checks arrays at the boundary and raises :class:`DatasetError`
naming the key and the first bad row.

This module is a leaf: it imports no other module of the project, so the containers can be
used (by the agents, for instance) without pulling in file formats or environments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

import numpy as np
import scipy.signal
import torch

from deep.batch import Batch

TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


class DatasetError(ValueError):
    """A dataset file or array does not have the expected layout or values."""


@dataclass
class OfflineDataset:
    """Transitions of a dataset, as numpy arrays of equal length N.

    ``observations`` and ``next_observations`` are (N, obs_dim) float32; ``rewards`` (N,)
    float32; ``terminals`` (N,) bool (1: s' is terminal, no bootstrap). ``actions`` is
    (N, act_dim) float32 when ``discrete`` is False, else (N,) int64 with values in
    ``[0, n_actions)``. ``timeouts`` (N,) bool, where known, marks transitions after which the
    trajectory stops without a terminal (a time limit, or the end of the recorded data), so the
    next row starts another episode. ``env_id`` names the gymnasium environment used to
    evaluate policies trained on it; ``name`` is the dataset's name (used to look up reference
    scores). ``action_low`` / ``action_high`` (act_dim,) bound the *stored* continuous actions
    where known. The project's convention is [-1, 1] (a tanh actor's range; D4RL's MuJoCo
    tasks already act there, Minari actions are rescaled on loading, and ``deep.envs.make_env``
    rescales back to the environment's units).

    :func:`validate_dataset` checks all of this and returns the canonical dtypes;
    :func:`deep.data.load_dataset` always does.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray | None = None
    discrete: bool = False
    n_actions: int | None = None
    env_id: str | None = None
    name: str = "dataset"
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        """Action dimension (continuous) or number of actions (discrete)."""
        if self.discrete:
            assert self.n_actions is not None
            return self.n_actions
        return int(self.actions.shape[1])


class ReplaySampler:
    """Uniform batches from an :class:`OfflineDataset`, sampled on ``device``.

    The arrays are copied to the device once; each :meth:`sample` draws indices with the given
    generator (on the same device), so sampling never synchronises with the host and its state
    can be checkpointed (``generator.get_state()``).
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        device: torch.device | str,
        generator: torch.Generator,
        *,
        returns_to_go_gamma: float | None = None,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
    ) -> None:
        """``returns_to_go_gamma``: also put each transition's :func:`returns_to_go` with this
        discount in the batch, computed once on the rewards the agent trains on
        (``reward_scale * r + reward_bias``); None (the default) leaves it out."""
        self.device = torch.device(device)
        # torch.randint needs the generator on the device it samples on; a mismatch would only
        # surface at the first sample() call, far from where the sampler was built.
        if generator.device.type != self.device.type:
            raise ValueError(
                f"generator is on {generator.device}, but the sampler samples on {self.device}; "
                f"create it with torch.Generator(device={str(self.device)!r})"
            )
        if len(dataset) == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.generator = generator
        act_dtype = torch.int64 if dataset.discrete else torch.float32
        self._obs = torch.as_tensor(dataset.observations, dtype=torch.float32, device=self.device)
        self._act = torch.as_tensor(dataset.actions, dtype=act_dtype, device=self.device)
        self._rew = torch.as_tensor(dataset.rewards, dtype=torch.float32, device=self.device)
        self._next = torch.as_tensor(
            dataset.next_observations, dtype=torch.float32, device=self.device
        )
        self._term = torch.as_tensor(dataset.terminals, dtype=torch.float32, device=self.device)
        self._rtg: torch.Tensor | None = None
        if returns_to_go_gamma is not None:
            rtg = returns_to_go(dataset, returns_to_go_gamma, reward_scale, reward_bias)
            self._rtg = torch.as_tensor(rtg, dtype=torch.float32, device=self.device)
        self.size = len(dataset)

    def sample(self, batch_size: int) -> Batch:
        """Draw ``batch_size`` transitions uniformly with replacement."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        idx = torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator)
        return Batch(
            self._obs[idx],
            self._act[idx],
            self._rew[idx],
            self._next[idx],
            self._term[idx],
            None if self._rtg is None else self._rtg[idx],
        )


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _row(i: int) -> str:
    return f"row {i}"


def _first_bad_row(bad: np.ndarray) -> tuple[int, int | None]:
    """(row, column) of the first True in a (N,) or (N, d) mask; column None for 1-D."""
    if bad.ndim == 1:
        return int(np.argmax(bad)), None
    flat = bad.reshape(bad.shape[0], -1)
    row = int(np.argmax(flat.any(axis=1)))
    return row, int(np.argmax(flat[row]))


def _f32(a: np.ndarray) -> np.ndarray:
    # Overflow to inf is reported by the finiteness check, with its row; no warning needed.
    with np.errstate(over="ignore"):
        return a.astype(np.float32)


def _at(where: Callable[[int], str], row: int, col: int | None) -> str:
    return where(row) if col is None else f"{where(row)}, column {col}"


def check_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    keys: Sequence[str],
    flag_keys: Sequence[str],
    discrete: bool,
    n_actions: int | None,
    action_low: np.ndarray | float | None,
    action_high: np.ndarray | float | None,
    where: Callable[[int], str] = _row,
    source: str = "dataset",
) -> dict[str, np.ndarray]:
    """Validate row-aligned arrays and return them with canonical dtypes.

    ``keys`` are required; ``flag_keys`` (terminals, timeouts) must hold 0/1 values. Rewards
    and flags of shape (N, 1) are flattened, as d4rl's ``get_dataset`` does; nothing else is
    reshaped. ``where(i)`` describes row i in messages. Bounds of ``None`` skip that check.
    """
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DatasetError(
            f"{source}: missing key(s) {missing}; present: {sorted(arrays)}; required: {list(keys)}"
        )
    out: dict[str, np.ndarray] = {}
    # Other keys (D4RL's infos/*, metadata/*) are neither needed nor row-aligned: ignored.
    for k in dict.fromkeys([*keys, *flag_keys]):
        if k not in arrays:
            continue
        a = np.asarray(arrays[k])
        if k == "rewards" or k in flag_keys:
            if a.ndim == 2 and a.shape[1] == 1:
                a = a[:, 0]
            if a.ndim != 1:
                raise DatasetError(f"{source}: '{k}' must be 1-D (N,), got shape {a.shape}")
        out[k] = a

    n = out["observations"].shape[0] if out["observations"].ndim >= 1 else 0
    for k, a in out.items():
        if a.ndim == 0 or a.shape[0] != n:
            got = "a scalar" if a.ndim == 0 else f"{a.shape[0]} rows"
            raise DatasetError(
                f"{source}: '{k}' has {got} but 'observations' has {n} rows; "
                "all arrays must have one row per step"
            )
    if n == 0:
        raise DatasetError(f"{source}: the dataset has no rows")

    obs_keys = [k for k in ("observations", "next_observations") if k in out]
    for k in obs_keys:
        if out[k].ndim != 2:
            raise DatasetError(
                f"{source}: '{k}' must be 2-D (N, obs_dim), got shape {out[k].shape}"
            )
        if not np.issubdtype(out[k].dtype, np.number) or np.issubdtype(
            out[k].dtype, np.complexfloating
        ):
            raise DatasetError(f"{source}: '{k}' must be real numbers, got dtype {out[k].dtype}")
        out[k] = _f32(out[k])
    if "next_observations" in out and out["next_observations"].shape != out["observations"].shape:
        raise DatasetError(
            f"{source}: 'next_observations' has shape {out['next_observations'].shape}, "
            f"'observations' has {out['observations'].shape}"
        )

    act = out["actions"]
    if discrete:
        if n_actions is None or n_actions < 1:
            raise DatasetError(f"{source}: discrete actions need n_actions >= 1, got {n_actions}")
        if act.ndim == 2 and act.shape[1] == 1:
            act = act[:, 0]
        if act.ndim != 1:
            raise DatasetError(
                f"{source}: discrete 'actions' must be 1-D (N,) integers, got shape {act.shape}"
            )
        if not np.issubdtype(act.dtype, np.integer):
            raise DatasetError(
                f"{source}: discrete 'actions' must have an integer dtype, got {act.dtype}"
            )
        bad = (act < 0) | (act >= n_actions)
        if bad.any():
            i, _ = _first_bad_row(bad)
            raise DatasetError(
                f"{source}: 'actions' {where(i)} holds action {int(act[i])}, outside [0, {n_actions})"
            )
        out["actions"] = act.astype(np.int64)
    else:
        if act.ndim != 2:
            raise DatasetError(
                f"{source}: continuous 'actions' must be 2-D (N, act_dim), got shape {act.shape}"
                + (
                    " (integer actions? pass n_actions for a discrete dataset)"
                    if act.ndim == 1
                    else ""
                )
            )
        if not np.issubdtype(act.dtype, np.number):
            raise DatasetError(f"{source}: 'actions' must be numbers, got dtype {act.dtype}")
        out["actions"] = _f32(act)

    if not np.issubdtype(out["rewards"].dtype, np.number):
        raise DatasetError(f"{source}: 'rewards' must be numbers, got dtype {out['rewards'].dtype}")
    out["rewards"] = _f32(out["rewards"])

    # Finiteness is checked after the float32 cast: a float64 value beyond 3.4e38 becomes inf.
    float_keys = [*obs_keys, "rewards"] + ([] if discrete else ["actions"])
    for k in float_keys:
        bad = ~np.isfinite(out[k])
        if bad.any():
            i, j = _first_bad_row(bad)
            value = out[k][i] if j is None else out[k][i, j]
            raise DatasetError(
                f"{source}: '{k}' {_at(where, i, j)} is not finite (as float32): {value:.7g}"
            )

    if not discrete and (action_low is not None or action_high is not None):
        # Compared in float32, the actions' dtype: a bound of 1.2 admits float32(1.2).
        act_dim = out["actions"].shape[1]
        lo = np.broadcast_to(
            np.asarray(-np.inf if action_low is None else action_low, np.float32), (act_dim,)
        )
        hi = np.broadcast_to(
            np.asarray(np.inf if action_high is None else action_high, np.float32), (act_dim,)
        )
        bad = (out["actions"] < lo) | (out["actions"] > hi)
        if bad.any():
            i, j = _first_bad_row(bad)
            assert j is not None
            raise DatasetError(
                f"{source}: 'actions' {_at(where, i, j)} = {out['actions'][i, j]:.7g} is outside "
                f"the action space [{lo[j]:.7g}, {hi[j]:.7g}]; if the environment's bounds "
                "differ, pass them as --action-low/--action-high (action_low/action_high of "
                "load_dataset)"
            )

    for k in flag_keys:
        if k not in out:
            continue
        a = out[k]
        if a.dtype != np.bool_:
            if not np.issubdtype(a.dtype, np.number):
                raise DatasetError(f"{source}: '{k}' must be 0/1 flags, got dtype {a.dtype}")
            bad = (a != 0) & (a != 1)
            if bad.any():
                i, _ = _first_bad_row(bad)
                raise DatasetError(
                    f"{source}: '{k}' {where(i)} is {a[i].item()!r}, expected 0 or 1"
                )
        out[k] = a.astype(np.bool_)
    return out


def first_given(*values: Any) -> Any:
    """The first argument that is not None (None if all are)."""
    return next((v for v in values if v is not None), None)


def action_bound(value: np.ndarray | float | None, act_dim: int) -> np.ndarray | None:
    """Action bound as a fresh (act_dim,) float32 array (a scalar applies to every dimension)."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] not in (1, act_dim)):
        raise ValueError(f"action bound must be a scalar or ({act_dim},), got shape {arr.shape}")
    return np.broadcast_to(arr, (act_dim,)).copy()


def validate_dataset(
    dataset: OfflineDataset,
    *,
    action_low: np.ndarray | float | None = None,
    action_high: np.ndarray | float | None = None,
    check_action_bounds: bool = True,
) -> OfflineDataset:
    """Check a dataset's arrays and return a copy with canonical dtypes.

    Checks: equal lengths, 2-D (N, obs_dim) observations and next observations, finite values
    (the first bad row is named), terminals/timeouts in {0, 1}, discrete actions in
    ``[0, n_actions)``, continuous actions inside ``[action_low, action_high]``. The bounds
    default (each on its own) to the dataset's ``action_low``/``action_high``, else -1 / 1
    (checked, not stored); with ``check_action_bounds=False`` continuous actions are only checked for
    finiteness. Explicit bounds are stored in the returned dataset.
    """
    arrays: dict[str, np.ndarray] = {
        "observations": dataset.observations,
        "actions": dataset.actions,
        "rewards": dataset.rewards,
        "next_observations": dataset.next_observations,
        "terminals": dataset.terminals,
    }
    if dataset.timeouts is not None:
        arrays["timeouts"] = dataset.timeouts
    low = first_given(action_low, dataset.action_low)
    high = first_given(action_high, dataset.action_high)
    checked = check_arrays(
        arrays,
        keys=TRANSITION_KEYS,
        flag_keys=("terminals", "timeouts"),
        discrete=dataset.discrete,
        n_actions=dataset.n_actions,
        action_low=first_given(low, -1.0) if check_action_bounds else None,
        action_high=first_given(high, 1.0) if check_action_bounds else None,
        source=f"dataset {dataset.name!r}",
    )
    act_dim = 0 if dataset.discrete else checked["actions"].shape[1]
    return replace(
        dataset,
        observations=checked["observations"],
        actions=checked["actions"],
        rewards=checked["rewards"],
        next_observations=checked["next_observations"],
        terminals=checked["terminals"],
        timeouts=checked.get("timeouts"),
        n_actions=dataset.n_actions if dataset.discrete else None,
        action_low=None if dataset.discrete else action_bound(low, act_dim),
        action_high=None if dataset.discrete else action_bound(high, act_dim),
    )


# ---------------------------------------------------------------------------------------------
# Episodes and normalisation
# ---------------------------------------------------------------------------------------------


def episode_ends(dataset: OfflineDataset) -> np.ndarray:
    """(N,) bool: transition j is the last of its trajectory segment.

    A segment ends at a terminal, a timeout, the last transition, or wherever ``s'_j`` is not
    the next transition's ``s`` (data that is not stored contiguously).
    """
    n = len(dataset)
    ends = np.asarray(dataset.terminals, dtype=np.bool_).copy()
    if dataset.timeouts is not None:
        ends |= np.asarray(dataset.timeouts, dtype=np.bool_)
    ends[:-1] |= np.any(dataset.next_observations[:-1] != dataset.observations[1:], axis=1)
    ends[n - 1] = True
    return ends


def episode_returns(dataset: OfflineDataset) -> np.ndarray:
    """Undiscounted return ``Σ_t r_t`` of every finished episode, in data order.

    Shape (n_episodes,) float64. An episode ends where a segment of :func:`episode_ends` ends
    with a reason: a terminal, a timeout, or ``s'_j`` differing from the next transition's
    ``s``. The final segment counts only if its last transition is a terminal or a timeout;
    otherwise it is an episode cut off by the end of the data, whose sum is not an episode's
    return (it would pull the mean and the minimum down). That is what D4RL users get from
    ``d4rl.sequence_dataset`` and CORL's ``return_reward_range``, which both drop the
    unfinished last episode. (The D4RL reader of :mod:`deep.data.formats` marks the
    transition before a file's last row as a timeout, since d4rl's transitions cannot tell a
    time limit from the end of the recording, so such a final episode counts.) The built-in
    datasets hold complete episodes only: all their rows count. Empty when nothing ends.
    """
    ends = episode_ends(dataset)
    starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
    returns = np.add.reduceat(np.asarray(dataset.rewards, dtype=np.float64), starts)
    last = len(dataset) - 1
    finished = bool(dataset.terminals[last]) or (
        dataset.timeouts is not None and bool(dataset.timeouts[last])
    )
    return returns if finished else returns[:-1]


def returns_to_go(
    dataset: OfflineDataset, gamma: float, reward_scale: float = 1.0, reward_bias: float = 0.0
) -> np.ndarray:
    """(N,) float64: the discounted Monte-Carlo return of each transition's trajectory from it
    on, ``G_j = r_j + gamma G_{j+1}`` inside a segment of :func:`episode_ends`, ``G_j = r_j`` at
    its last transition, with ``r = reward_scale * reward + reward_bias``.

    This is the return-to-go Cal-QL (Nakamoto et al. 2023) takes as the behaviour policy's
    value at (s_j, a_j). A segment cut by a time limit or by the end of the data is summed to its
    end without a bootstrap, as in the official Cal-QL code and CORL: for a truncated segment
    ``G_j`` leaves out the rewards after the cut (a discount of gamma^k for the k steps left).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    rewards = reward_scale * np.asarray(dataset.rewards, dtype=np.float64) + reward_bias
    ends = np.flatnonzero(episode_ends(dataset))
    out = np.empty_like(rewards)
    start = 0
    for end in ends.tolist():
        out[start : end + 1] = discounted_returns(rewards[start : end + 1], gamma)
        start = end + 1
    return out


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """(T,) float64: ``G_t = r_t + gamma G_{t+1}`` over one trajectory's rewards (T,), with
    ``G_{T-1} = r_{T-1}`` (nothing bootstrapped after its end)."""
    # Backwards: lfilter computes y_t = x_t + gamma y_{t-1}.
    seg = np.asarray(rewards, dtype=np.float64)[::-1]
    out: np.ndarray = scipy.signal.lfilter([1.0], [1.0, -gamma], seg)[::-1].copy()
    return out


class ObservationNormalizer:
    """Per-dimension standardisation ``(o - mean) / std`` with ``std = sqrt(Var[o]) + eps``.

    Statistics come from the dataset's observations (as in CORL); ``eps`` keeps constant
    dimensions finite (they map to 0). Works on numpy arrays and torch tensors of shape
    (..., obs_dim); torch inputs keep their device and dtype. :meth:`state_dict` holds plain
    tensors, so it can be stored in a checkpoint read with ``torch.load(weights_only=True)``.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        mean = np.asarray(mean, dtype=np.float32)
        std = np.asarray(std, dtype=np.float32)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(f"mean and std must be (obs_dim,), got {mean.shape} and {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("mean must be finite and std finite and positive")
        self.mean = mean
        self.std = std

    @classmethod
    def from_dataset(cls, dataset: OfflineDataset, eps: float = 1e-3) -> ObservationNormalizer:
        """Mean and standard deviation (plus ``eps``) over the dataset's observations."""
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        obs = np.asarray(dataset.observations, dtype=np.float64)
        return cls(obs.mean(axis=0), obs.std(axis=0) + eps)

    def _like(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as tensors of ``obs``'s dtype and device."""
        return (
            torch.as_tensor(self.mean, dtype=obs.dtype, device=obs.device),
            torch.as_tensor(self.std, dtype=obs.dtype, device=obs.device),
        )

    @overload
    def __call__(self, obs: np.ndarray) -> np.ndarray: ...
    @overload
    def __call__(self, obs: torch.Tensor) -> torch.Tensor: ...
    def __call__(self, obs: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``(obs - mean) / std``, shape (..., obs_dim) -> same shape."""
        if isinstance(obs, torch.Tensor):
            mean, std = self._like(obs)
            return (obs - mean) / std
        obs = np.asarray(obs)
        dtype = obs.dtype if np.issubdtype(obs.dtype, np.floating) else np.float32
        return ((obs - self.mean) / self.std).astype(dtype, copy=False)

    normalize = __call__

    @overload
    def denormalize(self, obs: np.ndarray) -> np.ndarray: ...
    @overload
    def denormalize(self, obs: torch.Tensor) -> torch.Tensor: ...
    def denormalize(self, obs: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Inverse map ``obs * std + mean``."""
        if isinstance(obs, torch.Tensor):
            mean, std = self._like(obs)
            return obs * std + mean
        return np.asarray(obs) * self.std + self.mean

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"mean": (obs_dim,), "std": (obs_dim,)}`` float32 CPU tensors (std includes eps)."""
        return {
            "mean": torch.from_numpy(self.mean.copy()),
            "std": torch.from_numpy(self.std.copy()),
        }

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor | np.ndarray]
    ) -> ObservationNormalizer:
        """Rebuild from :meth:`state_dict` (tensors on any device, or numpy arrays)."""
        missing = [k for k in ("mean", "std") if k not in state]
        if missing:
            raise KeyError(f"normalizer state is missing {missing}; has {sorted(state)}")

        def as_array(v: torch.Tensor | np.ndarray) -> np.ndarray:
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        return cls(as_array(state["mean"]), as_array(state["std"]))


def normalize_dataset(
    dataset: OfflineDataset, normalizer: ObservationNormalizer | None = None
) -> tuple[OfflineDataset, ObservationNormalizer]:
    """A copy with observations and next observations normalised, and the normaliser used.

    Without ``normalizer``, one is fitted on ``dataset`` (:meth:`ObservationNormalizer.from_dataset`).
    The input dataset is not modified.
    """
    norm = normalizer if normalizer is not None else ObservationNormalizer.from_dataset(dataset)
    if norm.mean.shape[0] != dataset.obs_dim:
        raise ValueError(
            f"normalizer is for obs_dim {norm.mean.shape[0]}, dataset has {dataset.obs_dim}"
        )
    out = replace(
        dataset,
        observations=norm(np.asarray(dataset.observations, dtype=np.float32)),
        next_observations=norm(np.asarray(dataset.next_observations, dtype=np.float32)),
    )
    return out, norm


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def describe(dataset: OfflineDataset) -> str:
    """A few lines of sizes and returns, as printed by ``python -m deep.data info``."""
    ds = dataset
    if ds.discrete:
        actions = f"discrete, {ds.n_actions} actions"
    else:
        lo = "?" if ds.action_low is None else np.array2string(ds.action_low, precision=3)
        hi = "?" if ds.action_high is None else np.array2string(ds.action_high, precision=3)
        actions = f"continuous, act_dim {ds.act_dim}, bounds low {lo} high {hi}"
    returns = episode_returns(ds)
    timeouts = "unknown" if ds.timeouts is None else str(int(np.sum(ds.timeouts)))
    lines = [
        f"name: {ds.name}",
        f"env_id: {ds.env_id}",
        f"transitions: {len(ds)}",
        f"obs_dim: {ds.obs_dim}",
        f"actions: {actions}",
        f"terminals: {int(np.sum(ds.terminals))}, timeouts: {timeouts}",
        f"rewards: mean {np.mean(ds.rewards):.4g}, min {np.min(ds.rewards):.4g}, "
        f"max {np.max(ds.rewards):.4g}",
        f"segments: {returns.size}, return mean {returns.mean():.4g}, std {returns.std():.4g}, "
        f"min {returns.min():.4g}, max {returns.max():.4g}"
        if returns.size
        else "segments: 0 (no transition ends an episode)",
    ]
    return "\n".join(lines)


_DIGEST_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


def dataset_digest(dataset: OfflineDataset) -> str:
    """SHA-256 over the transition arrays (dtype, shape and bytes, timeouts included when
    known): the identity a resumed run checks its data against."""
    h = hashlib.sha256()
    arrays = [getattr(dataset, k) for k in _DIGEST_KEYS]
    if dataset.timeouts is not None:
        arrays.append(dataset.timeouts)
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B") if a.flags.c_contiguous else a.tobytes())
    return h.hexdigest()
