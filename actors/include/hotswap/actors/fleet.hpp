#pragma once

// The fleet monitor behind the Clusters API: worker nodes per environment
// from the membership (the registry), their heartbeats, and samples of this
// node's process CPU and memory and of its workers' invocation latency,
// error rate and throughput, recorded every worker.sample_interval_ms.
// It also renews this node's membership heartbeat. Detached: it reads /proc.

#include <chrono>
#include <map>
#include <string>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/directory.hpp"
#include "hotswap/actors/module_host.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/atoms.hpp"

namespace hotswap {

using fleet_actor = caf::typed_actor<
  /// GET /api/v1/clusters: JSON array, one summary per environment.
  caf::replies_to<list_atom>::with<std::string>,
  /// GET /api/v1/clusters/{environment}: JSON detail (canonical env name).
  caf::replies_to<get_atom, std::string>::with<std::string>,
  /// GET /api/v1/clusters/{environment}/metrics: (env, from, to, interval ms).
  caf::replies_to<metrics_atom, std::string, millis, millis, int64_t>::with<std::string>,
  /// This node's identity changed (the ports actually bound at start).
  caf::reacts_to<renew_atom, node_info>,
  caf::reacts_to<tick_atom>>;

struct fleet_env {
  node_info self_node;
  std::string hostname;
  registry_actor registry;
  std::map<std::string, module_host_actor> hosts; ///< this node's workers by environment
  /// The workers of every node (directory.hpp): the detail of an environment
  /// shows each node's loaded versions, not only this node's.
  worker_registry_ptr workers;
  std::chrono::milliseconds node_ttl{3000};
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds sample_interval{5000};
  size_t retention = 17280;                        ///< samples per environment
};

fleet_actor spawn_fleet(caf::actor_system& sys, fleet_env env);

} // namespace hotswap
