"""What a click is worth (``recenv.core.response.respond``), per response model, against its
definition written out here; and the engagement noise, "multiplicative noise on engagement"
(config), has mean one, so ``expected_click_value`` (what the value oracle ranks by) stays
the mean value of a click when the noise is on."""

from __future__ import annotations

import pytest
import torch

from recenv.core.config import RESPONSES, MarketConfig
from recenv.core.response import expected_click_value, respond

N = 4_096


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clicked = torch.rand(N, generator=g) < 0.8
    utility = torch.randn(N, generator=g) * 2
    length = torch.rand(N, generator=g) * 2 + 0.1
    price = torch.rand(N, generator=g) * 5
    noise = torch.randn(N, generator=g)
    uniform = torch.rand(N, generator=g)
    return clicked, utility, length, price, noise, uniform


@pytest.mark.parametrize("response", RESPONSES)
def test_respond_follows_each_response_model(response):
    """``(value, time_spent, fit)`` of each click as the model defines them, and all zero
    without a click:

    - engagement, watch time: the share ``min(fit x jitter, 1)`` of the item's length is
      watched; value and time are that time;
    - listen: as engagement, but a share under one half is a skip, worth a tenth of its
      time, and its fit (what satisfaction sees) is halved;
    - purchase: a click opens the product page, browsed for half the item's length; it
      buys with probability ``fit`` (the uniform below it), earning the price; without a
      purchase the fit is halved.

    ``fit`` is ``sigmoid(utility)``; ``jitter = exp(s z - s^2 / 2)`` with ``s`` the
    engagement noise."""
    cfg = MarketConfig(response=response, engagement_noise=0.3, price_scale=1.0)
    clicked, utility, length, price, noise, uniform = _inputs()
    value, time_spent, fit_out = respond(cfg, clicked, utility, length, price, noise, uniform)

    fit = torch.sigmoid(utility)
    jitter = torch.exp(0.3 * noise - 0.5 * 0.3**2)
    share = (fit * jitter).clamp(max=1.0)
    if response == "purchase":
        bought = uniform < fit
        want = (torch.where(bought, price, 0.0), 0.5 * length, torch.where(bought, fit, fit / 2))
    elif response == "listen":
        skip = share < 0.5
        listened = share * length
        want = (
            torch.where(skip, 0.1 * listened, listened),
            listened,
            torch.where(skip, fit / 2, fit),
        )
    else:
        want = (share * length, share * length, fit)
    for name, got, w in zip(
        ("value", "time_spent", "fit"), (value, time_spent, fit_out), want, strict=True
    ):
        torch.testing.assert_close(got, torch.where(clicked, w, 0.0), msg=name)
    assert bool(clicked.any()) and bool((~clicked).any())


@pytest.mark.parametrize("response", ["engagement", "watch_time"])
@pytest.mark.parametrize("noise", [0.2, 0.6])
def test_engagement_noise_has_mean_one(response, noise):
    """With the noise on, the mean value of a click is ``expected_click_value`` (which leaves
    the noise out as having mean one). Utilities around -4 keep ``fit x jitter`` below the
    cap at 1, where the share would stop following the noise."""
    cfg = MarketConfig(response=response, engagement_noise=noise)
    g = torch.Generator().manual_seed(1)
    n = 400_000
    utility = torch.randn(n, generator=g) * 0.3 - 4.0
    length = torch.rand(n, generator=g) + 0.5
    value, _, _ = respond(
        cfg,
        torch.ones(n, dtype=torch.bool),
        utility,
        length,
        torch.zeros(n),
        torch.randn(n, generator=g),
        torch.rand(n, generator=g),
    )
    want = expected_click_value(cfg, utility, length, torch.zeros(n))
    # The jitter's relative standard error over 400k draws: sqrt(exp(s^2) - 1) / sqrt(n),
    # 0.1 % at s = 0.6; leaving out the -s^2/2 would read 2 % and 20 % high.
    assert float(value.double().sum() / want.double().sum()) == pytest.approx(1.0, abs=0.006)
