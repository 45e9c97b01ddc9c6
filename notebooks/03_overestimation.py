# %% [markdown]
# # 03 · Why offline RL over-estimates
#
# Online, a policy that believes in a wrong value goes and tries it, and the new data corrects
# the belief. Offline there is no new data: the naive recipe alternates
#
# $$
# \hat Q^{k} = \text{evaluate } \pi_k \text{ in the empirical MDP}, \qquad
# \pi_{k+1}(s) = \arg\max_a \hat Q^{k}(s, a),
# $$
#
# i.e. policy iteration on $(\hat T, \hat r)$, where the evaluation step is the minimiser of
# $\tfrac12 \mathbb{E}_{s,a \sim \mathcal{D}}[(Q - \hat{\mathcal{B}}^{\pi_k} Q)^2]$. This is the
# tabular CQL control loop `cql_control` with $\alpha = 0$ (no conservatism). This notebook
# shows what goes wrong with it when some actions are rare or absent in $\mathcal{D}$.

# %%
import matplotlib.pyplot as plt
import numpy as np

from theory.cql import cql_control
from theory.data import EmpiricalMDP, sample_dataset
from theory.mdp import TabularMDP, expected_return, random_mdp, state_values, value_iteration

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (6.4, 3.8)})
np.set_printoptions(precision=2, suppress=True)

# %% [markdown]
# ## A table with rare actions
#
# Eight states, four actions, random transitions, $\gamma = 0.9$. The mean rewards are the same
# in every state:
#
# | action | mean reward | behaviour probability |
# |---|---|---|
# | 0 | 0.3 | 0.78 |
# | 1 | 0.6 | 0.18 |
# | 2 | -0.5 | 0.02 |
# | 3 | -0.5 | 0.02 |
#
# and every observed reward carries uniform noise in $[-2.5, 2.5]$. So the best policy always
# takes action 1 ($J^* = 0.6/(1-\gamma) = 6$), the behaviour policy is mediocre, and actions 2
# and 3 are bad but seen only once or twice per state in a dataset of $N = 400$ transitions:
# one lucky draw makes them look excellent.

# %%
S, A, gamma, noise = 8, 4, 0.9, 2.5
base = random_mdp(S, A, np.random.default_rng(0), gamma=gamma)
true_mdp = TabularMDP(base.P, np.tile([0.3, 0.6, -0.5, -0.5], (S, 1)), gamma)
behavior = np.tile([0.78, 0.18, 0.02, 0.02], (S, 1))
r_max = 0.6 + noise  # bound on every observed reward
q_star, _ = value_iteration(true_mdp)
j_star = float(true_mdp.d0 @ q_star.max(axis=1))
j_behavior = expected_return(true_mdp, behavior)
print(f"J* = {j_star:.3f}, J(pi_beta) = {j_behavior:.3f}")
assert np.isclose(j_star, 0.6 / (1 - gamma))


# %% [markdown]
# ## The naive loop on one dataset
#
# Sample 400 transitions, build the empirical MDP, and run 8 rounds of evaluate/improve with
# $\alpha = 0$, starting from $\pi_0 = \hat\pi_\beta$. `cql_control(..., mdp=true_mdp)` also
# returns the true $Q^{\pi_k}$ of every iterate, which an offline algorithm never sees. The
# returns $J(\pi) = d_0 \cdot V^\pi$ use a uniform start distribution $d_0$ in both MDPs
# (`expected_return`).

# %%
data = sample_dataset(true_mdp, behavior, 400, np.random.default_rng(103), reward_noise=noise)
emp = EmpiricalMDP.from_dataset(data, gamma, r_max=r_max)
naive = cql_control(emp, alpha=0.0, n_iters=8, mdp=true_mdp)
j_hat = np.array([expected_return(emp.mdp, p) for p in naive.policies])
j_true = np.array([expected_return(true_mdp, p) for p in naive.policies])
final = naive.policies[-1]
chosen = final.argmax(axis=1)
print("n(s, a):\n", emp.counts)
print("final greedy action per state:   ", chosen)
print("count of that action in the data:", emp.counts[np.arange(S), chosen])
print("estimated J(pi_k):", j_hat)
print("true J(pi_k):     ", j_true)

# %%
fig, ax = plt.subplots()
ax.plot(j_hat, "o-", label=r"estimated $\hat J(\pi_k)$ (empirical MDP)")
ax.plot(j_true, "s-", label=r"true $J(\pi_k)$")
ax.axhline(j_behavior, color="gray", ls=":", label=r"true $J(\pi_\beta)$")
ax.axhline(j_star, color="k", ls="--", label=r"optimal $J^*$")
ax.set_xlabel("policy iteration k (k = 0 is the behaviour policy)")
ax.set_ylabel(r"discounted return $d_0 \cdot V$")
ax.set_title(r"Naive offline policy iteration ($\alpha = 0$), N = 400")
ax.legend(fontsize=8, loc="center right", bbox_to_anchor=(1.0, 0.75))
plt.show()

# %% [markdown]
# **What to notice:** at $k = 0$ the estimate of the behaviour policy is about right. After
# one greedy step the estimate jumps to nearly twice the *optimal* return while the true
# return falls below the behaviour policy's, even below zero: the loop has confidently chosen
# the rare, bad actions that happened to pay well once.

# %%
gap0, gap_final = j_hat[0] - j_true[0], j_hat[-1] - j_true[-1]
assert abs(gap0) < 0.5  # evaluating the data's own policy is accurate
assert gap_final > 10  # the improved policy is over-estimated by more than 10
assert j_hat[-1] > j_star  # it looks better than the best possible policy
assert j_true[-1] < j_behavior  # and it is worse than the policy that collected the data
rare = emp.counts[np.arange(S), chosen] <= 2
assert rare.sum() >= S // 2  # at half the states or more it takes an action seen at most twice

# %% [markdown]
# ## Where does the error come from?
#
# Left: the error of the immediate reward estimate, $\hat r(s, a) - r(s, a)$, for every pair in
# $\mathcal{D}$ against its count; the pairs the final policy chooses are circled. Right: the
# resulting state values of that policy, estimated and true.

# %%
seen = emp.seen
r_err = emp.R - true_mdp.R
idx = np.arange(S)
v_hat = state_values(naive.q_hat[-1], final)
v_true = state_values(naive.q_true[-1], final)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
ax1.scatter(emp.counts[seen], r_err[seen], color="gray", s=20, label="pair in D")
ax1.scatter(
    emp.counts[idx, chosen],
    r_err[idx, chosen],
    s=120,
    facecolors="none",
    edgecolors="red",
    label="chosen by the final policy",
)
ax1.axhline(0, color="k", lw=1)
ax1.set_xscale("log")
ax1.set_xlabel("n(s, a) in the dataset")
ax1.set_ylabel(r"$\hat r(s, a) - r(s, a)$")
ax1.set_title("Reward errors: the max picks lucky rare pairs")
ax1.legend(fontsize=8)
width = 0.4
ax2.bar(idx - width / 2, v_hat, width, label=r"estimated $\hat V^{\pi}(s)$")
ax2.bar(idx + width / 2, v_true, width, label=r"true $V^{\pi}(s)$")
ax2.set_xlabel("state s")
ax2.set_ylabel("value of the final naive policy")
ax2.set_title("Local luck, global over-estimation")
ax2.set_ylim(top=1.35 * v_hat.max())
ax2.legend(fontsize=8, loc="upper center", ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to notice:** reward errors shrink with the count and have both signs, but the pairs
# the policy chose with one or two samples all erred *upward*, by around 2: the max selected
# them because they were lucky. Through the backup
# $\hat Q = \hat r + \gamma \hat T \hat V$ that local luck becomes an over-estimate of every
# state's value, by about 12, twice the optimal value itself. The bias is not in the
# estimates themselves: it is created by taking the argmax of noisy estimates.

# %%
chosen_rare = emp.counts[idx, chosen] <= 2
assert np.all(r_err[idx, chosen][chosen_rare] > 1)  # every rare choice was a lucky draw
assert np.all(v_hat > v_true + 5)  # and every state is over-valued by more than 5

# %% [markdown]
# ## Evaluation is not the culprit, selection is
#
# Repeat on 20 independent datasets of the same size. The estimate of $\hat\pi_\beta$ (a policy
# fixed before looking at the noise) errs in both directions and averages near zero; the
# estimate of the greedy policy errs in one direction only.

# %%
err_beta, err_greedy, worse = [], [], []
for seed in range(20):
    d = sample_dataset(true_mdp, behavior, 400, np.random.default_rng(seed), reward_noise=noise)
    e = EmpiricalMDP.from_dataset(d, gamma, r_max=r_max)
    run = cql_control(e, alpha=0.0, n_iters=8)
    first, last = run.policies[0], run.policies[-1]
    err_beta.append(expected_return(e.mdp, first) - expected_return(true_mdp, first))
    err_greedy.append(expected_return(e.mdp, last) - expected_return(true_mdp, last))
    worse.append(expected_return(true_mdp, last) < j_behavior)
err_beta, err_greedy = np.array(err_beta), np.array(err_greedy)
print(
    f"behaviour policy: mean error {err_beta.mean():+.2f}, range [{err_beta.min():+.2f}, {err_beta.max():+.2f}]"
)
print(
    f"greedy policy:    mean error {err_greedy.mean():+.2f}, range [{err_greedy.min():+.2f}, {err_greedy.max():+.2f}]"
)
print(f"greedy policy worse than the behaviour policy in {sum(worse)} of 20 datasets")

fig, ax = plt.subplots()
bins = np.linspace(min(err_beta.min(), err_greedy.min()), err_greedy.max(), 25)
ax.hist(err_beta, bins=bins, alpha=0.7, label=r"$\hat\pi_\beta$ (fixed policy)")
ax.hist(err_greedy, bins=bins, alpha=0.7, label="greedy policy after 8 rounds")
ax.axvline(0, color="k", lw=1)
ax.set_xlabel(r"estimation error $\hat J(\pi) - J(\pi)$")
ax.set_ylabel("number of datasets (of 20)")
ax.set_title("Same data, same evaluator: only the selected policy is biased")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice:** the blue errors straddle zero; the orange ones are all large and
# positive.

# %%
assert abs(err_beta.mean()) < 0.5 and err_beta.min() < 0 < err_beta.max()
assert err_greedy.min() > 0 and err_greedy.mean() > 5
assert sum(worse) >= 10

# %% [markdown]
# ## Unseen actions: whatever value they get, the max will find it
#
# In a table, a pair that never occurs has no data term at all: *any* value minimises the
# squared TD error. The project fills it pessimistically, but a function approximator fills it
# with whatever its extrapolation says. Model an optimistic extrapolation by giving unseen
# pairs the reward $+R_{\max}$ instead (`unseen_reward=r_max`). Each greedy step then moves to
# an unseen action wherever one exists, and the value there becomes
# $\hat Q(s, a) = R_{\max} + \gamma \hat V(s)$, i.e. $\hat V(s) = R_{\max}/(1 - \gamma)$,
# the largest value the reward range allows, with no data behind it.

# %%
optimistic = EmpiricalMDP.from_dataset(data, gamma, r_max=r_max, unseen_reward=r_max)
opt = cql_control(optimistic, alpha=0.0, n_iters=8)
j_hat_opt = expected_return(optimistic.mdp, opt.policies[-1])
j_true_opt = expected_return(true_mdp, opt.policies[-1])
has_unseen = ~emp.seen.all(axis=1)
v_opt = state_values(opt.q_hat[-1], opt.policies[-1])
print("states with an unseen action:", np.flatnonzero(has_unseen))
print("V_hat of the final policy:", v_opt, f"(R_max / (1 - gamma) = {r_max / (1 - gamma):.1f})")
print(f"estimated J = {j_hat_opt:.2f}, true J = {j_true_opt:.2f}")

# %%
picks_unseen = ~optimistic.seen[np.arange(S), opt.policies[-1].argmax(axis=1)]
assert np.array_equal(picks_unseen, has_unseen)  # the max goes to every unseen action
assert np.allclose(v_opt[has_unseen], r_max / (1 - gamma))
assert j_hat_opt > j_hat[-1] and j_true_opt < j_behavior

# %% [markdown]
# ## Does more data fix it?
#
# Yes, eventually: with enough samples per pair no action stays rare. Run the naive loop on 5
# datasets per size and average.

# %%
sizes = [200, 400, 800, 1600, 3200, 6400, 12800, 25600]
mean_over, mean_true = [], []
for n in sizes:
    o, t = [], []
    for k in range(5):
        d = sample_dataset(
            true_mdp, behavior, n, np.random.default_rng(7 * n + k), reward_noise=noise
        )
        e = EmpiricalMDP.from_dataset(d, gamma, r_max=r_max)
        last = cql_control(e, alpha=0.0, n_iters=8).policies[-1]
        o.append(expected_return(e.mdp, last) - expected_return(true_mdp, last))
        t.append(expected_return(true_mdp, last))
    mean_over.append(np.mean(o))
    mean_true.append(np.mean(t))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
ax1.semilogx(sizes, mean_over, "o-")
ax1.axhline(0, color="k", lw=1)
ax1.set_xlabel("dataset size N")
ax1.set_ylabel(r"mean $\hat J(\pi_K) - J(\pi_K)$")
ax1.set_title("Over-estimation of the naive policy")
ax2.semilogx(sizes, mean_true, "s-", label=r"naive $\pi_K$")
ax2.axhline(j_behavior, color="gray", ls=":", label=r"$\pi_\beta$")
ax2.axhline(j_star, color="k", ls="--", label="optimal")
ax2.set_xlabel("dataset size N")
ax2.set_ylabel("mean true return J")
ax2.set_title("True return of the naive policy")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to notice:** below about 3000 transitions the naive loop over-estimates by
# several units and returns a policy no better than the behaviour policy; beyond that the
# rare actions have enough samples and the same loop finds the optimum. CQL is about the
# left half of this plot: what to do with the data one has, not the data one wishes for.

# %%
assert mean_over[0] > 5 and abs(mean_over[-1]) < 0.5
assert mean_true[0] < j_behavior and np.isclose(mean_true[-1], j_star)
