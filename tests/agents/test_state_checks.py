"""The checks :mod:`agents.state_checks` applies to a loaded state, on their own: what they
refuse, and what they must not refuse (a plug-in's optimizer, a state with infinities by
design, counters and settings as training leaves them)."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from agents.baselines import RandomAgent
from agents.state_checks import (
    counter,
    missing_keys_error,
    nonfinite_state_error,
    nonnegative,
    optimizer_state_error,
)


@pytest.mark.parametrize("value", [True, 3.7, -1, "3", None, torch.tensor(3)])
def test_a_counter_is_a_whole_number_not_below_zero(value):
    with pytest.raises(ValueError, match=r"state\['updates'\] is .*; expected a whole number"):
        counter({"updates": value}, "updates")


def test_a_counter_reads_ints_and_its_default():
    assert counter({"updates": 7}, "updates") == 7
    assert counter({}, "metric_updates", default=0) == 0
    assert counter({"metric_updates": 4}, "metric_updates", default=0) == 4


def test_nonfinite_values_are_named_by_place_and_count():
    state = {"w": torch.zeros(2, 3), "opt": [{"m": torch.tensor([1.0, float("-inf")])}]}
    assert nonfinite_state_error(state) == (
        "state['opt'][0]['m'] holds 1 non-finite value (NaN or ±inf) of 2: the run that "
        "wrote it diverged, or the file is damaged"
    )
    # Integer and boolean tables cannot hold NaN; generator states are bytes.
    assert nonfinite_state_error({"ids": torch.arange(3), "mask": torch.ones(2).bool()}) is None


def test_negative_counts_are_refused_and_zero_is_fine():
    nonnegative({"count": torch.zeros(3)}, ("count",), "agent 'x'")
    with pytest.raises(ValueError, match=r"agent 'x': state\['count'\] holds 1 negative"):
        nonnegative({"count": torch.tensor([0.0, -1.0])}, ("count",), "agent 'x'")


class _Holder(RandomAgent):
    """An agent holding ``optimizer`` (as the learning agents do), unregistered."""

    name: ClassVar[str] = "holder"
    registrable: ClassVar[bool] = False


def _holding(env, optimizer):
    agent = _Holder(env)
    agent.optimizer = optimizer
    return agent


def _trained(opt_cls, **settings):
    w = torch.nn.Parameter(torch.ones(3))
    opt = opt_cls([w], **settings)
    (w**2).sum().backward()
    opt.step()
    return opt


@pytest.mark.parametrize(
    ("opt_cls", "settings"),
    [
        (torch.optim.Adam, {"lr": 1e-3}),
        (torch.optim.Adam, {"lr": 1e-3, "amsgrad": True, "foreach": False}),
        (torch.optim.AdamW, {"lr": 1e-3}),
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        (torch.optim.RMSprop, {"lr": 0.01}),
    ],
)
def test_optimizers_as_training_leaves_them_pass(market, opt_cls, settings):
    assert optimizer_state_error(_holding(market(), _trained(opt_cls, **settings))) is None


def test_out_of_range_settings_are_refused_with_torchs_own_words(market):
    opt = _trained(torch.optim.SGD, lr=0.1, momentum=0.9)
    opt.param_groups[0]["momentum"] = -0.5
    why = optimizer_state_error(_holding(market(), opt))
    assert why == "optimizer: param_groups[0]: Invalid momentum value: -0.5"


def test_a_plug_in_optimizer_whose_settings_are_not_its_arguments_is_not_refused(market):
    """The bounds come from constructing the optimizer again from its settings; one whose
    ``defaults`` hold more than its constructor takes is checked for kinds only."""

    class Halving(torch.optim.Optimizer):
        def __init__(self, params, lr=0.5):
            super().__init__(params, {"lr": lr, "schedule": "halve"})

        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.data.add_(p.grad, alpha=-group["lr"])
                group["lr"] /= 2

    opt = _trained(Halving)
    assert optimizer_state_error(_holding(market(), opt)) is None
    opt.param_groups[0]["schedule"] = 3
    assert "['schedule'] is 3; expected a str" in optimizer_state_error(_holding(market(), opt))


class _BestSoFar(RandomAgent):
    """A plug-in whose state holds -inf by design (no score seen yet)."""

    name: ClassVar[str] = "best_so_far"
    registrable: ClassVar[bool] = False

    def __init__(self, env, **config):
        super().__init__(env, **config)
        self.best = torch.full((2,), -torch.inf)

    def state_dict(self):
        return {**super().state_dict(), "best": self.best}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.best = state["best"].clone()


def test_an_agent_with_infinities_by_design_opts_out_of_the_finite_check(market, tmp_path):
    env = market()
    path = tmp_path / "best.pt"
    _BestSoFar(env).save(path)
    with pytest.raises(ValueError, match=r"state\['best'\] holds 2 non-finite values"):
        _BestSoFar(env).load(path)

    class Declared(_BestSoFar):
        finite_state: ClassVar[bool] = False

    agent = Declared(env)
    agent.load(path)
    assert torch.equal(agent.best, torch.full((2,), -torch.inf))


@pytest.mark.parametrize(
    ("opt_cls", "settings", "key"),
    [
        (torch.optim.Adam, {"lr": 1e-3}, "exp_avg_sq"),
        (torch.optim.Adam, {"lr": 1e-3, "amsgrad": True}, "max_exp_avg_sq"),
        (torch.optim.RMSprop, {"lr": 0.01}, "square_avg"),
        (torch.optim.Adagrad, {"lr": 0.01}, "sum"),
        (torch.optim.Adadelta, {}, "acc_delta"),
        (torch.optim.Adamax, {}, "exp_inf"),
    ],
)
def test_each_optimizers_sum_of_squares_is_refused_negative(market, opt_cls, settings, key):
    """Every optimizer's running sum of squares (Adam's, RMSprop's, Adagrad's, Adadelta's,
    Adamax's names) is refused with a negative entry: a square root of it is NaN at the
    next update."""
    opt = _trained(opt_cls, **settings)
    (state,) = opt.state.values()
    state[key][1] = -1.0
    why = optimizer_state_error(_holding(market(), opt))
    assert why == f"optimizer: {key!r} of a parameter holds negative values (a sum of squares)"


@pytest.mark.parametrize("step", [-5.0, 3.5])
def test_an_optimizer_step_is_a_whole_number_not_below_zero(market, step):
    opt = _trained(torch.optim.Adam, lr=1e-3)
    (state,) = opt.state.values()
    state["step"] = torch.tensor(step)
    why = optimizer_state_error(_holding(market(), opt))
    assert why == f"optimizer: 'step' is {step}; expected a whole number >= 0"


@pytest.mark.parametrize(("key", "value"), [("lr", True), ("weight_decay", False)])
def test_a_bool_is_not_a_number_setting(market, key, value):
    """``lr=True`` would train at a learning rate of 1 (torch's constructor takes it)."""
    opt = _trained(torch.optim.Adam, lr=1e-3)
    opt.param_groups[0][key] = value
    why = optimizer_state_error(_holding(market(), opt))
    assert why == f"optimizer: param_groups[0][{key!r}] is {value}; expected a finite number"


def test_a_state_missing_several_keys_names_every_one():
    mine = {"q": {"w": 1, "b": 2, "scale": 3}, "steps": 0}
    saved = {"q": {"w": 1}, "steps": 0}
    assert missing_keys_error(saved, mine, "b") == (
        "state['q'] is missing key(s) ['b', 'scale']; expected the keys ['b', 'scale', 'w']"
    )
    assert missing_keys_error(saved, mine, "other") is None
