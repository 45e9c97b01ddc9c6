"""The lower-bound theorems of CQL as computable statements.

Kumar, Zhou, Tucker, Levine, "Conservative Q-Learning for Offline Reinforcement Learning",
arXiv 2006.04779, Section 3 and Appendix C/D. Each theorem is a function that takes an empirical
MDP (:class:`theory.data.EmpiricalMDP`), the *true* MDP the data came from, and the theorem's
inputs, and returns a frozen dataclass with every term of the statement, the alpha threshold the
statement asks for, its conditions, and per-state (or per-pair) booleans for the bound and for its
conclusion:

* :func:`concentration_constants`  C_r, C_T (Hoeffding, Weissman et al. L1, union bound) and the
  Bellman sampling term; :func:`concentration_event` checks on an instance whether the
  high-probability event behind every theorem happened.
* :func:`theorem_3_1`  CQL(1) (Eq. 1): pointwise ``Q_hat <= Q^pi`` for alpha large enough.
* :func:`theorem_3_2`  CQL(2) (Eq. 2), mu = pi: ``V_hat <= V^pi`` (value, not pointwise).
* :func:`gap_expansion_step`, :func:`gap_expansion_along_control`  Theorem 3.4 (gap expansion).
* :func:`eq6_policy`, :func:`safe_policy_improvement`  Theorem 3.5's objective (Eq. 6) and
  Theorem 3.6 (zeta-safe policy improvement over pi_beta_hat).

Conventions.

* "s in D" means ``n(s) > 0`` (``emp.seen_states``). Statements "for all s in D" are reported on
  those states only; asking about a state outside D raises ``ValueError``.
* Pairs never seen have ``n(s, a) = 0``: their sampling term ``C/sqrt(n)`` is +inf. A right-hand
  side that picks up an infinite term (through ``(I - gamma P^pi)^{-1}``, i.e. when the pair can
  be reached) is +inf: the bound is vacuous there, never a silent division by zero. Thresholds
  that would need such a term are +inf too.
* The penalties follow :mod:`theory.cql`: zero at pairs not seen in D and on states not in D (no
  data term there). ``D_CQL`` is likewise 0 on states not in D.
* The "true" quantities (Q^pi, V^pi, P^pi in the propagated terms, J(., M)) use the true MDP, as in
  the paper's statements; the CQL estimates are computed in the empirical MDP by
  :mod:`theory.cql`.

What holds always and what holds with probability 1 - delta. Each result has ``guarantees``
(statement -> ``"always"`` or ``"probability >= 1 - delta"``), ``check()`` (raises
``AssertionError`` naming the first "always" statement that fails: the assertion a property
test makes on every example) and ``vacuous`` (True when no alpha, or no amount of this data,
makes the theorem conclude anything: an infinite threshold or zeta; report such examples, do not
count them as confirmations). A "probability >= 1 - delta" statement is false on some datasets
by design; a test asserts it as a failure *rate* over many datasets (at most delta, up to
sampling error), never on one example. :mod:`theory.strategies` draws the examples.

The propagation operator ``(I - gamma P^pi)^{-1}`` is never formed: each propagated term is one
linear solve (:func:`theory.mdp.solve_discounted`), with a reachability pass for infinite entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from theory.cql import CQLControlResult, _check_alpha, cql_evaluate, masked_softmax
from theory.data import EmpiricalMDP
from theory.mdp import (
    InvalidMDPError,
    Matrix,
    TabularMDP,
    bellman,
    policy_evaluation,
    policy_transition,
    solve_discounted,
    state_values,
    validate_policy,
)

# Comparisons of computed quantities allow this much round-off, relative to R_max/(1-gamma).
REL_TOL = 1e-9

ALWAYS = "always"
WITH_PROBABILITY = "probability >= 1 - delta"


def _require(statements: Sequence[tuple[str, bool]], theorem: str) -> None:
    """Raise ``AssertionError`` naming the first (statement, ok) pair that is not ok."""
    for statement, ok in statements:
        if not ok:
            raise AssertionError(f"{theorem}: '{statement}' is guaranteed always but fails here")


def _round_off(*arrays: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)) for a in arrays)
    return 1e-8 * (1.0 + scale)


# --- validation ----------------------------------------------------------------------------


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must be a probability in (0, 1), got {delta}")
    return delta


def _check_r_max(r_max: float) -> float:
    r_max = float(r_max)
    if not (np.isfinite(r_max) and r_max > 0):
        raise ValueError(f"r_max must be a finite number > 0, got {r_max}")
    return r_max


def _check_pair(emp: EmpiricalMDP, true_mdp: TabularMDP, r_max: float) -> None:
    """The dataset and the true MDP describe the same (S, A, gamma), rewards within R_max."""
    if (true_mdp.n_states, true_mdp.n_actions) != (emp.n_states, emp.n_actions):
        raise InvalidMDPError(
            f"the true MDP has (S, A) = ({true_mdp.n_states}, {true_mdp.n_actions}) but the "
            f"dataset has ({emp.n_states}, {emp.n_actions})"
        )
    if true_mdp.gamma != emp.gamma:
        raise InvalidMDPError(
            f"the true MDP has gamma = {true_mdp.gamma} but the empirical MDP has {emp.gamma}"
        )
    slack = 1e-12 * r_max
    for name, R, mask in (
        ("true R", true_mdp.R, np.ones_like(emp.seen)),
        ("r_hat", emp.R, emp.seen),
    ):
        bad = (np.abs(R) > r_max + slack) & mask
        if bad.any():
            s, a = (int(x) for x in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}[{s}, {a}] = {R[s, a]:.6g} exceeds r_max = {r_max:.6g}: the theorems "
                "assume every reward lies in [-r_max, r_max]"
            )


def _checked_states(emp: EmpiricalMDP, states: Sequence[int] | None) -> np.ndarray:
    """Boolean mask of the states a "for all s in D" statement is checked on."""
    if states is None:
        return emp.seen_states.copy()
    mask = np.zeros(emp.n_states, dtype=bool)
    for s in states:
        if int(s) != s or not (0 <= s < emp.n_states):
            raise ValueError(f"state {s} is not an index in [0, {emp.n_states})")
        if not emp.seen_states[int(s)]:
            raise ValueError(
                f"state {int(s)} is not in D (n(s) = 0): the theorem only speaks about states in D"
            )
        mask[int(s)] = True
    return mask


def _require_in(mask: np.ndarray, s: int, what: str) -> None:
    if not (0 <= s < mask.shape[0]):
        raise ValueError(f"state {s} is not an index in [0, {mask.shape[0]})")
    if not mask[s]:
        raise ValueError(f"state {s} is not among the states {what} was checked on (s in D)")


# --- concentration --------------------------------------------------------------------------


def hoeffding_constant(delta_each: float, r_max: float) -> float:
    """``C_r`` with ``P(|r_hat - r| > C_r/sqrt(n)) <= delta_each`` for rewards in [-R_max, R_max].

    Hoeffding (1963): n i.i.d. draws in an interval of width ``2 R_max`` have
    ``P(|mean - E| >= t) <= 2 exp(-2 n t^2 / (2 R_max)^2)``. Setting the right side to
    ``delta_each`` gives ``t = R_max sqrt(2 ln(2/delta_each) / n)``, so
    ``C_r = R_max sqrt(2 ln(2/delta_each))``.
    """
    return float(r_max * np.sqrt(2.0 * np.log(2.0 / delta_each)))


def l1_deviation_constant(delta_each: float, n_outcomes: int) -> float:
    """``C_T`` with ``P(||T_hat - T||_1 > C_T/sqrt(n)) <= delta_each`` over ``n_outcomes`` values.

    Weissman, Ordentlich, Seroussi, Verdu, Weinberger (2003), "Inequalities for the L1 deviation
    of the empirical distribution", Thm 2.1: ``P(||p_hat - p||_1 >= eps) <= (2^m - 2) exp(-n eps^2/2)``
    for m outcomes (their ``phi(pi_P) >= 2``). Setting the right side to ``delta_each``:
    ``C_T = sqrt(2 ln((2^m - 2)/delta_each))``; ``ln(2^m - 2)`` is computed as
    ``m ln 2 + log1p(-2^{1-m})`` so large m does not overflow. With one outcome the empirical
    distribution is exact: ``C_T = 0``.
    """
    if n_outcomes < 1:
        raise ValueError(f"n_outcomes must be >= 1, got {n_outcomes}")
    if n_outcomes == 1:
        return 0.0
    log_count = n_outcomes * np.log(2.0) + np.log1p(-(2.0 ** (1 - n_outcomes)))
    return float(np.sqrt(2.0 * (log_count - np.log(delta_each))))


@dataclass(frozen=True)
class ConcentrationConstants:
    """The constants of the paper's concentration assumption (Sec. 3.1, "sampling error").

    With probability at least ``1 - delta``, simultaneously for every pair with ``n(s, a) >= 1``:

        |r_hat(s, a) - r(s, a)|          <= C_r / sqrt(n(s, a))     (Hoeffding)
        ||T_hat(.|s, a) - T(.|s, a)||_1  <= C_T / sqrt(n(s, a))     (Weissman et al. 2003)

    by a union bound over ``n_pairs`` pairs and the two inequalities, each given
    ``delta_each = delta / (2 n_pairs)``. ``n_pairs`` defaults to |S||A| (a fixed set, so the
    bound does not depend on which pairs the data happened to cover).

    Validity: rewards in [-R_max, R_max] (noise included), and i.i.d. (s, a) draws as in
    :func:`theory.data.sample_dataset`'s default: conditioned on the sequence of (s, a), the
    rewards and next states at a pair are n(s, a) i.i.d. draws, so each inequality holds
    conditionally for every count and hence unconditionally. (For trajectory data the count is a
    stopping time and a further union bound over n would be needed.)

    Attributes:
        delta: total failure probability.
        r_max: the reward bound R_max.
        n_pairs: pairs in the union bound.
        n_next_states: outcomes m of each T(.|s, a) in the L1 bound.
        delta_each: ``delta / (2 n_pairs)``.
        C_r: ``R_max sqrt(2 ln(2/delta_each))``.
        C_T: ``sqrt(2 ln((2^m - 2)/delta_each))`` (0 when m = 1).
    """

    delta: float
    r_max: float
    n_pairs: int
    n_next_states: int
    delta_each: float
    C_r: float
    C_T: float

    def C_rT(self, gamma: float) -> float:
        """The paper's ``C_{r,T,delta}``: ``(1-gamma) C_r / R_max + 2 gamma C_T``.

        Chosen so that the Bellman sampling term reads as in Theorems 3.1/3.2:
        ``(C_r + gamma C_T 2 R_max/(1-gamma)) / sqrt(n) = C_{r,T,delta} R_max / ((1-gamma) sqrt(n))``.
        """
        return (1.0 - gamma) * self.C_r / self.r_max + 2.0 * gamma * self.C_T


def concentration_constants(
    n_states: int,
    n_actions: int,
    delta: float,
    r_max: float,
    *,
    n_pairs: int | None = None,
    n_next_states: int | None = None,
) -> ConcentrationConstants:
    """Instantiate ``C_r`` and ``C_T`` for a failure probability ``delta`` (see the class)."""
    delta = _check_delta(delta)
    r_max = _check_r_max(r_max)
    if n_states < 1 or n_actions < 1:
        raise ValueError(f"need n_states, n_actions >= 1, got {n_states}, {n_actions}")
    K = n_states * n_actions if n_pairs is None else int(n_pairs)
    m = n_states if n_next_states is None else int(n_next_states)
    if K < 1:
        raise ValueError(f"n_pairs must be >= 1, got {K}")
    delta_each = delta / (2 * K)
    return ConcentrationConstants(
        delta=delta,
        r_max=r_max,
        n_pairs=K,
        n_next_states=m,
        delta_each=delta_each,
        C_r=hoeffding_constant(delta_each, r_max),
        C_T=l1_deviation_constant(delta_each, m),
    )


def bellman_sampling_term(
    counts: np.ndarray, constants: ConcentrationConstants, gamma: float
) -> np.ndarray:
    """``e(s, a) = (C_r + gamma C_T 2 R_max/(1-gamma)) / sqrt(n(s, a))``; +inf where n = 0.

    On the concentration event, ``|B_hat^pi Q - B^pi Q|(s, a) <= e(s, a)`` for every Q whose
    ``V = pi . Q`` satisfies ``||V||_inf <= 2 R_max/(1-gamma)``: ``|r_hat - r| <= C_r/sqrt(n)`` and
    ``|gamma (T_hat - T) V| <= gamma ||T_hat - T||_1 ||V||_inf``. Equals
    ``C_{r,T,delta} R_max / ((1-gamma) sqrt(n))`` (the paper's form). Shapes: (S, A) -> (S, A).
    """
    n = np.asarray(counts, dtype=float)
    c = constants.C_r + gamma * constants.C_T * 2.0 * constants.r_max / (1.0 - gamma)
    return np.divide(c, np.sqrt(n), out=np.full(n.shape, np.inf), where=n > 0)


@dataclass(frozen=True, eq=False)
class ConcentrationEvent:
    """Whether the two concentration inequalities held on this dataset (needs the true MDP).

    Attributes:
        reward_error: ``|r_hat - r|`` on seen pairs, 0 elsewhere, (S, A).
        transition_error: ``||T_hat(.|s,a) - T(.|s,a)||_1`` on seen pairs, 0 elsewhere, (S, A).
        reward_ok, transition_ok: the per-pair inequalities (True on unseen pairs), (S, A).
        holds: all of them.
    """

    reward_error: np.ndarray
    transition_error: np.ndarray
    reward_ok: np.ndarray
    transition_ok: np.ndarray
    holds: bool


def concentration_event(
    emp: EmpiricalMDP, true_mdp: TabularMDP, constants: ConcentrationConstants
) -> ConcentrationEvent:
    """Check ``|r_hat - r| <= C_r/sqrt(n)`` and ``||T_hat - T||_1 <= C_T/sqrt(n)`` pair by pair."""
    _check_pair(emp, true_mdp, constants.r_max)
    seen = emp.seen
    n = np.maximum(emp.counts, 1).astype(float)
    r_err = np.where(seen, np.abs(emp.R - true_mdp.R), 0.0)
    diff = sp.csr_array(emp.mdp.P_flat) - sp.csr_array(true_mdp.P_flat)
    t_err = np.asarray(abs(diff).sum(axis=1)).ravel().reshape(emp.n_states, emp.n_actions)
    t_err = np.where(seen, t_err, 0.0)
    slack = REL_TOL
    r_ok = ~seen | (r_err <= constants.C_r / np.sqrt(n) + slack * constants.r_max)
    t_ok = ~seen | (t_err <= constants.C_T / np.sqrt(n) + slack)
    return ConcentrationEvent(
        reward_error=r_err,
        transition_error=t_err,
        reward_ok=r_ok,
        transition_ok=t_ok,
        holds=bool(r_ok.all() and t_ok.all()),
    )


# --- propagation (I - gamma P^pi)^{-1} with infinite entries --------------------------------


def _dense_or_csr(P_pi: Matrix) -> Matrix:
    return sp.csr_array(P_pi) if sp.issparse(P_pi) else np.asarray(P_pi)


def _states_reaching(P_pi: Matrix, target: np.ndarray) -> np.ndarray:
    """States from which ``target`` is reached with positive probability (0 or more steps)."""
    reach = target.astype(bool).copy()
    while True:
        nxt = reach | (np.asarray(P_pi @ reach.astype(float)).ravel() > 0)
        if np.array_equal(nxt, reach):
            return reach
        reach = nxt


def _states_reached(P_pi: Matrix, start: np.ndarray) -> np.ndarray:
    """States reached with positive probability from ``start`` (0 or more steps)."""
    reach = start.astype(bool).copy()
    PT = P_pi.T
    while True:
        nxt = reach | (np.asarray(PT @ reach.astype(float)).ravel() > 0)
        if np.array_equal(nxt, reach):
            return reach
        reach = nxt


def propagate_pairs(mdp: TabularMDP, pi: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``[(I - gamma P^pi)^{-1} x](s, a)`` for x whose entries are finite or +inf; (S, A) -> (S, A).

    ``P^pi[(s,a), (s2,a2)] = T(s2|s,a) pi(a2|s2)`` of ``mdp``. The operator has non-negative
    entries, positive exactly on the pairs reachable from (s, a); so the result is +inf where an
    infinite entry of x is reachable (the pair itself, or via T then pi), and the finite solve
    elsewhere.
    """
    x = np.asarray(x, dtype=float)
    inf = np.isposinf(x)
    finite = solve_discounted(mdp, pi, np.where(inf, 0.0, x))
    if not inf.any():
        return finite
    bad_states = np.asarray(((np.asarray(pi) > 0) & inf).any(axis=1), dtype=bool)
    reaches = _states_reaching(_dense_or_csr(policy_transition(mdp, pi)), bad_states)
    via_next = mdp.expected_next(reaches.astype(float)) > 0
    return np.where(inf | via_next, np.inf, finite)


def propagate_states(mdp: TabularMDP, pi: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``[(I - gamma P_pi)^{-1} x](s)`` on states, entries finite or +inf; (S,) -> (S,).

    Solved as the state values of :func:`propagate_pairs` with ``x`` copied to every action.
    """
    x = np.asarray(x, dtype=float)
    inf = np.isposinf(x)
    xa = np.repeat(np.where(inf, 0.0, x)[:, None], mdp.n_actions, axis=1)
    v = state_values(solve_discounted(mdp, pi, xa), pi)
    if not inf.any():
        return v
    reaches = _states_reaching(_dense_or_csr(policy_transition(mdp, pi)), inf)
    return np.where(reaches, np.inf, v)


def _ratio_threshold(num: np.ndarray, den: np.ndarray) -> float:
    """``max num/den`` over entries, for ``alpha * den >= num``: +inf where den = 0 < num."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    if num.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))
    r = np.where(np.isposinf(num), np.inf, r)
    return float(max(0.0, np.max(r)))


def d_cql(emp: EmpiricalMDP, pi: np.ndarray) -> np.ndarray:
    """``D_CQL(pi, pi_beta_hat)(s) = sum_a pi(a|s) (pi(a|s)/pi_beta_hat(a|s) - 1)`` on states in D.

    Equals ``sum_a (pi - pi_beta_hat)^2 / pi_beta_hat >= 0`` (a chi-square divergence; the cross
    terms cancel because both rows sum to 1), 0 iff ``pi(.|s) = pi_beta_hat(.|s)``. 0 on states
    not in D (no data term). Requires supp pi within supp pi_beta_hat on D (raises otherwise).
    Shapes: (S, A) -> (S,).
    """
    pi = emp.check_support(pi, "pi")
    ratio = np.divide(pi, emp.pi_beta, out=np.zeros_like(pi), where=emp.seen)
    d = np.sum(pi * ratio, axis=1) - 1.0
    # Round-off can leave -1e-17 where pi = pi_beta_hat; the divergence is non-negative.
    return np.where(emp.seen_states, np.maximum(d, 0.0), 0.0)


# --- Theorem 3.1 ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Theorem31:
    """Theorem 3.1 (CQL(1), Eq. 1) on one dataset: every term, the threshold, the verdicts.

    Statement (Kumar et al. 2020, Thm 3.1). For any mu with supp mu within supp pi_beta_hat, with
    probability >= 1 - delta, the fixed point Q_hat of Eq. 1 satisfies for all s in D and all a

        Q_hat(s, a) <= Q^pi(s, a) - alpha [(I - gamma P^pi)^{-1} mu/pi_beta_hat](s, a)
                       + [(I - gamma P^pi)^{-1} C_{r,T,delta} R_max / ((1-gamma) sqrt(n))](s, a),

    with P^pi and Q^pi of the true MDP. Proof: ``Q_hat = B_hat^pi Q_hat - alpha mu/pi_beta_hat
    <= B^pi Q_hat - alpha mu/pi_beta_hat + e`` (``e`` = :func:`bellman_sampling_term`), and
    ``(I - gamma P^pi)^{-1}`` is monotone. With no sampling error (B_hat = B) the same steps give
    the equality ``Q_hat = Q^pi - penalty``, so any alpha > 0 gives ``Q_hat < Q^pi``.

    Attributes:
        alpha: the penalty weight.
        constants: C_r, C_T (and delta).
        checked: the states the statement is checked on (s in D), (S,) bool.
        q_pi: true Q^pi, (S, A).
        penalty: ``alpha (I - gamma P^pi)^{-1} [mu/pi_beta_hat]``, (S, A).
        sampling: ``(I - gamma P^pi)^{-1} e``, +inf where an unseen pair is reachable, (S, A).
        rhs: ``q_pi - penalty + sampling``, (S, A).
        q_hat: the CQL(1) fixed point from :func:`theory.cql.cql_evaluate`, (S, A).
        alpha_threshold: the smallest alpha with ``rhs <= Q^pi`` on every checked pair:
            ``max [(I - gamma P^pi)^{-1} e] / [(I - gamma P^pi)^{-1} mu/pi_beta_hat]``.
        alpha_sufficient: the paper's form, pointwise before propagation:
            ``max C_{r,T,delta} R_max / ((1-gamma) sqrt(n(s,a)) mu(a|s)/pi_beta_hat(a|s))``
            over the checked pairs and every pair (s', a') with pi(a'|s') > 0 reachable from
            them; +inf when mu(a|s) = 0 somewhere there or a reachable pair is unseen.
            ``alpha >= alpha_sufficient`` implies ``alpha >= alpha_threshold``.
        holds: the bound ``q_hat <= rhs`` per pair (False on unchecked states), (S, A).
        conclusion: ``q_hat <= q_pi`` per pair (False on unchecked states), (S, A).
        v_hat_in_range: whether ``max |pi . q_hat| <= 2 R_max/(1-gamma)``, the a-priori bound
            on V_hat that the paper's sampling term ``C_T 2 R_max/(1-gamma)`` assumes. A large
            alpha drives V_hat below it; the concentration event alone then no longer gives the
            proof's premise, which is why the premise is also checked directly:
        bellman_error: ``(B_hat^pi - B^pi) Q_hat`` (true B), (S, A).
        premise_holds: ``bellman_error <= e`` at every pair, the one inequality the proof uses;
            it implies the bound on *every* pair (not only in D).
    """

    alpha: float
    constants: ConcentrationConstants
    checked: np.ndarray
    q_pi: np.ndarray
    penalty: np.ndarray
    sampling: np.ndarray
    rhs: np.ndarray
    q_hat: np.ndarray
    alpha_threshold: float
    alpha_sufficient: float
    holds: np.ndarray
    conclusion: np.ndarray
    v_hat_in_range: bool
    bellman_error: np.ndarray
    premise_holds: bool

    guarantees: ClassVar[Mapping[str, str]] = {
        "premise_holds: (B_hat - B) Q_hat <= e at every pair": WITH_PROBABILITY,
        "bound_holds: Q_hat <= rhs on D": WITH_PROBABILITY,
        "premise_holds implies Q_hat <= rhs at every pair": ALWAYS,
        "alpha_threshold <= alpha_sufficient": ALWAYS,
        "alpha >= alpha_threshold implies rhs <= Q^pi on D": ALWAYS,
        "bound_holds and alpha >= alpha_threshold implies Q_hat <= Q^pi on D": ALWAYS,
    }

    @property
    def bound_holds(self) -> bool:
        """The bound holds at every checked pair."""
        return bool(self.holds[self.checked].all())

    @property
    def conclusion_holds(self) -> bool:
        """``Q_hat <= Q^pi`` at every checked pair."""
        return bool(self.conclusion[self.checked].all())

    @property
    def vacuous(self) -> bool:
        """No alpha makes the bound imply ``Q_hat <= Q^pi`` on D (``alpha_threshold`` is +inf:
        an unseen pair is reachable, or mu puts no mass where the sampling term is)."""
        return not np.isfinite(self.alpha_threshold)

    def check(self) -> None:
        """Assert every statement of :attr:`guarantees` marked "always" (see the module doc)."""
        tol = _round_off(self.q_hat, self.q_pi, self.rhs)
        rows = np.repeat(self.checked[:, None], self.q_hat.shape[1], axis=1)
        above = self.alpha >= self.alpha_threshold
        _require(
            [
                (
                    "penalty >= 0 and sampling >= 0",
                    bool(np.all(self.penalty >= -tol)) and bool(np.all(self.sampling >= 0)),
                ),
                (
                    "premise_holds implies Q_hat <= rhs at every pair",
                    not self.premise_holds or bool(np.all(self.q_hat <= self.rhs + tol)),
                ),
                (
                    "alpha_threshold <= alpha_sufficient",
                    self.alpha_threshold <= self.alpha_sufficient * (1 + 1e-9),
                ),
                (
                    "alpha >= alpha_threshold implies rhs <= Q^pi on D",
                    not above or bool(np.all((self.rhs <= self.q_pi + tol)[rows])),
                ),
                (
                    "bound_holds and alpha >= alpha_threshold implies Q_hat <= Q^pi on D",
                    not (above and self.bound_holds) or self.conclusion_holds,
                ),
            ],
            "Theorem 3.1",
        )

    def at(self, s: int, a: int) -> tuple[float, float, bool]:
        """(q_hat, rhs, holds) at one pair; ``ValueError`` if s is not a checked state."""
        _require_in(self.checked, s, "Theorem 3.1")
        return float(self.q_hat[s, a]), float(self.rhs[s, a]), bool(self.holds[s, a])


def theorem_3_1(
    emp: EmpiricalMDP,
    true_mdp: TabularMDP,
    pi: np.ndarray,
    alpha: float,
    *,
    r_max: float,
    delta: float = 0.1,
    mu: np.ndarray | None = None,
    states: Sequence[int] | None = None,
) -> Theorem31:
    """Evaluate Theorem 3.1 for CQL(1) (Eq. 1) on ``emp`` against ``true_mdp`` (see the class).

    Args:
        emp: the empirical MDP of the dataset.
        true_mdp: the MDP the dataset was sampled from (same S, A, gamma).
        pi: the evaluated policy, (S, A).
        alpha: penalty weight, >= 0.
        r_max: R_max, a bound on every observed reward (|r| <= R_max).
        delta: failure probability of the concentration event.
        mu: the penalised distribution, (S, A); defaults to pi. supp mu within supp pi_beta_hat
            on D, else :class:`InvalidMDPError` names the pair.
        states: states to check (default: all of D); a state outside D raises ``ValueError``.
    """
    alpha = _check_alpha(alpha)
    r_max = _check_r_max(r_max)
    _check_pair(emp, true_mdp, r_max)
    S, A, gamma = emp.n_states, emp.n_actions, emp.gamma
    pi = validate_policy(pi, S, A, "pi")
    mu = emp.check_support(pi if mu is None else mu, "mu")
    checked = _checked_states(emp, states)
    constants = concentration_constants(S, A, delta, r_max)

    ratio = np.divide(mu, emp.pi_beta, out=np.zeros_like(mu), where=emp.seen)
    e = bellman_sampling_term(emp.counts, constants, gamma)
    q_pi = policy_evaluation(true_mdp, pi)
    m = propagate_pairs(true_mdp, pi, ratio)
    sampling = propagate_pairs(true_mdp, pi, e)
    penalty = alpha * m
    rhs = q_pi - penalty + sampling
    q_hat = cql_evaluate(emp, pi, alpha, mu=mu, variant="cql1").q

    rows = np.repeat(checked[:, None], A, axis=1)
    alpha_threshold = _ratio_threshold(sampling[rows], m[rows])
    # Pointwise domination alpha mu/pi_beta_hat >= e must hold on every pair the propagation
    # touches: the checked pairs themselves and the (s', a') with pi(a'|s') > 0 reachable next.
    P_pi = _dense_or_csr(policy_transition(true_mdp, pi))
    next_states = np.asarray(true_mdp.P_flat.T @ rows.ravel().astype(float)).ravel() > 0
    later = _states_reached(P_pi, next_states)
    touched = rows | (later[:, None] & (pi > 0))
    alpha_sufficient = _ratio_threshold(e[touched], ratio[touched])

    tol = REL_TOL * r_max / (1.0 - gamma)
    v_hat = state_values(q_hat, pi)
    bellman_error = bellman(emp.mdp, q_hat, pi) - bellman(true_mdp, q_hat, pi)
    return Theorem31(
        alpha=alpha,
        constants=constants,
        checked=checked,
        q_pi=q_pi,
        penalty=penalty,
        sampling=sampling,
        rhs=rhs,
        q_hat=q_hat,
        alpha_threshold=alpha_threshold,
        alpha_sufficient=alpha_sufficient,
        holds=rows & (q_hat <= rhs + tol),
        conclusion=rows & (q_hat <= q_pi + tol),
        v_hat_in_range=bool(np.max(np.abs(v_hat)) <= 2.0 * r_max / (1.0 - gamma)),
        bellman_error=bellman_error,
        premise_holds=bool(np.all(bellman_error <= e + tol)),
    )


# --- Theorem 3.2 ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Theorem32:
    """Theorem 3.2 (CQL(2), Eq. 2, mu = pi) on one dataset: terms, thresholds, verdicts.

    Statement (Kumar et al. 2020, Thm 3.2). With probability >= 1 - delta, for all s in D,

        V_hat(s) <= V^pi(s) - alpha [(I - gamma P_pi)^{-1} D_CQL](s)
                    + [(I - gamma P_pi)^{-1} sum_a pi(a|.) e(., a)](s),

    ``D_CQL(s) = sum_a pi(a|s)(pi(a|s)/pi_beta_hat(a|s) - 1) >= 0`` (:func:`d_cql`), P_pi and V^pi
    of the true MDP, ``e`` = :func:`bellman_sampling_term`. Proof: averaging the fixed point
    ``Q_hat = B_hat^pi Q_hat - alpha (pi/pi_beta_hat - 1)`` over pi gives
    ``V_hat = pi . B_hat^pi Q_hat - alpha D_CQL <= r_pi + gamma P_pi V_hat - alpha D_CQL + pi . e``.
    (The paper writes the sampling term as ``C_{r,T,delta} R_max / ((1-gamma) sqrt|D|)``; the
    per-state average ``sum_a pi e`` is what the proof gives.) Only the *value* is bounded: the
    pointwise Q_hat exceeds Q^pi where pi < pi_beta_hat pushes Q up (``q_conclusion``).

    Attributes:
        alpha, constants, checked: as in :class:`Theorem31`.
        d_cql: D_CQL(s), (S,).
        v_pi: true V^pi, (S,).
        penalty: ``alpha (I - gamma P_pi)^{-1} D_CQL``, (S,).
        sampling: ``(I - gamma P_pi)^{-1} (pi . e)``, (S,).
        rhs: ``v_pi - penalty + sampling``, (S,).
        q_hat, v_hat: the CQL(2) fixed point (mu = pi) from :func:`theory.cql.cql_evaluate`.
        q_pi: true Q^pi, (S, A).
        alpha_threshold: smallest alpha with ``rhs <= V^pi`` on the checked states,
            ``max sampling / [(I - gamma P_pi)^{-1} D_CQL]``; +inf when D_CQL vanishes on every
            state a checked state reaches (e.g. pi = pi_beta_hat: then the penalty is 0 and no
            alpha can offset the sampling term).
        alpha_sufficient: pointwise before propagation, ``max (pi . e)(s) / D_CQL(s)`` over the
            checked states and the states they reach under pi; +inf where D_CQL(s) = 0.
        alpha_paper: the threshold as the paper prints it,
            ``C_{r,T,delta} R_max/(1-gamma) max_{s in D} 1/(sqrt(n(s)) D_CQL(s))`` (+inf where
            D_CQL(s) = 0). Since ``sum_a pi/sqrt(n(s,a)) >= 1/sqrt(n(s))`` it can be *smaller*
            than alpha_sufficient: it is not a sufficient condition in general.
        holds: ``v_hat <= rhs`` per state (False on unchecked states), (S,).
        conclusion: ``v_hat <= v_pi`` per state (False on unchecked states), (S,).
        q_conclusion: ``q_hat <= q_pi`` per pair (False on unchecked states), (S, A).
        v_hat_in_range, bellman_error, premise_holds: as in :class:`Theorem31` (the premise
            ``(B_hat - B) Q_hat <= e`` at every pair implies the bound on every state).
    """

    alpha: float
    constants: ConcentrationConstants
    checked: np.ndarray
    d_cql: np.ndarray
    v_pi: np.ndarray
    penalty: np.ndarray
    sampling: np.ndarray
    rhs: np.ndarray
    q_hat: np.ndarray
    v_hat: np.ndarray
    q_pi: np.ndarray
    alpha_threshold: float
    alpha_sufficient: float
    alpha_paper: float
    holds: np.ndarray
    conclusion: np.ndarray
    q_conclusion: np.ndarray
    v_hat_in_range: bool
    bellman_error: np.ndarray
    premise_holds: bool

    @property
    def bound_holds(self) -> bool:
        """The bound holds on every checked state."""
        return bool(self.holds[self.checked].all())

    @property
    def conclusion_holds(self) -> bool:
        """``V_hat <= V^pi`` on every checked state."""
        return bool(self.conclusion[self.checked].all())

    @property
    def pointwise_conclusion_holds(self) -> bool:
        """``Q_hat <= Q^pi`` on every checked pair (not claimed by the theorem)."""
        return bool(self.q_conclusion[self.checked].all())

    guarantees: ClassVar[Mapping[str, str]] = {
        "premise_holds: (B_hat - B) Q_hat <= e at every pair": WITH_PROBABILITY,
        "bound_holds: V_hat <= rhs on D": WITH_PROBABILITY,
        "D_CQL >= 0": ALWAYS,
        "premise_holds implies V_hat <= rhs on every state": ALWAYS,
        "alpha_threshold <= alpha_sufficient": ALWAYS,
        "alpha >= alpha_threshold implies rhs <= V^pi on D": ALWAYS,
        "bound_holds and alpha >= alpha_threshold implies V_hat <= V^pi on D": ALWAYS,
        "Q_hat <= Q^pi pointwise": "not claimed (it fails where pi < pi_beta_hat)",
    }

    @property
    def vacuous(self) -> bool:
        """No alpha makes the bound imply ``V_hat <= V^pi`` on D (``alpha_threshold`` is +inf,
        e.g. pi = pi_beta_hat, where D_CQL = 0 and the penalty vanishes)."""
        return not np.isfinite(self.alpha_threshold)

    def check(self) -> None:
        """Assert every statement of :attr:`guarantees` marked "always" (see the module doc)."""
        tol = _round_off(self.v_hat, self.v_pi, self.rhs)
        above = self.alpha >= self.alpha_threshold
        _require(
            [
                ("D_CQL >= 0", bool(np.all(self.d_cql >= -1e-12))),
                (
                    "premise_holds implies V_hat <= rhs on every state",
                    not self.premise_holds or bool(np.all(self.v_hat <= self.rhs + tol)),
                ),
                (
                    "alpha_threshold <= alpha_sufficient",
                    self.alpha_threshold <= self.alpha_sufficient * (1 + 1e-9),
                ),
                (
                    "alpha >= alpha_threshold implies rhs <= V^pi on D",
                    not above or bool(np.all((self.rhs <= self.v_pi + tol)[self.checked])),
                ),
                (
                    "bound_holds and alpha >= alpha_threshold implies V_hat <= V^pi on D",
                    not (above and self.bound_holds) or self.conclusion_holds,
                ),
            ],
            "Theorem 3.2",
        )

    def at(self, s: int) -> tuple[float, float, bool]:
        """(v_hat, rhs, holds) at one state; ``ValueError`` if s is not a checked state."""
        _require_in(self.checked, s, "Theorem 3.2")
        return float(self.v_hat[s]), float(self.rhs[s]), bool(self.holds[s])


def theorem_3_2(
    emp: EmpiricalMDP,
    true_mdp: TabularMDP,
    pi: np.ndarray,
    alpha: float,
    *,
    r_max: float,
    delta: float = 0.1,
    mu: np.ndarray | None = None,
    states: Sequence[int] | None = None,
) -> Theorem32:
    """Evaluate Theorem 3.2 for CQL(2) (Eq. 2) with mu = pi (see the class).

    ``mu`` may be passed only to make the requirement explicit: anything but ``pi`` raises
    ``ValueError`` (the theorem is stated for mu = pi). Other arguments as in :func:`theorem_3_1`.
    """
    alpha = _check_alpha(alpha)
    r_max = _check_r_max(r_max)
    _check_pair(emp, true_mdp, r_max)
    S, A, gamma = emp.n_states, emp.n_actions, emp.gamma
    pi = validate_policy(pi, S, A, "pi")
    if mu is not None and not np.allclose(np.asarray(mu, dtype=float), pi, rtol=0, atol=1e-12):
        raise ValueError("Theorem 3.2 is stated for mu = pi; got a mu different from pi")
    pi = emp.check_support(pi, "pi")
    checked = _checked_states(emp, states)
    constants = concentration_constants(S, A, delta, r_max)

    D = d_cql(emp, pi)
    e = bellman_sampling_term(emp.counts, constants, gamma)
    # pi . e with 0 * inf = 0: an unseen action that pi never takes adds nothing.
    e_pi = np.sum(np.where(pi > 0, pi * np.where(np.isinf(e), 1.0, e), 0.0), axis=1)
    e_pi = np.where(((pi > 0) & np.isinf(e)).any(axis=1), np.inf, e_pi)
    q_pi = policy_evaluation(true_mdp, pi)
    v_pi = state_values(q_pi, pi)
    m = propagate_states(true_mdp, pi, D)
    sampling = propagate_states(true_mdp, pi, e_pi)
    penalty = alpha * m
    rhs = v_pi - penalty + sampling
    est = cql_evaluate(emp, pi, alpha, mu=pi, variant="cql2")

    alpha_threshold = _ratio_threshold(sampling[checked], m[checked])
    P_pi = _dense_or_csr(policy_transition(true_mdp, pi))
    touched = _states_reached(P_pi, checked)
    alpha_sufficient = _ratio_threshold(e_pi[touched], D[touched])
    n_s = emp.state_counts[checked].astype(float)
    paper_num = constants.C_rT(gamma) * r_max / (1.0 - gamma) / np.sqrt(n_s)
    alpha_paper = _ratio_threshold(paper_num, D[checked])

    tol = REL_TOL * r_max / (1.0 - gamma)
    rows = np.repeat(checked[:, None], A, axis=1)
    bellman_error = bellman(emp.mdp, est.q, pi) - bellman(true_mdp, est.q, pi)
    return Theorem32(
        alpha=alpha,
        constants=constants,
        checked=checked,
        d_cql=D,
        v_pi=v_pi,
        penalty=penalty,
        sampling=sampling,
        rhs=rhs,
        q_hat=est.q,
        v_hat=est.v,
        q_pi=q_pi,
        alpha_threshold=alpha_threshold,
        alpha_sufficient=alpha_sufficient,
        alpha_paper=alpha_paper,
        holds=checked & (est.v <= rhs + tol),
        conclusion=checked & (est.v <= v_pi + tol),
        q_conclusion=rows & (est.q <= q_pi + tol),
        v_hat_in_range=bool(np.max(np.abs(est.v)) <= 2.0 * r_max / (1.0 - gamma)),
        bellman_error=bellman_error,
        premise_holds=bool(np.all(bellman_error <= e + tol)),
    )


# --- Theorem 3.4: gap expansion -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GapExpansionStep:
    """Theorem 3.4 at one iteration k: the CQL update widens the gap between pi_beta and mu_k.

    Statement (Kumar et al. 2020, Thm 3.4). For alpha_k large enough, for all s in D,

        E_{pi_beta_hat}[Q_hat^{k+1}(s,.)] - E_{mu_k}[Q_hat^{k+1}(s,.)]
            >  E_{pi_beta_hat}[Q^{k+1}(s,.)] - E_{mu_k}[Q^{k+1}(s,.)],

    where ``Q_hat^{k+1} = B_hat^{pi_k} Q_hat^k - alpha_k (mu_k/pi_beta_hat - 1)`` is the CQL update
    (Eqs. 2-3 with mu_k fixed) and ``Q^{k+1} = B^{pi_k} Q^k`` the same backup without the
    regulariser (the paper's "actual" iterate), ``B`` the backup of ``reference`` (the empirical
    MDP by default, or the true MDP, which adds the sampling error to ``backup_term``). The paper
    indexes the iterate produced with mu_k by k; here it is k + 1.

    Exact form. Since ``E_{pi_beta_hat}[mu/pi_beta_hat - 1] = 0`` and
    ``E_{mu}[mu/pi_beta_hat - 1] = D_CQL(mu, pi_beta_hat)``,

        gap_hat(s) - gap(s) = alpha_k D_CQL(mu_k)(s) - backup_term(s),
        backup_term(s) = [E_{mu_k} - E_{pi_beta_hat}](B_hat^{pi_k} Q_hat^k - B^{pi_k} Q^k)(s),

    so "alpha_k large enough" is exactly ``alpha_k > max_s backup_term(s)/D_CQL(mu_k)(s)``
    (``alpha_threshold``); where ``D_CQL(mu_k)(s) = 0`` (mu_k = pi_beta_hat) no alpha helps and the
    gap expands iff ``backup_term(s) < 0`` (threshold +inf if not).

    Attributes:
        alpha: alpha_k.
        checked: states in D, (S,) bool.
        q_hat_next, q_next: Q_hat^{k+1}, Q^{k+1}, (S, A).
        gap_hat, gap: the two sides of the inequality, (S,).
        d_cql_mu: D_CQL(mu_k, pi_beta_hat), (S,).
        backup_term: as above, (S,).
        alpha_threshold: the exact "large enough" bound; the condition is ``alpha > threshold``
            (negative: any alpha >= 0 expands; +inf: no alpha does).
        condition_holds: ``alpha > alpha_threshold``.
        expands: ``gap_hat > gap`` per state (False off D), (S,).
    """

    alpha: float
    checked: np.ndarray
    q_hat_next: np.ndarray
    q_next: np.ndarray
    gap_hat: np.ndarray
    gap: np.ndarray
    d_cql_mu: np.ndarray
    backup_term: np.ndarray
    alpha_threshold: float
    condition_holds: bool
    expands: np.ndarray

    @property
    def expands_everywhere(self) -> bool:
        """``gap_hat > gap`` on every checked state."""
        return bool(self.expands[self.checked].all())

    guarantees: ClassVar[Mapping[str, str]] = {
        "gap_hat - gap = alpha D_CQL(mu_k) - backup_term on D": ALWAYS,
        "alpha > alpha_threshold implies gap_hat >= gap on D (> except at round-off ties)": ALWAYS,
    }

    @property
    def vacuous(self) -> bool:
        """No alpha expands the gap on every state of D (threshold +inf: mu_k = pi_beta_hat on a
        state whose backup term is >= 0)."""
        return not np.isfinite(self.alpha_threshold)

    def check(self) -> None:
        """Assert every statement of :attr:`guarantees` marked "always" (see the module doc)."""
        tol = _round_off(self.gap_hat, self.gap) * (1.0 + self.alpha)
        margin = (self.gap_hat - self.gap)[self.checked]
        exact = (self.alpha * self.d_cql_mu - self.backup_term)[self.checked]
        _require(
            [
                (
                    "gap_hat - gap = alpha D_CQL(mu_k) - backup_term on D",
                    bool(np.allclose(margin, exact, rtol=0.0, atol=tol)),
                ),
                (
                    "alpha > alpha_threshold implies gap_hat >= gap on D",
                    not self.condition_holds or bool(np.all(margin > -tol)),
                ),
            ],
            "Theorem 3.4",
        )


def gap_expansion_step(
    emp: EmpiricalMDP,
    q_hat: np.ndarray,
    q: np.ndarray,
    pi: np.ndarray,
    mu: np.ndarray,
    alpha: float,
    *,
    reference: TabularMDP | None = None,
    states: Sequence[int] | None = None,
) -> GapExpansionStep:
    """Theorem 3.4 for one CQL update from ``(Q_hat^k, Q^k)`` with backup policy pi_k and mu_k.

    Args:
        emp: the empirical MDP.
        q_hat: Q_hat^k, the CQL iterate, (S, A).
        q: Q^k, the unregularised iterate, (S, A).
        pi: pi_k, the policy of the backup, (S, A).
        mu: mu_k, the penalised distribution (for CQL(H): softmax of Q_hat^k), (S, A);
            supp mu within supp pi_beta_hat on D.
        alpha: alpha_k >= 0.
        reference: the MDP whose backup produces Q^{k+1} (default: the empirical MDP).
        states: states to check (default: all of D).
    """
    alpha = _check_alpha(alpha)
    S, A = emp.n_states, emp.n_actions
    pi = validate_policy(pi, S, A, "pi")
    mu = emp.check_support(mu, "mu")
    q_hat = np.asarray(q_hat, dtype=float)
    q = np.asarray(q, dtype=float)
    for name, x in (("q_hat", q_hat), ("q", q)):
        if x.shape != (S, A) or not np.all(np.isfinite(x)):
            raise InvalidMDPError(f"{name} must be a finite ({S}, {A}) array")
    ref = emp.mdp if reference is None else reference
    if (ref.n_states, ref.n_actions, ref.gamma) != (S, A, emp.gamma):
        raise InvalidMDPError("reference MDP must have the dataset's S, A and gamma")
    checked = _checked_states(emp, states)

    penalty = np.divide(mu, emp.pi_beta, out=np.zeros_like(mu), where=emp.seen)
    penalty = np.where(emp.seen, penalty - 1.0, 0.0)
    b_hat = bellman(emp.mdp, q_hat, pi)
    b_ref = bellman(ref, q, pi)
    q_hat_next = b_hat - alpha * penalty
    q_next = b_ref
    w = emp.pi_beta - mu
    gap_hat = np.sum(w * q_hat_next, axis=1)
    gap = np.sum(w * q_next, axis=1)
    D = d_cql(emp, mu)
    backup_term = np.sum(-w * (b_hat - b_ref), axis=1)
    num, den = backup_term[checked], D[checked]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_state = np.where(
            den > 0, num / np.where(den > 0, den, 1.0), np.where(num < 0, -np.inf, np.inf)
        )
    # A negative threshold means any alpha >= 0 expands the gap; -inf: no checked state.
    alpha_threshold = float(np.max(per_state)) if per_state.size else -np.inf
    return GapExpansionStep(
        alpha=alpha,
        checked=checked,
        q_hat_next=q_hat_next,
        q_next=q_next,
        gap_hat=gap_hat,
        gap=gap,
        d_cql_mu=D,
        backup_term=backup_term,
        alpha_threshold=alpha_threshold,
        condition_holds=bool(alpha > alpha_threshold),
        expands=checked & (gap_hat > gap),
    )


@dataclass(frozen=True, eq=False)
class SlowPolicyStep:
    """Theorem 3.3 at one iteration k: with a slowly changing policy, CQL(H)'s value of the
    next policy is a lower bound of its unpenalised value.

    Statement (Kumar et al. 2020, Thm 3.3). Let mu_k = pi_{Q_hat^k} ∝ exp(Q_hat^k) (the
    maximiser of CQL(H)'s Eq. 3) and let the next policy pi^{k+1} change slowly with respect to
    it, ``D_TV(pi^{k+1}(.|s), mu_k(.|s)) <= eps``. Then ``V_hat^{k+1}(s) <= V^{k+1}(s)`` for
    every s in D if

        E_{mu_k}[mu_k/pi_beta_hat - 1](s)  >=  eps * max_{a: pi_beta_hat(a|s) > 0} mu_k/pi_beta_hat,

    where ``Q_hat^{k+1} = B_hat^{pi} Q_hat^k - alpha (mu_k/pi_beta_hat - 1)`` is the CQL update,
    ``V_hat^{k+1}(s) = E_{pi^{k+1}}[Q_hat^{k+1}(s, .)]`` its value of the next policy and
    ``V^{k+1}(s) = E_{pi^{k+1}}[B_hat^{pi} Q_hat^k(s, .)]`` the same backup without the penalty.

    Exact form. ``V^{k+1} - V_hat^{k+1} = alpha E_{pi^{k+1}}[x - 1]`` with ``x = mu_k/pi_beta_hat``.
    Writing ``pi^{k+1} = mu_k + d`` with ``sum d = 0`` and ``sum |d| = 2 TV``,
    ``E_{pi^{k+1}}[x - 1] = D_CQL(mu_k) + sum d x >= D_CQL(mu_k) - TV (max x - min x)``, so the
    premise at s, checked here with eps = TV(s) (the state's own move), gives a non-negative
    margin; at a state where the premise fails the next policy may weight the actions mu_k
    under-weights (x < 1) enough for ``V_hat^{k+1}(s) > V^{k+1}(s)``.

    Attributes:
        alpha: alpha_k.
        checked: states in D, (S,) bool.
        mu: mu_k, the softmax of Q_hat^k over the actions of D, (S, A).
        tv: D_TV(pi^{k+1}, mu_k) per state, (S,); ``epsilon``: its max over D.
        d_cql_mu: E_{mu_k}[x - 1] = D_CQL(mu_k, pi_beta_hat), the premise's left side, (S,).
        premise_rhs: tv * max_a x, the premise's right side, (S,).
        premise: the premise per state (False off D), (S,).
        v_hat_next, v_next: V_hat^{k+1}, V^{k+1}, (S,).
        lower_bound: ``v_hat_next <= v_next`` per state (False off D), (S,).
    """

    alpha: float
    checked: np.ndarray
    mu: np.ndarray
    tv: np.ndarray
    d_cql_mu: np.ndarray
    premise_rhs: np.ndarray
    premise: np.ndarray
    v_hat_next: np.ndarray
    v_next: np.ndarray
    lower_bound: np.ndarray
    margin_exact: np.ndarray
    """alpha E_{pi^{k+1}}[x - 1] per state, (S,)."""

    @property
    def epsilon(self) -> float:
        """The largest move of the policy over D, max_s TV(pi^{k+1}, mu_k)."""
        return float(self.tv[self.checked].max()) if self.checked.any() else 0.0

    @property
    def premise_everywhere(self) -> bool:
        return bool(self.premise[self.checked].all())

    guarantees: ClassVar[Mapping[str, str]] = {
        "V^{k+1} - V_hat^{k+1} = alpha E_{pi^{k+1}}[mu_k/pi_beta_hat - 1] on D": ALWAYS,
        "premise at s implies V_hat^{k+1}(s) <= V^{k+1}(s)": ALWAYS,
    }

    @property
    def vacuous(self) -> bool:
        """The premise holds on no state of D (the policy moves too fast everywhere, or
        mu_k = pi_beta_hat where D_CQL = 0 and the policy moves at all)."""
        return not bool(self.premise[self.checked].any())

    def check(self) -> None:
        """Assert every statement of :attr:`guarantees` marked "always" (see the module doc)."""
        tol = _round_off(self.v_hat_next, self.v_next) * (1.0 + self.alpha)
        margin = (self.v_next - self.v_hat_next)[self.checked]
        _require(
            [
                (
                    "V^{k+1} - V_hat^{k+1} = alpha E_{pi^{k+1}}[x - 1] on D",
                    bool(np.allclose(margin, self.margin_exact[self.checked], atol=tol, rtol=0)),
                ),
                (
                    "premise at s implies V_hat^{k+1}(s) <= V^{k+1}(s)",
                    bool(np.all(margin[self.premise[self.checked]] >= -tol)),
                ),
            ],
            "Theorem 3.3",
        )


def slow_policy_step(
    emp: EmpiricalMDP,
    q_hat: np.ndarray,
    pi: np.ndarray,
    pi_next: np.ndarray,
    alpha: float,
    *,
    temperature: float = 1.0,
    states: Sequence[int] | None = None,
) -> SlowPolicyStep:
    """Theorem 3.3 for one CQL(H) update from Q_hat^k (backup policy ``pi``) and the next
    policy ``pi_next``.

    Args:
        emp: the empirical MDP.
        q_hat: Q_hat^k, (S, A).
        pi: the policy of the backup B_hat^pi, (S, A).
        pi_next: pi^{k+1}, (S, A); supported by the data on D.
        alpha: alpha_k >= 0.
        temperature: of mu_k ∝ exp(Q_hat^k / temperature) (the paper's is 1).
        states: states to check (default: all of D).
    """
    alpha = _check_alpha(alpha)
    S, A = emp.n_states, emp.n_actions
    pi = validate_policy(pi, S, A, "pi")
    pi_next = emp.check_support(pi_next, "pi_next")
    q_hat = np.asarray(q_hat, dtype=float)
    if q_hat.shape != (S, A) or not np.all(np.isfinite(q_hat)):
        raise InvalidMDPError(f"q_hat must be a finite ({S}, {A}) array")
    checked = _checked_states(emp, states)
    mu = masked_softmax(q_hat, emp.seen, temperature)
    mu = np.where(emp.seen_states[:, None], mu, emp.pi_beta)
    x = np.divide(mu, emp.pi_beta, out=np.zeros_like(mu), where=emp.seen)
    penalty = np.where(emp.seen, x - 1.0, 0.0)
    backup = bellman(emp.mdp, q_hat, pi)
    q_hat_next = backup - alpha * penalty
    v_hat_next = np.sum(pi_next * q_hat_next, axis=1)
    v_next = np.sum(pi_next * backup, axis=1)
    tv = 0.5 * np.abs(pi_next - mu).sum(axis=1)
    d_cql_mu = np.sum(mu * penalty, axis=1)
    premise_rhs = tv * np.max(np.where(emp.seen, x, 0.0), axis=1)
    return SlowPolicyStep(
        alpha=alpha,
        checked=checked,
        mu=mu,
        tv=tv,
        d_cql_mu=d_cql_mu,
        premise_rhs=premise_rhs,
        premise=checked & (d_cql_mu >= premise_rhs),
        v_hat_next=v_hat_next,
        v_next=v_next,
        lower_bound=checked & (v_hat_next <= v_next),
        margin_exact=alpha * np.sum(pi_next * penalty, axis=1),
    )


def gap_expansion_along_control(
    emp: EmpiricalMDP,
    result: CQLControlResult,
    *,
    reference: TabularMDP | None = None,
) -> list[GapExpansionStep]:
    """Theorem 3.4 at every iterate of the tabular CQL control loop (:func:`theory.cql.cql_control`).

    At iteration k: Q_hat^k = ``result.q_hat[k]`` (the CQL(H) stationary point of pi_k),
    mu_k = softmax(Q_hat^k / temperature) over the actions of D (the maximiser of Eq. 3 with an
    entropy regulariser), alpha_k = ``result.alpha``, and Q^k the unregularised value of pi_k:
    ``result.q_empirical[k]`` (default) or, with ``reference`` = the true MDP, ``result.q_true[k]``
    (which must have been computed). Both are fixed points of their backups, so the update in
    :func:`gap_expansion_step` returns them unchanged and the step checks the theorem's gap
    inequality at (Q_hat^k, Q^k) itself.
    """
    if reference is None:
        q_ref = result.q_empirical
    else:
        if result.q_true is None:
            raise ValueError("reference given but the control result has no q_true: pass mdp=")
        q_ref = result.q_true
    steps = []
    for k in range(result.policies.shape[0]):
        mu = masked_softmax(result.q_hat[k], emp.seen, result.temperature)
        # States not in D get the uniform placeholder (their rows are never checked).
        mu = np.where(emp.seen_states[:, None], mu, emp.pi_beta)
        steps.append(
            gap_expansion_step(
                emp,
                result.q_hat[k],
                q_ref[k],
                result.policies[k],
                mu,
                result.alpha,
                reference=reference,
            )
        )
    return steps


# --- Theorems 3.5 / 3.6: the penalised objective (Eq. 6) and safe improvement --------------


def _weighted_sparsemax(q: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per state, ``argmax_p sum_a p_a q_a - alpha_s sum_a p_a^2 / w_a`` over the simplex.

    The support of p stays within that of w. KKT: ``p_a = w_a (q_a - lam)_+ / (2 alpha_s)`` with
    lam such that sum p = 1; lam is found by sorting q on the support (largest first) and taking
    the largest prefix k with ``q_(k) > lam_k = (sum_{i<=k} w_i q_i - 2 alpha_s) / sum_{i<=k} w_i``.
    ``alpha_s = 0`` is the plain argmax (lowest index on ties). Shapes: (S, A), (S, A), (S,) -> (S, A).
    """
    out = np.zeros_like(q)
    for s in range(q.shape[0]):
        sup = np.flatnonzero(w[s] > 0)
        qs, ws, a_s = q[s, sup], w[s, sup], float(alpha[s])
        if a_s == 0:
            out[s, sup[int(np.argmax(qs))]] = 1.0
            continue
        order = np.argsort(-qs, kind="stable")
        cw = np.cumsum(ws[order])
        lam_k = (np.cumsum(ws[order] * qs[order]) - 2.0 * a_s) / cw
        # The prefix of the top-k actions is valid for k = 1 and stays valid up to the answer.
        k = int(np.flatnonzero(qs[order] > lam_k)[-1])
        p = ws * np.maximum(qs - lam_k[k], 0.0) / (2.0 * a_s)
        out[s, sup] = p / p.sum()
    return out


def eq6_objective(emp: EmpiricalMDP, pi: np.ndarray, alpha: float, d0: np.ndarray) -> float:
    """Eq. 6: ``J(pi, M_hat) - alpha/(1-gamma) E_{s ~ d^pi_M_hat}[D_CQL(pi, pi_beta_hat)(s)]``.

    ``d^pi_M_hat`` is the normalised discounted state distribution of pi in M_hat from ``d0``, so
    the penalty is ``alpha d0 . (I - gamma P_hat_pi)^{-1} D_CQL`` and the objective equals
    ``d0 . V_hat`` of CQL(2) with mu = pi (Theorem 3.5), which is how it is computed here
    (D_CQL = 0 on states not in D, as in :func:`d_cql`).
    """
    return float(d0 @ cql_evaluate(emp, pi, alpha, mu=pi, variant="cql2").v)


def eq6_policy(
    emp: EmpiricalMDP, alpha: float, *, tol: float = 1e-11, max_iter: int = 1000
) -> np.ndarray:
    """The maximiser pi* of Eq. 6 (Theorem 3.5's penalised empirical objective); (S, A).

    Eq. 6 is an MDP on M_hat with the convex per-state regulariser
    ``alpha D_CQL(pi)(s) = alpha (sum_a pi^2/pi_beta_hat - 1)`` on states in D (none elsewhere,
    as in :func:`d_cql`), so one policy is optimal from every start (Geist, Scherrer, Pietquin
    2019, regularised MDPs). Solved by regularised policy iteration: V = the CQL(2) value of pi
    (:func:`theory.cql.cql_evaluate`, mu = pi), ``Q = r_hat + gamma T_hat V``, improve per state
    with the weighted sparsemax of :func:`_weighted_sparsemax` (support within pi_beta_hat on D),
    until the regularised Bellman optimality residual ``max |T_reg V - V|`` is below
    ``tol (1 + max |V|)`` (then V is within residual/(1-gamma) of the optimum). alpha = 0 is
    plain policy iteration restricted to supp pi_beta_hat on D. ``RuntimeError`` if not converged.
    """
    alpha = _check_alpha(alpha)
    alpha_s = np.where(emp.seen_states, alpha, 0.0)
    w = emp.pi_beta
    pi = w.copy()
    v = cql_evaluate(emp, pi, alpha, mu=pi, variant="cql2").v
    for _ in range(max_iter):
        q = emp.R + emp.gamma * emp.mdp.expected_next(v)
        new = _weighted_sparsemax(q, w, alpha_s)
        t_reg_v = np.sum(new * q, axis=1) - alpha * d_cql(emp, new)
        if np.max(np.abs(t_reg_v - v)) <= tol * (1.0 + float(np.max(np.abs(v)))):
            return pi
        pi = new
        v = cql_evaluate(emp, pi, alpha, mu=pi, variant="cql2").v
    raise RuntimeError(f"Eq. 6 policy iteration did not converge in {max_iter} iterations")


@dataclass(frozen=True, eq=False)
class SafeImprovement:
    """Theorem 3.6 (zeta-safe policy improvement) on one dataset.

    Statement (Kumar et al. 2020, Thm 3.6). Let pi* maximise Eq. 6. With probability >= 1 - delta,
    ``J(pi*, M) >= J(pi_beta_hat, M) - zeta`` with

        zeta = 2 (C_r/(1-gamma) + gamma R_max C_T/(1-gamma)^2)
                 E_{s ~ d^{pi*}_M_hat}[ sqrt|A| / sqrt(n(s)) sqrt(D_CQL(pi*, pi_beta_hat)(s) + 1) ]
               - (J(pi*, M_hat) - J(pi_beta_hat, M_hat)),

    where the last term is >= alpha/(1-gamma) E_{s ~ d^{pi*}_M_hat}[D_CQL(pi*, pi_beta_hat)(s)].

    Where it comes from: for any pi, ``|J(pi, M_hat) - J(pi, M)| <= sampling(pi)`` with
    ``sampling(pi) = (C_r/(1-gamma) + gamma R_max C_T/(1-gamma)^2) E_{d^pi_M_hat}[sqrt|A|
    sqrt(D_CQL(pi)+1)/sqrt(n(s))]`` (simulation lemma on the concentration event with
    ``||V^pi_M||_inf <= R_max/(1-gamma)``, then Cauchy-Schwarz
    ``sum_a pi/sqrt(n(s,a)) <= sqrt|A| sqrt(sum_a pi^2/pi_beta_hat) / sqrt(n(s))``). Applying it to
    pi* and pi_beta_hat gives ``zeta_proof = sampling(pi*) + sampling(pi_beta_hat) - improvement``;
    the paper writes ``2 sampling(pi*)`` instead (``zeta_paper``), which is not always larger.

    Attributes:
        alpha, constants: inputs.
        pi: the policy compared with pi_beta_hat (pi* of Eq. 6 unless given), (S, A).
        j_pi, j_beta: J(pi, M), J(pi_beta_hat, M) in the true MDP (d0 of the true MDP).
        j_pi_emp, j_beta_emp: the same in the empirical MDP M_hat (same d0).
        improvement_emp: ``j_pi_emp - j_beta_emp``.
        penalty_emp: ``alpha/(1-gamma) E_{d^pi_M_hat}[D_CQL(pi)]``.
        improvement_condition: ``improvement_emp >= penalty_emp`` (true for the Eq. 6 optimum,
            since pi_beta_hat has D_CQL = 0).
        sampling_pi, sampling_beta: the sampling terms of pi and pi_beta_hat (+inf without
            coverage).
        zeta_paper, zeta_proof: as above.
        coverage: every state reached in M_hat from supp d0 under pi or pi_beta_hat is in D
            (otherwise the sampling terms, and zeta, are +inf).
        emp_error_pi, emp_error_beta: ``|J(., M_hat) - J(., M)|``, to compare with the sampling
            terms.
        holds_paper, holds_proof: ``j_pi >= j_beta - zeta`` for each zeta.
        concentration: the concentration event on this dataset.
        gamma: the discount.
    """

    alpha: float
    constants: ConcentrationConstants
    pi: np.ndarray
    j_pi: float
    j_beta: float
    j_pi_emp: float
    j_beta_emp: float
    improvement_emp: float
    penalty_emp: float
    improvement_condition: bool
    sampling_pi: float
    sampling_beta: float
    zeta_paper: float
    zeta_proof: float
    coverage: bool
    emp_error_pi: float
    emp_error_beta: float
    holds_paper: bool
    holds_proof: bool
    concentration: ConcentrationEvent
    gamma: float

    guarantees: ClassVar[Mapping[str, str]] = {
        "concentration.holds": WITH_PROBABILITY,
        "holds_proof: J(pi, M) >= J(pi_beta_hat, M) - zeta_proof": WITH_PROBABILITY,
        "concentration.holds implies |J(., M_hat) - J(., M)| <= sampling(.), and holds_proof": ALWAYS,
        "coverage iff zeta is finite": ALWAYS,
        "improvement_condition (for pi* of Eq. 6, the default pi)": ALWAYS,
    }

    @property
    def vacuous(self) -> bool:
        """zeta is +inf (a state the policies reach in M_hat is not in D), or zeta_proof is at
        least the whole range of returns, 2 R_max/(1-gamma): the guarantee then allows anything."""
        span = 2.0 * self.constants.r_max / (1.0 - self.gamma)
        return not (np.isfinite(self.zeta_proof) and self.zeta_proof < span)

    def check(self, *, eq6_optimum: bool = True) -> None:
        """Assert every statement of :attr:`guarantees` marked "always"; ``eq6_optimum=False``
        when ``pi`` was given and is not Eq. 6's optimum (its improvement clause is then not
        claimed)."""
        tol = 1e-7 * (1.0 + abs(self.j_pi_emp) + self.penalty_emp)
        on_event = self.concentration.holds
        _require(
            [
                (
                    "concentration.holds implies |J(., M_hat) - J(., M)| <= sampling(.)",
                    not on_event
                    or (
                        self.emp_error_pi <= self.sampling_pi + tol
                        and self.emp_error_beta <= self.sampling_beta + tol
                    ),
                ),
                ("concentration.holds implies holds_proof", not on_event or self.holds_proof),
                (
                    "coverage iff zeta is finite",
                    self.coverage == bool(np.isfinite(self.zeta_paper)),
                ),
                ("improvement_condition", not eq6_optimum or self.improvement_condition),
            ],
            "Theorem 3.6",
        )


def _sampling_return_term(
    emp: EmpiricalMDP, pi: np.ndarray, d0: np.ndarray, constants: ConcentrationConstants
) -> tuple[float, bool]:
    """``sampling(pi)`` of :class:`SafeImprovement` and whether it is finite (coverage)."""
    gamma = emp.gamma
    D = d_cql(emp, pi)
    n_s = emp.state_counts.astype(float)
    f = np.divide(
        np.sqrt(emp.n_actions * (D + 1.0)),
        np.sqrt(n_s),
        out=np.full(emp.n_states, np.inf),
        where=n_s > 0,
    )
    # E_{d^pi}[f] / (1 - gamma) = d0 . (I - gamma P_hat_pi)^{-1} f.
    occ = propagate_states(emp.mdp, pi, f)
    support = d0 > 0
    covered = bool(np.all(np.isfinite(occ[support])))
    c = constants.C_r / (1.0 - gamma) + gamma * constants.r_max * constants.C_T / (1.0 - gamma) ** 2
    if not covered:
        return float("inf"), False
    return float(c * (1.0 - gamma) * (d0[support] @ occ[support])), True


def safe_policy_improvement(
    emp: EmpiricalMDP,
    true_mdp: TabularMDP,
    alpha: float,
    *,
    r_max: float,
    delta: float = 0.1,
    pi: np.ndarray | None = None,
) -> SafeImprovement:
    """Evaluate Theorem 3.6 for pi* of Eq. 6 (or a given pi) against ``true_mdp`` (see the class).

    ``pi`` must satisfy supp pi within supp pi_beta_hat on D (D_CQL is infinite otherwise).
    J uses the true MDP's initial distribution in both MDPs.
    """
    alpha = _check_alpha(alpha)
    r_max = _check_r_max(r_max)
    _check_pair(emp, true_mdp, r_max)
    S, A, gamma = emp.n_states, emp.n_actions, emp.gamma
    constants = concentration_constants(S, A, delta, r_max)
    pi = eq6_policy(emp, alpha) if pi is None else emp.check_support(pi, "pi")
    beta = emp.pi_beta
    d0 = true_mdp.d0

    def J(mdp: TabularMDP, p: np.ndarray) -> float:
        return float(d0 @ state_values(policy_evaluation(mdp, p), p))

    j_pi, j_beta = J(true_mdp, pi), J(true_mdp, beta)
    j_pi_emp, j_beta_emp = J(emp.mdp, pi), J(emp.mdp, beta)
    improvement = j_pi_emp - j_beta_emp
    penalty = alpha * float(d0 @ propagate_states(emp.mdp, pi, d_cql(emp, pi)))
    s_pi, cov_pi = _sampling_return_term(emp, pi, d0, constants)
    s_beta, cov_beta = _sampling_return_term(emp, beta, d0, constants)
    zeta_paper = 2.0 * s_pi - improvement
    zeta_proof = s_pi + s_beta - improvement
    tol = REL_TOL * r_max / (1.0 - gamma)
    return SafeImprovement(
        alpha=alpha,
        constants=constants,
        pi=pi,
        j_pi=j_pi,
        j_beta=j_beta,
        j_pi_emp=j_pi_emp,
        j_beta_emp=j_beta_emp,
        improvement_emp=improvement,
        penalty_emp=penalty,
        improvement_condition=bool(improvement >= penalty - tol),
        sampling_pi=s_pi,
        sampling_beta=s_beta,
        zeta_paper=zeta_paper,
        zeta_proof=zeta_proof,
        coverage=cov_pi and cov_beta,
        emp_error_pi=abs(j_pi_emp - j_pi),
        emp_error_beta=abs(j_beta_emp - j_beta),
        holds_paper=bool(j_pi >= j_beta - zeta_paper - tol),
        holds_proof=bool(j_pi >= j_beta - zeta_proof - tol),
        concentration=concentration_event(emp, true_mdp, constants),
        gamma=emp.gamma,
    )
