"""How fast is one CQL update, next to this machine's matmul rate and next to d3rlpy?

``python -m deep.bench [--peer d3rlpy] [--precision fp32|bf16|bf16-td32] [--device cpu|cuda]
[--compile] [--threads T] [--clock wall|cpu] [--malloc default|tuned]``

The standard gym-mujoco setting (DESIGN.md, "usual gym-mujoco settings"): 3×256 MLPs for the
actor and both critics, batch 256, N = 10 sampled actions per group (3N = 30 pushed down per
state), twin critics, automatic entropy tuning, fixed CQL weight 5, learning rates 3e-4
(critics) / 1e-4 (actor, temperature). Cases: observation/action sizes (11, 3) (Hopper) and
(17, 6) (HalfCheetah, Walker2d). Batches are drawn once, before timing, on the training device:
the numbers are the update alone, not data loading.

Each case prints one JSON line:

- ``steps_per_second``: median over ``--repeats`` timed blocks of ``--steps`` updates, after
  warm-up; ``steps_per_second_spread`` is [min, max] over the blocks.
- ``update_gflop``: matmul work of one update, counted per network pass from the layer sizes
  by :func:`cql_update_flops` (bias adds, activations, the optimiser and the log-sum-exp are
  not counted: they are memory traffic, not arithmetic, and are what keeps an update from the
  limit).
- ``matmul_gflops``: this machine's measured rate in the update's precision (fp32, or bf16 for
  ``--precision bf16``), the best of the shapes the update multiplies, (256…7936) × 256 × 256,
  measured in every repeat right before the update block (the machine may be shared; the
  median over repeats is reported).
- ``limit_fraction`` = update_gflop × steps_per_second / matmul_gflops: 1.0 would be an update
  that does nothing but its matmuls, at the best rate this machine reaches on them.
- ``matmul_ceiling_fraction``: the update's own matmul calls (recorded from one update with
  their shapes, strides and dtypes) replayed alone, back to back on stand-in tensors: their
  FLOPs over that time, divided by ``matmul_gflops``. It is the ``limit_fraction`` of an update
  that did nothing but its matmuls, so ``limit_fraction`` cannot exceed it; below 1 it shows
  what the update's shapes and layouts (transposed operands of the weight gradients, bias
  prefills of ``addmm``, thin first layers) cost the matmul library.
  ``matmul_time_share``: that replay time over the update's time, the share of an update its
  matmuls need; the rest is elementwise work, allocation and dispatch.
- ``host_reads_per_update``: ops that read a tensor's value on the host during one update
  (``.item()``, ``bool(t)``, …; torch.optim's CPU step counter excepted): 0 means the update
  never waits for the device.
- with ``--peer d3rlpy``: ``peer_steps_per_second`` (d3rlpy's CQL in the same setting, timed in
  alternation with ours in the same process, so both see the same load) and
  ``peer_ratio`` = ours / peer, the median of the per-repeat ratios, with its spread.

``--clock cpu`` times with the process's CPU time instead of the wall clock: with
``--threads 1`` on a machine shared with other jobs it leaves out the time the core spent on
them (the wall clock is the default and the number to quote on a quiet machine or a GPU).
``--malloc tuned`` sets glibc's allocator to keep freed memory (:func:`tune_glibc_malloc`),
for both implementations alike.

d3rlpy is optional (``make bench-peer``; it pins an older gymnasium). Its config is our
setting's translation by :func:`deep.peer.d3rlpy_config`, the one ``deep.parity`` trains with
(standard: VectorEncoderFactory([256, 256, 256]) for actor and critics, batch 256, n_critics 2,
n_action_samples 10, conservative_weight 5 held fixed, temperature learned at 1e-4, critic
3e-4, actor 1e-4, gamma 0.99, tau 5e-3); timed through ``algo.impl.update`` on a batch already
on the device. Algorithmic differences that remain: d3rlpy backs up Q̄ at the policy's mean action at s'
(ours samples a' ~ π(·|s')), and it takes its own actor forward and backward pass for the
actor and temperature losses (ours shares one backward pass).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
import tyro
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from deep.algos import CQL, CQLConfig, get_algorithm
from deep.batch import Batch
from deep.cli import main_guard
from deep.config import resolve_device
from deep.peer import d3rlpy_config

__all__ = [
    "CASES",
    "BenchSetting",
    "HostReadDetector",
    "MatmulRecorder",
    "Precision",
    "cql_update_flops",
    "main",
    "make_batches",
    "make_cql_update",
    "make_d3rlpy_update",
    "matmul_gflops",
    "mlp_pass_flops",
    "replay_seconds",
    "run_case",
    "setting_flops",
    "tune_glibc_malloc",
]

Precision = Literal["fp32", "bf16", "bf16-td32"]
StepFn = Callable[[], object]

CASES: dict[str, tuple[int, int]] = {"hopper": (11, 3), "halfcheetah": (17, 6)}
"""Case name -> (observation size, action size) of the gym-mujoco task it stands for."""


@dataclass(frozen=True)
class BenchSetting:
    """The CQL setting timed: our agent's config, and the batch size; the peer gets its
    translation (:func:`deep.peer.d3rlpy_config`)."""

    agent: CQLConfig = field(default_factory=CQLConfig)
    """The algorithm's config (its defaults are the standard gym-mujoco CQL)."""
    batch_size: int = 256
    """Transitions per update."""


SETTINGS: dict[str, BenchSetting] = {
    "standard": BenchSetting(get_algorithm("cql").default_config()),
    "fast": BenchSetting(get_algorithm("cql-fast").default_config()),
}
"""Named settings: ``standard`` is the gym-mujoco CQL of the paper (N = 10, importance
sampling), ``fast`` the ``cql-fast`` preset (N = 1, CQL(ρ) with the data action, the
mean-action backup). The peer is always timed at ``standard``."""


# ----------------------------------------------------------------------------------------
# Counting the arithmetic
# ----------------------------------------------------------------------------------------


def mlp_pass_flops(
    rows: int,
    sizes: Sequence[int],
    *,
    param_grad: bool,
    input_grad: bool,
) -> int:
    """Matmul FLOPs of one pass of an MLP ``sizes[0] -> … -> sizes[-1]`` over ``rows`` inputs.

    A layer ``k -> n`` over ``r`` rows costs 2·r·k·n FLOPs forward (one multiply-add per
    weight and row). Backward adds 2·r·k·n for the weight gradient Xᵀ·G when the parameters
    are trained (``param_grad``), and 2·r·k·n for the input gradient G·Wᵀ of every layer whose
    input needs a gradient: hidden layers whenever any gradient flows (to reach the parameters
    below, or the network's input), the first layer only when the input itself needs one
    (``input_grad``, e.g. the actor's action fed to a critic). A trained network whose input
    needs no gradient therefore costs just under 3× its forward pass; a frozen one (no
    gradient at all) 1×.
    """
    if rows < 0 or len(sizes) < 2:
        raise ValueError(f"need rows >= 0 and at least two sizes, got {rows} and {sizes}")
    total = 0
    for i, (k, n) in enumerate(itertools.pairwise(sizes)):
        forward = 2 * rows * k * n
        total += forward
        if param_grad:
            total += forward
        if (i > 0 and (param_grad or input_grad)) or (i == 0 and input_grad):
            total += forward
    return total


def cql_update_flops(
    obs_dim: int,
    act_dim: int,
    hidden: Sequence[int] = (256, 256, 256),
    batch_size: int = 256,
    n_actions: int = 10,
    n_critics: int = 2,
) -> int:
    """Matmul FLOPs of one CQL update (:meth:`deep.algos.cql.CQL.update`), per network pass.

    B = batch, N = sampled actions per group, E = critics, o / d = observation / action
    size; the actor is ``o -> hidden -> 2d`` (mean and log σ), every critic
    ``o + d + 1 -> hidden -> 1`` (its first layer reads the rows [s, a, 1], the bias folded in
    as a weight row, see :class:`deep.nets.EnsembleQ`); ``mlp(rows, sizes, ...)`` is
    :func:`mlp_pass_flops`.

    1. actor π at s, B rows: trained (forward, weight gradients, hidden-layer input
       gradients: the actor and entropy losses reach it through ã ~ π(·|s));
       ``mlp(B, actor, param_grad, no input grad)``.
    2. actor π at s', B rows, no gradient (a' for the target, N actions for the
       regulariser): ``mlp(B, actor)`` forward only.
    3. target critics Q̄(s', a'), E × B rows, forward only: ``E · mlp(B, critic)``.
    4. critics Q(s, a_D), E × B rows, trained: ``E · mlp(B, critic, param_grad)``.
    5. critics Q(s, a) at the 3N pushed-down actions, E × 3N·B rows, trained:
       ``E · mlp(3N·B, critic, param_grad)`` — nearly all of the update.
    6. critics Q(s, ã) with detached weights, E × B rows: forward plus input gradients
       down to the input rows (no weight gradients): ``E · mlp(B, critic, input_grad)``.

    This is exactly the matmul work the update runs (the tests check it against
    ``torch.utils.flop_counter`` on a real update); bias adds, activations, the log-sum-exp
    and the optimizer are not counted. For 3×256 networks, B = 256 and N = 10, pass 5 is
    92 % of the total.
    """
    b, e, n = batch_size, n_critics, n_actions
    actor = (obs_dim, *hidden, 2 * act_dim)
    critic = (obs_dim + act_dim + 1, *hidden, 1)
    total = mlp_pass_flops(b, actor, param_grad=True, input_grad=False)  # 1
    total += mlp_pass_flops(b, actor, param_grad=False, input_grad=False)  # 2
    total += e * mlp_pass_flops(b, critic, param_grad=False, input_grad=False)  # 3
    total += e * mlp_pass_flops(b, critic, param_grad=True, input_grad=False)  # 4
    total += e * mlp_pass_flops(3 * n * b, critic, param_grad=True, input_grad=False)  # 5
    total += e * mlp_pass_flops(b, critic, param_grad=False, input_grad=True)  # 6
    return total


# ----------------------------------------------------------------------------------------
# The machine's rate
# ----------------------------------------------------------------------------------------

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "bf16-td32": torch.bfloat16,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(
    precision: Precision = "fp32",
    device: str | torch.device = "cpu",
    rows: Sequence[int] = (256, 2048, 7936),
    width: int = 256,
    min_seconds: float = 0.05,
    clock: Literal["wall", "cpu"] = "wall",
) -> float:
    """Best measured rate, in GFLOP/s, of (rows × width) @ (width × width) products.

    The update's matmuls have exactly these shapes: B = 256 rows for the actor and the
    target critic, B·(1 + 3N) = 7936 rows for the critic over all pushed-down actions. Each
    shape is timed over at least ``min_seconds`` (after one warm-up call) and the best rate
    over the shapes is returned: the ceiling an update built from such products can reach.
    """
    device = torch.device(device)
    dtype = _DTYPES[precision]
    now = time.perf_counter if clock == "wall" else time.process_time
    g = torch.Generator(device).manual_seed(0)
    best = 0.0
    for m in rows:
        a = torch.randn(m, width, generator=g, device=device, dtype=dtype)
        w = torch.randn(width, width, generator=g, device=device, dtype=dtype)
        out = torch.mm(a, w)
        _sync(device)
        n_calls, elapsed = 0, 0.0
        start = now()
        while elapsed < min_seconds:
            torch.mm(a, w, out=out)
            n_calls += 1
            if n_calls % 4 == 0 or n_calls == 1:
                _sync(device)
                elapsed = now() - start
        _sync(device)
        elapsed = now() - start
        best = max(best, 2.0 * m * width * width * n_calls / elapsed / 1e9)
    return best


# ----------------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------------


def setting_flops(obs_dim: int, act_dim: int, setting: BenchSetting) -> int:
    """:func:`cql_update_flops` of one update in ``setting``."""
    agent = setting.agent
    return cql_update_flops(
        obs_dim,
        act_dim,
        agent.critic_hidden,
        setting.batch_size,
        agent.cql_n_actions,
        agent.n_critics,
    )


def make_batches(
    obs_dim: int,
    act_dim: int,
    batch_size: int,
    n_batches: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> list[Batch]:
    """``n_batches`` random transition batches drawn on ``device`` (the update's input).

    Observations and rewards N(0, 1), actions uniform on [−1, 1]^d, 1 % terminal. The values
    do not change the arithmetic of an update; drawing them on the device keeps host-to-device
    copies out of the timing.
    """
    device = torch.device(device)
    g = torch.Generator(device).manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(shape, generator=g, device=device)

    return [
        Batch(
            draw(batch_size, obs_dim),
            torch.rand(batch_size, act_dim, generator=g, device=device) * 2.0 - 1.0,
            draw(batch_size),
            draw(batch_size, obs_dim),
            (torch.rand(batch_size, generator=g, device=device) < 0.01).float(),
        )
        for _ in range(n_batches)
    ]


def make_cql_update(
    obs_dim: int,
    act_dim: int,
    setting: BenchSetting | None = None,
    *,
    precision: Precision = "fp32",
    device: str | torch.device = "cpu",
    compile: bool = False,
    seed: int = 0,
    n_batches: int = 8,
) -> tuple[CQL, StepFn]:
    """Our agent for ``setting`` and a step function: one ``agent.update`` on the next of
    ``n_batches`` pre-drawn batches (cycled). ``compile=True`` wraps the update in
    ``torch.compile`` (see :meth:`deep.algos.sac.OfflineSAC.compile`)."""
    setting = setting if setting is not None else BenchSetting()
    config = dataclasses.replace(setting.agent, precision=precision)
    agent = CQL(obs_dim, act_dim, config, device=device, seed=seed)
    if compile:
        agent.compile()
    batches = make_batches(obs_dim, act_dim, setting.batch_size, n_batches, device, seed + 1)
    counter = iter(range(sys.maxsize))

    def step() -> Mapping[str, Tensor]:
        return agent.update(batches[next(counter) % n_batches])

    return agent, step


def make_d3rlpy_update(
    obs_dim: int,
    act_dim: int,
    setting: BenchSetting | None = None,
    *,
    device: str | torch.device = "cpu",
    compile: bool = False,
    seed: int = 0,
    n_batches: int = 8,
) -> tuple[Any, StepFn]:
    """d3rlpy's CQL in ``setting`` and its step function (``algo.impl.update`` on a
    ``TorchMiniBatch`` already on the device). ``compile=True`` sets d3rlpy's
    ``compile_graph`` (it takes effect on CUDA only). Raises ``ImportError`` with the install
    line when d3rlpy is missing. d3rlpy draws from torch's global generator: it is seeded
    here with ``seed``."""
    setting = setting if setting is not None else BenchSetting()
    config = dataclasses.replace(
        d3rlpy_config(setting.agent, setting.batch_size, act_dim), compile_graph=compile
    )
    from d3rlpy.torch_utility import TorchMiniBatch

    device = torch.device(device)
    torch.manual_seed(seed)
    d3_device = f"{device.type}:{device.index or 0}"
    algo = config.create(device=d3_device)
    algo.create_impl((obs_dim,), act_dim)
    batches = []
    for b in make_batches(obs_dim, act_dim, setting.batch_size, n_batches, device, seed + 1):
        column = b.rewards.unsqueeze(1)
        batches.append(
            TorchMiniBatch(
                observations=b.observations,
                actions=b.actions,
                rewards=column,
                next_observations=b.next_observations,
                next_actions=b.actions,
                returns_to_go=torch.zeros_like(column),
                terminals=b.terminals.unsqueeze(1),
                intervals=torch.ones_like(column),
                device=d3_device,
            )
        )
    counter = iter(range(sys.maxsize))

    def step() -> object:
        i = next(counter)
        return algo.impl.update(batches[i % n_batches], i)

    return algo, step


# ----------------------------------------------------------------------------------------
# Host reads
# ----------------------------------------------------------------------------------------

HOST_READ_OPS = frozenset({"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "item"})
"""Ops that bring a tensor's value to the host (.item(), bool(t), data-dependent shapes)."""


class _OpWatcher(TorchDispatchMode):
    """Runs every aten op as usual, after showing it to :meth:`observe`."""

    def observe(self, name: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise NotImplementedError

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        self.observe(func.__name__.split(".")[0], func, args, kwargs)
        return func(*args, **kwargs)


class HostReadDetector(_OpWatcher):
    """Records every op in :data:`HOST_READ_OPS` run while active (``reads``: op names).

    torch.optim reads its CPU step counter with ``.item()``; that tensor never lives on an
    accelerator (Adam keeps ``step`` on the host unless capturable), so those reads are left
    out when ``ignore_optim`` is set.
    """

    def __init__(self, ignore_optim: bool = True) -> None:
        super().__init__()
        self.ignore_optim = ignore_optim
        self.reads: list[str] = []

    def observe(self, name: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if name in HOST_READ_OPS:
            inside_optim = any("torch/optim/" in f.filename for f in _stack_frames())
            if not (self.ignore_optim and inside_optim):
                self.reads.append(name)


def _stack_frames() -> list[Any]:
    import traceback

    return list(traceback.extract_stack())


# ----------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------


Clock = Literal["wall", "cpu"]
_CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


# ----------------------------------------------------------------------------------------
# The update's own matmuls, replayed alone
# ----------------------------------------------------------------------------------------

_MATMUL_OPS = {"mm": (0, 1), "addmm": (1, 2), "bmm": (0, 1), "baddbmm": (1, 2)}
"""aten matmul op -> positions of its two factors (every ``@`` reaches one of these)."""


@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def make(self, generator: torch.Generator) -> Tensor:
        """A tensor of this layout (standard normal values) over a storage of its own."""
        extent = 1 + sum((n - 1) * st for n, st in zip(self.shape, self.stride, strict=True))
        base = torch.randn(
            max(extent, 1), generator=generator, device=self.device, dtype=torch.float32
        )
        return base.to(self.dtype).as_strided(self.shape, self.stride)


class MatmulRecorder(_OpWatcher):
    """Records every matmul (``mm``, ``addmm``, ``bmm``, ``baddbmm``) run while active, with the
    layout of its operands: ``calls`` is a list of (op, args) with tensors replaced by their
    shape, stride, dtype and device; ``flop`` the FLOPs of the recorded calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []
        self.flop = 0

    def observe(self, name: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if name not in _MATMUL_OPS or kwargs:
            return
        i, j = _MATMUL_OPS[name]
        a, b = args[i], args[j]
        # (…, m, k) @ (…, k, n): 2·m·k·n per batch entry
        batch = a.shape[0] if a.dim() == 3 else 1
        self.flop += 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
        spec = tuple(
            _TensorSpec(tuple(x.shape), tuple(x.stride()), x.dtype, x.device)
            if isinstance(x, Tensor)
            else x
            for x in args
        )
        self.calls.append((func, spec))


def replay_seconds(
    calls: Sequence[tuple[Any, tuple[Any, ...]]],
    device: str | torch.device = "cpu",
    repeats: int = 3,
    clock: Clock = "wall",
) -> float:
    """Seconds one pass over ``calls`` (from :class:`MatmulRecorder`) takes, run back to back on
    stand-in tensors of the recorded layouts, each call with operands of its own (as in the
    update, where no two matmuls read the same activations); the best of ``repeats`` timed
    passes after one warm-up pass."""
    device = torch.device(device)
    g = torch.Generator(device).manual_seed(0)
    prepared = [
        (op, tuple(x.make(g) if isinstance(x, _TensorSpec) else x for x in spec))
        for op, spec in calls
    ]
    now = _CLOCKS[clock]
    best = math.inf
    for k in range(repeats + 1):
        _sync(device)
        start = now()
        for op, args in prepared:
            op(*args)
        _sync(device)
        if k > 0:
            best = min(best, now() - start)
    return best


def _steps_per_second(
    step: StepFn, n_steps: int, device: torch.device, clock: Clock = "wall"
) -> float:
    now = _CLOCKS[clock]
    _sync(device)
    start = now()
    for _ in range(n_steps):
        step()
    _sync(device)
    return n_steps / (now() - start)


def tune_glibc_malloc() -> bool:
    """Keep freed memory in the process (glibc only): M_MMAP_THRESHOLD = 32 MiB (its maximum),
    M_TRIM_THRESHOLD = 1 GiB. By default glibc serves large blocks with fresh ``mmap``s and
    returns freed heap tops to the system, so every update's activations are page-faulted in
    again; PyTorch's CPU tuning guide suggests jemalloc/tcmalloc for the same reason. Returns
    False where it does not apply (not glibc)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1
        return ok and libc.mallopt(m_trim_threshold, 1 << 30) == 1
    except (OSError, AttributeError):
        return False


def run_case(
    case: str,
    *,
    setting: BenchSetting | None = None,
    precision: Precision = "fp32",
    device: str | torch.device = "cpu",
    compile: bool = False,
    peer: str | None = None,
    steps: int = 10,
    repeats: int = 5,
    warmup: int = 3,
    seed: int = 0,
    clock: Clock = "wall",
    peer_setting: BenchSetting | None = None,
) -> dict[str, Any]:
    """Time case ``case`` (a key of :data:`CASES`); the JSON record described in the module
    docstring. Each repeat measures the matmul rate, then ``steps`` of our updates, then
    (with ``peer``) ``steps`` of the peer's, so all three see the same load. The peer runs
    ``peer_setting`` (default: ``setting``)."""
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; choose from {sorted(CASES)}")
    if peer not in (None, "d3rlpy"):
        raise ValueError(f"unknown peer {peer!r}; the only peer is 'd3rlpy'")
    setting = setting if setting is not None else BenchSetting()
    device = torch.device(device)
    obs_dim, act_dim = CASES[case]
    agent, ours = make_cql_update(
        obs_dim, act_dim, setting, precision=precision, device=device, compile=compile, seed=seed
    )
    theirs: StepFn | None = None
    if peer == "d3rlpy":
        _, theirs = make_d3rlpy_update(
            obs_dim,
            act_dim,
            peer_setting if peer_setting is not None else setting,
            device=device,
            compile=compile,
            seed=seed,
        )
    for _ in range(warmup):
        ours()
        if theirs is not None:
            theirs()
    with HostReadDetector() as detector:
        ours()
    with MatmulRecorder() as recorder:
        ours()
    rates, replays, ours_sps, theirs_sps = [], [], [], []
    for _ in range(repeats):
        rates.append(matmul_gflops(precision, device, clock=clock))
        replays.append(replay_seconds(recorder.calls, device, repeats=1, clock=clock))
        ours_sps.append(_steps_per_second(ours, steps, device, clock))
        if theirs is not None:
            theirs_sps.append(_steps_per_second(theirs, steps, device, clock))
    flop = setting_flops(obs_dim, act_dim, setting)
    sps, rate = statistics.median(ours_sps), statistics.median(rates)
    replay = statistics.median(replays)
    record: dict[str, Any] = {
        "case": f"{case}{CASES[case]}".replace(" ", ""),
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "precision": precision,
        "device": str(device),
        "compile": compile,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "clock": clock,
        "steps_per_second": round(sps, 3),
        "steps_per_second_spread": [round(min(ours_sps), 3), round(max(ours_sps), 3)],
        "update_gflop": round(flop / 1e9, 4),
        "matmul_gflops": round(rate, 1),
        "limit_fraction": round(flop / 1e9 * sps / rate, 3),
        "matmul_ceiling_fraction": round(recorder.flop / 1e9 / replay / rate, 3),
        "matmul_time_share": round(replay * sps, 3),
        "host_reads_per_update": len(detector.reads),
    }
    if theirs is not None:
        ratios = [a / b for a, b in zip(ours_sps, theirs_sps, strict=True)]
        record["peer"] = peer
        record["peer_steps_per_second"] = round(statistics.median(theirs_sps), 3)
        record["peer_ratio"] = round(statistics.median(ratios), 3)
        record["peer_ratio_spread"] = [round(min(ratios), 3), round(max(ratios), 3)]
    del agent
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line per case on stdout."""
    return main_guard(_main, argv)


Append = tyro.conf.UseAppendAction


@dataclass
class BenchConfig:
    """How fast is one CQL update, next to this machine's matmul rate and next to d3rlpy?"""

    case: Annotated[tuple[Literal["hopper", "halfcheetah"], ...], Append] = ()
    """Observation/action sizes to time (repeatable; default: all)."""

    setting: Annotated[tuple[Literal["standard", "fast"], ...], Append] = ()
    """Named CQL setting to time (repeatable; default: standard and fast)."""

    precision: Annotated[tuple[Precision, ...], Append] = ()
    """Precision of our update (repeatable; default: fp32)."""

    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """Where to time: cpu or cuda."""

    compile: bool = False
    """torch.compile the update."""

    peer: Literal["d3rlpy"] | None = None
    """Time d3rlpy's CQL beside ours, always at the standard setting."""

    steps: int = 10
    """Updates per timed block."""

    repeats: int = 5
    """Timed blocks (the median is reported)."""

    warmup: int = 3
    """Untimed updates first."""

    threads: int = os.cpu_count() or 1
    """torch CPU threads."""

    seed: int = 0
    """Seed of the networks and batches."""

    clock: Clock = "wall"
    """wall: elapsed time; cpu: this process's CPU time (with --threads 1 it leaves out the
    time other processes take the core, the honest clock on a shared machine)."""

    malloc: Literal["default", "tuned"] = "default"
    """tuned: glibc keeps freed memory (see tune_glibc_malloc); applies to the peer too."""


def _main(argv: list[str]) -> int:
    args = tyro.cli(
        BenchConfig, args=argv, prog="python -m deep.bench", description=__doc__.split("\n\n")[0]
    )
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        raise ValueError("--steps, --repeats and --threads must be >= 1 and --warmup >= 0")
    resolve_device(args.device)  # cuda without a GPU, or an unknown name: one line, no work
    torch.set_num_threads(args.threads)
    malloc_tuned = args.malloc == "tuned" and tune_glibc_malloc()
    if args.malloc == "tuned" and not malloc_tuned:
        print("deep.bench: --malloc tuned needs glibc; running with the default", file=sys.stderr)
    for case in args.case or ("hopper", "halfcheetah"):
        for name in args.setting or ("standard", "fast"):
            for precision in args.precision or ("fp32",):
                record = run_case(
                    case,
                    setting=SETTINGS[name],
                    precision=precision,
                    device=args.device,
                    compile=args.compile,
                    peer=args.peer,
                    steps=args.steps,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    seed=args.seed,
                    clock=args.clock,
                    peer_setting=SETTINGS["standard"],
                )
                record["setting"] = name
                if args.peer is not None:
                    record["peer_setting"] = "standard"
                record["malloc"] = "tuned" if malloc_tuned else "default"
                print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
