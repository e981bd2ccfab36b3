"""``agents.load_agent`` on a checkpoint whose header was damaged (by hand, or by another
program): a ``ValueError`` naming the file, the header field and what was expected, raised
before any agent is built. Valid checkpoints (single agents, teams, plug-ins used as
``"module:attr"``, an unnamed one among them) load as before.

Regression tests: ``agent_ids=5``, ``config=5``, a config key that is not a str, a member
header that is not a dict or has no ``agent`` raised a raw ``TypeError``, ``AttributeError``
or ``KeyError``; ``agent_ids=["agent_9"]``, an unknown config key or a wrong-typed config
value, and a team without members raised a ``ValueError`` that named neither the file nor
the header; an unknown ``agent`` was silently rebuilt from the header's ``class``.
"""

from __future__ import annotations

import re
import textwrap
import uuid

import pytest
import torch

import agents
import recenv
from agents import registry

ENV_AGENTS = "['agent_0', 'agent_1']"


class _Built(AssertionError):
    """Raised by the ``no_build`` make_agent: an agent was built from a damaged header."""


@pytest.fixture(scope="module")
def env():
    return recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, horizon=10)


@pytest.fixture(scope="module")
def saved(env, tmp_path_factory):
    """The payloads of a LinUCB and of a team (LinUCB + popularity) checkpoint."""
    root = tmp_path_factory.mktemp("ckpt")
    single, team = root / "linucb.pt", root / "team.pt"
    agents.make_agent("linucb", env).save(single)
    agents.make_team(env, {"agent_0": "linucb", "agent_1": "popularity"}).save(team)
    return {
        "single": torch.load(single, weights_only=True),
        "team": torch.load(team, weights_only=True),
    }


@pytest.fixture
def no_build(monkeypatch):
    """``agents.registry.make_agent`` fails the test: the header was not checked first."""

    def make_agent(*args, **kwargs):
        raise _Built("an agent was built from the damaged header")

    monkeypatch.setattr(registry, "make_agent", make_agent)


def _damaged(saved, which, damage, path):
    payload = {"header": _copy(saved[which]["header"]), "state": saved[which]["state"]}
    damage(payload["header"])
    torch.save(payload, path)
    return path


def _copy(x):
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


def _set(key, value, member=None):
    def damage(head):
        (head if member is None else head["members"][member])[key] = value

    return damage


def _drop(key, member=None):
    def damage(head):
        del (head if member is None else head["members"][member])[key]

    return damage


def _config(key, value, member=None):
    def damage(head):
        (head if member is None else head["members"][member])["config"][key] = value

    return damage


M0 = "header['members'][0]"
IDS = "expected a non-empty list of distinct agents of this env, " + ENV_AGENTS
CASES = {
    # agent_ids
    "agent_ids=5": ("single", _set("agent_ids", 5), f"header['agent_ids']=5; {IDS}"),
    "agent_ids unknown": (
        "single",
        _set("agent_ids", ["agent_9"]),
        f"header['agent_ids']=['agent_9']; {IDS}",
    ),
    "agent_ids ints": ("single", _set("agent_ids", [0, 1]), f"header['agent_ids']=[0, 1]; {IDS}"),
    "agent_ids a str": (
        "single",
        _set("agent_ids", "agent_0"),
        f"header['agent_ids']='agent_0'; {IDS}",
    ),
    "agent_ids empty": ("single", _set("agent_ids", []), f"header['agent_ids']=[]; {IDS}"),
    "agent_ids twice": (
        "single",
        _set("agent_ids", ["agent_0", "agent_0"]),
        f"header['agent_ids']=['agent_0', 'agent_0']; {IDS}",
    ),
    "agent_ids missing": ("single", _drop("agent_ids"), f"no header['agent_ids']; {IDS}"),
    # agent (the name) and class
    "agent=3": ("single", _set("agent", 3), "header['agent']=3; expected an agent name (a str)"),
    "agent unknown": (
        "single",
        _set("agent", "bogus"),
        "header['agent']='bogus' (unknown agent 'bogus'; registered agents: [",
    ),
    "agent unknown, no class": (
        "single",
        lambda h: (_set("agent", "bogus")(h), _drop("class")(h)),
        "header['agent']='bogus': unknown agent 'bogus'; registered agents: [",
    ),
    "agent unknown, class unknown": (
        "single",
        lambda h: (_set("agent", "bogus")(h), _set("class", "no_such_module_x:Agent")(h)),
        "header['class']='no_such_module_x:Agent', which does not resolve either",
    ),
    "agent unknown, class=3": (
        "single",
        lambda h: (_set("agent", "bogus")(h), _set("class", 3)(h)),
        "header['class']=3; expected the agent's class as 'module:ClassName'",
    ),
    # config
    "config=5": (
        "single",
        _set("config", 5),
        "header['config']=5; expected a dict of the config of",
    ),
    "config a list": (
        "single",
        _set("config", [1]),
        "header['config']=[1]; expected a dict of the config of",
    ),
    "config missing": ("single", _drop("config"), "no header['config']; expected a dict"),
    "config key not a str": (
        "single",
        _config(3, 1),
        "header['config']={.*3: 1}; expected a dict of the config of",
    ),
    "config unknown key": (
        "single",
        _config("zzz", 1),
        "header['config'] that agent 'linucb' does not take: unknown config key(s) ['zzz'] "
        "for LinUCBConfig; valid keys: ['seed', 'alpha', 'ridge', 'target']",
    ),
    "config wrong type": (
        "single",
        _config("seed", "x"),
        "header['config'] that agent 'linucb' does not take: LinUCBConfig: seed='x' must be an int",
    ),
    # teams
    "members=5": ("team", _set("members", 5), "header['members']=5; expected a non-empty list"),
    "members empty": ("team", _set("members", []), "header['members']=[]; expected a non-empty"),
    "members missing": ("team", _drop("members"), "no header['members']; expected a non-empty"),
    "member not a dict": (
        "team",
        _set("members", [5]),
        f"{M0}=5; expected a dict as Agent.save() writes it",
    ),
    "member without agent": (
        "team",
        _drop("agent", member=0),
        f"no {M0}['agent']; expected an agent name",
    ),
    "member agent=3": ("team", _set("agent", 3, member=0), f"{M0}['agent']=3; expected"),
    "member agent_ids=5": ("team", _set("agent_ids", 5, member=0), f"{M0}['agent_ids']=5; {IDS}"),
    "member config=5": ("team", _set("config", 5, member=0), f"{M0}['config']=5; expected a dict"),
    "member config unknown key": (
        "team",
        _config("zzz", 1, member=1),
        "header['members'][1]['config'] that agent 'popularity' does not take: unknown "
        "config key(s) ['zzz']",
    ),
    "member a team without members": (
        "team",
        _set("agent", "team", member=0),
        f"no {M0}['members']; expected a non-empty",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_a_damaged_header_is_refused_by_file_and_field(case, saved, env, tmp_path, no_build):
    """Every malformed field is named, with what was expected, before an agent is built."""
    which, damage, message = CASES[case]
    path = _damaged(saved, which, damage, tmp_path / "damaged.pt")
    pattern = re.escape(f"checkpoint {str(path)!r} has ") + ".*" + _escaped(message)
    with pytest.raises(ValueError, match=pattern):
        agents.load_agent(path, env)


def _escaped(message: str) -> str:
    """``message`` as a regex, with ``.*`` kept as a wildcard."""
    return ".*".join(re.escape(part) for part in message.split(".*"))


@pytest.mark.parametrize(
    "which,damage,message",
    [
        (  # members that are well formed, each alone: the Team refuses them together
            "team",
            _set("agent_ids", ["agent_1"], member=0),
            "header['members']: env agent 'agent_1' is controlled by two team members",
        ),
        (  # a config the ensemble's config class takes but the ensemble does not
            "ensemble",
            _config("members", []),
            "agent 'ensemble' refuses header (agent_ids=['agent_0', 'agent_1'], config=.*"
            "'members': [], .*: an ensemble needs at least one member",
        ),
        (  # a member config key that is not a str: a TypeError in the ensemble's make_agent
            "ensemble",
            _config("members", [["popularity", {3: 1}]]),
            "agent 'ensemble' refuses header (agent_ids=.*): TypeError: keywords must be strings",
        ),
    ],
    ids=["team members overlap", "ensemble without members", "ensemble member config key"],
)
def test_an_agent_refusing_its_header_names_the_file(which, damage, message, saved, env, tmp_path):
    """A header whose fields are well formed but whose values the agent (or the team) refuses
    when built: the error names the file and the header, not only the agent's rule."""
    if which == "ensemble":
        source = tmp_path / "ensemble.pt"
        agents.make_agent("ensemble", env).save(source)
        saved = {"ensemble": torch.load(source, weights_only=True)}
    path = _damaged(saved, which, damage, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match=_escaped(f"checkpoint {str(path)!r}: {message}")):
        agents.load_agent(path, env)


def test_a_missing_header_is_refused_by_file(saved, env, tmp_path, no_build):
    for payload in ({"state": saved["single"]["state"]}, {"header": 5, "state": {}}):
        path = tmp_path / "headless.pt"
        torch.save(payload, path)
        with pytest.raises(
            ValueError, match=re.escape(f"{str(path)!r} is not an agent checkpoint")
        ):
            agents.load_agent(path, env)


def test_valid_checkpoints_load(saved, env, tmp_path):
    """Undamaged headers rebuild the saved agents, as before."""
    obs = env.reset(seed=0)
    for which in ("single", "team"):
        path = tmp_path / f"{which}.pt"
        torch.save(saved[which], path)
        again = agents.load_agent(path, env)
        assert again.name == saved[which]["header"]["agent"]
        assert again.agent_ids == ["agent_0", "agent_1"]
        again.act(obs)
    team = agents.load_agent(tmp_path / "team.pt", env)
    assert [(m.name, m.agent_ids) for m in team.members] == [
        ("linucb", ["agent_0"]),
        ("popularity", ["agent_1"]),
    ]


UNNAMED_PLUGIN = """
from agents import ScoringAgent
import torch


class Unnamed(ScoringAgent):  # no name: its checkpoints say agent ""
    def score_agent(self, i, obs_a, explore=False):
        return torch.zeros(obs_a["action_mask"].shape)


class Named(Unnamed):
    name = "{name}"  # not registered: only "module:attr" finds it
"""


def test_plugins_used_as_module_attr_are_rebuilt_from_their_class(env, tmp_path, monkeypatch):
    """A checkpoint's ``agent`` that does not resolve is rebuilt from its ``class`` when that
    class is the agent the header names (``""`` for an unnamed one); otherwise refused."""
    module, name = f"recenv_plugin_{uuid.uuid4().hex[:8]}", f"named_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(UNNAMED_PLUGIN.format(name=name)))
    monkeypatch.syspath_prepend(str(tmp_path))
    for cls, agent in (("Unnamed", ""), ("Named", name)):
        path = tmp_path / f"{cls}.pt"
        agents.make_agent(f"{module}:{cls}", env).save(path)
        payload = torch.load(path, weights_only=True)
        assert payload["header"]["agent"] == agent
        again = agents.load_agent(path, env)
        assert type(again).__name__ == cls and type(again).__module__ == module
        payload["header"]["agent"] = "linucb_impostor"
        torch.save(payload, path)
        with pytest.raises(
            ValueError,
            match=re.escape(f"header['class']='{module}:{cls}' is agent {agent!r}, not "),
        ):
            agents.load_agent(path, env)


@pytest.mark.parametrize("members", [5, [5], ["x", {"agent": "popularity"}]], ids=str)
def test_team_load_refuses_damaged_members_by_file(members, saved, env, tmp_path):
    """``Team.load`` into an existing team (not through ``load_agent``): member headers that
    are not a list of dicts were a raw TypeError/AttributeError."""
    payload = dict(saved["team"])
    payload["header"] = {**payload["header"], "members": members}
    path = tmp_path / "team.pt"
    torch.save(payload, path)
    team = agents.make_team(env, {"agent_0": "linucb", "agent_1": "popularity"})
    with pytest.raises(ValueError, match=re.escape(repr(str(path)))):
        team.load(path)
