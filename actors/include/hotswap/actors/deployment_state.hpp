#pragma once

// The decisions of a deployment as pure functions (no CAF, no clock, no I/O):
// request validation, the four plan builders, canary analysis, and the
// durable record with its JSON form. deployment.cpp keeps its handlers thin
// over these; tests/actors/deployment_state_test.cpp exercises them directly.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "hotswap/runtime/records.hpp"

namespace hotswap::deploy {

using field_errors = std::map<std::string, std::vector<std::string>>;

// -- strategies -------------------------------------------------------------------

enum class strategy_kind : int32_t { direct = 0, rolling = 1, blue_green = 2, canary = 3 };

/// "Direct", "Rolling", "BlueGreen", "Canary".
std::string to_string(strategy_kind s);

/// Case-insensitive name ("BlueGreen" or "Blue-Green" too) or legacy integer
/// text "0".."3"; false when unknown.
bool parse_strategy(const std::string& text, strategy_kind& out);

/// Canary parameters (defaults from the environment's config).
struct canary_settings {
  std::vector<uint32_t> steps{10, 30, 50, 100};
  uint32_t step_seconds = 30;
  uint32_t max_error_rate_increase_percent = 50;
  uint32_t max_latency_increase_percent = 100;
  uint32_t min_samples = 50;
  std::string inconclusive = "fail";  ///< fail | extend
};

// -- the request ---------------------------------------------------------------------

/// A validated POST /api/v1/deployments body.
struct deployment_request {
  std::string module_name;
  std::string version;
  std::string environment;           ///< canonical name
  std::string requester_email;
  std::string description;
  bool require_approval = false;
  std::map<std::string, std::string> metadata;
  bool has_strategy = false;
  strategy_kind strategy = strategy_kind::direct;
  bool has_canary = false;
  canary_settings canary;            ///< only the fields present in the body override
  bool canary_has_steps = false;
  bool canary_has_step_seconds = false;
  bool canary_has_error = false;
  bool canary_has_latency = false;
  bool canary_has_min_samples = false;
};

/// Parses and validates a request body; every violation is reported (field
/// names as in the contract: moduleName, version, targetEnvironment, ...).
/// Environment: a name (case-insensitive) or a JSON number 0-3.
deployment_request parse_request(const std::string& json_body, field_errors& errors);

/// Merges the request's canary overrides into the environment's defaults,
/// within bounds (steps strictly increasing, 1..100, ending at 100;
/// step_seconds 1..3600; percentages 1..1000; min_samples 1..100000).
/// Returns the effective settings; violations go to `errors`.
canary_settings effective_canary(const canary_settings& env_defaults,
                                 const deployment_request& req, field_errors& errors);

// -- plans -----------------------------------------------------------------------------

enum class step_kind : int32_t {
  stage = 0,      ///< load `version` on `nodes` (weight 0 unless it is the first version)
  weights = 1,    ///< set absolute `weights` on `nodes`
  retire = 2,     ///< retire `version` on `nodes`
  smoke = 3,      ///< probe invocations of `version` on `nodes` must succeed
  analyze = 4,    ///< canary gate: hold `hold_seconds`, compare `version` against `baseline`
  hold = 5,       ///< wait `hold_seconds` (blue-green keeps blue loaded)
  verify = 6,     ///< probe invocations through the normal route must succeed
};

std::string to_string(step_kind k);

struct step {
  step_kind kind = step_kind::stage;
  std::vector<std::string> nodes;            ///< worker node ids the step acts on
  std::string version;                       ///< stage/retire/smoke/analyze: which version
  std::string baseline;                      ///< analyze: the version compared against
  std::map<std::string, uint32_t> weights;   ///< weights: absolute weights per version
  uint32_t hold_seconds = 0;                 ///< analyze/hold
  uint32_t percent = 0;                      ///< canary traffic share of this step (0-100)
  std::string label;                         ///< human-readable ("switch 100% to 2.0.0 on node-1")
};

struct plan_input {
  strategy_kind strategy = strategy_kind::direct;
  std::string module;
  std::string version;
  std::string previous;                      ///< version live before; empty = none
  std::vector<std::string> nodes;            ///< the environment's worker nodes, sorted
  uint32_t batch_size = 2;                   ///< rolling
  uint32_t keep_seconds = 300;               ///< blue-green: how long blue stays loaded
  canary_settings canary;
};

/// The plan of a strategy. Every step is idempotent (stage of a loaded
/// version, absolute weights, retire of a retired version are no-ops).
///   Direct:    stage(all) -> weights new=100 (all) -> verify -> retire previous
///   Rolling:   per batch: stage -> weights new=100 -> verify; then retire previous (all)
///   BlueGreen: stage(all, 0 %) -> smoke -> weights new=100 (all, one step) -> verify
///              -> hold keep_seconds -> retire previous
///   Canary:    stage(all, 0 %) -> for each step p < 100: weights {new:p, prev:100-p} ->
///              analyze (hold step_seconds); then weights new=100 -> verify -> retire previous
/// Without a previous version, canary and blue-green degrade to stage ->
/// smoke -> weights 100 -> verify (there is no baseline to compare against).
std::vector<step> build_plan(const plan_input& in);

/// The rollback of a plan of which steps [0, applied) took effect (the
/// failing step included when it started): restore the previous version at
/// 100 % on every node the plan touched (or, without a previous version,
/// retire the new version there), then retire the new version. Also a plan,
/// resumable like any other.
std::vector<step> build_rollback(const plan_input& in, const std::vector<step>& plan,
                                 size_t applied);

// -- canary analysis ---------------------------------------------------------------------

/// What the workers measured for one version during an analysis window.
struct version_sample {
  uint64_t invocations = 0;
  uint64_t errors = 0;
  double p95_ms = 0;
};

enum class verdict : int32_t { pass = 0, fail = 1, wait = 2 };

struct analysis {
  verdict result = verdict::wait;
  std::string reason;
};

/// Compares the canary against the baseline on the same nodes.
/// - fewer than min_samples canary invocations: wait while the window (and,
///   with inconclusive = "extend", up to 3 more windows) has not elapsed,
///   else fail as inconclusive;
/// - error rate: fail when canary rate > baseline rate x (1 + max%/100) + 1
///   percentage point (so 0 % vs 0.5 % is no failure, and a zero baseline
///   never divides);
/// - p95 latency: fail when canary p95 > baseline p95 x (1 + max%/100) + 1 ms;
///   skipped when the baseline has fewer than min_samples (nothing to compare);
/// - otherwise pass once the window elapsed, wait before.
/// `windows_elapsed` counts whole analysis windows since the step began.
analysis analyze(const version_sample& baseline, const version_sample& canary,
                 const canary_settings& s, uint32_t windows_elapsed);

// -- the record -----------------------------------------------------------------------------

/// A stage of the contract's view.
struct stage_view {
  std::string name;                          ///< Approval, Security Scan, Deploy to X, Validation
  std::string status = "Pending";            ///< Pending Running Succeeded Failed Skipped WaitingForApproval
  millis start = 0;
  millis end = 0;
  std::string strategy;
  int32_t nodes_deployed = 0;
  int32_t nodes_failed = 0;
  std::string message;
  int32_t progress = 0;                      ///< 0-100
};

/// The one durable record of a deployment (the snapshot body).
struct deployment {
  std::string execution_id;
  std::string module_name;
  std::string version;
  std::string environment;
  strategy_kind strategy = strategy_kind::direct;
  std::string status = "Pending";            ///< Pending PendingApproval Running Succeeded Failed RollingBack RolledBack Cancelled
  millis start = 0;
  millis end = 0;
  std::string requester_email;
  std::string requested_by;                  ///< user name from the token
  std::string requested_by_id;               ///< user id from the token
  std::string tenant_id;
  std::string description;
  std::map<std::string, std::string> metadata;
  std::string trace_id;
  std::string idempotency_key;
  bool needs_approval = false;
  canary_settings canary;
  plan_input input;                          ///< what the plan was built from
  std::vector<step> plan;
  int32_t cursor = 0;                        ///< next step of `plan` to run
  bool step_started = false;                 ///< plan[cursor] was sent (re-send on resume)
  millis step_started_at = 0;
  std::vector<step> rollback;                ///< empty until a rollback starts
  int32_t rollback_cursor = 0;
  bool rollback_started = false;
  std::string rollback_reason;               ///< why (failure message or "requested by X")
  std::string rollback_outcome;              ///< status once the rollback is done: Failed | RolledBack | Cancelled
  std::string rollback_id;
  std::vector<stage_view> stages;
  std::string message;                       ///< last failure or outcome message
  bool quota_reserved = false;
};

/// Stage names of a deployment to `environment`, with Approval first when needed.
std::vector<stage_view> initial_stages(const std::string& environment, bool needs_approval,
                                       strategy_kind s);

/// Terminal statuses: Succeeded, Failed, RolledBack, Cancelled.
bool is_terminal(const std::string& status);

/// The contract's GET body (executionId, ..., stages, traceId).
std::string to_view_json(const deployment& d);

/// The list item ({executionId, moduleName, version, targetEnvironment, status, startTime, duration}).
std::string to_list_json(const deployment& d);

/// Full persisted form (round-trips every field).
std::string to_json(const deployment& d);
bool from_json(const std::string& text, deployment& out);

/// ISO 8601 duration ("PT1M30.5S") of `ms` milliseconds.
std::string iso_duration(millis ms);

} // namespace hotswap::deploy
