#pragma once

// The store interface: one synchronous API, two implementations chosen by the
// URL scheme (sqlite://, postgresql://). Calls block; only store_actor's
// detached workers call them (see store_actor.hpp).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "caf/expected.hpp"

#include "hotswap/runtime/records.hpp"

namespace hotswap {

class store {
public:
  virtual ~store();

  /// Applies every pending schema migration (idempotent). Returns the schema
  /// version after migration.
  virtual caf::expected<int> migrate() = 0;

  /// The schema version currently applied.
  virtual caf::expected<int> schema_version() = 0;

  /// Round-trips to the database.
  virtual caf::expected<void> ping() = 0;

  // -- entities --------------------------------------------------------------

  /// Takes ownership of entity (kind, id) for `node`: increments its epoch
  /// (or creates its row at epoch 1) in one statement and returns the new
  /// epoch with the snapshot as stored. Epochs increase across restarts.
  virtual caf::expected<claim_result> claim(const std::string& kind, const std::string& id,
                                            const std::string& node) = 0;

  /// Writes `snap` (body, status, tenant, unique key) together with `ev` in one
  /// transaction, if and only if the stored epoch equals `snap.epoch`.
  /// Errors: errc::fenced when the stored epoch is higher, errc::not_found
  /// when the entity was never claimed, errc::conflict when `unique_key` is
  /// taken by another entity of the same kind. Returns the new seq.
  virtual caf::expected<int64_t> put(const snapshot_record& snap, const audit_event& ev) = 0;

  /// Clears owner_node if `node` still owns (kind, id) at `epoch`.
  virtual caf::expected<void> release(const std::string& kind, const std::string& id,
                                      const std::string& node, int64_t epoch) = 0;

  /// Reads one snapshot; nullopt when absent or never written.
  virtual caf::expected<std::optional<snapshot_record>> get(const std::string& kind,
                                                            const std::string& id) = 0;

  /// Lists written snapshots, newest first.
  virtual caf::expected<std::vector<snapshot_record>> list(const snapshot_query& q) = 0;

  // -- audit -----------------------------------------------------------------

  /// Appends an audit event that has no entity state attached (logins...).
  virtual caf::expected<int64_t> append_audit(const audit_event& ev) = 0;

  /// Queries audit events, newest first, paginated.
  virtual caf::expected<std::vector<audit_event>> query_audit(const audit_query& q) = 0;

  // -- users -----------------------------------------------------------------

  /// Inserts a user; errc::conflict when the user name is taken
  /// (case-insensitive). Atomic with `ev`.
  virtual caf::expected<void> create_user(const user_record& u, const audit_event& ev) = 0;

  /// Replaces a user's fields; errc::not_found when absent; errc::conflict on a
  /// duplicate user name. Atomic with `ev`.
  virtual caf::expected<void> update_user(const user_record& u, const audit_event& ev) = 0;

  /// Deletes a user; errc::not_found when absent. Atomic with `ev`.
  virtual caf::expected<void> delete_user(const std::string& id, const audit_event& ev) = 0;

  /// Records a login attempt outcome (failed counter and lock) with its audit
  /// event in one transaction.
  virtual caf::expected<void> record_login(const std::string& user_id, int32_t failed_attempts,
                                           millis locked_until, const audit_event& ev) = 0;

  /// Records a wrong password atomically (concurrent failures all count):
  /// increments failed_attempts, and when it reaches `max_attempts` resets it
  /// and sets locked_until = `lock_until`; writes `ev` in the same
  /// transaction. Returns the user's locked_until afterwards. errc::not_found
  /// when absent.
  virtual caf::expected<millis> record_failed_login(const std::string& user_id,
                                                    int32_t max_attempts, millis lock_until,
                                                    const audit_event& ev) = 0;

  virtual caf::expected<std::optional<user_record>> user_by_id(const std::string& id) = 0;
  virtual caf::expected<std::optional<user_record>> user_by_name(const std::string& username) = 0;
  virtual caf::expected<std::vector<user_record>> list_users() = 0;
  virtual caf::expected<int64_t> count_users() = 0;

  // -- module artifacts --------------------------------------------------------

  /// Stores one module version: record and bytes together with `ev`, in one
  /// transaction. Same (name, version) already stored with the same digest:
  /// returns the stored record with created = false and writes nothing (an
  /// idempotent retry). Stored with another digest: errc::conflict (versions
  /// are immutable).
  virtual caf::expected<module_put_result> put_module(const module_record& m,
                                                      const std::string& bytes,
                                                      const audit_event& ev) = 0;

  /// One version's record; nullopt when absent.
  virtual caf::expected<std::optional<module_record>> get_module(const std::string& name,
                                                                 const std::string& version) = 0;

  /// One version's bytes; nullopt when absent.
  virtual caf::expected<std::optional<std::string>> module_bytes(const std::string& name,
                                                                 const std::string& version) = 0;

  /// Records of every version of `name` (empty = of every module), ordered
  /// by name, then upload time (oldest first).
  virtual caf::expected<std::vector<module_record>> list_modules(const std::string& name) = 0;

  // -- signing keys ----------------------------------------------------------

  virtual caf::expected<std::vector<signing_key>> signing_keys() = 0;

  /// Inserts `k` unless a current (non-retired) key already exists; returns
  /// all keys afterwards (so concurrent nodes converge on the same key).
  virtual caf::expected<std::vector<signing_key>> ensure_signing_key(const signing_key& k) = 0;
};

/// Opens a store by URL: `sqlite://PATH` (PATH may be relative; `:memory:`
/// allowed for tests) or `postgresql://...` (any libpq URI). Does not migrate.
caf::expected<std::unique_ptr<store>> open_store(const std::string& url);

/// Milliseconds since the Unix epoch, from the system clock.
millis now_millis();

} // namespace hotswap
