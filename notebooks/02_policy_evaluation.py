# %% [markdown]
# # 02 · Exact policy evaluation
#
# Every CQL fixed point in this project is "policy evaluation with a modified reward", so the
# one tool used everywhere is an exact solver for
#
# $$
# Q^\pi = \mathcal{B}^\pi Q^\pi, \qquad
# (\mathcal{B}^\pi Q)(s, a) = r(s, a) + \gamma \sum_{s'} T(s' \mid s, a) \sum_{a'} \pi(a' \mid s') Q(s', a').
# $$
#
# This notebook proves by example that the closed form is right (against iteration and
# against a hand calculation), explains why a system with $|S|$ unknowns is enough instead of
# $|S||A|$, and times the difference.

# %%
import matplotlib.pyplot as plt
import numpy as np

from theory.bench import bellman_residual, median_seconds, naive_policy_evaluation
from theory.mdp import (
    auto_method,
    bellman,
    iterative_policy_evaluation,
    policy_evaluation,
    policy_transition,
    random_mdp,
    random_policy,
    state_values,
    two_state_mdp,
)

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (6.4, 3.8)})
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## The closed form
#
# Stack $Q$ as a vector over the $|S||A|$ pairs and write $P^\pi$ for the pair-to-pair
# transition matrix $P^\pi[(s, a), (s', a')] = T(s' \mid s, a)\,\pi(a' \mid s')$. The Bellman
# equation is linear:
#
# $$
# Q^\pi = R + \gamma P^\pi Q^\pi
# \quad\Longleftrightarrow\quad
# (I - \gamma P^\pi)\, Q^\pi = R
# \quad\Longleftrightarrow\quad
# Q^\pi = (I - \gamma P^\pi)^{-1} R = \sum_{t \ge 0} \gamma^t (P^\pi)^t R .
# $$
#
# The inverse exists because $P^\pi$ is row-stochastic, so $\|\gamma P^\pi\|_\infty = \gamma < 1$
# and the Neumann series converges; the series is the expected discounted sum of rewards. (The
# discount belongs inside the inverse: $(I - P^\pi)^{-1}$ would not exist.) The operator
# $(I - \gamma P^\pi)^{-1}$ has non-negative entries, so it preserves inequalities: if
# $x \le y$ entrywise then $(I - \gamma P^\pi)^{-1} x \le (I - \gamma P^\pi)^{-1} y$. Every
# lower-bound proof in notebooks 04 and 05 ends with that step.
#
# In code the inverse is never formed: `policy_evaluation(mdp, pi)` solves a linear system.

# %% [markdown]
# ## A value you can check by hand
#
# `two_state_mdp()`: action 0 stays, action 1 switches state; staying in state 1 pays 1,
# everything else pays 0. Under the policy "always stay":
#
# * state 0 stays in 0 for ever with reward 0: $V(0) = 0$, so $Q(0, \text{stay}) = 0$ and
#   $Q(1, \text{switch}) = 0 + \gamma V(0) = 0$;
# * state 1 collects 1 at every step: $V(1) = Q(1, \text{stay}) = 1/(1 - \gamma)$;
# * switching from 0 lands in 1: $Q(0, \text{switch}) = 0 + \gamma V(1) = \gamma / (1 - \gamma)$.

# %%
gamma = 0.9
mdp2 = two_state_mdp(gamma)
stay = np.array([[1.0, 0.0], [1.0, 0.0]])
q_stay = policy_evaluation(mdp2, stay)
print("Q^stay =\n", q_stay)
assert np.allclose(q_stay, [[0.0, gamma / (1 - gamma)], [1 / (1 - gamma), 0.0]])

# %% [markdown]
# ## Proof by example: iterating the Bellman operator converges to the solve
#
# $\mathcal{B}^\pi$ is a $\gamma$-contraction in the sup norm,
# $\|\mathcal{B}^\pi Q - \mathcal{B}^\pi Q'\|_\infty \le \gamma \|Q - Q'\|_\infty$, so the
# iterates $Q_{k+1} = \mathcal{B}^\pi Q_k$ approach the fixed point at least as fast as
# $\gamma^k$:
#
# $$
# \|Q_k - Q^\pi\|_\infty \le \gamma^k \|Q_0 - Q^\pi\|_\infty .
# $$
#
# On a random MDP with 30 states and 4 actions, start from $Q_0 = 0$ and apply `bellman`:

# %%
rng = np.random.default_rng(0)
mdp = random_mdp(30, 4, rng, gamma=gamma)
pi = random_policy(30, 4, rng)
q_exact = policy_evaluation(mdp, pi)
q = np.zeros_like(q_exact)
gaps = [np.max(np.abs(q - q_exact))]
for _ in range(150):
    q = bellman(mdp, q, pi)
    gaps.append(np.max(np.abs(q - q_exact)))
gaps = np.array(gaps)
k = np.arange(len(gaps))
envelope = gamma**k * gaps[0]

fig, ax = plt.subplots()
ax.semilogy(k, gaps, label=r"$\|Q_k - Q^\pi\|_\infty$ (iteration vs solve)")
ax.semilogy(k, envelope, "k--", label=r"$\gamma^k \|Q_0 - Q^\pi\|_\infty$")
ax.set_xlabel("iteration k")
ax.set_ylabel("sup-norm error")
ax.set_title(r"Bellman iteration converges to the closed form ($\gamma = 0.9$)")
ax.legend()
plt.show()

# %% [markdown]
# **What to notice:** after a fast first step the error falls parallel to the $\gamma^k$ line and
# stays under it: the iteration heads, geometrically, for the very $Q^\pi$ the linear solve
# returns in one step.

# %%
assert np.all(gaps <= envelope + 1e-12)
assert gaps[-1] < 1e-6
# The project's own iterative evaluator (stops at a tolerance) agrees with the solve.
assert np.allclose(iterative_policy_evaluation(mdp, pi, tol=1e-12), q_exact, atol=1e-9)
# And the dense (S*A) x (S*A) system (I - gamma P^pi) Q = R, built explicitly, too.
assert np.allclose(naive_policy_evaluation(mdp, pi), q_exact, atol=1e-10)
assert bellman_residual(mdp, pi, q_exact) < 1e-12

# %% [markdown]
# ## Why $|S|$ unknowns are enough
#
# $Q$ has $|S||A|$ entries, but the next-state part of the backup only needs the state values
# $V(s) = \sum_a \pi(a \mid s) Q(s, a)$. Averaging the Bellman equation over $\pi(\cdot \mid s)$
# gives an equation in $V$ alone,
#
# $$
# V^\pi = r_\pi + \gamma P_\pi V^\pi, \qquad
# P_\pi(s, s') = \sum_a \pi(a \mid s)\, T(s' \mid s, a), \qquad
# r_\pi(s) = \sum_a \pi(a \mid s)\, r(s, a),
# $$
#
# so $V^\pi = (I - \gamma P_\pi)^{-1} r_\pi$ is an $|S| \times |S|$ solve, and one more backup
# recovers every action: $Q^\pi = R + \gamma\, T V^\pi$. A dense solve costs $O(n^3)$, so
# the state-space system is $|A|^3$ times cheaper ($512\times$ for $|A| = 8$).
# `policy_transition` builds $P_\pi$ (`einsum('sat,sa->st', P, pi)`).

# %%
P_pi = policy_transition(mdp, pi)
r_pi = np.sum(pi * mdp.R, axis=1)
v = np.linalg.solve(np.eye(mdp.n_states) - gamma * P_pi, r_pi)
q_from_v = mdp.R + gamma * mdp.expected_next(v)
print("P_pi shape:", P_pi.shape, " rows sum to one:", np.allclose(P_pi.sum(axis=1), 1))
assert np.allclose(v, state_values(q_exact, pi), atol=1e-12)
assert np.allclose(q_from_v, q_exact, atol=1e-12)

# %% [markdown]
# ## Timing at a small size
#
# Same answer, two systems: `policy_evaluation` (states) against `naive_policy_evaluation`
# (the explicit pair system) for $|A| = 6$ and a growing number of states. Times are medians
# of 3 runs on whatever this machine is doing at the moment, so they are printed and plotted,
# not asserted; the agreement of the answers is asserted.

# %%
n_states = [20, 40, 80, 160, 320]
fast, slow, diffs = [], [], []
for S in n_states:
    m = random_mdp(S, 6, np.random.default_rng(S), gamma=gamma)
    p = random_policy(S, 6, np.random.default_rng(S + 1))
    t_fast, q_fast = median_seconds(lambda m=m, p=p: policy_evaluation(m, p), 3)
    t_slow, q_slow = median_seconds(lambda m=m, p=p: naive_policy_evaluation(m, p), 3)
    fast.append(t_fast)
    slow.append(t_slow)
    diffs.append(np.max(np.abs(q_fast - q_slow)))
    print(
        f"S = {S:4d} ({S * 6:5d} pairs): states {t_fast * 1e3:8.2f} ms, "
        f"pairs {t_slow * 1e3:8.2f} ms, speed-up {t_slow / t_fast:7.1f}x, "
        f"max |Q difference| = {diffs[-1]:.1e}"
    )

fig, ax = plt.subplots()
ax.loglog(n_states, np.array(slow) * 1e3, "o-", label=r"pairs: $(I - \gamma P^\pi)Q = R$")
ax.loglog(n_states, np.array(fast) * 1e3, "o-", label=r"states: $(I - \gamma P_\pi)V = r_\pi$")
ax.set_xticks(n_states, labels=[str(S) for S in n_states])
ax.set_xticks([], minor=True)
ax.set_xlabel("number of states |S| (|A| = 6)")
ax.set_ylabel("wall-clock time (ms, median of 3)")
ax.set_title("Exact policy evaluation: state-space solve vs pair-space solve")
ax.legend()
plt.show()

# %% [markdown]
# **What to notice:** the pair-space solve is slower at every size and the gap widens with
# $|S|$ (both curves eventually grow like $|S|^3$, a factor $|A|^3$ apart); at the smallest
# sizes both are dominated by fixed overheads.

# %%
assert max(diffs) < 1e-9

# %% [markdown]
# ## Sparse transitions
#
# An empirical $\hat T$ has at most $n(s, a)$ non-zeros per row, so large empirical MDPs are
# stored as a sparse $(|S||A|) \times |S|$ matrix and solved with `scipy.sparse` (LU for
# moderate sizes, GMRES beyond). `method="auto"` picks the solver (`auto_method`); every method
# solves the same equation:

# %%
sparse_mdp = random_mdp(1000, 4, np.random.default_rng(2), gamma=gamma, n_next=3, sparse=True)
pi_s = random_policy(1000, 4, np.random.default_rng(3))
q_direct = policy_evaluation(sparse_mdp, pi_s)
q_dense = policy_evaluation(sparse_mdp, pi_s, method="dense")
print("auto method:", auto_method(sparse_mdp))
print(f"max |direct - dense| = {np.max(np.abs(q_direct - q_dense)):.1e}")
assert auto_method(sparse_mdp) == "direct"
assert np.allclose(q_direct, q_dense, atol=1e-10)
assert bellman_residual(sparse_mdp, pi_s, q_direct) < 1e-10
