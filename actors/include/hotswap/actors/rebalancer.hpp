#pragma once

// The rebalancer: every node periodically looks in the store for
// non-terminal deployments and pending approvals whose owner is not live
// (it died, left, or released them) and adopts its share of them, chosen by
// rendezvous hashing over the live control nodes so survivors split the work
// without a stampede. Entities this node owns in the store but does not run
// (after a restart or a self-fence) are adopted back. Adoption goes through
// the host's normal activation: registry claim, then a store-issued epoch;
// adopted deployments resume at their persisted step, approvals re-arm their
// absolute deadline.
//
// A node that vanished without leaving counts as dead only after it has been
// missing for `grace` (a registry that lost its data shows every node
// missing until the next heartbeats); a node that left is adopted from at once.

#include <chrono>
#include <string>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/approval.hpp"
#include "hotswap/actors/deployment.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/store_actor.hpp"

namespace hotswap {

using rebalancer_actor = caf::typed_actor<caf::reacts_to<tick_atom>>;

struct rebalancer_env {
  std::string node_id;
  registry_actor registry;
  store_actor store;
  deployment_host_actor deployments;
  approval_host_actor approvals;
  std::chrono::milliseconds interval{500};
  std::chrono::milliseconds grace{1000};
  std::chrono::milliseconds call_timeout{5000};
};

/// Which live node adopts (kind, id): the highest rendezvous score.
std::string rendezvous_owner(const std::vector<std::string>& nodes, const std::string& kind,
                             const std::string& id);

rebalancer_actor spawn_rebalancer(caf::actor_system& sys, rebalancer_env env);

} // namespace hotswap
