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
    "tanh_gaussian_log_prob",
    "tanh_gaussian_sample",
    "tanh_log_abs_det_jacobian",
]

HIDDEN_GAIN = math.sqrt(2.0)
OUTPUT_GAIN = 1e-2
# Dataset actions can sit exactly on the box boundary ±1, where atanh is infinite; pull them
# this far inside (float32 resolves 1 - 1e-6, atanh of it is about 7.25).
ACTION_CLIP = 1e-6


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


class EnsembleQ(nn.Module):
    """Ensemble of ``n_critics`` Q-networks Q_i(s, a), all evaluated in one batched matmul.

    Every member has the same depth and widths (a peer bug: a second critic built with a
    different depth). ``forward(obs, act)``:

    - obs (B, obs_dim), act (B, d) -> (E, B)
    - obs (B, obs_dim), act (B, N, d) -> (E, B, N): N actions per state.

    For N actions per state the first layer is split, ``W₁ [s; a] = W₁ˢ s + W₁ᵃ a``: the state
    half is computed once per state, (E, B, H), and broadcast over the N actions, so the
    observations are never copied N times and the state half of the first matmul is not
    repeated. From the second layer on, the B·N rows go through ``baddbmm`` as one batch.
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

    def forward(self, obs: Tensor, act: Tensor, *, detach_params: bool = False) -> Tensor:
        """Q values, (E, B) for act (B, d) or (E, B, N) for act (B, N, d).

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
        w, bias = _layer_params(self.layers[0], detach_params)
        # (B, obs) @ (E, obs, H) -> (E, B, H); (B·N, d) @ (E, d, H) -> (E, B·N, H)
        h_obs = torch.matmul(obs, w[:, : self.obs_dim]) + bias
        h_act = torch.matmul(act.reshape(b * n, self.act_dim), w[:, self.obs_dim :])
        hidden_dim = w.shape[-1]
        h = F.relu(h_act.view(self.n_critics, b, n, hidden_dim) + h_obs.unsqueeze(2))
        h = h.view(self.n_critics, b * n, hidden_dim)
        last = len(self.layers) - 1
        for i in range(1, len(self.layers)):
            w, bias = _layer_params(self.layers[i], detach_params)
            h = torch.baddbmm(bias, h, w)
            if i < last:
                h = F.relu(h)
        q = h.view(self.n_critics, b, n)  # (E, B·N, 1) -> (E, B, N)
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


def tanh_gaussian_sample(
    mean: Tensor, log_std: Tensor, n: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Reparameterised sample a = tanh(m + σ ε), ε ~ N(0, I), and its log-density.

    log π(a|s) = Σ_j [log N(u_j; m_j, σ_j) − log(1 − tanh² u_j)]  (change of variables).

    mean, log_std (B, d). ``n=None``: action (B, d), log_prob (B,). ``n`` an int: n noises for
    each (mean, std) pair, action (B, n, d), log_prob (B, n); the network ran once.
    Gradients flow to mean and log_std (rsample).
    """
    if n is not None:
        if n < 1:
            raise ValueError(f"number of samples n must be >= 1, got {n}")
        mean, log_std = mean.unsqueeze(-2), log_std.unsqueeze(-2)
        shape = (*mean.shape[:-2], n, mean.shape[-1])
    else:
        shape = tuple(mean.shape)
    noise = torch.randn(shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = mean + log_std.exp() * noise
    log_prob = _gaussian_log_prob_from_noise(noise, log_std) - tanh_log_abs_det_jacobian(u)
    return torch.tanh(u), log_prob


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
        mean, log_std = self.trunk(obs).chunk(2, dim=-1)
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
    """θ_target ← (1 − τ) θ_target + τ θ_online, in place (τ = 1 copies)."""
    for t, p in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(p, tau)
