"""Deep Conservative Q-Learning in PyTorch: datasets, networks, pure losses, agents, training."""
