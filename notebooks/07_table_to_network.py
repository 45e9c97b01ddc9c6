# %% [markdown]
# # 07 · From table to network: the deep loss on a table, then discrete CQL on CartPole
#
# Notebooks 04-06 solved CQL exactly: linear solves and Newton steps on the empirical MDP. Deep
# CQL never solves anything. It takes gradient steps on a loss computed from minibatches, with a
# target network standing in for the previous iterate. Before trusting a network trained that
# way, check the loss itself: give the deep code a *table* $Q[s, a]$ in place of a network, the
# whole dataset as its batch, and plain gradient descent as its optimiser. If the loss is right,
# descent must land on the fixed point that `theory.cql.cql_h_evaluate` computes exactly.
#
# Then replace the table by a small network and train `DiscreteCQL` on CartPole, next to the
# same learner without the regulariser (naive offline Double DQN) and behaviour cloning.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from deep.algos import DiscreteBC, DiscreteBCConfig, DiscreteCQL, DiscreteCQLConfig
from deep.data import ReplaySampler, episode_returns, load_dataset, normalize_dataset
from deep.envs import evaluate, normalized_score
from deep.losses import cql_regularizer, td_loss, td_target
from theory.cql import cql_h_evaluate
from theory.data import EmpiricalMDP, sample_dataset
from theory.mdp import random_mdp

# Small tensors: one thread avoids hand-off overhead and keeps runs bit-reproducible.
torch.set_num_threads(1)
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (6.4, 3.8)})
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## The deep loss, written for a table
#
# One critic step of deep CQL(H) on a batch $\{(s_i, a_i, r_i, s'_i)\}_{i=1}^{B}$ minimises
#
# $$
# L(Q) = \alpha \cdot \frac1B \sum_i \Big[T \log \sum_a e^{Q(s_i, a)/T} - Q(s_i, a_i)\Big]
# + \frac12 \cdot \frac1B \sum_i \big(Q(s_i, a_i) - y_i\big)^2,
# \qquad y_i = r_i + \gamma \sum_{a'} \pi(a' \mid s'_i)\, \bar Q(s'_i, a'),
# $$
#
# with the target $y_i$ held fixed (no gradient through $\bar Q$). In `deep.losses` the bracket is
# `cql_regularizer(..., estimator="exact")` and the squared error `td_loss`, the two functions
# `DiscreteCQL.update` calls; $y$ is `td_target` (the agent uses its greedy sibling
# `double_dqn_target`, for control rather than evaluation of a fixed $\pi$). Now let the
# batch be the whole dataset, $B = N$. A batch mean is then an expectation under
# $s \sim \mathcal{D}$, $a \sim \hat\pi_\beta$, and for a table the gradient in one entry is
#
# $$
# \frac{\partial L}{\partial Q(s, a)}
# = \frac{n(s, a)}{N}\Big(Q(s, a) - \hat{\mathcal{B}}^\pi \bar Q(s, a)\Big)
# + \alpha\,\frac{n(s)}{N}\,\mathrm{softmax}(Q/T)(a \mid s) - \alpha\,\frac{n(s, a)}{N},
# $$
#
# because the $y_i$ of the $n(s, a)$ rows at $(s, a)$ average to
# $\hat r(s, a) + \gamma \sum_{s'} \hat T(s' \mid s, a) \sum_{a'} \pi(a' \mid s') \bar Q(s', a')$.
# Use the current table as its own target ($\bar Q = Q$, a target network updated every step)
# and set the gradient to zero; dividing by $n(s, a)/N$ gives notebook 06's CQL(H) fixed point
#
# $$
# Q = \hat{\mathcal{B}}^\pi Q - \alpha\Big(\frac{\mathrm{softmax}(Q/T)}{\hat\pi_\beta} - 1\Big).
# $$
#
# The instance below covers every pair (each action has probability at least 0.1 under the
# behaviour policy), so the deep code's log-sum-exp over *all* actions and theory's over the
# actions seen at $s$ are the same thing.

# %%
S, A, N_ROWS, GAMMA_TABLE = 6, 3, 2_000, 0.9
rng = np.random.default_rng(7)
mdp = random_mdp(S, A, rng, gamma=GAMMA_TABLE)
behavior = np.tile([0.6, 0.3, 0.1], (S, 1))
rows = sample_dataset(mdp, behavior, N_ROWS, rng)
emp = EmpiricalMDP.from_dataset(rows, GAMMA_TABLE)
pi = np.full((S, A), 1.0 / A)  # evaluate the uniform policy
alpha, temperature = 1.0, 1.0
exact = cql_h_evaluate(emp, pi, alpha, temperature=temperature)  # Newton, theory side
plain = cql_h_evaluate(emp, pi, 0.0)  # alpha = 0: plain evaluation in the empirical MDP
print(f"every pair seen: {emp.seen.all()}, fewest visits n(s, a) = {emp.counts.min()}")

s, a = torch.as_tensor(rows.s), torch.as_tensor(rows.a)
r, s2 = torch.as_tensor(rows.r), torch.as_tensor(rows.s2)
done = torch.zeros_like(r)
pi_t = torch.as_tensor(pi)


def descend(
    weight_on_gap: float, half_td: bool, max_steps: int = 20_000
) -> tuple[list[float], np.ndarray]:
    """Gradient descent on the deep loss over a float64 table.

    Returns the sup-norm distance to theory's fixed point at every step, and the final table.

    ``half_td=True`` is the paper's 1/2 TD + alpha gap; ``False`` is the agents' convention,
    TD without the 1/2 plus w gap (so w = 2 alpha gives the same minimiser).
    """
    q_table = torch.zeros(S, A, dtype=torch.float64, requires_grad=True)
    # Step size 1/curvature: per entry at most n(s,a)/N from the TD term plus alpha n(s)/(N T)
    # from the log-sum-exp (times 2 without the 1/2).
    n_sa = torch.bincount(s * A + a, minlength=S * A).double() / N_ROWS
    n_s = torch.bincount(s, minlength=S).double() / N_ROWS
    scale = 1.0 if half_td else 2.0
    curvature = scale * float(n_sa.max() + alpha * n_s.max() / temperature)
    opt = torch.optim.SGD([q_table], lr=1.0 / curvature)
    errors = []
    for _ in range(max_steps):
        with torch.no_grad():  # the target: current table, no gradient
            y = td_target(r, done, (pi_t[s2] * q_table[s2]).sum(-1), GAMMA_TABLE)
        gap = cql_regularizer(q_table[s, a], q_table[s], estimator="exact", temperature=temperature)
        td = td_loss(q_table[s, a], y)
        loss = (0.5 * td if half_td else td) + weight_on_gap * gap.gap
        opt.zero_grad()
        loss.backward()
        errors.append(float(np.abs(q_table.detach().numpy() - exact.q).max()))
        if q_table.grad.abs().max() < 1e-10:
            break
        opt.step()
    return errors, q_table.detach().numpy()


errors, q_paper = descend(alpha, half_td=True)
errors_agent, q_agent = descend(2 * alpha, half_td=False)
print(f"paper form: {len(errors)} steps, max |Q - Q_theory| = {errors[-1]:.1e}")
print(
    f"agent form (TD + w gap, w = 2 alpha): {len(errors_agent)} steps, error {errors_agent[-1]:.1e}"
)
print(
    f"how far the penalty moves Q: max |Q_CQL(H) - Q_plain| = {np.abs(exact.q - plain.q).max():.2f}"
)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.semilogy(errors, label=r"$\frac{1}{2}$TD + $\alpha\,$gap (paper)")
ax1.semilogy(errors_agent, "--", label=r"TD + $w\,$gap, $w = 2\alpha$ (agents)")
ax1.axhline(1e-4, color="gray", ls=":", lw=1, label="1e-4")
ax1.set_xlabel("gradient step (whole dataset as batch)")
ax1.set_ylabel(r"$\max_{s,a} |Q_k - \hat Q_{\mathrm{CQL(H)}}|$")
ax1.set_title("Deep loss on a table vs theory's fixed point")
ax1.legend(fontsize=8)
pairs = np.arange(S * A)
ax2.plot(pairs, plain.q.ravel(), "s", mfc="none", label=r"plain evaluation ($\alpha$ = 0)")
ax2.plot(pairs, exact.q.ravel(), "o", ms=8, mfc="none", label="theory: CQL(H) fixed point")
ax2.plot(pairs, q_paper.ravel(), "x", color="k", label="deep loss, gradient descent")
ax2.set_xlabel("pair index s * |A| + a")
ax2.set_ylabel("Q(s, a)")
ax2.set_title(rf"Where it lands ($\alpha$ = {alpha}, T = {temperature})")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to notice:** the error falls geometrically to round-off, in both conventions, and the
# crosses sit inside theory's circles, not on plain evaluation's squares. The loss functions the
# deep agents use therefore solve the paper's Eq. 4 when they are allowed to: the only
# differences left between this table and a deep agent are the network, the minibatches, the
# target network's lag, and (for continuous actions) the sampled log-sum-exp of notebook 08.
# The agents write the TD term without the $\frac12$ (as the official code and CORL do), so
# their weight $w$ is twice the paper's $\alpha$.

# %%
assert errors[-1] < 1e-4 and errors_agent[-1] < 1e-4  # the bridge: deep loss -> theory
assert np.abs(q_paper - q_agent).max() < 1e-6  # TD + w gap with w = 2 alpha: same minimiser
assert np.abs(exact.q - plain.q).max() > 0.5  # and the penalty did move the answer
assert np.all(np.diff(errors) <= 1e-12)  # monotone descent to the fixed point

# %% [markdown]
# ## A network: DiscreteCQL on CartPole
#
# `DiscreteCQL` is the same loss with the table replaced by an MLP $Q_\theta(s, \cdot)$ (one
# output per action), a minibatch of 256 transitions per step, a Polyak-averaged target
# network $\bar Q$, and the Double DQN target
# $y = r + \gamma (1 - \text{done})\, \bar Q\big(s', \arg\max_{a'} Q_\theta(s', a')\big)$. The
# policy is greedy in $Q_\theta$. With weight $w = 0$ it is plain offline Double DQN, the naive
# learner of notebook 03; `DiscreteBC` fits $\hat\pi_\beta$ by cross-entropy and never looks
# at rewards.
#
# The data is the built-in `cartpole-medium`: a linear balancing rule that takes a uniformly
# random action 40% of the time, 100k transitions. CartPole pays +1 per step until the pole
# falls (a terminal) or 500 steps pass. We use $\gamma = 0.9$: every discounted return then lies
# in $[0, 1/(1-\gamma)] = [0, 10]$, so an impossible value is easy to spot, and the short
# horizon lets the values settle within the small budget below. Each evaluation runs the same
# 10 start states (`deep.envs.evaluate`, seeds 0-9) and compares the critic's
# $Q(s_0, \pi(s_0))$ with the discounted return the greedy policy then actually collects.

# %%
STEPS = 3_000  # gradient steps per agent
EVAL_EVERY = 500
BATCH = 256
GAMMA = 0.9
W_CQL = 1.0  # DiscreteCQLConfig's default weight, i.e. alpha = w / 2 = 0.5


def diagnose(agent, env_id: str, normalizer) -> dict[str, float]:
    """Greedy-policy episodes from 10 fixed start states; Q(s0, pi(s0)) when there is a critic."""

    def policy(obs: np.ndarray) -> np.ndarray:
        return agent.act(torch.as_tensor(normalizer(obs))).numpy()

    result = evaluate(policy, env_id, n_episodes=10, seed=0, gamma=GAMMA)
    out = {"return": result.mean_return, "mc": float(result.discounted_returns.mean())}
    if agent.has_critic:
        s0 = torch.as_tensor(normalizer(result.start_observations))
        out["q"] = float(agent.q_value(s0, agent.act(s0)).mean())
    return out


def train(agent, raw, seed: int = 0) -> list[dict[str, float]]:
    """STEPS updates on minibatches of ``raw`` (observations standardised); a diagnosis every
    EVAL_EVERY steps."""
    data, normalizer = normalize_dataset(raw)
    sampler = ReplaySampler(data, "cpu", torch.Generator().manual_seed(seed))
    curve = []
    for step in range(1, STEPS + 1):
        agent.update(sampler.sample(BATCH))
        if step % EVAL_EVERY == 0:
            curve.append(diagnose(agent, raw.env_id, normalizer))
    return curve


def cql_agent(raw, weight: float) -> DiscreteCQL:
    config = DiscreteCQLConfig(
        hidden=(64, 64), gamma=GAMMA, cql_weight=weight, target_tau=0.05, target_update_period=1
    )
    return DiscreteCQL(raw.obs_dim, raw.n_actions, config, seed=0)


medium = load_dataset("cartpole-medium")
behaviour_returns = episode_returns(medium)
print(
    f"{len(medium):,} transitions, {len(behaviour_returns)} episodes, behaviour return "
    f"{behaviour_returns.mean():.0f} (normalised "
    f"{normalized_score(medium.name, behaviour_returns).mean():.0f})"
)
bc_agent = DiscreteBC(medium.obs_dim, medium.n_actions, DiscreteBCConfig(hidden=(64, 64)), seed=0)
curves = {
    "naive (w = 0)": train(cql_agent(medium, 0.0), medium),
    f"CQL (w = {W_CQL})": train(cql_agent(medium, W_CQL), medium),
    "BC": train(bc_agent, medium),
}
steps = EVAL_EVERY * np.arange(1, STEPS // EVAL_EVERY + 1)
for name, curve in curves.items():
    last = curve[-1]
    q = f"Q(s0, pi(s0)) = {last['q']:6.2f}, " if "q" in last else ""
    print(f"{name:13s}: return {last['return']:5.1f}, {q}discounted return {last['mc']:5.2f}")


def plot_values(ax, named_curves, colors) -> None:
    for (name, curve), color in zip(named_curves.items(), colors, strict=True):
        ax.plot(
            steps, [c["q"] for c in curve], "o-", color=color, label=rf"{name}: $Q(s_0, \pi(s_0))$"
        )
        ax.plot(steps, [c["mc"] for c in curve], "s--", color=color, label=f"{name}: obtained")
    ax.axhline(1 / (1 - GAMMA), color="k", ls=":", lw=1, label=r"$1/(1-\gamma)$: largest possible")
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel(rf"discounted value at $s_0$ ($\gamma$ = {GAMMA})")
    ax.legend(fontsize=7)


naive, cql, bc = curves.values()
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
plot_values(ax1, dict(list(curves.items())[:2]), ["C3", "C0"])
ax1.set_title("cartpole-medium: predicted vs obtained value")
for (name, curve), color in zip(curves.items(), ["C3", "C0", "C2"], strict=True):
    ax2.plot(steps, [c["return"] for c in curve], "o-", color=color, label=name)
ax2.axhline(behaviour_returns.mean(), color="gray", ls=":", label="behaviour policy (data)")
ax2.set_xlabel("gradient step")
ax2.set_ylabel("episode return (undiscounted)")
ax2.set_title("CartPole-v1, greedy policy, 10 episodes")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to notice:** without the regulariser the critic's prediction first leaves the range of
# possible values altogether (note the log scale: many times $1/(1-\gamma) = 10$, a value no
# policy can collect), and the greedy policy it ranks actions by drops the pole within about
# ten steps. The TD target bootstraps from $\arg\max_{a'}$, and the maximum finds whichever
# action's value has drifted up (notebook 03's selection effect, with the network spreading
# each error to neighbouring states). With $w = 1$ the same learner's prediction stays within
# a tenth of what its policy collects, and the policy balances the pole for the whole episode,
# far above the behaviour policy's average of 280.
#
# The CQL estimate sits slightly *above* the obtained return here, not below. Both actions are
# well covered, and the greedy action at a start state is mostly the one the behaviour rule
# prefers too; CQL(H) raises such an action's value by $\alpha(1 - \mu/\hat\pi_\beta) > 0$ per
# step whenever the data takes it more often than $\mu = \mathrm{softmax}(Q/T)$ does (the same
# effect as in notebook 06's large-$\alpha$ control loop). That raise is at most $\alpha$ per
# step, so the value stays below $(1 + \alpha)/(1 - \gamma) = 15$; the naive critic has no such
# ceiling. CartPole is also easy to imitate: behaviour cloning balances the pole too, since the
# rule the data comes from is right 80% of the time.
#
# The naive blow-up on this dataset is a phase, not the end. Run longer (`STEPS = 20_000`, an
# evaluation every 2,000 steps) and naive Double DQN's estimate falls back towards the return
# and its policy learns to balance, with relapses, while CQL's estimate stays put. Every
# action appears in every region of this dataset, so the data eventually contradicts each
# inflated value. The next dataset removes that safety net.

# %%
alpha_agent = W_CQL / 2  # the paper's alpha: the agents' TD term has no 1/2
assert max(c["q"] for c in naive) > 3 / (1 - GAMMA)  # 3x the largest possible return
assert all(c["q"] <= (1 + alpha_agent) / (1 - GAMMA) for c in cql)  # CQL(H)'s ceiling
assert cql[-1]["q"] < naive[-1]["q"]
assert abs(cql[-1]["q"] - cql[-1]["mc"]) < 0.15 * cql[-1]["mc"]  # close to what it collects
assert cql[-1]["return"] >= 450 and naive[-1]["return"] < 100
assert cql[-1]["return"] > behaviour_returns.mean() + 100

# %% [markdown]
# ## When the data never shows the other action
#
# `cartpole-expert` is the same rule without the random actions: at every state the data holds
# exactly one action, so the value of the other one is pure extrapolation by the network, and
# nothing in the data can ever correct it. This is the setting the paper's analysis is about:
# $\hat\pi_\beta(a \mid s) = 0$ for half of the actions.

# %%
expert = load_dataset("cartpole-expert")
curves_expert = {
    "naive (w = 0)": train(cql_agent(expert, 0.0), expert),
    f"CQL (w = {W_CQL})": train(cql_agent(expert, W_CQL), expert),
}
naive_x, cql_x = curves_expert.values()
for name, curve in curves_expert.items():
    print(f"{name:13s}: Q(s0, pi(s0)) by evaluation: {np.round([c['q'] for c in curve], 1)}")

fig, ax = plt.subplots()
plot_values(ax, curves_expert, ["C3", "C0"])
ax.set_title("cartpole-expert: one action per state in the data")
plt.show()

# %% [markdown]
# **What to notice:** the naive estimate grows at every evaluation, by orders of magnitude,
# while its policy still drops the pole within ten steps. CQL's estimate starts high (the
# first evaluation comes after only 500 steps) and settles at the largest possible value, 10,
# which is what its policy collects by balancing for 500 steps. Run longer (`STEPS = 20_000`)
# and the naive estimate keeps growing while its policy does not improve; CQL's stays at 10
# with a full-length episode at every evaluation. Pushing down the
# soft maximum over actions, and up the action in the data, is exactly what an unseen action
# needs: its value is held down by the penalty, since no TD error holds it up.

# %%
q_naive_x = np.array([c["q"] for c in naive_x])
assert np.all(np.diff(q_naive_x) > 0) and q_naive_x[-1] > 100 / (1 - GAMMA)  # diverging
assert all(c["return"] < 50 for c in naive_x)
assert all(c["q"] <= (1 + alpha_agent) / (1 - GAMMA) for c in cql_x[len(cql_x) // 2 :])
assert abs(cql_x[-1]["q"] - cql_x[-1]["mc"]) < 0.05 * cql_x[-1]["mc"]
assert cql_x[-1]["return"] >= 450
