#pragma once

// Messages of the worker role: commands to a module_host (each carries the
// owner that issued it and that owner's fencing epoch), its views, and the
// loaded library handed between the loader and the host.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "caf/allowed_unsafe_message_type.hpp"
#include "caf/meta/type_name.hpp"

#include "hotswap/module.hpp"
#include "hotswap/runtime/records.hpp"

namespace hotswap {

/// Who issues a worker command: a deployment (its execution id) or an
/// operator ("operator"), with the epoch of its current owner. A host refuses
/// an epoch lower than the highest it has seen for the same `owner`.
struct command_origin {
  std::string owner;
  int64_t epoch = 0;
  std::string actor_user;  ///< for the audit log ("system" for the node)
  std::string trace_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, command_origin& x) {
  return f(caf::meta::type_name("command_origin"), x.owner, x.epoch, x.actor_user, x.trace_id);
}

/// stage: fetch, verify, load and self-check one version. `weight` < 0 means
/// "100 when no other version of the module carries traffic, else 0".
struct stage_command {
  std::string module;
  std::string version;
  int32_t weight = -1;
  command_origin origin;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stage_command& x) {
  return f(caf::meta::type_name("stage_command"), x.module, x.version, x.weight, x.origin);
}

/// set_weights: the traffic split between loaded versions (unlisted -> 0).
struct weights_command {
  std::string module;
  std::map<std::string, uint32_t> weights;
  command_origin origin;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, weights_command& x) {
  return f(caf::meta::type_name("weights_command"), x.module, x.weights, x.origin);
}

/// retire: stop routing, drain, stop the version's actors, dlclose.
struct retire_command {
  std::string module;
  std::string version;
  command_origin origin;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, retire_command& x) {
  return f(caf::meta::type_name("retire_command"), x.module, x.version, x.origin);
}

/// The answer to one invocation: which version answered, and what.
struct invoke_result {
  std::string module;
  std::string version;
  sdk::reply reply;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, invoke_result& x) {
  return f(caf::meta::type_name("invoke_result"), x.module, x.version, x.reply);
}

/// One loaded version as the host sees it.
struct version_view {
  std::string version;
  uint32_t weight = 0;
  std::string state;           ///< "Active" | "Draining"
  uint64_t in_flight = 0;
  uint64_t invocations = 0;    ///< in the metrics window
  uint64_t errors = 0;
  double error_rate = 0;
  double per_second = 0;
  double p50_ms = 0;
  double p95_ms = 0;
  double p99_ms = 0;
  uint64_t total_invocations = 0; ///< since loaded
  uint64_t total_errors = 0;
  std::string digest;
  bool is_signed = false;
  millis loaded_at = 0;
  std::map<std::string, double> custom; ///< metrics the module reported
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, version_view& x) {
  return f(caf::meta::type_name("version_view"), x.version, x.weight, x.state, x.in_flight,
           x.invocations, x.errors, x.error_rate, x.per_second, x.p50_ms, x.p95_ms, x.p99_ms,
           x.total_invocations, x.total_errors, x.digest, x.is_signed, x.loaded_at, x.custom);
}

struct module_view {
  std::string name;
  std::vector<version_view> versions;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, module_view& x) {
  return f(caf::meta::type_name("module_view"), x.name, x.versions);
}

/// Everything one host (one environment of one node) serves.
struct host_view {
  std::string node;
  std::string environment;
  std::vector<module_view> modules;
  uint64_t invocations = 0;    ///< in the metrics window, all versions
  uint64_t errors = 0;
  double per_second = 0;
  double mean_ms = 0;          ///< weighted by invocations
  double p95_ms = 0;           ///< the worst version's p95
  uint64_t loaded_libraries = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, host_view& x) {
  return f(caf::meta::type_name("host_view"), x.node, x.environment, x.modules, x.invocations,
           x.errors, x.per_second, x.mean_ms, x.p95_ms, x.loaded_libraries);
}

/// What the loader is asked to load.
struct load_request {
  std::string module;
  std::string version;
  std::string environment;
  bool require_signed = true;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, load_request& x) {
  return f(caf::meta::type_name("load_request"), x.module, x.version, x.environment,
           x.require_signed);
}

/// A library the loader opened (or, in unit tests, an in-process module
/// definition with no handle). The loader alone opens and closes handles;
/// handler actors hold a reference so the loader can tell when the last
/// actor object is gone.
struct loaded_library {
  void* handle = nullptr;                      ///< dlopen handle; null for in-process
  const sdk::module_definition* def = nullptr;
  std::string path;
  module_record record;
  std::string environment;
};

using library_ptr = std::shared_ptr<loaded_library>;

} // namespace hotswap

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hotswap::library_ptr)
