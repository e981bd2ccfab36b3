"""TorchRL: a recenv env through TorchRL's ``PettingZooWrapper``, with a documented group map.

TorchRL stacks agents into *groups*: each group is one sub-tensordict whose leading dimension
is its agents, so the agents of a group can share one network (vmapped or shared parameters).
recenv's agents are ``agent_0 … agent_{A-1}``, all with the same spaces, so any partition of
them into groups works. :func:`group_map` names the two that matter:

- ``"shared"`` (default): ``{"agents": [agent_0, …]}``, TorchRL's
  ``MarlGroupMapType.ALL_IN_ONE_GROUP``. One stacked group: parameter sharing, MAPPO / IPPO /
  QMIX over all agents.
- ``"per-agent"``: ``{"agent_0": ["agent_0"], …}``, TorchRL's
  ``MarlGroupMapType.ONE_GROUP_PER_AGENT``. One group, hence one network, per agent.

(TorchRL's own default for a parallel env groups names ``prefix_int`` by prefix, which for
recenv is ``{"agent": [agent_0, …]}``: the shared grouping under another key.) An explicit
``{group: [agents]}`` map (e.g. teams) is accepted too, and so is a ``MarlGroupMapType``, when
it puts each agent in exactly one group, no group is empty, and every group name is a
non-empty string other than TorchRL's root keys ``"next"``, ``"done"``, ``"terminated"``,
``"truncated"``, ``"_reset"`` and, with ``return_state=True``, ``"state"``: TorchRL fails on
those only later, deep in a step. ``ValueError`` names the group otherwise.

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
# Keys of the root of TorchRL's tensordict: a group of that name made PettingZooWrapper fail
# late and deep ("next": RecursionError; "done", "terminated", "truncated": a ValueError about
# "reward"; "_reset": RecursionError; "state", with return_state: a TypeError in step).
RESERVED_GROUPS = ("next", "done", "terminated", "truncated", "_reset")


def group_map(
    agents: Iterable[str],
    grouping: str | Mapping[str, list[str]] | Any = "shared",
    *,
    return_state: bool = True,
) -> dict[str, list[str]]:
    """The TorchRL group map of ``agents`` for ``grouping`` (see the module doc).

    An explicit mapping is checked and returned as is: each agent in exactly one group, group
    names non-empty strings other than TorchRL's root keys (:data:`RESERVED_GROUPS`, and
    ``"state"`` with ``return_state=True``, where the global state goes); ``ValueError``
    naming the group otherwise.
    """
    agents = list(agents)
    if isinstance(grouping, Mapping):
        groups = grouping
    elif callable(get_map := getattr(grouping, "get_group_map", None)):  # MarlGroupMapType
        groups = get_map(agents)
    elif isinstance(grouping, str) and grouping == "shared":
        groups = {"agents": agents}
    elif isinstance(grouping, str) and grouping == "per-agent":
        groups = {a: [a] for a in agents}
    else:
        raise ValueError(
            f"grouping={grouping!r}; allowed: {list(GROUPINGS)} or a {{group: [agents]}} map"
        )
    # TorchRL's enum and "per-agent" are checked too: they name groups after the agents.
    return _checked_groups(groups, agents, return_state)


def _checked_groups(
    grouping: Mapping, agents: list[str], return_state: bool
) -> dict[str, list[str]]:
    reserved = (*RESERVED_GROUPS, "state") if return_state else RESERVED_GROUPS
    allowed = f"non-empty strings other than {list(reserved)}" + (
        "" if return_state else " ('state' is taken with return_state=True)"
    )
    out: dict[str, list[str]] = {}
    for g, members in grouping.items():
        if not isinstance(g, str) or not g or g in reserved:
            raise ValueError(
                f"group map: group name {g!r} is not allowed; group names are {allowed}"
            )
        if isinstance(members, str) or not isinstance(members, Iterable):
            raise ValueError(
                f"group map: group {g!r} must list its agents (e.g. {agents[:1]}), got {members!r}"
            )
        out[g] = list(members)
        if not out[g]:
            raise ValueError(f"group map: group {g!r} is empty; each group needs an agent")
    listed = [a for members in out.values() for a in members]
    if sorted(listed, key=repr) != sorted(agents, key=repr):
        raise ValueError(f"group map {out} must put each of {agents} in exactly one group")
    return out


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

    for name, flag in (
        ("return_state", return_state),
        ("categorical_actions", categorical_actions),
    ):
        if not isinstance(flag, bool):  # "no" and 0 were taken by truthiness
            raise ValueError(f"{name}={flag!r} must be True or False")
    kwargs.setdefault("invalid_slate", "repair")
    env = make(env_id, seed=seed, **kwargs)
    with warnings.catch_warnings():
        # TorchRL warns for any PettingZoo other than the one its CI pins; recenv's tests
        # run check_env_specs on the PettingZoo recenv supports instead.
        warnings.filterwarnings("ignore", message="PettingZoo in TorchRL is tested")
        return PettingZooWrapper(
            env,
            group_map=group_map(env.possible_agents, grouping, return_state=return_state),
            return_state=return_state,
            categorical_actions=categorical_actions,
            seed=seed,
        )
