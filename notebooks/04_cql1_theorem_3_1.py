# %% [markdown]
# # 04 · CQL(1) and Theorem 3.1: a pointwise lower bound
#
# Notebook 03 showed the naive loop trusting values that no data supports. The first fix in
# the CQL paper is blunt: while fitting $Q$ to the empirical backup, also push $Q$ *down*
# under some distribution $\mu$ over actions. Policy evaluation becomes (paper Eq. 1)
#
# $$
# \hat Q^{k+1} = \arg\min_Q \;
# \alpha\, \mathbb{E}_{s \sim \mathcal{D},\, a \sim \mu(\cdot \mid s)}\big[Q(s, a)\big]
# + \tfrac12\, \mathbb{E}_{s, a \sim \mathcal{D}}\Big[\big(Q(s, a) - \hat{\mathcal{B}}^\pi \hat Q^k(s, a)\big)^2\Big],
# $$
#
# where "$s \sim \mathcal{D}$" weighs state $s$ by $n(s)/N$ and "$s, a \sim \mathcal{D}$"
# weighs the pair by $n(s, a)/N$. This notebook solves the update in closed form, finds its
# fixed point, and checks Theorem 3.1: for $\alpha$ large enough the fixed point lies below the
# true $Q^\pi$ at every pair.

# %%
import matplotlib.pyplot as plt
import numpy as np

from theory.bounds import theorem_3_1
from theory.cql import cql_evaluate, cql_iterate, cql_objective, cql_penalty
from theory.data import EmpiricalMDP, sample_dataset
from theory.mdp import bellman, policy_evaluation, random_mdp, random_policy, solve_discounted

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (6.4, 3.8)})
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## The setting
#
# A random MDP with 6 states, 3 actions and $\gamma = 0.8$; rewards in $[-1, 1]$ plus uniform
# noise of $\pm 0.5$, so $R_{\max} = 1.5$. The behaviour policy takes every action with
# probability at least 0.14, so every pair is in $\mathcal{D}$ once $N$ is a few hundred, and
# we evaluate a different random policy $\pi$, with $\mu = \pi$.

# %%
S, A, gamma, noise = 6, 3, 0.8, 0.5
r_max = 1.0 + noise
rng = np.random.default_rng(4)
true_mdp = random_mdp(S, A, rng, gamma=gamma)
behavior = random_policy(S, A, rng, concentration=3.0)
pi = random_policy(S, A, rng, concentration=1.0)
mu = pi
data = sample_dataset(true_mdp, behavior, 10_000, np.random.default_rng(10), reward_noise=noise)
emp = EmpiricalMDP.from_dataset(data, gamma, r_max=r_max)
print("pi_beta_hat =\n", emp.pi_beta)
print("pi = mu =\n", pi)
assert emp.seen.all()

# %% [markdown]
# ## One update in closed form
#
# The objective is a sum over pairs. Multiply by $N$ and write $y = \hat{\mathcal{B}}^\pi \hat Q^k$:
# the terms with $Q(s, a)$ are $\alpha\, n(s) \mu(a \mid s) Q(s, a) + \tfrac12 n(s, a) (Q(s, a) - y(s, a))^2$.
# Setting the derivative to zero,
#
# $$
# \alpha\, n(s) \mu(a \mid s) + n(s, a)\big(Q(s, a) - y(s, a)\big) = 0
# \quad\Longrightarrow\quad
# \hat Q^{k+1}(s, a) = \hat{\mathcal{B}}^\pi \hat Q^k(s, a) - \alpha \frac{\mu(a \mid s)}{\hat\pi_\beta(a \mid s)},
# $$
#
# since $n(s)/n(s, a) = 1/\hat\pi_\beta(a \mid s)$. Every update subtracts the same penalty
# $\alpha\,\mu/\hat\pi_\beta$, large where $\mu$ likes an action the data rarely took.
# `cql_iterate` applies this update; check that its output really minimises `cql_objective`
# (the objective above, evaluated exactly) by perturbing it in random directions.

# %%
alpha = 1.0
q_k = rng.normal(size=(S, A))
q_next = cql_iterate(emp, pi, alpha, n_iters=1, mu=mu, q0=q_k).q[1]
target = bellman(emp.mdp, q_k, pi)
best = cql_objective(emp, q_next, target, alpha, mu)
perturbed = [
    cql_objective(emp, q_next + eps * rng.normal(size=(S, A)), target, alpha, mu)
    for eps in np.repeat([1e-3, 1e-2, 1e-1, 1.0], 50)
]
print(f"objective at the update: {best:.6f}; smallest of 200 perturbations: {min(perturbed):.6f}")
assert best < min(perturbed)
assert np.allclose(q_next, target - alpha * mu / emp.pi_beta)

# %% [markdown]
# ## The fixed point is policy evaluation with a penalised reward
#
# At convergence $\hat Q = \hat{\mathcal{B}}^\pi \hat Q - \alpha\, \mu/\hat\pi_\beta$, which is
# the Bellman equation of the empirical MDP with reward $\hat r - \alpha\, \mu/\hat\pi_\beta$.
# Notebook 02's solver gives it exactly (`cql_evaluate`), and by linearity
#
# $$
# \hat Q = \hat Q^\pi - \alpha\, (I - \gamma \hat P^\pi)^{-1} \frac{\mu}{\hat\pi_\beta},
# $$
#
# where $\hat Q^\pi$ is plain policy evaluation in the empirical MDP. The update is a
# $\gamma$-contraction, so iterating it converges to this point like $\gamma^k$.

# %%
fixed = cql_evaluate(emp, pi, alpha, mu=mu)
iterates = cql_iterate(emp, pi, alpha, n_iters=120, mu=mu).q
err = np.max(np.abs(iterates - fixed.q), axis=(1, 2))
k = np.arange(len(err))

fig, ax = plt.subplots()
ax.semilogy(k, err, label=r"$\|\hat Q^k - \hat Q\|_\infty$ (CQL(1) iterates)")
ax.semilogy(k, gamma**k * err[0], "k--", label=r"$\gamma^k \|\hat Q^0 - \hat Q\|_\infty$")
ax.set_xlabel("iteration k")
ax.set_ylabel("sup-norm distance to the closed form")
ax.set_title(r"CQL(1) updates converge to the penalised evaluation ($\alpha = 1$)")
ax.legend()
plt.show()

# %% [markdown]
# **What to notice:** the iterates of Eq. 1 reach the closed-form fixed point at the rate of
# plain policy evaluation; the penalty changes where they go, not how fast.

# %%
assert np.all(err <= gamma**k * err[0] + 1e-12) and err[-1] < 1e-9
q_hat_pi = policy_evaluation(emp.mdp, pi)
penalty = cql_penalty(emp, mu, "cql1")  # mu / pi_beta_hat
propagated = solve_discounted(emp.mdp, pi, penalty)  # (I - gamma P_hat^pi)^{-1} mu/pi_beta_hat
assert np.allclose(penalty, mu / emp.pi_beta)
assert np.allclose(fixed.q, q_hat_pi - alpha * propagated, atol=1e-12)

# %% [markdown]
# ## Without sampling error, any $\alpha > 0$ is a lower bound
#
# The identity above holds *inside* the empirical MDP. $(I - \gamma \hat P^\pi)^{-1}$ has
# non-negative entries and $\mu/\hat\pi_\beta \ge 0$, so the subtracted term is non-negative:
# if the empirical backup were the true one, $\hat Q \le Q^\pi$ for every $\alpha > 0$, and
# the gap grows linearly in $\alpha$ with a pair-specific slope.

# %%
alphas = np.linspace(0, 2, 21)
q_by_alpha = np.array([cql_evaluate(emp, pi, a, mu=mu).q for a in alphas])
pairs = [(0, 0), (3, 2), (5, 1)]
fig, ax = plt.subplots()
for s, a in pairs:
    (line,) = ax.plot(alphas, q_by_alpha[:, s, a], label=f"(s, a) = ({s}, {a})")
    ax.plot(alphas, q_hat_pi[s, a] - alphas * propagated[s, a], ":", color=line.get_color())
ax.set_xlabel(r"penalty weight $\alpha$")
ax.set_ylabel(r"CQL(1) fixed point $\hat Q(s, a)$")
ax.set_title(r"$\hat Q = \hat Q^\pi - \alpha (I - \gamma\hat P^\pi)^{-1}\mu/\hat\pi_\beta$")
ax.legend(title="solid: cql_evaluate, dotted: identity", fontsize=8)
plt.show()

# %% [markdown]
# **What to notice:** each pair's value is a straight line starting at the empirical
# $\hat Q^\pi$ and falling as $\alpha$ grows; the dotted identity lies exactly on it. The
# slopes differ: a pair falls fastest when it, and the pairs $\pi$ visits after it, have a
# large $\mu/\hat\pi_\beta$, i.e. when $\pi$ prefers actions the behaviour policy rarely took.

# %%
assert np.allclose(q_by_alpha, q_hat_pi[None] - alphas[:, None, None] * propagated[None])
assert np.all(propagated > 0) and np.all(np.diff(q_by_alpha, axis=0) < 0)

# %% [markdown]
# ## Theorem 3.1: with sampling error
#
# With a finite dataset $\hat{\mathcal{B}}^\pi \ne \mathcal{B}^\pi$, and the empirical
# $\hat Q^\pi$ can sit above the truth. Notebook 01's concentration bound controls the
# difference, $|\hat{\mathcal{B}}^\pi Q - \mathcal{B}^\pi Q| \le e(s, a) = C_{r,T,\delta} R_{\max} / ((1-\gamma)\sqrt{n(s, a)})$
# with probability $1 - \delta$, and Theorem 3.1 (Kumar et al. 2020) follows: for all
# $s \in \mathcal{D}$ and all $a$,
#
# $$
# \hat Q(s, a) \le Q^\pi(s, a)
# - \alpha \Big[(I - \gamma P^\pi)^{-1} \frac{\mu}{\hat\pi_\beta}\Big](s, a)
# + \Big[(I - \gamma P^\pi)^{-1} e\Big](s, a).
# $$
#
# *Proof in three lines.* The fixed point satisfies
# $\hat Q = \hat{\mathcal{B}}^\pi \hat Q - \alpha\mu/\hat\pi_\beta \le \mathcal{B}^\pi \hat Q - \alpha\mu/\hat\pi_\beta + e$,
# i.e. $(I - \gamma P^\pi)\hat Q \le R - \alpha\mu/\hat\pi_\beta + e$; apply the monotone
# $(I - \gamma P^\pi)^{-1}$ and use $Q^\pi = (I - \gamma P^\pi)^{-1}R$ (notebook 02).
#
# So $\hat Q \le Q^\pi$ is guaranteed once the penalty outweighs the sampling term, i.e. for
# $\alpha \ge \alpha^\star = \max \,[(I-\gamma P^\pi)^{-1} e] \,/\, [(I-\gamma P^\pi)^{-1} \mu/\hat\pi_\beta]$
# over pairs of states in $\mathcal{D}$. The paper states the simpler sufficient condition
# $\alpha \ge \max e / (\mu/\hat\pi_\beta)$ before propagation (`alpha_sufficient`).
# `theorem_3_1` returns every term, both thresholds and the verdicts.

# %%
sizes = [1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
s0, a0 = 3, 2  # the pair shown on the left
runs = []
for n in sizes:
    d = sample_dataset(true_mdp, behavior, n, np.random.default_rng(n), reward_noise=noise)
    e = EmpiricalMDP.from_dataset(d, gamma, r_max=r_max)
    runs.append(theorem_3_1(e, true_mdp, pi, alpha, r_max=r_max, delta=0.1, mu=mu))
thresholds = np.array([t.alpha_threshold for t in runs])
sufficient = np.array([t.alpha_sufficient for t in runs])
for n, t in zip(sizes, runs, strict=True):
    print(
        f"N = {n:>9,}: bound holds {t.bound_holds}, Q_hat <= Q^pi everywhere "
        f"{t.conclusion_holds}, alpha* = {t.alpha_threshold:.3f}, paper's = {t.alpha_sufficient:.1f}"
    )

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.semilogx(sizes, [t.rhs[s0, a0] for t in runs], "o-", label="right-hand side of Thm 3.1")
ax1.semilogx(sizes, [t.q_hat[s0, a0] for t in runs], "s-", label=r"CQL(1) $\hat Q$")
ax1.axhline(runs[0].q_pi[s0, a0], color="k", ls="--", label=r"true $Q^\pi$")
ax1.set_xlabel("dataset size N")
ax1.set_ylabel(f"value at (s, a) = ({s0}, {a0})")
ax1.set_title(rf"Theorem 3.1 at one pair, $\alpha$ = {alpha:g}")
ax1.legend(fontsize=8)
ax2.loglog(sizes, thresholds, "o-", label=r"$\alpha^\star$ (propagated, exact)")
ax2.loglog(sizes, sufficient, "s-", label="paper's pointwise condition")
ax2.axhline(alpha, color="gray", ls=":", label=rf"$\alpha$ = {alpha:g} used on the left")
ax2.set_xlabel("dataset size N")
ax2.set_ylabel(r"smallest $\alpha$ the theorem needs")
ax2.set_title(r"The $\alpha$ threshold falls like $1/\sqrt{N}$")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to notice:** on the left the bound (blue) always lies above the estimate (orange), as
# the theorem promises, and it only drops under $Q^\pi$ once $N$ is large enough that the
# sampling term is smaller than the penalty; that is exactly where, on the right, $\alpha^\star$
# crosses the $\alpha$ in use. Both thresholds fall like $1/\sqrt{N}$; the paper's pointwise
# condition is tens of times larger here (ratio printed below), because it asks the penalty to
# beat the sampling error at each pair separately, including pairs where $\mu/\hat\pi_\beta$
# is tiny ($\pi$ takes some actions with probability 0.01).

# %%
assert all(t.bound_holds and t.premise_holds for t in runs)
assert np.all(thresholds <= sufficient) and np.all(np.diff(thresholds) < 0)
slope = np.polyfit(np.log(sizes), np.log(thresholds), 1)[0]
print(f"log-log slope of alpha*: {slope:.3f}; paper's / exact: {np.round(sufficient / thresholds)}")
assert -0.6 < slope < -0.4
for t in runs:
    rhs_below = np.all((t.rhs <= t.q_pi + 1e-9)[t.checked])
    assert rhs_below == (alpha >= t.alpha_threshold)  # the threshold is exactly where it flips

# %% [markdown]
# ## How conservative is the threshold?
#
# On one dataset ($N = 10{,}000$) sweep $\alpha$. Because $\hat Q$ is linear in $\alpha$, the
# smallest $\alpha$ that *actually* puts $\hat Q$ under $Q^\pi$ on every pair is
# $\max_{s,a} (\hat Q^\pi - Q^\pi)/[(I - \gamma\hat P^\pi)^{-1}\mu/\hat\pi_\beta]$. The
# theorem cannot know it (it needs the true $Q^\pi$), so its $\alpha^\star$ must cover the
# worst case the concentration bound allows.

# %%
q_pi = policy_evaluation(true_mdp, pi)
alpha_actual = max(0.0, float(np.max((q_hat_pi - q_pi) / propagated)))
t_star = theorem_3_1(emp, true_mdp, pi, alpha, r_max=r_max, mu=mu)
sweep = np.linspace(0, 1.5 * t_star.alpha_threshold, 61)
worst_q = [np.max(cql_evaluate(emp, pi, a, mu=mu).q - q_pi) for a in sweep]
worst_rhs = [
    np.max(theorem_3_1(emp, true_mdp, pi, a, r_max=r_max, mu=mu).rhs - q_pi) for a in sweep
]
print(f"alpha actually needed: {alpha_actual:.4f}; theorem's alpha*: {t_star.alpha_threshold:.3f}")

fig, ax = plt.subplots()
ax.plot(sweep, worst_rhs, label=r"$\max_{s,a}$ (Thm 3.1 bound $- Q^\pi$)")
ax.plot(sweep, worst_q, label=r"$\max_{s,a}$ ($\hat Q - Q^\pi$)")
ax.axhline(0, color="k", lw=1)
ax.axvline(t_star.alpha_threshold, color="C0", ls="--", label=r"theorem's $\alpha^\star$")
ax.axvline(alpha_actual, color="C1", ls="--", label=r"$\alpha$ actually needed")
ax.set_xlabel(r"penalty weight $\alpha$")
ax.set_ylabel("worst over-estimate")
ax.set_title(r"Lower bound for every $\alpha \geq \alpha^\star$ (N = 10,000)")
ax.legend(fontsize=8, loc="lower left")
plt.show()

# %% [markdown]
# **What to notice:** the bound (blue) crosses zero at the theorem's $\alpha^\star$, and the
# true worst over-estimate (orange) had already crossed at a far smaller $\alpha$: the
# guarantee is valid but pays for a union bound over every pair and for worst-case value
# ranges. Even at the smallest $\alpha$ a little penalty is needed here: without it some
# empirical $\hat Q^\pi$ entries sit above the truth.
#
# One more thing to notice: the penalty $\alpha\,\mu/\hat\pi_\beta$ is positive at *every*
# pair, even at pairs the data covers thousands of times. As $N$ grows the sampling term
# vanishes but the penalty does not, so CQL(1) keeps under-estimating by
# $\alpha (I-\gamma P^\pi)^{-1}\mu/\hat\pi_\beta$. Notebook 05 removes most of that bias.

# %%
assert 0 < alpha_actual <= t_star.alpha_threshold
above = sweep >= t_star.alpha_threshold
assert np.all(np.array(worst_rhs)[above] <= 1e-9) and np.all(np.array(worst_rhs)[~above] > 0)
assert np.all(np.array(worst_q)[sweep >= alpha_actual] <= 1e-9)
assert theorem_3_1(
    emp, true_mdp, pi, 1.01 * t_star.alpha_threshold, r_max=r_max, mu=mu
).conclusion_holds

# %% [markdown]
# ## Your own property test
#
# One MDP is an example; a theorem is a claim about all of them. `theory.strategies` draws
# random MDPs, datasets from them with their counts, and policies the data supports, for
# [hypothesis](https://hypothesis.readthedocs.io), which searches them for a counterexample.
# Two kinds of statement must be told apart. Given its premise (the Bellman sampling error
# below $C_{r,T,\delta} R_{\max}/\sqrt{n}$ at every pair), the bound holds **always**:
# `check()` asserts every such statement. The premise itself holds only with **probability
# $1-\delta$** over datasets, so no single example may be asked to satisfy it: a test asserts
# the conclusion where the premise holds (`premise_holds`), or counts a failure rate over many
# datasets. On some datasets no $\alpha$ gives a bound at all (an unseen pair is reachable:
# $\alpha^\star = \infty$); `vacuous` labels them and the test reports how often (`event`).
# The cell below is a complete test file, the same as the README's; save it as
# `test_theorem_3_1.py` and run `pytest` on it.

# %%
from hypothesis import assume, event, given
from hypothesis import strategies as st

from theory.bounds import theorem_3_1
from theory.strategies import offline_problems, policies, supported_policies


@given(offline_problems(), st.floats(1.0, 3.0), st.data())
def test_cql1_is_a_lower_bound_above_the_threshold(problem, frac, data):
    emp, mdp = problem.emp, problem.mdp
    pi = data.draw(policies(problem.n_states, problem.n_actions))
    mu = data.draw(supported_policies(emp))  # supp mu within supp pi_beta_hat
    threshold = theorem_3_1(emp, mdp, pi, 0.0, r_max=problem.r_max, mu=mu).alpha_threshold
    event("vacuous" if threshold == float("inf") else "alpha_threshold finite")
    assume(threshold < float("inf"))  # no alpha gives a bound on this dataset
    r = theorem_3_1(emp, mdp, pi, frac * threshold, r_max=problem.r_max, mu=mu)
    r.check()  # every statement that holds always
    if r.premise_holds:  # true with probability >= 1 - delta over datasets
        assert r.conclusion_holds  # Q_hat <= Q^pi on every state of the data

# %%
test_cql1_is_a_lower_bound_above_the_threshold()  # hypothesis runs 100 random examples
print("Theorem 3.1 held on every example above its threshold")
