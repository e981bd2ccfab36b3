"""The agent protocol as an external plug-in meets it (from an audit that wrote one): what
``learn()`` may report, what a state may hold to be saved, what a team member may act for,
what a factory plug-in takes, and how a checkpoint that does not fit is refused."""

from __future__ import annotations

import collections
import enum
import io
import warnings

import numpy as np
import pytest
import torch

import agents
from agents.base import Agent, MetricError, Team, header_differences
from agents.registry import factory_config_keys, takes_seed

RandomAgent = agents.agent_class("random")


class Reporter(RandomAgent):
    """A random agent whose ``learn`` reports ``self.metric`` as ``losses/t``."""

    name = "reporter"
    metric: object = 0.5

    def learn(self, transition):
        return {"losses/t": self.metric}


class WithState(RandomAgent):
    """A random agent with one more state entry, ``w``."""

    name = "with_state"
    extra: object = None

    def __init__(self, env, config=None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        self.w = torch.zeros(3)
        self.extra = torch.zeros(2)

    def state_dict(self):
        return {**super().state_dict(), "w": self.w, "extra": self.extra}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.w.copy_(state["w"])
        self.extra = state["extra"]


class Overreach(Agent):
    """A plug-in's bug: slates for every env agent, not only its own ``agent_ids``."""

    name = "overreach"

    def act(self, obs, explore=False):
        k = self.slate_size
        return {a: obs[a]["action_mask"].float().topk(k, 1).indices for a in self.env_agents}


# 1. Metrics ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [torch.tensor(0.5), torch.tensor(2, dtype=torch.int64), np.float32(0.5), np.array(0.5),
     np.int64(3), 1, 0.25, True, float("nan")],
    ids=["tensor0d", "int_tensor", "np_float32", "np_0d_array", "np_int64", "int", "float",
         "bool", "nan"],
)  # fmt: skip
def test_a_scalar_metric_is_reported_as_a_float(value, market):
    """A 0-d tensor metric was kept raw: the runner saved it into every checkpoint (then
    refused them all as damaged) and crashed writing summary.json. Every real scalar is a
    float once ``learn()`` returned it; NaN stays NaN (the runner's divergence check is on
    the agent's state)."""
    env = market(num_envs=2)
    agent = Reporter(env)
    agent.metric = value
    res = agents.train(agent, env, 2 * 3)
    assert res.metrics
    for _, m in res.metrics:
        assert type(m["losses/t"]) is float
        assert m["losses/t"] == pytest.approx(float(value), nan_ok=True)
    team = Team([Reporter(env, agent_ids=["agent_0"]), RandomAgent(env, agent_ids=["agent_1"])])
    team.members[0].metric = value
    (metric,) = team.learn(None).values()
    assert type(metric) is float


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (torch.ones(3), r"a tensor of shape \(3,\)"),
        (torch.tensor([0.5]), r"a tensor of shape \(1,\)"),
        (np.zeros(2), r"a NumPy array of shape \(2,\)"),
        ("hello", r"a str \('hello'\)"),
        (None, "None"),
        (1j, "a complex"),
        ([0.5], "a list"),
    ],
)
def test_a_metric_that_is_not_one_number_is_refused_by_name(value, shown, market):
    """A vector or string metric crashed the runner's TensorBoard logging with a bare
    traceback (a None one, or a list, went into the checkpoints): it is refused where
    ``learn()`` returns it, naming the agent, the metric and what a metric may be."""
    env = market(num_envs=2)
    agent = Reporter(env)
    agent.metric = value
    message = rf"agent 'reporter': learn\(\) returned metric 'losses/t' = {shown}.*0-d tensor"
    with pytest.raises(MetricError, match=message):
        agents.train(agent, env, 2 * 3)
    assert issubclass(MetricError, ValueError)


def test_a_learn_that_returns_nothing_reports_no_metrics(market):
    env = market(num_envs=2)

    class Silent(RandomAgent):
        name = "silent"

        def learn(self, transition):
            pass

    assert agents.train(Silent(env), env, 2 * 3).metrics == []
    team = Team([Silent(env, agent_ids=["agent_0"]), RandomAgent(env, agent_ids=["agent_1"])])
    assert team.learn(None) == {}  # it was a TypeError (None.items())


# 2. What a state may hold ------------------------------------------------------------------
class _Kind(enum.IntEnum):
    A = 1


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (np.zeros(3), "numpy.ndarray"),
        (np.float64(1.0), "numpy.float64"),
        (frozenset({1}), "frozenset"),
        (range(3), "range"),
        (torch.Generator(), "Generator"),  # not its get_state()
        (_Kind.A, "_Kind"),
        (slice(1, 2), "slice"),
        ({np.int64(1): 2}, "numpy.int64"),  # a key
    ],
)
def test_save_refuses_a_state_that_load_could_not_read(value, kind, market, tmp_path):
    """``save`` wrote what ``torch.load(weights_only=True)`` then refused (every load of the
    file failed). It refuses it now, naming the place and what a state may hold, and writes
    nothing; the refused values are those torch's weights-only unpickler refuses."""
    env = market(num_envs=2)
    agent = WithState(env)
    agent.extra = value
    path = tmp_path / "agent.pt"
    message = rf"agent 'with_state' cannot be saved .*nothing was written.*state\['extra'\].*{kind}"
    with pytest.raises(ValueError, match=message) as err:
        agent.save(path)
    assert "weights_only" in str(err.value) and "tensors" in str(err.value)
    assert not path.exists()
    buffer = io.BytesIO()  # and torch does refuse it
    torch.save({"x": value}, buffer)
    buffer.seek(0)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(buffer, weights_only=True)


def test_save_names_the_place_in_a_team_member_and_keeps_what_torch_reads(market, tmp_path):
    env = market(num_envs=2)
    odd = WithState(env, agent_ids=["agent_1"])
    odd.extra = {"q": np.zeros(2)}
    team = Team([RandomAgent(env, agent_ids=["agent_0"]), odd])
    with pytest.raises(ValueError, match=r"state\['members'\]\[1\]\['extra'\]\['q'\] is a numpy"):
        team.save(tmp_path / "team.pt")
    # Everything weights_only reads is saved and loads back as it was.
    fine = {
        "t": torch.arange(3), "p": torch.nn.Parameter(torch.ones(2)), "n": None, "b": True,
        "i": 2**70, "f": 0.5, "c": 1 + 2j, "s": "x", "by": b"\x00", "ba": bytearray(b"ab"),
        "l": [1, (2, 3)], "set": {1, 2}, "od": collections.OrderedDict(a=1),
        "ctr": collections.Counter(a=2), "size": torch.Size([2, 3]), "dt": torch.float16,
        "dev": torch.device("cpu"), 3: "int key", (1, 2): "tuple key",
    }  # fmt: skip
    odd.extra = fine
    team.save(tmp_path / "team.pt")
    again = Team([RandomAgent(env, agent_ids=["agent_0"]), WithState(env, agent_ids=["agent_1"])])
    again.members[1].extra = fine
    again.load(tmp_path / "team.pt")
    assert again.members[1].extra.keys() == fine.keys()


def test_a_refused_load_reports_torchs_reason_whole_and_without_escape_codes(market, tmp_path):
    """A file ``weights_only`` refuses was reported by the first line of torch's message:
    its preamble, with terminal escape codes, without the cause, and "expected a file
    written by Agent.save()" of a file Agent.save() had written."""
    env = market(num_envs=2)
    agent = WithState(env)
    path = tmp_path / "agent.pt"
    agent.save(path)
    payload = torch.load(path, weights_only=True)
    payload["state"]["extra"] = np.zeros(3)
    torch.save(payload, path)
    with pytest.raises(ValueError) as err:
        agent.load(path)
    text = str(err.value)
    assert "\x1b" not in text and "\n" not in text
    assert "not a readable agent checkpoint" in text
    assert "Unsupported global" in text and "numpy" in text and "add_safe_globals" in text
    assert "expected a file written by Agent.save()" not in text
    with pytest.raises(ValueError, match="Unsupported global"):
        agents.load_agent(path, env)


# 3. A team member acts for its own agents only ---------------------------------------------
def test_a_team_member_acting_for_another_members_agent_is_refused(market):
    """Its slates silently replaced the other member's (``out.update``)."""
    env = market(num_envs=2)
    team = Team([RandomAgent(env, agent_ids=["agent_0"]), Overreach(env, agent_ids=["agent_1"])])
    message = (
        r"team member 1 \('overreach'\) returned slates for env agent\(s\) \['agent_0'\] it "
        r"does not control; it controls \['agent_1'\]"
    )
    with pytest.raises(ValueError, match=message):
        team.act(env.reset())
    with pytest.raises(ValueError, match=message):
        agents.train(team, env, 2 * 2)


# 4. and 5. Factory plug-ins: their seed and their config keys -------------------------------
def _factory_with_params(env, agent_ids=None, seed=0, rate=0.5):
    return RandomAgent(env, RandomAgent.Config(seed=seed), agent_ids=agent_ids)


def _factory_with_kwargs(env, agent_ids=None, **config):
    return RandomAgent(env, RandomAgent.Config(**config), agent_ids=agent_ids)


def _factory_without_seed(env, agent_ids=None):
    return RandomAgent(env, agent_ids=agent_ids)


def _factory_with_a_bug(env, agent_ids=None, **config):
    return len(3)  # a TypeError of its own, naming no config key


@pytest.fixture
def factories(monkeypatch):
    for name, factory in {
        "f_params": _factory_with_params,
        "f_kwargs": _factory_with_kwargs,
        "f_unseeded": _factory_without_seed,
        "f_bug": _factory_with_a_bug,
    }.items():
        monkeypatch.setitem(agents.registry._REGISTRY, name, factory)


def test_an_unknown_config_key_of_a_factory_is_a_value_error_naming_it(factories, market):
    """make_agent passed a factory's config through unchecked: a raw TypeError, which the
    runner (converting ValueErrors) reported as a traceback."""
    env = market(num_envs=2)
    assert agents.make_agent("f_params", env, seed=4, rate=0.1).config.seed == 4
    with pytest.raises(
        ValueError,
        match=r"agent 'f_params': unknown config key\(s\) \['bogus'\] for the factory "
        r".*_factory_with_params; valid keys: \['seed', 'rate'\]",
    ):
        agents.make_agent("f_params", env, bogus=1)
    with pytest.raises(
        ValueError,
        match=r"agent 'f_kwargs': the factory .*_factory_with_kwargs refuses config key\(s\) "
        r"\['bogus'\] \(it takes \*\*kwargs.*unexpected keyword argument 'bogus'",
    ):
        agents.make_agent("f_kwargs", env, seed=1, bogus=1)
    with pytest.raises(TypeError, match="has no len"):  # its own bug: not renamed
        agents.make_agent("f_bug", env, seed=1)
    assert factory_config_keys(_factory_with_params) == ["seed", "rate"]
    assert factory_config_keys(_factory_with_kwargs) is None


def test_which_targets_take_a_seed():
    assert takes_seed(RandomAgent)
    assert takes_seed(_factory_with_params) and takes_seed(_factory_with_kwargs)
    assert not takes_seed(_factory_without_seed)


def test_registered_agents_lists_what_register_registered():
    """Its docstring said plug-ins appear "once they were used": a ``module:attr`` or entry
    point plug-in never does (unless it registers itself)."""
    agents.agent_class("agents.baselines:RandomAgent")
    assert "agents.baselines:RandomAgent" not in agents.registered_agents()
    assert "once they were used" not in agents.registered_agents.__doc__
    assert "plugin_agents" in agents.registered_agents.__doc__


# 6., 7. and 8. A checkpoint that does not fit -----------------------------------------------
def _saved(agent, tmp_path, change):
    path = tmp_path / "agent.pt"
    agent.save(path)
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def test_a_config_key_only_the_checkpoint_has_is_named(market, tmp_path):
    """The message compared only the agent's own keys: "different config (...): {}"."""
    env = market(num_envs=2)
    agent = RandomAgent(env)
    path = _saved(agent, tmp_path, lambda p: p["header"]["config"].update(bogus=1))
    with pytest.raises(ValueError, match=r"different config .*bogus: 1 vs \(absent\)"):
        agent.load(path)
    head = torch.load(path, weights_only=True)["header"]
    assert "config.bogus: 1, this agent's (absent)" in header_differences(head, agent)
    head["config"].pop("seed")
    assert "config.seed: (absent), this agent's 0" in header_differences(head, agent)


def test_a_missing_state_key_is_named_with_the_expected_keys(market, tmp_path):
    """It read "... (left unchanged): 'w'", a KeyError's text."""
    env = market(num_envs=2)
    agent = WithState(env)
    path = _saved(agent, tmp_path, lambda p: p["state"].pop("w"))
    agent.w.fill_(7.0)
    with pytest.raises(
        ValueError,
        match=r"\(left unchanged\): state is missing key\(s\) \['w'\]; expected the keys "
        r"\['extra', 'generator', 'generator_device', 'w'\]",
    ):
        agent.load(path)
    assert bool((agent.w == 7.0).all())


@pytest.mark.parametrize("team", [False, True])
def test_a_foreign_state_key_is_refused(team, market, tmp_path):
    """Extra keys in a checkpoint's state loaded silently (``load_state_dict`` reads the keys
    it knows), against the README: a foreign checkpoint is refused, naming the place."""
    env = market(num_envs=2)
    if team:
        agent = Team(
            [RandomAgent(env, agent_ids=["agent_0"]), WithState(env, agent_ids=["agent_1"])]
        )
        state = lambda p: p["state"]["members"][1]  # noqa: E731
        where = r"state\['members'\]\[1\]"
    else:
        agent = WithState(env)
        state = lambda p: p["state"]  # noqa: E731
        where = "state"
    path = _saved(agent, tmp_path, lambda p: state(p).update(foo=torch.zeros(3), w=torch.ones(3)))
    before = agent.state_dict()["members"][1]["w"] if team else agent.w
    before = before.clone()
    with pytest.raises(
        ValueError,
        match=rf"does not fit this agent \(left unchanged\): {where} holds unexpected "
        r"key\(s\) \['foo'\]: this agent's state has the keys \['extra', 'generator', ",
    ):
        agent.load(path)
    after = agent.state_dict()["members"][1]["w"] if team else agent.w
    assert torch.equal(after, before)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['foo'\]"):
        agent.load(path)  # again: nothing was applied


def test_declared_optional_state_keys_load(market, tmp_path):
    env = market(num_envs=2)

    class Lenient(WithState):
        name = "lenient"
        optional_state_keys = frozenset({"legacy"})

    agent = Lenient(env)
    path = _saved(agent, tmp_path, lambda p: p["state"].update(legacy=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        agent.load(path)
