"""What a click is worth: the engagement response by domain.

All functions take the chosen item's utility and attributes for every market (``[N]``) and
return ``(value, time_spent, fit)``:

- ``value``: the reward currency (engagement, watch time, listening time, or revenue);
- ``time_spent``: how much of the session budget the consumption used;
- ``fit``: in [0, 1], how well the item met the user's expectation (drives satisfaction).
"""

from __future__ import annotations

import torch

from recenv.core.config import MarketConfig


def respond(
    cfg: MarketConfig,
    clicked: torch.Tensor,  # [N] bool
    utility: torch.Tensor,  # [N] total utility of the chosen item (0 when no click)
    length: torch.Tensor,  # [N] item length
    price: torch.Tensor,  # [N] item price
    noise: torch.Tensor,  # [N] standard normal
    uniform: torch.Tensor,  # [N] uniform in (0, 1)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(value, time_spent, fit)``, each ``[N]``, zero without a click. ``fit`` is
    ``sigmoid(utility)``; ``jitter = exp(s z - s^2 / 2)`` (``s`` the engagement noise, ``z``
    standard normal) has mean one.

    - ``engagement``, ``watch_time``: the share ``min(fit x jitter, 1)`` of the item's length
      is consumed; value and time spent are that time.
    - ``listen``: as engagement, but a share under one half is a skip, worth a tenth of its
      time, and its fit is halved.
    - ``purchase``: the click opens the product page, browsed for half the item's length,
      and buys with probability ``fit`` (``uniform < fit``), earning the price; without a
      purchase the fit is halved.

    (``tests/test_response.py`` restates these.)"""
    fit = torch.sigmoid(utility)
    jitter = torch.exp(cfg.engagement_noise * noise - 0.5 * cfg.engagement_noise**2)
    if cfg.response == "purchase":
        # A click opens the product page; the purchase happens with probability = fit.
        bought = clicked & (uniform < fit)
        value = torch.where(bought, price, torch.zeros_like(price))
        time_spent = torch.where(clicked, 0.5 * length, torch.zeros_like(length))
        fit = torch.where(bought, fit, 0.5 * fit)
    elif cfg.response == "listen":
        # The share of the track listened to; under half counts as a skip (little value).
        share = (fit * jitter).clamp(max=1.0)
        skipped = share < 0.5
        value = torch.where(skipped, 0.1 * share, share) * length
        time_spent = share * length
        fit = torch.where(skipped, 0.5 * fit, fit)
    else:  # "engagement" and "watch_time": time spent, growing with fit and length
        share = (fit * jitter).clamp(max=1.0)
        value = share * length
        time_spent = value
    zero = torch.zeros_like(value)
    return (
        torch.where(clicked, value, zero),
        torch.where(clicked, time_spent, zero),
        torch.where(clicked, fit, zero),
    )


def expected_click_value(
    cfg: MarketConfig,
    utility: torch.Tensor,  # [...] an item's utility for the user
    length: torch.Tensor,  # [...] its length
    price: torch.Tensor,  # [...] its price
) -> torch.Tensor:
    """What a click on the item is worth on average, by :func:`respond`'s model, ``[...]``:
    ``fit · length`` (engagement, watch time), ``fit · price`` (purchase), and for ``listen``
    ``fit · length``, a tenth of it when the fit is under one half (a skip). The engagement
    noise has mean 1 and is left out, as is the cap of the listened share at 1."""
    fit = torch.sigmoid(utility)
    if cfg.response == "purchase":
        return fit * price
    value = fit * length
    if cfg.response == "listen":
        value = torch.where(fit < 0.5, 0.1 * value, value)
    return value
