#pragma once

// Approvals: one supervised entity actor per deployment that needs one
// (kind "approval", id = the deployment's execution id), owned like tenants
// through the registry at a store-issued epoch, every transition persisted
// with its audit event before it is answered. The absolute deadline is part
// of the snapshot, so expiry survives restarts (the actor re-arms its timer
// on activation). A decided or expired approval stops: it holds no memory
// beyond its snapshot. The host tells its listener (the deployment host)
// about every decision and expiry.

#include <string>

#include "caf/actor_system.hpp"
#include "caf/meta/type_name.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/entity_host.hpp"
#include "hotswap/actors/tenant.hpp"
#include "hotswap/runtime/atoms.hpp"

namespace hotswap {

using decide_atom = caf::atom_constant<caf::atom("decide")>;
using decided_atom = caf::atom_constant<caf::atom("decided")>;
using expire_atom = caf::atom_constant<caf::atom("expire")>;
using listen_atom = caf::atom_constant<caf::atom("listen")>;

/// The durable state of one approval (also its message type).
struct approval {
  std::string approval_id;          ///< uuid
  std::string execution_id;         ///< the deployment
  std::string module_name;
  std::string version;
  std::string environment;
  std::string requester_email;
  std::string requested_by;         ///< user name of who created the deployment
  std::string requested_by_id;      ///< their user id (separation of duties)
  std::string tenant_id;
  std::string status = "Pending";   ///< Pending | Approved | Rejected | Expired
  millis requested_at = 0;
  millis timeout_at = 0;            ///< absolute deadline
  millis responded_at = 0;
  std::string responded_by;         ///< user name from the token
  std::string approver_email;       ///< informational, from the body
  std::string response_reason;
  bool separation_of_duties = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, approval& x) {
  return f(caf::meta::type_name("approval"), x.approval_id, x.execution_id, x.module_name,
           x.version, x.environment, x.requester_email, x.requested_by, x.requested_by_id,
           x.tenant_id, x.status, x.requested_at, x.timeout_at, x.responded_at, x.responded_by,
           x.approver_email, x.response_reason, x.separation_of_duties);
}

/// An approve or reject command; the approver comes from the token.
struct approval_decision {
  bool approve = true;
  std::string user_id;
  std::string username;
  std::string approver_email;       ///< from the body, informational
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, approval_decision& x) {
  return f(caf::meta::type_name("approval_decision"), x.approve, x.user_id, x.username,
           x.approver_email, x.reason);
}

// -- pure decisions (approval_state.cpp) ---------------------------------------------------

/// The result of applying a command: refused (with the errc and reason),
/// unchanged, or changed to `next` with the audit `action`.
struct approval_transition {
  enum kind_t { refused, unchanged, changed } kind = unchanged;
  errc code = errc::none;
  std::string reason;
  approval next;
  std::string action;               ///< ApprovalGranted, ApprovalRejected, ApprovalExpired
};

/// Approve or reject at `now`: conflict when not Pending or past the
/// deadline (then the caller expires it), forbidden when separation of
/// duties is on and the approver is the requester.
approval_transition decide(const approval& a, const approval_decision& d, millis now);

/// Expires a Pending approval whose deadline passed; unchanged otherwise.
approval_transition expire(const approval& a, millis now);

/// "{D}d {H}h", "{H}h {M}m", "{M}m" or "Expired".
std::string time_remaining(millis now, millis timeout_at);

/// GET /api/v1/approvals/deployments/{id} body.
std::string to_view_json(const approval& a);

/// One item of GET /api/v1/approvals/pending (with timeRemaining at `now`).
std::string to_pending_json(const approval& a, millis now);

/// Persisted form; round-trips every field.
std::string to_json(const approval& a);
bool from_json(const std::string& text, approval& out);

// -- actors -------------------------------------------------------------------------------------

/// Who hears about decisions: (decided_atom, execution id, approval).
using approval_listener = caf::typed_actor<caf::reacts_to<decided_atom, std::string, approval>>;

using approval_actor = caf::typed_actor<
  /// Creates the approval (idempotent: an existing one is returned as is).
  caf::replies_to<create_atom, approval, request_ctx>::with<approval>,
  caf::replies_to<get_atom>::with<approval>,
  caf::replies_to<decide_atom, approval_decision, request_ctx>::with<approval>,
  /// The deadline timer.
  caf::reacts_to<expire_atom>>;

using approval_host_actor = caf::typed_actor<
  caf::replies_to<create_atom, std::string, approval, request_ctx>::with<approval>,
  /// errc::not_found when there is no approval for the deployment.
  caf::replies_to<get_atom, std::string>::with<approval>,
  caf::replies_to<decide_atom, std::string, approval_decision, request_ctx>::with<approval>,
  /// Sets the listener (the deployment host, spawned after this host).
  caf::reacts_to<listen_atom, approval_listener>,
  /// Activates the approval so its deadline timer runs (resume at start).
  caf::reacts_to<expire_atom, std::string>,
  caf::replies_to<passivate_atom>::with<ok_atom>,
  caf::replies_to<stats_atom>::with<host_stats>,
  caf::reacts_to<restart_atom, std::string>,
  /// From a child: a decision or expiry to pass on to the listener.
  caf::reacts_to<decided_atom, std::string, approval>,
  /// The rebalancer adopts an orphaned approval (true: it was another
  /// node's); ignored when it is active here.
  caf::reacts_to<adopt_atom, std::string, bool>,
  /// Self-fencing (directory.hpp): stop every approval actor / work again.
  caf::reacts_to<fence_atom>,
  caf::reacts_to<unfence_atom>,
  /// Ids of the entities active on this node (ops: one owner per entity).
  caf::replies_to<list_atom>::with<std::vector<std::string>>>;

approval_host_actor spawn_approval_host(caf::actor_system& sys, host_env env);

} // namespace hotswap
