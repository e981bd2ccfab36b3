"""Music-v0's catalog, split by content type (its page: ``agent_0`` songs, ``agent_1``
podcast episodes, a ``PODCAST_SHARE`` of the items, ``PODCAST_LENGTH`` times as long), and
the configs it refuses by name."""

from __future__ import annotations

import pytest
import torch

import recenv
from recenv.core.catalog import build_catalog
from recenv.core.config import MarketConfig
from recenv.scenarios import music

ENV = "recenv/Music-v0"


def test_agent_1_owns_the_podcasts_a_fifth_of_the_items_six_times_as_long():
    """Against the catalog Market-v0's builder draws for the same config: a podcast's length
    is its drawn length times ``PODCAST_LENGTH``, a song's is unchanged, and the podcasts
    (agent_1's items) are about a fifth of the catalog (binomial: 4,000 items, sd 0.6 %)."""
    cfg = MarketConfig.from_kwargs(music.CONFIG)
    cat, base = music.music_catalog(cfg), build_catalog(cfg)
    assert (music.PODCAST_SHARE, music.PODCAST_LENGTH) == (0.2, 6.0)
    podcast = cat.owner == 1
    assert set(cat.owner.tolist()) == {0, 1}
    torch.testing.assert_close(cat.length[podcast], 6.0 * base.length[podcast])
    torch.testing.assert_close(cat.length[~podcast], base.length[~podcast])
    assert 0.18 < podcast.float().mean().item() < 0.22
    # The same catalog again from the same catalog_seed; another seed, another split.
    assert torch.equal(music.music_catalog(cfg).owner, cat.owner)
    other = music.music_catalog(MarketConfig.from_kwargs(music.CONFIG, catalog_seed=1))
    assert not torch.equal(other.owner, cat.owner)


def test_each_agents_candidates_are_its_own_content_type():
    """Through the market: agent_0 is shown songs only, agent_1 podcast episodes only, and
    the podcasts' observed lengths are several times the songs' on average."""
    env = recenv.make_vec(ENV, num_envs=8, seed=0)
    obs = env.reset()
    owner = env.catalog.owner
    lengths = []
    for a, agent in enumerate(env.agents):
        ids = obs[agent]["candidate_ids"]
        assert bool((owner[ids] == a).all()), agent
        length_col = env.config.num_topics  # the column after the topics
        lengths.append(obs[agent]["candidates"][..., length_col].mean().item())
    assert lengths[1] > 3.0 * lengths[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_agents": 3}, r"one agent per content type \['songs', 'podcasts'\]: num_agents "
                            r"must be 2, got 3"),
        ({"num_agents": 1}, r"num_agents must be 2, got 1"),
        ({"ownership": "shared"}, r"ownership must be 'partition', got 'shared'"),
        # 100 items: 50 an agent by Market-v0's rule (enough), ~16 podcasts at t=0 (not)
        ({"num_items": 100}, r"only \d+ podcasts exist at t=0, fewer than num_candidates=20"),
    ],
)  # fmt: skip
def test_configs_it_cannot_build_are_refused_naming_why(overrides, message):
    with pytest.raises(ValueError, match=message):
        recenv.make_vec(ENV, num_envs=1, **overrides)
