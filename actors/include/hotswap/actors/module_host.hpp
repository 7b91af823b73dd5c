#pragma once

// The worker role: one module_host per environment a node serves. It owns
// the module slots of that environment: loads versions through the loader
// (stage), splits traffic by weight (set_weights), routes invocations to the
// version's handler actors and measures them, and unloads versions without
// losing a request (retire: stop routing, drain, stop the actors, wait for
// their down messages, then dlclose). Every command carries its owner's
// fencing epoch; a lower epoch than the highest seen for that owner is
// refused with errc::fenced. Every command is idempotent. The loaded
// versions and weights are durable (snapshot kind "worker"): a restarted
// node stages them again before anything else.

#include <chrono>
#include <map>
#include <string>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/messages.hpp"
#include "hotswap/actors/module_loader.hpp"
#include "hotswap/actors/worker_types.hpp"
#include "hotswap/module.hpp"
#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/store_actor.hpp"

namespace hotswap {

class node_metrics;

/// The invocation interface alone: what HTTP bridges, other actors and
/// external CAF clients use to call a module.
using module_invoker_actor = caf::typed_actor<
  /// Routes one request to a version of `module` by weight. Errors:
  /// not_found (module not loaded here), unavailable (no version takes
  /// traffic), module_failure (the handler actor died). A module's own
  /// failure answer is a normal result with reply.error set.
  caf::replies_to<sdk::invoke_atom, std::string, sdk::request>::with<invoke_result>>;

using module_host_actor = module_invoker_actor::extend<
  caf::replies_to<stage_atom, stage_command>::with<version_view>,
  caf::replies_to<weights_atom, weights_command>::with<module_view>,
  caf::replies_to<retire_atom, retire_command>::with<ok_atom>,
  caf::replies_to<get_atom>::with<host_view>,
  /// A probe of one loaded version whatever its weight (smoke checks):
  /// (module, version, request). errc::not_found when not loaded here.
  caf::replies_to<probe_atom, std::string, std::string, sdk::request>::with<invoke_result>,
  /// From a version's gateway: an event the module published.
  caf::reacts_to<sdk::publish_atom, std::string, std::string, sdk::event>,
  /// From a version's gateway: a custom metric sample.
  caf::reacts_to<sdk::metric_atom, std::string, std::string, sdk::metric>,
  /// Internal: the drain deadline of (module, version, generation).
  caf::reacts_to<retire_atom, std::string, std::string, uint64_t>,
  /// Internal: claim and restore the worker's durable state (retried).
  caf::reacts_to<restore_atom>>;

struct module_host_env {
  std::string node_id;
  std::string environment;
  bool require_signed = true;          ///< the environment's require_signed_modules
  module_loader_actor loader;
  store_actor store;                   ///< audit events
  node_metrics* metrics = nullptr;     ///< may be null (tests)
  uint32_t instances = 2;              ///< handler actors per version
  std::chrono::milliseconds drain_timeout{10000};
  uint32_t window_seconds = 60;
  std::map<std::string, std::string> settings; ///< module name -> JSON settings
  /// The message queue modules publish to and consume from (invalid: module
  /// publishes and topic subscriptions are refused with a log line).
  message_broker_actor messages;
};

module_host_actor spawn_module_host(caf::actor_system& sys, module_host_env env);

/// Registers the worker's message types (remote CAF clients need them).
void register_worker_types(caf::actor_system_config& cfg);

} // namespace hotswap
