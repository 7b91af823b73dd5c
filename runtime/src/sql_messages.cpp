// The SQL message store (runtime/messages.hpp) on the node's store: SQLite
// (the embedded default) or PostgreSQL, tables from store migration 3.
//
// Layout: `messages` holds each message once; `message_deliveries` one row
// per (message, consumer group of its topic), written when the message is
// published (for the groups that exist then) or when a group consumes its
// topic for the first time (for every message retained then); `message_groups`
// the groups per topic. consume() reads and leases delivery rows only
// (index topic, group, state, priority DESC, seq), so its cost does not grow
// with the messages a group already acknowledged.
//
// Every call that writes is one transaction. SQLite: BEGIN IMMEDIATE (one
// writer at a time, others wait on the 5 s busy timeout). PostgreSQL: READ
// COMMITTED with row locks — consume leases with FOR UPDATE SKIP LOCKED, so
// two consumers of one group never lease the same row; a group's first
// consume takes an exclusive advisory lock on its topic and publish a shared
// one, so a message published while a group is being created reaches that
// group exactly once. A deadlock or serialization failure is retried (up to
// three times).
//
// Connection loss (PostgreSQL): every call checks the connection first and
// resets it when it is bad; when the server is unreachable the call returns
// errc::unavailable and the next call tries again. SQLite: a busy or locked
// database after the timeout, a full disk or an I/O error is
// errc::unavailable.

#include "hotswap/runtime/messages.hpp"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/store.hpp"

#include "store_impl.hpp"

namespace hotswap {

message_store::~message_store() = default;

const char* to_name(message_status s) {
  switch (s) {
    case message_status::pending:
      return "Pending";
    case message_status::delivered:
      return "Delivered";
    case message_status::acknowledged:
      return "Acknowledged";
    case message_status::failed:
      return "Failed";
    case message_status::expired:
      return "Expired";
  }
  return "Pending";
}

namespace {

// -- shared by both back ends ---------------------------------------------------

/// message_deliveries.state
enum delivery_state : int32_t {
  owed = 0,         ///< attempts = 0: never delivered; else leased until visible_at
  acknowledged = 1,
  dead_lettered = 2,
  expired = 3,
};

constexpr int32_t max_backoff_exponent = 30;

int32_t attempts_limit(const message_policy& p) {
  return std::max<int32_t>(1, p.max_attempts);
}

std::string headers_to_json(const std::map<std::string, std::string>& headers) {
  boost::json::object o;
  for (auto& [k, v] : headers)
    o[k] = v;
  return boost::json::serialize(o);
}

std::map<std::string, std::string> headers_from_json(const std::string& text) {
  std::map<std::string, std::string> out;
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec || !v.is_object())
    return out;
  for (auto& kv : v.as_object())
    if (kv.value().is_string())
      out[std::string(kv.key())] = std::string(kv.value().as_string());
  return out;
}

/// The copy of `orig` that goes to "<topic>.dlq" (see messages.hpp).
message_record dead_letter_copy(const message_record& orig, const std::string& group,
                                int32_t attempts, millis now) {
  message_record m = orig;
  m.id = crypto::uuid4();
  m.topic = orig.topic + ".dlq";
  m.expires_at = 0;
  m.created_at = now;
  m.status = static_cast<int32_t>(message_status::pending);
  m.acknowledged_at = 0;
  m.delivery_attempts = 0;
  m.headers["x-dead-letter-reason"] = "Not acknowledged by consumer group '" + group
                                      + "' within the ack deadline after "
                                      + std::to_string(attempts) + " deliveries (max_attempts).";
  m.headers["x-original-message-id"] = orig.id;
  m.headers["x-original-topic"] = orig.topic;
  m.headers["x-consumer-group"] = group;
  m.headers["x-delivery-attempts"] = std::to_string(attempts);
  return m;
}

/// 64-bit FNV-1a of the topic: the advisory lock key of a topic (PostgreSQL).
int64_t topic_lock_key(const std::string& topic) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : "hotswap.messages:" + topic) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int64_t>(h);
}

/// The columns of a message as get() shows it: the stored row plus the
/// maximum attempts and the latest group acknowledgement over its deliveries.
constexpr const char* message_cols
  = "m.id, m.topic, m.payload, m.schema_version, m.headers, m.correlation_id, m.priority, "
    "m.expires_at, m.partition_key, m.created_at, m.status, m.acknowledged_at, m.published_by, "
    "m.tenant_id, "
    "(SELECT COALESCE(MAX(d.attempts), 0) FROM message_deliveries d WHERE d.message_id = m.id), "
    "(SELECT COALESCE(MAX(d.acknowledged_at), 0) FROM message_deliveries d "
    "WHERE d.message_id = m.id)";

constexpr int message_col_count = 16;

/// Fills `m` from the values of message_cols, deriving the status as a
/// whole (pending/delivered are not stored).
template <class Text, class Int>
message_record read_message(Text text, Int num) {
  message_record m;
  m.id = text(0);
  m.topic = text(1);
  m.payload = text(2);
  m.schema_version = text(3);
  m.headers = headers_from_json(text(4));
  m.correlation_id = text(5);
  m.priority = static_cast<int32_t>(num(6));
  m.expires_at = num(7);
  m.partition_key = text(8);
  m.created_at = num(9);
  m.status = static_cast<int32_t>(num(10));
  m.acknowledged_at = num(11);
  m.published_by = text(12);
  m.tenant_id = text(13);
  m.delivery_attempts = static_cast<int32_t>(num(14));
  auto last_group_ack = num(15);
  if (m.status == static_cast<int32_t>(message_status::pending) && m.delivery_attempts > 0)
    m.status = static_cast<int32_t>(message_status::delivered);
  if (m.status == static_cast<int32_t>(message_status::acknowledged) && m.acknowledged_at == 0)
    m.acknowledged_at = last_group_ack;
  return m;
}

/// Sorts leased messages as consume returns them: priority 9 first, then
/// oldest first (by the store's sequence).
void sort_leased(std::vector<std::pair<int64_t, message_record>>& rows) {
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    if (a.second.priority != b.second.priority)
      return a.second.priority > b.second.priority;
    return a.first < b.first;
  });
}

caf::error never_delivered(const std::string& id, const std::string& group) {
  return caf::make_error(errc::conflict, "message " + id + " was never delivered to consumer group '"
                                           + group + "'");
}

caf::error was_dead_lettered(const std::string& id, const std::string& group) {
  return caf::make_error(errc::conflict, "message " + id
                                           + " was dead-lettered for consumer group '" + group
                                           + "' and can no longer be acknowledged by it");
}

caf::error message_not_found(const std::string& id) {
  return caf::make_error(errc::not_found, "no message " + id);
}

caf::error id_conflict(const std::string& id) {
  return caf::make_error(errc::conflict, "message id " + id
                                           + " was already published with another topic or "
                                             "payload");
}

// -- SQLite -----------------------------------------------------------------------

bool sqlite_unavailable(int rc) {
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

/// A cached statement in use: binds left to right, resets on scope exit.
class sq_bound {
public:
  explicit sq_bound(sqlite3_stmt* s) : s_(s) {
  }

  sq_bound(const sq_bound&) = delete;
  sq_bound& operator=(const sq_bound&) = delete;

  ~sq_bound() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

  sqlite3_stmt* get() const {
    return s_;
  }

  sq_bound& text(const std::string& x) {
    sqlite3_bind_text(s_, ++idx_, x.data(), static_cast<int>(x.size()), SQLITE_TRANSIENT);
    return *this;
  }

  sq_bound& i64(int64_t x) {
    sqlite3_bind_int64(s_, ++idx_, x);
    return *this;
  }

  std::string col_text(int i) const {
    auto p = sqlite3_column_text(s_, i);
    auto n = sqlite3_column_bytes(s_, i);
    if (p == nullptr || n <= 0)
      return {};
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }

  int64_t col_i64(int i) const {
    return sqlite3_column_int64(s_, i);
  }

  message_record message(int first = 0) const {
    return read_message([&](int i) { return col_text(first + i); },
                        [&](int i) { return col_i64(first + i); });
  }

private:
  sqlite3_stmt* s_;
  int idx_ = 0;
};

class sqlite_message_store final : public message_store {
public:
  sqlite_message_store(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {
  }

  ~sqlite_message_store() override {
    for (auto& kvp : stmts_)
      sqlite3_finalize(kvp.second);
    sqlite3_close_v2(db_);
  }

  caf::error configure() {
    sqlite3_extended_result_codes(db_, 1);
    // The tables come from the store's migrations: fail early without them.
    if (auto s = stmt("check", "SELECT 1 FROM message_groups, message_deliveries, messages "
                               "LIMIT 0");
        !s)
      return caf::make_error(errc::store_failure,
                             "sqlite " + path_
                               + ": the message tables are missing (store migration 3 has not "
                                 "run): "
                               + error_detail(s.error()));
    return caf::none;
  }

  caf::expected<bool> publish(const message_record& m) override {
    return in_txn<bool>("publish", [&]() -> caf::expected<bool> {
      auto sel = stmt("msg_same", "SELECT topic, payload FROM messages WHERE id = ?");
      if (!sel)
        return std::move(sel.error());
      {
        sq_bound b{*sel};
        b.text(m.id);
        auto rc = sqlite3_step(b.get());
        if (rc == SQLITE_ROW) {
          if (b.col_text(0) == m.topic && b.col_text(1) == m.payload)
            return false;
          return id_conflict(m.id);
        }
        if (rc != SQLITE_DONE)
          return fail(rc, "msg_same");
      }
      if (auto err = insert(m))
        return err;
      return true;
    });
  }

  caf::expected<std::optional<message_record>> get(const std::string& id) override {
    static const std::string sql = std::string{"SELECT "} + message_cols
                                   + " FROM messages m WHERE m.id = ?";
    auto s = stmt("msg_get", sql);
    if (!s)
      return std::move(s.error());
    sq_bound b{*s};
    b.text(id);
    auto rc = sqlite3_step(b.get());
    if (rc == SQLITE_DONE)
      return std::optional<message_record>{};
    if (rc != SQLITE_ROW)
      return fail(rc, "msg_get");
    return std::optional<message_record>{b.message()};
  }

  caf::expected<std::vector<message_record>> list_topic(const std::string& topic,
                                                        size_t limit) override {
    static const std::string sql = std::string{"SELECT "} + message_cols
                                   + " FROM messages m WHERE m.topic = ? "
                                     "ORDER BY m.seq DESC LIMIT ?";
    auto s = stmt("msg_list", sql);
    if (!s)
      return std::move(s.error());
    sq_bound b{*s};
    b.text(topic).i64(static_cast<int64_t>(std::min<size_t>(limit, 1000000)));
    std::vector<message_record> out;
    int rc;
    while ((rc = sqlite3_step(b.get())) == SQLITE_ROW)
      out.push_back(b.message());
    if (rc != SQLITE_DONE)
      return fail(rc, "msg_list");
    return out;
  }

  caf::expected<consume_result> consume(const std::string& topic, const std::string& group,
                                        size_t max, millis now,
                                        const message_policy& policy) override {
    if (max == 0)
      return consume_result{};
    return in_txn<consume_result>("consume", [&]() -> caf::expected<consume_result> {
      consume_result res;
      if (auto err = ensure_group(topic, group, now))
        return err;
      if (auto err = expire(topic, group, now, res))
        return err;
      if (auto err = dead_letter(topic, group, now, policy, res))
        return err;
      if (auto err = lease(topic, group, max, now, policy, res))
        return err;
      return res;
    });
  }

  caf::expected<message_record> acknowledge(const std::string& id, const std::string& group,
                                            millis now) override {
    return in_txn<message_record>("acknowledge", [&]() -> caf::expected<message_record> {
      auto m = get(id);
      if (!m)
        return std::move(m.error());
      if (!*m)
        return message_not_found(id);
      if (group.empty())
        return ack_whole(**m, now);
      return ack_group(**m, group, now);
    });
  }

  caf::expected<void> remove(const std::string& id) override {
    auto r = in_txn<bool>("remove", [&]() -> caf::expected<bool> {
      auto del = stmt("msg_delete", "DELETE FROM messages WHERE id = ?");
      if (!del)
        return std::move(del.error());
      {
        sq_bound b{*del};
        b.text(id);
        if (auto err = done(b, "msg_delete"))
          return err;
      }
      if (sqlite3_changes(db_) == 0)
        return false;
      auto dd = stmt("msg_delete_deliveries", "DELETE FROM message_deliveries WHERE message_id = ?");
      if (!dd)
        return std::move(dd.error());
      sq_bound b{*dd};
      b.text(id);
      if (auto err = done(b, "msg_delete_deliveries"))
        return err;
      return true;
    });
    if (!r)
      return std::move(r.error());
    if (!*r)
      return message_not_found(id);
    return caf::unit;
  }

  caf::expected<int64_t> lag() override {
    auto s = stmt("msg_lag", "SELECT COUNT(*) FROM message_deliveries WHERE state = 0 "
                             "AND (expires_at = 0 OR expires_at > ?)");
    if (!s)
      return std::move(s.error());
    sq_bound b{*s};
    b.i64(now_millis());
    auto rc = sqlite3_step(b.get());
    if (rc != SQLITE_ROW)
      return fail(rc, "msg_lag");
    return b.col_i64(0);
  }

private:
  // -- consume steps ----------------------------------------------------------

  caf::error ensure_group(const std::string& topic, const std::string& group, millis now) {
    auto ins = stmt("msg_group_insert", "INSERT INTO message_groups (topic, group_name, created_at) "
                                        "VALUES (?, ?, ?) ON CONFLICT DO NOTHING");
    if (!ins)
      return std::move(ins.error());
    {
      sq_bound b{*ins};
      b.text(topic).text(group).i64(now);
      if (auto err = done(b, "msg_group_insert"))
        return err;
    }
    if (sqlite3_changes(db_) == 0)
      return caf::none;
    // A new group sees every retained message of its topic.
    auto fan = stmt("msg_group_fanout",
                    "INSERT INTO message_deliveries (message_id, group_name, topic, priority, seq, "
                    "expires_at) SELECT id, ?, topic, priority, seq, expires_at FROM messages "
                    "WHERE topic = ? AND acknowledged_at = 0 AND status <> 4 "
                    "AND (expires_at = 0 OR expires_at > ?) ON CONFLICT DO NOTHING");
    if (!fan)
      return std::move(fan.error());
    sq_bound b{*fan};
    b.text(group).text(topic).i64(now);
    return done(b, "msg_group_fanout");
  }

  caf::error expire(const std::string& topic, const std::string& group, millis now,
                    consume_result& res) {
    auto upd = stmt("msg_expire", "UPDATE messages SET status = 4 WHERE topic = ? "
                                  "AND expires_at <> 0 AND expires_at <= ? AND status IN (0, 1)");
    if (!upd)
      return std::move(upd.error());
    {
      sq_bound b{*upd};
      b.text(topic).i64(now);
      if (auto err = done(b, "msg_expire"))
        return err;
    }
    res.expired += sqlite3_changes(db_);
    auto del = stmt("msg_expire_deliveries",
                    "UPDATE message_deliveries SET state = 3 WHERE topic = ? AND group_name = ? "
                    "AND state = 0 AND expires_at <> 0 AND expires_at <= ?");
    if (!del)
      return std::move(del.error());
    sq_bound b{*del};
    b.text(topic).text(group).i64(now);
    return done(b, "msg_expire_deliveries");
  }

  caf::error dead_letter(const std::string& topic, const std::string& group, millis now,
                         const message_policy& policy, consume_result& res) {
    auto sel = stmt("msg_dead_select",
                    "SELECT message_id, attempts FROM message_deliveries WHERE topic = ? "
                    "AND group_name = ? AND state = 0 AND attempts >= ? AND visible_at <= ? "
                    "ORDER BY seq");
    if (!sel)
      return std::move(sel.error());
    std::vector<std::pair<std::string, int32_t>> due;
    {
      sq_bound b{*sel};
      b.text(topic).text(group).i64(attempts_limit(policy)).i64(now);
      int rc;
      while ((rc = sqlite3_step(b.get())) == SQLITE_ROW)
        due.emplace_back(b.col_text(0), static_cast<int32_t>(b.col_i64(1)));
      if (rc != SQLITE_DONE)
        return fail(rc, "msg_dead_select");
    }
    for (auto& [id, attempts] : due) {
      auto orig = get(id);
      if (!orig)
        return std::move(orig.error());
      if (!*orig)
        continue;
      if (auto err = insert(dead_letter_copy(**orig, group, attempts, now)))
        return err;
      auto mark = stmt("msg_dead_mark", "UPDATE message_deliveries SET state = 2 "
                                        "WHERE message_id = ? AND group_name = ?");
      if (!mark)
        return std::move(mark.error());
      {
        sq_bound b{*mark};
        b.text(id).text(group);
        if (auto err = done(b, "msg_dead_mark"))
          return err;
      }
      auto failed = stmt("msg_dead_failed",
                         "UPDATE messages SET status = 3 WHERE id = ? AND status <> 4 "
                         "AND acknowledged_at = 0");
      if (!failed)
        return std::move(failed.error());
      sq_bound b{*failed};
      b.text(id);
      if (auto err = done(b, "msg_dead_failed"))
        return err;
      ++res.dead_lettered;
    }
    return caf::none;
  }

  caf::error lease(const std::string& topic, const std::string& group, size_t max, millis now,
                   const message_policy& policy, consume_result& res) {
    auto upd = stmt(
      "msg_lease",
      "UPDATE message_deliveries SET attempts = attempts + 1, delivered_at = ?1, "
      "visible_at = ?1 + ?2 + ?3 * (1 << MIN(attempts, " + std::to_string(max_backoff_exponent)
        + ")) WHERE rowid IN (SELECT rowid FROM message_deliveries WHERE topic = ?4 "
          "AND group_name = ?5 AND state = 0 AND visible_at <= ?1 AND attempts < ?6 "
          "ORDER BY priority DESC, seq LIMIT ?7) RETURNING message_id, attempts, seq");
    if (!upd)
      return std::move(upd.error());
    struct leased {
      std::string id;
      int32_t attempts;
      int64_t seq;
    };
    std::vector<leased> rows;
    {
      sq_bound b{*upd};
      b.i64(now).i64(policy.ack_deadline).i64(std::max<millis>(0, policy.backoff_initial));
      b.text(topic).text(group).i64(attempts_limit(policy));
      b.i64(static_cast<int64_t>(std::min<size_t>(max, 1000000)));
      int rc;
      while ((rc = sqlite3_step(b.get())) == SQLITE_ROW)
        rows.push_back({b.col_text(0), static_cast<int32_t>(b.col_i64(1)), b.col_i64(2)});
      if (rc != SQLITE_DONE)
        return fail(rc, "msg_lease");
    }
    std::vector<std::pair<int64_t, message_record>> out;
    for (auto& r : rows) {
      auto m = get(r.id);
      if (!m)
        return std::move(m.error());
      if (!*m)
        continue;
      auto rec = std::move(**m);
      rec.delivery_attempts = r.attempts;
      if (rec.status == static_cast<int32_t>(message_status::pending))
        rec.status = static_cast<int32_t>(message_status::delivered);
      out.emplace_back(r.seq, std::move(rec));
    }
    sort_leased(out);
    for (auto& [seq, rec] : out) {
      if (rec.delivery_attempts > 1)
        ++res.redelivered;
      res.messages.push_back(std::move(rec));
    }
    return caf::none;
  }

  // -- acknowledge --------------------------------------------------------------

  caf::expected<message_record> ack_whole(const message_record& m, millis now) {
    auto upd = stmt("msg_ack_whole", "UPDATE messages SET status = 2, acknowledged_at = ? "
                                     "WHERE id = ? AND acknowledged_at = 0");
    if (!upd)
      return std::move(upd.error());
    {
      sq_bound b{*upd};
      b.i64(now).text(m.id);
      if (auto err = done(b, "msg_ack_whole"))
        return err;
    }
    if (sqlite3_changes(db_) > 0) {
      auto dd = stmt("msg_ack_whole_deliveries",
                     "UPDATE message_deliveries SET state = 1, acknowledged_at = ? "
                     "WHERE message_id = ? AND state = 0");
      if (!dd)
        return std::move(dd.error());
      sq_bound b{*dd};
      b.i64(now).text(m.id);
      if (auto err = done(b, "msg_ack_whole_deliveries"))
        return err;
    }
    auto after = get(m.id);
    if (!after)
      return std::move(after.error());
    if (!*after)
      return message_not_found(m.id);
    return std::move(**after);
  }

  caf::expected<message_record> ack_group(message_record m, const std::string& group,
                                          millis now) {
    auto sel = stmt("msg_ack_select", "SELECT attempts, state, acknowledged_at "
                                      "FROM message_deliveries WHERE message_id = ? "
                                      "AND group_name = ?");
    if (!sel)
      return std::move(sel.error());
    int32_t attempts = 0;
    int32_t state = 0;
    millis acked_at = 0;
    {
      sq_bound b{*sel};
      b.text(m.id).text(group);
      auto rc = sqlite3_step(b.get());
      if (rc == SQLITE_DONE)
        return never_delivered(m.id, group);
      if (rc != SQLITE_ROW)
        return fail(rc, "msg_ack_select");
      attempts = static_cast<int32_t>(b.col_i64(0));
      state = static_cast<int32_t>(b.col_i64(1));
      acked_at = b.col_i64(2);
    }
    if (attempts == 0)
      return never_delivered(m.id, group);
    if (state == delivery_state::dead_lettered)
      return was_dead_lettered(m.id, group);
    if (state != delivery_state::acknowledged) {
      auto upd = stmt("msg_ack_group", "UPDATE message_deliveries SET state = 1, "
                                       "acknowledged_at = ? WHERE message_id = ? "
                                       "AND group_name = ?");
      if (!upd)
        return std::move(upd.error());
      {
        sq_bound b{*upd};
        b.i64(now).text(m.id).text(group);
        if (auto err = done(b, "msg_ack_group"))
          return err;
      }
      acked_at = now;
      auto whole = stmt("msg_ack_group_whole",
                        "UPDATE messages SET status = 2 WHERE id = ?1 AND status IN (0, 1) "
                        "AND NOT EXISTS (SELECT 1 FROM message_deliveries "
                        "WHERE message_id = ?1 AND state = 0)");
      if (!whole)
        return std::move(whole.error());
      sq_bound b{*whole};
      b.text(m.id);
      if (auto err = done(b, "msg_ack_group_whole"))
        return err;
    }
    m.status = static_cast<int32_t>(message_status::acknowledged);
    m.acknowledged_at = acked_at;
    m.delivery_attempts = attempts;
    return m;
  }

  // -- writes shared by publish and dead-lettering --------------------------------

  /// Inserts `m` (a new id) and its deliveries to the topic's groups.
  caf::error insert(const message_record& m) {
    auto ins = stmt("msg_insert",
                    "INSERT INTO messages (id, topic, payload, schema_version, headers, "
                    "correlation_id, priority, expires_at, partition_key, created_at, status, "
                    "acknowledged_at, published_by, tenant_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?)");
    if (!ins)
      return std::move(ins.error());
    {
      sq_bound b{*ins};
      b.text(m.id).text(m.topic).text(m.payload).text(m.schema_version);
      b.text(headers_to_json(m.headers)).text(m.correlation_id).i64(m.priority);
      b.i64(m.expires_at).text(m.partition_key).i64(m.created_at != 0 ? m.created_at
                                                                      : now_millis());
      b.text(m.published_by).text(m.tenant_id);
      auto rc = sqlite3_step(b.get());
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return id_conflict(m.id);
      if (rc != SQLITE_DONE)
        return fail(rc, "msg_insert");
    }
    auto seq = sqlite3_last_insert_rowid(db_);
    auto fan = stmt("msg_fanout",
                    "INSERT INTO message_deliveries (message_id, group_name, topic, priority, seq, "
                    "expires_at) SELECT ?, group_name, topic, ?, ?, ? FROM message_groups "
                    "WHERE topic = ?");
    if (!fan)
      return std::move(fan.error());
    sq_bound b{*fan};
    b.text(m.id).i64(m.priority).i64(seq).i64(m.expires_at).text(m.topic);
    return done(b, "msg_fanout");
  }

  // -- plumbing ---------------------------------------------------------------

  template <class T, class F>
  caf::expected<T> in_txn(const std::string& what, F body) {
    if (auto err = exec("BEGIN IMMEDIATE", what + " (begin)"))
      return err;
    auto r = body();
    if (!r) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return r;
    }
    if (auto err = exec("COMMIT", what + " (commit)")) {
      if (!sqlite3_get_autocommit(db_))
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return err;
    }
    return r;
  }

  caf::error fail(int rc, const std::string& what) {
    std::string text = sqlite3_errmsg(db_);
    if (text.empty() || text == "not an error")
      text = sqlite3_errstr(rc);
    return caf::make_error(sqlite_unavailable(rc) ? errc::unavailable : errc::store_failure,
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
    return caf::make_error(sqlite_unavailable(rc) ? errc::unavailable : errc::store_failure,
                           "sqlite " + path_ + ": " + what + ": " + text);
  }

  caf::error done(sq_bound& b, const std::string& what) {
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

  sqlite3* db_;
  std::string path_;
  std::map<std::string, sqlite3_stmt*> stmts_;
};

caf::expected<std::unique_ptr<message_store>> open_sqlite(const std::string& path) {
  auto db = detail::open_sqlite_connection(path, "message store");
  if (!db)
    return std::move(db.error());
  auto st = std::make_unique<sqlite_message_store>(*db, path);
  if (auto err = st->configure())
    return err;
  return std::unique_ptr<message_store>{std::move(st)};
}

// -- PostgreSQL ---------------------------------------------------------------------

struct pg_result_deleter {
  void operator()(PGresult* r) const {
    PQclear(r);
  }
};

using pg_result = std::unique_ptr<PGresult, pg_result_deleter>;

/// Text parameters of one statement.
class pg_params {
public:
  pg_params& text(const std::string& x) {
    values_.push_back(x);
    return *this;
  }

  pg_params& i64(int64_t x) {
    values_.push_back(std::to_string(x));
    return *this;
  }

  int size() const {
    return static_cast<int>(values_.size());
  }

  std::vector<const char*> pointers() const {
    std::vector<const char*> out;
    out.reserve(values_.size());
    for (auto& v : values_)
      out.push_back(v.c_str());
    return out;
  }

private:
  std::vector<std::string> values_;
};

std::string pg_text(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col))
    return {};
  return std::string(PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col)));
}

int64_t pg_i64(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col))
    return 0;
  return std::stoll(PQgetvalue(r, row, col));
}

message_record pg_message(const PGresult* r, int row, int first = 0) {
  return read_message([&](int i) { return pg_text(r, row, first + i); },
                      [&](int i) { return pg_i64(r, row, first + i); });
}

std::string pg_trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.pop_back();
  return s;
}

std::string pg_sqlstate(const PGresult* r) {
  auto s = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return s != nullptr ? std::string{s} : std::string{};
}

bool pg_state_unavailable(const std::string& st) {
  return st.rfind("08", 0) == 0 || st.rfind("57P", 0) == 0 || st == "53300";
}

/// Deadlock or serialization failure: the transaction may simply be retried.
bool pg_state_retryable(const std::string& st) {
  return st == "40P01" || st == "40001";
}

void pg_quiet(void*, const char*) {
}

class pg_message_store final : public message_store {
public:
  explicit pg_message_store(std::string conninfo) : conninfo_(std::move(conninfo)) {
  }

  ~pg_message_store() override {
    if (conn_ != nullptr)
      PQfinish(conn_);
  }

  caf::error connect() {
    conn_ = detail::pg_connect(conninfo_, "hotswap-messages");
    if (conn_ == nullptr)
      return caf::make_error(errc::unavailable, "PostgreSQL: out of memory while connecting");
    if (PQstatus(conn_) != CONNECTION_OK)
      return unavailable("connect");
    return caf::none;
  }

  caf::error check_schema() {
    auto r = run("msg_check", "SELECT 1 FROM message_groups, message_deliveries, messages LIMIT 0",
                 pg_params{});
    if (!r)
      return caf::make_error(errc::store_failure,
                             "PostgreSQL: the message tables are missing (store migration 3 has "
                             "not run): "
                               + error_detail(r.error()));
    return caf::none;
  }

  caf::expected<bool> publish(const message_record& m) override {
    return in_txn<bool>("publish", [&]() -> caf::expected<bool> {
      pg_params p;
      p.text(m.id);
      auto r = run("msg_same", "SELECT topic, payload FROM messages WHERE id = $1::text", p);
      if (!r)
        return std::move(r.error());
      if (PQntuples(r->get()) > 0) {
        if (pg_text(r->get(), 0, 0) == m.topic && pg_text(r->get(), 0, 1) == m.payload)
          return false;
        return id_conflict(m.id);
      }
      auto ins = insert(m);
      if (!ins)
        return std::move(ins.error());
      if (*ins)
        return true;
      // Inserted concurrently by another publisher of the same id.
      r = run("msg_same", "SELECT topic, payload FROM messages WHERE id = $1::text", p);
      if (!r)
        return std::move(r.error());
      if (PQntuples(r->get()) > 0 && pg_text(r->get(), 0, 0) == m.topic
          && pg_text(r->get(), 0, 1) == m.payload)
        return false;
      return id_conflict(m.id);
    });
  }

  caf::expected<std::optional<message_record>> get(const std::string& id) override {
    if (auto err = ensure_connection())
      return err;
    return get_in_txn(id);
  }

  caf::expected<std::vector<message_record>> list_topic(const std::string& topic,
                                                        size_t limit) override {
    if (auto err = ensure_connection())
      return err;
    static const std::string sql = std::string{"SELECT "} + message_cols
                                   + " FROM messages m WHERE m.topic = $1::text "
                                     "ORDER BY m.seq DESC LIMIT $2::bigint";
    pg_params p;
    p.text(topic).i64(static_cast<int64_t>(std::min<size_t>(limit, 1000000)));
    auto r = run("msg_list", sql, p, true);
    if (!r)
      return std::move(r.error());
    std::vector<message_record> out;
    for (int i = 0; i < PQntuples(r->get()); ++i)
      out.push_back(pg_message(r->get(), i));
    return out;
  }

  caf::expected<consume_result> consume(const std::string& topic, const std::string& group,
                                        size_t max, millis now,
                                        const message_policy& policy) override {
    if (max == 0)
      return consume_result{};
    return in_txn<consume_result>("consume", [&]() -> caf::expected<consume_result> {
      consume_result res;
      if (auto err = ensure_group(topic, group, now))
        return err;
      if (auto err = expire(topic, group, now, res))
        return err;
      if (auto err = dead_letter(topic, group, now, policy, res))
        return err;
      if (auto err = lease(topic, group, max, now, policy, res))
        return err;
      return res;
    });
  }

  caf::expected<message_record> acknowledge(const std::string& id, const std::string& group,
                                            millis now) override {
    return in_txn<message_record>("acknowledge", [&]() -> caf::expected<message_record> {
      auto m = get_in_txn(id);
      if (!m)
        return std::move(m.error());
      if (!*m)
        return message_not_found(id);
      if (group.empty())
        return ack_whole(**m, now);
      return ack_group(**m, group, now);
    });
  }

  caf::expected<void> remove(const std::string& id) override {
    auto r = in_txn<bool>("remove", [&]() -> caf::expected<bool> {
      pg_params p;
      p.text(id);
      auto del = run("msg_delete", "DELETE FROM messages WHERE id = $1::text", p);
      if (!del)
        return std::move(del.error());
      if (affected(*del) == 0)
        return false;
      auto dd = run("msg_delete_deliveries",
                    "DELETE FROM message_deliveries WHERE message_id = $1::text", p);
      if (!dd)
        return std::move(dd.error());
      return true;
    });
    if (!r)
      return std::move(r.error());
    if (!*r)
      return message_not_found(id);
    return caf::unit;
  }

  caf::expected<int64_t> lag() override {
    if (auto err = ensure_connection())
      return err;
    pg_params p;
    p.i64(now_millis());
    auto r = run("msg_lag", "SELECT COUNT(*) FROM message_deliveries WHERE state = 0 "
                            "AND (expires_at = 0 OR expires_at > $1::bigint)",
                 p, true);
    if (!r)
      return std::move(r.error());
    return pg_i64(r->get(), 0, 0);
  }

private:
  // -- consume steps ----------------------------------------------------------

  caf::error ensure_group(const std::string& topic, const std::string& group, millis now) {
    pg_params p;
    p.text(topic).text(group);
    auto r = run("msg_group_exists", "SELECT 1 FROM message_groups WHERE topic = $1::text "
                                     "AND group_name = $2::text",
                 p);
    if (!r)
      return std::move(r.error());
    if (PQntuples(r->get()) > 0)
      return caf::none;
    // Exclusive against publishers of the topic (they hold the shared lock):
    // every message committed before is fanned out below, every one after
    // sees the new group.
    pg_params lk;
    lk.i64(topic_lock_key(topic));
    if (auto l = run("msg_lock_exclusive", "SELECT pg_advisory_xact_lock($1::bigint)", lk); !l)
      return std::move(l.error());
    pg_params ins;
    ins.text(topic).text(group).i64(now);
    auto g = run("msg_group_insert",
                 "INSERT INTO message_groups (topic, group_name, created_at) "
                 "VALUES ($1::text, $2::text, $3::bigint) ON CONFLICT DO NOTHING RETURNING 1",
                 ins);
    if (!g)
      return std::move(g.error());
    if (PQntuples(g->get()) == 0)
      return caf::none;
    auto fan = run("msg_group_fanout",
                   "INSERT INTO message_deliveries (message_id, group_name, topic, priority, "
                   "seq, expires_at) SELECT id, $2::text, topic, priority, seq, expires_at "
                   "FROM messages WHERE topic = $1::text AND acknowledged_at = 0 AND status <> 4 "
                   "AND (expires_at = 0 OR expires_at > $3::bigint) ON CONFLICT DO NOTHING",
                   ins);
    if (!fan)
      return std::move(fan.error());
    return caf::none;
  }

  caf::error expire(const std::string& topic, const std::string& group, millis now,
                    consume_result& res) {
    pg_params p;
    p.text(topic).i64(now);
    auto r = run("msg_expire",
                 "UPDATE messages SET status = 4 WHERE id IN (SELECT id FROM messages "
                 "WHERE topic = $1::text AND expires_at <> 0 AND expires_at <= $2::bigint "
                 "AND status IN (0, 1) FOR UPDATE SKIP LOCKED)",
                 p);
    if (!r)
      return std::move(r.error());
    res.expired += static_cast<int32_t>(affected(*r));
    pg_params d;
    d.text(topic).text(group).i64(now);
    auto rd = run("msg_expire_deliveries",
                  "UPDATE message_deliveries SET state = 3 WHERE (message_id, group_name) IN "
                  "(SELECT message_id, group_name FROM message_deliveries WHERE topic = $1::text "
                  "AND group_name = $2::text AND state = 0 AND expires_at <> 0 "
                  "AND expires_at <= $3::bigint FOR UPDATE SKIP LOCKED)",
                  d);
    if (!rd)
      return std::move(rd.error());
    return caf::none;
  }

  caf::error dead_letter(const std::string& topic, const std::string& group, millis now,
                         const message_policy& policy, consume_result& res) {
    pg_params p;
    p.text(topic).text(group).i64(attempts_limit(policy)).i64(now);
    auto r = run("msg_dead_select",
                 "SELECT message_id, attempts FROM message_deliveries WHERE topic = $1::text "
                 "AND group_name = $2::text AND state = 0 AND attempts >= $3::integer "
                 "AND visible_at <= $4::bigint ORDER BY seq FOR UPDATE SKIP LOCKED",
                 p);
    if (!r)
      return std::move(r.error());
    std::vector<std::pair<std::string, int32_t>> due;
    for (int i = 0; i < PQntuples(r->get()); ++i)
      due.emplace_back(pg_text(r->get(), i, 0), static_cast<int32_t>(pg_i64(r->get(), i, 1)));
    for (auto& [id, attempts] : due) {
      auto orig = get_in_txn(id);
      if (!orig)
        return std::move(orig.error());
      if (!*orig)
        continue;
      auto ins = insert(dead_letter_copy(**orig, group, attempts, now));
      if (!ins)
        return std::move(ins.error());
      pg_params mk;
      mk.text(id).text(group);
      if (auto u = run("msg_dead_mark", "UPDATE message_deliveries SET state = 2 "
                                        "WHERE message_id = $1::text AND group_name = $2::text",
                       mk);
          !u)
        return std::move(u.error());
      pg_params f;
      f.text(id);
      if (auto u = run("msg_dead_failed",
                       "UPDATE messages SET status = 3 WHERE id = $1::text AND status <> 4 "
                       "AND acknowledged_at = 0",
                       f);
          !u)
        return std::move(u.error());
      ++res.dead_lettered;
    }
    return caf::none;
  }

  caf::error lease(const std::string& topic, const std::string& group, size_t max, millis now,
                   const message_policy& policy, consume_result& res) {
    static const std::string sql
      = std::string{"WITH c AS (SELECT message_id FROM message_deliveries WHERE topic = $4::text "
                    "AND group_name = $5::text AND state = 0 AND visible_at <= $1::bigint "
                    "AND attempts < $6::integer ORDER BY priority DESC, seq LIMIT $7::bigint "
                    "FOR UPDATE SKIP LOCKED), "
                    "u AS (UPDATE message_deliveries d SET attempts = d.attempts + 1, "
                    "delivered_at = $1::bigint, visible_at = $1::bigint + $2::bigint "
                    "+ $3::bigint * (1::bigint << LEAST(d.attempts, "}
        + std::to_string(max_backoff_exponent)
        + ")) FROM c WHERE d.message_id = c.message_id AND d.group_name = $5::text "
          "RETURNING d.message_id, d.attempts, d.seq) "
          "SELECT u.attempts, u.seq, "
        + message_cols + " FROM u JOIN messages m ON m.id = u.message_id";
    pg_params p;
    p.i64(now).i64(policy.ack_deadline).i64(std::max<millis>(0, policy.backoff_initial));
    p.text(topic).text(group).i64(attempts_limit(policy));
    p.i64(static_cast<int64_t>(std::min<size_t>(max, 1000000)));
    auto r = run("msg_lease", sql, p);
    if (!r)
      return std::move(r.error());
    std::vector<std::pair<int64_t, message_record>> out;
    for (int i = 0; i < PQntuples(r->get()); ++i) {
      auto rec = pg_message(r->get(), i, 2);
      rec.delivery_attempts = static_cast<int32_t>(pg_i64(r->get(), i, 0));
      if (rec.status == static_cast<int32_t>(message_status::pending))
        rec.status = static_cast<int32_t>(message_status::delivered);
      out.emplace_back(pg_i64(r->get(), i, 1), std::move(rec));
    }
    sort_leased(out);
    for (auto& [seq, rec] : out) {
      if (rec.delivery_attempts > 1)
        ++res.redelivered;
      res.messages.push_back(std::move(rec));
    }
    return caf::none;
  }

  // -- acknowledge --------------------------------------------------------------

  caf::expected<message_record> ack_whole(const message_record& m, millis now) {
    pg_params p;
    p.i64(now).text(m.id);
    auto u = run("msg_ack_whole", "UPDATE messages SET status = 2, acknowledged_at = $1::bigint "
                                  "WHERE id = $2::text AND acknowledged_at = 0",
                 p);
    if (!u)
      return std::move(u.error());
    if (affected(*u) > 0) {
      auto d = run("msg_ack_whole_deliveries",
                   "UPDATE message_deliveries SET state = 1, acknowledged_at = $1::bigint "
                   "WHERE message_id = $2::text AND state = 0",
                   p);
      if (!d)
        return std::move(d.error());
    }
    auto after = get_in_txn(m.id);
    if (!after)
      return std::move(after.error());
    if (!*after)
      return message_not_found(m.id);
    return std::move(**after);
  }

  caf::expected<message_record> ack_group(message_record m, const std::string& group,
                                          millis now) {
    pg_params p;
    p.text(m.id).text(group);
    auto r = run("msg_ack_select", "SELECT attempts, state, acknowledged_at "
                                   "FROM message_deliveries WHERE message_id = $1::text "
                                   "AND group_name = $2::text FOR UPDATE",
                 p);
    if (!r)
      return std::move(r.error());
    if (PQntuples(r->get()) == 0)
      return never_delivered(m.id, group);
    auto attempts = static_cast<int32_t>(pg_i64(r->get(), 0, 0));
    auto state = static_cast<int32_t>(pg_i64(r->get(), 0, 1));
    millis acked_at = pg_i64(r->get(), 0, 2);
    if (attempts == 0)
      return never_delivered(m.id, group);
    if (state == delivery_state::dead_lettered)
      return was_dead_lettered(m.id, group);
    if (state != delivery_state::acknowledged) {
      pg_params a;
      a.i64(now).text(m.id).text(group);
      if (auto u = run("msg_ack_group", "UPDATE message_deliveries SET state = 1, "
                                        "acknowledged_at = $1::bigint WHERE message_id = $2::text "
                                        "AND group_name = $3::text",
                       a);
          !u)
        return std::move(u.error());
      acked_at = now;
      pg_params w;
      w.text(m.id);
      if (auto u = run("msg_ack_group_whole",
                       "UPDATE messages SET status = 2 WHERE id = $1::text AND status IN (0, 1) "
                       "AND NOT EXISTS (SELECT 1 FROM message_deliveries "
                       "WHERE message_id = $1::text AND state = 0)",
                       w);
          !u)
        return std::move(u.error());
    }
    m.status = static_cast<int32_t>(message_status::acknowledged);
    m.acknowledged_at = acked_at;
    m.delivery_attempts = attempts;
    return m;
  }

  // -- shared writes and reads ---------------------------------------------------

  caf::expected<std::optional<message_record>> get_in_txn(const std::string& id) {
    static const std::string sql = std::string{"SELECT "} + message_cols
                                   + " FROM messages m WHERE m.id = $1::text";
    pg_params p;
    p.text(id);
    auto r = run("msg_get", sql, p, !in_txn_);
    if (!r)
      return std::move(r.error());
    if (PQntuples(r->get()) == 0)
      return std::optional<message_record>{};
    return std::optional<message_record>{pg_message(r->get(), 0)};
  }

  /// Inserts `m` and its deliveries to the topic's groups under the topic's
  /// shared advisory lock. False when the id exists (inserted concurrently).
  caf::expected<bool> insert(const message_record& m) {
    pg_params lk;
    lk.i64(topic_lock_key(m.topic));
    if (auto l = run("msg_lock_shared", "SELECT pg_advisory_xact_lock_shared($1::bigint)", lk);
        !l)
      return std::move(l.error());
    pg_params p;
    p.text(m.id).text(m.topic).text(m.payload).text(m.schema_version);
    p.text(headers_to_json(m.headers)).text(m.correlation_id).i64(m.priority);
    p.i64(m.expires_at).text(m.partition_key).i64(m.created_at != 0 ? m.created_at
                                                                    : now_millis());
    p.text(m.published_by).text(m.tenant_id);
    auto r = run("msg_insert",
                 "INSERT INTO messages (id, topic, payload, schema_version, headers, "
                 "correlation_id, priority, expires_at, partition_key, created_at, status, "
                 "acknowledged_at, published_by, tenant_id) VALUES ($1::text, $2::text, $3::text, "
                 "$4::text, $5::text, $6::text, $7::integer, $8::bigint, $9::text, $10::bigint, 0, "
                 "0, $11::text, $12::text) ON CONFLICT (id) DO NOTHING RETURNING seq",
                 p);
    if (!r)
      return std::move(r.error());
    if (PQntuples(r->get()) == 0)
      return false;
    pg_params f;
    f.text(m.id).i64(m.priority).i64(pg_i64(r->get(), 0, 0)).i64(m.expires_at).text(m.topic);
    auto fan = run("msg_fanout",
                   "INSERT INTO message_deliveries (message_id, group_name, topic, priority, seq, "
                   "expires_at) SELECT $1::text, group_name, topic, $2::integer, $3::bigint, "
                   "$4::bigint FROM message_groups WHERE topic = $5::text",
                   f);
    if (!fan)
      return std::move(fan.error());
    return true;
  }

  // -- plumbing ---------------------------------------------------------------

  static int64_t affected(const pg_result& r) {
    auto s = PQcmdTuples(r.get());
    return s != nullptr && *s != '\0' ? std::stoll(s) : 0;
  }

  std::string where() const {
    if (conn_ == nullptr)
      return "not connected";
    std::string host = PQhost(conn_) ? PQhost(conn_) : "";
    std::string port = PQport(conn_) ? PQport(conn_) : "";
    std::string db = PQdb(conn_) ? PQdb(conn_) : "";
    return host + ":" + port + "/" + db;
  }

  caf::error unavailable(const std::string& what) {
    return caf::make_error(errc::unavailable,
                           "PostgreSQL unavailable (" + where() + ") during " + what + ": "
                             + pg_trim(conn_ != nullptr ? PQerrorMessage(conn_) : ""));
  }

  caf::error ensure_connection() {
    if (conn_ == nullptr) {
      prepared_.clear();
      return connect();
    }
    if (PQstatus(conn_) == CONNECTION_OK)
      return caf::none;
    prepared_.clear();
    PQreset(conn_);
    if (PQstatus(conn_) != CONNECTION_OK)
      return unavailable("reconnect");
    PQsetNoticeProcessor(conn_, pg_quiet, nullptr);
    return caf::none;
  }

  caf::error result_error(const PGresult* r, const std::string& what) {
    last_state_ = pg_sqlstate(r);
    if (r == nullptr || PQstatus(conn_) != CONNECTION_OK || pg_state_unavailable(last_state_))
      return unavailable(what);
    if (last_state_ == "23505")
      return caf::make_error(errc::conflict, what + ": " + pg_trim(PQresultErrorMessage(r)));
    return caf::make_error(errc::store_failure,
                           "PostgreSQL " + what + ": " + pg_trim(PQresultErrorMessage(r)));
  }

  /// Executes prepared statement `name` (prepared on first use per
  /// connection). `retry`: safe to repeat once after a reset when the
  /// connection dropped (reads outside a transaction).
  caf::expected<pg_result> run(const std::string& name, const std::string& sql,
                               const pg_params& p, bool retry = false) {
    for (int attempt = 0;; ++attempt) {
      if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
        if (in_txn_)
          return unavailable(name);
        if (auto err = ensure_connection())
          return err;
      }
      if (prepared_.count(name) == 0) {
        pg_result pr{PQprepare(conn_, name.c_str(), sql.c_str(), p.size(), nullptr)};
        if (!pr || PQresultStatus(pr.get()) != PGRES_COMMAND_OK) {
          if (pg_sqlstate(pr.get()) == "42P05") {
            prepared_.insert(name);
          } else {
            auto err = result_error(pr.get(), "preparing " + name);
            if (attempt == 0 && !in_txn_ && errc_of(err) == errc::unavailable)
              continue;
            return err;
          }
        } else {
          prepared_.insert(name);
        }
      }
      auto values = p.pointers();
      pg_result r{PQexecPrepared(conn_, name.c_str(), p.size(), values.data(), nullptr, nullptr,
                                 0)};
      auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
      if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
      auto err = result_error(r.get(), name);
      if (attempt == 0 && retry && !in_txn_ && errc_of(err) == errc::unavailable
          && PQstatus(conn_) != CONNECTION_OK)
        continue;
      return err;
    }
  }

  caf::error simple(const char* sql, const std::string& what) {
    pg_result r{PQexec(conn_, sql)};
    auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
      return caf::none;
    return result_error(r.get(), what);
  }

  /// Runs `body` in one transaction; retries it (up to three times) after a
  /// deadlock or serialization failure.
  template <class T, class F>
  caf::expected<T> in_txn(const std::string& what, F body) {
    for (int attempt = 0;; ++attempt) {
      if (auto err = ensure_connection())
        return err;
      last_state_.clear();
      if (auto err = simple("BEGIN", what + " (begin)"))
        return err;
      in_txn_ = true;
      auto r = body();
      caf::error err;
      if (r)
        err = simple("COMMIT", what + " (commit)");
      else
        err = std::move(r.error());
      in_txn_ = false;
      if (!err)
        return r;
      if (PQstatus(conn_) == CONNECTION_OK
          && PQtransactionStatus(conn_) != PQTRANS_IDLE)
        pg_result{PQexec(conn_, "ROLLBACK")};
      if (attempt < 3 && pg_state_retryable(last_state_))
        continue;
      return err;
    }
  }

  std::string conninfo_;
  PGconn* conn_ = nullptr;
  std::set<std::string> prepared_;
  std::string last_state_;
  bool in_txn_ = false;
};

caf::expected<std::unique_ptr<message_store>> open_pg(const std::string& url) {
  auto st = std::make_unique<pg_message_store>(url);
  if (auto err = st->connect())
    return err;
  if (auto err = st->check_schema())
    return err;
  return std::unique_ptr<message_store>{std::move(st)};
}

} // namespace

caf::expected<std::unique_ptr<message_store>> open_sql_message_store(const std::string& url) {
  auto loc = detail::parse_store_url(url);
  if (!loc)
    return std::move(loc.error());
  return loc->sqlite ? open_sqlite(loc->target) : open_pg(loc->target);
}

} // namespace hotswap
