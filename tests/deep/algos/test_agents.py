"""Agents: one update moves every parameter, determinism, checkpoints, and the CQL wiring
(three action groups all scored at s, uniform actions on [−1, 1]^d, log-sum-exp over 3N)."""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import traceback
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from deep.algos import (
    ALGORITHMS,
    BC,
    CQL,
    Agent,
    CQLConfig,
    DiscreteBC,
    DiscreteCQL,
    DiscreteCQLConfig,
    OfflineSAC,
    SACConfig,
    make_agent,
)
from deep.batch import Batch
from deep.losses import uniform_log_density

OBS, ACT, N_ACTIONS, B = 5, 3, 4, 32
WIDTHS = {"actor_hidden": (32, 32), "critic_hidden": (32, 32), "hidden": (32, 32)}
# Every registered algorithm gets the contract tests below without editing a list here.
ALL = list(ALGORITHMS)
CONTINUOUS = [
    n for n, a in ALGORITHMS.items() if not a.discrete and issubclass(a.config_type, SACConfig)
]
"""The continuous actor-critics (SAC and every CQL variant)."""


def continuous_batch(seed: int, b: int = B) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(b, OBS, generator=g),
        torch.rand(b, ACT, generator=g) * 2 - 1,
        torch.randn(b, generator=g),
        torch.randn(b, OBS, generator=g),
        (torch.rand(b, generator=g) < 0.2).float(),
        torch.randn(b, generator=g) * 10,  # returns-to-go, for the agents that read them
    )


def discrete_batch(seed: int, b: int = B) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(b, OBS, generator=g),
        torch.randint(0, N_ACTIONS, (b,), generator=g),
        torch.randn(b, generator=g),
        torch.randn(b, OBS, generator=g),
        (torch.rand(b, generator=g) < 0.2).float(),
    )


def build(name: str, seed: int = 0, **overrides: Any) -> Agent:
    """The registered algorithm ``name`` with small networks."""
    algo = ALGORITHMS[name]
    fields = {f.name for f in dataclasses.fields(algo.config_type)}
    widths = {k: v for k, v in WIDTHS.items() if k in fields}
    act = N_ACTIONS if algo.discrete else ACT
    return make_agent(name, OBS, act, seed=seed, **{**widths, **overrides})


def batch_for(name: str, seed: int) -> Batch:
    return discrete_batch(seed) if ALGORITHMS[name].discrete else continuous_batch(seed)


def trainable(agent: Any) -> dict[str, torch.Tensor]:
    """Every tensor an optimizer steps, by name (network parameters and log-temperatures)."""
    out: dict[str, torch.Tensor] = {}
    for mod_name, mod in agent._modules().items():
        for p_name, p in mod.named_parameters():
            if p.requires_grad:
                out[f"{mod_name}.{p_name}"] = p
    for name, scalar in agent._scalars().items():
        if scalar.requires_grad:
            out[name] = scalar
    return out


# Discrete CQL's default (one critic, a target copied every 1000 updates) leaves its target in
# place after one update: two critics and a target copied every update show every tensor move.
ONE_UPDATE = {"discrete-cql": {"n_critics": 2, "target_update_period": 1}}
CASES = [(name, ONE_UPDATE.get(name, {})) for name in ALL] + [
    ("cql", {"bc_steps": 5}),
    ("cql", {"max_q_backup": True, "backup_entropy": True}),
    ("bc", {"loss": "nll"}),
]


@pytest.mark.parametrize(("name", "overrides"), CASES)
def test_one_update_moves_every_trainable_parameter(name: str, overrides: dict[str, Any]) -> None:
    agent = build(name, **overrides)
    params = trainable(agent)
    before = {k: v.detach().clone() for k, v in params.items()}
    target_before = (
        [p.detach().clone() for p in agent.target_critic.parameters()]  # type: ignore[attr-defined]
        if hasattr(agent, "target_critic")
        else []
    )
    metrics = agent.update(batch_for(name, 1))
    assert agent.step == 1
    for k, p in params.items():
        assert not torch.equal(p.detach(), before[k]), f"{name}: {k} did not move"
        if p.dim() >= 1 and k.split(".")[0] in ("critic", "target_critic"):
            for member in range(p.shape[0]):  # every critic of the ensemble learns
                assert not torch.equal(p[member].detach(), before[k][member]), (k, member)
    for t_before, t_after in zip(
        target_before,
        agent.target_critic.parameters() if target_before else [],  # type: ignore[attr-defined]
        strict=True,
    ):
        assert not torch.equal(t_before, t_after)
    for key, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad
        assert torch.isfinite(value), key


def test_cql_reports_the_listed_keys_and_sac_only_its_own() -> None:
    listed = {
        "loss/q1",
        "loss/q2",
        "loss/policy",
        "loss/entropy",
        "loss/cql",
        "misc/entropy_alpha",
        "misc/lagrange_alpha",
    }
    for name in ("cql", "cql-rho", "cql-lagrange"):
        keys = set(build(name).update(continuous_batch(0)))
        assert listed <= keys, (name, listed - keys)
    assert "loss/lagrange" in build("cql-lagrange").update(continuous_batch(0))
    sac_keys = set(build("sac").update(continuous_batch(0)))
    assert {"loss/q1", "loss/q2", "loss/policy", "loss/entropy"} <= sac_keys
    assert not {"loss/cql", "misc/lagrange_alpha", "misc/cql_gap"} & sac_keys


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_metrics_and_checkpoint_resume(name: str) -> None:
    batches = [batch_for(name, s) for s in range(3)]
    a, b, c = build(name, seed=3), build(name, seed=3), build(name, seed=4)
    run_a = [a.update(x) for x in batches]
    run_b = [b.update(x) for x in batches]
    run_c = [c.update(x) for x in batches]
    for ma, mb in zip(run_a, run_b, strict=True):
        assert ma.keys() == mb.keys()
        for k in ma:
            assert torch.equal(ma[k], mb[k]), k
    assert any(not torch.equal(run_a[-1][k], run_c[-1][k]) for k in run_a[-1])
    # checkpoint after 3 updates, reload into a differently seeded agent: the 4th update of
    # both must agree exactly (networks, targets, optimizers, temperatures, step, generators)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    c.load_state_dict(torch.load(buffer, weights_only=True))
    assert c.step == a.step == 3
    nxt = batch_for(name, 9)
    ma, mc = a.update(nxt), c.update(nxt)
    for k in ma:
        assert torch.equal(ma[k], mc[k]), k


def test_load_state_dict_names_missing_keys() -> None:
    agent = build("cql")
    state = agent.state_dict()
    del state["critic_optim"]
    with pytest.raises(KeyError, match="critic_optim"):
        agent.load_state_dict(state)


def _capture_critic_calls(agent: CQL) -> list[dict[str, torch.Tensor]]:
    """Record the state, actions and output of every critic call on (B, M, d) actions."""
    calls: list[dict[str, torch.Tensor]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: Any, out: Any) -> None:
        obs, act = args
        if act.dim() == 3:
            calls.append({"obs": obs.detach().clone(), "act": act.detach().clone(), "q": out})

    agent.critic.register_forward_hook(hook, with_kwargs=True)
    return calls


def test_cql_scores_three_groups_of_n_actions_at_state_s() -> None:
    n = 10
    agent = build("cql", cql_n_actions=n)
    assert isinstance(agent, CQL)
    # scale the output layers so that π(·|s) differs from π(·|s') and Q varies over actions
    # (at initialisation both are nearly constant and every check below would be weak)
    with torch.no_grad():
        agent.actor.trunk.net[-1].weight[:ACT].mul_(300.0)  # the mean rows; log σ stays ≈ 0
        agent.critic.layers[-1].weight.mul_(100.0)
    calls = _capture_critic_calls(agent)
    batch = continuous_batch(5, b=64)
    # log-densities under the pre-update actor, at s and at s'
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    metrics = agent.update(batch)
    assert len(calls) == 1
    call = calls[0]
    assert call["act"].shape == (64, 3 * n, ACT)  # 3N actions, not 3
    assert torch.equal(call["obs"], batch.observations)  # all groups scored at s, never s'
    uniform = call["act"][:, :n]
    assert uniform.min() >= -1.0 and uniform.max() <= 1.0
    assert uniform.min() < -0.95 and uniform.max() > 0.95  # spans [−1, 1], not [0, 1]
    assert abs(uniform.mean().item()) < 0.05
    assert abs(uniform.std().item() - 1 / math.sqrt(3)) < 0.03  # uniform on [−1, 1]
    # recompute the importance-sampled push-down from the recorded Q values, with the
    # policy groups' densities under π(·|s) and π(·|s') respectively
    with torch.no_grad():
        for p, p0 in zip(agent.actor.parameters(), actor_before, strict=True):
            p.copy_(p0)
        lp_s = agent.actor.log_prob(batch.observations, call["act"][:, n : 2 * n])
        lp_s2 = agent.actor.log_prob(batch.next_observations, call["act"][:, 2 * n :])
        log_q = torch.cat([torch.full((64, n), uniform_log_density(ACT)), lp_s, lp_s2], 1)
        q = call["q"].detach()  # (E, B, 3N)
        expected = (torch.logsumexp(q - log_q, dim=-1) - math.log(3 * n)).mean()
    torch.testing.assert_close(metrics["misc/cql_push_down"], expected, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        # the same Q values with each policy group's density taken at the other state
        wrong_q = torch.cat(
            [
                log_q[:, :n],
                agent.actor.log_prob(batch.next_observations, call["act"][:, n : 2 * n]),
                agent.actor.log_prob(batch.observations, call["act"][:, 2 * n :]),
            ],
            1,
        )
        wrong = (torch.logsumexp(q - wrong_q, dim=-1) - math.log(3 * n)).mean()
    assert abs(wrong.item() - expected.item()) > 0.5


def test_cql_rho_is_the_plain_log_mean_exp_over_3n() -> None:
    n = 6
    agent = build("cql-rho", cql_n_actions=n)
    assert isinstance(agent, CQL)
    calls = _capture_critic_calls(agent)
    metrics = agent.update(continuous_batch(6))
    q = calls[0]["q"].detach()
    assert q.shape == (2, B, 3 * n)
    expected = (torch.logsumexp(q, dim=-1) - math.log(3 * n)).mean()
    torch.testing.assert_close(metrics["misc/cql_push_down"], expected)


def test_max_q_backup_scores_n_next_actions_with_the_target_critic() -> None:
    agent = build("cql", max_q_backup=True, backup_n_actions=7)
    assert isinstance(agent, CQL)
    seen: list[tuple[int, ...]] = []
    agent.target_critic.register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))
    agent.update(continuous_batch(0))
    assert seen == [(2, B, 7)]


@pytest.mark.parametrize("name", ["sac", "cql"])
def test_mean_backup_reads_the_target_at_the_policy_mean(name: str) -> None:
    agent = build(name, backup_action="mean")
    batch = continuous_batch(3)
    seen: list[torch.Tensor] = []
    agent.target_critic.register_forward_hook(lambda m, args, out: seen.append(args[1]))  # type: ignore[attr-defined]
    with torch.no_grad():
        next_mean, _ = agent.actor(batch.next_observations)  # type: ignore[attr-defined]
    agent.update(batch)
    (act,) = seen
    torch.testing.assert_close(act, torch.tanh(next_mean).unsqueeze(1))
    # The default samples: same random numbers, another a'.
    sampled = build(name)
    seen.clear()
    sampled.target_critic.register_forward_hook(lambda m, args, out: seen.append(args[1]))  # type: ignore[attr-defined]
    sampled.update(batch)
    assert not torch.allclose(seen[0], act)
    for bad in ({"backup_entropy": True}, {"max_q_backup": True}):
        with pytest.raises(ValueError, match="backup_action='mean'"):
            build(name, backup_action="mean", **bad)


def test_reward_scale_and_bias_enter_the_target() -> None:
    # γ = 0: y = scale·r + bias exactly
    agent = build("cql", gamma=0.0, reward_scale=2.0, reward_bias=-1.0)
    batch = continuous_batch(2)
    metrics = agent.update(batch)
    torch.testing.assert_close(metrics["misc/q_target"], (2.0 * batch.rewards - 1.0).mean())


def test_bc_warm_start_trains_the_actor_by_likelihood() -> None:
    # α ≈ 0 fixed: the warm-start loss is −E log π(a_D|s) under the pre-update actor
    agent = build("cql", bc_steps=1, auto_entropy=False, init_entropy_alpha=1e-12)
    assert isinstance(agent, CQL)
    batch = continuous_batch(3)
    with torch.no_grad():
        nll = -agent.actor.log_prob(batch.observations, batch.actions).mean()
    first = agent.update(batch)
    torch.testing.assert_close(first["loss/policy"], nll)
    # after the warm-start the loss is α log π − min Q ≈ −E min Q(s, ã) (a few units smaller)
    second = agent.update(batch)
    torch.testing.assert_close(second["loss/policy"], -second["misc/q_policy"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("threshold", "grows"), [(-100.0, True), (100.0, False)])
def test_lagrange_agent_moves_alpha_prime_with_the_constraint(
    threshold: float, grows: bool
) -> None:
    agent = build("cql-lagrange", lagrange_threshold=threshold, lagrange_lr=0.05)
    batch = continuous_batch(4)
    alphas = [agent.update(batch)["misc/lagrange_alpha"].item() for _ in range(5)]
    alphas.append(agent.lagrange_alpha().item())  # type: ignore[attr-defined]
    diffs = [b - a for a, b in itertools.pairwise(alphas)]
    assert all(d > 0 for d in diffs) if grows else all(d < 0 for d in diffs), alphas


def test_discrete_cql_exact_regulariser_and_hard_target_update() -> None:
    agent = build("discrete-cql", target_update_period=2, target_tau=1.0)
    assert isinstance(agent, DiscreteCQL)
    batch = discrete_batch(0)
    with torch.no_grad():
        expected = torch.logsumexp(agent.critic(batch.observations), dim=-1).mean()
    target0 = [p.detach().clone() for p in agent.target_critic.parameters()]
    metrics = agent.update(batch)
    torch.testing.assert_close(metrics["misc/cql_push_down"], expected)
    for p, p0 in zip(agent.target_critic.parameters(), target0, strict=True):
        assert torch.equal(p, p0)  # step 1 of 2: target unchanged
    agent.update(batch)
    for p, q in zip(agent.target_critic.parameters(), agent.critic.parameters(), strict=True):
        assert torch.equal(p, q)  # step 2: hard copy


def test_act_and_q_value_shapes() -> None:
    obs = torch.randn(6, OBS)
    for name in CONTINUOUS:
        agent = build(name)
        assert isinstance(agent, OfflineSAC)
        det = agent.act(obs)
        torch.testing.assert_close(det, agent.actor.deterministic(obs))
        sto = agent.act(obs, deterministic=False)
        assert sto.shape == (6, ACT) and torch.all(sto.abs() < 1) and not torch.equal(sto, det)
        assert agent.act(obs[0]).shape == (ACT,)
        a = torch.rand(6, ACT) * 2 - 1
        q = agent.q_value(obs, a)
        assert q.shape == (6,)
        torch.testing.assert_close(q, agent.critic(obs, a).min(0).values)
    disc = build("discrete-cql", n_critics=2)
    assert isinstance(disc, DiscreteCQL)
    act = disc.act(obs)
    assert act.dtype == torch.int64 and act.shape == (6,)
    torch.testing.assert_close(act, disc.critic(obs).mean(0).argmax(-1))
    assert disc.act(obs, deterministic=False).max() < N_ACTIONS
    assert disc.q_value(obs, act).shape == (6,)
    bc = build("bc")
    assert isinstance(bc, BC) and bc.act(obs).shape == (6, ACT) and not bc.has_critic
    dbc = build("discrete-bc")
    assert isinstance(dbc, DiscreteBC) and dbc.act(obs[0]).shape == ()


def test_factory_names_and_errors() -> None:
    assert type(build("sac")) is OfflineSAC
    assert isinstance(build("cql-lagrange"), CQL) and build("cql-lagrange").config.lagrange  # type: ignore[attr-defined]
    assert build("cql-rho").config.cql_estimator == "rho"  # type: ignore[attr-defined]
    assert isinstance(make_agent("discrete-bc", OBS, N_ACTIONS, discrete=True), DiscreteBC)
    with pytest.raises(ValueError, match="use discrete-cql, discrete-bc"):
        make_agent("bc", OBS, N_ACTIONS, discrete=True)
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("td3", OBS, ACT)
    with pytest.raises(ValueError, match="unknown CQLConfig fields"):
        make_agent("cql", OBS, ACT, cql_wieght=3.0)
    with pytest.raises(ValueError, match="needs lagrange=True"):
        make_agent("cql-lagrange", OBS, ACT, config=CQLConfig())
    with pytest.raises(TypeError, match="needs a SACConfig"):
        make_agent("sac", OBS, ACT, config=DiscreteCQLConfig())
    with pytest.raises(ValueError, match="continuous actions"):
        make_agent("cql", OBS, ACT, discrete=True)
    with pytest.raises(ValueError, match="gamma"):
        OfflineSAC(OBS, ACT, SACConfig(gamma=1.0))
    with pytest.raises(ValueError, match="batch actions"):
        build("cql").update(discrete_batch(0))


class _RecordOps(TorchDispatchMode):
    """Record every aten op dispatched while active, and where host reads come from."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()
        self.host_reads: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func.overloadpacket.__name__)
        self.ops.add(name)
        if name in HOST_SYNC_OPS:
            frames = traceback.extract_stack()
            # torch.optim reads its step counter with .item(): that tensor lives on the host
            # (Adam keeps it on the CPU even for GPU parameters), so it is no device sync.
            if not any("torch/optim/" in f.filename for f in frames):
                ours = [f for f in frames if "/deep/" in f.filename and "/tests/" not in f.filename]
                where = ours[-1] if ours else frames[-3]
                self.host_reads.append(f"{name} at {where.filename}:{where.lineno}")
        return func(*args, **(kwargs or {}))


# Ops that read a tensor's value on the host (.item(), bool(t), data-dependent shapes): on a
# GPU each one stalls the stream until the update is computed.
HOST_SYNC_OPS = {"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "item"}


@pytest.mark.parametrize(("name", "overrides"), CASES)
def test_update_never_reads_tensor_values_on_the_host(name: str, overrides: dict[str, Any]) -> None:
    agent = build(name, **overrides)
    batch = batch_for(name, 0)
    agent.update(batch)
    with _RecordOps() as mode:
        agent.update(batch)
    assert {"mm", "bmm", "addmm"} & mode.ops  # the recorder sees the update
    assert not mode.host_reads, mode.host_reads
    # the recorder does catch a host read from the agents' code path
    with _RecordOps() as probe:
        bool(next(iter(agent.update(batch).values())) > 0)
    assert probe.host_reads


def test_data_action_in_push_down_bounds_the_gap_and_needs_rho() -> None:
    # With Q(s, a_D) inside the soft maximum over 3N + 1 values, push_down >= Q(s, a_D) −
    # T log(3N + 1) for every state, so the gap cannot fall below −T log(3N + 1) even at N = 1.
    with pytest.raises(ValueError, match="needs cql_estimator='rho'"):
        make_agent("cql", OBS, ACT, cql_data_in_push_down=True)
    agent = build("cql", cql_n_actions=1, cql_estimator="rho", cql_data_in_push_down=True)
    plain = build("cql", cql_n_actions=1, cql_estimator="rho")
    batch = continuous_batch(0)
    for _ in range(3):
        with_data = agent.update(batch)
        without = plain.update(batch)
    bound = -math.log(3 * 1 + 1)
    assert float(with_data["misc/cql_gap"]) >= bound
    # The two estimators differ (the data action enters the soft maximum in one only).
    assert float(with_data["misc/cql_gap"]) != float(without["misc/cql_gap"])


def test_cal_ql_floors_the_policy_samples_at_the_return_to_go() -> None:
    # Same seed, same batch, first update: the push-down is computed with identical critics
    # and draws, so the floor alone separates the agents.
    base = continuous_batch(0)

    def push_down(returns: float | None, name: str = "cal-ql") -> float:
        rtg = None if returns is None else torch.full((B,), returns)
        metrics = build(name, seed=3).update(base._replace(returns_to_go=rtg))
        return float(metrics["misc/cql_push_down"])

    plain = push_down(None, "cql")
    assert push_down(-1e6) == pytest.approx(plain, rel=1e-5)  # a floor below every Q: CQL
    assert push_down(50.0) > plain + 1.0  # a high floor raises the soft maximum
    assert build("cal-ql").config.calibrated  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="returns-to-go"):
        push_down(None)
