"""Where one fast CQL update spends its time: torch.profiler over 300 updates of the cql-fast
setting at hopper's sizes (3×256 networks, batch 256, fp32, one thread), after 50 warm-up
updates. Prints the operators by self CPU time and writes them, grouped, to a JSON file.

    OMP_NUM_THREADS=1 python docs/results/profile_update.py docs/results/profile-fast.json
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from deep.bench import CASES, SETTINGS, make_cql_update
from deep.runlog import write_json

GROUPS = {
    "matmul (forward and backward)": ("addmm", "mm", "bmm", "matmul", "linear"),
    "optimizer (fused Adam)": ("adam",),
    "elementwise and activations": (
        "relu", "threshold", "mul", "add", "sub", "div", "exp", "log", "tanh", "pow", "neg",
        "sigmoid", "softplus", "clamp", "where", "rsqrt", "sqrt", "lerp", "abs",
    ),
    "reductions": ("sum", "mean", "logsumexp", "min", "max", "amax", "norm"),
    "random draws": ("normal", "randn", "uniform", "rand"),
    "copies, views and indexing": (
        "copy", "cat", "stack", "view", "reshape", "expand", "index", "select", "slice",
        "transpose", "permute", "t", "contiguous", "clone", "empty", "zeros", "fill", "to",
        "detach", "unsqueeze", "squeeze", "as_strided", "repeat",
    ),
}  # fmt: skip


def group_of(name: str) -> str:
    op = name.removeprefix("aten::").lower()
    for group, keys in GROUPS.items():
        if any(op == k or op.startswith(k + "_") or op.endswith("_" + k) for k in keys):
            return group
    return "other"


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    obs_dim, act_dim = CASES["hopper"]
    _, step = make_cql_update(obs_dim, act_dim, SETTINGS["fast"])
    for _ in range(50):
        step()
    n = 300
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    grouped: dict[str, float] = defaultdict(float)
    for e in events:
        grouped[group_of(e.key)] += e.self_cpu_time_total
    print(f"{n} updates, {total / n / 1000:.2f} ms of aten self time per update")
    for group, t in sorted(grouped.items(), key=lambda kv: -kv[1]):
        print(f"  {group:32s} {100 * t / total:5.1f}%")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    for e in top:
        print(
            f"    {e.key:36s} {100 * e.self_cpu_time_total / total:5.1f}%  calls/update {e.count / n:.0f}"
        )
    if argv:
        write_json(
            Path(argv[0]),
            {
                "command": "OMP_NUM_THREADS=1 python docs/results/profile_update.py " + argv[0],
                "updates": n,
                "ms_per_update_aten_self": total / n / 1000,
                "groups_percent": {g: 100 * t / total for g, t in grouped.items()},
                "top_ops": [
                    {
                        "op": e.key,
                        "percent": 100 * e.self_cpu_time_total / total,
                        "calls_per_update": e.count / n,
                    }
                    for e in top
                ],
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
