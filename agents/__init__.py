"""agents: pluggable recommender agents for recenv, behind one small protocol.

- :class:`~agents.base.Agent`: the protocol (act on a batch, observe, learn, save/load).
- ``make_agent(name, env, **config)``, ``registered_agents()``, ``register``: the registry;
  plug-ins come from the entry-point group ``recenv.agents`` or ``"module:attr"``.
- Baselines: ``random``, ``popularity``, ``oracle`` (myopic, privileged), ``epsilon_greedy``,
  ``linucb``, ``mf`` (implicit matrix factorisation), ``ensemble``; learning: ``iql`` (SlateQ),
  ``mappo`` / ``ippo`` (centralized / local critic PPO), ``vdn`` / ``qmix`` (value
  decomposition, cooperative markets).
- :mod:`agents.rollout` (train / evaluate on the batched env), :mod:`agents.adapters` (the
  PettingZoo face; ``AgentOpponent``, an agent as a fixed opponent of the single-agent views).
"""

from agents import baselines, ensemble, iql, mappo, mf, qmix  # noqa: F401  (register the built-in agents)
from agents.adapters import AgentOpponent, PettingZooAgent, run_episodes
from agents.base import Agent, AgentConfig, ScoringAgent, Team, Transition, slate_from_scores
from agents.registry import (
    agent_class,
    load_agent,
    make_agent,
    make_team,
    plugin_agents,
    register,
    registered_agents,
)
from agents.rollout import RolloutResult, evaluate, summarize, train

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentOpponent",
    "PettingZooAgent",
    "RolloutResult",
    "ScoringAgent",
    "Team",
    "Transition",
    "agent_class",
    "evaluate",
    "load_agent",
    "make_agent",
    "make_team",
    "plugin_agents",
    "register",
    "registered_agents",
    "run_episodes",
    "slate_from_scores",
    "summarize",
    "train",
]
