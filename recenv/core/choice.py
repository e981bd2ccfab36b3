"""The user's choice: utility terms, conditional-logit probabilities, and sampling.

Choice models return probabilities; sampling is a separate function that takes explicit
uniforms, so the statistical test can compare sampled frequencies with the probabilities.

Shapes: ``N`` markets, ``P`` page entries (A*K), ``T`` topics, ``D`` embedding dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recenv.core.config import MarketConfig
from recenv.core.indexing import first_argmax, like, lookup_table

UTILITY_TERMS = ("interest", "taste", "quality", "boredom", "price", "position")


@dataclass
class UtilityTerms:
    """Each term of the utility of every page entry, ``[N, P]`` each. ``total`` is their sum."""

    interest: torch.Tensor
    taste: torch.Tensor
    quality: torch.Tensor
    boredom: torch.Tensor
    price: torch.Tensor
    position: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.interest + self.taste + self.quality + self.boredom + self.price + self.position


def position_costs(positions: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``log2(1 + p)`` for page positions ``p = 0..positions-1``, ``[positions]`` float32 (a
    :func:`~recenv.core.indexing.lookup_table`)."""
    return lookup_table(lambda p: torch.log2(1.0 + p), torch.arange(positions, device=device))


def dot(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x`` [N, D] dotted with each of ``rows`` [N, P, D] -> [N, P], as products and a sum.

    Not ``einsum`` or a matmul: those run through BLAS (oneDNN on the CPU, cuBLAS on CUDA),
    whose float32 results follow ``torch.set_float32_matmul_precision``, a process-wide
    setting that training code lowers for its networks (``"high"``: TF32 on CUDA, a 10-bit
    mantissa; ``"medium"`` changed Video-v0's eager trajectory on an AMD EPYC Zen 4 CPU). The
    simulation must not follow it. Compiled, the products and the sum fuse into the
    utilities' loop on every device (CUDA's inductor kept ``einsum``'s batched matmul as three
    cuBLAS calls a step; the eager CUDA step's ``bmm`` took 1.5 ms of 17 on an H200).
    """
    return (x[:, None, :] * rows).sum(dim=-1)


def item_utility_terms(
    cfg: MarketConfig,
    interest: torch.Tensor,  # [N, T]
    boredom: torch.Tensor,  # [N, T]
    taste: torch.Tensor,  # [N, D]
    price_sensitivity: torch.Tensor,  # [N]
    topics: torch.Tensor,  # [N, P, T]
    embed: torch.Tensor,  # [N, P, D]
    quality: torch.Tensor,  # [N, P]
    price: torch.Tensor,  # [N, P]
    position_cost: torch.Tensor | None,  # [N, P] log2(1 + 0-based page position), or None
) -> UtilityTerms:
    """Utility = interest match + taste + quality − boredom − price sensitivity × price
    − position bias × log2(1 + position). ``position_cost=None`` gives the position-free
    utility (the oracle's). Callers look ``log2(1 + position)`` up (:func:`position_costs`)."""
    interest_term = cfg.interest_weight * dot(interest, topics)
    taste_term = cfg.taste_weight * dot(taste, embed)
    boredom_term = -cfg.boredom_weight * dot(boredom, topics)
    price_term = -price_sensitivity[:, None] * price
    if position_cost is None:
        pos_term = torch.zeros_like(quality)
    else:
        pos_term = -cfg.position_bias * position_cost
    return UtilityTerms(
        interest=interest_term,
        taste=taste_term,
        quality=cfg.quality_weight * quality,
        boredom=boredom_term,
        price=price_term,
        position=pos_term,
    )


def logit_probabilities(
    utility: torch.Tensor,  # [N, P]
    visible: torch.Tensor,  # [N, P] bool
    no_click_utility: float | torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Conditional logit over the visible entries plus a no-click option.

    Returns ``[N, P + 1]`` probabilities; the last column is no-click. Invisible entries get 0.
    """
    logits = torch.where(visible, utility / temperature, torch.full_like(utility, -math.inf))
    nc = like(no_click_utility, utility)
    nc = (nc / temperature).expand(utility.shape[0], 1)
    return torch.softmax(torch.cat([logits, nc], dim=1), dim=1)


def sample_choice(probs: torch.Tensor, uniforms: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """Sample one column of ``probs`` [N, P+1] with ``uniforms`` [N, P+1], one per column.

    Gumbel-max in its exponential-race form: ``argmax(log p + G)`` with Gumbel noise
    ``G = -log(-log u)`` is ``argmax(p / E)`` with ``E = -log u`` exponential, because ``log``
    is increasing; one logarithm per entry instead of three (the compiled step computes them
    one market at a time). Zero-probability entries score 0 and lose to any possible entry
    (the no-click column always has ``p > 0``). Returns ``[N]`` int64.
    """
    score = probs / -torch.log(uniforms)
    # Compiled (``fused``), the argmax as elementwise compares: the same index, and the
    # race's logarithms and the response after it vectorised across markets instead of
    # computed one market at a time (the short reduction made that loop scalar).
    return first_argmax(score) if fused else score.argmax(dim=1)
