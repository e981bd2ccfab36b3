# ruff: noqa: E501  (the mutants are a table: one line each)
"""How strong the tests are: plant one deliberate bug at a time and see whether they notice.

Each :class:`Mutant` changes one expression into a plausible wrong one (a sign, a constant,
a mean correction, a mask left out), the kind of slip a refactor makes: in the simulation
model, its config checks and counter RNG, the presets, the PettingZoo face and its adapter,
the agents, their registry and their saved state's checks, a run's or a comparison's
bookkeeping, snapshots, checkpoints and TensorBoard, the command lines, the report, the
result scripts and their figures, the benchmark's figures (the CPU's, and the CUDA scripts' on
stand-in GPUs) and the core's traffic model, the integrations (Gymnasium, SB3, TorchRL,
RLlib, a Tune sweep), real logs and their fit, or a native kernel's C++. For each, a fresh
clone of the committed tree gets the change and runs the test files of its ``suite``
(``pytest -x``; a test that runs past ``--test-timeout`` fails, so a mutant that makes a
loop endless is caught, not hung); the mutant is *caught* when a test fails, *survived*
when all pass, *skipped* when its suite needs a module not installed here (``SUITE_NEEDS``:
Triton for ``cuda_build``, whose tests would skip and let every build mutant live). A
survivor is a property no test pins: add a test that states it (and check that it fails on
the mutant), or say in the table why the change cannot be seen (an equivalent mutant)::

    .venv/bin/python -m experiments.mutation_audit                   # every mutant (~4 h here)
    .venv/bin/python -m experiments.mutation_audit --only dyn_visits resp_jitter_mean
    .venv/bin/python -m experiments.mutation_audit --list
    .venv/bin/python -m experiments.mutation_audit --only iql_double_q --tests tests/agents/test_iql.py

``--tests`` runs the given test files (or node ids) instead of each mutant's suite: the quick
way to see a new test fail on the mutant it was written for (seconds, not the suite's
minutes). A mutant that survives a narrow ``--tests`` may still be caught by its suite; the
JSON records which tests ran.

The committed tree is cloned (uncommitted changes are not audited); the clone reads the data
in ``../shared`` beside this checkout when it is there. Results go to
``experiments/results/mutation_audit-<stamp>.json`` (``--out`` another new path; an existing
file is never overwritten). Exit status 1 when any mutant survived.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
TEST_TIMEOUT_S = 300.0  # seconds one test may take under a mutant (--test-timeout)

#: Test files each mutant's suite runs: the model's (~1-2 min a mutant on 2 cores), the
#: agents' and the report's.
SUITES: dict[str, tuple[str, ...]] = {
    "model": (
        "tests/test_users.py",
        "tests/test_response.py",
        "tests/test_retrieval.py",
        "tests/test_choice.py",
        "tests/test_dynamics.py",
        "tests/test_model_audit.py",
        "tests/test_batched_equivalence.py",
        "tests/test_metrics.py",
        "tests/test_reproducibility.py",
        "tests/test_oracle.py",
        "tests/test_catalog.py",
        "tests/scenarios",
        "tests/test_observation_audit.py",
        "tests/test_config_utility_bound.py",
        "tests/test_long_runs.py",
        "tests/test_edge_configs.py",
        "tests/test_random_configs.py",
    ),
    "agents": ("tests/agents",),
    "report": (
        "tests/experiments/test_experiment_report.py",
        "tests/experiments/test_reporting_audit.py",
        "tests/experiments/test_comparison_integrity.py",
        "tests/experiments/test_plot_contents.py",
    ),
    # The PettingZoo face, the slate checks and the global state.
    "face": (
        "tests/test_pettingzoo_api.py",
        "tests/test_face_audit.py",
        "tests/test_invalid_actions.py",
        "tests/test_spaces.py",
        "tests/test_native.py",
        "tests/test_batched_equivalence.py",
        "tests/test_observation_audit.py",
    ),
    # A run's checkpoints, resume and summary.
    "runner": (
        "tests/experiments/test_run_bookkeeping.py",
        "tests/experiments/test_tb_purge.py",
        "tests/experiments/test_experiment_runner.py",
        "tests/experiments/test_runner_audit.py",
        "tests/experiments/test_checkpoint_damage.py",
        "tests/experiments/test_checkpoint_integrity.py",
        "tests/experiments/test_snapshot.py",
        "tests/experiments/test_experiment_cli.py",
    ),
    # The oracles: their agents and the batched market's oracle slates they act by.
    "oracle": ("tests/test_oracle.py", "tests/agents/test_agent_adapters.py"),
    # The PettingZoo adapter and run_episodes: the face's transitions, its seeds.
    "adapter": (
        "tests/agents/test_agent_adapters.py",
        "tests/agents/test_agent_base.py",
        "tests/agents/test_agent_rollout.py",
        "tests/test_reproducibility_audit.py",
    ),
    # The registry: recenv.make / make_vec and register.
    "registry": (
        "tests/test_registry.py",
        "tests/test_registry_inputs.py",
        "tests/test_config.py",
        "tests/test_edge_configs.py",
        "tests/test_pettingzoo_api.py",
    ),
    # A comparison: its cells and seeds, resume, the refusals, its configs.
    "comparison": (
        "tests/experiments/test_comparison_integrity.py",
        "tests/experiments/test_experiment_config.py",
        "tests/experiments/test_experiment_runner.py",
        "tests/experiments/test_runner_audit.py",
        "tests/experiments/test_experiment_cli.py",
        "tests/experiments/test_reporting_audit.py",
        "tests/experiments/test_experiment_report.py",
    ),
    # The integrations: each library's view and the audit of all of them.
    "gym": (
        "tests/integrations/test_gymnasium_vector.py",
        "tests/integrations/test_gymnasium_single.py",
        "tests/integrations/test_integrations_audit.py",
        "tests/integrations/test_docs.py",
    ),
    "sb3": (
        "tests/integrations/test_sb3.py",
        "tests/integrations/test_integrations_audit.py",
        "tests/integrations/test_docs.py",
    ),
    "torchrl": (
        "tests/integrations/test_torchrl.py",
        "tests/integrations/test_integrations_audit.py",
        "tests/integrations/test_docs.py",
    ),
    "rllib": (
        "tests/integrations/test_rllib.py",
        "tests/integrations/test_rllib_cli.py",
        "tests/integrations/test_local_ray.py",
        "tests/integrations/test_integrations_audit.py",
        "tests/integrations/test_docs.py",
    ),
    "tune": ("tests/integrations/test_tune.py",),
    # The agents' registry: names, plug-ins, factories, checkpoints' headers.
    "plugins": (
        "tests/agents/test_agent_registry.py",
        "tests/agents/test_agent_plugin_contract.py",
        "tests/agents/test_load_agent_header.py",
        "tests/agents/test_agent_checkpoint.py",
        "tests/agents/test_caller_settings.py",
        "tests/experiments/test_plugin_contract.py",
    ),
    # Real logs: loading, splits, the ALS fit, FromLog-v0's market.
    "data": (
        "tests/scenarios/test_data.py",
        "tests/scenarios/test_from_log.py",
        "tests/scenarios/test_from_log_inputs.py",
        "tests/scenarios/test_log_fit.py",
    ),
    # The native kernels against their torch forms, and the steps that use them.
    "native": (
        "tests/test_native.py",
        "tests/test_native_safety.py",
        "tests/test_invalid_actions.py",
        "tests/test_metrics.py",
    ),
    # The market's config checks, and option() that the agents' configs use too.
    "config": (
        "tests/test_config.py",
        "tests/test_config_ranges.py",
        "tests/test_edge_configs.py",
        "tests/test_config_utility_bound.py",
        "tests/test_registry_inputs.py",
        "tests/agents/test_agent_base.py",
    ),
    # The counter-based RNG: its bits against the unsigned algorithms, its normals, the kernel.
    "rng": ("tests/test_choice.py", "tests/test_users.py", "tests/test_native.py"),
    # An agent's saved state checked, on its own and through Agent.load and a resume.
    "state_checks": (
        "tests/agents/test_state_checks.py",
        "tests/agents/test_agent_checkpoint.py",
        "tests/agents/test_agent_plugin_contract.py",
        "tests/experiments/test_checkpoint_damage.py",
    ),
    # The presets: their pages against their configs, each agent's candidates its own items.
    "presets": (
        "tests/scenarios/test_presets.py",
        "tests/scenarios/test_music.py",
        "tests/test_catalog.py",
    ),
    # The result scripts (compare_marl, compare_agents, fidelity) and their documented commands.
    "marl_script": (
        "tests/experiments/test_result_scripts.py",
        "tests/experiments/test_result_figures.py",
        "tests/experiments/test_budget_curve.py",
        "tests/experiments/test_no_click_value.py",
        "tests/experiments/test_provenance.py",
        "tests/test_documented_commands.py",
    ),
    "agents_script": (
        "tests/experiments/test_result_scripts.py",
        "tests/experiments/test_result_figures.py",
        "tests/experiments/test_slate_quality.py",
        "tests/experiments/test_lookahead_headroom.py",
        "tests/experiments/test_provenance.py",
    ),
    "fidelity": (
        "tests/experiments/test_result_scripts.py",
        "tests/experiments/test_result_figures.py",
        "tests/test_documented_commands.py",
    ),
    # A run's snapshots: exact resumes of every agent, damaged checkpoints, huge pages back.
    "snapshot": (
        "tests/experiments/test_snapshot.py",
        "tests/experiments/test_experiment_runner.py",
        "tests/experiments/test_checkpoint_damage.py",
        "tests/experiments/test_run_bookkeeping.py",
        "tests/test_hugepages.py",
        "tests/test_native.py::test_a_restored_snapshot_does_not_carry_the_native_switch",
    ),
    # The benchmark's figures and the core's traffic and memory models.
    "bench": (
        "tests/experiments/test_bench.py",
        "tests/experiments/test_bench_plots.py",
        "tests/test_footprint.py",
    ),
    # The A/B tools' verdicts, the bit-for-bit guard's digest and the benchmark's figure
    # (stand-in timers and digests: no market compiled).
    "perf_tools": (
        "tests/experiments/test_ab_tools.py",
        "tests/experiments/test_bench_plots.py",
        "tests/experiments/test_trajectory_hash.py",
        "tests/experiments/test_perf_tools.py::test_loop_blocks_find_each_top_level_loop_and_its_trip_counts",
        "tests/experiments/test_perf_tools.py::test_samples_are_attributed_to_the_block_holding_their_line",
        "tests/experiments/test_perf_tools.py::test_mmap_events_and_offsets_map_addresses_into_the_library",
        "tests/experiments/test_perf_tools.py::test_addr2line_output_gives_the_outermost_generated_line",
        "tests/experiments/test_perf_tools.py::test_memory_floor_reads_the_steps_own_data",
        "tests/experiments/test_perf_tools.py::test_memory_floor_looks_up_each_markets_own_counters_in_turn",
        "tests/experiments/test_perf_tools.py::test_memory_floor_times_seconds_per_call",
        "tests/experiments/test_perf_tools.py::test_memory_floor_end_to_end_writes_json_once",
        "tests/experiments/test_perf_tools.py::test_face_modes_alternates_the_modes_and_reports_default_over_deterministic",
        "tests/experiments/test_perf_tools.py::test_face_modes_times_a_block_in_its_mode_in_steps_per_second",
    ),
    # The figures a short device session records (bench_cuda, profile_cuda, the timer's
    # syncs, on stand-in GPUs), the candidates kernel's timer and the preset pages' baselines.
    "gpu_scripts": (
        "tests/experiments/test_gpu_scripts.py",
        "tests/experiments/test_gpu_check_script.py",
        "tests/experiments/test_bench.py::test_cuda_bench_without_a_gpu_says_so_and_writes_nothing",
        "tests/experiments/test_bench.py::test_cuda_bench_error_names_the_cause_of_a_failed_kernel_build",
        "tests/experiments/test_bench.py::test_cuda_bench_keeps_each_size_as_it_goes",
        "tests/experiments/test_bench.py::test_cuda_bench_orders_the_eager_and_compiled_passes",
        "tests/experiments/test_bench.py::test_cuda_bench_times_atens_cumsum_beside_the_default_where_asked",
        "tests/experiments/test_bench.py::test_cuda_bench_keeps_a_stopped_runs_partial_result",
        "tests/experiments/test_perf_tools.py::test_candidates_op_times_the_kernel_at_both_catalog_sizes",
        "tests/experiments/test_perf_tools.py::test_profile_cuda_profiles_a_cpu_step_and_keeps_its_result",
        "tests/experiments/test_preset_baselines.py",
    ),
    # The compiled CUDA step's build check (cuda_build): its comparison of interpreted and
    # eager steps, its traffic arithmetic, its exit status. The build and interpreter tests
    # need Triton (the cuda-build extra; SUITE_NEEDS), as do the mutants only they can catch.
    "cuda_build": ("tests/experiments/test_cuda_build.py",),
    # The sanitizer run's proof that it can fail (native_sanitize's canary, the check that the
    # kernels loaded are the instrumented copy, the stop on a failed canary).
    "native_sanitize": ("tests/experiments/test_native_sanitize.py",),
    # The runner's command line (test_experiment_cli, every preset in a subprocess, is slow).
    "cli": (
        "tests/experiments/test_cli_options.py",
        "tests/experiments/test_reporting_audit.py",
        "tests/experiments/test_experiment_config.py",
        "tests/experiments/test_runner_audit.py",
        "tests/test_documented_commands.py",
    ),
}


#: A suite whose tests need a module the default set-up does not install: without it, its
#: mutants are reported ``skipped`` (not run: their tests would skip and let them live).
SUITE_NEEDS: dict[str, str] = {"cuda_build": "triton"}


@dataclass(frozen=True)
class Mutant:
    """Replace ``old`` (which must occur exactly once in ``path``) by ``new``."""

    id: str
    path: str
    old: str
    new: str
    suite: str
    breaks: str  # what the change gets wrong, in the model's words


_m = Mutant  # short, for the table below


CHOICE, RESPONSE, DYNAMICS = (
    "recenv/core/choice.py",
    "recenv/core/response.py",
    "recenv/core/dynamics.py",
)
USERS, MARKET, CATALOG = "recenv/core/users.py", "recenv/core/market.py", "recenv/core/catalog.py"
METRICS, REWARDS = "recenv/core/metrics.py", "recenv/core/rewards.py"
BASELINES, IQL, MAPPO = "agents/baselines.py", "agents/iql.py", "agents/mappo.py"
FACE, RUNNER, MF = "recenv/pettingzoo_env.py", "experiments/runner.py", "agents/mf.py"
BUFFERS, BASE = "agents/buffers.py", "agents/base.py"
QMIX, FEATURES, COMPARISON = "agents/qmix.py", "agents/features.py", "experiments/comparison.py"
GYM_VEC = "recenv/integrations/gymnasium_vector.py"
GYM_ONE = "recenv/integrations/gymnasium_single.py"
SB3, TORCHRL = "recenv/integrations/sb3.py", "recenv/integrations/torchrl.py"
RLLIB, RLLIB_ENV = "recenv/integrations/rllib.py", "recenv/integrations/rllib_env.py"
TUNE, PLOTS, NATIVE = "experiments/tune_sweep.py", "experiments/plots.py", "recenv/core/native/"
LOGS, FIT, MFDATA = "recenv/data/logs.py", "recenv/data/fit.py", "recenv/data/mf.py"
FROMLOG, TB = "recenv/scenarios/from_log.py", "experiments/tb.py"
AGREG, CKPT = "agents/registry.py", "experiments/checkpoint_checks.py"
MCFG, RNG = "recenv/core/config.py", "recenv/core/rng.py"
STATE, MUSIC = "agents/state_checks.py", "recenv/scenarios/music.py"
CMARL, CAG, FID = (
    "experiments/compare_marl.py",
    "experiments/compare_agents.py",
    "experiments/fidelity.py",
)
SNAP, CLI, RLT = "experiments/snapshot.py", "experiments/cli.py", "experiments/rllib_train.py"
BENV, BPEERS = "experiments/bench_env.py", "experiments/bench_peers.py"
THASH, PLOOPS = "experiments/trajectory_hash.py", "experiments/profile_loops.py"
MFLOOR, FMODES = "experiments/memory_floor.py", "experiments/face_modes.py"
BCUDA, PCUDA = "experiments/bench_cuda.py", "experiments/profile_cuda.py"
COP, PBASE = "experiments/candidates_op.py", "experiments/preset_baselines.py"
CBUILD, NSAN = "experiments/cuda_build.py", "experiments/native_sanitize.py"
GSH = "experiments/gpu_check.sh"
ABC, ABF, BPLOT = (
    "experiments/ab_commits.py",
    "experiments/ab_forms.py",
    "experiments/bench_plots.py",
)

# fmt: off
MUTANTS: tuple[Mutant, ...] = (
    # The choice (DESIGN §3 step 6).
    _m("choice_boredom_sign", CHOICE, "boredom_term = -cfg.boredom_weight", "boredom_term = cfg.boredom_weight", "model", "boredom adds utility"),
    _m("choice_price_sign", CHOICE, "price_term = -price_sensitivity[:, None] * price", "price_term = price_sensitivity[:, None] * price", "model", "price adds utility"),
    _m("choice_position_half", CHOICE, "pos_term = -cfg.position_bias * position_cost", "pos_term = -cfg.position_bias * 0.5 * position_cost", "model", "half the position bias"),
    _m("choice_position_cost", CHOICE, "torch.log2(1.0 + p)", "torch.log2(2.0 + p)", "model", "the top slot pays a position cost"),
    _m("choice_temperature", CHOICE, "utility / temperature, torch.full_like", "utility * temperature, torch.full_like", "model", "temperature multiplies"),
    _m("choice_no_click_temperature", CHOICE, "nc = (nc / temperature)", "nc = (nc * 1.0)", "model", "no-click utility not tempered"),
    _m("choice_race", CHOICE, "score = probs / -torch.log(uniforms)", "score = probs * -torch.log(uniforms)", "model", "sampling not by the probabilities"),
    _m("choice_taste", CHOICE, "taste_term = cfg.taste_weight * dot(taste, embed)", "taste_term = cfg.taste_weight * 0.5 * dot(taste, embed)", "model", "half the taste weight"),
    # The response (step 7).
    _m("resp_jitter_mean", RESPONSE, "noise - 0.5 * cfg.engagement_noise**2)", "noise - 0.0 * cfg.engagement_noise**2)", "model", "engagement noise of mean above one"),
    _m("resp_purchase_draw", RESPONSE, "bought = clicked & (uniform < fit)", "bought = clicked & (uniform > fit)", "model", "buys with probability 1 - fit"),
    _m("resp_skip_threshold", RESPONSE, "skipped = share < 0.5", "skipped = share < 0.3", "model", "a skip is under 0.3 of the track"),
    _m("resp_skip_value", RESPONSE, "torch.where(skipped, 0.1 * share, share)", "torch.where(skipped, 0.2 * share, share)", "model", "a skip worth a fifth"),
    _m("resp_expected_listen", RESPONSE, "torch.where(fit < 0.5, 0.1 * value, value)", "torch.where(fit < 0.5, 0.2 * value, value)", "model", "the oracle's skip value differs from the response's"),
    _m("resp_purchase_time", RESPONSE, "torch.where(clicked, 0.5 * length,", "torch.where(clicked, 1.0 * length,", "model", "the product page takes the whole length"),
    _m("resp_purchase_fit", RESPONSE, "fit = torch.where(bought, fit, 0.5 * fit)", "fit = torch.where(bought, fit, fit)", "model", "a view without purchase satisfies fully"),
    # The dynamics (step 8).
    _m("dyn_drift", DYNAMICS, "cfg.interest_drift * item_topics", "cfg.interest_drift * shown_topics", "model", "interest drifts toward what was shown"),
    _m("dyn_boredom_exposure", DYNAMICS, "cfg.boredom_exposure * shown_topics", "cfg.boredom_exposure * item_topics", "model", "exposure boredom from the clicked item"),
    _m("dyn_satisfaction", DYNAMICS, "cfg.satisfaction_rate * (fit - cfg.expectation)", "cfg.satisfaction_rate * (fit - 0.5 * cfg.expectation)", "model", "half the expectation"),
    _m("dyn_loyalty_clamp", DYNAMICS, "loyalty.clamp(-3.0, 3.0)", "loyalty.clamp(-1.0, 1.0)", "model", "loyalty bounded at 1"),
    _m("dyn_browse_cost", DYNAMICS, "- cfg.browse_cost - time_spent", "- time_spent", "model", "browsing costs no time"),
    _m("dyn_gap_draw", DYNAMICS, "cfg.session_gap * (0.5 + draws[:, 0])", "cfg.session_gap * (0.5 + draws[:, 1])", "model", "gap and budget refill from one draw"),
    _m("dyn_churn_boundary", DYNAMICS, "churn = sat < cfg.churn_threshold", "churn = sat <= cfg.churn_threshold", "model", "churn at the threshold"),
    _m("dyn_return_wait", DYNAMICS, "/ math.log1p(-p)", "/ math.log(p)", "model", "the return wait is not geometric(p)"),
    _m("dyn_return_satisfaction", DYNAMICS, "satisfaction=torch.where(returning, cfg.satisfaction_init, row[:, L.satisfaction])", "satisfaction=row[:, L.satisfaction]", "model", "a returning user keeps the churned satisfaction"),
    _m("dyn_boredom_lag", DYNAMICS, "lag = (t - row[:, L.bored_at]).clamp(min=0.0)", "lag = (t + 1.0 - row[:, L.bored_at]).clamp(min=0.0)", "model", "one step too much boredom decay"),
    _m("dyn_history_decay", DYNAMICS, "HISTORY_DECAY = 0.8", "HISTORY_DECAY = 0.9", "model", "history decays slower than documented"),
    _m("dyn_depth_on_churn", DYNAMICS, "torch.where(session_over | churn, 0.0,", "torch.where(session_over, 0.0,", "model", "churn leaves the session open"),
    _m("dyn_visits", DYNAMICS, "visits=row[:, L.visits] + 1.0", "visits=row[:, L.visits] + 2.0", "model", "a request counts two visits"),
    _m("dyn_away", DYNAMICS, "torch.where(session_over, t + 1.0 + gap,", "torch.where(session_over, t + gap,", "model", "one step short of the gap"),
    # Rewards and metrics (step 9, the episode metrics).
    _m("rew_mixed", REWARDS, "return (1.0 - cfg.team_weight) * own + cfg.team_weight * team", "return own + cfg.team_weight * team", "model", "mixed mode over-weights own"),
    _m("rew_diversity_term", REWARDS, "own = own + cfg.diversity_weight * diversity", "own = own + cfg.diversity_weight * long_tail", "model", "diversity term pays novelty"),
    _m("met_gini", METRICS, "(2 * idx - n - 1)", "(2 * idx - n)", "model", "Gini off by one rank"),
    _m("met_coverage_estimate", METRICS, "items = (-W * torch.log1p(-frac)).clamp(max=I)", "items = (W * frac).clamp(max=I)", "model", "hashed coverage without linear counting"),
    _m("met_diversity_pairs", METRICS, "n_pairs = m * (m - 1.0)", "n_pairs = m * m", "model", "diversity over pairs with repeats"),
    _m("mkt_shown_topics", MARKET, "/ visible.sum(1, keepdim=True).clamp(\n            min=1\n        )", "/ P", "model", "shown topics averaged over the whole page, seen or not"),
    _m("mkt_truncation", MARKET, "truncated = live & (t >= cfg.horizon) & ~terminated", "truncated = live & (t > cfg.horizon) & ~terminated", "model", "one request past the horizon"),
    _m("mkt_long_tail", MARKET, "long_tail = (novelty * vis_f).sum(2) / n_vis.clamp(min=1)", "long_tail = (novelty * vis_f).sum(2) / K", "model", "long-tail term over K, not the items shown"),
    _m("mkt_diversity_metric", MARKET, "(diversity * shown_any).sum(1) / shown_any.sum(1).clamp(min=1),", "diversity.mean(1),", "model", "diversity metric counts unshown slates"),
    _m("mkt_impressions", MARKET, "            n_vis / K,\n", "            n_vis,\n", "model", "impressions as a count, not a share"),
    _m("mkt_novelty", MARKET, "novelty = item[:, :, it.novelty].view(N, A, K) / self._log_items", "novelty = item[:, :, it.novelty].view(N, A, K)", "model", "novelty not over log2 I"),
    # Retrieval and the observation (steps 2-3).
    _m("ret_skew", MARKET, ".pow(cfg.retrieval_skew)", ".pow(1.0)", "model", "retrieval positions not skewed to the lists' heads"),
    _m("ret_interest", MARKET, "mass = user_feats[:, :T].clamp(min=0.0) + 1e-3", "mass = torch.ones_like(user_feats[:, :T])", "model", "interest-matched retrieval ignores the interests"),
    _m("ret_fresh_window", MARKET, "lo = (hi - cfg.fresh_window).clamp(min=0)", "lo = (hi - 2 * cfg.fresh_window).clamp(min=0)", "model", "fresh items from twice the window"),
    _m("ret_split", MARKET, "self._n_interest = ni = round(cfg.retrieval_interest * n_retrieved)", "self._n_interest = ni = round(cfg.retrieval_interest * n_retrieved) // 2", "model", "half the interest-matched candidates"),
    _m("obs_first_visit", MARKET, "torch.where(last < 0, 1.0,", "torch.where(last < 0, 0.0,", "model", "a first visit reads as a visit just now"),
    _m("platform_loyalty", MARKET, "cfg.loyalty_weight * row[:, L.loyalty]", "cfg.loyalty_weight * 0.5 * row[:, L.loyalty]", "model", "half the loyalty weight in the platform choice"),
    _m("platform_leave", MARKET, "torch.full((N, 1), cfg.leave_utility,", "torch.full((N, 1), 0.5 * cfg.leave_utility,", "model", "the leave option's utility halved"),
    # The users' draws.
    _m("usr_distinct_topics", USERS, "off2 = off2 + (off2 >= off1).long()", "off2 = off2 + 0 * (off2 >= off1).long()", "model", "a user's topics may repeat"),
    _m("usr_taste_scale", USERS, "taste=taste_g * (2.0 / math.sqrt(D))", "taste=taste_g * (1.0 / math.sqrt(D))", "model", "half the taste spread"),
    _m("usr_price_mean", USERS, "cfg.price_sensitivity * 2.0 * price_u[:, 0]", "cfg.price_sensitivity * price_u[:, 0]", "model", "mean price sensitivity halved"),
    _m("usr_budget_mean", USERS, "0.5 * budget_g[:, 0] - 0.125)", "0.5 * budget_g[:, 0] - 0.0)", "model", "mean budget above session_budget"),
    _m("usr_feature_visible", USERS, "visible=visible_u < cfg.feature_visible", "visible=visible_u > cfg.feature_visible", "model", "topics visible with 1 - feature_visible"),
    _m("usr_depth_feature", USERS, "/ 10.0", "/ 5.0", "model", "the depth feature's scale"),
    _m("usr_topic_count", USERS, "(torch.arange(3, device=block.device) < n_topics[:, None])", "(torch.arange(3, device=block.device) <= n_topics[:, None])", "model", "one topic too many"),
    # The catalog.
    _m("cat_length_mean", CATALOG, "torch.randn(I, generator=g, dtype=f32) - 0.125)", "torch.randn(I, generator=g, dtype=f32) - 0.0)", "model", "mean length above mean_item_length"),
    _m("cat_price_mean", CATALOG, "torch.randn(I, generator=g, dtype=f32) - 0.18)", "torch.randn(I, generator=g, dtype=f32) - 0.0)", "model", "mean price above price_scale"),
    _m("cat_zipf", CATALOG, "pop = ranks.pow(-cfg.zipf_exponent)", "pop = ranks.pow(-0.5 * cfg.zipf_exponent)", "model", "a flatter popularity tail"),
    _m("cat_quality", CATALOG, "quality = torch.randn(I, generator=g, dtype=f32) * cfg.quality_std", "quality = torch.randn(I, generator=g, dtype=f32) * 2.0 * cfg.quality_std", "model", "twice quality_std"),
    _m("cat_new_items", CATALOG, "< cfg.new_item_fraction", "< 0.5 * cfg.new_item_fraction", "model", "half the new items"),
    _m("cat_item_topics", CATALOG, "rank_of_topic < n_topics[:, None]", "rank_of_topic <= n_topics[:, None]", "model", "one item topic too many"),
    _m("cat_embedding_scale", CATALOG, "embed = torch.randn(I, D, generator=g, dtype=f32) / D**0.5", "embed = torch.randn(I, D, generator=g, dtype=f32)", "model", "embeddings not over sqrt(D)"),
    # The report's statistics.
    _m("rep_variance", "experiments/report.py", "var = sum((x - mean) ** 2 for x in xs) / (n - 1)", "var = sum((x - mean) ** 2 for x in xs) / n", "report", "biased variance"),
    _m("rep_degrees_of_freedom", "experiments/report.py", "t_quantile(0.5 + level / 2.0, n - 1)", "t_quantile(0.5 + level / 2.0, n)", "report", "t with n degrees of freedom"),
    # The baselines' and learners' estimators.
    _m("ucb_width", BASELINES, "return mean + self.config.alpha * var.sqrt()", "return mean + self.config.alpha * var", "agents", "UCB bonus without the square root"),
    _m("ucb_reset_rows", BASELINES, "xs = x.gather(1, slate[..., None].expand(-1, -1, x.shape[-1])) * valid", "xs = x.gather(1, slate[..., None].expand(-1, -1, x.shape[-1]))", "agents", "LinUCB learns from auto-reset rows"),
    _m("counts_reset_rows", BASELINES, "valid.expand_as(y).flatten()", "torch.ones_like(y).flatten()", "agents", "item tables count auto-reset rows as impressions"),
    _m("iql_discount", IQL, 'target = b["reward"] + b["discount"] * v_next', 'target = b["reward"] + v_next', "agents", "IQL ignores the discount"),
    _m("iql_target_tau", IQL, "pt.lerp_(p, cfg.target_tau)", "pt.lerp_(p, 1.0)", "agents", "hard target updates"),
    _m("iql_no_click_label", IQL, "torch.where(click >= 0, click, K)", "torch.where(click >= 0, click, 0)", "agents", "no click labelled as slot 0"),
    _m("qmix_monotonic", "agents/qmix.py", "w1 = self.w1(s).abs().view(", "w1 = self.w1(s).view(", "agents", "the mixer not monotonic in each Q_a"),
    # (Not "the teammates' gain counts the agent's own": on the rows the loss keeps, the
    # agent's items were passed over and its own gain is 0, so that mutant is equivalent.)
    _m("vdn_teammate_rows", "agents/qmix.py", "aux = (err * mine).sum() / mine.sum().clamp(min=1)", "aux = err.mean()", "agents", "the teammates' gain learned on every row, the agent's clicks included"),
    _m("mappo_ratio_clip", MAPPO, "ratio.clamp(1 - cfg.clip, 1 + cfg.clip)", "ratio.clamp(1 - 2 * cfg.clip, 1 + 2 * cfg.clip)", "agents", "twice the PPO clip"),
    _m("mappo_value_clip", MAPPO, "v_clip = old + (v - old).clamp(-clip, clip)", "v_clip = v", "agents", "no value clipping"),
    _m("mappo_entropy_sign", MAPPO, "return pg + cfg.vf_coef * v_loss - cfg.ent_coef * ent", "return pg + cfg.vf_coef * v_loss + cfg.ent_coef * ent", "agents", "entropy penalised"),
    _m("mappo_advantage_norm", MAPPO, "(adv.std() + 1e-8)", "(adv.std() + 1.0)", "agents", "advantages not normalised"),
    _m("mappo_gae_lambda", MAPPO, "cfg.gamma * cfg.gae_lambda * cont[t]", "cfg.gamma * cont[t]", "agents", "GAE without lambda"),
    # Matrix factorisation (Hu, Koren & Volinsky 2008; agents/mf.py).
    _m("mf_confidence", MF, "conf = (1.0 + self.config.confidence * clicked)", "conf = (1.0 + clicked)", "agents", "a click weighs 2, not 1 + alpha"),
    _m("mf_gram_confidence", MF, 'torch.einsum("nk,nkd,nke->nde", conf, q, q)', 'torch.einsum("nkd,nke->nde", q, q)', "agents", "the fold-in's Gram matrix unweighted"),
    _m("mf_resid_bias", MF, "resid = y - self.mu[i] - self.item_bias[i][items]", "resid = y - self.mu[i]", "agents", "the fold-in's residual keeps the item bias"),
    _m("mf_reg_sign", MF, "err[..., None] * p - reg[..., None] * q", "err[..., None] * p + reg[..., None] * q", "agents", "L2 pushes item factors outward"),
    _m("mf_mu_mean", MF, "self.mu[i] += cfg.lr * err.sum() / n", "self.mu[i] += cfg.lr * err.mean()", "agents", "the global mean's step over slots, dropped ones included"),
    _m("mf_episode_slots", MF, "return torch.arange(u.shape[0], device=u.device) * self.num_users + u", "return u", "agents", "markets share a user id's vector within an episode"),
    _m("mf_episode_reset", MF, "self.gram[:, rows] = 0.0", "pass  # gram kept", "agents", "a new episode keeps the old users' Gram matrices"),
    _m("mf_dropped", MF, "conf = (1.0 + self.config.confidence * clicked) * tr.seen(a).float()[:, None]", "conf = (1.0 + self.config.confidence * clicked)", "agents", "a dropped (reset) row counts as a passed-over slate"),
    # The PettingZoo face: its fast slate check and its conversions.
    _m("face_fast_mask", FACE, "if not all(0 <= x < C and allowed[x] for x in slate) or len(set(slate)) != K:", "if not all(0 <= x < C for x in slate) or len(set(slate)) != K:", "face", "the fast path takes a masked candidate"),
    _m("face_fast_distinct", FACE, "or len(set(slate)) != K:", "or len(slate) != K:", "face", "the fast path takes a repeated candidate"),
    _m("face_fast_range", FACE, "if not all(0 <= x < C and allowed[x]", "if not all(x < C and allowed[x]", "face", "the fast path takes a negative index"),
    _m("face_truncations", FACE, "truncations = dict.fromkeys(self.agents, truncated)", "truncations = dict.fromkeys(self.agents, terminated)", "face", "truncation reported as termination's flag"),
    _m("face_agents_end", FACE, "if terminated or truncated:\n            self.agents = []", "if terminated:\n            self.agents = []", "face", "agents stay after a truncation"),
    _m("face_chosen_slot", FACE, 'd["chosen_slot"] = chosen_slot if won else -1', 'd["chosen_slot"] = chosen_slot', "face", "every agent told the winner's slot"),
    _m("face_engagement", FACE, 'd["engagement"] = engagement if won else 0.0', 'd["engagement"] = engagement', "face", "every agent credited the click's engagement"),
    _m("face_user_clicked", FACE, 'd["user_clicked"] = chosen_agent >= 0', 'd["user_clicked"] = won', "face", "user_clicked only for the winner"),
    _m("face_shown", FACE, 'd["shown"] = shown[i]', 'd["shown"] = shown[0]', "face", "every agent told agent 0's slate"),
    _m("face_repaired", FACE, 'd["repaired_slots"] = int(repaired[i])', 'd["repaired_slots"] = int(repaired[0])', "face", "every agent told agent 0's repairs"),
    _m("face_episode_return", FACE, 'own = episode["return"][i]', 'own = episode["return"][0]', "face", "every agent's episode return agent 0's"),
    _m("face_flat_history", FACE, "np.concatenate([user, history[i], cands[i]", "np.concatenate([user, history[0], cands[i]", "face", "flat observations carry agent 0's history"),
    _m("face_flat_mask", FACE, "cands[i].reshape(-1), flat_mask[i]])", "cands[i].reshape(-1), flat_mask[0]])", "face", "flat observations carry agent 0's mask"),
    _m("face_candidate_ids", FACE, '"candidate_ids": cand_ids[i],', '"candidate_ids": cand_ids[0],', "face", "every agent shown agent 0's candidate ids"),
    # The batched slate check (the torch form; eager markets use it) and the global state.
    # (Not "an out-of-range repeat flagged a repeat": such a slot is invalid as out of range
    # first, in the check and in the message alike; that mutant is equivalent.)
    _m("chk_dup_clamped", MARKET, "        slots = slate.unbind(2)\n", "        slots = slate.clamp(0, C - 1).unbind(2)\n", "face", "repeats compared after clamping: an out-of-range index makes a valid slot a repeat"),
    _m("chk_dup_pairs", MARKET, "            for j in range(1, k):\n", "            for j in range(2, k):\n", "face", "slot 1 never compared with later slots"),
    _m("chk_reset_repaired", MARKET, "repaired = torch.where(self.needs_reset[:, None], 0.0, (~ok).sum(dim=2).float())", "repaired = (~ok).sum(dim=2).float()", "face", "a resetting market's ignored slate counted as repaired"),
    _m("chk_reset_valid", MARKET, "return idx, ok & ~reset, repaired, (ok | reset).all()", "return idx, ok, repaired, (ok | reset).all()", "face", "a resetting market's slots valid"),
    _m("chk_raise_reset", MARKET, "ok = (in_range & cand_mask.gather(2, idx) & ~dup) | self.needs_reset[:, None, None]", "ok = in_range & cand_mask.gather(2, idx) & ~dup", "face", "a resetting market's ignored slate refused"),
    _m("state_fresh_satisfaction", MARKET, "sat = torch.where(fresh, cfg.satisfaction_init, self.users[:, :, L.satisfaction])", "sat = self.users[:, :, L.satisfaction]", "face", "mean satisfaction reads last episode's users"),
    _m("state_util_mask", MARKET, "util = torch.where(mask, self.oracle_scores(), 0.0)", "util = self.oracle_scores()", "face", "masked candidates' utilities in the state"),
    _m("state_share_start", MARKET, "self.acc_choices / total.clamp(min=1), 1.0 / cfg.num_agents)", "self.acc_choices / total.clamp(min=1), 0.0)", "face", "market share 0 before any choice"),
    _m("state_budget", MARKET, "row[:, L.budget, None] / cfg.session_budget,", "row[:, L.budget, None],", "face", "the budget not scaled by its mean"),
    _m("state_seen", MARKET, "(~fresh).float().mean(1, keepdim=True),", "fresh.float().mean(1, keepdim=True),", "face", "the share of users not seen"),
    # A run: checkpoints, resume, the curve.
    _m("run_checkpoint_order", RUNNER, "return (0, int(digits), path.name)", "return (0, 0, path.name)", "runner", "checkpoints ordered by name"),
    _m("run_rng_restore", RUNNER, '            set_rng_state(payload["rng"])\n', "            pass\n", "runner", "resume leaves the global RNGs as they are"),
    _m("run_purge_step", RUNNER, "return loop.steps + 1, False", "return loop.steps, False", "runner", "resume hides the checkpoint's own step"),
    # (Not "resume mid-training purges and rewrites the checkpoint step's scalars": they are
    # what was logged there, so the event files read the same; that mutant is equivalent.)
    _m("run_purge_final", RUNNER, "if loop.trained and loop.step_scalars:", "if loop.trained:", "runner", "a final checkpoint without the step's scalars hides them on resume"),
    _m("run_step_scalars", RUNNER, "loop.step_scalars = {}  # what is logged at the new loop.steps", "pass", "runner", "the logged scalars of every step kept"),
    _m("run_window", RUNNER, "                        loop.window = []\n", "                        pass\n", "runner", "the curve's episodes counted again at every point"),
    _m("run_stop_checkpoint", RUNNER, "if nxt % ckpt_iters == 0 or nxt == total or stop:", "if nxt % ckpt_iters == 0 or nxt == total:", "runner", "a stop between checkpoints writes none"),
    _m("run_steps_check", RUNNER, 'if loop["steps"] != loop["iters"] * self.cfg.num_envs:', "if False:", "runner", "a checkpoint's inconsistent step counts accepted"),
    _m("run_config_check", RUNNER, 'if run["config"] != self.cfg.to_dict():', "if False:", "runner", "a checkpoint of another config accepted"),
    _m("run_eval_plan", RUNNER, "return n_envs, -(-episodes // n_envs)", "return n_envs, episodes // n_envs", "runner", "the evaluation's episodes rounded down"),
    _m("run_market_share", RUNNER, 'out["market_share"] = float(v[:, idx].sum(1).mean())', 'out["market_share"] = float(v[:, idx].mean())', "runner", "the focal agents' market share averaged, not summed"),
    _m("run_total_iters", RUNNER, "total = -(-cfg.total_steps // N)", "total = cfg.total_steps // N", "runner", "the budget rounded down"),
    _m("run_prune", RUNNER, "for old in self.checkpoints()[:-keep]:", "for old in self.checkpoints()[keep:]:", "runner", "the newest checkpoints pruned"),
    _m("run_divergence", RUNNER, 'self.diverged = self._divergence(payload["state"])', "self.diverged = None", "runner", "a diverged state checkpointed"),
    # Returns and replay (agents/buffers.py), SlateQ's pieces (agents/iql.py), feedback rows.
    _m("nstep_gamma_power", BUFFERS, 'ret = ret + alive.float() * (self.gamma**j) * s["reward"].float()', 'ret = ret + alive.float() * (self.gamma ** (j + 1)) * s["reward"].float()', "agents", "n-step rewards discounted one step too many"),
    _m("nstep_alive_end", BUFFERS, 'alive = alive & ~s["end"]', 'alive = alive & ~s["terminal"]', "agents", "n-step sums run past a truncation into the next episode"),
    _m("nstep_truncation_boot", BUFFERS, 'boot = (self.gamma ** (j + 1)) * (~s["terminal"]).float()', 'boot = (self.gamma ** (j + 1)) * (~s["end"]).float()', "agents", "a truncated end not bootstrapped"),
    _m("nstep_valid_rows", BUFFERS, 'return row, first["valid"]', 'return row, torch.ones_like(first["valid"])', "agents", "auto-reset rows stored as transitions"),
    _m("replay_newest", BUFFERS, "rows = {k: v[-self.capacity :] for k, v in rows.items()}", "rows = {k: v[: self.capacity] for k, v in rows.items()}", "agents", "an overfull add keeps the oldest rows"),
    _m("replay_size", BUFFERS, "self.size = min(self.size + M, self.capacity)", "self.size = min(self.size + M, self.capacity - 1)", "agents", "the replay never samples its last slot"),
    _m("user_visit_discount", BUFFERS, 'row["discount"] = torch.full_like(step["reward"], self.gamma, dtype=torch.float32)', 'row["discount"] = torch.full_like(step["reward"], 1.0, dtype=torch.float32)', "agents", "a user's next visit undiscounted"),
    _m("user_visit_end", BUFFERS, "done = valid & ~end & self.has[n, u_next]", "done = valid & self.has[n, u_next]", "agents", "a request completed by the episode's last step"),
    _m("user_visit_terminal", BUFFERS, "row[\"discount\"] = torch.zeros(ni.shape[0], dtype=torch.float32, device=self.has.device)", "row[\"discount\"] = torch.full((ni.shape[0],), self.gamma, dtype=torch.float32, device=self.has.device)", "agents", "a churned market's open requests bootstrapped"),
    _m("slateq_slot_bias", IQL, "torch.cat([slate_logits + self.slot_bias, no_click[:, None]], dim=1)", "torch.cat([slate_logits, no_click[:, None]], dim=1)", "agents", "the choice model without its position bias"),
    _m("slateq_topk_rank", IQL, "return weight * (q_items - q_null[:, None])", "return weight * q_items", "agents", "top-K ranks by value, not by gain over no click"),
    _m("slateq_value_null", IQL, "return (p[:, :-1] * q_items.gather(1, slate)).sum(1) + p[:, -1] * q_null", "return (p[:, :-1] * q_items.gather(1, slate)).sum(1)", "agents", "a slate's value without its no-click term"),
    _m("feedback_served", BASE, "return self.valid & self.served[agent_id]", "return self.valid", "agents", "slates that never reached the user count as passed over"),
    # The ensemble's blend (agents/ensemble.py).
    _m("ens_rank_ties", "agents/ensemble.py", "ranked = (below + upto - 1.0) / 2.0", "ranked = below", "agents", "tied scores take their lowest rank"),
    _m("ens_rank_masked", "agents/ensemble.py", "(ranked - first) / (count - 1).clamp(min=1.0)", "ranked / (count - 1).clamp(min=1.0)", "agents", "ranks counted from the masked candidates"),
    _m("ens_zscore_masked_mean", "agents/ensemble.py", "mean = (s * m).sum(1, keepdim=True) / count", "mean = s.mean(1, keepdim=True)", "agents", "the z-score's mean over masked candidates too"),
    _m("ens_weights", "agents/ensemble.py", "blend = blend + w * normalize_scores(s, mask, self.config.normalize)", "blend = blend + normalize_scores(s, mask, self.config.normalize)", "agents", "member weights ignored"),
    _m("ens_learn_members", "agents/ensemble.py", 'out.update({f"member{j}_{m.name}/{k}": v for k, v in m.learn(transition).items()})', "pass", "agents", "members never learn"),
    # MAPPO / IPPO (agents/mappo.py): GAE, the value targets, the update's schedule, the
    # Plackett-Luce policy, IPPO's pooled critic.
    _m("mappo_gae_terminal", MAPPO, 'alive = (~ro["terminated"]).float()[..., None]', 'alive = torch.ones_like(ro["terminated"]).float()[..., None]', "agents", "a terminated step bootstrapped from its next value"),
    _m("mappo_gae_truncation", MAPPO, 'cont = (~ro["ended"]).float()[..., None]', 'cont = (~ro["terminated"]).float()[..., None]', "agents", "GAE chains across a truncation into the next episode"),
    _m("mappo_begin_episode", MAPPO, 'self.rollout["ended"][self.pos - 1] = True', "pass", "agents", "an env reset between calls chained onto the stored steps"),
    _m("mappo_returns", MAPPO, "returns = advantages + values", "returns = advantages", "agents", "the critic regresses on advantages, not returns"),
    _m("mappo_value_target_norm", MAPPO, "target = self.value_stats.normalize(returns) if cfg.value_norm else returns", "target = returns", "agents", "the normalised critic regressed on raw returns"),
    _m("mappo_value_norm_merge", MAPPO, " + delta**2 * self.count * b / total) / total", ") / total", "agents", "the running variance ignores the shift of the mean"),
    _m("mappo_minibatches", MAPPO, "size = max(1, -(-B // cfg.minibatches))", "size = B", "agents", "one minibatch whatever minibatches says"),
    _m("mappo_epochs", MAPPO, "for _ in range(cfg.epochs):", "for _ in range(1):", "agents", "one epoch whatever epochs says"),
    _m("mappo_pl_replacement", MAPPO, "taken = taken.scatter(1, slate[:, j : j + 1], True)", "taken = taken", "agents", "the slate's log-probability as if drawn with replacement"),
    _m("mappo_gumbel_sign", MAPPO, "gumbel = -torch.log(-torch.log(", "gumbel = torch.log(-torch.log(", "agents", "slates sampled with reversed Gumbel noise"),
    _m("mappo_greedy_acting", MAPPO, "            if explore:\n                out[a] = sample_slate(", "            if True:\n                out[a] = sample_slate(", "agents", "greedy acting samples"),
    _m("mappo_actor_per_agent", MAPPO, "actor = self.actors[0 if self.config.shared_actor else i]", "actor = self.actors[0]", "agents", "every agent acts with the first agent's actor"),
    _m("mappo_explained_variance", MAPPO, "1 - (returns - old_values).var() / var_y if var_y > 0 else 0.0", "1 - (returns - old_values).var() if var_y > 0 else 0.0", "agents", "explained variance not over the returns' variance"),
    _m("ippo_pool_mean", MAPPO, "mean = (pairs * m).sum(1) / m.sum(1).clamp(min=1)", "mean = pairs.mean(1)", "agents", "IPPO's critic averages masked candidates too"),
    _m("ippo_pool_max", MAPPO, "top = pairs.masked_fill(~m, _MASKED).amax(1)", "top = pairs.amax(1)", "agents", "IPPO's critic takes the maximum over masked candidates too"),
    # VDN / QMIX (agents/qmix.py): the mixer, the targets, the schedule, the SlateQ utility.
    _m("qmix_w2_monotonic", QMIX, "(hidden * self.w2(s).abs()).sum(-1)", "(hidden * self.w2(s)).sum(-1)", "agents", "the mixer's second layer not monotonic"),
    _m("qmix_double_q", QMIX, "pick = self.item_values(nxt, agents)[0] if cfg.double_q else q_t", "pick = q_t", "agents", "double Q selects the next slates with the target network"),
    _m("qmix_target_mixer", QMIX, "v_next = self.mixer_target(\n                    self.slate_utility(q_t, v_t, slates)", "v_next = self.mixer(\n                    self.slate_utility(q_t, v_t, slates)", "agents", "targets mixed by the online mixer"),
    _m("qmix_update_owed", QMIX, "owed = max(0, started // cfg.update_every + 1 - self.updates)", "owed = max(0, started // cfg.update_every - self.updates)", "agents", "the first update one update_every late"),
    _m("qmix_slateq_no_click", QMIX, "q_obs = torch.where(click >= 0, q.gather(-1, clicked).squeeze(-1), v)", "q_obs = torch.where(click >= 0, q.gather(-1, clicked).squeeze(-1), torch.zeros_like(v))", "agents", "a no-click outcome valued 0, not Q(no click)"),
    _m("qmix_slateq_label", QMIX, "torch.where(click >= 0, click, K).flatten())", "click.clamp(min=0).flatten())", "agents", "the choice model learns no click as slot 0"),
    _m("qmix_slateq_double_q", QMIX, "self.heads(self.utilities, n_pairs, n_ctx, agents) if cfg.double_q else (q_t, v_t)", "(q_t, v_t)", "agents", "SlateQ's next slates selected by the target utilities"),
    # IQL's selection and exploration; the baselines; the features.
    _m("iql_double_q", IQL, "sel_items, sel_null = lrn.q(n_pairs, n_ctx) if cfg.double_q else (qt_items, qt_null)", "sel_items, sel_null = (qt_items, qt_null)", "agents", "double DQN selects with the target network"),
    _m("iql_epsilon_decay", IQL, "return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)", "return cfg.eps_start", "agents", "epsilon never decays"),
    _m("pop_tie_break", BASELINES, "return clicks - 1e-3 * exposures", "return clicks + 1e-3 * exposures", "agents", "popularity ties broken toward more exposures"),
    _m("pop_own_agent", BASELINES, "clicks = torch.log1p(self.clicks[i][ids]).float()", "clicks = torch.log1p(self.clicks[0][ids]).float()", "agents", "every agent ranks by the first agent's clicks"),
    _m("eg_shrink_mean", BASELINES, "((self.payoff[i][ids] + c0 * mean) / (self.count[i][ids] + c0))", "((self.payoff[i][ids] + c0) / (self.count[i][ids] + c0))", "agents", "epsilon-greedy shrinks toward 1, not the mean payoff"),
    _m("eg_pooled_mean", BASELINES, "mean = self.payoff[i].sum() / self.count[i].sum().clamp(min=1.0)", "mean = self.payoff[i].mean()", "agents", "the prior mean per item, not per impression"),
    _m("oracle_page_plan", BASELINES, 'objective = "value" if self.config.plan == "own" else "page_value"', 'objective = "value"', "oracle", "plan='page' plans each agent alone"),
    _m("oracle_agent_column", BASELINES, "return core.oracle_scores(self.hide)[:, self.env_index(self.agent_ids[i])]", "return core.oracle_scores(self.hide)[:, 0]", "oracle", "every agent ranks the first agent's candidates"),
    _m("feat_profile_cross", FEATURES, "by_profile = profile * topics", "by_profile = interest * topics", "agents", "the boredom proxy crosses the interests, not the clicked-topic profile"),
    # A comparison (experiments/comparison.py, experiments/config.py).
    _m("cmp_seed_list", "experiments/config.py", "return [self.run.seed + i for i in range(self.seeds)]", "return [self.run.seed for i in range(self.seeds)]", "comparison", "every seed of a comparison the same"),
    _m("cmp_resume_cells", COMPARISON, "prev = existing.get(_cell_key(c))", "prev = None", "comparison", "resume starts every cell again"),
    _m("cmp_two_runs_of_a_cell", COMPARISON, "        if key in found:\n", "        if False:\n", "comparison", "two run directories of one cell accepted"),
    _m("cmp_refuse_finished", COMPARISON, "    if (p / DONE).exists():\n        raise RunError(", "    if False:\n        raise RunError(", "comparison", "a finished comparison resumed"),
    _m("cmp_sweep_seeds", COMPARISON, "if seeds is not None and list(seeds) != cfg.seed_list():", "if False:", "comparison", "a sweep variant's seeds resumed as counted seeds"),
    _m("cmp_validate_first", COMPARISON, "        validate_run(cell)\n        runner.check_lineup(cell)\n", "        pass\n", "comparison", "a bad cell found only after the comparison's directory is made"),
    _m("cmp_parallel_failure", COMPARISON, "    if failure is not None:\n        raise failure\n", "    pass\n", "comparison", "a parallel comparison's failed run reported as a stop"),
    _m("cfg_unknown_run_key", "experiments/config.py", "        if unknown:\n            raise ConfigError(f\"unknown RunConfig key(s)", "        if False:\n            raise ConfigError(f\"unknown RunConfig key(s)", "comparison", "unknown run config keys accepted"),
    _m("cfg_unknown_compare_key", "experiments/config.py", "        unknown = sorted(set(d) - known)\n        if unknown:", "        unknown = sorted(set(d) - known)\n        if False:", "comparison", "unknown comparison config keys accepted"),
    # The slate space (recenv/spaces.py), the PettingZoo adapter (agents/adapters.py), the
    # learners' metric windows (agents/update_metrics.py).
    _m("space_sample_repeats", "recenv/spaces.py", "size=K, replace=False)", "size=K, replace=True)", "face", "sampled slates may repeat a candidate"),
    _m("space_mask_union", "recenv/spaces.py", "np.logical_and.reduce(", "np.logical_or.reduce(", "face", "per-slot masks united, not intersected"),
    _m("space_contains_repeats", "recenv/spaces.py", 'return x.dtype.kind in "iu" and len(np.unique(x)) == x.size', 'return x.dtype.kind in "iu"', "face", "a slate with a repeat is in the space"),
    _m("space_mask_binary", "recenv/spaces.py", "if mask.dtype != bool and not ((mask == 0) | (mask == 1)).all():", "if False:", "face", "a mask of scores read as a binary mask"),
    _m("adapt_served", "agents/adapters.py", "return True if shown is None else bool((np.asarray(shown) >= 0).any())", "return True", "adapter", "on the face, slates that never reached the user count as passed over"),
    _m("adapt_clicked_slot", "agents/adapters.py", 'clicked_slot={a: one(int(infos[a].get("chosen_slot", -1)), torch.int64)', 'clicked_slot={a: one(int(infos[ids[0]].get("chosen_slot", -1)), torch.int64)', "adapter", "on the face, every agent told the first agent's clicked slot"),
    # (Not "the step's observation read with the next step's infos": step() reuses the batch
    # act() built for that observation, so the infos matter only to a caller that steps an
    # observation it did not act on, and then only a flat one's mask.)
    _m("episodes_seed", "agents/adapters.py", "obs, infos = env.reset(seed=None if seed is None else seed + e)", "obs, infos = env.reset(seed=seed)", "adapter", "every episode of run_episodes reset with one seed"),
    _m("episodes_reseed", "agents/adapters.py", "    if seed is not None and not learn:\n", "    if False:\n", "adapter", "run_episodes leaves the agent's generators where they stood"),
    _m("metrics_window", "agents/update_metrics.py", "self.sums, self.updates = {}, 0", "self.updates = 0", "agents", "a report's sums carried into the next window"),
    # The registry (recenv/registry.py).
    _m("reg_max_cycles", "recenv/registry.py", '        kwargs["horizon"] = horizon\n', '        kwargs["horizon"] = horizon + 1\n', "registry", "max_cycles one request more than asked"),
    _m("reg_duplicate_id", "recenv/registry.py", "    if env_id in _REGISTRY:\n        raise ValueError(", "    if False:\n        raise ValueError(", "registry", "an id registered twice replaces the first"),
    _m("reg_vec_page", "recenv/registry.py", "    _set_page(env, s, page, env.config, config)\n    return env.compile()", "    return env.compile()", "registry", "help() on a batched env does not show the scenario's page"),
    _m("reg_make_device", "recenv/registry.py", 'for key in ("num_envs", "device"):', 'for key in ("num_envs",):', "registry", "make() takes a device it then ignores"),
    # The Gymnasium views (recenv/integrations/gymnasium_vector.py, gymnasium_single.py).
    _m("gv_random_mask", GYM_VEC, "return keys.masked_fill(~mask, -1.0).topk(", "return keys.topk(", "gym", "the random opponent shows masked candidates"),
    _m("gv_opponent_seed", GYM_VEC, "reseed(seed + i * _OPPONENT_SEED_STRIDE)", "reseed(seed)", "gym", "every random opponent draws the market's own seed"),
    _m("gv_restore", GYM_VEC, "                policy.restore(snapshot)\n", "                pass\n", "gym", "a refused step moves the random opponents' streams on"),
    _m("gv_check_first", GYM_VEC, "        market.check_slate(self.agent, batched[self.agent])\n", "", "gym", "the opponents act before the learner's slate is checked"),
    _m("gv_engagement", GYM_VEC, '"engagement": torch.where(won, info["engagement"], 0.0),', '"engagement": info["engagement"],', "gym", "the learner is told the engagement an opponent's item won"),
    _m("gv_clicked", GYM_VEC, 'won = info["chosen_agent"] == a', 'won = info["chosen_agent"] >= 0', "gym", "any click counts as the learner's"),
    _m("gv_repaired_agent", GYM_VEC, 'info["repaired"][:, a].to(torch.int64)', 'info["repaired"][:, 0].to(torch.int64)', "gym", "the first agent's repaired slots reported for the learner"),
    _m("gv_episode_agent", GYM_VEC, "value[:, a] if value.dim() == 2 else value", "value[:, 0] if value.dim() == 2 else value", "gym", "the first agent's episode metrics reported for the learner"),
    _m("gv_pending_seed", GYM_VEC, "            seed = market.pending_seed\n", "            pass\n", "gym", "make_single_agent_vec(seed=s) leaves the random opponents unseeded"),
    _m("gv_flat_order", GYM_VEC, '[o["user"], o["history"], o["candidates"].reshape(N, -1), mask.float()]', '[o["history"], o["user"], o["candidates"].reshape(N, -1), mask.float()]', "gym", "the flat observation's user and history swapped against the face's layout"),
    _m("gs_ended", GYM_ONE, "self._ended = bool(terminated[0] or truncated[0])", "self._ended = bool(terminated[0])", "gym", "a step after the horizon goes on (auto-resets) instead of raising"),
    _m("gs_reset_key", GYM_ONE, 'if key.startswith("_") or key == "reset" or not', 'if key.startswith("_") or not', "gym", "the vector view's reset flag leaks into the single env's info"),
    # SB3 through SuperSuit (recenv/integrations/sb3.py).
    _m("sb3_timelimit", SB3, "truncations.get(agent, False) and not terminations.get(agent, False)", "terminations.get(agent, False)", "sb3", "TimeLimit.truncated set at a termination, not at the horizon"),
    _m("sb3_episode_r", SB3, 'info["episode"] = {"r": float(episode["return"]), "l": int(episode["length"])}', 'info["episode"] = {"r": float(episode["ctr"]), "l": int(episode["length"])}', "sb3", "Monitor's episode return is the click-through rate"),
    _m("sb3_fresh_seed", SB3, "        if seed is None and self._fresh_seed:\n            seed = secrets.randbits(31)\n", "", "sb3", "SuperSuit's cloned copies replay one stream"),
    _m("sb3_copy_seed", SB3, "seed + k // per_copy for k in range(self.num_envs)", "seed + k for k in range(self.num_envs)", "sb3", "seed() reports one seed per vector slot, not per market copy"),
    _m("sb3_pending_clear", SB3, "            self._pending_seed = None\n", "", "sb3", "every reset reseeds: each episode replays the first"),
    _m("sb3_where_agent", SB3, 'return f"{self.agents[i % A]} (vector index {i}, market copy {i // A})"', 'return f"{self.agents[i // A % A]} (vector index {i}, market copy {i // A})"', "sb3", "a bad action's error names another agent"),
    _m("sb3_bool_actions", SB3, 'if x.shape == (N, K) and x.dtype.kind in "iu":', 'if x.shape == (N, K) and x.dtype.kind in "iub":', "sb3", "a bool action array taken as slates of 0s and 1s"),
    # TorchRL (recenv/integrations/torchrl.py).
    _m("trl_state_reserved", TORCHRL, 'reserved = (*RESERVED_GROUPS, "state") if return_state else RESERVED_GROUPS', "reserved = RESERVED_GROUPS", "torchrl", "a group named 'state' accepted beside the global state"),
    _m("trl_each_once", TORCHRL, "if sorted(listed, key=repr) != sorted(agents, key=repr):", "if set(listed) != set(agents):", "torchrl", "an agent in two groups accepted"),
    _m("trl_repair_default", TORCHRL, '    kwargs.setdefault("invalid_slate", "repair")\n    env = make(env_id, seed=seed, **kwargs)', "    env = make(env_id, seed=seed, **kwargs)", "torchrl", "TorchRL's independent slots raise on a repeat instead of repairing"),
    # Ray RLlib (recenv/integrations/rllib.py, rllib_env.py).
    _m("rl_seed_spread", RLLIB, "seed_offset=worker * (per_runner - 1)", "seed_offset=worker * per_runner", "rllib", "the runners' markets seeded with gaps and overlaps"),
    _m("rl_without_ids", RLLIB, "return {a: {k: v for k, v in o.items() if k not in ID_KEYS} for a, o in obs.items()}", "return {a: dict(o) for a, o in obs.items()}", "rllib", "the dict observation keeps the catalog ids its space lacks"),
    _m("rl_hash_seed_own", RLLIB, "hash_seed = own if own.isdigit() else HASH_SEED", "hash_seed = HASH_SEED", "rllib", "the workers' hash seed ignores the driver's"),
    _m("rl_repair_default", RLLIB, '    kwargs.setdefault("invalid_slate", "repair")\n    return env_id, obs, kwargs', "    return env_id, obs, kwargs", "rllib", "RLlib's independent slots raise on a repeat instead of repairing"),
    _m("rl_agent_order", RLLIB_ENV, "        self.possible_agents = list(env.possible_agents)\n        self.agents = list(env.possible_agents)\n", "", "rllib", "the agents in the order of a set (PYTHONHASHSEED's)"),
    _m("rl_seed_offset", RLLIB_ENV, "seed = None if seed is None else seed + self.seed_offset", "seed = seed", "rllib", "the seed offset of a runner's envs ignored"),
    # A Tune sweep (experiments/tune_sweep.py).
    _m("tune_seeds_dup", TUNE, "if not seeds or len(set(seeds)) != len(seeds):", "if not seeds:", "tune", "a repeated seed runs twice into one directory"),
    _m("tune_split_brackets", TUNE, '        if ch in "[(":\n', '        if ch in "(":\n', "tune", "a list value in brackets split at its commas"),
    _m("tune_grid_product", TUNE, "for values in itertools.product(*(v for _, v in grid)):", "for values in zip(*(v for _, v in grid)):", "tune", "the grids zipped, not crossed"),
    _m("tune_unique_label", TUNE, "out.append((_unique(config_label(label), [v[0] for v in out]), point, cfg))", "out.append((config_label(label), point, cfg))", "tune", "two variants whose labels sanitise alike share a directory"),
    _m("tune_variant_filter", TUNE, 'mine = [t for t in trials if t["variant"] == label]', "mine = trials", "tune", "each variant's report reads every variant's trials"),
    _m("tune_metrics_prefix", TUNE, 'metrics[f"{prefix}_{k}"] = v', "metrics[k] = v", "tune", "the training window's metrics overwrite the evaluation's"),
    _m("tune_twin_variants", TUNE, "twin = next((p for _, p, c in out if c == cfg), None)", "twin = None", "tune", "two spellings of one value train the same runs twice"),
    _m("tune_exists", TUNE, "    if out.exists():\n        raise FileExistsError(", "    if False:\n        raise FileExistsError(", "tune", "a finished sweep's directory written over"),
    # The comparison's figures (experiments/plots.py).
    _m("plot_band_inside", PLOTS, "inside = (grid >= s[0, 0]) & (grid <= s[-1, 0])", "inside = grid >= s[0, 0]", "report", "a shorter run's last value carried past its end"),
    _m("plot_band_ci", PLOTS, "ci = np.array([0.0 if not math.isfinite(c) else c for _, c, _ in stats])", "ci = np.zeros(len(stats))", "report", "the learning curves without their CI band"),
    _m("plot_band_grid", PLOTS, "grid = max(series, key=len)[:, 0]", "grid = series[0][:, 0]", "report", "the curve on the first run's steps, not the longest run's"),
    _m("plot_band_finite", PLOTS, "if key in p and math.isfinite(p[key])", "if key in p", "report", "a NaN point poisons the seeds' mean"),
    _m("plot_bar_ci", PLOTS, "es.append(ci if math.isfinite(ci) else 0.0)", "es.append(0.0)", "report", "the final metrics without error bars"),
    _m("plot_bar_offset", PLOTS, "xs.append(j + (i - (len(agents) - 1) / 2) * width)", "xs.append(j)", "report", "the agents' bars drawn on top of each other"),
    _m("plot_seed_count", PLOTS, "seeds[agent].append(len(curves[(env, agent)]))", "seeds[agent].append(1)", "report", "the legend's n is not the number of seeds"),
    # The native kernels' C++ (recenv/core/native; their torch forms are mutated above).
    _m("nat_cand_dedup", NATIVE + "candidates.cpp", "for (int64_t j = 0; j < C; ++j) first[j] = j == 0 || c[j] != c[j - 1];", "for (int64_t j = 0; j < C; ++j) first[j] = true;", "native", "a candidate retrieved twice shown as two"),
    _m("nat_cand_arrival", NATIVE + "candidates.cpp", "out_mask[n * X + j] && arrival <= tn;", "out_mask[n * X + j] && arrival < tn;", "native", "an item arriving this request masked"),
    _m("nat_cand_stale", NATIVE + "candidates.cpp", "const bool current = s[0] == e;", "const bool current = true;", "native", "an earlier episode's counts read as this one's"),
    _m("nat_cnt_clicks_reset", NATIVE + "counters.cpp", "          s[1] = 0;\n          s[2] = 0;\n", "          s[1] = 0;\n", "native", "a new episode's counter keeps the old clicks"),
    _m("nat_cnt_visible", NATIVE + "counters.cpp", "static_cast<uint32_t>(s[1]) + vis[n * P + j]", "static_cast<uint32_t>(s[1]) + 1", "native", "every page slot counted as an exposure, seen or not"),
    _m("nat_arr_gap", NATIVE + "arrival.cpp", "const float factor = !held ? 1.0f : (gone ? 0.0f : gap);", "const float factor = !held ? 1.0f : (gone ? 0.0f : 1.0f);", "native", "a user away between sessions arrives at full weight"),
    _m("nat_arr_ready", NATIVE + "arrival.cpp", "out_ready[n] = !away(u);", "out_ready[n] = true;", "native", "a user drawn while away served as if back"),
    _m("nat_arr_patched", NATIVE + "arrival.cpp", "return current && (j == patched ? ss[2 * n] : available_at[j]) > tn;", "return current && available_at[j] > tn;", "native", "the just-served user's status read from before the step"),
    _m("nat_arr_gone", NATIVE + "arrival.cpp", "every_gone = every_gone && gone;", "every_gone = every_gone && held;", "native", "a market whose users are all away ends as if all churned"),
    _m("nat_slate_repeat", NATIVE + "slates.cpp", "for (int64_t j = 0; j < k; ++j) repeat |= s[j] == v;", "for (int64_t j = 0; j + 1 < k; ++j) repeat |= s[j] == v;", "native", "a repeat of the previous slot accepted"),
    _m("nat_slate_reset", NATIVE + "slates.cpp", "rp[n * A + a] = reset[n] ? 0.0f : static_cast<float>(invalid);", "rp[n * A + a] = static_cast<float>(invalid);", "native", "a resetting market's ignored slate counted as repaired"),
    _m("nat_slate_mask", NATIVE + "slates.cpp", "const bool ok_slot = in_range && m[c] && !repeat;", "const bool ok_slot = in_range && !repeat;", "native", "a masked candidate accepted"),
    _m("nat_met_gini", NATIVE + "metrics.cpp", "numerator += v * c * (below - (I - below - c));", "numerator += v * c * (below - (I - below));", "native", "Gini's rank sum off by the run"),
    _m("nat_met_stale", NATIVE + "metrics.cpp", "const int32_t x = s[3 * i] == e ? s[3 * i + 1] : 0;", "const int32_t x = s[3 * i + 1];", "native", "coverage and Gini count earlier episodes' exposures"),
    _m("nat_met_sorted_runs", NATIVE + "metrics.cpp", "add_run(nonzero[a], b - a);", "add_run(nonzero[a], 1);", "native", "Gini of long runs counts each value once"),
    _m("nat_rand_zero", NATIVE + "random.cpp", "row[w] = static_cast<float>(x >> 9) * 0x1p-23f + 0x1p-24f;", "row[w] = static_cast<float>(x >> 9) * 0x1p-23f;", "native", "a uniform can be 0 (-log of it infinite)"),
    # Real logs: reading, splitting, the ALS fit and FromLog's catalog (recenv/data, recenv/scenarios/from_log.py).
    _m("log_split_cut", LOGS, "cut = min(max(round(len(self) * (1.0 - test_fraction)), 1), len(self) - 1)", "cut = min(max(round(len(self) * test_fraction), 1), len(self) - 1)", "data", "a global split trains on the test fraction"),
    _m("log_split_user_time", LOGS, "order = np.lexsort((np.arange(len(self)), self.timestamp, self.user))", "order = np.lexsort((np.arange(len(self)), self.user))", "data", "a user's test interactions are the last in the file, not the latest"),
    _m("log_split_user_train", LOGS, "np.clip(n_test, 1, n - 1)", "np.clip(n_test, 1, n)", "data", "a user's every interaction can go to test"),
    _m("log_density", LOGS, "pairs = np.unique(self.user * self.num_items + self.item).size", "pairs = len(self)", "data", "density counts repeated pairs"),
    _m("log_compact_ids", LOGS, "item_ids=self.item_ids[items],", "item_ids=self.item_ids[: len(items)],", "data", "compact() maps items back to the wrong original ids"),
    _m("fit_quality_shrink", FIT, "shrunk = (sums + RATING_PRIOR * mean) / (log.item_counts() + RATING_PRIOR)", "shrunk = sums / np.maximum(log.item_counts(), 1)", "data", "an item's mean rating not shrunk toward the global mean"),
    _m("fit_quality_std", FIT, "quality = torch.as_tensor((shrunk - mean) / (std if std > 0 else 1.0)).float()", "quality = torch.as_tensor(shrunk - mean).float()", "data", "quality in rating points, not standard deviations"),
    _m("fit_interest_weights", FIT, "interest.index_add_(0, user, w[:, None] * item_topics)", "interest.index_add_(0, user, item_topics)", "data", "a user's interests ignore the confidence weights"),
    _m("fit_first_seen", FIT, "fs = np.full(log.num_items, np.inf)\n        np.minimum.at(fs, log.item, log.timestamp)", "fs = np.full(log.num_items, -np.inf)\n        np.maximum.at(fs, log.item, log.timestamp)", "data", "an item's first appearance is its last"),
    _m("fit_sharpness", FIT, "w = torch.softmax(sharpness * top.values, dim=1)", "w = torch.softmax(top.values, dim=1)", "data", "topic_sharpness ignored"),
    _m("fit_kmeans_weights", FIT, "centroids = spherical_kmeans(unit, torch.log1p(counts).double(),", "centroids = spherical_kmeans(unit, torch.ones_like(counts).double(),", "data", "topic centroids not weighted by popularity"),
    _m("als_confidence", MFDATA, "conf = 1.0 + alpha * w  # float64", "conf = alpha * w  # float64", "data", "confidence alpha * w, not 1 + alpha * w"),
    _m("als_loss_unobserved", MFDATA, "observed = (c * (1.0 - s) ** 2 - s**2).sum()", "observed = (c * (1.0 - s) ** 2).sum()", "data", "the objective counts observed pairs twice"),
    _m("als_cg_rhs", MFDATA, "r = scatter(c[:, None] * f) - A(x)", "r = scatter(f) - A(x)", "data", "the normal equations' right side without the confidences"),
    _m("als_cg_gram", MFDATA, "c_minus_1 = (c - 1.0)[:, None]", "c_minus_1 = c[:, None]", "data", "observed pairs counted once more in the Gram matrix"),
    _m("als_pair_weights", MFDATA, "w = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(pairs))", "w = np.bincount(inverse.reshape(-1), minlength=len(pairs)).astype(np.float64)", "data", "a pair's weight is its count, not its summed weights"),
    _m("als_log_confidence", MFDATA, 'return np.log1p(w) if confidence == "log" else w', 'return w if confidence == "log" else np.log1p(w)', "data", "log and linear confidences swapped"),
    _m("mf_recommend_exclude", MFDATA, "s[torch.tensor(exclude.user), torch.tensor(exclude.item)] = -torch.inf", "pass", "data", "recommend() recommends the excluded items"),
    _m("fromlog_arrival_latest", FROMLOG, "latest = torch.argsort(fit.first_seen, stable=True)[I - n_new :]", "latest = torch.argsort(fit.first_seen, stable=True)[:n_new]", "data", "the oldest items arrive during the episode"),
    _m("fromlog_arrival_order", FROMLOG, "arrival[latest] = 1 + (torch.arange(n_new) * (cfg.horizon - 1)) // n_new", "arrival[latest] = 1 + (torch.arange(n_new).flip(0) * (cfg.horizon - 1)) // n_new", "data", "new items arrive in reverse order of appearance"),
    _m("fromlog_quality_std", FROMLOG, "fit.quality * cfg.quality_std", "fit.quality", "data", "quality_std ignored by FromLog"),
    # TensorBoard (experiments/tb.py): tags and a resumed run's purge.
    _m("tb_purge_step", TB, "step = purge_step or 0", "step = 0", "runner", "a resumed writer's START at step 0: the whole run's scalars hidden"),
    _m("tb_start_twice", TB, "for _ in range(1 if purge_step is None else 2):", "for _ in range(1):", "runner", "a resumed writer's one START, which TensorBoard's loader may ignore"),
    _m("tb_member_tag", TB, 'return "/".join([*parts[i:], owner])', 'return "/".join(parts[i:])', "runner", "team members' losses logged under one tag"),
    _m("tb_share_tag", TB, "out[f\"rec/market_share_{key.split('/', 1)[1]}\"] = value", 'out["rec/market_share"] = value', "runner", "every agent's market share under one tag"),
    _m("tb_return_tag", TB, "out[f\"charts/episodic_return_{key.split('/', 1)[1]}\"] = value", 'out["charts/episodic_return"] = value', "runner", "each env agent's return written over the focal return"),
    # The agents' registry (agents/registry.py): names, plug-ins, factories, checkpoints' headers.
    _m("agreg_duplicate", AGREG, "    if old is not None and old is not cls:\n", "    if False:\n", "plugins", "a second class registered under a taken name replaces the first"),
    _m("agreg_inference", AGREG, "with torch.inference_mode(False):", "with torch.inference_mode(torch.is_inference_mode_enabled()):", "plugins", "an agent built inside inference mode holds inference tensors"),
    _m("agreg_takes_seed_kwargs", AGREG, 'p.kind is p.VAR_KEYWORD or (p.name == "seed" and p.kind is not p.POSITIONAL_ONLY)', '(p.name == "seed" and p.kind is not p.POSITIONAL_ONLY)', "plugins", "a factory taking **kwargs is not seeded"),
    _m("agreg_factory_keys", AGREG, 'if p.kind in keyword and p.name != "agent_ids"]', "if p.kind in keyword]", "plugins", "agent_ids listed as a factory's config key"),
    _m("agreg_unknown_keys", AGREG, "unknown = [k for k in config if valid is not None and k not in valid]", "unknown: list[str] = []", "plugins", "a factory's unknown config key reaches the factory"),
    _m("agreg_ids_distinct", AGREG, "        and len(set(ids)) == len(ids)\n", "", "plugins", "a checkpoint header's repeated agent_ids accepted"),
    _m("agreg_abstract", AGREG, '    if act is Agent.act:\n        return "act"', '    if False:\n        return "act"', "plugins", "an agent class without act() accepted by name"),
    # A run checkpoint's checks before a resume (experiments/checkpoint_checks.py).
    _m("ckpt_steps_match", CKPT, 'if _is_int(steps) and steps != run["steps"]:', "if False:", "runner", "run['steps'] and loop['steps'] may disagree"),
    _m("ckpt_tensor_shape", CKPT, "elif saved.dtype != live.dtype or (live.numel() and saved.shape != live.shape):", "elif saved.dtype != live.dtype:", "runner", "a saved tensor of another shape accepted"),
    _m("ckpt_tensor_dtype", CKPT, "elif saved.dtype != live.dtype or (live.numel() and saved.shape != live.shape):", "elif live.numel() and saved.shape != live.shape:", "runner", "a saved tensor of another dtype accepted"),
    _m("ckpt_python_rng", CKPT, 'if len(p["state"]) != size or not all(_is_int(v) for v in p["state"]):', 'if len(p["state"]) != size:', "runner", "a Python RNG state of non-integers accepted"),
    _m("ckpt_dict_missing", CKPT, "lacks = [k for k in live if k not in saved]", "lacks: list[Any] = []", "runner", "a section's missing keys not named"),
    _m("ckpt_list_len", CKPT, "elif any(_kind(v) in snapshot._IN_PLACE for v in live):", "elif False:", "runner", "a list of learners of another length accepted"),
    _m("ckpt_loop_curve", CKPT, 'for name, values in (("curve", _NUMBER), ("window", _TENSOR)):', 'for name, values in (("window", _TENSOR),):', "runner", "the curve's points not checked"),
    # The market's config checks (recenv/core/config.py).
    _m("mcfg_unknown_key", MCFG, "        if unknown:\n            raise UnknownConfigKey(", "        if False:\n            raise UnknownConfigKey(", "config", "an unknown config key is a bare TypeError naming no valid key"),
    _m("mcfg_positive_zero", MCFG, "            if getattr(c, n) <= 0:", "            if getattr(c, n) < 0:", "config", "a size of 0 passes as positive"),
    _m("mcfg_nonneg_engagement_noise", MCFG, 'nonneg("engagement_noise", "browse_cost", "session_gap", "loyalty_weight")', 'nonneg("browse_cost", "session_gap", "loyalty_weight")', "config", "a negative engagement noise accepted"),
    _m("mcfg_nonneg_session_gap", MCFG, 'nonneg("engagement_noise", "browse_cost", "session_gap", "loyalty_weight")', 'nonneg("engagement_noise", "browse_cost", "loyalty_weight")', "config", "a negative session gap accepted (users back before they left)"),
    _m("mcfg_prob_retrieval_fresh", MCFG, '    prob("retrieval_fresh")\n', "", "config", "a negative share of fresh candidates accepted when the shares sum to 1"),
    _m("mcfg_invalid_slate_policies", MCFG, 'INVALID_SLATE_POLICIES = ("raise", "repair")', 'INVALID_SLATE_POLICIES = ("raise",)', "config", "invalid_slate='repair' refused"),
    _m("mcfg_leave_utility_unbounded", MCFG, '    "leave_utility": -MAX_UTILITY_SCALE,\n', "", "config", "leave_utility unbounded: platform logits can overflow float32"),
    _m("mcfg_exposure_int32_bound", MCFG, "c.horizon * c.num_agents * c.slate_size > 2**31 - 1:", "c.horizon * c.num_agents * c.slate_size > 2**31:", "config", "2**31 exposures per episode overflow the int32 item counters"),
    _m("mcfg_retrieval_skew_floor", MCFG, "if c.retrieval_skew < 1.0:", "if c.retrieval_skew < 0.0:", "config", "a retrieval skew below 1 accepted (leans to the tail; 0 indexes past the list)"),
    _m("mcfg_open_low_end", MCFG, "return (lo < v if low_open else lo <= v)", "return (lo <= v)", "config", "an open interval's low end accepted (lr=0)"),
    _m("mcfg_infinite_float", MCFG, "if x is not None and (math.isnan(x) or (finite and math.isinf(x))):", "if x is not None and math.isnan(x):", "config", "an infinite float passes the type check"),
    _m("mcfg_state_dim", MCFG, "2 * A * C + 3 + A", "2 * A * C + 2 + A", "registry", "state_space one entry short of state()"),
    # The counter-based RNG (recenv/core/rng.py).
    _m("rng_mix64_shift", RNG, "z = z ^ ((z >> 30) & 0x3FFFFFFFF)", "z = z ^ ((z >> 31) & 0x1FFFFFFFF)", "rng", "SplitMix64's first shift is its last one"),
    _m("rng_mix64_logical_shift", RNG, "z = z ^ ((z >> 27) & 0x1FFFFFFFFF)", "z = z ^ (z >> 27)", "rng", "an arithmetic shift where SplitMix64 shifts logically"),
    _m("rng_stream_salt", RNG, "mix64(key ^ (counter * _GOLDEN64)) ^ salt)", "mix64(key ^ (counter * _GOLDEN64)))", "rng", "every stream draws the same numbers"),
    _m("rng_counter_golden", RNG, "key ^ (counter * _GOLDEN64)", "key ^ counter", "rng", "neighbouring counters differ in low bits only before mixing (not the kernel's numbers)"),
    _m("rng_split_index", RNG, "mix64(pre ^ (index.long() * _SPLIT64))", "mix64(pre ^ index.long())", "rng", "sub-block prefixes not the kernel's"),
    _m("rng_high_lane", RNG, "((low[:, None] + idx) ^ high[:, None]) & _MASK32", "(low[:, None] + idx) & _MASK32", "rng", "blocks that share the prefix's low lane are identical"),
    _m("rng_uniform_offset", RNG, ".to(dtype) * _INV23 + _INV24", ".to(dtype) * _INV23", "rng", "a uniform can be 0 (log(0) in gumbel and the choice race)"),
    _m("rng_normals_radius", RNG, "r = torch.sqrt(-2.0 * torch.log(u[:, :m]))", "r = torch.sqrt(-torch.log(u[:, :m]))", "rng", "a user's normals have std 1/sqrt(2)"),
    _m("rng_normals_sine", RNG, "[r * torch.cos(theta), r * torch.sin(theta)]", "[r * torch.cos(theta), r * torch.cos(theta)]", "rng", "a user's second half of normals repeats the first (noise copies taste)"),
    _m("rng_box_muller_radius", RNG, "return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(", "return torch.sqrt(-torch.log(u1)) * torch.cos(", "model", "the step's normals (engagement jitter, activity) have std 1/sqrt(2)"),
    _m("rng_gumbel_sign", RNG, "return -torch.log(-torch.log(u))", "return torch.log(-torch.log(u))", "model", "platform visits by a negated Gumbel: not the loyalty logit"),
    _m("rng_fresh_seed_fixed", RNG, 'generator = torch.Generator(device="cpu")\n        generator.seed()', 'generator = torch.Generator(device="cpu")', "rng", "every unseeded market plays one fixed stream"),
    # An agent's saved state, checked before it loads (agents/state_checks.py).
    _m("state_layout_one_element", STATE, "empty = mine.numel() == 0 or saved.numel() == 0", "empty = mine.numel() == 0 or saved.numel() <= 1", "state_checks", "a one-element tensor loads over a whole table (copy_ broadcasts it)"),
    _m("state_layout_swapped", STATE, 'why = state_layout_error(saved[k], mine[k], f"{at}[{k!r}]")', 'why = state_layout_error(mine[k], saved[k], f"{at}[{k!r}]")', "state_checks", "the checkpoint's and the agent's sides swapped: the wrong kind named, None loads where the agent has a number"),
    _m("state_optional_keys", STATE, "extra = [k for k in saved if k not in mine and k not in optional]", "extra = [k for k in saved if k not in mine]", "state_checks", "a declared optional state key refused"),
    _m("state_missing_all_lacking", STATE, "lacks = [k for k in mine if k not in saved]", "lacks = [key]", "state_checks", "a state missing several keys names only the first"),
    _m("state_nonfinite_inf", STATE, "bad = int((~torch.isfinite(t)).sum())", "bad = int(torch.isnan(t).sum())", "state_checks", "an infinite weight or moment loads"),
    _m("state_step_whole", STATE, 'if key == "step" and bool(((v < 0) | (v != v.floor())).any()):', 'if key == "step" and bool((v < 0).any()):', "state_checks", "a fractional optimizer step loads"),
    _m("state_moments_square_avg", STATE, '{"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"', '{"exp_avg_sq", "max_exp_avg_sq", "sum"', "state_checks", "RMSprop's negative square_avg loads (its sqrt is NaN)"),
    _m("state_moment_shape_dim", STATE, "if v.dim() > 0 and v.shape != p.shape:", "if v.dim() > 1 and v.shape != p.shape:", "state_checks", "a 1-d moment of another shape loads"),
    _m("state_counter_zero", STATE, "not isinstance(value, numbers.Integral) or value < 0:", "not isinstance(value, numbers.Integral) or value <= 0:", "state_checks", "a counter of 0 refused"),
    _m("state_weights_only_subclass", STATE, "if kind in _WEIGHTS_ONLY_PLAIN:", "if isinstance(x, _WEIGHTS_ONLY_PLAIN):", "state_checks", "a float or int subclass (numpy.float64, an IntEnum) saved that weights_only refuses"),
    _m("state_weights_only_keys", STATE, 'why = weights_only_error(k, f"{at} key {k!r}") or weights_only_error(v, f"{at}[{k!r}]")', 'why = weights_only_error(v, f"{at}[{k!r}]")', "state_checks", "a dict key weights_only refuses is saved"),
    _m("state_bool_as_number", STATE, "return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)", "return isinstance(v, numbers.Real) and math.isfinite(v)", "state_checks", "lr=True loads as a learning rate of 1"),
    # The Music-v0 preset (recenv/scenarios/music.py).
    _m("music_podcast_share", MUSIC, "PODCAST_SHARE = 0.2  #", "PODCAST_SHARE = 0.5  #", "presets", "half the catalog podcasts, not a fifth"),
    _m("music_podcast_length", MUSIC, "torch.where(is_podcast, base.length * PODCAST_LENGTH, base.length)", "torch.where(is_podcast, base.length, base.length * PODCAST_LENGTH)", "presets", "songs six times as long as podcasts"),
    _m("music_owner_flip", MUSIC, "owner = is_podcast.long()", "owner = (~is_podcast).long()", "presets", "agent_0 recommends podcasts, agent_1 songs"),
    _m("music_lists_owner", MUSIC, "_retrieval_lists(cfg, base.popularity, owner,", "_retrieval_lists(cfg, base.popularity, base.owner,", "presets", "retrieval lists by the random partition, not by content type"),
    _m("music_num_agents_check", MUSIC, "if cfg.num_agents != len(CONTENT_TYPES):", "if cfg.num_agents > len(CONTENT_TYPES):", "presets", "num_agents=1 accepted: the podcasts belong to no agent"),
    _m("music_ownership_check", MUSIC, 'if cfg.ownership != "partition":', "if False:", "presets", "ownership='shared' accepted and silently partitioned"),
    _m("music_available_check", MUSIC, "if available < cfg.num_candidates:", "if available < 0:", "presets", "too few songs or podcasts at t=0 not refused by name"),
    _m("music_engagement_noise", MUSIC, "engagement_noise=0.3,", "engagement_noise=0.2,", "presets", "listen noise at Market-v0's 0.2"),
    _m("music_boredom_exposure", MUSIC, "    boredom_exposure=0.0,\n", "", "presets", "shown tracks bore (Market-v0's exposure boredom)"),
    _m("music_build_base", MUSIC, "MarketConfig.from_kwargs(CONFIG, **config)", "MarketConfig.from_kwargs(**config)", "presets", "Music-v0 built on Market-v0's defaults, not its preset"),
    # The result scripts: compare_marl, compare_agents, fidelity.
    _m("cmarl_eval_seed", CMARL, "    eval_seed = seed + EVAL_SEED_OFFSET\n    eval_env = recenv.make_vec(ENV, num_envs=args.eval_envs, seed=eval_seed, **markets(args, mode))", "    eval_seed = seed\n    eval_env = recenv.make_vec(ENV, num_envs=args.eval_envs, seed=eval_seed, **markets(args, mode))", "marl_script", "the comparison's agents evaluated on their training markets' seed"),
    _m("cmarl_return_agent0", CMARL, 'row["return"] = float(ret.mean())', 'row["return"] = float(ret[:, 0].mean())', "marl_script", "'return / agent' is agent_0's return, not the mean over agents"),
    _m("cmarl_engagement_total", CMARL, 'row["engagement_total"] = float((ep["engagement_per_request"] * ep["length"]).double().mean())', 'row["engagement_total"] = float(ep["engagement_per_request"].double().mean())', "marl_script", "total engagement is engagement per request, not per episode"),
    _m("cmarl_h2h_column", CMARL, "j = env.agents.index(a)", "j = ids.index(a)", "marl_script", "a head-to-head row reads the column of its position in its group, another agent's return and share"),
    _m("cmarl_h2h_member_seed", CMARL, "seed=seed + i * OPPONENT_SEED_OFFSET", "seed=seed", "marl_script", "the head-to-head members share one seed (correlated exploration)"),
    _m("cmarl_out_exists", CMARL, "out.mkdir(exist_ok=False)", "out.mkdir(exist_ok=True)", "marl_script", "a second invocation with the same --out runs and writes over the first"),
    _m("cmarl_variant_unlisted", CMARL, "unlisted = sorted(set(labels) - set(names))", "unlisted: list[str] = []", "marl_script", "a --variant not listed in --agents silently never runs"),
    _m("cmarl_variant_schedule", CMARL, "cfg[label] = dict(cfg.get(name, {}))", "cfg[label] = {}", "marl_script", "a --variant's agent trains without the budget schedule of its registered agent"),
    _m("cmarl_table_by_env", CMARL, 'table = report.aggregate(rows, [m for m, _, _ in TABLE_METRICS], by=("env", "agent"))', 'table = report.aggregate(rows, [m for m, _, _ in TABLE_METRICS], by=("agent",))', "marl_script", "an agent's cooperative and competitive rows averaged into one cell"),
    _m("cmarl_critic_ev_tail", CMARL, "tail = ev[-max(1, len(ev) // 4) :]", "tail = ev", "marl_script", "the critic's explained variance over all updates, not the last quarter"),
    _m("cmarl_spread_sd", CMARL, "sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)", "sum((v - mean) ** 2 for v in values) / max(1, len(values))", "marl_script", "the learning tests' seed spread with the biased sd"),
    # (Not the held-out markets built with the training seed alone: evaluate() reseeds them
    # with its own seed, so that mutant is equivalent.)
    _m("cag_eval_seed", CAG, "result = agents.evaluate(agent, test_env, seed=100_000 + seed)", "result = agents.evaluate(agent, test_env, seed=seed)", "agents_script", "evaluated on markets of the training seed"),
    _m("cag_engagement_total", CAG, 'out["metrics"]["engagement_total"] = float((ep["engagement_per_request"] * ep["length"]).mean())', 'out["metrics"]["engagement_total"] = float(ep["engagement_per_request"].mean())', "agents_script", "total engagement is per request, not per episode"),
    _m("cag_iql_overrides", CAG, 'return {"learning_starts": 1_000, "eps_decay_steps": max(1, budget // 2), **overrides}', 'return {**overrides, "learning_starts": 1_000, "eps_decay_steps": max(1, budget // 2)}', "agents_script", "--iql cannot override learning_starts or eps_decay_steps"),
    _m("cag_extra_label", CAG, 'label = f"{name} {json.dumps(config)}" if config else name', "label = name", "agents_script", "two --long-extra configs of one agent share a row (the second overwrites the first)"),
    _m("cag_extra_experiment", CAG, 'if args.long_extra and args.experiment != "long_horizon":', "if False:", "agents_script", "--long-extra silently ignored by the table experiment"),
    _m("cag_reserve_excl", CAG, 'with open(t, "x") as f:', 'with open(t, "w") as f:', "agents_script", "an existing result overwritten by a new invocation"),
    _m("cag_reserve_cleanup", CAG, "            for m in made:\n                m.unlink(missing_ok=True)\n", "            made.clear()\n", "agents_script", "a refused reservation leaves the targets it had already created"),
    _m("cag_json_inf", CAG, "if isinstance(x, float) and not math.isfinite(x):", "if isinstance(x, float) and math.isnan(x):", "agents_script", "an infinite figure kept: results files that are not JSON"),
    _m("cag_failure_cleanup", CAG, "        for t in targets:\n            t.unlink(missing_ok=True)", "        for t in targets[:1]:\n            t.unlink(missing_ok=True)", "agents_script", "a failed run leaves its in-progress .md behind"),
    _m("fid_served_live", FID, "served += int(live.sum())", "served += len(live)", "fidelity", "markets starting a new episode counted as served requests (CTR understated)"),
    _m("fid_user_requests_live", FID, "user_requests.index_add_(0, user[live], torch.ones_like(user[live]))", "user_requests.index_add_(0, user, torch.ones_like(user))", "fidelity", "a resetting market's user counted as served"),
    _m("fid_choices_order", FID, "order = np.lexsort((first.numpy(), -counts.numpy(), u))", "order = np.lexsort((first.numpy(), counts.numpy(), u))", "fidelity", "a simulated user's top 10 are the items it chose least"),
    _m("fid_hit_next", FID, "nxt = np.mean([held[u][0] in recs.get(u, ()) for u in test_users])", "nxt = np.mean([held[u][-1] in recs.get(u, ()) for u in test_users])", "fidelity", "next-item HR@10 scores the last held-out item, not the next"),
    _m("fid_requests_default", FID, "requests = args.requests or len(train_c)", "requests = args.requests or len(log)", "fidelity", "the default budget is the whole log's interactions, test included"),
    _m("fid_spearman_test", FID, 'row["spearman_items_test"] = spearman(sim.item_users, test_items)', 'row["spearman_items_test"] = spearman(sim.item_users, real_items)', "fidelity", "the 'vs test' Spearman column compares with train"),
    _m("fid_ctr_distinct", FID, 'row["ctr"] = float(sim.item_clicks.sum() / max(1, sim.requests))', 'row["ctr"] = float(sim.item_users.sum() / max(1, sim.requests))', "fidelity", "CTR counts distinct (user, item) pairs, not clicks"),
    _m("fid_existing_refuse", FID, "    if existing:\n        print(", "    if False:\n        print(", "fidelity", "an existing report is not refused before the log is read"),
    _m("fid_failure_cleanup", FID, "        for name in OUTPUTS:\n            Path(out, name).unlink(missing_ok=True)", "        for name in OUTPUTS[:2]:\n            Path(out, name).unlink(missing_ok=True)", "fidelity", "a failed run leaves its figures behind"),
    _m("fid_test_fraction", FID, 'if not 0.0 < a["test_fraction"] < 1.0:', 'if not 0.0 < a["test_fraction"] <= 1.0:', "fidelity", "--test-fraction 1 accepted (an empty train split)"),
    # A run's snapshot of agents and market (experiments/snapshot.py).
    _m("snap_generator_state", SNAP, '        cur.set_state(saved["value"])\n        return True', "        return True", "snapshot", "a live generator keeps its state: a resume draws other numbers"),
    _m("snap_npscalar", SNAP, '            return {KIND: "npscalar", "dtype": x.dtype.name, "value": x.item()}', "            return x.item()", "snapshot", "numpy scalars come back as Python numbers (float32 sums go on in float64)"),
    _m("snap_tuple_static", SNAP, "if isinstance(x, (dict, list, tuple)) and any(_is_static(v, exclude) for v in _values(x)):", "if isinstance(x, (dict, list)) and any(_is_static(v, exclude) for v in _values(x)):", "snapshot", "a tuple holding a dtype is not static: snapshot raises"),
    _m("snap_hook_in_place", SNAP, '            _restore_attr(cur, n, v, refs, f"{where}.{n}")\n        _restored(cur)\n', '            _restore_attr(cur, n, v, refs, f"{where}.{n}")\n', "snapshot", "a nested object restored in place does not re-derive its state"),
    _m("snap_hook_rebuilt", SNAP, "        _restored(obj)\n        return obj", "        return obj", "snapshot", "a nested object rebuilt from its class does not re-derive its state"),
    _m("snap_shared_ref", SNAP, '        if id(x) in memo:\n            return {KIND: "ref", "id": memo[id(x)][0]}', '        if False:\n            return {KIND: "ref", "id": memo[id(x)][0]}', "snapshot", "a tensor referenced twice restored as two tensors"),
    _m("snap_frozen_static", SNAP, "return bool(cast(Any, type(x)).__dataclass_params__.frozen)", "return False", "snapshot", "frozen configs snapshotted and written back"),
    _m("snap_no_clone", SNAP, '"value": x.detach().cpu().clone(),', '"value": x.detach().cpu(),', "snapshot", "a snapshot aliases the live tensors: later steps change what it holds"),
    _m("snap_list_in_place", SNAP, "if any(_kind(s) in _IN_PLACE for s in saved):", "if False:", "snapshot", "a list of modules or learners is not restored in place"),
    # The runner's command line (experiments/cli.py).
    _m("cli_config_preset", CLI, "base_name = base_name or file_preset", "base_name = file_preset or base_name", "cli", "a config file's preset overrides --preset"),
    _m("cli_set_last", CLI, '    for dest, value in vars(args).items():\n        if dest.startswith(("run.", "compare.")):\n            assignments.append((dest, value))\n    assignments.extend(config.split_assignment(a) for a in args.assignments)\n', '    assignments.extend(config.split_assignment(a) for a in args.assignments)\n    for dest, value in vars(args).items():\n        if dest.startswith(("run.", "compare.")):\n            assignments.append((dest, value))\n', "cli", "per-field flags override --set (documented: --set last)"),
    _m("cli_report_out_exists", CLI, '        if out.exists():\n            raise ConfigError(f"--out {args.out!r} exists', '        if False:\n            raise ConfigError(f"--out {args.out!r} exists', "cli", "report --out into an existing directory is not refused before printing"),
    _m("cli_report_out_inside", CLI, "if out.resolve().is_relative_to(Path(args.path).resolve()):", "if False:", "cli", "report --out inside the comparison it reads is accepted"),
    _m("cli_describe_name", CLI, 'if args.name is not None and args.what not in ("agent", "env"):', "if False:", "cli", "describe run/compare/envs/agents NAME ignores NAME"),
    _m("cli_unknown_args", CLI, "    if extra:  # report it", "    if False:  # report it", "cli", "an unknown option is silently ignored"),
    _m("cli_config_error_code", CLI, 'print(f"config error: {e}{notes}", file=sys.stderr)\n        return 2', 'print(f"config error: {e}{notes}", file=sys.stderr)\n        return 1', "cli", "a config error exits 1, like a run error"),
    _m("cli_summary_sentence", CLI, 'sentence = re.match(r".*?[.!?](?=\\s|$)", text)', 'sentence = re.match(r".*[.!?](?=\\s|$)", text)', "cli", "describe envs summarises a page by its whole first paragraph"),
    _m("cli_resume_checkpoint", CLI, '        if args.checkpoint:\n            raise ConfigError("--checkpoint applies', '        if False:\n            raise ConfigError("--checkpoint applies', "cli", "resume --checkpoint of a comparison silently ignored"),
    _m("cli_train_rounding_note", CLI, "    if n_envs * per_env != episodes:", "    if False:", "cli", "train and compare no longer say their evaluation plays more episodes than asked"),
    # The RLlib training command (experiments/rllib_train.py).
    _m("rlt_out_exists", RLT, '    if out.exists():\n        raise FileExistsError(f"output directory', '    if False:\n        raise FileExistsError(f"output directory', "rllib", "an existing --out not refused before Ray starts and trains"),
    _m("rlt_iterations", RLT, "for i in range(1, cfg.iterations + 1):", "for i in range(1, cfg.iterations):", "rllib", "one training iteration fewer than --iterations"),
    _m("rlt_gamma_nan", RLT, "if not 0 <= self.gamma <= 1:  # False for NaN", "if self.gamma < 0 or self.gamma > 1:", "rllib", "a NaN discount accepted"),
    _m("rlt_minibatch_check", RLT, "if self.minibatch_size > self.train_batch_size:", "if False:", "rllib", "a minibatch larger than the training batch accepted"),
    _m("rlt_all_modules", RLT, 'if isinstance(stats, dict) and module != "__all_modules__"', "if isinstance(stats, dict)", "rllib", "RLlib's __all_modules__ aggregate listed as a module's losses"),
    _m("rlt_env_steps_lifetime", RLT, '_number(runners.get("num_env_steps_sampled_lifetime"))', '_number(runners.get("num_env_steps_sampled"))', "rllib", "env_steps_sampled_lifetime is the iteration's count"),
    _m("rlt_seed_ignored", RLT, '.debugging(seed=cfg.seed, log_level="WARN")', '.debugging(log_level="WARN")', "rllib", "--seed not passed to RLlib: runs do not repeat"),
    _m("rlt_envs_per_runner", RLT, '"envs_per_env_runner": self.num_envs_per_env_runner,', '"envs_per_env_runner": 1,', "rllib", "a runner's markets not told their count: two runners step the same seeded market"),
    _m("rlt_gamma_ignored", RLT, "            gamma=cfg.gamma,\n", "", "rllib", "--gamma not passed to PPO (RLlib's default used)"),
    _m("rlt_hash_seed_restart", RLT, '    if os.environ.get("PYTHONHASHSEED") == recenv_rllib.HASH_SEED:\n        return', "    if True:\n        return", "rllib", "the command does not restart with a fixed hash seed: a seed's run follows PYTHONHASHSEED"),
    # The speed issue's figures: the benchmark's arithmetic and the core's traffic model.
    _m("bench_copy_bytes", BPEERS, "return 2 * n * 4 * copies / seconds", "return n * 4 * copies / seconds", "bench", "the copy bandwidth counts the bytes read only"),
    _m("bench_fraction_per_env", BENV, "bps = row[stat] / num_envs * total", "bps = row[stat] * total", "bench", "traffic per second from env-steps times the whole batch's bytes"),
    _m("bench_rate_inverted", BENV, "return summarize_rates([scale / s for s in samples])", "return summarize_rates([s / scale for s in samples])", "bench", "a rate is seconds per unit, not units per second"),
    _m("bench_catalog_ratio", BENV, "ratios.append(median[large] / median[small])", "ratios.append(median[small] / median[large])", "bench", "the catalog ratio inverted (a slower large catalog reads below 1)"),
    _m("bench_per_step", BENV, "samples.append(total / steps)", "samples.append(total)", "bench", "a sample is a run's seconds, not seconds per step"),
    _m("bench_met_with_catalog", BENV, 'entry["met"] = entry["fraction_of_copy_bandwidth"] >= TARGET_COPY_FRACTION', 'entry["met"] = entry["fraction_with_catalog"] >= TARGET_COPY_FRACTION', "bench", "the bandwidth target judged with the catalog's reads"),
    _m("bench_with_catalog", BENV, 'with_catalog = per_step.get("total_with_catalog", total)', "with_catalog = total", "bench", "the fraction with the catalog's reads leaves them out"),
    _m("bench_peer_ratio", BENV, 'r = num["median"] / den["median"]', 'r = den["median"] / num["median"]', "bench", "recenv over a peer inverted"),
    _m("traffic_user_rows", MARKET, '"users": 4 * F * f4 + U * status + 2 * status + U * f4 + 2 * i8,', '"users": 2 * F * f4 + U * status + 2 * status + U * f4 + 2 * i8,', "bench", "one user row read and written a step, not two"),
    _m("traffic_candidates", MARKET, "+ A * C * (T + 6) * f4", "+ A * C * (T + 5) * f4", "bench", "the observation's candidate features one column short"),
    _m("traffic_catalog_in_total", MARKET, 'out["total"] = sum(out.values())', 'out["total"] = sum(out.values()) + catalog * self.num_envs', "bench", "the catalog's reads counted in the state-and-observation total"),
    # The A/B tools' verdicts (every gain in PERFORMANCE.md is one) and the benchmark's figure.
    _m("abc_no_abba", ABC, 'for side in ("base", "head") if r % 2 == 0 else ("head", "base"):', 'for side in ("base", "head"):', "perf_tools", "ab_commits always runs base first: a drifting sitting favours one side"),
    _m("abc_ratio_inverted", ABC, '"head_over_base": medians["head"] / medians["base"],', '"head_over_base": medians["base"] / medians["head"],', "perf_tools", "ab_commits' verdict inverted (a slower head reads as a gain)"),
    _m("abc_mean_not_median", ABC, "medians = {side: statistics.median(v) for side, v in rates.items()}", "medians = {side: statistics.mean(v) for side, v in rates.items()}", "perf_tools", "ab_commits' sides by their mean: one slow child moves the verdict"),
    _m("ab_round_ratio_inverted", BENV, 'ratios = [h / b for h, b in zip(rates["head"], rates["base"], strict=True)]', 'ratios = [b / h for h, b in zip(rates["head"], rates["base"], strict=True)]', "perf_tools", "the A/B tools' rounds counted ahead when head was behind"),
    _m("ab_ahead_when_behind", BENV, "return ratios, sum(r > 1 for r in ratios)", "return ratios, sum(r < 1 for r in ratios)", "perf_tools", "the A/B tools count the rounds head was behind as ahead"),
    _m("abf_no_abba", ABF, 'for name in ("base", "head") if r % 2 == 0 else ("head", "base"):', 'for name in ("base", "head"):', "perf_tools", "ab_forms always steps base first in a round"),
    _m("abf_rate_per_market", ABF, "rates[name].append(env.num_envs * steps / total)", "rates[name].append(steps / total)", "perf_tools", "ab_forms' rates are steps/s, not env-steps/s"),
    _m("abf_obs_not_carried", ABF, "total, sides[name][1] = timed_steps(env, obs, steps)", "total, _ = timed_steps(env, obs, steps)", "perf_tools", "each ab_forms turn restarts from the first observation (the same steps again)"),
    _m("abf_pool_one_order", ABF, 'ratios = [r for row in by_order.values() for r in row["ratios"]]', 'ratios = list(row["ratios"])', "perf_tools", "ab_forms' verdict from the last build order only: its bias does not cancel"),
    _m("abf_form_not_entered", ABF, "stack.enter_context(FORMS[name]())", "FORMS[name]()", "perf_tools", "the base is built without its earlier form: an A/A read as an A/B"),
    _m("abf_order_ignored", ABF, 'if order == "base-first":', "if True:", "perf_tools", "the base always built first: the order bias never cancels"),
    _m("abf_child_order", ABF, "arguments = (args.base, args.env, args.num_envs, args.rounds, args.steps, order, config)", "arguments = (args.base, args.env, args.num_envs, args.rounds, args.steps, ORDERS[0], config)", "perf_tools", "both children build in one order"),
    _m("bplot_series_unmatched", BPLOT, "if any(r.get(k) != v for k, v in match.items()):", "if False:", "perf_tools", "eager and compiled rows drawn as one line"),
    _m("bplot_series_unsorted", BPLOT, 'return {t: sorted(rs, key=lambda r: r["num_envs"]) for t, rs in sorted(out.items())}', "return {t: rs for t, rs in sorted(out.items())}", "perf_tools", "a line's points in the rows' order, not by markets"),
    _m("bplot_spread_swapped", BPLOT, '[max(r["median"] - r["min"], 0.0) for r in rs],', '[max(r["max"] - r["median"], 0.0) for r in rs],', "perf_tools", "the error bar's lower half drawn as its upper"),
    _m("bplot_target_line", BPLOT, 'ax.axhline(target, color="grey", linestyle="--", linewidth=1)', 'ax.axhline(target / 2, color="grey", linestyle="--", linewidth=1)', "perf_tools", "the target line drawn at half the target"),
    _m("bplot_all_green", BPLOT, 'colors = ["tab:green" if s >= 1 else "tab:red" for s in values]', 'colors = ["tab:green" for s in values]', "perf_tools", "every target's bar coloured met"),
    _m("bplot_labels_reversed", BPLOT, "ax.set_yticks(range(len(values)), labels, fontsize=8)", "ax.set_yticks(range(len(values)), list(reversed(labels)), fontsize=8)", "perf_tools", "each bar labelled with another target's name"),
    _m("thash_obs_only", THASH, "        _feed(h, out)\n", "        _feed(h, out[0])\n", "perf_tools", "the digest hashes a batched step's observations only: rewards, ends and info unchecked"),
    _m("thash_no_state", THASH, "        _feed(h, env.state())\n", "", "perf_tools", "the batched state() left out of the digest"),
    _m("thash_no_face_step", THASH, "        _feed(h, face_out)\n", "        _feed(h, face_out[0])\n", "perf_tools", "the face's rewards, ends and infos left out of the digest"),
    _m("thash_no_face_state", THASH, "        _feed(h, face.state())\n", "", "perf_tools", "the face's state() left out of the digest"),
    _m("thash_shapes_only", THASH, "        h.update(x.detach().cpu().contiguous().numpy().tobytes())\n", "", "perf_tools", "a tensor's dtype and shape hashed, not its values"),
    _m("thash_scalar_type", THASH, "        h.update(repr(x).encode())", "        h.update(type(x).__name__.encode())", "perf_tools", "a Python scalar's type hashed, not its value (the face's rewards and infos)"),
    _m("thash_no_oracle", THASH, "        if t % 2:", "        if False:", "perf_tools", "random slates only: the oracle's slates never in the trajectories"),
    _m("thash_same_by_name", THASH, "same = base.get(label) == d", "same = label in base", "perf_tools", "a configuration the base has reads identical whatever its digest"),
    _m("thash_exit_zero", THASH, "    return 1 if differ else 0", "    return 0", "perf_tools", "a differing trajectory exits 0 (a script or CI reading the status passes it)"),
    _m("ploops_past_block", PLOOPS, 'if i >= 0 and line <= blocks[i]["last"]:', "if i >= 0:", "perf_tools", "samples past a loop block's end (the wrapper's code) counted to it"),
    _m("ploops_no_pgoff", PLOOPS, "            return ip - start + pgoff", "            return ip - start", "perf_tools", "an address's file offset without its mapping's offset"),
    _m("ploops_any_mapping", PLOOPS, 'if m and "x" in line.split("]:")[-1].split()[0]:', "if m:", "perf_tools", "data mappings taken for code"),
    _m("ploops_innermost", PLOOPS, "                result[current] = int(tail)", "                result[current] = result[current] or int(tail)", "perf_tools", "a sample's innermost generated line kept, not its outermost"),
    _m("ploops_vaddr", PLOOPS, "            return off - seg_off + vaddr", "            return off", "perf_tools", "a file offset read as an address"),
    _m("ploops_vector_width", PLOOPS, 'trips.append(f"{hi - lo}" + (f"/{step}" if step > 1 else ""))', 'trips.append(f"{hi - lo}")', "perf_tools", "a vectorised loop's nest without its lanes"),
    _m("mfloor_counter_ids", MFLOOR, "cand_rows = [counter_rows((cand + k) % I) for k in shifts]", "cand_rows = [((cand + k) % I).reshape(-1) for k in shifts]", "perf_tools", "the counters looked up by item id in the first market's table, not each market's own rows"),
    _m("mfloor_one_index_set", MFLOOR, "shifts = [0, *torch.randint(1, I, (VARIANTS - 1,), generator=gen).tolist()]", "shifts = [0] * VARIANTS", "perf_tools", "one index set timed again and again: cache hits, a floor too low"),
    _m("mfloor_obs_bytes_read", MFLOOR, '"observation": cand.numel() * (features.shape[1] * 4 * 2 + 8),', '"observation": cand.numel() * (features.shape[1] * 4 + 8),', "perf_tools", "the observation's bytes read, not read and written"),
    _m("mfloor_time_per_sample", MFLOOR, "out.append((time.perf_counter() - t0) / reps)", "out.append(time.perf_counter() - t0)", "perf_tools", "a sample is reps calls' seconds, not one call's"),
    _m("mfloor_rate", MFLOOR, 'result["floor_env_steps_per_s"] = num_envs / floor', 'result["floor_env_steps_per_s"] = 1 / floor', "perf_tools", "the floor's rate in steps/s, not env-steps/s"),
    _m("fmodes_no_abba", FMODES, "for name in list(MODES) if r % 2 == 0 else list(reversed(MODES)):", "for name in list(MODES):", "perf_tools", "face_modes always times the default mode first in a round"),
    _m("fmodes_ratio_inverted", FMODES, 'ratio = medians["default"] / medians["deterministic"]', 'ratio = medians["deterministic"] / medians["default"]', "perf_tools", "face_modes' verdict inverted"),
    _m("fmodes_block_mode", FMODES, "    with deterministic_algorithms(on):", "    with deterministic_algorithms(None):", "perf_tools", "a block timed in whatever mode the process is in, not its own"),
    _m("fmodes_block_rate", FMODES, "    return steps / spent", "    return spent / steps", "perf_tools", "a block's seconds per step reported as its steps/s"),
    _m("fmodes_built_default", FMODES, "_face(args.env, config, MODES[name], args.built_in_mode)", "_face(args.env, config, False, args.built_in_mode)", "perf_tools", "both faces built in the default mode"),
    _m("fmodes_order_ignored", FMODES, "build_order = list(reversed(MODES)) if args.deterministic_first else list(MODES)", "build_order = list(MODES)", "perf_tools", "--deterministic-first ignored: the order's bias never checked"),
    _m("bcuda_best_any_kind", BCUDA, 'recenv_rows = [r for r in rows if r["kind"] == "batched_cuda"]', "recenv_rows = rows", "gpu_scripts", "the best figure taken over every row: an A/B or VMAS row can stand as recenv's"),
    _m("bcuda_share_whole_batch", BCUDA, 'per_env = traffic["total"] / TRAFFIC_ENVS if traffic else None', 'per_env = traffic["total"] if traffic else None', "gpu_scripts", "a GPU row's share of the bandwidth with the counting batch's bytes per env-step"),
    _m("bcuda_vmas_ratio_inverted", BCUDA, 'r = row["median"] / vmas["median"]', 'r = vmas["median"] / row["median"]', "gpu_scripts", "recenv over VMAS on the GPU inverted"),
    _m("bcuda_compiled_first_ignored", BCUDA, "if args.compiled_first:", "if False:", "gpu_scripts", "--compiled-first ignored: a short device session spends its minutes on the eager rows first"),
    _m("bcuda_partial_unwritten", BCUDA, "partial.write_text(json.dumps(result(), indent=2))", "json.dumps(result(), indent=2)", "gpu_scripts", "nothing kept until the end: a run stopped at the device's limit loses every figure"),
    _m("bcuda_partial_overwritten", BCUDA, "if partial.exists():", "if False:", "gpu_scripts", "a stopped run's partial figures overwritten by the next run"),
    _m("bcuda_build_error_stops", BCUDA, "except (RuntimeError, torch.OutOfMemoryError) as e:", "except torch.OutOfMemoryError as e:", "gpu_scripts", "a failed compiled build stops the run instead of being recorded"),
    _m("bcuda_target_verdict", BCUDA, 'met = "met" if top >= TARGET_CUDA_STEPS else "NOT met"', 'met = "met" if top >= TARGET_CUDA_STEPS / 2 else "NOT met"', "gpu_scripts", "the GPU target read as met at half of it"),
    _m("bcuda_vmas_ratio_eager_only", BCUDA, 'if r["kind"] == "batched_cuda" and r["num_envs"] == n:', 'if r["kind"] == "batched_cuda" and r["num_envs"] == n and not r["compile"]:', "gpu_scripts", "with --compiled-first the compiled rows never get their VMAS ratio"),
    _m("bcuda_aten_gain_inverted", BCUDA, "{row['median'] / old['median']:.2f}x", "{old['median'] / row['median']:.2f}x", "gpu_scripts", "row_cumsum's gain over ATen's cumsum printed inverted"),
    _m("bench_no_device_sync", BENV, 'cuda = env.device.type != "cpu"', "cuda = False", "gpu_scripts", "a GPU step timed without synchronising: the launches, not the work"),
    _m("bench_no_sync_after_step", BENV, "obs, _, terminated, truncated, _ = env.step(acts)\n        if cuda:\n            torch.cuda.synchronize()\n", "obs, _, terminated, truncated, _ = env.step(acts)\n", "gpu_scripts", "the timer stops before the GPU has run the step"),
    _m("bench_policy_in_timer", BENV, "if cuda:\n            torch.cuda.synchronize()\n        t0 = time.perf_counter()", "t0 = time.perf_counter()\n        if cuda:\n            torch.cuda.synchronize()", "gpu_scripts", "the policy's queued GPU work timed as the step's"),
    _m("pcuda_synced_each", PCUDA, "wall_each = run(sync_each=True)", "wall_each = run(sync_each=False)", "gpu_scripts", "the 'synced each step' wall time measured queued"),
    _m("pcuda_kernels_all_events", PCUDA, "kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]", "kernels = list(events)", "gpu_scripts", "host events counted as kernels: the GPU's busy share too high"),
    _m("pcuda_timer_sync_counted", PCUDA, 'syncs = sum(e.count for e in averages if "Synchronize" in e.key) - 1', 'syncs = sum(e.count for e in averages if "Synchronize" in e.key)', "gpu_scripts", "the timer's own sync counted as a wait of the step's"),
    _m("pcuda_busy_over_synced", PCUDA, 'figures["kernel_s_per_step"] / wall_queued if cuda', 'figures["kernel_s_per_step"] / wall_each if cuda', "gpu_scripts", "the GPU's busy share over the synchronised wall time"),
    _m("pcuda_table_with_kernels", PCUDA, "host_ops = [e for e in averages if e.device_type == torch.autograd.DeviceType.CPU]", "host_ops = list(averages)", "gpu_scripts", "kernel rows in the op table: device time counted twice"),
    _m("pcuda_gpu_table_by_cpu", PCUDA, "key=lambda e: _device_us(e) if cuda else e.self_cpu_time_total", "key=lambda e: e.self_cpu_time_total", "gpu_scripts", "a GPU run's op table sorted by host time"),
    _m("pcuda_rate_per_step", PCUDA, '"env_steps_per_s_queued": num_envs / wall_queued,', '"env_steps_per_s_queued": 1 / wall_queued,', "gpu_scripts", "the queued rate in steps/s, not env-steps/s"),
    _m("cop_one_request", COP, "index = requests[i % VARIANTS]", "index = requests[0]", "gpu_scripts", "one request timed again and again: cached rows, a large catalog's cost hidden"),
    _m("cop_warmup_timed", COP, "return seconds[WARMUP_CALLS:]", "return seconds", "gpu_scripts", "the warm-up calls (cold caches) among the samples"),
    _m("cop_no_warm_steps", COP, "for _ in range(WARMUP_STEPS):", "for _ in range(0):", "gpu_scripts", "the kernel timed on a fresh market: no counter stamped this episode"),
    _m("cop_ratio_inverted", COP, '"ratio": large / small,', '"ratio": small / large,', "gpu_scripts", "the catalog ratio inverted"),
    _m("cop_extra_sign", COP, '"extra_ms": 1e3 * (large - small),', '"extra_ms": 1e3 * (small - large),', "gpu_scripts", "the large catalog's extra time per call negated"),
    _m("cop_size_ignored", COP, 's = time_kernel(args.env, args.num_envs, args.calls, **{**config, "num_items": items})', "s = time_kernel(args.env, args.num_envs, args.calls, **config)", "gpu_scripts", "both sizes timed at the env's own catalog"),
    _m("cop_threads", COP, "torch.set_num_threads(1)", "torch.get_num_threads()", "gpu_scripts", "the kernel timed on every thread, not one"),
    _m("gsh_eager_first", GSH, "--aten-cumsum-sizes 1048576,16384 --compiled-first", "--aten-cumsum-sizes 1048576,16384", "gpu_scripts", "the device session spends its minutes on the eager rows before the compiled figure never measured"),
    _m("gsh_import_check_ignored", GSH, '[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1', "true", "gpu_scripts", "a machine that cannot import recenv goes on through every phase, each failing"),
    _m("gsh_json_not_copied", GSH, 'cp "$f" "$OUT_DIR"/', "true", "gpu_scripts", "bench_cuda's JSON stays on the device machine: the figures come back as text only"),
    _m("gsh_old_json_copied", GSH, '[ -f "$f" ] && ! grep -qxF "$f" <<< "$before" && cp', '[ -f "$f" ] && cp', "gpu_scripts", "the committed results' JSON copied back as if this run had written it"),
    _m("gsh_every_test_file", GSH, 'mapfile -t CUDA_TESTS < <(grep -rl "cuda.is_available" tests)', "mapfile -t CUDA_TESTS < <(ls tests/*.py)", "gpu_scripts", "the device's test phases collect every test file, not those that ask for CUDA"),
    _m("gsh_no_time_floor", GSH, 'if [ "$limit" -lt 20 ]; then', "if false; then", "gpu_scripts", "a phase started with seconds left, killed before it writes anything"),
    _m("pbase_team_sum", PBASE, 'team = per_episode.mean(1) if reward_mode == "cooperative" else per_episode.sum(1)', "team = per_episode.sum(1)", "gpu_scripts", "a cooperative team's return counted once per agent"),
    _m("pbase_team_mean", PBASE, 'team = per_episode.mean(1) if reward_mode == "cooperative" else per_episode.sum(1)', "team = per_episode.mean(1)", "gpu_scripts", "a competing market's agents' returns averaged, not summed"),
    _m("pbase_ratio_inverted", PBASE, 'out["oracle_over_uniform_random"] = out["oracle"] / out["uniform_random"]', 'out["oracle_over_uniform_random"] = out["uniform_random"] / out["oracle"]', "gpu_scripts", "the oracle's ratio over random slates inverted"),
    _m("pbase_slates_masked", PBASE, "score = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)", "score = torch.rand(mask.shape, generator=g)", "gpu_scripts", "random slates drawn from masked candidates too"),
    _m("pbase_seed_shift", PBASE, "result = evaluate(agents.make_agent(name, env), env, seed=seed)", "result = evaluate(agents.make_agent(name, env), env, seed=seed + 1)", "gpu_scripts", "the agents evaluated at another seed than the pages state"),
    _m("cb_float_tolerance", CBUILD, "if not torch.allclose(x, y, rtol=1e-4, atol=1e-5, equal_nan=True):", "if not torch.allclose(x, y, rtol=1e-2, atol=1e-5, equal_nan=True):", "cuda_build", "the interpreted kernels compared to 1 % where the compiled-step tests take 1e-4"),
    _m("cb_nan_unequal", CBUILD, "if not torch.allclose(x, y, rtol=1e-4, atol=1e-5, equal_nan=True):", "if not torch.allclose(x, y, rtol=1e-4, atol=1e-5, equal_nan=False):", "cuda_build", "NaN in both steps (an undefined coverage) read as a disagreement"),
    _m("cb_ints_to_rounding", CBUILD, "elif not torch.equal(x, y):", "elif not torch.allclose(x.double(), y.double(), rtol=1e-4):", "cuda_build", "integers (items, counters, counts) compared to rounding, not exactly"),
    _m("cb_scalar_nan", CBUILD, "if not (math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5) or (x != x and y != y)):", "if not math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5):", "cuda_build", "a face scalar NaN in both steps read as a disagreement"),
    _m("cb_dtype_unchecked", CBUILD, "if not isinstance(y, torch.Tensor) or x.shape != y.shape or x.dtype != y.dtype:", "if not isinstance(y, torch.Tensor) or x.shape != y.shape:", "cuda_build", "a tensor of another dtype (float for int) compared by value"),
    _m("cb_per_market_total", CBUILD, "per_market = total / num_envs\n", "per_market = total\n", "cuda_build", "the bytes per market are the whole batch's"),
    _m("cb_ceiling_one_market", CBUILD, 'row["ceiling_env_steps_per_s"] = num_envs * peak / total', 'row["ceiling_env_steps_per_s"] = peak / total', "cuda_build", "the bandwidth ceiling in steps/s, not env-steps/s"),
    _m("cb_share_batch_bytes", CBUILD, 'row["target_share_of_peak"] = TARGET_CUDA_STEPS * per_market / peak', 'row["target_share_of_peak"] = TARGET_CUDA_STEPS * total / peak', "cuda_build", "the target's share of the peak from the batch's bytes"),
    _m("cb_face_ceiling", CBUILD, "if num_envs == 1:  # (one market", "if False:  # (one market", "cuda_build", "the one-market face given a bandwidth ceiling its launches make meaningless"),
    _m("cb_keep_cpu_ignored", CBUILD, "if name not in keep_cpu:", "if True:", "cuda_build", "--cpu-form ignored: the CPU's form never built for CUDA"),
    _m("cb_interpret_exit", CBUILD, "status = max(status, 0 if where is None else 1)", "status = max(status, 0)", "cuda_build", "an interpreted step that disagrees exits 0"),
    _m("cb_build_fail_exit", CBUILD, 'status = max(status, 1)\n                text = "FAILED: "', 'status = max(status, 0)\n                text = "FAILED: "', "cuda_build", "a kernel Triton refuses exits 0"),
    _m("ns_no_asan", NSAN, 'SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]', 'SANITIZE = ["-fsanitize=undefined", "-fno-sanitize-recover=all"]', "native_sanitize", "the kernels built without ASan: reads and writes out of bounds go unseen, and the run still prints OK"),
    _m("ns_no_preload", NSAN, '"LD_PRELOAD": ":".join(libs),', '"LD_PRELOAD": "",', "native_sanitize", "the sanitizer runtimes not preloaded: the instrumented kernels cannot load in Python"),
    _m("ns_canary_ignored", NSAN, "    if problems:\n", "    if False:\n", "native_sanitize", "a failed canary ignored: OK printed by a run that could not have found anything"),
    _m("ns_report_kind_unchecked", NSAN, "elif report is not None and (r.returncode == 0 or report not in r.stderr):", "elif report is not None and r.returncode == 0:", "native_sanitize", "any failure counted as the planted bug's report (a runtime that would not load reads as a caught overflow)"),
    _m("ns_exit_unchecked", NSAN, "elif report is not None and (r.returncode == 0 or report not in r.stderr):", "elif report is not None and report not in r.stderr:", "native_sanitize", "a report that does not stop the process counted as caught: the run would go on past a bug"),
    _m("ns_correct_call_unchecked", NSAN, 'if report is None and (r.returncode != 0 or "Sanitizer" in r.stderr):', "if False:", "native_sanitize", "the correct call not checked: a set-up that fails every call passes the canary"),
    _m("ns_instrumented_always", NSAN, "return [name for name, symbol in INSTRUMENTED_BY.items() if symbol not in data]", "return []", "native_sanitize", "the normal build passes for the instrumented one"),
    _m("cb_face_no_reset", CBUILD, "elif expected[0][0] or expected[0][1]:  # the face's episode ended: reset both", "elif False:", "cuda_build", "the interpreted face stepped past its episode's end without the reset"),
)
# fmt: on


def classify(returncode: int, stdout: str) -> str:
    """``caught`` (a test failed: pytest's 1, or 2 when ``-x`` interrupted the xdist workers
    after a failure), ``survived`` (0) or ``error`` (anything else: collection errors, no
    tests, a crash)."""
    failed = any(line.startswith(("FAILED", "ERROR")) for line in stdout.splitlines())
    if returncode == 0:
        return "survived"
    if returncode == 1 or (returncode == 2 and failed):
        return "caught"
    return "error"


def check_patterns(root: Path, mutants: tuple[Mutant, ...] = MUTANTS) -> list[str]:
    """Problems with ``mutants`` against the tree at ``root``: a pattern that does not occur
    exactly once, a change that changes nothing, a Python change that does not compile (its
    collection error would read as a catch), an unknown suite, a repeated id."""
    problems, ids = [], set()
    for m in mutants:
        if m.id in ids:
            problems.append(f"{m.id}: id used twice")
        ids.add(m.id)
        if m.suite not in SUITES:
            problems.append(f"{m.id}: unknown suite {m.suite!r}; known: {sorted(SUITES)}")
        if m.old == m.new:
            problems.append(f"{m.id}: the change changes nothing")
        source = (root / m.path).read_text()
        count = source.count(m.old)
        if count != 1:
            problems.append(f"{m.id}: pattern occurs {count} times in {m.path}, expected once")
        elif m.path.endswith(".py"):
            try:
                compile(source.replace(m.old, m.new, 1), m.path, "exec")
            except SyntaxError as e:
                problems.append(f"{m.id}: the changed {m.path} does not compile: {e.msg}")
    return problems


def run_mutant(
    root: Path,
    m: Mutant,
    workers: int,
    timeout: float,
    test_timeout: float = TEST_TIMEOUT_S,
    tests: tuple[str, ...] | None = None,
) -> dict:
    """Apply ``m`` in the tree at ``root``, run its suite (or ``tests``, when given), restore
    the file; the outcome. ``timeout``: seconds for the whole run; ``test_timeout``: for one
    test (0: none)."""
    needs = SUITE_NEEDS.get(m.suite)
    if needs is not None and importlib.util.find_spec(needs) is None:
        return {"status": "skipped", "seconds": 0.0, "failed": [], "tail": [f"needs {needs}"]}
    tests = SUITES[m.suite] if tests is None else tests
    path = root / m.path
    source = path.read_text()
    path.write_text(source.replace(m.old, m.new, 1))
    start = time.perf_counter()
    try:
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        if test_timeout and importlib.util.find_spec("pytest_timeout"):
            # A mutant that makes a test loop forever (an episode that never ends) fails that
            # test instead of holding the whole mutant to `timeout`.
            cmd.append(f"--timeout={test_timeout:g}")
        if workers > 1:
            cmd += ["-n", str(workers)]
        r = subprocess.run(
            [*cmd, *tests], cwd=root, capture_output=True, text=True, timeout=timeout
        )
        status = classify(r.returncode, r.stdout)
        lines = r.stdout.splitlines()
        failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))][:3]
        tail = lines[-3:] if status == "error" else []
    except subprocess.TimeoutExpired:
        status, failed, tail = "error", [], [f"timed out after {timeout:.0f} s"]
    finally:
        path.write_text(source)
    return {
        "status": status,
        "seconds": round(time.perf_counter() - start, 1),
        "failed": failed,
        **({"tail": tail} if tail else {}),
    }


def clone(repo: Path, into: Path) -> Path:
    """The committed tree of ``repo`` cloned to ``into/repo``, with ``into/shared`` linked to
    ``repo/../shared`` when that exists (the tests' data)."""
    root = into / "repo"
    subprocess.run(["git", "clone", "-q", str(repo), str(root)], check=True)
    shared = repo.parent / "shared"
    if shared.is_dir():
        (into / "shared").symlink_to(shared.resolve())
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="ID", help="these mutants (see --list)")
    p.add_argument("--list", action="store_true", help="print the mutants and exit")
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a mutant may take")
    p.add_argument(
        "--test-timeout",
        type=float,
        default=TEST_TIMEOUT_S,
        help="seconds one test may take (0: no limit)",
    )
    p.add_argument(
        "--tests",
        nargs="+",
        metavar="PATH",
        help="run these test files or node ids instead of each mutant's suite",
    )
    p.add_argument("--out", type=Path, help="a new JSON path (default: experiments/results/)")
    args = p.parse_args(argv)
    tests = tuple(args.tests) if args.tests else None
    if tests:
        # A test id is `file::name`; its file must be in the tree (a typo would run nothing
        # and read as "error" for every mutant).
        missing = [t for t in tests if not (REPO / t.split("::")[0]).exists()]
        if missing:
            p.error(f"--tests: no such file(s) {missing} under {REPO}")

    if args.list:
        for m in MUTANTS:
            print(f"{m.id:30s} {m.suite:7s} {m.path}: {m.breaks}")
        return 0
    chosen = MUTANTS
    if args.only:
        known = {m.id for m in MUTANTS}
        unknown = sorted(set(args.only) - known)
        if unknown:
            p.error(f"unknown mutant(s) {unknown}; --list shows the {len(known)} known")
        chosen = tuple(m for m in MUTANTS if m.id in args.only)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or REPO / "experiments" / "results" / f"mutation_audit-{stamp}.json"
    if out.exists():
        p.error(f"{out} exists: results are never overwritten; give another --out")
    problems = check_patterns(REPO, chosen)
    if problems:
        p.error("the mutants no longer fit the tree:\n  " + "\n  ".join(problems))

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    results: dict[str, dict] = {}
    record = {"commit": commit, "started": stamp, "tests": tests, "mutants": results}
    with tempfile.TemporaryDirectory(prefix="mutation_audit-") as tmp:
        root = clone(REPO, Path(tmp))
        for m in (bar := tqdm(chosen, unit="mutant", file=sys.stderr)):
            bar.set_postfix_str(m.id)
            r = results[m.id] = {
                **asdict(m),
                **run_mutant(root, m, args.workers, args.timeout, args.test_timeout, tests),
            }
            first = r["failed"][0] if r["failed"] else ""
            bar.write(f"{m.id}: {r['status']} in {r['seconds']} s {first}".rstrip())
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record, indent=1) + "\n")  # progress survives a stop

    counts = {
        s: sum(r["status"] == s for r in results.values())
        for s in ("caught", "survived", "error", "skipped")
    }
    width = max(len(i) for i in results)
    for i, r in results.items():
        print(f"{i:{width}s}  {r['status']:8s}  {r['seconds']:6.1f} s  {r['breaks']}")
    skipped = f", {counts['skipped']} skipped (a module missing)" if counts["skipped"] else ""
    print(f"{counts['caught']} caught, {counts['survived']} survived, {counts['error']} errors"
          f"{skipped} of {len(results)} mutants at {commit[:10]} -> {out}")  # fmt: skip
    return 1 if counts["survived"] or counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
