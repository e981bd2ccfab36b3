"""Network pieces shared by the learning agents."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build networks inside: their initial parameters (drawn on the CPU) depend only on
    ``seed``, and the global random state is left as it was. Only the CPU default generator is
    seeded: ``torch.manual_seed`` would also reseed every CUDA device's generator, which
    ``fork_rng(devices=[])`` does not restore. Build on the CPU, then move to the device."""
    # On the CPU whatever default device the caller set (torch.set_default_device("cuda")
    # would build the layers there, drawing from a generator this seed never set).
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(seed)
        yield


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation=nn.ReLU) -> nn.Sequential:
    """``in_dim -> hidden… -> out_dim`` with ``activation`` between layers (none at the end).
    float32 whatever ``torch.get_default_dtype()`` says: a float64 default would draw other
    initial weights from the same seed, and meet float32 observations."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h, dtype=torch.float32), activation()]
        d = h
    layers.append(nn.Linear(d, out_dim, dtype=torch.float32))
    return nn.Sequential(*layers)


class CandidateScorer(nn.Module):
    """One scalar per candidate from per-candidate features ``[..., C, F] -> [..., C]`` and one
    scalar per request from context features ``[..., G] -> [...]`` (the no-click option, or the
    value of a request whose slate is not clicked)."""

    def __init__(self, pair_dim: int, context_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.item = mlp(pair_dim, hidden, 1)
        self.context = mlp(context_dim, hidden, 1)

    def forward(self, pairs: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.item(pairs).squeeze(-1), self.context(context).squeeze(-1)


def one_hot_agent(index: torch.Tensor | int, num: int, like: torch.Tensor) -> torch.Tensor:
    """The agent-id feature ``[..., num]`` for ``like``'s leading shape; ``index`` (an int or a
    tensor) broadcasts against it like any tensor (so ``[B, 1]`` for ``like [B, C, F]``)."""
    idx = torch.as_tensor(index, device=like.device).expand(like.shape[:-1])
    return nn.functional.one_hot(idx.long(), num).to(like.dtype)
