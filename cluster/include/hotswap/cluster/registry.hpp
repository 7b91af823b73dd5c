#pragma once

// Single ownership: the registry decides which node may own an entity
// (liveness and routing). It does NOT issue fencing epochs: those come from
// the store that enforces them (store::claim). Implementations are chosen by
// name from `cluster.registry`: "local" (one node, in process) or
// "redis://host:port/db" (a cluster; redis_registry.hpp).

#include <string>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/meta/type_name.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/records.hpp"

namespace hotswap {

/// What the registry knows about one live node.
struct node_info {
  std::string id;
  std::string http_endpoint;
  std::string caf_endpoint;
  std::vector<std::string> roles;
  std::vector<std::string> environments;
  millis last_heartbeat = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_info& x) {
  return f(caf::meta::type_name("node_info"), x.id, x.http_endpoint, x.caf_endpoint, x.roles,
           x.environments, x.last_heartbeat);
}

/// The answer to a claim: whether `node` now owns the entity, and the owner.
struct claim_outcome {
  bool granted = false;
  std::string owner;
  /// Set when the claim took the entity over from a node that is no longer
  /// live (its lease expired without a release): the new owner waits out one
  /// TTL plus a margin before its first side effect. Empty when the entity
  /// was unowned (new, or released on passivation) or already ours.
  std::string previous;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, claim_outcome& x) {
  return f(caf::meta::type_name("claim_outcome"), x.granted, x.owner, x.previous);
}

using registry_actor = caf::typed_actor<
  /// Claims (kind, id) for node: granted when unowned, owned by a node that
  /// is no longer live, or already owned by `node`; never granted to a node
  /// that is not live itself.
  caf::replies_to<claim_atom, std::string, std::string, std::string>::with<claim_outcome>,
  /// Renews `node`'s liveness (the heartbeat). When the node's liveness key
  /// had vanished (the registry lost its data), the node's owned entities
  /// are re-asserted where nobody else took them.
  caf::replies_to<renew_atom, node_info>::with<ok_atom>,
  /// Releases (kind, id) if `node` owns it.
  caf::replies_to<release_atom, std::string, std::string, std::string>::with<ok_atom>,
  /// The owner of (kind, id), or an empty string.
  caf::replies_to<owner_atom, std::string, std::string>::with<std::string>,
  /// Live nodes.
  caf::replies_to<nodes_atom>::with<std::vector<node_info>>,
  /// `node` leaves the membership gracefully (shutdown): its liveness key
  /// goes at once and it is listed by left_atom for a while, so other nodes
  /// adopt its entities without waiting for the TTL.
  caf::replies_to<leave_atom, std::string>::with<ok_atom>,
  /// Nodes that left gracefully recently.
  caf::replies_to<left_atom>::with<std::vector<std::string>>,
  caf::replies_to<ping_atom>::with<ok_atom>>;

/// The in-process registry of a single node: `self_node` is the only live
/// node; ownership is a map. Epochs still come from the store, so they
/// increase across restarts.
registry_actor spawn_local_registry(caf::actor_system& sys, node_info self_node);

} // namespace hotswap
