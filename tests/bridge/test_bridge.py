"""Bridge: the deep losses, minimised by gradient descent on a torch table Q[s, a], land on the
closed-form / Newton fixed points of theory/cql.py.

The torch side sees only the dataset: every row (s, a, r, s') of D is one batch row, so the
batch means in :func:`deep.losses.td_loss` and :func:`deep.losses.cql_regularizer` are the
paper's expectations under s ~ D (weights n(s)/N) and a ~ π̂_β(·|s) (weights n(s, a)/N). The
loss is the paper's per-iteration objective

    α·gap(Q) + ½ E_D[(Q(s, a) − y)²],    y = r + γ Σ_a' π(a'|s') Q(s', a')  (detached),

with y recomputed from the current table at every step (semi-gradient, the deep update with
its target network replaced by the current table). Plain gradient descent drives the
gradient to zero; its zero is the stationary point Q = B̂^π Q − α(μ/π̂_β − 1), with
μ = softmax(Q/T) for CQL(H) (Eq. 4, exact log-sum-exp branch) and μ = π for CQL(2) (Eq. 2).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from deep.losses import calibrated, cql_regularizer, td_loss, td_target
from theory.cql import behaviour_reference, cal_ql_evaluate, cql_evaluate, cql_h_evaluate
from theory.data import EmpiricalMDP, sample_dataset
from theory.mdp import random_mdp

S, A, N_ROWS, GAMMA = 5, 3, 1000, 0.9


def _instance(seed: int) -> tuple[EmpiricalMDP, np.ndarray, dict[str, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    mdp = random_mdp(S, A, rng, gamma=GAMMA)
    # behaviour with every probability >= 0.1 and i.i.d. uniform states: full coverage, so no
    # convention for unseen pairs is involved (asserted below)
    behavior = 0.7 * rng.dirichlet(np.ones(A), size=S) + 0.3 / A
    data = sample_dataset(mdp, behavior, N_ROWS, rng)
    emp = EmpiricalMDP.from_dataset(data, GAMMA)
    assert emp.seen.all(), "the instance must cover every (s, a)"
    pi = rng.dirichlet(np.ones(A), size=S)
    rows = {
        "s": torch.as_tensor(data.s),
        "a": torch.as_tensor(data.a),
        "r": torch.as_tensor(data.r, dtype=torch.float64),
        "s2": torch.as_tensor(data.s2),
    }
    return emp, pi, rows


def _descend(
    rows: dict[str, torch.Tensor],
    pi: np.ndarray,
    alpha: float,
    variant: str,
    temperature: float = 1.0,
    grad_tol: float = 1e-8,
    max_steps: int = 20_000,
) -> np.ndarray:
    """Plain gradient descent on the deep loss over a (S, A) float64 table; returns the table."""
    s, a, r, s2 = rows["s"], rows["a"], rows["r"], rows["s2"]
    pi_t = torch.as_tensor(pi, dtype=torch.float64)
    done = torch.zeros_like(r)
    q = torch.zeros(S, A, dtype=torch.float64, requires_grad=True)
    # Step size from the curvature of the per-iteration loss: per pair, n(s,a)/N from the TD
    # term plus at most α n(s)/(N T) from the log-sum-exp (CQL(2) is linear in Q).
    n_sa = torch.bincount(s * A + a, minlength=S * A).double() / len(s)
    n_s = torch.bincount(s, minlength=S).double() / len(s)
    curvature = n_sa.max() + (alpha * n_s.max() / temperature if variant == "cql_h" else 0.0)
    opt = torch.optim.SGD([q], lr=float(1.0 / curvature))
    for _ in range(max_steps):
        q_data = q[s, a]  # (B,)
        q_rows = q[s]  # (B, A): every action at the same state s
        with torch.no_grad():
            y = td_target(r, done, (pi_t[s2] * q[s2]).sum(-1), GAMMA)
        if variant == "cql_h":
            reg = cql_regularizer(q_data, q_rows, estimator="exact", temperature=temperature)
        else:
            reg = cql_regularizer(q_data, q_rows, estimator="expectation", mu=pi_t[s])
        loss = 0.5 * td_loss(q_data, y) + alpha * reg.gap
        opt.zero_grad()
        loss.backward()
        assert q.grad is not None
        if q.grad.abs().max().item() < grad_tol:
            break
        opt.step()
    else:
        pytest.fail(f"gradient descent did not converge in {max_steps} steps")
    return q.detach().numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cql_h_deep_regularizer_converges_to_theory(seed: int) -> None:
    emp, pi, rows = _instance(seed)
    alpha, temperature = (0.5, 1.0) if seed != 2 else (1.0, 0.5)
    expected = cql_h_evaluate(emp, pi, alpha, temperature=temperature)
    got = _descend(rows, pi, alpha, "cql_h", temperature)
    np.testing.assert_allclose(got, expected.q, atol=1e-4, rtol=0)
    # not a trivial agreement: the penalty moved Q away from plain evaluation of the data
    assert np.abs(expected.q - cql_h_evaluate(emp, pi, 0.0).q).max() > 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cql2_deep_regularizer_converges_to_theory(seed: int) -> None:
    emp, pi, rows = _instance(seed)
    alpha = 1.0
    expected = cql_evaluate(emp, pi, alpha, mu=pi, variant="cql2")
    got = _descend(rows, pi, alpha, "cql2")
    np.testing.assert_allclose(got, expected.q, atol=1e-4, rtol=0)
    assert np.abs(expected.q - cql_evaluate(emp, pi, 0.0, variant="cql2").q).max() > 0.05


# ------------------------------------------------------------------------------- Cal-QL


def _cal_ql_loss(
    q: torch.Tensor,
    target_table: torch.Tensor,
    rows: dict[str, torch.Tensor],
    pi: torch.Tensor,
    floor: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """The deep Cal-QL critic loss on a table: the TD term towards the target computed from
    ``target_table`` (detached), plus alpha times the CQL(2) gap whose pushed-down values are
    floored by :func:`deep.losses.calibrated` at each row's return-to-go ``floor``."""
    s, a, r, s2 = rows["s"], rows["a"], rows["r"], rows["s2"]
    y = td_target(r, torch.zeros_like(r), (pi[s2] * target_table[s2]).sum(-1), GAMMA)
    pushed = calibrated(q[s], floor)
    reg = cql_regularizer(q[s, a], pushed, estimator="expectation", mu=pi[s])
    return 0.5 * td_loss(q[s, a], y) + alpha * reg.gap


def _coordinate_minimum(loss: Callable[[torch.Tensor], torch.Tensor], q: torch.Tensor) -> bool:
    """Whether no single entry of ``q`` moved by ±h lowers ``loss`` (for a loss that is a
    convex sum of one-entry terms, as here, that is the global minimum)."""
    base = float(loss(q))
    for i in range(q.numel()):
        for h in (1e-4, -1e-4):
            moved = q.clone()
            moved.view(-1)[i] += h
            if float(loss(moved)) < base - 1e-13:
                return False
    return True


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cal_ql_deep_loss_has_the_tabular_fixed_point(seed: int) -> None:
    # The Cal-QL loss is not smooth where Q meets the floor (there the fixed point holds many
    # pairs), so gradient descent would only circle it; instead: the tabular fixed point Q*
    # minimises the deep loss whose TD target is computed from Q* itself, i.e. it is the
    # fixed point of the deep per-iteration update. CQL(2)'s fixed point is not.
    emp, pi, rows = _instance(seed)
    alpha = 1.0
    reference = behaviour_reference(emp)
    expected = cal_ql_evaluate(emp, pi, alpha, mu=pi, reference=reference)
    assert expected.at_reference.any() and expected.pushed_down.any()
    floor = torch.as_tensor(reference[rows["s"].numpy(), 0])  # V^pi_beta_hat(s) per row
    pi_t = torch.as_tensor(pi)

    def at(table: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
        target = torch.as_tensor(table)
        return lambda q: _cal_ql_loss(q, target, rows, pi_t, floor, alpha)

    assert _coordinate_minimum(at(expected.q), torch.as_tensor(expected.q))
    cql2 = cql_evaluate(emp, pi, alpha, mu=pi, variant="cql2").q
    assert np.abs(cql2 - expected.q).max() > 0.5
    assert not _coordinate_minimum(at(cql2), torch.as_tensor(cql2))
