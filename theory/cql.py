"""Conservative Q-Learning in the table: CQL(1), CQL(2), CQL(H) and the tabular control loop.

CQL paper: Kumar, Zhou, Tucker, Levine, "Conservative Q-Learning for Offline Reinforcement
Learning", arXiv 2006.04779. Everything here is computed in the *empirical* MDP of a dataset D
(:class:`theory.data.EmpiricalMDP`): T_hat, r_hat, pi_beta_hat from counts, and the empirical
backup ``B_hat^pi Q = r_hat + gamma T_hat (pi . Q)``.

Weights. ``N = |D|``, ``d(s) = n(s)/N`` (the "s ~ D" distribution) and ``n(s, a)/N`` (the
"s, a ~ D" distribution). Every objective below is the paper's expectation written with these
weights, so it is separable over pairs and its minimiser is available in closed form.

Shapes: ``q``, ``pi``, ``mu``, ``penalty`` are (S, A); ``v`` is (S,); iterates stack on a leading
axis.

What D does not cover (the convention of :mod:`theory.data`, reused here):

* a state never seen in D (``n(s) = 0``) has no data term in any objective: no penalty, its
  Q is the empirical MDP's (pessimistic, absorbing) backup;
* a pair never seen at a state that *is* in D (``n(s, a) = 0``): CQL(1)/(2) require
  ``mu(a|s) = 0`` there (else the objective is unbounded below: ``mu/pi_beta_hat`` is infinite)
  and then the objective does not depend on Q(s, a); we give it the empirical backup, penalty 0;
* CQL(H) has no mu to check: its log-sum-exp runs over the actions taken at s in D, the limit
  of the unrestricted objective (see :func:`cql_h_evaluate`); unseen pairs again get the
  empirical backup. With full coverage none of this applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from theory.data import EmpiricalMDP
from theory.mdp import (
    InvalidMDPError,
    TabularMDP,
    bellman,
    greedy_policy,
    policy_evaluation,
    solve_discounted,
    state_values,
    validate_policy,
)

Variant = Literal["cql1", "cql2"]
Improvement = Literal["greedy", "soft"]

# --- validation ----------------------------------------------------------------------------


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not np.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (it weighs a penalty), got {alpha}")
    return alpha


def _check_temperature(temperature: float, name: str = "temperature") -> float:
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature}")
    return temperature


def _check_table(x: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.shape != shape:
        raise InvalidMDPError(f"{name} must have shape {shape}, got {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidMDPError(f"{name}{list(idx)} = {x[idx]} is not finite")
    return x


def _check_n_iters(n_iters: int) -> int:
    if int(n_iters) != n_iters or n_iters < 0:
        raise ValueError(f"n_iters must be a non-negative integer, got {n_iters}")
    return int(n_iters)


# --- CQL(1) and CQL(2): penalty, closed form, iteration ------------------------------------


def cql_penalty(emp: EmpiricalMDP, mu: np.ndarray, variant: Variant = "cql1") -> np.ndarray:
    """The per-pair CQL penalty that the fixed point subtracts (times alpha) from r_hat.

    * CQL(1), Eq. 1: ``mu(a|s) / pi_beta_hat(a|s)``
    * CQL(2), Eq. 2: ``mu(a|s) / pi_beta_hat(a|s) - 1``

    on pairs seen in D; **zero** on pairs with ``n(s, a) = 0`` (including every pair of a state
    not in D): the objective has no data term there (see the module docstring).

    Raises :class:`InvalidMDPError` when mu puts mass on an action D never took at a state of D
    (``emp.check_support``), naming the pair. Shapes: mu (S, A) -> (S, A).
    """
    mu = emp.check_support(mu, "mu")
    if variant not in ("cql1", "cql2"):
        raise ValueError(f"variant must be 'cql1' or 'cql2', got {variant!r}")
    ratio = np.divide(mu, emp.pi_beta, out=np.zeros_like(mu), where=emp.seen)
    if variant == "cql2":
        ratio = np.where(emp.seen, ratio - 1.0, 0.0)
    return ratio


@dataclass(frozen=True, eq=False)
class CQLEvaluation:
    """The fixed point of CQL(1) (Eq. 1) or CQL(2) (Eq. 2) policy evaluation.

    Attributes:
        q: Q_hat, (S, A).
        v: V_hat(s) = sum_a pi(a|s) Q_hat(s, a), (S,).
        penalty: the per-pair penalty of :func:`cql_penalty`, (S, A).
        reward: the penalised reward ``r_hat - alpha * penalty``, (S, A).
        alpha: the penalty weight.
        variant: "cql1" or "cql2".
    """

    q: np.ndarray
    v: np.ndarray
    penalty: np.ndarray
    reward: np.ndarray
    alpha: float
    variant: Variant


def cql_evaluate(
    emp: EmpiricalMDP,
    pi: np.ndarray,
    alpha: float,
    mu: np.ndarray | None = None,
    variant: Variant = "cql1",
) -> CQLEvaluation:
    """Exact fixed point of the CQL(1) / CQL(2) policy-evaluation update (Eq. 1 / Eq. 2).

    Setting the gradient of the per-iteration objective to zero (see :func:`cql_iterate`) gives
    ``Q_{k+1} = B_hat^pi Q_k - alpha * penalty``; its fixed point is

        Q_hat = (I - gamma P_hat^pi)^{-1} (r_hat - alpha * penalty)
              = Q_hat^pi - alpha (I - gamma P_hat^pi)^{-1} penalty,

    i.e. exact policy evaluation of the empirical MDP with the penalised reward (solved in state
    space by :func:`theory.mdp.solve_discounted`). With ``penalty = mu/pi_beta_hat`` this is the
    equality case of Theorem 3.1 inside the empirical MDP; with CQL(2) and ``mu = pi`` the value
    satisfies ``V_hat = V_hat^pi - alpha (I - gamma P_hat_pi)^{-1} D_CQL`` (Theorem 3.2), where
    ``D_CQL(s) = sum_a pi (pi/pi_beta_hat - 1) >= 0``.

    Args:
        emp: the empirical MDP of D.
        pi: policy being evaluated, (S, A).
        alpha: penalty weight, >= 0.
        mu: the penalised distribution, (S, A); defaults to ``pi``. Must satisfy
            supp mu(.|s) within supp pi_beta_hat(.|s) on every state in D.
        variant: "cql1" (Eq. 1) or "cql2" (Eq. 2).
    """
    alpha = _check_alpha(alpha)
    pi = validate_policy(pi, emp.n_states, emp.n_actions, "pi")
    penalty = cql_penalty(emp, pi if mu is None else mu, variant)
    reward = emp.R - alpha * penalty
    q = solve_discounted(emp.mdp, pi, reward)
    return CQLEvaluation(
        q=q, v=state_values(q, pi), penalty=penalty, reward=reward, alpha=alpha, variant=variant
    )


@dataclass(frozen=True, eq=False)
class CQLIterates:
    """Iterates ``Q_0, ..., Q_K`` of the CQL(1)/(2) update, each the exact per-iteration argmin.

    Attributes:
        q: (K + 1, S, A); ``q[0]`` is the start.
        penalty: the per-pair penalty of :func:`cql_penalty`, (S, A).
        alpha: the penalty weight.
        variant: "cql1" or "cql2".
    """

    q: np.ndarray
    penalty: np.ndarray
    alpha: float
    variant: Variant


def cql_objective(
    emp: EmpiricalMDP,
    q: np.ndarray,
    target: np.ndarray,
    alpha: float,
    mu: np.ndarray,
    variant: Variant = "cql1",
) -> float:
    """One iteration's CQL(1) / CQL(2) objective at Q, for a fixed target ``B_hat^pi Q_k``.

    Eq. 1:  ``alpha E_{s~D, a~mu}[Q(s,a)] + 1/2 E_{s,a~D}[(Q(s,a) - target(s,a))^2]``
    Eq. 2:  Eq. 1 ``- alpha E_{s~D, a~pi_beta_hat}[Q(s,a)]``

    with ``E_{s~D}`` weighting state s by ``n(s)/N`` and ``E_{s,a~D}`` pair (s, a) by
    ``n(s,a)/N``. (The paper's TD term uses sampled targets ``r + gamma V_k(s')``; their average
    at (s, a) is ``B_hat^pi Q_k``, so the sampled loss differs from this one by a constant.)
    Shapes: q, target, mu (S, A) -> scalar.
    """
    alpha = _check_alpha(alpha)
    S, A = emp.n_states, emp.n_actions
    q = _check_table(q, (S, A), "q")
    target = _check_table(target, (S, A), "target")
    mu = emp.check_support(mu, "mu")
    if variant not in ("cql1", "cql2"):
        raise ValueError(f"variant must be 'cql1' or 'cql2', got {variant!r}")
    n = float(emp.counts.sum())
    if n == 0:
        return 0.0
    d = emp.state_counts / n
    # Unseen pairs at states of D carry mu = 0 (support checked), so mu * q adds nothing there.
    reg = float(np.sum(d[:, None] * np.where(mu > 0, mu * q, 0.0)))
    if variant == "cql2":
        reg -= float(np.sum(emp.counts / n * q))
    td = 0.5 * float(np.sum(emp.counts / n * (q - target) ** 2))
    return alpha * reg + td


def cql_iterate(
    emp: EmpiricalMDP,
    pi: np.ndarray,
    alpha: float,
    n_iters: int,
    mu: np.ndarray | None = None,
    variant: Variant = "cql1",
    q0: np.ndarray | None = None,
) -> CQLIterates:
    """Apply the CQL(1) / CQL(2) update (Eq. 1 / Eq. 2) ``n_iters`` times from ``q0`` (default 0).

    Each iterate is the exact argmin of that iteration's objective (:func:`cql_objective`) with
    the target ``y = B_hat^pi Q_k`` held fixed. The objective is separable over pairs:

        J(Q) = sum_{s,a} [ alpha n(s) mu(a|s) Q(s,a) - [cql2] alpha n(s,a) Q(s,a)
                           + 1/2 n(s,a) (Q(s,a) - y(s,a))^2 ] / N,

    using ``E_{s~D,a~pi_beta_hat}[Q] = sum n(s) (n(s,a)/n(s)) Q / N``. For ``n(s, a) > 0`` it is
    strictly convex in Q(s, a) and

        dJ/dQ(s,a) = [alpha n(s) mu - [cql2] alpha n(s,a) + n(s,a) (Q - y)] / N = 0
        =>  Q_{k+1}(s,a) = y(s,a) - alpha (mu(a|s)/pi_beta_hat(a|s) - [cql2] 1),

    since ``n(s)/n(s,a) = 1/pi_beta_hat(a|s)``. For ``n(s, a) = 0`` J is linear in Q(s, a) with
    slope ``alpha n(s) mu(a|s) / N``: unbounded below if ``mu(a|s) > 0`` (refused by the support
    check), flat if ``mu(a|s) = 0`` -- every value is a minimiser and we take ``y(s, a)``, the
    empirical MDP's backup at its absorbing unseen pair. So the iteration is the Bellman iteration
    of the empirical MDP with reward ``r_hat - alpha * penalty``, a gamma-contraction in the sup
    norm whose fixed point is :func:`cql_evaluate`: ``|Q_k - Q_hat| <= gamma^k |Q_0 - Q_hat|``.

    Returns all iterates, shape (n_iters + 1, S, A).
    """
    alpha = _check_alpha(alpha)
    n_iters = _check_n_iters(n_iters)
    S, A = emp.n_states, emp.n_actions
    pi = validate_policy(pi, S, A, "pi")
    penalty = cql_penalty(emp, pi if mu is None else mu, variant)
    q = np.zeros((S, A)) if q0 is None else _check_table(q0, (S, A), "q0")
    out = np.empty((n_iters + 1, S, A))
    out[0] = q
    for k in range(n_iters):
        q = bellman(emp.mdp, q, pi) - alpha * penalty
        out[k + 1] = q
    return CQLIterates(q=out, penalty=penalty, alpha=alpha, variant=variant)


# --- CQL(H) ---------------------------------------------------------------------------------


def masked_softmax(q: np.ndarray, mask: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(Q(s, .)/temperature)`` over the actions where ``mask[s]`` is True, 0 elsewhere.

    Rows with no True entry are all zero. Shapes: q, mask (S, A) -> (S, A).
    """
    z = np.where(mask, q / temperature, -np.inf)
    m = np.max(z, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(mask, np.exp(z - m), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def masked_logsumexp(q: np.ndarray, mask: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``temperature * log sum_{a: mask} exp(Q(s, a)/temperature)``; 0 on rows with no True entry.

    Shapes: q, mask (S, A) -> (S,).
    """
    z = np.where(mask, q / temperature, -np.inf)
    m = np.max(z, axis=1)
    has = np.isfinite(m)
    m = np.where(has, m, 0.0)
    total = np.where(mask, np.exp(z - m[:, None]), 0.0).sum(axis=1)
    return np.where(has, temperature * (m + np.log(np.where(has, total, 1.0))), 0.0)


def cql_h_penalty(emp: EmpiricalMDP, q: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """CQL(H) penalty ``softmax(Q/temperature)(a|s) / pi_beta_hat(a|s) - 1`` on seen pairs, else 0.

    The softmax runs over the actions taken at s in D (see :func:`cql_h_evaluate` for why).
    Shapes: q (S, A) -> (S, A).
    """
    p = masked_softmax(q, emp.seen, temperature)
    ratio = np.divide(p, emp.pi_beta, out=np.zeros_like(p), where=emp.seen)
    return np.where(emp.seen, ratio - 1.0, 0.0)


def cql_h_objective(
    emp: EmpiricalMDP,
    q: np.ndarray,
    target: np.ndarray,
    alpha: float,
    temperature: float = 1.0,
) -> float:
    """One iteration's CQL(H) objective (Eq. 4 with the policy-evaluation backup) at Q.

        alpha E_{s~D}[ tau log sum_{a in A_D(s)} exp(Q(s,a)/tau) - E_{a~pi_beta_hat}[Q(s,a)] ]
        + 1/2 E_{s,a~D}[(Q(s,a) - target(s,a))^2]

    with ``tau = temperature``, ``target = B_hat^pi Q_k`` fixed, ``A_D(s)`` the actions taken at
    s in D, and the weights of :func:`cql_objective`. Convex in Q; strictly convex in the
    entries of seen pairs, constant in the others. Shapes: q, target (S, A) -> scalar.
    """
    alpha = _check_alpha(alpha)
    temperature = _check_temperature(temperature)
    S, A = emp.n_states, emp.n_actions
    q = _check_table(q, (S, A), "q")
    target = _check_table(target, (S, A), "target")
    n = float(emp.counts.sum())
    if n == 0:
        return 0.0
    lse = masked_logsumexp(q, emp.seen, temperature)
    reg = float(np.sum(emp.state_counts / n * lse)) - float(np.sum(emp.counts / n * q))
    td = 0.5 * float(np.sum(emp.counts / n * (q - target) ** 2))
    return alpha * reg + td


@dataclass(frozen=True, eq=False)
class CQLHResult:
    """The stationary point of CQL(H) policy evaluation (Eq. 4, backup ``B_hat^pi``).

    Attributes:
        q: Q_hat, (S, A).
        v: V_hat(s) = sum_a pi(a|s) Q_hat(s, a), (S,).
        mu: ``softmax(Q_hat/temperature)`` over the actions of s in D (the maximising mu of
            Eq. 3 with an entropy regulariser), zero on states not in D, (S, A).
        penalty: ``mu/pi_beta_hat - 1`` on seen pairs, 0 elsewhere, (S, A).
        residual: ``max |Q_hat - B_hat^pi Q_hat + alpha * penalty|`` at the returned Q_hat;
            the distance to the exact stationary point is at most ``residual / (1 - gamma)``.
        iterations: Newton steps taken (plus any fallback proximal steps).
        alpha, temperature: the inputs.
    """

    q: np.ndarray
    v: np.ndarray
    mu: np.ndarray
    penalty: np.ndarray
    residual: float
    iterations: int
    alpha: float
    temperature: float


def cql_h_residual(
    emp: EmpiricalMDP, pi: np.ndarray, q: np.ndarray, alpha: float, temperature: float = 1.0
) -> np.ndarray:
    """``F(Q) = Q - B_hat^pi Q + alpha (softmax(Q/tau)/pi_beta_hat - 1)`` (penalty on seen pairs).

    The CQL(H) stationarity equation is ``F(Q) = 0``. Shapes: q, pi (S, A) -> (S, A).
    """
    q = _check_table(q, (emp.n_states, emp.n_actions), "q")
    return q - bellman(emp.mdp, q, pi) + alpha * cql_h_penalty(emp, q, temperature)


@dataclass(frozen=True)
class _Resolvent:
    """``K = (I + (c/tau) diag(1/b)(diag p - p p^T))^{-1}`` per state, in closed form; c = alpha.

    With ``x = (c/tau) p/b`` the matrix is ``diag(1 + x) - u p^T`` (``u = (c/tau) p/b``), so by
    Sherman-Morrison

        K[a, a2] = delta(a, a2)/(1 + x_a) + (x_a/(1 + x_a)) (p_a2/(1 + x_a2)) / den,
        den      = 1 - sum_a p_a x_a/(1 + x_a) = sum_a p_a/(1 + x_a)   (as sum p = 1),

    a sum of non-negative terms with rows summing to one: K is a stochastic matrix. Computing
    ``den`` as ``sum p/(1 + x)`` avoids cancellation. States without data (p = 0) get K = I.
    """

    x: np.ndarray  # (S, A)
    p: np.ndarray  # (S, A)
    den: np.ndarray  # (S,)

    @classmethod
    def at(cls, emp: EmpiricalMDP, q: np.ndarray, alpha: float, temperature: float) -> _Resolvent:
        p = masked_softmax(q, emp.seen, temperature)
        inv_b = np.divide(1.0, emp.pi_beta, out=np.zeros_like(p), where=emp.seen)
        x = alpha / temperature * p * inv_b
        return cls(x=x, p=p, den=np.sum(p / (1.0 + x), axis=1))

    def _w(self, z: np.ndarray) -> np.ndarray:
        num = np.sum(self.p / (1.0 + self.x) * z, axis=1)
        return np.divide(num, self.den, out=np.zeros_like(num), where=self.den > 0)

    def apply(self, z: np.ndarray) -> np.ndarray:
        """``(K z)(s, .) = K_s z(s, .)``; (S, A) -> (S, A)."""
        return (z + self.x * self._w(z)[:, None]) / (1.0 + self.x)

    def left(self, pi: np.ndarray) -> np.ndarray:
        """``(pi K)(s, .) = pi(s, .) K_s``, a policy again since K_s is stochastic; (S, A) -> (S, A)."""
        c = np.sum(pi * self.x / (1.0 + self.x), axis=1)
        c = np.divide(c, self.den, out=np.zeros_like(c), where=self.den > 0)
        out = (pi + c[:, None] * self.p) / (1.0 + self.x)
        # Rows sum to one up to rounding; renormalise so the policy check sees exact rows.
        return out / out.sum(axis=1, keepdims=True)


def cql_h_argmin(
    emp: EmpiricalMDP,
    target: np.ndarray,
    alpha: float,
    temperature: float = 1.0,
    q0: np.ndarray | None = None,
    tol: float = 1e-13,
    max_iter: int = 100,
) -> np.ndarray:
    """Exact minimiser of the per-iteration CQL(H) objective :func:`cql_h_objective`.

    Separable over states. At a state s in D, with ``b = pi_beta_hat(.|s)`` and
    ``p = softmax(Q(s,.)/tau)`` over A_D(s), the objective (times N/n(s)) is

        phi_s(Q) = 1/2 sum_a b_a (Q_a - y_a)^2 + alpha (tau lse(Q/tau) - sum_a b_a Q_a),
        grad     = b (Q - y) + alpha (p - b),
        Hessian  = diag(b) + (alpha/tau) (diag(p) - p p^T)   (positive definite on A_D(s)),

    so the minimiser is the unique root of ``g(Q) = Q - y + alpha (p/b - 1)`` (= grad/b).
    Newton's method on g: the step ``-K g`` uses the closed-form stochastic inverse K of
    ``dg/dQ`` (:class:`_Resolvent`), and Armijo backtracking on ``|g_s|_2^2`` per state makes it
    globally convergent (``|K|_inf = 1`` bounds the inverse Jacobian). Backtracking on phi_s
    itself would stall near the minimum, where phi_s changes by less than its rounding error.
    Unseen pairs and states not in D have a flat objective; they take ``y`` (the empirical
    backup, as in :func:`cql_iterate`). Stops when ``max |g| <= tol max(1, |Q|)`` or at the
    rounding floor of g. Shapes: target (S, A) -> (S, A).
    """
    alpha = _check_alpha(alpha)
    temperature = _check_temperature(temperature)
    S, A = emp.n_states, emp.n_actions
    y = _check_table(target, (S, A), "target")
    if alpha == 0 or not emp.seen.any():
        return y.copy()
    seen = emp.seen
    inv_b = np.divide(1.0, emp.pi_beta, out=np.zeros_like(emp.pi_beta), where=seen)
    q = y.copy() if q0 is None else _check_table(q0, (S, A), "q0").copy()
    q = np.where(seen, q, y)

    def residual(x: np.ndarray) -> np.ndarray:
        p = masked_softmax(x, seen, temperature)
        return np.where(seen, x - y + alpha * (p * inv_b - 1.0), 0.0)

    g = residual(q)
    for _ in range(max_iter):
        K = _Resolvent.at(emp, q, alpha, temperature)
        scale = max(1.0, float(np.max(np.abs(q))))
        if np.max(np.abs(g)) <= max(tol * scale, _round_off(q, 0.0, K.x)):
            break
        step = -K.apply(g)
        merit = np.sum(g**2, axis=1)
        t = np.ones(S)
        active = merit > 0
        for _ in range(60):
            g_new = residual(q + t[:, None] * step)
            bad = active & (np.sum(g_new**2, axis=1) > (1.0 - 2e-4 * t) * merit)
            if not bad.any():
                break
            t = np.where(bad, t / 2, t)
        if bad.any():
            # Rounding has the last word on some state: keep the states that made progress.
            t = np.where(bad, 0.0, t)
            if not np.any(t[active] > 0):
                break
        q = q + t[:, None] * step
        g = residual(q)
    return np.where(seen, q, y)


def cql_h_evaluate(
    emp: EmpiricalMDP,
    pi: np.ndarray,
    alpha: float,
    temperature: float = 1.0,
    q0: np.ndarray | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> CQLHResult:
    """Stationary point of CQL(H) policy evaluation (Eq. 4 with the backup ``B_hat^pi``).

    Solves, for all pairs,

        Q = B_hat^pi Q - alpha (softmax(Q/tau)(a|s) / pi_beta_hat(a|s) - 1)   on pairs seen in D,
        Q = B_hat^pi Q                                                        elsewhere,

    the fixed point of "Q_{k+1} = argmin of :func:`cql_h_objective` with target B_hat^pi Q_k"
    (gradient of Eq. 4 set to zero; the log-sum-exp is Eq. 3's max over mu with an entropy
    regulariser, and its gradient is the softmax). Equivalently, the result is the CQL(2) fixed
    point (:func:`cql_evaluate`, ``variant="cql2"``) with ``mu = result.mu``.

    Support. The log-sum-exp runs over A_D(s), the actions taken at s in D. Over *all* actions, an
    action never taken at s would feel the gradient ``alpha d(s) softmax(a|s) > 0`` with no TD
    term to balance it: the infimum sends Q(s, a) to -inf and no minimiser exists. Restricting to
    A_D(s) is that limit for every seen pair (softmax(a|s) -> 0 at those actions) and leaves the
    unseen pairs to the empirical MDP's pessimistic convention. With full coverage the two agree.

    Existence, uniqueness, convergence. Let ``G_s(x) = x + alpha (softmax(x/tau)/b - 1)`` on
    R^{A_D(s)}. Its Jacobian ``I + (alpha/tau) diag(1/b)(diag p - p p^T)`` has a stochastic
    inverse K_s (:class:`_Resolvent`), so G_s^{-1} (the per-iteration argmin,
    :func:`cql_h_argmin`) is 1-Lipschitz in the sup norm and the exact per-iteration update
    ``G^{-1} o B_hat^pi`` is a gamma-contraction: the stationary point exists, is unique, and
    is reached from any start, for every alpha >= 0, tau > 0 and pi_beta_hat. (The explicit update
    ``Q <- B Q - alpha (p/b - 1)`` is *not* a contraction when ``alpha/(tau b)`` is large.)

    Method: Newton's method on ``F(Q) = 0`` (:func:`cql_h_residual`), globalised by Armijo
    backtracking on ``|F|_2^2``. The Newton system ``(I + L - gamma P^pi) dQ = -F`` (L the
    block-diagonal softmax term) reduces to |S| unknowns: with ``w = sum_a pi dQ``,

        dQ = K (-F + gamma P w),   w = (I - gamma P_{pi K})^{-1} (pi K)(-F),

    i.e. ``dQ = K solve_discounted(mdp_hat, pi K, -F)`` where ``pi K`` is a policy (K stochastic).
    Hence also ``|J^{-1}|_inf <= 1/(1 - gamma)``. If a line search fails, one exact
    per-iteration step (a guaranteed contraction) is taken instead. Starts at ``q0`` or at one
    exact per-iteration step from the empirical ``Q_hat^pi`` (the alpha = 0 solution).

    Accuracy: along the segment between Q and the solution Q*, the averaged Jacobian has the
    same structure, so ``|Q - Q*|_inf <= |F(Q)|_inf / (1 - gamma)``: the reported residual bounds
    the error of the table.

    Args:
        emp: the empirical MDP of D.
        pi: policy whose backup is used, (S, A); no support condition (mu is the softmax).
        alpha: penalty weight, >= 0.
        temperature: tau > 0 of the log-sum-exp (``tau log sum exp(Q/tau)``).
        q0: starting point, (S, A).
        tol: stop when ``max |F(Q)| <= tol`` (or at the rounding floor of F, if that is higher:
            ``eps |Q| |dF/dQ|``, which matters only for extreme ``alpha/(tau pi_beta_hat)``).
        max_iter: Newton steps before giving up with :class:`RuntimeError`.
    """
    alpha = _check_alpha(alpha)
    temperature = _check_temperature(temperature)
    S, A = emp.n_states, emp.n_actions
    pi = validate_policy(pi, S, A, "pi")
    if q0 is not None:
        q0 = _check_table(q0, (S, A), "q0")
    # alpha = 0 is plain policy evaluation: solved exactly, whatever the start.
    if q0 is not None and alpha > 0:
        q = q0.copy()
    else:
        q = policy_evaluation(emp.mdp, pi)
        if alpha > 0:
            # One exact per-iteration step from Q_hat^pi (where B_hat^pi Q = Q): it already puts
            # each state's softmax in the right place, which matters when alpha/tau is large.
            q = cql_h_argmin(emp, q, alpha, temperature)

    def resid(x: np.ndarray) -> np.ndarray:
        return cql_h_residual(emp, pi, x, alpha, temperature)

    F = resid(q)
    res = float(np.max(np.abs(F)))
    iterations = 0
    if alpha > 0 and res > tol:
        for _ in range(max_iter):
            iterations += 1
            K = _Resolvent.at(emp, q, alpha, temperature)
            dq = K.apply(solve_discounted(emp.mdp, K.left(pi), -F))
            merit = float(np.sum(F**2))
            t = 1.0
            accepted = False
            while t > 1e-12:
                F_new = resid(q + t * dq)
                # Newton directions descend |F|^2 with slope -2 |F|^2 at t = 0 (Armijo, c = 1e-4).
                if float(np.sum(F_new**2)) <= (1.0 - 2e-4 * t) * merit:
                    accepted = True
                    break
                t /= 2
            if accepted:
                q_next = q + t * dq
            else:
                q_next = cql_h_argmin(emp, bellman(emp.mdp, q, pi), alpha, temperature, q0=q)
            F_next = resid(q_next)
            res_next = float(np.max(np.abs(F_next)))
            if not accepted and res_next >= res:
                break  # no progress left: q is as good as the arithmetic allows
            q, F, res = q_next, F_next, res_next
            if res <= tol:
                break
        floor = _round_off(q, emp.gamma, _Resolvent.at(emp, q, alpha, temperature).x)
        if res > max(tol, floor):
            raise RuntimeError(
                f"CQL(H) Newton did not converge: max |F| = {res:.3g} > tol = {tol:.3g} after "
                f"{iterations} steps (alpha = {alpha}, temperature = {temperature})"
            )
    mu = masked_softmax(q, emp.seen, temperature)
    return CQLHResult(
        q=q,
        v=state_values(q, pi),
        mu=mu,
        penalty=cql_h_penalty(emp, q, temperature),
        residual=res,
        iterations=iterations,
        alpha=alpha,
        temperature=temperature,
    )


def _round_off(q: np.ndarray, gamma: float, x: np.ndarray) -> float:
    # F cannot be evaluated more accurately than (rounding error of Q) x |dF/dQ|_inf, and
    # |dF/dQ|_inf <= 1 + gamma + 2 max x (x = alpha p/(tau b)): with alpha/(tau pi_beta_hat)
    # large that floor can exceed a fixed tolerance.
    jac_norm = 1.0 + gamma + 2.0 * float(np.max(x, initial=0.0))
    return 64 * np.finfo(float).eps * (1.0 + float(np.max(np.abs(q), initial=0.0))) * jac_norm


@dataclass(frozen=True, eq=False)
class CQLHIterates:
    """Iterates of the exact per-iteration CQL(H) update; ``q`` has shape (K + 1, S, A)."""

    q: np.ndarray
    alpha: float
    temperature: float


def cql_h_iterate(
    emp: EmpiricalMDP,
    pi: np.ndarray,
    alpha: float,
    n_iters: int,
    temperature: float = 1.0,
    q0: np.ndarray | None = None,
) -> CQLHIterates:
    """``Q_{k+1} = argmin_Q cql_h_objective(Q; target = B_hat^pi Q_k)`` applied ``n_iters`` times.

    A gamma-contraction in the sup norm (see :func:`cql_h_evaluate`), converging to the
    stationary point from any ``q0`` (default 0). Returns (n_iters + 1, S, A).
    """
    alpha = _check_alpha(alpha)
    temperature = _check_temperature(temperature)
    n_iters = _check_n_iters(n_iters)
    S, A = emp.n_states, emp.n_actions
    pi = validate_policy(pi, S, A, "pi")
    q = np.zeros((S, A)) if q0 is None else _check_table(q0, (S, A), "q0")
    out = np.empty((n_iters + 1, S, A))
    out[0] = q
    for k in range(n_iters):
        q = cql_h_argmin(emp, bellman(emp.mdp, q, pi), alpha, temperature, q0=q)
        out[k + 1] = q
    return CQLHIterates(q=out, alpha=alpha, temperature=temperature)


# --- tabular CQL control --------------------------------------------------------------------


def softmax_policy(q: np.ndarray, temperature: float) -> np.ndarray:
    """``pi(a|s) ∝ exp(Q(s, a)/temperature)`` over all actions; (S, A) -> (S, A)."""
    temperature = _check_temperature(temperature)
    return masked_softmax(q, np.ones_like(q, dtype=bool), temperature)


@dataclass(frozen=True, eq=False)
class CQLControlResult:
    """Iterates of the tabular CQL control loop, all aligned on k = 0..K.

    Attributes:
        policies: pi_k, (K + 1, S, A); ``policies[0]`` is the start.
        q_hat: CQL(H) Q_hat of pi_k in the empirical MDP, (K + 1, S, A).
        q_empirical: exact Q_hat^{pi_k} of the empirical MDP (no penalty), (K + 1, S, A).
        q_true: exact Q^{pi_k} of the true MDP if one was given, else None, (K + 1, S, A).
        residuals: CQL(H) stationarity residual of each q_hat, (K + 1,).
        alpha, temperature: CQL(H) inputs; improvement, policy_temperature, step_size: the
            policy-improvement rule.
    """

    policies: np.ndarray
    q_hat: np.ndarray
    q_empirical: np.ndarray
    q_true: np.ndarray | None
    residuals: np.ndarray
    alpha: float
    temperature: float
    improvement: Improvement
    policy_temperature: float
    step_size: float


def cql_control(
    emp: EmpiricalMDP,
    alpha: float,
    n_iters: int,
    improvement: Improvement = "greedy",
    temperature: float = 1.0,
    policy_temperature: float | None = None,
    step_size: float = 1.0,
    pi0: np.ndarray | None = None,
    mdp: TabularMDP | None = None,
) -> CQLControlResult:
    """Tabular CQL: CQL(H) evaluation alternated with policy improvement (paper Sec. 3.2).

    For k = 0..K: ``Q_hat_k`` = :func:`cql_h_evaluate` of pi_k (exact stationary point), and
    for k < K

        greedy: pi' = argmax_a Q_hat_k(s, a)                       (lowest index on ties)
        soft:   pi'(a|s) ∝ exp(Q_hat_k(s, a) / policy_temperature)
        pi_{k+1} = (1 - step_size) pi_k + step_size pi'            (step_size = 1: replace)

    ``alpha = 0`` is naive offline policy iteration in the empirical MDP (no conservatism); the
    exact ``Q_hat^{pi_k}`` of the empirical MDP and, if ``mdp`` is given, the true ``Q^{pi_k}``
    are returned alongside for Theorems 3.3, 3.4 (gap expansion) and 3.6 (safe improvement).

    Which improvement gives a lower bound. At its stationary point CQL(H) is CQL(2) with
    ``mu = softmax(Q_hat/tau)``, so ``V_hat = V_hat^pi - alpha (I - gamma P_hat_pi)^{-1}
    E_pi[mu/pi_beta_hat - 1]``. The correction is a penalty when pi is close to mu -- soft
    improvement with ``policy_temperature = temperature``, the setting of Theorem 3.3, makes
    ``pi = mu`` at convergence under full coverage. A greedy pi that picks the behaviour's
    common action makes ``E_pi[mu/pi_beta_hat - 1]`` negative there, and V_hat can then exceed
    even the empirical V_hat^pi (tests/theory/test_cql.py shows both on ``chain_mdp``).

    Args:
        emp: the empirical MDP of D.
        alpha: CQL(H) penalty weight, >= 0.
        n_iters: K, the number of improvement steps.
        improvement: "greedy" or "soft".
        temperature: tau of the CQL(H) log-sum-exp.
        policy_temperature: temperature of the soft improvement; defaults to ``temperature``.
        step_size: mixing weight in (0, 1].
        pi0: the start policy; defaults to ``pi_beta_hat`` (uniform on states not in D).
        mdp: the true MDP, to report ``q_true``; must have the same S, A.
    """
    alpha = _check_alpha(alpha)
    temperature = _check_temperature(temperature)
    policy_temperature = _check_temperature(
        temperature if policy_temperature is None else policy_temperature, "policy_temperature"
    )
    n_iters = _check_n_iters(n_iters)
    if improvement not in ("greedy", "soft"):
        raise ValueError(f"improvement must be 'greedy' or 'soft', got {improvement!r}")
    step_size = float(step_size)
    if not (np.isfinite(step_size) and 0.0 < step_size <= 1.0):
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    S, A = emp.n_states, emp.n_actions
    if mdp is not None and (mdp.n_states, mdp.n_actions) != (S, A):
        raise InvalidMDPError(
            f"the true mdp has (S, A) = ({mdp.n_states}, {mdp.n_actions}), the dataset ({S}, {A})"
        )
    pi = emp.pi_beta.copy() if pi0 is None else validate_policy(pi0, S, A, "pi0")
    policies, q_hats, q_emps, q_trues, residuals = [], [], [], [], []
    q_prev: np.ndarray | None = None
    for k in range(n_iters + 1):
        res = cql_h_evaluate(emp, pi, alpha, temperature, q0=q_prev)
        policies.append(pi)
        q_hats.append(res.q)
        residuals.append(res.residual)
        q_emps.append(policy_evaluation(emp.mdp, pi))
        if mdp is not None:
            q_trues.append(policy_evaluation(mdp, pi))
        q_prev = res.q
        if k < n_iters:
            new = (
                greedy_policy(res.q)
                if improvement == "greedy"
                else softmax_policy(res.q, policy_temperature)
            )
            pi = (1.0 - step_size) * pi + step_size * new
    return CQLControlResult(
        policies=np.stack(policies),
        q_hat=np.stack(q_hats),
        q_empirical=np.stack(q_emps),
        q_true=np.stack(q_trues) if mdp is not None else None,
        residuals=np.asarray(residuals),
        alpha=alpha,
        temperature=temperature,
        improvement=improvement,
        policy_temperature=policy_temperature,
        step_size=step_size,
    )


# --- Cal-QL: the calibrated push-down --------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CalQLEvaluation:
    """The fixed point of Cal-QL policy evaluation (CQL(2) with a calibrated push-down).

    Attributes:
        q: Q_hat, (S, A).
        v: V_hat(s) = sum_a pi(a|s) Q_hat(s, a), (S,).
        reference: the reference values the push-down stops at, (S, A).
        pushed_down: pairs where ``Q_hat > reference`` (the full CQL(2) penalty applies), (S, A).
        at_reference: pairs held exactly at the reference (the kink of the max), (S, A).
        lifted: seen pairs below the reference (only the data term acts: ``+alpha``), (S, A).
        alpha: the penalty weight.
    """

    q: np.ndarray
    v: np.ndarray
    reference: np.ndarray
    pushed_down: np.ndarray
    at_reference: np.ndarray
    lifted: np.ndarray
    alpha: float


def behaviour_reference(emp: EmpiricalMDP) -> np.ndarray:
    """Cal-QL's default reference: V^{pi_beta_hat}(s) of the empirical MDP for every action,
    (S, A), the value a dataset's Monte-Carlo returns-to-go estimate on average at s."""
    v = state_values(policy_evaluation(emp.mdp, emp.pi_beta), emp.pi_beta)
    return np.repeat(v[:, None], emp.n_actions, axis=1)


def cal_ql_step(
    emp: EmpiricalMDP, target: np.ndarray, alpha: float, mu: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """The exact argmin of one Cal-QL iteration given the backed-up ``target`` = B_hat^pi Q_k.

    The objective (Nakamoto et al. 2023, Eq. 5.1, in the weights of this module) is
    ``alpha (E_{s~D, a~mu}[max(Q, ref)] - E_{s,a~D}[Q]) + 1/2 E_{s,a~D}[(Q - target)^2]``,
    separable over pairs. At a seen pair with ``rho = mu/pi_beta_hat`` its per-pair part is
    ``alpha rho max(q, ref) - alpha q + (q - target)^2 / 2`` (times n(s, a)/N), convex with
    the minimiser

        median(target - alpha (rho - 1), ref, target + alpha):

    above the reference the whole CQL(2) penalty acts, below it only the data term's
    ``+alpha``, and in between the kink holds q at ref. Unseen pairs keep the target.
    """
    penalty = cql_penalty(emp, mu, "cql2")
    candidates = np.stack([target - alpha * penalty, reference, target + alpha])
    return np.where(emp.seen, np.median(candidates, axis=0), target)


def cal_ql_evaluate(
    emp: EmpiricalMDP,
    pi: np.ndarray,
    alpha: float,
    mu: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> CalQLEvaluation:
    """Exact fixed point of ``Q = cal_ql_step(B_hat^pi Q)`` (see :func:`cal_ql_step`).

    The step is the median of three gamma-contractions of Q, so it is a gamma-contraction in
    the sup norm and the fixed point is unique. It is piecewise linear: value iteration finds
    which pairs are pushed down, held at the reference or lifted, then one linear solve per
    guess gives the fixed point exactly, and the guess is checked against it (repeated until
    it is consistent).

    Args:
        emp, pi, alpha, mu: as in :func:`cql_evaluate` (mu defaults to pi).
        reference: (S,) or (S, A); default :func:`behaviour_reference`. With a reference of
            -inf everywhere the fixed point is CQL(2)'s.
    """
    alpha = _check_alpha(alpha)
    S, A = emp.n_states, emp.n_actions
    pi = validate_policy(pi, S, A, "pi")
    mu = pi if mu is None else mu
    ref = behaviour_reference(emp) if reference is None else np.asarray(reference, dtype=float)
    if ref.shape == (S,):
        ref = np.repeat(ref[:, None], A, axis=1)
    if ref.shape != (S, A) or np.isnan(ref).any():
        raise ValueError(f"reference must be (S,) or (S, A) without NaN, got shape {ref.shape}")
    penalty = cql_penalty(emp, mu, "cql2")
    gamma = emp.gamma
    P = emp.mdp.P_flat
    P = P.toarray() if hasattr(P, "toarray") else np.asarray(P)
    # (S*A, S*A): Q -> gamma T_hat (pi . Q).
    Pi = np.zeros((S, S * A))
    Pi[np.repeat(np.arange(S), A), np.arange(S * A)] = pi.ravel()
    M = gamma * P @ Pi
    q: np.ndarray = np.zeros((S, A))
    for _ in range(int(20 / max(1e-3, 1.0 - gamma)) + 20):
        q = cal_ql_step(emp, bellman(emp.mdp, q, pi), alpha, mu, ref)
    for _ in range(100):
        target = bellman(emp.mdp, q, pi)
        down = emp.seen & (target - alpha * penalty > ref)
        up = emp.seen & (target + alpha < ref)
        hold = emp.seen & ~down & ~up
        c = np.where(down, emp.R - alpha * penalty, np.where(up, emp.R + alpha, emp.R))
        c = np.where(hold, ref, c)
        rows = np.where(hold.ravel()[:, None], 0.0, M)
        exact = np.linalg.solve(np.eye(S * A) - rows, c.ravel()).reshape(S, A)
        if np.allclose(
            cal_ql_step(emp, bellman(emp.mdp, exact, pi), alpha, mu, ref),
            exact,
            rtol=0.0,
            atol=1e-10 * (1.0 + np.max(np.abs(exact))),
        ):
            return CalQLEvaluation(
                q=exact,
                v=state_values(exact, pi),
                reference=ref,
                pushed_down=down,
                at_reference=hold,
                lifted=up,
                alpha=alpha,
            )
        q = exact
    raise RuntimeError("cal_ql_evaluate: the active set did not settle in 100 solves")


# ------------------------------------------------------------------ linear features


@dataclass(frozen=True, eq=False)
class LinearCQLEvaluation:
    """The fixed point of CQL(1) policy evaluation with a linear critic ``Q = Φ w``.

    Attributes:
        q: Q_hat = Φ w, (S, A), on every pair (the features extrapolate to unseen ones).
        weights: w, (k,).
        q_td: the linear TD (LSTD) fixed point with the same features and no penalty, (S, A).
        direction: u = Φ A^{-1} Φ^T D (μ/π_beta_hat), (S, A), so that ``q = q_td - alpha u``.
        alpha: the penalty weight.
    """

    q: np.ndarray
    weights: np.ndarray
    q_td: np.ndarray
    direction: np.ndarray
    alpha: float

    def lower_bound(self, tol: float = 1e-10) -> np.ndarray:
        """(S, A) bool: where Q_hat <= Q_td, which, for every alpha > 0, is where u >= 0."""
        scale = tol * (1.0 + np.abs(self.q_td).max())
        return self.q <= self.q_td + scale


def _pair_transitions(emp: EmpiricalMDP, pi: np.ndarray) -> np.ndarray:
    """P^pi on state-action pairs, dense (SA, SA): ``P[s, a, s'] pi[s', a']`` (small tables)."""
    S, A = emp.n_states, emp.n_actions
    return np.einsum("sat,tb->satb", emp.mdp.P, pi).reshape(S * A, S * A)


def linear_cql_evaluate(
    emp: EmpiricalMDP,
    pi: np.ndarray,
    features: np.ndarray,
    alpha: float,
    mu: np.ndarray | None = None,
) -> LinearCQLEvaluation:
    """Exact fixed point of CQL(1) (Eq. 1) when the critic is linear, ``Q(s, a) = φ(s, a)ᵀ w``
    (the linear-function variant of Theorem 3.1, the paper's appendix).

    The per-iteration objective ``alpha E_{s~D, a~mu}[Q] + 1/2 E_D[(Q - B_hat^pi Q_k)^2]`` over
    w has, with ``D = diag(n(s, a))``, the zero-gradient condition
    ``Φᵀ D Φ w = Φᵀ D (B_hat^pi Q_k - alpha mu/pi_beta_hat)``: the tabular update projected
    onto the features, ``Q_{k+1} = Π_D (B_hat^pi Q_k - alpha mu/pi_beta_hat)``. Its fixed
    point solves ``A w = Φᵀ D (r_hat - alpha m)`` with ``A = Φᵀ D (Φ - gamma P^pi Φ)`` and
    ``m = mu/pi_beta_hat``, so that

        Q_hat = Q_td - alpha u,    u = Φ A^{-1} Φᵀ D m,

    where Q_td is the linear TD fixed point (alpha = 0). Q_hat is below Q_td at a pair for
    every alpha > 0 exactly where ``u >= 0``: that is the condition on Φ. For tabular
    features (Φ = I, every pair in D), ``u = (I - gamma P_hat^pi)^{-1} m >= 0`` always, which
    is Theorem 3.1 inside the empirical MDP; other features can make u negative somewhere,
    and there the penalised estimate rises above Q_td, the more so the larger alpha.

    Args:
        emp: the empirical MDP of D.
        pi: the policy evaluated, (S, A).
        features: Φ, (S, A, k); linearly independent on the pairs of D.
        alpha: penalty weight, >= 0.
        mu: the penalised distribution, (S, A), supported by D; defaults to ``pi``.

    Raises ValueError when Φ is not of rank k on the pairs of D, or when the projected Bellman
    equation has no unique solution (A singular: off-policy linear TD can be ill-posed).
    """
    alpha = _check_alpha(alpha)
    pi = validate_policy(pi, emp.n_states, emp.n_actions, "pi")
    S, A = emp.n_states, emp.n_actions
    phi = np.asarray(features, dtype=np.float64)
    if phi.ndim != 3 or phi.shape[:2] != (S, A) or phi.shape[2] < 1:
        raise ValueError(f"features must be (S, A, k) = ({S}, {A}, k), got {phi.shape}")
    if not np.all(np.isfinite(phi)):
        raise ValueError("features must be finite")
    k = phi.shape[2]
    flat = phi.reshape(S * A, k)
    weight = emp.counts.reshape(S * A).astype(np.float64)
    rank = np.linalg.matrix_rank(flat[weight > 0])
    if rank < k:
        raise ValueError(
            f"the {k} features are linearly dependent on the pairs of D (rank {rank}): the "
            "least-squares step has no unique solution; drop features or add data"
        )
    m = cql_penalty(emp, pi if mu is None else mu, "cql1").reshape(S * A)
    weighted = flat.T * weight  # Φᵀ D, (k, SA)
    a_matrix = weighted @ (flat - emp.mdp.gamma * _pair_transitions(emp, pi) @ flat)
    if np.linalg.cond(a_matrix) > 1e12:
        raise ValueError(
            "the projected Bellman equation Φᵀ D (I - γ P^π) Φ w = b has no unique solution for "
            "these features and this policy (its matrix is singular)"
        )
    r = emp.R.reshape(S * A)
    w_td = np.linalg.solve(a_matrix, weighted @ r)
    w_u = np.linalg.solve(a_matrix, weighted @ m)  # u = Φ w_u
    u = flat @ w_u
    w = w_td - alpha * w_u
    return LinearCQLEvaluation(
        q=(flat @ w).reshape(S, A),
        weights=w,
        q_td=(flat @ w_td).reshape(S, A),
        direction=u.reshape(S, A),
        alpha=alpha,
    )


def linear_cql_iterate(
    emp: EmpiricalMDP,
    pi: np.ndarray,
    features: np.ndarray,
    alpha: float,
    n_iters: int,
    w0: np.ndarray | None = None,
    mu: np.ndarray | None = None,
) -> np.ndarray:
    """Weights of ``n_iters`` steps of linear CQL(1), each the exact minimiser over w of the
    per-iteration objective (a weighted least-squares fit of ``B_hat^pi Q_k - alpha m``);
    (n_iters + 1, k), from ``w0`` (default 0). Converges to :func:`linear_cql_evaluate`'s
    weights when the projected operator is a contraction (for instance on-policy data)."""
    alpha = _check_alpha(alpha)
    n_iters = _check_n_iters(n_iters)
    pi = validate_policy(pi, emp.n_states, emp.n_actions, "pi")
    S, A = emp.n_states, emp.n_actions
    flat = np.asarray(features, dtype=np.float64).reshape(S * A, -1)
    weight = emp.counts.reshape(S * A).astype(np.float64)
    m = cql_penalty(emp, pi if mu is None else mu, "cql1").reshape(S * A)
    weighted = flat.T * weight  # Φᵀ D
    gram = weighted @ flat
    out = np.zeros((n_iters + 1, flat.shape[1]))
    if w0 is not None:
        out[0] = w0
    for i in range(n_iters):
        q = (flat @ out[i]).reshape(S, A)
        target = bellman(emp.mdp, q, pi).reshape(S * A) - alpha * m
        out[i + 1] = np.linalg.solve(gram, weighted @ target)
    return out
