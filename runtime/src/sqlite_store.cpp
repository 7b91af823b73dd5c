// SQLite implementation of the store (the embedded default).
//
// One connection per store object, WAL mode, synchronous=FULL, busy timeout
// 5 s, foreign keys on. Statements are prepared once and cached by name.
// Every write that touches more than one row runs inside BEGIN IMMEDIATE, so
// concurrent writers (other pool workers, other processes) queue on the busy
// timeout instead of failing on a lock upgrade.

#include <sqlite3.h>

#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <utility>

#include "store_impl.hpp"

namespace hotswap::detail {

namespace {

// -- schema -------------------------------------------------------------------

struct migration {
  int version;
  const char* sql;
};

const migration sqlite_migrations[] = {
  {1, R"sql(
CREATE TABLE snapshots (
  kind        TEXT    NOT NULL,
  id          TEXT    NOT NULL,
  tenant_id   TEXT    NOT NULL DEFAULT '',
  status      TEXT    NOT NULL DEFAULT '',
  unique_key  TEXT    NULL,
  owner_node  TEXT    NOT NULL DEFAULT '',
  epoch       INTEGER NOT NULL DEFAULT 0,
  seq         INTEGER NOT NULL DEFAULT 0,
  body        TEXT    NULL,
  created_at  INTEGER NOT NULL DEFAULT 0,
  updated_at  INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX snapshots_kind_unique_key ON snapshots (kind, unique_key)
  WHERE unique_key IS NOT NULL;
CREATE INDEX snapshots_kind_status_created ON snapshots (kind, status, created_at);
CREATE INDEX snapshots_kind_created ON snapshots (kind, created_at);

CREATE TABLE audit_events (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  at          INTEGER NOT NULL,
  category    TEXT    NOT NULL DEFAULT '' COLLATE NOCASE,
  action      TEXT    NOT NULL DEFAULT '',
  result      TEXT    NOT NULL DEFAULT '',
  entity_kind TEXT    NOT NULL DEFAULT '',
  entity_id   TEXT    NOT NULL DEFAULT '',
  tenant_id   TEXT    NOT NULL DEFAULT '',
  actor_user  TEXT    NOT NULL DEFAULT '',
  source_ip   TEXT    NOT NULL DEFAULT '',
  trace_id    TEXT    NOT NULL DEFAULT '',
  message     TEXT    NOT NULL DEFAULT '',
  detail      TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_category ON audit_events (category, at);
CREATE INDEX audit_events_trace ON audit_events (trace_id) WHERE trace_id <> '';
CREATE INDEX audit_events_entity ON audit_events (entity_kind, entity_id);
CREATE INDEX audit_events_actor_at ON audit_events (actor_user, at);

CREATE TABLE users (
  id              TEXT    PRIMARY KEY,
  username        TEXT    NOT NULL,
  username_lower  TEXT    NOT NULL UNIQUE,
  email           TEXT    NOT NULL DEFAULT '',
  full_name       TEXT    NOT NULL DEFAULT '',
  password_hash   TEXT    NOT NULL DEFAULT '',
  roles           TEXT    NOT NULL DEFAULT '[]',
  tenant_id       TEXT    NOT NULL DEFAULT '',
  active          INTEGER NOT NULL DEFAULT 1,
  failed_attempts INTEGER NOT NULL DEFAULT 0,
  locked_until    INTEGER NOT NULL DEFAULT 0,
  created_at      INTEGER NOT NULL DEFAULT 0,
  updated_at      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE signing_keys (
  kid         TEXT    PRIMARY KEY,
  secret      BLOB    NOT NULL,
  created_at  INTEGER NOT NULL,
  retired_at  INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (retired_at)
  WHERE retired_at = 0;
)sql"},
  // Module artifacts: one row per (name, version), metadata and bytes
  // together (bytes last, so that reading the metadata of a row never reads
  // the blob's overflow pages). Versions are immutable: rows are never
  // updated.
  {2, R"sql(
CREATE TABLE modules (
  name          TEXT    NOT NULL,
  version       TEXT    NOT NULL,
  digest        TEXT    NOT NULL,
  size          INTEGER NOT NULL DEFAULT 0,
  signature     TEXT    NOT NULL DEFAULT '',
  is_signed     INTEGER NOT NULL DEFAULT 0,
  signer_key_id TEXT    NOT NULL DEFAULT '',
  description   TEXT    NOT NULL DEFAULT '',
  abi_token     TEXT    NOT NULL DEFAULT '',
  tenant_id     TEXT    NOT NULL DEFAULT '',
  uploaded_by   TEXT    NOT NULL DEFAULT '',
  uploaded_at   INTEGER NOT NULL DEFAULT 0,
  bytes         BLOB    NOT NULL,
  PRIMARY KEY (name, version)
);
CREATE INDEX modules_name_uploaded ON modules (name, uploaded_at, version);
)sql"},
  // Events (the WebSocket stream's log on a single node) and the durable
  // message queue (runtime/messages.hpp). `seq` orders both.
  {3, R"sql(
CREATE TABLE events (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  at           INTEGER NOT NULL,
  type         TEXT    NOT NULL,
  execution_id TEXT    NOT NULL DEFAULT '',
  tenant_id    TEXT    NOT NULL DEFAULT '',
  status       TEXT    NOT NULL DEFAULT '',
  stage        TEXT    NOT NULL DEFAULT '',
  progress     INTEGER NOT NULL DEFAULT -1,
  details      TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_at ON events (at);
CREATE TABLE messages (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  id              TEXT    NOT NULL UNIQUE,
  topic           TEXT    NOT NULL,
  payload         TEXT    NOT NULL,
  schema_version  TEXT    NOT NULL DEFAULT '',
  headers         TEXT    NOT NULL DEFAULT '{}',
  correlation_id  TEXT    NOT NULL DEFAULT '',
  priority        INTEGER NOT NULL DEFAULT 0,
  expires_at      INTEGER NOT NULL DEFAULT 0,
  partition_key   TEXT    NOT NULL DEFAULT '',
  created_at      INTEGER NOT NULL,
  status          INTEGER NOT NULL DEFAULT 0,
  acknowledged_at INTEGER NOT NULL DEFAULT 0,
  published_by    TEXT    NOT NULL DEFAULT '',
  tenant_id       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX messages_topic_seq ON messages (topic, seq);
CREATE INDEX messages_topic_expiry ON messages (topic, expires_at) WHERE expires_at <> 0;
-- One row per (message, consumer group of its topic), written when the
-- message is published (for the groups that exist) or when a group consumes
-- its topic for the first time (for the messages retained then). state: 0
-- owed (attempts = 0: never delivered; else leased until visible_at),
-- 1 acknowledged, 2 dead-lettered, 3 expired. priority, seq and expires_at
-- are copies of the message's, so that consume reads this table alone.
CREATE TABLE message_deliveries (
  message_id      TEXT    NOT NULL,
  group_name      TEXT    NOT NULL,
  topic           TEXT    NOT NULL,
  priority        INTEGER NOT NULL DEFAULT 0,
  seq             INTEGER NOT NULL,
  expires_at      INTEGER NOT NULL DEFAULT 0,
  attempts        INTEGER NOT NULL DEFAULT 0,
  delivered_at    INTEGER NOT NULL DEFAULT 0,
  visible_at      INTEGER NOT NULL DEFAULT 0,
  state           INTEGER NOT NULL DEFAULT 0,
  acknowledged_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (message_id, group_name)
);
CREATE INDEX message_deliveries_next
  ON message_deliveries (topic, group_name, state, priority DESC, seq);
CREATE INDEX message_deliveries_owed ON message_deliveries (state) WHERE state = 0;
CREATE TABLE message_groups (
  topic      TEXT    NOT NULL,
  group_name TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (topic, group_name)
);
)sql"},
};

constexpr int latest_version = 3;

constexpr const char* snapshot_cols
  = "kind, id, tenant_id, status, COALESCE(unique_key, ''), owner_node, epoch, seq, "
    "COALESCE(body, ''), created_at, updated_at";

constexpr const char* audit_cols
  = "id, at, category, action, result, entity_kind, entity_id, tenant_id, actor_user, "
    "source_ip, trace_id, message, detail";

constexpr const char* user_cols
  = "id, username, email, full_name, password_hash, roles, tenant_id, active, failed_attempts, "
    "locked_until, created_at, updated_at";

constexpr const char* module_cols
  = "name, version, digest, size, signature, is_signed, signer_key_id, description, abi_token, "
    "tenant_id, uploaded_by, uploaded_at";

constexpr const char* audit_insert_sql
  = "INSERT INTO audit_events (at, category, action, result, entity_kind, entity_id, tenant_id, "
    "actor_user, source_ip, trace_id, message, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)";

bool is_unavailable(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
      return true;
    default:
      return false;
  }
}

bool is_unique_violation(int rc) {
  return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY;
}

// A cached prepared statement in use: resets and clears bindings on scope
// exit so that it can be reused by the next call.
class bound_stmt {
public:
  explicit bound_stmt(sqlite3_stmt* s) : s_(s) {
  }

  bound_stmt(const bound_stmt&) = delete;
  bound_stmt& operator=(const bound_stmt&) = delete;

  ~bound_stmt() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

  sqlite3_stmt* get() const {
    return s_;
  }

  bound_stmt& text(const std::string& x) {
    sqlite3_bind_text(s_, ++idx_, x.data(), static_cast<int>(x.size()), SQLITE_TRANSIENT);
    return *this;
  }

  bound_stmt& blob(const std::string& x) {
    sqlite3_bind_blob(s_, ++idx_, x.data(), static_cast<int>(x.size()), SQLITE_TRANSIENT);
    return *this;
  }

  // Binds `x` without copying it: `x` must outlive this bound_stmt (large
  // module artifacts).
  bound_stmt& blob_ref(const std::string& x) {
    sqlite3_bind_blob(s_, ++idx_, x.data(), static_cast<int>(x.size()), SQLITE_STATIC);
    return *this;
  }

  // Binds NULL for an empty string.
  bound_stmt& text_or_null(const std::string& x) {
    if (x.empty()) {
      sqlite3_bind_null(s_, ++idx_);
      return *this;
    }
    return text(x);
  }

  bound_stmt& i64(int64_t x) {
    sqlite3_bind_int64(s_, ++idx_, x);
    return *this;
  }

  // Binds an audit event in the column order of audit_insert_sql.
  bound_stmt& audit(const audit_event& ev) {
    i64(ev.at == 0 ? now_millis() : ev.at);
    text(ev.category).text(ev.action).text(ev.result).text(ev.entity_kind).text(ev.entity_id);
    text(ev.tenant_id).text(ev.actor_user).text(ev.source_ip).text(ev.trace_id);
    text(ev.message).text(ev.detail.empty() ? std::string{"{}"} : ev.detail);
    return *this;
  }

private:
  sqlite3_stmt* s_;
  int idx_ = 0;
};

std::string col_text(sqlite3_stmt* s, int i) {
  auto p = sqlite3_column_blob(s, i);
  auto n = sqlite3_column_bytes(s, i);
  if (p == nullptr || n <= 0)
    return {};
  return std::string(static_cast<const char*>(p), static_cast<size_t>(n));
}

int64_t col_i64(sqlite3_stmt* s, int i) {
  return sqlite3_column_int64(s, i);
}

snapshot_record read_snapshot(sqlite3_stmt* s, int first = 0) {
  snapshot_record r;
  r.kind = col_text(s, first + 0);
  r.id = col_text(s, first + 1);
  r.tenant_id = col_text(s, first + 2);
  r.status = col_text(s, first + 3);
  r.unique_key = col_text(s, first + 4);
  r.owner_node = col_text(s, first + 5);
  r.epoch = col_i64(s, first + 6);
  r.seq = col_i64(s, first + 7);
  r.body = col_text(s, first + 8);
  r.created_at = col_i64(s, first + 9);
  r.updated_at = col_i64(s, first + 10);
  return r;
}

audit_event read_audit(sqlite3_stmt* s) {
  audit_event e;
  e.id = col_i64(s, 0);
  e.at = col_i64(s, 1);
  e.category = col_text(s, 2);
  e.action = col_text(s, 3);
  e.result = col_text(s, 4);
  e.entity_kind = col_text(s, 5);
  e.entity_id = col_text(s, 6);
  e.tenant_id = col_text(s, 7);
  e.actor_user = col_text(s, 8);
  e.source_ip = col_text(s, 9);
  e.trace_id = col_text(s, 10);
  e.message = col_text(s, 11);
  e.detail = col_text(s, 12);
  return e;
}

user_record read_user(sqlite3_stmt* s) {
  user_record u;
  u.id = col_text(s, 0);
  u.username = col_text(s, 1);
  u.email = col_text(s, 2);
  u.full_name = col_text(s, 3);
  u.password_hash = col_text(s, 4);
  u.roles = roles_from_json(col_text(s, 5));
  u.tenant_id = col_text(s, 6);
  u.active = col_i64(s, 7) != 0;
  u.failed_attempts = static_cast<int32_t>(col_i64(s, 8));
  u.locked_until = col_i64(s, 9);
  u.created_at = col_i64(s, 10);
  u.updated_at = col_i64(s, 11);
  return u;
}

// The audit entity id of a module version (when the caller left it empty).
std::string module_entity_id(const std::string& name, const std::string& version) {
  return name + "@" + version;
}

std::string module_conflict_message(const module_record& stored) {
  return "module " + stored.name + " " + stored.version + " already exists with digest "
         + stored.digest + " (versions are immutable)";
}

module_record read_module(sqlite3_stmt* s) {
  module_record m;
  m.name = col_text(s, 0);
  m.version = col_text(s, 1);
  m.digest = col_text(s, 2);
  m.size = col_i64(s, 3);
  m.signature = col_text(s, 4);
  m.is_signed = col_i64(s, 5) != 0;
  m.signer_key_id = col_text(s, 6);
  m.description = col_text(s, 7);
  m.abi_token = col_text(s, 8);
  m.tenant_id = col_text(s, 9);
  m.uploaded_by = col_text(s, 10);
  m.uploaded_at = col_i64(s, 11);
  return m;
}

class sqlite_store final : public store {
public:
  sqlite_store(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {
  }

  ~sqlite_store() override {
    for (auto& kvp : stmts_)
      sqlite3_finalize(kvp.second);
    sqlite3_close_v2(db_);
  }

  caf::error configure() {
    const char* pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                          "PRAGMA foreign_keys=ON;";
    sqlite3_busy_timeout(db_, 5000);
    sqlite3_extended_result_codes(db_, 1);
    char* msg = nullptr;
    auto rc = sqlite3_exec(db_, pragmas, nullptr, nullptr, &msg);
    if (rc != SQLITE_OK) {
      std::string text = msg ? msg : sqlite3_errstr(rc);
      sqlite3_free(msg);
      return caf::make_error(is_unavailable(rc) ? errc::unavailable : errc::store_failure,
                             "sqlite " + path_ + ": configuring the connection failed: " + text);
    }
    return caf::none;
  }

  // -- schema ---------------------------------------------------------------

  caf::expected<int> migrate() override {
    for (auto& m : sqlite_migrations) {
      auto t = begin("migrate");
      if (!t)
        return std::move(t.error());
      if (auto err = exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
                          "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                          "migrate"))
        return err;
      auto v = current_version();
      if (!v)
        return std::move(v.error());
      if (*v >= m.version) {
        if (auto err = t->commit())
          return err;
        continue;
      }
      if (auto err = exec(m.sql, "migration " + std::to_string(m.version)))
        return err;
      auto ins = stmt("migrate_record",
                      "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)");
      if (!ins)
        return std::move(ins.error());
      bound_stmt b{*ins};
      b.i64(m.version).i64(now_millis());
      if (auto err = step_done(b, "migrate_record"))
        return err;
      if (auto err = t->commit())
        return err;
    }
    return schema_version();
  }

  caf::expected<int> schema_version() override {
    return current_version();
  }

  caf::expected<void> ping() override {
    auto s = stmt("ping", "SELECT 1");
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    auto rc = sqlite3_step(b.get());
    if (rc != SQLITE_ROW)
      return fail(rc, "ping");
    return caf::unit;
  }

  // -- entities -------------------------------------------------------------

  caf::expected<claim_result> claim(const std::string& kind, const std::string& id,
                                    const std::string& node) override {
    static const std::string sql
      = std::string{"INSERT INTO snapshots (kind, id, tenant_id, status, unique_key, owner_node, "
                    "epoch, seq, body, created_at, updated_at) "
                    "VALUES (?, ?, '', '', NULL, ?, 1, 0, NULL, ?, ?) "
                    "ON CONFLICT (kind, id) DO UPDATE SET epoch = snapshots.epoch + 1, "
                    "owner_node = excluded.owner_node RETURNING "}
        + snapshot_cols;
    auto s = stmt("claim", sql);
    if (!s)
      return std::move(s.error());
    auto now = now_millis();
    bound_stmt b{*s};
    b.text(kind).text(id).text(node).i64(now).i64(now);
    auto rc = sqlite3_step(b.get());
    if (rc != SQLITE_ROW)
      return fail(rc, "claim");
    claim_result res;
    res.snapshot = read_snapshot(b.get());
    res.epoch = res.snapshot.epoch;
    rc = sqlite3_step(b.get());
    if (rc != SQLITE_DONE)
      return fail(rc, "claim");
    return res;
  }

  caf::expected<int64_t> put(const snapshot_record& snap, const audit_event& ev) override {
    auto t = begin("put");
    if (!t)
      return std::move(t.error());
    auto upd = stmt("snapshot_put",
                    "UPDATE snapshots SET body = ?, status = ?, tenant_id = ?, unique_key = ?, "
                    "updated_at = ?, seq = seq + 1, "
                    "created_at = CASE WHEN created_at = 0 THEN ? ELSE created_at END "
                    "WHERE kind = ? AND id = ? AND epoch = ? RETURNING seq");
    if (!upd)
      return std::move(upd.error());
    auto now = now_millis();
    auto updated = snap.updated_at != 0 ? snap.updated_at : now;
    auto created = snap.created_at != 0 ? snap.created_at : now;
    int64_t seq = 0;
    bool written = false;
    {
      bound_stmt b{*upd};
      b.text(snap.body).text(snap.status).text(snap.tenant_id).text_or_null(snap.unique_key);
      b.i64(updated).i64(created).text(snap.kind).text(snap.id).i64(snap.epoch);
      auto rc = sqlite3_step(b.get());
      if (rc == SQLITE_ROW) {
        seq = col_i64(b.get(), 0);
        written = true;
        rc = sqlite3_step(b.get());
      }
      if (rc != SQLITE_DONE) {
        if (is_unique_violation(rc))
          return caf::make_error(errc::conflict, "unique key '" + snap.unique_key
                                                   + "' of kind " + snap.kind
                                                   + " is taken by another entity");
        return fail(rc, "snapshot_put");
      }
    }
    if (!written) {
      auto sel = stmt("snapshot_epoch", "SELECT epoch FROM snapshots WHERE kind = ? AND id = ?");
      if (!sel)
        return std::move(sel.error());
      bound_stmt b{*sel};
      b.text(snap.kind).text(snap.id);
      auto rc = sqlite3_step(b.get());
      if (rc == SQLITE_DONE)
        return caf::make_error(errc::not_found, "no entity " + snap.kind + "/" + snap.id
                                                  + " (never claimed)");
      if (rc != SQLITE_ROW)
        return fail(rc, "snapshot_epoch");
      auto stored = col_i64(b.get(), 0);
      if (stored > snap.epoch)
        return caf::make_error(errc::fenced,
                               fenced_message(snap.kind, snap.id, stored, snap.epoch));
      return caf::make_error(errc::internal, "write to " + snap.kind + "/" + snap.id
                                               + " carries epoch " + std::to_string(snap.epoch)
                                               + " but the stored epoch is "
                                               + std::to_string(stored));
    }
    auto e = with_entity(ev, snap);
    if (auto err = insert_audit(e))
      return err;
    if (auto err = t->commit())
      return err;
    return seq;
  }

  caf::expected<void> release(const std::string& kind, const std::string& id,
                              const std::string& node, int64_t epoch) override {
    auto s = stmt("snapshot_release", "UPDATE snapshots SET owner_node = '' "
                                      "WHERE kind = ? AND id = ? AND owner_node = ? AND epoch = ?");
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    b.text(kind).text(id).text(node).i64(epoch);
    if (auto err = step_done(b, "snapshot_release"))
      return err;
    return caf::unit;
  }

  caf::expected<std::optional<snapshot_record>> get(const std::string& kind,
                                                    const std::string& id) override {
    static const std::string sql = std::string{"SELECT "} + snapshot_cols
                                   + " FROM snapshots WHERE kind = ? AND id = ? "
                                     "AND body IS NOT NULL";
    auto s = stmt("snapshot_get", sql);
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    b.text(kind).text(id);
    auto rc = sqlite3_step(b.get());
    if (rc == SQLITE_DONE)
      return std::optional<snapshot_record>{};
    if (rc != SQLITE_ROW)
      return fail(rc, "snapshot_get");
    return std::optional<snapshot_record>{read_snapshot(b.get())};
  }

  caf::expected<std::vector<snapshot_record>> list(const snapshot_query& q) override {
    int mask = (q.status.empty() ? 0 : 1) | (q.tenant_id.empty() ? 0 : 2);
    std::string sql = std::string{"SELECT "} + snapshot_cols
                      + " FROM snapshots WHERE kind = ? AND body IS NOT NULL";
    if (mask & 1)
      sql += " AND status = ?";
    if (mask & 2)
      sql += " AND tenant_id = ?";
    sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?";
    auto name = "snapshot_list_" + std::to_string(mask);
    auto s = stmt(name, sql);
    if (!s)
      return std::move(s.error());
    int64_t limit = 0;
    int64_t offset = 0;
    list_paging(q.limit, q.offset, limit, offset);
    bound_stmt b{*s};
    b.text(q.kind);
    if (mask & 1)
      b.text(q.status);
    if (mask & 2)
      b.text(q.tenant_id);
    b.i64(limit).i64(offset);
    std::vector<snapshot_record> out;
    int rc;
    while ((rc = sqlite3_step(b.get())) == SQLITE_ROW)
      out.push_back(read_snapshot(b.get()));
    if (rc != SQLITE_DONE)
      return fail(rc, name);
    return out;
  }

  // -- audit ----------------------------------------------------------------

  caf::expected<int64_t> append_audit(const audit_event& ev) override {
    if (auto err = insert_audit(ev))
      return err;
    return static_cast<int64_t>(sqlite3_last_insert_rowid(db_));
  }

  caf::expected<std::vector<audit_event>> query_audit(const audit_query& q) override {
    std::string sql = std::string{"SELECT "} + audit_cols + " FROM audit_events WHERE 1 = 1";
    int mask = 0;
    auto add = [&](bool on, int bit, const char* clause) {
      if (on) {
        mask |= bit;
        sql += clause;
      }
    };
    add(!q.category.empty(), 1, " AND category = ?"); // COLLATE NOCASE column
    add(!q.trace_id.empty(), 2, " AND trace_id = ? AND trace_id <> ''");
    add(!q.entity_kind.empty(), 4, " AND entity_kind = ?");
    add(!q.entity_id.empty(), 8, " AND entity_id = ?");
    add(!q.actor_user.empty(), 16, " AND actor_user = ?");
    add(q.from != 0, 32, " AND at >= ?");
    add(q.to != 0, 64, " AND at <= ?");
    sql += " ORDER BY at DESC, id DESC LIMIT ? OFFSET ?";
    auto name = "audit_query_" + std::to_string(mask);
    auto s = stmt(name, sql);
    if (!s)
      return std::move(s.error());
    int64_t limit = 0;
    int64_t offset = 0;
    audit_paging(q.page_number, q.page_size, limit, offset);
    bound_stmt b{*s};
    if (mask & 1)
      b.text(q.category);
    if (mask & 2)
      b.text(q.trace_id);
    if (mask & 4)
      b.text(q.entity_kind);
    if (mask & 8)
      b.text(q.entity_id);
    if (mask & 16)
      b.text(q.actor_user);
    if (mask & 32)
      b.i64(q.from);
    if (mask & 64)
      b.i64(q.to);
    b.i64(limit).i64(offset);
    std::vector<audit_event> out;
    int rc;
    while ((rc = sqlite3_step(b.get())) == SQLITE_ROW)
      out.push_back(read_audit(b.get()));
    if (rc != SQLITE_DONE)
      return fail(rc, name);
    return out;
  }

  // -- users ----------------------------------------------------------------

  caf::expected<void> create_user(const user_record& u, const audit_event& ev) override {
    auto t = begin("user_create");
    if (!t)
      return std::move(t.error());
    auto s = stmt("user_create",
                  "INSERT INTO users (id, username, username_lower, email, full_name, "
                  "password_hash, roles, tenant_id, active, failed_attempts, locked_until, "
                  "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!s)
      return std::move(s.error());
    auto now = now_millis();
    {
      bound_stmt b{*s};
      b.text(u.id).text(u.username).text(ascii_lower(u.username)).text(u.email);
      b.text(u.full_name).text(u.password_hash).text(roles_to_json(u.roles)).text(u.tenant_id);
      b.i64(u.active ? 1 : 0).i64(u.failed_attempts).i64(u.locked_until);
      b.i64(u.created_at != 0 ? u.created_at : now).i64(u.updated_at != 0 ? u.updated_at : now);
      auto rc = sqlite3_step(b.get());
      if (is_unique_violation(rc))
        return caf::make_error(errc::conflict, "user name '" + u.username + "' or id '" + u.id
                                                 + "' is already taken");
      if (rc != SQLITE_DONE)
        return fail(rc, "user_create");
    }
    if (auto err = insert_audit(ev))
      return err;
    if (auto err = t->commit())
      return err;
    return caf::unit;
  }

  caf::expected<void> update_user(const user_record& u, const audit_event& ev) override {
    auto t = begin("user_update");
    if (!t)
      return std::move(t.error());
    auto s = stmt("user_update",
                  "UPDATE users SET username = ?, username_lower = ?, email = ?, full_name = ?, "
                  "password_hash = ?, roles = ?, tenant_id = ?, active = ?, failed_attempts = ?, "
                  "locked_until = ?, updated_at = ? WHERE id = ?");
    if (!s)
      return std::move(s.error());
    {
      bound_stmt b{*s};
      b.text(u.username).text(ascii_lower(u.username)).text(u.email).text(u.full_name);
      b.text(u.password_hash).text(roles_to_json(u.roles)).text(u.tenant_id);
      b.i64(u.active ? 1 : 0).i64(u.failed_attempts).i64(u.locked_until);
      b.i64(u.updated_at != 0 ? u.updated_at : now_millis()).text(u.id);
      auto rc = sqlite3_step(b.get());
      if (is_unique_violation(rc))
        return caf::make_error(errc::conflict,
                               "user name '" + u.username + "' is already taken");
      if (rc != SQLITE_DONE)
        return fail(rc, "user_update");
    }
    if (sqlite3_changes(db_) == 0)
      return caf::make_error(errc::not_found, "no user with id '" + u.id + "'");
    if (auto err = insert_audit(ev))
      return err;
    if (auto err = t->commit())
      return err;
    return caf::unit;
  }

  caf::expected<void> delete_user(const std::string& id, const audit_event& ev) override {
    auto t = begin("user_delete");
    if (!t)
      return std::move(t.error());
    auto s = stmt("user_delete", "DELETE FROM users WHERE id = ?");
    if (!s)
      return std::move(s.error());
    {
      bound_stmt b{*s};
      b.text(id);
      if (auto err = step_done(b, "user_delete"))
        return err;
    }
    if (sqlite3_changes(db_) == 0)
      return caf::make_error(errc::not_found, "no user with id '" + id + "'");
    if (auto err = insert_audit(ev))
      return err;
    if (auto err = t->commit())
      return err;
    return caf::unit;
  }

  caf::expected<void> record_login(const std::string& user_id, int32_t failed_attempts,
                                   millis locked_until, const audit_event& ev) override {
    auto t = begin("user_login");
    if (!t)
      return std::move(t.error());
    auto s = stmt("user_login",
                  "UPDATE users SET failed_attempts = ?, locked_until = ? WHERE id = ?");
    if (!s)
      return std::move(s.error());
    {
      bound_stmt b{*s};
      b.i64(failed_attempts).i64(locked_until).text(user_id);
      if (auto err = step_done(b, "user_login"))
        return err;
    }
    if (sqlite3_changes(db_) == 0)
      return caf::make_error(errc::not_found, "no user with id '" + user_id + "'");
    if (auto err = insert_audit(ev))
      return err;
    if (auto err = t->commit())
      return err;
    return caf::unit;
  }

  caf::expected<millis> record_failed_login(const std::string& user_id, int32_t max_attempts,
                                            millis lock_until, const audit_event& ev) override {
    auto t = begin("user_login_failed");
    if (!t)
      return std::move(t.error());
    // SET expressions read the row as it was: both CASEs see the old count.
    auto s = stmt("user_login_failed",
                  "UPDATE users SET "
                  "failed_attempts = CASE WHEN failed_attempts + 1 >= ? THEN 0 "
                  "ELSE failed_attempts + 1 END, "
                  "locked_until = CASE WHEN failed_attempts + 1 >= ? THEN ? ELSE locked_until END "
                  "WHERE id = ? RETURNING locked_until");
    if (!s)
      return std::move(s.error());
    millis locked = 0;
    {
      bound_stmt b{*s};
      b.i64(max_attempts).i64(max_attempts).i64(lock_until).text(user_id);
      auto rc = sqlite3_step(b.get());
      if (rc == SQLITE_DONE)
        return caf::make_error(errc::not_found, "no user with id '" + user_id + "'");
      if (rc != SQLITE_ROW)
        return fail(rc, "user_login_failed");
      locked = col_i64(b.get(), 0);
      if (auto err = step_done(b, "user_login_failed"))
        return err;
    }
    if (auto err = insert_audit(ev))
      return err;
    if (auto err = t->commit())
      return err;
    return locked;
  }

  caf::expected<std::optional<user_record>> user_by_id(const std::string& id) override {
    static const std::string sql = std::string{"SELECT "} + user_cols
                                   + " FROM users WHERE id = ?";
    return one_user("user_by_id", sql, id);
  }

  caf::expected<std::optional<user_record>> user_by_name(const std::string& username) override {
    static const std::string sql = std::string{"SELECT "} + user_cols
                                   + " FROM users WHERE username_lower = ?";
    return one_user("user_by_name", sql, ascii_lower(username));
  }

  caf::expected<std::vector<user_record>> list_users() override {
    static const std::string sql = std::string{"SELECT "} + user_cols
                                   + " FROM users ORDER BY username_lower";
    auto s = stmt("user_list", sql);
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    std::vector<user_record> out;
    int rc;
    while ((rc = sqlite3_step(b.get())) == SQLITE_ROW)
      out.push_back(read_user(b.get()));
    if (rc != SQLITE_DONE)
      return fail(rc, "user_list");
    return out;
  }

  caf::expected<int64_t> count_users() override {
    auto s = stmt("user_count", "SELECT COUNT(*) FROM users");
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    auto rc = sqlite3_step(b.get());
    if (rc != SQLITE_ROW)
      return fail(rc, "user_count");
    return col_i64(b.get(), 0);
  }

  // -- module artifacts -----------------------------------------------------

  caf::expected<module_put_result> put_module(const module_record& m, const std::string& bytes,
                                              const audit_event& ev) override {
    if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
      return caf::make_error(errc::payload_too_large,
                             "module " + m.name + " " + m.version + ": "
                               + std::to_string(bytes.size()) + " bytes exceed what SQLite stores");
    // BEGIN IMMEDIATE: concurrent puts of the same version queue here, so the
    // second one finds the first one's row.
    auto t = begin("module_put");
    if (!t)
      return std::move(t.error());
    {
      auto stored = one_module("module_get", m.name, m.version);
      if (!stored)
        return std::move(stored.error());
      if (*stored) {
        auto& x = **stored;
        if (x.digest != m.digest)
          return caf::make_error(errc::conflict, module_conflict_message(x));
        return module_put_result{std::move(x), false}; // nothing written: rolls back
      }
    }
    static const std::string sql
      = std::string{"INSERT INTO modules (name, version, digest, size, signature, is_signed, "
                    "signer_key_id, description, abi_token, tenant_id, uploaded_by, uploaded_at, "
                    "bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING "}
        + module_cols;
    auto s = stmt("module_put", sql);
    if (!s)
      return std::move(s.error());
    module_put_result res;
    res.created = true;
    {
      bound_stmt b{*s};
      b.text(m.name).text(m.version).text(m.digest).i64(static_cast<int64_t>(bytes.size()));
      b.text(m.signature).i64(m.is_signed ? 1 : 0).text(m.signer_key_id).text(m.description);
      b.text(m.abi_token).text(m.tenant_id).text(m.uploaded_by);
      b.i64(m.uploaded_at != 0 ? m.uploaded_at : now_millis()).blob_ref(bytes);
      auto rc = sqlite3_step(b.get());
      if (rc != SQLITE_ROW) {
        if (is_unique_violation(rc)) // cannot happen inside BEGIN IMMEDIATE
          return caf::make_error(errc::conflict, "module " + m.name + " " + m.version
                                                   + " already exists (versions are immutable)");
        return fail(rc, "module_put");
      }
      res.record = read_module(b.get());
      if (auto err = step_done(b, "module_put"))
        return err;
    }
    if (auto err = insert_audit(with_module(ev, res.record)))
      return err;
    if (auto err = t->commit())
      return err;
    return res;
  }

  caf::expected<std::optional<module_record>> get_module(const std::string& name,
                                                         const std::string& version) override {
    return one_module("module_get", name, version);
  }

  caf::expected<std::optional<std::string>> module_bytes(const std::string& name,
                                                         const std::string& version) override {
    auto s = stmt("module_bytes", "SELECT bytes FROM modules WHERE name = ? AND version = ?");
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    b.text(name).text(version);
    auto rc = sqlite3_step(b.get());
    if (rc == SQLITE_DONE)
      return std::optional<std::string>{};
    if (rc != SQLITE_ROW)
      return fail(rc, "module_bytes");
    return std::optional<std::string>{col_text(b.get(), 0)};
  }

  caf::expected<std::vector<module_record>> list_modules(const std::string& name) override {
    static const std::string all_sql = std::string{"SELECT "} + module_cols
                                       + " FROM modules ORDER BY name, uploaded_at, version";
    static const std::string one_sql = std::string{"SELECT "} + module_cols
                                       + " FROM modules WHERE name = ? "
                                         "ORDER BY name, uploaded_at, version";
    const char* stmt_name = name.empty() ? "module_list_all" : "module_list";
    auto s = stmt(stmt_name, name.empty() ? all_sql : one_sql);
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    if (!name.empty())
      b.text(name);
    std::vector<module_record> out;
    int rc;
    while ((rc = sqlite3_step(b.get())) == SQLITE_ROW)
      out.push_back(read_module(b.get()));
    if (rc != SQLITE_DONE)
      return fail(rc, stmt_name);
    return out;
  }

  // -- signing keys ---------------------------------------------------------

  caf::expected<std::vector<signing_key>> signing_keys() override {
    auto s = stmt("keys_get", "SELECT kid, secret, created_at, retired_at FROM signing_keys "
                              "ORDER BY created_at, kid");
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    std::vector<signing_key> out;
    int rc;
    while ((rc = sqlite3_step(b.get())) == SQLITE_ROW) {
      signing_key k;
      k.kid = col_text(b.get(), 0);
      k.secret = col_text(b.get(), 1);
      k.created_at = col_i64(b.get(), 2);
      k.retired_at = col_i64(b.get(), 3);
      out.push_back(std::move(k));
    }
    if (rc != SQLITE_DONE)
      return fail(rc, "keys_get");
    return out;
  }

  caf::expected<std::vector<signing_key>> ensure_signing_key(const signing_key& k) override {
    {
      auto t = begin("keys_ensure");
      if (!t)
        return std::move(t.error());
      // The partial unique index signing_keys_one_current also guarantees at
      // most one current key; ON CONFLICT DO NOTHING makes a lost race a no-op.
      auto s = stmt("keys_ensure",
                    "INSERT INTO signing_keys (kid, secret, created_at, retired_at) "
                    "SELECT ?, ?, ?, 0 WHERE NOT EXISTS "
                    "(SELECT 1 FROM signing_keys WHERE retired_at = 0) "
                    "ON CONFLICT DO NOTHING");
      if (!s)
        return std::move(s.error());
      {
        bound_stmt b{*s};
        b.text(k.kid).blob(k.secret).i64(k.created_at != 0 ? k.created_at : now_millis());
        if (auto err = step_done(b, "keys_ensure"))
          return err;
      }
      if (auto err = t->commit())
        return err;
    }
    return signing_keys();
  }

private:
  // A transaction opened with BEGIN IMMEDIATE; rolls back unless committed.
  class txn {
  public:
    explicit txn(sqlite_store* st) : st_(st) {
    }

    txn(txn&& other) noexcept : st_(other.st_) {
      other.st_ = nullptr;
    }

    txn(const txn&) = delete;
    txn& operator=(const txn&) = delete;
    txn& operator=(txn&&) = delete;

    ~txn() {
      if (st_ != nullptr)
        sqlite3_exec(st_->db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }

    caf::error commit() {
      auto st = st_;
      st_ = nullptr;
      auto err = st->exec("COMMIT", "commit");
      if (err && !sqlite3_get_autocommit(st->db_))
        sqlite3_exec(st->db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return err;
    }

  private:
    sqlite_store* st_;
  };

  caf::expected<txn> begin(const std::string& what) {
    if (auto err = exec("BEGIN IMMEDIATE", what + " (begin)"))
      return err;
    return txn{this};
  }

  caf::error fail(int rc, const std::string& what) {
    std::string text = sqlite3_errmsg(db_);
    if (text.empty() || text == "not an error")
      text = sqlite3_errstr(rc);
    return caf::make_error(is_unavailable(rc) ? errc::unavailable : errc::store_failure,
                           "sqlite " + path_ + ": " + what + ": " + text);
  }

  caf::error exec(const char* sql, const std::string& what) {
    char* msg = nullptr;
    auto rc = sqlite3_exec(db_, sql, nullptr, nullptr, &msg);
    if (rc == SQLITE_OK)
      return caf::none;
    std::string text = msg ? msg : sqlite3_errstr(rc);
    sqlite3_free(msg);
    rc = sqlite3_extended_errcode(db_);
    return caf::make_error(is_unavailable(rc) ? errc::unavailable : errc::store_failure,
                           "sqlite " + path_ + ": " + what + ": " + text);
  }

  caf::error step_done(bound_stmt& b, const std::string& what) {
    int rc;
    while ((rc = sqlite3_step(b.get())) == SQLITE_ROW)
      ; // nop
    if (rc != SQLITE_DONE)
      return fail(rc, what);
    return caf::none;
  }

  caf::expected<sqlite3_stmt*> stmt(const std::string& name, const std::string& sql) {
    auto i = stmts_.find(name);
    if (i != stmts_.end())
      return i->second;
    sqlite3_stmt* s = nullptr;
    auto rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size() + 1),
                                 SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(s);
      return fail(rc, "preparing " + name);
    }
    stmts_.emplace(name, s);
    return s;
  }

  caf::expected<int> current_version() {
    auto s = stmt("schema_table", "SELECT COUNT(*) FROM sqlite_master "
                                  "WHERE type = 'table' AND name = 'schema_migrations'");
    if (!s)
      return std::move(s.error());
    {
      bound_stmt b{*s};
      auto rc = sqlite3_step(b.get());
      if (rc != SQLITE_ROW)
        return fail(rc, "schema_table");
      if (col_i64(b.get(), 0) == 0)
        return 0;
    }
    // Not cached: the table may not have existed when the cache was built.
    sqlite3_stmt* raw = nullptr;
    const char* sql = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
    auto rc = sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(raw);
      return fail(rc, "schema_version");
    }
    rc = sqlite3_step(raw);
    int v = rc == SQLITE_ROW ? static_cast<int>(sqlite3_column_int64(raw, 0)) : 0;
    sqlite3_finalize(raw);
    if (rc != SQLITE_ROW)
      return fail(rc, "schema_version");
    return v;
  }

  caf::error insert_audit(const audit_event& ev) {
    auto s = stmt("audit_insert", audit_insert_sql);
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    b.audit(ev);
    return step_done(b, "audit_insert");
  }

  static audit_event with_entity(const audit_event& ev, const snapshot_record& snap) {
    auto e = ev;
    if (e.entity_kind.empty())
      e.entity_kind = snap.kind;
    if (e.entity_id.empty())
      e.entity_id = snap.id;
    if (e.tenant_id.empty())
      e.tenant_id = snap.tenant_id;
    return e;
  }

  static audit_event with_module(const audit_event& ev, const module_record& m) {
    auto e = ev;
    if (e.entity_kind.empty())
      e.entity_kind = "module";
    if (e.entity_id.empty())
      e.entity_id = module_entity_id(m.name, m.version);
    if (e.tenant_id.empty())
      e.tenant_id = m.tenant_id;
    return e;
  }

  caf::expected<std::optional<module_record>>
  one_module(const char* name, const std::string& module, const std::string& version) {
    static const std::string sql = std::string{"SELECT "} + module_cols
                                   + " FROM modules WHERE name = ? AND version = ?";
    auto s = stmt(name, sql);
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    b.text(module).text(version);
    auto rc = sqlite3_step(b.get());
    if (rc == SQLITE_DONE)
      return std::optional<module_record>{};
    if (rc != SQLITE_ROW)
      return fail(rc, name);
    return std::optional<module_record>{read_module(b.get())};
  }

  caf::expected<std::optional<user_record>>
  one_user(const char* name, const std::string& sql, const std::string& arg) {
    auto s = stmt(name, sql);
    if (!s)
      return std::move(s.error());
    bound_stmt b{*s};
    b.text(arg);
    auto rc = sqlite3_step(b.get());
    if (rc == SQLITE_DONE)
      return std::optional<user_record>{};
    if (rc != SQLITE_ROW)
      return fail(rc, name);
    return std::optional<user_record>{read_user(b.get())};
  }

  sqlite3* db_;
  std::string path_;
  std::map<std::string, sqlite3_stmt*> stmts_;
};

} // namespace

caf::expected<std::unique_ptr<store>> open_sqlite_store(const std::string& path) {
  static_assert(latest_version == 3, "update sqlite_migrations");
  if (path != ":memory:") {
    std::error_code ec;
    auto parent = std::filesystem::path{path}.parent_path();
    if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
      std::filesystem::create_directories(parent, ec);
      if (ec)
        return caf::make_error(errc::unavailable, "sqlite " + path
                                                    + ": cannot create directory "
                                                    + parent.string() + ": " + ec.message());
    }
  }
  sqlite3* db = nullptr;
  auto rc = sqlite3_open_v2(path.c_str(), &db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            nullptr);
  if (rc != SQLITE_OK) {
    std::string text = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return caf::make_error(errc::unavailable, "sqlite " + path + ": cannot open: " + text);
  }
  auto st = std::make_unique<sqlite_store>(db, path);
  if (auto err = st->configure())
    return err;
  return std::unique_ptr<store>{std::move(st)};
}

} // namespace hotswap::detail
