#pragma once

// The cluster glue of a node above the registry (cluster/): where the other
// nodes' actors are, and whether this node may still do entity work.
//
// - node_directory: the entity hosts and workers of any live node. This
//   node's own come from memory; another node's are fetched once from its
//   node_invoker_actor (published on its cluster.listen) over CAF's
//   middleman, then cached. Connections open lazily on first use, through
//   the middleman actor's asynchronous connect (never a blocking call on a
//   scheduler thread), and a failed forward forgets the cached entry. It
//   also keeps the cluster-wide worker_registry current for deployments.
// - membership: the heartbeat that renews this node's liveness in the
//   registry, and self-fencing: when no renewal succeeded for
//   node_ttl - margin on this node's own monotonic clock, every entity host
//   stops its actors (fence_atom) before the lease can expire, and resumes
//   taking work (unfence_atom) once a renewal succeeds again.

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "caf/actor.hpp"
#include "caf/actor_control_block.hpp"
#include "caf/actor_system.hpp"
#include "caf/io/middleman_actor.hpp"
#include "caf/meta/type_name.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/module_host.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap {

/// A node's entity hosts and workers. Untyped pointers so this header does
/// not depend on the hosts' headers; each user casts to the host's typed
/// handle (every node runs the same interfaces).
struct node_hosts {
  std::string node;
  caf::strong_actor_ptr tenants;
  caf::strong_actor_ptr deployments;
  caf::strong_actor_ptr approvals;
  std::map<std::string, caf::strong_actor_ptr> workers; ///< module_host by environment
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_hosts& x) {
  return f(caf::meta::type_name("node_hosts"), x.node, x.tenants, x.deployments, x.approvals,
           x.workers);
}

using node_directory_actor = caf::typed_actor<
  /// The hosts of a live node (errc::unavailable when it is not live or
  /// does not answer).
  caf::replies_to<hosts_atom, std::string>::with<node_hosts>,
  /// A forward to that node failed: drop its cached hosts.
  caf::reacts_to<forget_atom, std::string>,
  /// Refresh the worker registry from the membership.
  caf::reacts_to<tick_atom>,
  /// Refreshes the worker registry now and answers when it is current (a
  /// deployment plans over it; a node that just started must not plan over
  /// a partial view).
  caf::replies_to<nodes_atom>::with<ok_atom>,
  /// This node's own hosts (once they are spawned).
  caf::reacts_to<put_atom, node_hosts>>;

/// The workers of every environment across the cluster, sorted by node id.
/// Deployment actors read it synchronously (a short lock, never I/O); the
/// directory rewrites it when the membership changes.
class worker_registry {
public:
  using list = std::vector<std::pair<std::string, module_host_actor>>;

  list of(const std::string& environment) const {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = map_.find(environment);
    return i == map_.end() ? list{} : i->second;
  }

  void set(std::map<std::string, list> m) {
    std::lock_guard<std::mutex> guard{mtx_};
    map_ = std::move(m);
  }

private:
  mutable std::mutex mtx_;
  std::map<std::string, list> map_;
};

using worker_registry_ptr = std::shared_ptr<worker_registry>;

struct directory_env {
  std::string node_id;
  registry_actor registry;
  node_hosts local;                              ///< this node's own hosts
  worker_registry_ptr workers;
  std::chrono::milliseconds refresh{1000};       ///< worker registry refresh period
  std::chrono::milliseconds call_timeout{2000};  ///< connect + hosts request
  node_metrics* metrics = nullptr;
  /// The actor that opens connections: the middleman's, or the openssl
  /// manager's with cluster TLS. Unset: the middleman's.
  caf::io::middleman_actor mm;
};

node_directory_actor spawn_node_directory(caf::actor_system& sys, directory_env env);

using membership_actor = caf::typed_actor<
  caf::reacts_to<tick_atom>,
  /// This node's identity changed (ports actually bound at start).
  caf::reacts_to<renew_atom, node_info>,
  /// Leaves the membership (graceful shutdown): no more heartbeats.
  caf::replies_to<leave_atom>::with<ok_atom>,
  /// True while this node is self-fenced.
  caf::replies_to<status_atom>::with<bool>>;

struct membership_env {
  node_info self_node;
  registry_actor registry;
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds node_ttl{3000};
  /// Self-fence this long before the lease could expire.
  std::chrono::milliseconds margin{500};
  /// Told fence_atom / unfence_atom (the entity hosts).
  std::vector<caf::actor> listeners;
  node_metrics* metrics = nullptr;
};

membership_actor spawn_membership(caf::actor_system& sys, membership_env env);

} // namespace hotswap
