"""Where bfloat16 moves the CQL update: at a trained checkpoint, every network's gradient
under bf16 autocast against float32, on the same batches and the same noise, with the
actor or the critics (online and target) kept in float32 in turn.

    OMP_NUM_THREADS=1 python docs/results/bf16_gradients.py RUN_DIR OUT.json [BATCHES]

For each batch: g32 = the float32 gradient of the update's total loss on each parameter
group (critics: TD + conservative term; the critics with the conservative weight set to 0:
TD alone; actor; log α), g16 the same under the bf16 setting. Printed and written: the mean
over batches of ‖g16 − g32‖ / ‖g32‖ and of the cosine between them, and the error of the
values the losses are built from (Q at the data, the TD target, the actor's mean), for
"bf16" (everything as the precision="bf16" option runs it), "bf16, actor fp32", "bf16,
critics fp32" and the "bf16-td32" option (the TD error's two critic evaluations in float32).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deep.checkpoint import load_checkpoint
from deep.config import DatasetInfo, build_agent, config_from_dict
from deep.data import ObservationNormalizer, ReplaySampler, load_dataset, normalize_dataset
from deep.runlog import write_json


@contextlib.contextmanager
def in_float32(module: nn.Module) -> Iterator[None]:
    """``module``'s forward runs in float32 even inside a bf16 autocast region."""
    forward = module.forward

    def fp32_forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type="cpu", enabled=False):
            args = tuple(a.float() if torch.is_tensor(a) else a for a in args)
            return forward(*args, **kwargs)

    module.forward = fp32_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.forward


def gradients(
    agent: Any, batch: Any, draws: Any
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Flattened gradients per group and the values the losses read, for one update."""
    groups = {
        "critics": list(agent.critic.parameters()),
        "actor": list(agent.actor.parameters()),
        "log_alpha": [agent.log_alpha],
    }
    total, metrics = agent._losses(batch, draws, False)
    grads = torch.autograd.grad(total, [p for ps in groups.values() for p in ps], allow_unused=True)
    out, i = {}, 0
    for name, ps in groups.items():
        flat = [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for p, g in zip(ps, grads[i : i + len(ps)], strict=True)
        ]
        out[name] = torch.cat(flat)
        i += len(ps)
    values = {k: metrics[k].detach().float() for k in ("misc/q_data", "misc/q_target")}
    return out, values


def main(run_dir: str, target: str, n_batches: int = 20) -> None:
    torch.set_num_threads(1)
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    config = config_from_dict(ckpt["config"], ckpt["agent_config"], source=run_dir)
    info = DatasetInfo(**ckpt["dataset"])
    agent = build_agent(config, info, torch.device("cpu"))
    agent.load_state_dict(ckpt["agent"])
    dataset = load_dataset(config.run.dataset)
    dataset, _ = normalize_dataset(
        dataset, ObservationNormalizer.from_state_dict(ckpt["normalizer"])
    )
    generator = torch.Generator().manual_seed(12345)
    sampler = ReplaySampler(dataset, "cpu", generator)
    base = agent.config
    variants: dict[str, tuple[str, nn.Module | None]] = {
        "bf16": ("bf16", None),
        "bf16, actor fp32": ("bf16", agent.actor),
        "bf16, critics fp32": ("bf16", agent.critic),
        "bf16-td32": ("bf16-td32", None),
    }
    errors: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    for _ in range(n_batches):
        batch = sampler.sample(config.run.batch_size)
        draws = agent._draw(batch.observations.shape[0], torch.float32)
        for weight_name, weight in (("", base.cql_weight), (" (TD only)", 0.0)):
            agent.config = dataclasses.replace(base, precision="fp32", cql_weight=weight)
            g32, v32 = gradients(agent, batch, draws)
            for name, (precision, module) in variants.items():
                agent.config = dataclasses.replace(base, precision=precision, cql_weight=weight)
                keep = [module] if module is not None else []
                if module is agent.critic:
                    keep.append(agent.target_critic)
                with contextlib.ExitStack() as stack:
                    for m in keep:
                        stack.enter_context(in_float32(m))
                    g16, v16 = gradients(agent, batch, draws)
                row = errors[name]
                for group in g32 if not weight_name else ("critics",):
                    a, b = g16[group], g32[group]
                    rel = float((a - b).norm() / b.norm().clamp_min(1e-30))
                    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
                    row.setdefault(f"{group}{weight_name}: relative error", []).append(rel)
                    row.setdefault(f"{group}{weight_name}: cosine", []).append(cos)
                if not weight_name:
                    for k in v32:
                        row.setdefault(f"{k} error", []).append(float(v16[k] - v32[k]))
        agent.config = base
    summary = {name: {k: float(np.mean(v)) for k, v in row.items()} for name, row in errors.items()}
    for name, row in summary.items():
        print(name)
        for k, v in row.items():
            print(f"  {k:40s} {v: .4g}")
    write_json(
        Path(target),
        {
            "what": "bf16 against fp32 gradients of one update at a trained checkpoint, mean "
            f"over {n_batches} batches of {config.run.batch_size}",
            "command": f"OMP_NUM_THREADS=1 python docs/results/bf16_gradients.py {run_dir} "
            f"{target} {n_batches}",
            "checkpoint_step": int(ckpt["step"]),
            "algo": config.algo,
            "dataset": config.run.dataset,
            "variants": summary,
        },
    )


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
