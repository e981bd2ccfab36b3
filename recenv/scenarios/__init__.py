"""Registered scenarios. Each module is one scenario: its docstring is its documentation page,
and it provides ``build`` (the batched builder), ``parallel_env`` and ``env``."""

from recenv.registry import register

SCENARIOS = {
    "recenv/Market-v0": "recenv.scenarios.market",
    "recenv/ECommerce-v0": "recenv.scenarios.ecommerce",
    "recenv/Video-v0": "recenv.scenarios.video",
    "recenv/Music-v0": "recenv.scenarios.music",
    "recenv/FromLog-v0": "recenv.scenarios.from_log",
}

for _env_id, _module in SCENARIOS.items():
    register(_env_id, f"{_module}:build", pz_doc=_module)
