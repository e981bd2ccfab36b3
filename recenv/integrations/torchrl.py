"""TorchRL: a recenv env through TorchRL's ``PettingZooWrapper``, with a documented group map.

TorchRL stacks agents into *groups*: each group is one sub-tensordict whose leading dimension
is its agents, so the agents of a group can share one network (vmapped or shared parameters).
recenv's agents are ``agent_0 … agent_{A-1}``, all with the same spaces, so any grouping works.
:func:`group_map` names the two that matter:

- ``"shared"`` (default): ``{"agents": [agent_0, …]}``, TorchRL's
  ``MarlGroupMapType.ALL_IN_ONE_GROUP``. One stacked group: parameter sharing, MAPPO / IPPO /
  QMIX over all agents.
- ``"per-agent"``: ``{"agent_0": ["agent_0"], …}``, TorchRL's
  ``MarlGroupMapType.ONE_GROUP_PER_AGENT``. One group, hence one network, per agent.

(TorchRL's own default for a parallel env groups names ``prefix_int`` by prefix, which for
recenv is ``{"agent": [agent_0, …]}``: the shared grouping under another key.) Any explicit
``{group: [agents]}`` map (e.g. teams) is accepted too, and so is a ``MarlGroupMapType``.

The wrapped env's tensordict, per group ``g`` of ``n`` agents (``C`` candidates, ``K`` slate):

- ``(g, "observation")``: the PettingZoo face's observation, a nested tensordict of ``user``,
  ``history``, ``candidates``, ``user_id``, ``candidate_ids`` (or one flat tensor with
  ``flatten_obs=True``), each ``[n, ...]``;
- ``(g, "action_mask")`` ``[n, K, C]`` bool: the candidate mask repeated for each slot; TorchRL
  also installs it in the action spec, so ``action_spec.rand()`` draws unmasked candidates;
- ``(g, "action")`` ``[n, K]`` int64 (``categorical_actions=True``): the slate;
- ``(g, "reward")``, ``(g, "done" | "terminated" | "truncated")`` ``[n, 1]``; the root
  ``done`` is set when any agent is done (all of a market's agents end together);
- ``"state"`` (``return_state=True``): the global latent state for centralized critics.

Slots of TorchRL's categorical action are independent (``rand()`` and a per-slot categorical
policy can repeat a candidate), so :func:`make_torchrl_env` defaults to
``invalid_slate="repair"``: invalid slots are dropped and counted (``repaired_slots`` is in
the PettingZoo infos; TorchRL does not carry step-only info keys). Pass
``invalid_slate="raise"`` with a policy that emits distinct candidates (e.g. top-K scores).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

GROUPINGS = ("shared", "per-agent")


def group_map(
    agents: Iterable[str], grouping: str | Mapping[str, list[str]] | Any = "shared"
) -> dict[str, list[str]]:
    """The TorchRL group map of ``agents`` for ``grouping`` (see the module doc).

    An explicit mapping is checked (every agent in exactly one group) and returned as is.
    """
    agents = list(agents)
    if isinstance(grouping, Mapping):
        listed = [a for members in grouping.values() for a in members]
        if sorted(listed) != sorted(agents):
            raise ValueError(
                f"group map {dict(grouping)} must put each of {agents} in exactly one group"
            )
        return {g: list(members) for g, members in grouping.items()}
    if callable(getattr(grouping, "get_group_map", None)):  # TorchRL's MarlGroupMapType
        return grouping.get_group_map(agents)
    if grouping == "shared":
        return {"agents": agents}
    if grouping == "per-agent":
        return {a: [a] for a in agents}
    raise ValueError(
        f"grouping={grouping!r}; allowed: {list(GROUPINGS)} or a {{group: [agents]}} map"
    )


def make_torchrl_env(
    env_id: str,
    *,
    grouping: str | Mapping[str, list[str]] | Any = "shared",
    seed: int | None = None,
    return_state: bool = True,
    categorical_actions: bool = True,
    **kwargs: Any,
):
    """``recenv.make(env_id, **kwargs)`` wrapped by TorchRL's ``PettingZooWrapper``.

    ``grouping`` picks the group map (:func:`group_map`); ``seed`` seeds the reset the wrapper
    does at construction (later unseeded resets, e.g. ``rollout()``'s, continue that stream;
    TorchRL's ``set_seed(s)`` reseeds); ``kwargs`` are ``recenv.make``'s (scenario keys and
    face options such as ``flatten_obs``), with ``invalid_slate`` defaulting to ``"repair"``.
    """
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper

    from recenv.registry import make

    kwargs.setdefault("invalid_slate", "repair")
    env = make(env_id, seed=seed, **kwargs)
    with warnings.catch_warnings():
        # TorchRL warns for any PettingZoo other than the one its CI pins; recenv's tests
        # run check_env_specs on the PettingZoo recenv supports instead.
        warnings.filterwarnings("ignore", message="PettingZoo in TorchRL is tested")
        return PettingZooWrapper(
            env,
            group_map=group_map(env.possible_agents, grouping),
            return_state=return_state,
            categorical_actions=categorical_actions,
            seed=seed,
        )
