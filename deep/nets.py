"""Networks for deep CQL: an MLP, critic ensembles evaluated in one batched matmul, and a
tanh-squashed Gaussian actor.

Initialisation (all modules here, as CORL's ``orthogonal_init=True`` and common SAC code):
hidden layers orthogonal with gain √2 and zero bias (keeps ReLU activations at unit scale);
the output layer orthogonal with gain 1e-2 and zero bias, so a fresh critic predicts
Q ≈ 0 everywhere and a fresh actor has mean ≈ 0 and log-std ≈ 0 (std ≈ 1) at every state.
Every initialiser takes a ``torch.Generator``: building a network never touches the global RNG.

Shapes: ``E`` = number of critics, ``B`` = batch, ``N`` = sampled actions per state,
``d`` = action dimension, ``A`` = number of discrete actions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MLP",
    "EnsembleDiscreteQ",
    "EnsembleLinear",
    "EnsembleQ",
    "TanhGaussianActor",
    "polyak_update",
    "tanh_gaussian_from_noise",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_sample",
    "tanh_log_abs_det_jacobian",
]

HIDDEN_GAIN = math.sqrt(2.0)
OUTPUT_GAIN = 1e-2
# Dataset actions can sit exactly on the box boundary ±1, where atanh is infinite; pull them
# this far inside (float32 resolves 1 - 1e-6, atanh of it is about 7.25).
ACTION_CLIP = 1e-6
# Rows per block of a critic pass on the CPU: 2048 × 256 float32 activations are 2 MB, about
# one core's L2 cache (measured: see EnsembleQ).
CPU_CHUNK_ROWS = 2048


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(int(h) for h in hidden)
    if len(hidden) == 0 or any(h <= 0 for h in hidden):
        raise ValueError(
            f"hidden sizes must be a non-empty sequence of positive ints, got {hidden}"
        )
    return hidden


class MLP(nn.Module):
    """Fully connected ReLU network ``in_dim -> hidden... -> out_dim`` (no output activation).

    Input (..., in_dim) -> output (..., out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        *,
        generator: torch.Generator | None = None,
        output_gain: float = OUTPUT_GAIN,
    ) -> None:
        super().__init__()
        sizes = (in_dim, *_check_hidden(hidden), out_dim)
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            linear = nn.Linear(sizes[i], sizes[i + 1])
            last = i == len(sizes) - 2
            nn.init.orthogonal_(
                linear.weight, gain=output_gain if last else HIDDEN_GAIN, generator=generator
            )
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if not last:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


class EnsembleLinear(nn.Module):
    """``E`` independent affine maps stored as one weight (E, in, out) and bias (E, 1, out).

    Input (E, B, in) -> (E, B, out) via ``torch.baddbmm``; every member has its own
    orthogonal initialisation.
    """

    def __init__(
        self,
        n_members: int,
        in_dim: int,
        out_dim: int,
        *,
        gain: float,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n_members, 1, out_dim))
        with torch.no_grad():
            for member in self.weight:
                # orthogonal_ on the (in, out) view: columns (or rows) orthonormal, same law as
                # nn.Linear's (out, in) weight transposed.
                nn.init.orthogonal_(member, gain=gain, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def _ensemble_stack(
    n_members: int,
    in_dim: int,
    out_dim: int,
    hidden: Sequence[int],
    generator: torch.Generator | None,
) -> nn.ModuleList:
    sizes = (in_dim, *_check_hidden(hidden), out_dim)
    return nn.ModuleList(
        EnsembleLinear(
            n_members,
            sizes[i],
            sizes[i + 1],
            gain=OUTPUT_GAIN if i == len(sizes) - 2 else HIDDEN_GAIN,
            generator=generator,
        )
        for i in range(len(sizes) - 1)
    )


def _layer_params(layer: nn.Module, detach: bool) -> tuple[Tensor, Tensor]:
    assert isinstance(layer, EnsembleLinear)
    if detach:
        return layer.weight.detach(), layer.bias.detach()
    return layer.weight, layer.bias


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x W + b for one member (weight (in, out), bias (1, out), x (R, in) -> (R, out)) or for
    the stacked ensemble (weight (E, in, out), bias (E, 1, out), x (R, in) or (E, R, in) ->
    (E, R, out))."""
    if weight.dim() == 2:
        return torch.mm(x, weight) if bias is None else torch.addmm(bias, x, weight)
    if x.dim() == 2:
        out = torch.matmul(x, weight)
        return out if bias is None else out + bias
    return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias, x, weight)


class _Float32Head(torch.autograd.Function):
    """The output layer q = h W + b of a bfloat16 network, computed in float32.

    Forward: h bfloat16 is widened to float32 for this one matrix-vector product, so Q
    carries no bfloat16 rounding (~0.4 %) into the TD errors. Backward in bfloat16, as every
    other layer's under autocast: ∂q/∂h = g Wᵀ and ∂q/∂W = hᵀ g with float32 accumulation.
    Autograd through ``h.float()`` would instead keep a float32 copy of h for the backward
    pass and write ∂q/∂h in float32 before narrowing it: two extra passes over an (R, H)
    tensor, measured 13 % of a bf16 CQL update on the CPU.

    One member: h (R, H), weight (H, 1), bias (1, 1) -> (R, 1); stacked: h (E, R, H),
    weight (E, H, 1), bias (E, 1, 1) -> (E, R, 1). weight and bias are float32.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(h, weight)
        return torch.matmul(h.to(weight.dtype), weight) + bias

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        h, weight = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad
        g = grad.to(h.dtype)
        grad_h = torch.matmul(g, weight.to(h.dtype).transpose(-1, -2)) if need_h else None
        grad_w = torch.matmul(h.transpose(-1, -2), g).to(weight.dtype) if need_w else None
        grad_b = grad.sum(-2, keepdim=True) if need_b else None
        return grad_h, grad_w, grad_b


def _ensemble_mlp(
    x: Tensor,
    params: Sequence[tuple[Tensor, Tensor]],
    *,
    per_member: bool,
    chunk_rows: int | None = None,
) -> Tensor:
    """ReLU MLP of every member on the same rows x (R, in): (E, R, out).

    ``params`` holds (weight (E, in, out), bias (E, 1, out)) per layer. The bias of the first
    layer is folded into its weight as a last input row (x carries a column of ones from the
    caller), so the first activation is written by one matmul and rectified in place; ReLUs
    run in place throughout (their backward needs only the output). The output layer's forward
    runs in float32 even under autocast (:class:`_Float32Head`): it is a matrix-vector
    product, cheap at any precision, and a bfloat16 Q would carry ~0.4 % rounding error into
    every TD error.

    ``per_member=True`` loops over members with 2-D matmuls, and ``chunk_rows`` splits the
    rows into blocks of at most that many, each run through all layers on its own: a block's
    activations (chunk_rows × H) then stay in the core's cache between one layer and the
    next, and so do its gradients in the backward pass (autograd runs a block's chain from
    end to start before the next). Both are CPU choices: the work is unchanged, the memory
    traffic falls. ``per_member=False`` runs every layer as one batched matmul over members
    (fewer kernel launches, the GPU choice).
    """
    w0, b0 = params[0]
    w_first = torch.cat([w0, b0], dim=-2)  # (E, in + 1, H)
    layers: list[tuple[Tensor, Tensor | None]] = [(w_first, None), *params[1:]]
    if per_member:
        # unbind once per layer: its backward stacks the members' gradients in one op, where
        # indexing w[e] would build a zero (E, in, out) gradient per member and add them up
        per_layer = [
            (w.unbind(0), b.unbind(0) if b is not None else [None] * w.shape[0]) for w, b in layers
        ]
        members = [[(ws[e], bs[e]) for ws, bs in per_layer] for e in range(w0.shape[0])]
    else:
        members = [layers]
    blocks = x.split(chunk_rows) if chunk_rows is not None else (x,)
    outs = []
    for member in members:
        member_out = []
        for rows in blocks:
            h = rows
            for w, b in member[:-1]:
                h = _affine(h, w, b).relu_()
            w, b = member[-1]
            if h.dtype != w.dtype and b is not None:
                with torch.autocast(device_type=h.device.type, enabled=False):
                    h = _Float32Head.apply(h, w, b)
            else:
                h = _affine(h, w, b)
            member_out.append(h)
        outs.append(member_out[0] if len(member_out) == 1 else torch.cat(member_out, dim=-2))
    return torch.stack(outs) if per_member else outs[0]


class EnsembleQ(nn.Module):
    """Ensemble of ``n_critics`` Q-networks Q_i(s, a), all evaluated in one call.

    Every member has the same depth and widths (a peer bug: a second critic built with a
    different depth). ``forward(obs, act)``:

    - obs (B, obs_dim), act (B, d) -> (E, B)
    - obs (B, obs_dim), act (B, N, d) -> (E, B, N): N actions per state.

    The first layer sees the rows [s, a, 1] (the state repeated for each of its N actions,
    the bias folded into the weight as a last input row), so the (E, B·N, H) activations are
    written once by one matmul and rectified in place. (Splitting the first layer into a state
    half, once per state, and an action half saves obs_dim/(obs_dim + d) of the first layer's
    few multiply-adds but costs a broadcast add over the whole (E, B·N, H) activation: memory
    passes over that tensor, not multiply-adds, are what the first layer costs.) ReLUs run in
    place (their backward needs only the output).

    How the rows are run depends on the device (:func:`_ensemble_mlp`): on a GPU, every
    layer is one batched matmul over the members; on the CPU, members run one after the
    other in blocks of ``cpu_chunk_rows`` rows, so that a block's activations and gradients
    stay in cache from one layer to the next. Measured on a 2-core Xeon (Sapphire Rapids),
    one CQL update (3×256, B = 256, 3N = 30): blocks of 2048 rows 12 % faster than none, and
    1024 / 2560 / 4096 within noise of 2048.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_critics: int = 2,
        hidden: Sequence[int] = (256, 256, 256),
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_critics < 1:
            raise ValueError(f"n_critics must be >= 1, got {n_critics}")
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.n_critics = n_critics
        self.layers = _ensemble_stack(n_critics, obs_dim + act_dim, 1, hidden, generator)
        self.cpu_chunk_rows: int | None = CPU_CHUNK_ROWS
        """On the CPU, rows per block (see :func:`_ensemble_mlp`); None: no blocks."""

    def forward(self, obs: Tensor, act: Tensor, *, detach_params: bool = False) -> Tensor:
        """Q values, (E, B) for act (B, d) or (E, B, N) for act (B, N, d), in float32 (also
        under autocast: the output layer runs in float32, so TD errors and the log-sum-exp
        see full-precision Q values).

        ``detach_params=True`` evaluates with the weights detached: gradients then reach the
        inputs (the actor's action) but never the critic, which is what the actor loss needs.
        """
        if obs.dim() != 2 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"obs must be (B, {self.obs_dim}), got {tuple(obs.shape)}")
        single = act.dim() == 2
        if single:
            act = act.unsqueeze(1)
        if act.dim() != 3 or act.shape[0] != obs.shape[0] or act.shape[-1] != self.act_dim:
            raise ValueError(
                f"act must be (B, {self.act_dim}) or (B, N, {self.act_dim}) with "
                f"B = {obs.shape[0]}, got {tuple(act.shape)}"
            )
        b, n, _ = act.shape
        # rows [s, a, 1] (B·N, obs + d + 1): a few columns, cheap next to the (B·N, H) output
        x = torch.cat(
            [obs.unsqueeze(1).expand(b, n, self.obs_dim), act.to(obs.dtype), obs.new_ones(b, n, 1)],
            dim=-1,
        ).view(b * n, self.obs_dim + self.act_dim + 1)
        params = [_layer_params(layer, detach_params) for layer in self.layers]
        on_cpu = x.device.type == "cpu"
        chunk = self.cpu_chunk_rows if on_cpu else None
        h = _ensemble_mlp(x, params, per_member=on_cpu, chunk_rows=chunk)
        q = h.view(self.n_critics, b, n)  # (E, B·N, 1) -> (E, B, N)
        return q[:, :, 0] if single else q

    def reference_forward(self, obs: Tensor, act: Tensor) -> Tensor:
        """The plain path :meth:`forward` must agree with: every member on its own, each layer
        ``relu(x W + b)`` on the concatenated rows [s, a], float32 throughout, no folded bias,
        no row blocks, no float32 head. Same shapes as :meth:`forward`; for tests and for
        trying a new layer (LayerNorm, dropout) before it enters the fast path."""
        single = act.dim() == 2
        if single:
            act = act.unsqueeze(1)
        b, n, _ = act.shape
        h = torch.cat([obs.unsqueeze(1).expand(b, n, self.obs_dim), act.to(obs.dtype)], dim=-1)
        members = []
        for e in range(self.n_critics):
            x = h
            for k, layer in enumerate(self.layers):
                assert isinstance(layer, EnsembleLinear)
                x = x @ layer.weight[e] + layer.bias[e]
                x = x.relu() if k < len(self.layers) - 1 else x
            members.append(x[..., 0])  # (B, N)
        q = torch.stack(members)  # (E, B, N)
        return q[:, :, 0] if single else q


class EnsembleDiscreteQ(nn.Module):
    """Ensemble of ``n_critics`` discrete Q-networks: obs (B, obs_dim) -> (E, B, A).

    One output per action, so a full row Q(s, ·) costs one forward pass: the exact
    log-sum-exp of CQL(H) needs no sampling here.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        n_critics: int = 1,
        hidden: Sequence[int] = (256, 256),
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_critics < 1 or n_actions < 1:
            raise ValueError(
                f"n_critics and n_actions must be >= 1, got {n_critics} and {n_actions}"
            )
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        self.n_critics = n_critics
        self.layers = _ensemble_stack(n_critics, obs_dim, n_actions, hidden, generator)

    def forward(self, obs: Tensor) -> Tensor:
        if obs.dim() != 2 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"obs must be (B, {self.obs_dim}), got {tuple(obs.shape)}")
        w, bias = _layer_params(self.layers[0], False)
        h = torch.matmul(obs, w) + bias  # (B, obs) @ (E, obs, H) -> (E, B, H)
        for i in range(1, len(self.layers)):
            h = F.relu(h)
            w, bias = _layer_params(self.layers[i], False)
            h = torch.baddbmm(bias, h, w)
        return h


# ----------------------------------------------------------------------------------------
# tanh-squashed Gaussian
# ----------------------------------------------------------------------------------------


def tanh_log_abs_det_jacobian(u: Tensor) -> Tensor:
    """log |d tanh(u)/du| = log(1 − tanh²u) = 2 (log 2 − u − softplus(−2u)), summed over the
    last axis. (..., d) -> (...).

    The softplus form is exact and finite for every finite u; log(1 − tanh²u + ε) is biased by
    ε and saturates once tanh u rounds to ±1 (|u| ≳ 9 in float32).
    """
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


def _gaussian_log_prob_from_noise(noise: Tensor, log_std: Tensor) -> Tensor:
    # log N(u; m, σ) with u = m + σ ε is −ε²/2 − log σ − ½ log 2π: no division by σ.
    return (-0.5 * noise.square() - log_std - 0.5 * math.log(2.0 * math.pi)).sum(-1)


def tanh_gaussian_from_noise(mean: Tensor, log_std: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """a = tanh(m + σ ε) for given standard-normal noise ε, and log π(a|s).

    log π(a|s) = Σ_j [log N(u_j; m_j, σ_j) − log(1 − tanh² u_j)],  u = m + σ ε.

    mean, log_std (B, d) with noise (B, d) -> action (B, d), log_prob (B,); or noise
    (B, n, d) -> action (B, n, d), log_prob (B, n), the network having run once. Gradients
    flow to mean and log_std (the reparameterisation trick). Drawing ε outside lets a caller
    draw all of an update's noise in one place (and keeps this function free of randomness).
    """
    if noise.dim() == mean.dim() + 1:
        mean, log_std = mean.unsqueeze(-2), log_std.unsqueeze(-2)
    u = mean + log_std.exp() * noise
    log_prob = _gaussian_log_prob_from_noise(noise, log_std) - tanh_log_abs_det_jacobian(u)
    return torch.tanh(u), log_prob


def tanh_gaussian_sample(
    mean: Tensor, log_std: Tensor, n: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Reparameterised sample a = tanh(m + σ ε), ε ~ N(0, I), and its log-density
    (:func:`tanh_gaussian_from_noise` with ε drawn from ``generator``).

    mean, log_std (B, d). ``n=None``: action (B, d), log_prob (B,). ``n`` an int: n noises for
    each (mean, std) pair, action (B, n, d), log_prob (B, n); the network ran once.
    Gradients flow to mean and log_std (rsample).
    """
    if n is not None:
        if n < 1:
            raise ValueError(f"number of samples n must be >= 1, got {n}")
        shape = (*mean.shape[:-1], n, mean.shape[-1])
    else:
        shape = tuple(mean.shape)
    noise = torch.randn(shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return tanh_gaussian_from_noise(mean, log_std, noise)


def tanh_gaussian_log_prob(mean: Tensor, log_std: Tensor, action: Tensor) -> Tensor:
    """log π(a|s) of given actions a ∈ (−1, 1)^d under the tanh-Gaussian (m, σ).

    u = atanh(a) (a clipped to ±(1 − 1e-6) first), then the change of variables of
    :func:`tanh_gaussian_sample`. mean, log_std (B, d); action (B, d) -> (B,) or
    action (B, N, d) -> (B, N).
    """
    if action.dim() == mean.dim() + 1:
        mean, log_std = mean.unsqueeze(-2), log_std.unsqueeze(-2)
    u = torch.atanh(action.clamp(-1.0 + ACTION_CLIP, 1.0 - ACTION_CLIP))
    noise = (u - mean) * torch.exp(-log_std)
    return _gaussian_log_prob_from_noise(noise, log_std) - tanh_log_abs_det_jacobian(u)


class TanhGaussianActor(nn.Module):
    """π(a|s) = tanh_# N(m(s), diag σ(s)²) on (−1, 1)^d, the SAC / CQL actor.

    An MLP outputs (m, log σ); log σ is clamped to [log_std_min, log_std_max] (rlkit and CORL
    use [−20, 2]). ``forward(obs)`` -> (mean, log_std), each (B, d).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not log_std_min < log_std_max:
            raise ValueError(
                f"log_std_min must be < log_std_max, got {log_std_min} and {log_std_max}"
            )
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        self.trunk = MLP(obs_dim, 2 * act_dim, hidden, generator=generator)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        # float32 also under autocast: log-densities and tanh near ±1 need the precision
        mean, log_std = self.trunk(obs).float().chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def rsample(self, obs: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One reparameterised action per state: (B, d) and log π (B,)."""
        mean, log_std = self(obs)
        return tanh_gaussian_sample(mean, log_std, None, generator)

    def sample_n(
        self, obs: Tensor, n: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """n actions per state from ONE forward pass: (B, n, d) and log π (B, n)."""
        mean, log_std = self(obs)
        return tanh_gaussian_sample(mean, log_std, n, generator)

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """log π(a|s): action (B, d) -> (B,), or (B, N, d) -> (B, N)."""
        mean, log_std = self(obs)
        return tanh_gaussian_log_prob(mean, log_std, action)

    def deterministic(self, obs: Tensor) -> Tensor:
        """The evaluation action tanh(m(s)), (B, d)."""
        mean, _ = self(obs)
        return torch.tanh(mean)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """θ_target ← (1 − τ) θ_target + τ θ_online, in place (τ = 1 copies).

    One multi-tensor ``torch._foreach_lerp_`` over all parameters (a loop of ``lerp_`` where
    it is unavailable)."""
    targets, onlines = list(target.parameters()), list(online.parameters())
    if len(targets) != len(onlines):
        raise ValueError(
            f"target has {len(targets)} parameters, online {len(onlines)}: not the same network"
        )
    foreach_lerp = getattr(torch, "_foreach_lerp_", None)
    if foreach_lerp is not None:
        foreach_lerp(targets, onlines, tau)
    else:
        for t, p in zip(targets, onlines, strict=True):
            t.lerp_(p, tau)
