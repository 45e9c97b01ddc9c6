"""deep.bench: the FLOP count against hand counts and against torch's own counter on a real
update, the timed update function (it trains, also in bf16 with float32 master weights), the
host-read detector, and one tiny run of the command line."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from deep import bench
from deep.algos import CQLConfig, sac
from deep.bench import (
    BenchSetting,
    HostReadDetector,
    MatmulRecorder,
    cql_update_flops,
    make_batches,
    make_cql_update,
    matmul_gflops,
    mlp_pass_flops,
    replay_seconds,
)

TINY = BenchSetting(
    CQLConfig(actor_hidden=(16, 8), critic_hidden=(16, 8), cql_n_actions=3), batch_size=8
)


def test_mlp_pass_flops_by_hand() -> None:
    # 3 rows through 2 -> 4 -> 1. Forward: layer 1 is 3·2·4 = 24 multiply-adds = 48 FLOPs,
    # layer 2 is 3·4·1 = 12 multiply-adds = 24 FLOPs; 72 in all.
    sizes = (2, 4, 1)
    assert mlp_pass_flops(3, sizes, param_grad=False, input_grad=False) == 72
    # trained, input without gradient: + weight gradients (72) + input gradient of layer 2
    # only (24): the first layer's input gradient is never needed
    assert mlp_pass_flops(3, sizes, param_grad=True, input_grad=False) == 72 + 72 + 24
    # frozen weights, gradient to the input (the actor's action through the critic): + input
    # gradients of both layers (48 + 24), no weight gradients
    assert mlp_pass_flops(3, sizes, param_grad=False, input_grad=True) == 72 + 72
    assert mlp_pass_flops(3, sizes, param_grad=True, input_grad=True) == 3 * 72
    with pytest.raises(ValueError, match="at least two sizes"):
        mlp_pass_flops(3, (2,), param_grad=False, input_grad=False)


def test_cql_update_flops_by_hand() -> None:
    # obs 2, act 1, hidden (3,), B = 4, N = 1, E = 2.
    # actor 2 -> 3 -> 2: 2·(2·3) + 2·(3·2) = 24 FLOPs per row forward.
    #   at s, trained: 4 rows · 24 = 96, weight grads 96, input grad of layer 2 2·4·3·2 = 48
    #   at s', forward only: 96
    # critic [s, a, 1] = 4 -> 3 -> 1: 2·(4·3) + 2·(3·1) = 30 per row forward.
    #   target, 2 members × 4 rows: 240
    #   Q(s, a_D), trained: per member 120 + 120 + input grad of layer 2 2·4·3·1 = 24 → 264, ×2
    #   3N = 3 pushed-down actions per state, 12 rows: 360 + 360 + 72 = 792 per member, ×2
    #   Q(s, ã) with detached weights: 120 + input grads 2·4·4·3 + 2·4·3·1 = 96 + 24 → 240, ×2
    expected = (96 + 96 + 48) + 96 + 240 + 2 * 264 + 2 * 792 + 2 * 240
    assert expected == 3168
    assert cql_update_flops(2, 1, (3,), batch_size=4, n_actions=1, n_critics=2) == expected


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_flop_count_is_the_work_of_a_real_update(precision: bench.Precision) -> None:
    # an independent count: torch's dispatcher-level FLOP counter over one real update
    obs_dim, act_dim = 5, 2
    _, step = make_cql_update(obs_dim, act_dim, TINY, precision=precision)
    step()
    with FlopCounterMode(display=False) as counter:
        step()
    expected = bench.setting_flops(obs_dim, act_dim, TINY)
    assert counter.get_total_flops() == expected


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_recorded_matmuls_are_the_counted_work_and_replay_with_their_layouts(
    precision: bench.Precision,
) -> None:
    obs_dim, act_dim = 5, 2
    _, step = make_cql_update(obs_dim, act_dim, TINY, precision=precision)
    step()
    with MatmulRecorder() as recorder:
        step()
    expected = bench.setting_flops(obs_dim, act_dim, TINY)
    assert recorder.flop == expected
    ops = {op.__name__.split(".")[0] for op, _ in recorder.calls}
    assert ops <= {"mm", "addmm", "bmm", "baddbmm"} and "mm" in ops
    # the stand-ins keep each operand's layout: transposed views and broadcast (stride 0)
    # rows included
    g = torch.Generator().manual_seed(0)
    for _, spec in recorder.calls:
        for x in spec:
            if isinstance(x, bench._TensorSpec):
                t = x.make(g)
                assert (tuple(t.shape), t.stride(), t.dtype) == (x.shape, x.stride, x.dtype)
    assert any(
        isinstance(x, bench._TensorSpec) and len(x.shape) >= 2 and x.stride[-2:] == (1, x.shape[-2])
        for _, spec in recorder.calls
        for x in spec
    ), "no transposed operand recorded: the weight gradients read activations transposed"
    seconds = replay_seconds(recorder.calls, repeats=2)
    assert 0 < seconds < 10


def test_replay_times_the_recorded_calls() -> None:
    # 20 products of (256 × 64) @ (64 × 64) take longer to replay than 2 of them
    a, w = torch.randn(256, 64), torch.randn(64, 64)
    with MatmulRecorder() as few:
        for _ in range(2):
            a @ w
    with MatmulRecorder() as many:
        for _ in range(20):
            a @ w
    assert many.flop == 10 * few.flop == 20 * 2 * 256 * 64 * 64
    assert replay_seconds(many.calls, repeats=3) > replay_seconds(few.calls, repeats=3)


def test_standard_setting_is_about_three_forward_passes_of_the_critics() -> None:
    # the pushed-down critic pass dominates: forward + weight grads + hidden input grads is
    # just under 3× its forward, so the whole update sits between 2.9× and 3.2× the critics'
    # forward over the B·(3N + 1) trained rows
    flop = cql_update_flops(17, 6)
    forward_rows = 2 * 256 * 31 * 2 * (24 * 256 + 2 * 256 * 256 + 256)
    assert 2.9 < flop / forward_rows < 3.2


def test_timed_update_trains_every_parameter_and_never_reads_the_host() -> None:
    agent, step = make_cql_update(4, 2, TINY, seed=3)
    before = {
        name: p.detach().clone()
        for module in (agent.actor, agent.critic)
        for name, p in module.named_parameters(prefix=type(module).__name__)
    }
    with HostReadDetector() as detector:
        metrics = step()
    step()
    assert agent.step == 2
    assert detector.reads == []
    after = {
        name: p
        for module in (agent.actor, agent.critic)
        for name, p in module.named_parameters(prefix=type(module).__name__)
    }
    for name, p in after.items():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not move"
    assert all(torch.isfinite(v) for v in metrics.values())


def test_host_read_detector_catches_item_and_bool() -> None:
    x = torch.ones(3)
    with HostReadDetector() as detector:
        _ = (x * 2).sum().item()
        _ = bool(x[0] > 0)
    assert len(detector.reads) == 2


def test_bf16_update_keeps_float32_master_weights_and_finite_losses() -> None:
    agent, step = make_cql_update(4, 2, TINY, precision="bf16", seed=1)
    for _ in range(3):
        metrics = step()
    assert agent.config.precision == "bf16"
    for key, value in metrics.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), key
    modules = (agent.actor, agent.critic, agent.target_critic)
    assert all(p.dtype == torch.float32 for m in modules for p in m.parameters())
    for opt in (agent.actor_optim, agent.critic_optim):
        for state in opt.state.values():
            assert state["exp_avg"].dtype == torch.float32
            assert state["exp_avg_sq"].dtype == torch.float32
    # the matmuls did run in bf16: the same agent in fp32 gives different Q values
    batch = make_batches(4, 2, TINY.batch_size, 1, seed=9)[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        q_bf16 = agent.critic(batch.observations, batch.actions)
    with torch.no_grad():
        q_fp32 = agent.critic(batch.observations, batch.actions)
    assert q_bf16.dtype == torch.float32  # the output layer runs in float32
    assert not torch.equal(q_bf16, q_fp32)
    torch.testing.assert_close(q_bf16, q_fp32, rtol=0.05, atol=0.05)


def test_bf16_td32_computes_the_td_error_in_float32_and_the_rest_in_bf16() -> None:
    agent, _ = make_cql_update(4, 2, TINY, seed=1)
    batch = make_batches(4, 2, TINY.batch_size, 1, seed=9)[0]
    draws = agent._draw(TINY.batch_size, torch.float32)
    seen = {}
    for precision in ("fp32", "bf16", "bf16-td32"):
        agent.config = dataclasses.replace(agent.config, precision=precision)
        with torch.no_grad():
            _, seen[precision] = agent._losses(batch, draws, False)
    fp32, bf16, td32 = seen["fp32"], seen["bf16"], seen["bf16-td32"]
    for key in ("misc/q_data", "misc/q_target"):  # the TD error's two values: float32
        assert torch.equal(td32[key], fp32[key]) and not torch.equal(bf16[key], fp32[key]), key
    for key in ("loss/q1", "loss/q2"):  # reduced in the bf16 region: equal to the last bit
        torch.testing.assert_close(td32[key], fp32[key], rtol=1e-6, atol=0)
        assert abs(bf16[key] / fp32[key] - 1) > 1e-6, key
    # The actor's Q and the conservative term's sampled actions stay in bf16.
    assert not torch.equal(td32["misc/q_policy"], fp32["misc/q_policy"])
    assert torch.equal(td32["misc/q_policy"], bf16["misc/q_policy"])
    with pytest.raises(ValueError, match="'bf16-td32'"):
        make_cql_update(4, 2, TINY, precision="fp16")  # type: ignore[arg-type]


def test_batches_are_drawn_on_the_device_with_the_documented_law() -> None:
    batches = make_batches(3, 2, 4096, 2, device="cpu", seed=0)
    assert len(batches) == 2 and not torch.equal(batches[0].observations, batches[1].observations)
    b = batches[0]
    assert b.observations.shape == (4096, 3) and b.actions.shape == (4096, 2)
    assert b.actions.min() >= -1.0 and b.actions.max() <= 1.0
    assert abs(b.terminals.mean().item() - 0.01) < 0.01
    assert abs(b.rewards.std().item() - 1.0) < 0.05


def test_matmul_rate_is_a_positive_finite_rate() -> None:
    rate = matmul_gflops("fp32", rows=(64,), width=32, min_seconds=0.01)
    assert math.isfinite(rate) and rate > 0.01


def test_missing_peer_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "d3rlpy", None)  # import d3rlpy now raises ImportError
    with pytest.raises(ImportError, match="pip install --no-deps d3rlpy"):
        bench.make_d3rlpy_update(3, 2, TINY)


def test_run_case_record_and_bad_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "matmul_gflops", lambda *args, **kwargs: 100.0)
    record = bench.run_case("hopper", setting=TINY, steps=2, repeats=2, warmup=1)
    assert record["case"] == "hopper(11,3)" and record["precision"] == "fp32"
    assert record["host_reads_per_update"] == 0
    flop = cql_update_flops(
        11, 3, TINY.agent.critic_hidden, TINY.batch_size, TINY.agent.cql_n_actions
    )
    assert record["update_gflop"] == round(flop / 1e9, 4)
    lo, hi = record["steps_per_second_spread"]
    assert lo <= record["steps_per_second"] <= hi
    expected_fraction = flop / 1e9 * record["steps_per_second"] / 100.0
    assert record["limit_fraction"] == pytest.approx(expected_fraction, rel=0.01, abs=1e-3)
    assert record["matmul_ceiling_fraction"] > 0 and 0 < record["matmul_time_share"]
    with pytest.raises(ValueError, match="unknown case"):
        bench.run_case("ant")
    with pytest.raises(ValueError, match="unknown peer"):
        bench.run_case("hopper", peer="cleanrl")


def test_command_line_prints_one_json_line_per_case(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fast_agent = dataclasses.replace(
        TINY.agent, cql_n_actions=1, cql_estimator="rho", cql_data_in_push_down=True
    )
    fast = dataclasses.replace(TINY, agent=fast_agent)
    monkeypatch.setattr(bench, "SETTINGS", {"standard": TINY, "fast": fast})
    monkeypatch.setattr(bench, "matmul_gflops", lambda *args, **kwargs: 100.0)
    bench.main(["--steps", "1", "--repeats", "1", "--warmup", "0", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    # One line per case and named setting (default: standard and fast), fp32 by default.
    assert [(r["case"], r["setting"]) for r in records] == [
        ("hopper(11,3)", "standard"),
        ("hopper(11,3)", "fast"),
        ("halfcheetah(17,6)", "standard"),
        ("halfcheetah(17,6)", "fast"),
    ]
    assert all(r["steps_per_second"] > 0 and r["device"] == "cpu" for r in records)
    assert all(r["precision"] == "fp32" for r in records)
    # The fast setting counts a tenth of the standard one's sampled-action arithmetic.
    assert records[1]["update_gflop"] < records[0]["update_gflop"]
    bench.main(["--case", "hopper", "--setting", "fast", "--precision", "fp32",
                "--precision", "bf16", "--steps", "1", "--repeats", "1", "--warmup", "0"])  # fmt: skip
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(r["setting"], r["precision"]) for r in records] == [("fast", "fp32"), ("fast", "bf16")]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_layout_of_the_critic_matches_the_cpu_layout(precision: str) -> None:
    # The CPU runs members one by one in row blocks, a GPU one batched matmul per layer; the
    # GPU layout is exercised here on the CPU: same Q values, same gradients.
    from deep.nets import EnsembleQ, _ensemble_mlp, _layer_params

    g = torch.Generator().manual_seed(4)
    critic = EnsembleQ(5, 2, n_critics=3, hidden=(16, 8), generator=g)
    x = torch.cat([torch.randn(23, 7, generator=g), torch.ones(23, 1)], dim=1)  # [s, a, 1]
    outs, grads = [], []
    for per_member, chunk in [(True, 5), (True, None), (False, None)]:
        critic.zero_grad(set_to_none=True)
        params = [_layer_params(layer, False) for layer in critic.layers]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            q = _ensemble_mlp(x, params, per_member=per_member, chunk_rows=chunk)
        assert q.shape == (3, 23, 1) and q.dtype == torch.float32
        q.square().sum().backward()
        outs.append(q.detach())
        grads.append([p.grad.clone() for p in critic.parameters() if p.grad is not None])
    tol = {"rtol": 1e-5, "atol": 1e-6} if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-2}
    for q, grad in zip(outs[1:], grads[1:], strict=True):
        torch.testing.assert_close(q, outs[0], **tol)
        assert len(grad) == len(grads[0]) == 6  # 3 layers × (weight, bias), all reached
        for a, b in zip(grad, grads[0], strict=True):
            torch.testing.assert_close(a, b, **tol)


def test_named_settings_are_the_registry_presets() -> None:
    # The bench times what deep.train cql / cql-fast train, not a copy of their fields.
    from deep.algos import get_algorithm

    assert bench.SETTINGS["standard"].agent == get_algorithm("cql").default_config()
    assert bench.SETTINGS["fast"].agent == get_algorithm("cql-fast").default_config()


def test_bad_options_end_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:  # tyro refuses an unknown choice, exit 2
        bench.main(["--setting", "quick"])
    assert stop.value.code == 2
    assert bench.main(["--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "must be >= 1" in err and "Traceback" not in err


def test_bf16_on_a_cpu_without_native_bfloat16_is_warned_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sac, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without native bfloat16 matmuls"):
        make_cql_update(4, 2, TINY, precision="bf16-td32")
    monkeypatch.setattr(sac, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_cql_update(4, 2, TINY, precision="bf16")
    monkeypatch.setattr(sac, "cpu_has_native_bf16", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_cql_update(4, 2, TINY)  # fp32: nothing to say
