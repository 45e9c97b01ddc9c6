"""Networks: the batched critic ensemble against per-member nn.Linear stacks, initialisation,
and the tanh-Gaussian log-density against torch.distributions and a float64 identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from deep.algos.base import adam
from deep.nets import (
    MLP,
    EnsembleDiscreteQ,
    EnsembleQ,
    TanhGaussianActor,
    polyak_update,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
    tanh_log_abs_det_jacobian,
)


def _member_as_sequential(layers: nn.ModuleList, i: int) -> nn.Sequential:
    """Member i of an ensemble rebuilt as ordinary nn.Linear layers (an independent path)."""
    mods: list[nn.Module] = []
    for k, layer in enumerate(layers):
        w, b = layer.weight[i].detach(), layer.bias[i, 0].detach()
        lin = nn.Linear(w.shape[0], w.shape[1], dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.T)
            lin.bias.copy_(b)
        mods.append(lin)
        if k < len(layers) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def test_ensemble_q_equals_each_member_run_separately() -> None:
    g = torch.Generator().manual_seed(0)
    q = EnsembleQ(5, 3, n_critics=3, hidden=(16, 8, 12), generator=g).double()
    obs = torch.randn(7, 5, generator=g, dtype=torch.float64)
    act = torch.rand(7, 4, 3, generator=g, dtype=torch.float64) * 2 - 1
    batched_n = q(obs, act)  # (E, B, N)
    batched_1 = q(obs, act[:, 0])  # (E, B)
    assert batched_n.shape == (3, 7, 4) and batched_1.shape == (3, 7)
    for i in range(3):
        member = _member_as_sequential(q.layers, i)
        # the naive way: copy every observation N times and concatenate
        x = torch.cat([obs.unsqueeze(1).expand(-1, 4, -1), act], dim=-1)
        expected = member(x).squeeze(-1)  # (B, N)
        torch.testing.assert_close(batched_n[i], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(batched_1[i], expected[:, 0], rtol=1e-12, atol=1e-12)


def test_ensemble_q_members_share_depth_and_differ_in_weights() -> None:
    q = EnsembleQ(
        4, 2, n_critics=2, hidden=(32, 32, 32), generator=torch.Generator().manual_seed(1)
    )
    shapes = [tuple(p.shape) for p in q.parameters()]
    # (weight, bias) per layer: 6 -> 32 -> 32 -> 32 -> 1, both members in every tensor
    expected = [(2, 6, 32), (2, 1, 32), (2, 32, 32), (2, 1, 32), (2, 32, 32), (2, 1, 32)]
    assert shapes == [*expected, (2, 32, 1), (2, 1, 1)]
    w = q.layers[1].weight
    assert not torch.allclose(w[0], w[1])


def test_ensemble_q_detach_params_blocks_critic_gradient_only() -> None:
    g = torch.Generator().manual_seed(2)
    q = EnsembleQ(3, 2, hidden=(8, 8), generator=g)
    obs = torch.randn(5, 3, generator=g)
    act = torch.randn(5, 2, generator=g, requires_grad=True)
    out = q(obs, act, detach_params=True)
    torch.testing.assert_close(out, q(obs, act))
    out.sum().backward()
    assert act.grad is not None and act.grad.abs().sum() > 0
    assert all(p.grad is None for p in q.parameters())


def test_ensemble_q_rejects_bad_shapes() -> None:
    q = EnsembleQ(3, 2, hidden=(8,))
    with pytest.raises(ValueError, match="act must be"):
        q(torch.zeros(5, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="obs must be"):
        q(torch.zeros(5, 4), torch.zeros(5, 2))


def test_discrete_ensemble_equals_each_member() -> None:
    g = torch.Generator().manual_seed(3)
    q = EnsembleDiscreteQ(6, 4, n_critics=2, hidden=(16, 16), generator=g).double()
    obs = torch.randn(9, 6, generator=g, dtype=torch.float64)
    out = q(obs)
    assert out.shape == (2, 9, 4)
    for i in range(2):
        torch.testing.assert_close(out[i], _member_as_sequential(q.layers, i)(obs))


def test_initialisation_orthogonal_hidden_small_output_and_seeded() -> None:
    q1 = EnsembleQ(10, 6, hidden=(64, 64), generator=torch.Generator().manual_seed(5))
    q2 = EnsembleQ(10, 6, hidden=(64, 64), generator=torch.Generator().manual_seed(5))
    q3 = EnsembleQ(10, 6, hidden=(64, 64), generator=torch.Generator().manual_seed(6))
    for a, b in zip(q1.parameters(), q2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(q1.layers[0].weight, q3.layers[0].weight)
    # square hidden member weight: orthogonal with gain √2, so WᵀW = 2 I
    for w in q1.layers[1].weight:
        torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(64), atol=1e-5, rtol=0)
    # output gain 1e-2: a fresh critic predicts Q ≈ 0
    out = q1(torch.randn(100, 10), torch.rand(100, 6) * 2 - 1)
    assert out.abs().max() < 0.2
    mlp = MLP(10, 3, (64, 64), generator=torch.Generator().manual_seed(0))
    w_hidden = mlp.net[2].weight
    torch.testing.assert_close(w_hidden @ w_hidden.T, 2.0 * torch.eye(64), atol=1e-5, rtol=0)


def test_tanh_log_det_matches_float64_identity() -> None:
    # 1 − tanh²u = sech²u = 4 / (eᵘ + e⁻ᵘ)², so log(1 − tanh²u) = log 4 − 2|u| − 2 log1p(e^{−2|u|})
    u = np.array([-30.0, -9.0, -2.5, -0.1, 0.0, 0.7, 4.0, 12.0, 40.0])
    expected = np.log(4.0) - 2 * np.abs(u) - 2 * np.log1p(np.exp(-2 * np.abs(u)))
    got = tanh_log_abs_det_jacobian(torch.tensor(u, dtype=torch.float32).unsqueeze(-1))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-5)


def test_tanh_gaussian_log_prob_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(7)
    mean = torch.randn(50, 3, generator=g, dtype=torch.float64) * 0.8
    log_std = torch.rand(50, 3, generator=g, dtype=torch.float64) - 0.8
    action, log_prob = tanh_gaussian_sample(mean, log_std, 6, g)
    assert action.shape == (50, 6, 3) and log_prob.shape == (50, 6)
    ref = TransformedDistribution(
        Normal(mean.unsqueeze(1), log_std.exp().unsqueeze(1)), TanhTransform()
    )
    torch.testing.assert_close(log_prob, ref.log_prob(action).sum(-1), rtol=1e-7, atol=1e-7)
    # the density of given actions (the BC path) agrees with the sampling path
    torch.testing.assert_close(
        tanh_gaussian_log_prob(mean, log_std, action), log_prob, rtol=1e-7, atol=1e-7
    )


def test_tanh_gaussian_log_prob_finite_near_the_boundary() -> None:
    g = torch.Generator().manual_seed(8)
    mean = torch.full((4, 2), 15.0)  # tanh(15) rounds to 1 in float32
    log_std = torch.full((4, 2), -3.0)
    action, log_prob = tanh_gaussian_sample(mean, log_std, None, g)
    assert torch.all(action == 1.0)  # the naive log(1 − a²) would be log 0 here
    assert torch.isfinite(log_prob).all()
    # log N(u) − log(1 − tanh²u) with u ≈ 15: about 2·(3 − ½ log 2π) + 2·(2·15 − log 4) ≈ 59
    assert torch.all((log_prob > 55) & (log_prob < 63))
    edge = torch.tensor([[1.0, -1.0]])
    lp = tanh_gaussian_log_prob(torch.zeros(1, 2), torch.zeros(1, 2), edge)
    assert torch.isfinite(lp).all()


def test_actor_sample_n_is_one_forward_pass_with_n_draws() -> None:
    g = torch.Generator().manual_seed(9)
    actor = TanhGaussianActor(4, 2, hidden=(16, 16), generator=g)
    calls = []
    actor.trunk.register_forward_hook(lambda *_: calls.append(1))
    obs = torch.randn(3, 4, generator=g)
    actions, log_probs = actor.sample_n(obs, 5, torch.Generator().manual_seed(0))
    assert len(calls) == 1
    assert actions.shape == (3, 5, 2) and log_probs.shape == (3, 5)
    assert torch.all(actions.abs() < 1)
    assert not torch.allclose(actions[:, 0], actions[:, 1])
    torch.testing.assert_close(log_probs, actor.log_prob(obs, actions), rtol=1e-4, atol=1e-4)
    again, _ = actor.sample_n(obs, 5, torch.Generator().manual_seed(0))
    assert torch.equal(actions, again)
    mean, log_std = actor(obs)
    torch.testing.assert_close(actor.deterministic(obs), torch.tanh(mean))
    assert torch.all(log_std <= 2.0) and torch.all(log_std >= -20.0)


def test_actor_rsample_is_reparameterised() -> None:
    actor = TanhGaussianActor(4, 2, hidden=(16,), generator=torch.Generator().manual_seed(10))
    action, log_prob = actor.rsample(torch.randn(8, 4), torch.Generator().manual_seed(1))
    (action.sum() + log_prob.sum()).backward()
    for p in actor.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_sampled_tanh_gaussian_moments() -> None:
    # E[tanh(u)], u ~ N(0.5, 0.6²), by quadrature, against the sample mean of 40 000 draws
    g = torch.Generator().manual_seed(11)
    mean = torch.tensor([[0.5]], dtype=torch.float64)
    log_std = torch.tensor([[math.log(0.6)]], dtype=torch.float64)
    a, _ = tanh_gaussian_sample(mean, log_std, 40_000, g)
    u = np.linspace(0.5 - 8 * 0.6, 0.5 + 8 * 0.6, 20_001)
    w = np.exp(-0.5 * ((u - 0.5) / 0.6) ** 2) / (0.6 * math.sqrt(2 * math.pi))
    expected = trapezoid(np.tanh(u) * w, u)
    assert abs(a.mean().item() - expected) < 4 * a.std().item() / math.sqrt(40_000)


def test_polyak_update() -> None:
    target, online = nn.Linear(2, 2), nn.Linear(2, 2)
    t0 = [p.detach().clone() for p in target.parameters()]
    polyak_update(target, online, 0.25)
    for t, before, p in zip(target.parameters(), t0, online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.75 * before + 0.25 * p)


@pytest.mark.parametrize(
    ("precision", "chunk"), [("fp32", None), ("fp32", 5), ("bf16", None), ("bf16", 5)]
)
def test_fast_critic_agrees_with_its_reference_path(precision: str, chunk: int | None) -> None:
    # The fast path (folded first bias, row blocks, float32 head under bf16 autocast) against
    # the plain per-member loop, values and gradients.
    g = torch.Generator().manual_seed(6)
    critic = EnsembleQ(5, 2, n_critics=2, hidden=(16, 8), generator=g)
    critic.cpu_chunk_rows = chunk
    obs = torch.randn(13, 5, generator=g)
    act = torch.rand(13, 3, 2, generator=g) * 2 - 1
    grads = []
    for path in (critic, critic.reference_forward):
        critic.zero_grad(set_to_none=True)
        with torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=precision == "bf16" and path is critic
        ):
            q = path(obs, act)
        assert q.shape == (2, 13, 3) and q.dtype == torch.float32
        q.square().sum().backward()
        grads.append((q.detach(), [p.grad.clone() for p in critic.parameters()]))
    tol = {"rtol": 1e-5, "atol": 1e-6} if precision == "fp32" else {"rtol": 3e-2, "atol": 3e-2}
    (q_fast, g_fast), (q_ref, g_ref) = grads
    torch.testing.assert_close(q_fast, q_ref, **tol)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(critic.reference_forward(obs, act[:, 0]), q_ref[:, :, 0])


def test_fused_adam_agrees_with_the_plain_implementation() -> None:
    g = torch.Generator().manual_seed(7)
    start = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    fast = [p.clone().requires_grad_(True) for p in start]
    plain = [p.clone().requires_grad_(True) for p in start]
    opt_fast = adam(fast, 1e-2)
    opt_plain = torch.optim.Adam(plain, lr=1e-2, foreach=False, fused=False)
    assert opt_fast.defaults.get("fused") or opt_fast.defaults.get("foreach")
    for step in range(5):
        x = torch.randn(8, 4, generator=g)
        for params, opt in ((fast, opt_fast), (plain, opt_plain)):
            opt.zero_grad()
            ((x @ params[0] + params[1]).sin().sum() * (step + 1)).backward()
            opt.step()
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, start[0] if a.dim() == 2 else start[1])
