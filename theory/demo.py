"""A short tabular demonstration: counts -> empirical MDP -> exact values, printed as a table.

Run with ``python -m theory.demo``.
"""

from __future__ import annotations

import numpy as np

from theory.data import EmpiricalMDP, sample_dataset
from theory.mdp import chain_mdp, policy_evaluation, state_values


def main(seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    mdp = chain_mdp(n_states=6, gamma=0.9)
    # A behaviour policy that mostly moves left, and a target policy that always moves right.
    behavior = np.tile([0.8, 0.2], (mdp.n_states, 1))
    target = np.tile([0.0, 1.0], (mdp.n_states, 1))
    print(f"chain MDP: {mdp.n_states} states, 2 actions, gamma = {mdp.gamma}")
    print(f"{'n':>7} {'unseen pairs':>12} {'max|pi_b_hat - pi_b|':>21} {'V_hat(0)':>9} {'V(0)':>7}")
    v_true = state_values(policy_evaluation(mdp, target), target)
    for n in (50, 500, 5000, 50000):
        data = sample_dataset(mdp, behavior, n, rng)
        emp = EmpiricalMDP.from_dataset(data, mdp.gamma)
        v_hat = state_values(policy_evaluation(emp.mdp, target), target)
        err = np.abs(emp.pi_beta - behavior)[emp.seen_states].max()
        print(
            f"{n:>7} {int((~emp.seen).sum()):>12} {err:>21.4f} {v_hat[0]:>9.4f} {v_true[0]:>7.4f}"
        )


if __name__ == "__main__":
    main()
