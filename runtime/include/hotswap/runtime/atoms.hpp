#pragma once

// Message tags shared across the tree (at most 10 characters each, CAF 0.17).
// CAF's own get_atom, put_atom, delete_atom, ok_atom and ping_atom are reused.

#include "caf/atom.hpp"

namespace hotswap {

using caf::delete_atom;
using caf::get_atom;
using caf::ok_atom;
using caf::ping_atom;
using caf::put_atom;

using claim_atom = caf::atom_constant<caf::atom("claim")>;
using release_atom = caf::atom_constant<caf::atom("release")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using audit_atom = caf::atom_constant<caf::atom("audit")>;
using user_atom = caf::atom_constant<caf::atom("user")>;
using create_atom = caf::atom_constant<caf::atom("create")>;
using update_atom = caf::atom_constant<caf::atom("update")>;
using login_atom = caf::atom_constant<caf::atom("login")>;
using failed_atom = caf::atom_constant<caf::atom("failed")>;
using name_atom = caf::atom_constant<caf::atom("name")>;
using count_atom = caf::atom_constant<caf::atom("count")>;
using key_atom = caf::atom_constant<caf::atom("key")>;
using owner_atom = caf::atom_constant<caf::atom("owner")>;
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;
using renew_atom = caf::atom_constant<caf::atom("renew")>;
using passivate_atom = caf::atom_constant<caf::atom("passivate")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using command_atom = caf::atom_constant<caf::atom("command")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using module_atom = caf::atom_constant<caf::atom("module")>;
using blob_atom = caf::atom_constant<caf::atom("blob")>;
using stage_atom = caf::atom_constant<caf::atom("stage")>;
using weights_atom = caf::atom_constant<caf::atom("weights")>;
using retire_atom = caf::atom_constant<caf::atom("retire")>;
using load_atom = caf::atom_constant<caf::atom("load")>;
using unload_atom = caf::atom_constant<caf::atom("unload")>;
using sample_atom = caf::atom_constant<caf::atom("sample")>;
using metrics_atom = caf::atom_constant<caf::atom("metrics")>;
using probe_atom = caf::atom_constant<caf::atom("probe")>;
using resume_atom = caf::atom_constant<caf::atom("resume")>;
using rollback_atom = caf::atom_constant<caf::atom("rollback")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using run_atom = caf::atom_constant<caf::atom("run")>;
using restore_atom = caf::atom_constant<caf::atom("restore")>;
/// Cluster membership: a node leaves gracefully / nodes that left.
using leave_atom = caf::atom_constant<caf::atom("leave")>;
using left_atom = caf::atom_constant<caf::atom("left")>;
/// Self-fencing: stop / allow entity work (lease lost / regained).
using fence_atom = caf::atom_constant<caf::atom("fence")>;
using unfence_atom = caf::atom_constant<caf::atom("unfence")>;
/// Cluster directory: the entity hosts and workers of a node.
using hosts_atom = caf::atom_constant<caf::atom("hosts")>;
using forget_atom = caf::atom_constant<caf::atom("forget")>;
using adopt_atom = caf::atom_constant<caf::atom("adopt")>;
using take_atom = caf::atom_constant<caf::atom("take")>; ///< a rate limit token (shared_limiter)

} // namespace hotswap
