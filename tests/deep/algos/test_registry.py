"""The algorithm registry: a new algorithm is one module (here, this file's toy) plus one
:func:`deep.algos.register` call; the command line, its defaults, its help and the check
against the dataset's actions all follow from the entry, with no other file touched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from deep import train
from deep.algos import ALGORITHMS, Algorithm, register
from deep.algos.base import AgentBase, Device, Seed, as_batch
from deep.data import Batch, generate_builtin, save_npz


@dataclass
class ToyConfig:
    """Toy: a constant action, moved towards the batch's mean action at every update."""

    rate: float = 0.5
    """Step size of the running mean."""


class ToyAgent(AgentBase):
    """Acts with the running mean of the dataset's actions (no critic)."""

    def __init__(self, obs_dim: int, act_dim: int, config: ToyConfig, device: Device, seed: Seed):
        self.config = config
        self.obs_dim = obs_dim
        self._init_state(device, seed)
        self.mean = torch.zeros(act_dim, device=self.device)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        target = batch.actions.mean(dim=0)
        self.mean += self.config.rate * (target - self.mean)
        self.step += 1
        return {"loss/policy": ((batch.actions - self.mean) ** 2).mean()}

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        obs, single = as_batch(obs, self.obs_dim)
        action = self.mean.expand(obs.shape[0], -1)
        return action[0] if single else action

    def _modules(self) -> dict[str, nn.Module]:
        return {}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def _scalars(self) -> dict[str, Tensor]:
        return {"mean": self.mean}


@pytest.fixture
def toy() -> Iterator[Algorithm[ToyConfig]]:
    entry = register(
        Algorithm("toy", ToyConfig, ToyAgent, discrete=False, summary="The registry's toy.")
    )
    try:
        yield entry
    finally:
        ALGORITHMS.pop("toy")


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    return save_npz(generate_builtin("pendulum-medium", n_transitions=400), folder / "p.npz")


def test_a_registered_algorithm_trains_from_the_command_line(
    toy: Algorithm[ToyConfig], pendulum: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["toy", "--help"])
    assert "--rate" in capsys.readouterr().out
    out = tmp_path / "run"
    args = [
        "toy", "--rate", "0.25", "--dataset", str(pendulum), "--out", str(out), "--steps", "4",
        "--batch-size", "32", "--log-every", "2", "--eval-every", "4", "--eval-episodes", "1",
        "--device", "cpu", "--no-progress", "--no-tensorboard", "--no-plots",
    ]  # fmt: skip
    assert train.main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["algo"] == "toy" and config["agent"] == {"rate": 0.25}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "toy" and summary["steps"] == 4
    # Its checkpoint resumes like any other run's.
    assert train.run(out)["steps"] == 4


def test_the_registry_is_the_one_list_of_algorithms(
    toy: Algorithm[ToyConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    listed = capsys.readouterr().out
    for name in ALGORITHMS:
        assert name in listed, name
    with pytest.raises(ValueError, match="already registered"):
        register(Algorithm("toy", ToyConfig, ToyAgent, discrete=False, summary=""))


def test_discrete_data_is_refused_with_the_registrys_alternatives(
    toy: Algorithm[ToyConfig], tmp_path: Path
) -> None:
    cartpole = save_npz(generate_builtin("cartpole-medium", n_transitions=300), tmp_path / "c.npz")
    config = train.parse_args(["toy", "--dataset", str(cartpole), "--out", str(tmp_path / "r")])
    assert not isinstance(config, train.Resume)
    with pytest.raises(ValueError, match=r"'toy' is for continuous actions.*discrete-cql"):
        train.run(config)
