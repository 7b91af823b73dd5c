#pragma once

// The store as an actor: a round-robin pool of detached workers, each owning
// one connection (store.hpp). Blocking calls never run on scheduler threads.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/expected.hpp"
#include "caf/typed_actor.hpp"
#include "caf/replies_to.hpp"

#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/records.hpp"
#include "hotswap/runtime/store.hpp"

namespace hotswap {

class node_metrics;

using store_actor = caf::typed_actor<
  caf::replies_to<ping_atom>::with<ok_atom>,
  caf::replies_to<claim_atom, std::string, std::string, std::string>::with<claim_result>,
  caf::replies_to<put_atom, snapshot_record, audit_event>::with<int64_t>,
  caf::replies_to<release_atom, std::string, std::string, std::string, int64_t>::with<ok_atom>,
  // errc::not_found when absent
  caf::replies_to<get_atom, std::string, std::string>::with<snapshot_record>,
  caf::replies_to<list_atom, snapshot_query>::with<std::vector<snapshot_record>>,
  caf::replies_to<audit_atom, audit_event>::with<int64_t>,
  caf::replies_to<audit_atom, audit_query>::with<std::vector<audit_event>>,
  caf::replies_to<user_atom, create_atom, user_record, audit_event>::with<ok_atom>,
  caf::replies_to<user_atom, update_atom, user_record, audit_event>::with<ok_atom>,
  caf::replies_to<user_atom, delete_atom, std::string, audit_event>::with<ok_atom>,
  caf::replies_to<user_atom, login_atom, std::string, int32_t, millis, audit_event>::with<ok_atom>,
  // a wrong password: (user id, max attempts, lock until, event) -> locked_until afterwards
  caf::replies_to<user_atom, failed_atom, std::string, int32_t, millis, audit_event>::with<millis>,
  // errc::not_found when absent
  caf::replies_to<user_atom, get_atom, std::string>::with<user_record>,
  caf::replies_to<user_atom, name_atom, std::string>::with<user_record>,
  caf::replies_to<user_atom, list_atom>::with<std::vector<user_record>>,
  caf::replies_to<user_atom, count_atom>::with<int64_t>,
  caf::replies_to<key_atom, get_atom>::with<std::vector<signing_key>>,
  caf::replies_to<key_atom, put_atom, signing_key>::with<std::vector<signing_key>>,
  // module artifacts: (record, bytes, event); errc::conflict on other bytes
  caf::replies_to<module_atom, put_atom, module_record, std::string, audit_event>::with<
    module_put_result>,
  // errc::not_found when absent
  caf::replies_to<module_atom, get_atom, std::string, std::string>::with<module_record>,
  // the bytes; errc::not_found when absent
  caf::replies_to<module_atom, blob_atom, std::string, std::string>::with<std::string>,
  // every version of one module ("" = all modules)
  caf::replies_to<module_atom, list_atom, std::string>::with<std::vector<module_record>>>;

/// Spawns one store worker that owns `db`. With `detached` false the worker
/// runs on the scheduler: only for tests on the deterministic coordinator.
/// `metrics` may be null.
store_actor spawn_store_worker(caf::actor_system& sys, std::unique_ptr<store> db,
                               node_metrics* metrics, bool detached = true);

/// Opens `workers` connections to `url`, applies migrations once, and spawns
/// a round-robin pool of detached workers. Blocks while connecting: call it
/// at start-up from main, never from an actor.
caf::expected<store_actor> spawn_store_pool(caf::actor_system& sys, const std::string& url,
                                            size_t workers, node_metrics* metrics);

} // namespace hotswap
