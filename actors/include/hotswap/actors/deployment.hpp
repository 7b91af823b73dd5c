#pragma once

// Deployments: one supervised entity actor per execution id (kind
// "deployment"), owned through the registry at a store-issued epoch. The
// actor runs its plan (deployment_state.hpp) against the environment's
// workers: every transition — "step k started", "step k done", stage and
// status changes — is persisted with its audit event before it is acted on,
// so a restarted or adopted deployment resumes at its persisted step and
// re-sends the started step (worker commands are idempotent and carry the
// epoch). The host bounds how many run per node and queues the rest
// durably (status Pending).

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/approval.hpp"
#include "hotswap/actors/entity_host.hpp"
#include "hotswap/actors/module_host.hpp"
#include "hotswap/actors/tenant.hpp"
#include "hotswap/config/config.hpp"
#include "hotswap/runtime/atoms.hpp"

namespace hotswap {

using deployment_actor = caf::typed_actor<
  /// Creates the deployment from its prepared record (JSON of
  /// deploy::deployment); answers the view JSON once it is durable. A
  /// repeated create (same id) answers the existing view.
  caf::replies_to<create_atom, std::string, request_ctx>::with<std::string>,
  /// The current view JSON.
  caf::replies_to<get_atom>::with<std::string>,
  /// Rolls back a finished deployment: {rollbackId, status, nodesAffected}.
  caf::replies_to<rollback_atom, request_ctx>::with<std::string>,
  /// Cancels a pending or running deployment (rolling back what it changed).
  caf::replies_to<cancel_atom, request_ctx>::with<std::string>,
  /// Its approval was decided or expired.
  caf::reacts_to<decided_atom, approval>,
  /// Continue work (after activation, approval, or a run slot).
  caf::reacts_to<resume_atom>,
  /// Timers: analysis windows, holds (generation guards against stale ones).
  caf::reacts_to<tick_atom, uint64_t>>;

using deployment_host_actor = caf::typed_actor<
  caf::replies_to<create_atom, std::string, std::string, request_ctx>::with<std::string>,
  caf::replies_to<rollback_atom, std::string, request_ctx>::with<std::string>,
  caf::replies_to<cancel_atom, std::string, request_ctx>::with<std::string>,
  /// Activates a deployment so it resumes its work (node start, adoption).
  caf::reacts_to<resume_atom, std::string>,
  /// From a child: it reached a terminal state (frees its run slot).
  caf::reacts_to<done_atom, std::string>,
  /// From a child: may it run now? (true = yes; false = queued as Pending)
  caf::replies_to<run_atom, std::string>::with<bool>,
  /// Approval decisions (the approval host's listener).
  caf::reacts_to<decided_atom, std::string, approval>,
  caf::replies_to<passivate_atom>::with<ok_atom>,
  caf::replies_to<stats_atom>::with<host_stats>,
  caf::reacts_to<restart_atom, std::string>,
  /// Activates a deployment that is active nowhere (the rebalancer adopting
  /// an orphan; true: it was another node's) so it resumes; ignored when it
  /// is active here.
  caf::reacts_to<adopt_atom, std::string, bool>,
  /// Self-fencing (directory.hpp): stop every deployment actor / work again.
  caf::reacts_to<fence_atom>,
  caf::reacts_to<unfence_atom>,
  /// Ids of the entities active on this node (ops: one owner per entity).
  caf::replies_to<list_atom>::with<std::vector<std::string>>>;

struct deployment_env {
  host_env host;
  std::shared_ptr<const config::node_config> cfg;
  /// The workers of each environment across the cluster (node id,
  /// module_host), sorted by node id.
  worker_registry_ptr workers;
  approval_host_actor approvals;
  tenant_host_actor tenants;
};

deployment_host_actor spawn_deployment_host(caf::actor_system& sys, deployment_env env);

} // namespace hotswap
