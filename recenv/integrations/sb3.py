"""Stable-Baselines3 through SuperSuit: the parameter-sharing recipe, with its limits fixed.

SuperSuit's recipe turns a PettingZoo ``ParallelEnv`` into an SB3 ``VecEnv`` in which every
agent of every market copy is one "env" of the batch, so one SB3 policy is shared by all agents
(parameter sharing)::

    venv = ss.pettingzoo_env_to_vec_env_v1(parallel_env)   # A agents -> A vector slots
    venv = ss.concat_vec_envs_v1(venv, n, base_class="stable_baselines3")  # n copies

:func:`make_sb3_vec_env` builds exactly that from a recenv id, and fixes what the raw recipe
gets wrong for recenv:

1. **Flat observations.** SB3's ``MlpPolicy`` needs a ``Box``: the env is made with
   ``flatten_obs=True`` (user, history, candidates row by row, action mask; no ids).
2. **Slates sampled slot by slot.** SB3's ``MultiDiscrete`` PPO samples each of the K slots
   independently and ignores the action mask, so duplicate and masked slots happen. The env is
   made with ``invalid_slate="repair"``: invalid slots are dropped from the page and counted in
   ``infos[i]["repaired_slots"]`` (a learner that wastes slots shows fewer items and earns
   less, so it learns to avoid them). ``invalid_slate="raise"`` is refused.
3. **No seed forwarding.** SuperSuit's concatenated env has no ``seed()``, so ``PPO(seed=s)``
   raises ``AttributeError``, and its SB3 wrapper resets without a seed; worse, its copies are
   cloudpickled clones of one env, which all replay the same random stream. Here ``seed(s)``
   (or ``seed=s``) is kept and forwarded at the next ``reset()``: copy ``i`` of the market is
   seeded ``s + i``; without a seed each copy draws its own from the OS.
4. **Time limits seen as terminal.** The SB3 wrapper merges ``terminated | truncated`` into
   ``dones`` without SB3's ``"TimeLimit.truncated"`` flag, so PPO would not bootstrap the
   value at the horizon. The env sets ``infos[i]["TimeLimit.truncated"]`` (and SuperSuit's
   ``"terminal_observation"`` carries the final observation) so it does.
5. **Episode statistics.** recenv's ``infos[agent]["episode"]`` (its metrics dict) collides
   with the key SB3 reads for Monitor statistics (``{"r", "l"}``): here ``"episode"`` is
   ``{"r": return, "l": length}`` and recenv's metrics move to ``"recenv_episode"``.
6. **Actions checked before any copy steps.** SuperSuit casts the ``[num_envs, K]`` action
   array into the action space's int64 with numpy's ``same_kind`` rule: a float array fails
   with numpy's bare ``TypeError`` (no agent, no allowed values), a bool array becomes slates
   of 0s and 1s, a wrong shape gives ``"Output array is the wrong shape"``. Here the array is
   checked first, as recenv's own faces check a slate: a dtype other than an integer one
   (floats even with whole values, as on the PettingZoo face; NaN and fractions named with
   their slot) or a shape other than ``(num_envs, K)`` raises ``ValueError`` naming the agent,
   its vector index and market copy, and the allowed values, before any copy steps.
   (SB3's own policies never hand floats to a ``MultiDiscrete`` env: their samples are int64.)
   Integer indices out of range, repeated or masked are repaired (fix 2).

Known limits that remain: every agent shares one policy (SuperSuit's parameter sharing; for
independent policies use RLlib); the policy ignores the action mask (fix 2 makes that safe, not
optimal); with ``num_cpus > 1`` SuperSuit seeds process ``p`` with ``seed + p`` and its copies
``seed + p + j``, so seeded copies would collide — a seed is refused there (use ``num_cpus=0``
to seed); agents must all act every step (recenv's do).
"""

from __future__ import annotations

import secrets
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import supersuit as ss
from pettingzoo.utils.wrappers import BaseParallelWrapper
from stable_baselines3.common.vec_env import VecEnvWrapper

from recenv.core.config import check_int
from recenv.core.market import check_seed

if TYPE_CHECKING:
    from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper


class SB3Adapter(BaseParallelWrapper):
    """A recenv ``ParallelEnv`` made ready for SuperSuit's copies and SB3's conventions.

    - Its first unseeded ``reset`` draws a fresh seed from the OS: SuperSuit's copies are
      cloudpickled clones, which would otherwise all replay the one stream they were cloned
      with (fix 3 of the module doc, for ``seed=None``).
    - Infos (fixes 4 and 5): ``"TimeLimit.truncated"`` on every step, Monitor-style
      ``"episode"`` = ``{"r", "l"}`` at the last step, recenv's metrics as ``"recenv_episode"``.
    """

    def __init__(self, env):
        super().__init__(env)
        self._fresh_seed = True

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is None and self._fresh_seed:
            seed = secrets.randbits(31)
        self._fresh_seed = False
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: dict[str, Any]):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        for agent, info in infos.items():
            info["TimeLimit.truncated"] = bool(
                truncations.get(agent, False) and not terminations.get(agent, False)
            )
            episode = info.pop("episode", None)
            if episode is not None:
                info["recenv_episode"] = episode
                info["episode"] = {"r": float(episode["return"]), "l": int(episode["length"])}
        return obs, rewards, terminations, truncations, infos


_MULTIPROCESS_SEED = (
    "with num_cpus > 1 SuperSuit gives overlapping seeds to the copies of different processes "
    "(process p: seed + p, its copy j: seed + p + j); seed with num_cpus=0, or pass seed=None "
    "(each copy then draws its own seed)"
)


class _PassThrough(VecEnvWrapper):
    """A ``VecEnvWrapper`` that passes ``reset`` (with its ``reset_infos``) and ``step_wait``
    through, and is built without SB3's per-slot ``render_mode`` warning."""

    def __init__(self, venv):
        with warnings.catch_warnings():
            # SB3 asks every slot for ``render_mode``; PettingZoo envs keep one per env.
            warnings.filterwarnings("ignore", message="The `render_mode` attribute")
            super().__init__(venv)

    def reset(self):
        obs = self.venv.reset()
        self.reset_infos = self.venv.reset_infos
        return obs

    def step_wait(self):
        return self.venv.step_wait()


class SeedForwarding(_PassThrough):
    """Keeps ``seed(s)`` and hands it to SuperSuit's concatenated env at the next ``reset()``
    (fix 3 of the module doc): copy ``i`` of the market is seeded ``s + i``."""

    # SuperSuit's SB3 wrapper (not any VecEnv): its own ``venv``, the concatenated env, takes
    # the seed.
    venv: SB3VecEnvWrapper

    def __init__(self, venv, num_copies: int, seed: int | None = None, multiprocess: bool = False):
        super().__init__(venv)
        self.num_copies = num_copies
        self.multiprocess = multiprocess
        self._pending_seed = seed

    def seed(self, seed: int | None = None) -> list[int | None]:
        """The seed of each vector slot's market copy (slot ``k``: ``seed + k // A``)."""
        seed = check_seed(seed, self.num_copies)
        if seed is not None and self.multiprocess:
            raise ValueError(_MULTIPROCESS_SEED)
        self._pending_seed = seed
        per_copy = self.num_envs // self.num_copies
        return [None if seed is None else seed + k // per_copy for k in range(self.num_envs)]

    def reset(self):
        if self._pending_seed is None:
            obs = self.venv.reset()
        else:
            # SuperSuit's SB3 wrapper resets without a seed; its concatenated env takes one.
            obs, self.venv.reset_infos = self.venv.venv.reset(seed=self._pending_seed)
            self._pending_seed = None
        self.reset_infos = self.venv.reset_infos
        return obs


class SlateCheck(_PassThrough):
    """Checks the ``[num_envs, K]`` action array before SuperSuit casts it (fix 6 of the module
    doc): vector index ``i`` is agent ``agents[i % A]`` of market copy ``i // A``."""

    def __init__(self, venv, agents: list[str], slate_size: int, num_candidates: int):
        super().__init__(venv)
        self.agents = list(agents)
        self.slate_size = slate_size
        self.num_candidates = num_candidates

    def step_async(self, actions) -> None:
        self.venv.step_async(self._checked(actions))

    def _checked(self, actions) -> np.ndarray:
        """``actions`` as an integer ``[num_envs, K]`` array; ``ValueError`` naming the agent,
        its vector index and copy, and the allowed values when it is not one."""
        N, K, C = self.num_envs, self.slate_size, self.num_candidates
        allowed = f"integer candidate indices in [0, {C - 1}]"
        try:
            x = np.asarray(actions)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(
                f"actions: cannot read {type(actions).__name__} as a ({N}, {K}) array of slates "
                f"of {allowed}: {e}"
            ) from None
        if x.shape == (N, K) and x.dtype.kind in "iu":
            return x
        if x.shape != (N, K):
            A = len(self.agents)
            raise ValueError(
                f"actions: shape {x.shape}, expected (num_envs={N}, slate_size={K}): row i is "
                f"the slate of agent {self.agents}[i % {A}] of market copy i // {A}, {K} "
                f"distinct {allowed}"
            )
        hint = ""
        if x.dtype.kind == "f":
            whole = np.isfinite(x) & (x == np.round(x))
            if not whole.all():
                i, k = (int(j) for j in np.argwhere(~whole)[0])
                v = float(x[i, k])
                what = "NaN" if v != v else repr(v)
                raise ValueError(
                    f"action of {self._where(i)}: slate slot {k} is {what}, not an integer; "
                    f"expected {allowed} (dtype {x.dtype})"
                )
            hint = " (the values are whole: cast them with actions.astype(np.int64))"
        raise ValueError(
            f"action of {self._where(0)}: dtype {x.dtype}, expected an integer dtype with "
            f"candidate indices in [0, {C - 1}]{hint}"
        )

    def _where(self, i: int) -> str:
        A = len(self.agents)
        return f"{self.agents[i % A]} (vector index {i}, market copy {i // A})"


def make_sb3_vec_env(
    env_id: str,
    *,
    num_vec_envs: int = 1,
    num_cpus: int = 0,
    seed: int | None = None,
    **config: Any,
):
    """The SuperSuit parameter-sharing ``VecEnv`` of ``env_id`` for Stable-Baselines3.

    ``num_vec_envs`` market copies of ``A`` agents give ``num_vec_envs * A`` vector slots (slot
    ``i * A + a`` is agent ``a`` of copy ``i``). ``num_cpus > 1`` runs the copies in that many
    processes (SuperSuit's ``ProcConcatVec``; 0 and 1 run them in this process). ``seed`` (an
    int or None) seeds copy ``i`` with ``seed + i`` at the first reset (``PPO(seed=...)`` works
    too). ``config`` takes the scenario's keys. ``num_vec_envs`` (an int >= 1), ``num_cpus`` (an
    int >= 0) and ``seed`` are checked first: ``ValueError`` naming the argument.
    """
    from recenv.registry import make

    # Checked here: SuperSuit took num_vec_envs=0 to an IndexError, 2.0 or "2" to a TypeError,
    # num_cpus=-3 silently (a process pool of negative size), seed="7" to a TypeError at reset.
    num_vec_envs = check_int("num_vec_envs", num_vec_envs, 1)
    num_cpus = check_int("num_cpus", num_cpus, 0)  # 0 and 1: in this process; > 1: processes
    seed = check_seed(seed, num_vec_envs)  # copy i is seeded seed + i
    if config.get("invalid_slate", "repair") != "repair":
        raise ValueError(
            "SB3's MultiDiscrete policies sample each slot independently (duplicates and masked "
            "candidates happen): the SB3 recipe needs invalid_slate='repair'"
        )
    config["invalid_slate"] = "repair"
    if config.pop("flatten_obs", True) is not True:
        raise ValueError("SB3's MlpPolicy needs flat observations: flatten_obs must be True")
    if num_cpus > 1 and seed is not None:
        raise ValueError(_MULTIPROCESS_SEED)
    env = make(env_id, flatten_obs=True, **config)
    venv = ss.pettingzoo_env_to_vec_env_v1(SB3Adapter(env))
    venv = ss.concat_vec_envs_v1(
        venv, num_vec_envs, num_cpus=num_cpus, base_class="stable_baselines3"
    )

    venv = SeedForwarding(venv, num_vec_envs, seed, multiprocess=num_cpus > 1)
    cfg = env.config
    return SlateCheck(venv, env.possible_agents, cfg.slate_size, cfg.num_candidates)
