# %% [markdown]
# # 01 · Notation and the empirical MDP
#
# Offline RL never touches the environment: everything an algorithm knows is a fixed dataset
# $\mathcal{D} = \{(s_i, a_i, r_i, s'_i)\}_{i=1}^{N}$ collected by some behaviour policy
# $\pi_\beta$. Counting that dataset defines an MDP of its own, the **empirical MDP**, and every
# statement in the CQL paper (Kumar, Zhou, Tucker, Levine 2020) compares quantities computed in
# that MDP with the true ones.
#
# This notebook builds the empirical MDP from counts, fixes what happens where the data is
# silent, and measures how fast it converges to the truth as $N$ grows.

# %%
import matplotlib.pyplot as plt
import numpy as np

from theory.bounds import bellman_sampling_term, concentration_constants, concentration_event
from theory.data import EmpiricalMDP, sample_dataset
from theory.mdp import (
    InvalidMDPError,
    bellman,
    policy_evaluation,
    random_mdp,
    random_policy,
    state_values,
)

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (6.4, 3.8)})
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## Notation
#
# One array layout is used everywhere in the project (states $s$, actions $a$, next states $s'$):
#
# | math | meaning | code | shape |
# |---|---|---|---|
# | $T(s' \mid s, a)$ | transition probability | `P[s, a, s2]` | (S, A, S) |
# | $r(s, a)$ | expected reward | `R[s, a]` | (S, A) |
# | $\pi(a \mid s)$, $\mu(a \mid s)$ | policies, rows sum to one | `pi[s, a]` | (S, A) |
# | $\pi_\beta(a \mid s)$ | behaviour policy that collected $\mathcal{D}$ | `behavior` | (S, A) |
# | $n(s, a)$, $n(s)$ | counts in $\mathcal{D}$ | `emp.counts`, `emp.state_counts` | (S, A), (S,) |
# | $\hat\pi_\beta, \hat T, \hat r$ | empirical estimates | `emp.pi_beta`, `emp.P`, `emp.R` | |
#
# A hat always means "computed from $\mathcal{D}$". The empirical MDP is
#
# $$
# \hat\pi_\beta(a \mid s) = \frac{n(s, a)}{n(s)}, \qquad
# \hat T(s' \mid s, a) = \frac{n(s, a, s')}{n(s, a)}, \qquad
# \hat r(s, a) = \frac{1}{n(s, a)} \sum_{i:\, (s_i, a_i) = (s, a)} r_i .
# $$
#
# $\hat r$ is the **mean reward** observed at $(s, a)$. (The Chinese-language blog post
# “CQL: Conservative Q-Learning for Offline Reinforcement Learning” prints $\hat r$ with $\hat T$'s counting formula, a typo: a reward estimate averages rewards.)

# %% [markdown]
# ## A dataset small enough to count by hand
#
# Three states, two actions, $\gamma = 0.9$, nine transitions. State 2 appears only as a *next*
# state, and action 1 is never taken in state 1.

# %%
#              s  a     r  s'
rows = np.array(
    [
        [0, 0, 1.0, 0],
        [0, 0, 0.0, 1],
        [0, 0, 0.5, 1],
        [0, 1, -1.0, 2],
        [0, 1, 0.0, 1],
        [1, 0, 0.0, 0],
        [1, 0, 1.0, 0],
        [1, 0, 0.5, 1],
        [1, 0, 0.5, 0],
    ]
)
s, a, r, s2 = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2], rows[:, 3].astype(int)
gamma = 0.9
emp = EmpiricalMDP.from_transitions(3, 2, s, a, r, s2, gamma)
print("n(s, a) =\n", emp.counts)
print("n(s)    =", emp.state_counts)
print("pi_beta_hat =\n", emp.pi_beta)
print("r_hat =\n", emp.R)

# %% [markdown]
# Counting the table by hand: state 0 is visited 5 times (action 0 three times, action 1
# twice), state 1 four times (always action 0). The rewards at $(0, 0)$ are $1, 0, 0.5$, so
# $\hat r(0, 0) = 0.5$; at $(0, 1)$ they are $-1, 0$, so $\hat r(0, 1) = -0.5$; at $(1, 0)$
# they are $0, 1, 0.5, 0.5$, so $\hat r(1, 0) = 0.5$. Next states from $(0, 0)$ are
# $0, 1, 1$, from $(0, 1)$ they are $2, 1$, from $(1, 0)$ they are $0, 0, 1, 0$.

# %%
# Every expected value below is the hand count of the table above.
assert np.array_equal(emp.counts, [[3, 2], [4, 0], [0, 0]])
assert np.allclose(emp.pi_beta[0], [3 / 5, 2 / 5]) and np.allclose(emp.pi_beta[1], [1, 0])
assert np.allclose(emp.P[0, 0], [1 / 3, 2 / 3, 0])
assert np.allclose(emp.P[0, 1], [0, 1 / 2, 1 / 2])
assert np.allclose(emp.P[1, 0], [3 / 4, 1 / 4, 0])
assert np.isclose(emp.R[0, 0], 0.5) and np.isclose(emp.R[0, 1], -0.5)
assert np.isclose(emp.R[1, 0], np.mean([0.0, 1.0, 0.5, 0.5]))
# r_hat is a mean of rewards, not a frequency of next states: n(1,0,s'=0)/n(1,0) = 3/4 != 0.5.
assert not np.isclose(emp.R[1, 0], 3 / 4)

# %% [markdown]
# ## Where the data is silent: the unseen-pair convention
#
# Two kinds of holes appear in every finite dataset:
#
# * a **pair** $(s, a)$ with $n(s, a) = 0$ (here $(1, 1)$): $\hat T(\cdot \mid s, a)$ and
#   $\hat r(s, a)$ are $0/0$;
# * a **state** with $n(s) = 0$ (here state 2): $\hat\pi_\beta(\cdot \mid s)$ is $0/0$ too, yet
#   $\hat T$ can still lead there, because state 2 was observed as a next state.
#
# The project fills both the same way, and pessimistically: an unseen pair is *absorbing* (it
# loops back to its own state) with reward $-R_{\max}$, where $R_{\max}$ is the largest
# $|r|$ in $\mathcal{D}$ unless given. So
#
# $$
# \hat Q(s, a) = -R_{\max} + \gamma \hat V(s) \ \text{ at an unseen pair,} \qquad
# \hat V(s) = -\frac{R_{\max}}{1 - \gamma} \ \text{ at a state not in } \mathcal{D}.
# $$
#
# The second value is the lowest any policy can reach, so reaching a state outside the data
# can never make the empirical MDP *over*-estimate (a zero-reward convention could, when true
# rewards are negative). States outside $\mathcal{D}$ get a uniform placeholder row in
# `pi_beta` and `seen_states[s] = False`; the theorems only speak about states in $\mathcal{D}$.

# %%
r_max = np.max(np.abs(r))
print("seen pairs:\n", emp.seen)
print("seen states:", emp.seen_states)
print("T_hat(.|1,1) =", emp.P[1, 1], " r_hat(1,1) =", emp.R[1, 1])
print("T_hat(.|2,a) =", emp.P[2, 0], emp.P[2, 1], " pi_beta_hat(.|2) =", emp.pi_beta[2])

# %%
assert emp.unseen_reward == -r_max == -1.0
assert np.array_equal(emp.P[1, 1], [0, 1, 0]) and emp.R[1, 1] == -r_max  # self-loop at (1, 1)
assert np.array_equal(emp.seen_states, [True, True, False])
# For any policy: Q_hat(1, 1) = -R_max + gamma V_hat(1), and V_hat(2) = -R_max / (1 - gamma).
rng = np.random.default_rng(0)
for _ in range(5):
    pi = random_policy(3, 2, rng)
    q_hat = policy_evaluation(emp.mdp, pi)
    v_hat = state_values(q_hat, pi)
    assert np.isclose(q_hat[1, 1], -r_max + gamma * v_hat[1])
    assert np.isclose(v_hat[2], -r_max / (1 - gamma))
print("V_hat of the last random policy:", v_hat)

# %% [markdown]
# The CQL penalties divide by $\hat\pi_\beta$, so they need a policy $\mu$ whose support lies
# inside that of $\hat\pi_\beta$ at every state of $\mathcal{D}$. A policy that puts mass on
# $(1, 1)$ is refused with an error naming the pair, never turned into `inf` or `nan`:

# %%
mu_bad = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
try:
    emp.check_support(mu_bad)
    raise AssertionError("a policy outside the data's support was accepted")
except InvalidMDPError as err:
    print("InvalidMDPError:", err)
    assert "mu[1, 1]" in str(err)
# Mass anywhere at state 2 is fine: it is not in D, so nothing is divided there.
emp.check_support(np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]]))

# %% [markdown]
# ## More data, smaller errors: the $1/\sqrt{n}$ rate
#
# Now sample from a known random MDP (6 states, 3 actions, rewards in $[-1, 1]$ plus uniform
# noise of width $\pm 0.5$) with a behaviour policy that takes every action with probability at
# least about 0.1. For each dataset size $N$ and 10 datasets, measure the worst error over
# states and pairs in $\mathcal{D}$:
#
# $$
# \max_s \max_a |\hat\pi_\beta - \pi_\beta|, \qquad
# \max_{s,a} |\hat r - r|, \qquad
# \max_{s,a} \|\hat T(\cdot \mid s, a) - T(\cdot \mid s, a)\|_1 .
# $$
#
# Each is an average of $n(s, a) \propto N$ bounded samples, so each should fall like
# $1/\sqrt{N}$: a straight line of slope $-1/2$ on log-log axes.

# %%
S, A, noise = 6, 3, 0.5
rng = np.random.default_rng(1)
true_mdp = random_mdp(S, A, rng, gamma=0.9)
behavior = random_policy(S, A, rng, concentration=2.0)
r_bound = 1.0 + noise  # every observed reward lies in [-1.5, 1.5]
sizes = np.logspace(2, 5, 7).astype(int)
n_datasets = 10
constants = concentration_constants(S, A, delta=0.1, r_max=r_bound)
errors = np.zeros((3, len(sizes), n_datasets))
scaled = np.zeros((2, len(sizes), n_datasets))  # sqrt(n(s,a)) x error, worst pair
events = []
for i, n in enumerate(sizes):
    for k in range(n_datasets):
        data = sample_dataset(
            true_mdp, behavior, int(n), np.random.default_rng(1000 * i + k), reward_noise=noise
        )
        big = EmpiricalMDP.from_dataset(data, true_mdp.gamma, r_max=r_bound)
        event = concentration_event(big, true_mdp, constants)
        events.append(event.holds)
        errors[0, i, k] = np.abs(big.pi_beta - behavior)[big.seen_states].max()
        errors[1, i, k] = event.reward_error[big.seen].max()
        errors[2, i, k] = event.transition_error[big.seen].max()
        root_n = np.sqrt(big.counts)
        scaled[0, i, k] = (root_n * event.reward_error)[big.seen].max()
        scaled[1, i, k] = (root_n * event.transition_error)[big.seen].max()
mean_err = errors.mean(axis=2)
slopes = [np.polyfit(np.log(sizes), np.log(m), 1)[0] for m in mean_err]
print("fitted log-log slopes:", np.round(slopes, 3))

# %%
labels = [
    r"$\max|\hat\pi_\beta - \pi_\beta|$",
    r"$\max|\hat r - r|$",
    r"$\max\|\hat T - T\|_1$",
]
fig, ax = plt.subplots()
for m, label, slope in zip(mean_err, labels, slopes, strict=True):
    ax.loglog(sizes, m, "o-", label=f"{label} (slope {slope:.2f})")
ax.loglog(sizes, 3 * sizes**-0.5, "k--", label=r"$3/\sqrt{N}$")
ax.set_xlabel("dataset size N (transitions)")
ax.set_ylabel("worst error over D (mean of 10 datasets)")
ax.set_title("Empirical MDP error vs dataset size")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice:** all three lines run parallel to the dashed $1/\sqrt{N}$ guide: a hundred
# times more data buys ten times smaller errors, never more.

# %%
for slope in slopes:
    assert -0.6 < slope < -0.4, slopes

# %% [markdown]
# ## How large can the error be? The concentration constants
#
# The theorems do not use a rate, they use an inequality that holds with probability at least
# $1 - \delta$ for every pair at once:
#
# $$
# |\hat r(s, a) - r(s, a)| \le \frac{C_{r,\delta}}{\sqrt{n(s, a)}}, \qquad
# \|\hat T(\cdot \mid s, a) - T(\cdot \mid s, a)\|_1 \le \frac{C_{T,\delta}}{\sqrt{n(s, a)}} .
# $$
#
# `concentration_constants` instantiates them: Hoeffding's inequality for rewards in
# $[-R_{\max}, R_{\max}]$ gives $C_r = R_{\max}\sqrt{2 \ln(2/\delta')}$, the L1 deviation
# bound of Weissman et al. (2003) gives $C_T = \sqrt{2 \ln((2^{|S|} - 2)/\delta')}$, and a
# union bound over the $2|S||A|$ inequalities sets $\delta' = \delta / (2|S||A|)$. Multiplying
# each error by $\sqrt{n(s, a)}$ removes the rate; what is left must stay below the constant.

# %%
print(f"C_r = {constants.C_r:.3f}, C_T = {constants.C_T:.3f} (delta = {constants.delta})")
fig, ax = plt.subplots()
for row, name, const in (
    (scaled[0], r"$\sqrt{n}\,|\hat r - r|$", constants.C_r),
    (scaled[1], r"$\sqrt{n}\,\|\hat T - T\|_1$", constants.C_T),
):
    (line,) = ax.semilogx(sizes, row.max(axis=1), "o-", label=f"worst of 10 datasets: {name}")
    ax.axhline(const, color=line.get_color(), ls="--", label=f"constant ({const:.2f})")
ax.set_xlabel("dataset size N (transitions)")
ax.set_ylabel(r"error $\times \sqrt{n(s,a)}$")
ax.set_ylim(0, 1.5 * max(constants.C_r, constants.C_T))
ax.set_title("Scaled errors stay below the concentration constants")
ax.legend(fontsize=8, loc="upper center", ncol=2)
plt.show()

# %% [markdown]
# **What to notice:** the scaled errors are flat in $N$ (the rate is exactly $1/\sqrt{n}$) and
# stay under their dashed constants. The reward error uses a fifth of its allowance (Hoeffding
# prepares for rewards anywhere in $[-R_{\max}, R_{\max}]$, the noise here is narrower); the
# transition error comes closer, since the worst of 18 pairs in 10 datasets is taken. Both
# constants are paid again in the theorems' sampling terms, which is why those will look loose
# in notebooks 04-05.

# %%
assert all(events), "a concentration inequality failed on one of the 70 datasets"
assert scaled[0].max() <= constants.C_r and scaled[1].max() <= constants.C_T

# %% [markdown]
# ## From model error to Bellman error
#
# The empirical Bellman operator $\hat{\mathcal{B}}^\pi Q = \hat r + \gamma \hat T (\pi \cdot Q)$
# differs from the true one by at most
#
# $$
# |\hat{\mathcal{B}}^\pi Q - \mathcal{B}^\pi Q|(s, a) \le
# \frac{C_r + \gamma C_T \, 2R_{\max}/(1 - \gamma)}{\sqrt{n(s, a)}}
# = \frac{C_{r,T,\delta} R_{\max}}{(1 - \gamma)\sqrt{n(s, a)}}
# $$
#
# whenever $\|\pi \cdot Q\|_\infty \le 2R_{\max}/(1-\gamma)$ (reward error plus $\gamma$ times
# the L1 error times the largest value). `bellman_sampling_term` returns this per pair,
# $+\infty$ where $n(s, a) = 0$: it is the sampling term of Theorems 3.1 and 3.2. Checked on the
# largest dataset above (`big`, the last one sampled) with the true $Q^\pi$ of the behaviour policy:

# %%
q_true = policy_evaluation(true_mdp, behavior)
bellman_gap = np.abs(bellman(big.mdp, q_true, behavior) - bellman(true_mdp, q_true, behavior))
bound = bellman_sampling_term(big.counts, constants, true_mdp.gamma)
print(f"largest |B_hat Q - B Q| = {bellman_gap.max():.4f}; smallest bound = {bound.min():.4f}")
assert np.all(bellman_gap <= bound)
