#pragma once

// Tenants as supervised entity actors: one tenant_actor per tenant id, owned
// through the registry at a store-issued fencing epoch, state written (with
// its audit event) before any answer. The tenant_host activates, restarts and
// passivates them.

#include <string>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/entity_host.hpp"
#include "hotswap/actors/tenant_state.hpp"
#include "hotswap/runtime/atoms.hpp"

namespace hotswap {

using tier_atom = caf::atom_constant<caf::atom("tier")>;
using child_atom = caf::atom_constant<caf::atom("child")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using json_atom = caf::atom_constant<caf::atom("json")>;
using reserve_atom = caf::atom_constant<caf::atom("reserve")>;

/// One tenant. errc::not_found for every command but create while the
/// tenant was never written; errc::fenced (and the actor stops) when a newer
/// owner holds it.
using tenant_actor = caf::typed_actor<
  caf::replies_to<get_atom>::with<tenant>,
  /// The tenant as the API shows it (the persisted JSON, no re-serialization).
  caf::replies_to<get_atom, json_atom>::with<std::string>,
  caf::replies_to<create_atom, tenant_spec, request_ctx>::with<tenant>,
  caf::replies_to<update_atom, tenant_patch, request_ctx>::with<tenant>,
  caf::replies_to<status_atom, int32_t, request_ctx>::with<tenant>,
  caf::replies_to<tier_atom, tier_change, request_ctx>::with<tenant>,
  /// Deployment quota: reserve / release for an execution id (idempotent).
  caf::replies_to<reserve_atom, std::string, request_ctx>::with<tenant>,
  caf::replies_to<release_atom, std::string, request_ctx>::with<tenant>,
  caf::reacts_to<tick_atom, uint64_t>>;

/// Spawns (monitored by `host`) the actor owning tenant `id` at `claim.epoch`,
/// starting from `claim.snapshot`.
tenant_actor spawn_tenant(caf::local_actor* host, const std::string& id, const claim_result& claim,
                          const host_env& env);

/// The host: routes each command to its tenant's actor.
using tenant_host_actor = caf::typed_actor<
  caf::replies_to<get_atom, std::string>::with<tenant>,
  caf::replies_to<create_atom, std::string, tenant_spec, request_ctx>::with<tenant>,
  caf::replies_to<update_atom, std::string, tenant_patch, request_ctx>::with<tenant>,
  caf::replies_to<status_atom, std::string, int32_t, request_ctx>::with<tenant>,
  caf::replies_to<tier_atom, std::string, tier_change, request_ctx>::with<tenant>,
  /// (tenant id, execution id, ctx): deployment quota reservation.
  caf::replies_to<reserve_atom, std::string, std::string, request_ctx>::with<tenant>,
  caf::replies_to<release_atom, std::string, std::string, request_ctx>::with<tenant>,
  /// Stops every tenant actor and releases ownership (shutdown).
  caf::replies_to<passivate_atom>::with<ok_atom>,
  caf::replies_to<stats_atom>::with<host_stats>,
  /// The running actor of an existing tenant, activating it (errc::not_found
  /// for a tenant that was never written). The HTTP bridge caches it for reads.
  caf::replies_to<child_atom, std::string>::with<tenant_actor>,
  caf::reacts_to<restart_atom, std::string>,
  /// Self-fencing (directory.hpp): stop every tenant actor / work again.
  caf::reacts_to<fence_atom>,
  caf::reacts_to<unfence_atom>,
  /// Ids of the entities active on this node (ops: one owner per entity).
  caf::replies_to<list_atom>::with<std::vector<std::string>>>;

tenant_host_actor spawn_tenant_host(caf::actor_system& sys, host_env env);

} // namespace hotswap
