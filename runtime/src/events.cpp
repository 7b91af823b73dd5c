#include "hotswap/runtime/events.hpp"

#include <charconv>
#include <string_view>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/store.hpp"

#include "store_impl.hpp"

namespace hotswap {

event_log::~event_log() = default;

namespace {

std::optional<uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 20)
    return std::nullopt;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size())
    return std::nullopt;
  return v;
}

} // namespace

std::optional<std::pair<uint64_t, uint64_t>> parse_event_id(const std::string& id) {
  auto dash = id.find('-');
  if (dash == std::string::npos) {
    if (auto n = parse_u64(id))
      return std::make_pair(*n, uint64_t{0});
    return std::nullopt;
  }
  auto a = parse_u64(std::string_view{id}.substr(0, dash));
  auto b = parse_u64(std::string_view{id}.substr(dash + 1));
  if (!a || !b)
    return std::nullopt;
  return std::make_pair(*a, *b);
}

bool event_id_less(const std::string& a, const std::string& b) {
  auto x = parse_event_id(a);
  auto y = parse_event_id(b);
  if (!x || !y)
    return a < b;
  return *x < *y;
}

namespace {

// -- SQLite --------------------------------------------------------------------

constexpr const char* event_cols
  = "seq, at, type, execution_id, tenant_id, status, stage, progress, details";

class sqlite_event_log final : public event_log {
public:
  sqlite_event_log(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {
  }

  ~sqlite_event_log() override {
    sqlite3_close_v2(db_);
  }

  caf::expected<std::vector<event_record>> append(std::vector<event_record> evs) override {
    if (evs.empty())
      return evs;
    if (auto err = exec("BEGIN IMMEDIATE", "append"))
      return err;
    stmt s{db_, "INSERT INTO events (at, type, execution_id, tenant_id, status, stage, progress, "
                "details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"};
    if (!s.ok()) {
      exec("ROLLBACK", "append");
      return fail(s.rc, "append");
    }
    auto now = now_millis();
    for (auto& ev : evs) {
      if (ev.timestamp == 0)
        ev.timestamp = now;
      sqlite3_reset(s.get());
      sqlite3_bind_int64(s.get(), 1, ev.timestamp);
      bind(s.get(), 2, ev.type);
      bind(s.get(), 3, ev.execution_id);
      bind(s.get(), 4, ev.tenant_id);
      bind(s.get(), 5, ev.status);
      bind(s.get(), 6, ev.stage);
      sqlite3_bind_int(s.get(), 7, ev.progress);
      bind(s.get(), 8, ev.details.empty() ? std::string{"{}"} : ev.details);
      auto rc = sqlite3_step(s.get());
      if (rc != SQLITE_DONE) {
        exec("ROLLBACK", "append");
        return fail(rc, "append");
      }
      ev.id = std::to_string(sqlite3_last_insert_rowid(db_));
    }
    if (auto err = exec("COMMIT", "append")) {
      exec("ROLLBACK", "append");
      return err;
    }
    return evs;
  }

  caf::expected<std::vector<event_record>> read_after(const std::string& after, size_t limit,
                                                      int) override {
    int64_t from = 0;
    if (!after.empty()) {
      auto pos = parse_event_id(after);
      if (!pos || pos->second != 0 || pos->first > INT64_MAX)
        return caf::make_error(errc::invalid_argument, "'" + after + "' is not an event id");
      from = static_cast<int64_t>(pos->first);
    }
    stmt s{db_, std::string{"SELECT "} + event_cols
                  + " FROM events WHERE seq > ? ORDER BY seq LIMIT ?"};
    if (!s.ok())
      return fail(s.rc, "read");
    sqlite3_bind_int64(s.get(), 1, from);
    sqlite3_bind_int64(s.get(), 2, static_cast<int64_t>(limit));
    std::vector<event_record> out;
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      event_record ev;
      ev.id = std::to_string(sqlite3_column_int64(s.get(), 0));
      ev.timestamp = sqlite3_column_int64(s.get(), 1);
      ev.type = text(s.get(), 2);
      ev.execution_id = text(s.get(), 3);
      ev.tenant_id = text(s.get(), 4);
      ev.status = text(s.get(), 5);
      ev.stage = text(s.get(), 6);
      ev.progress = sqlite3_column_int(s.get(), 7);
      ev.details = text(s.get(), 8);
      out.push_back(std::move(ev));
    }
    if (rc != SQLITE_DONE)
      return fail(rc, "read");
    return out;
  }

  caf::expected<int64_t> trim(millis before) override {
    stmt s{db_, "DELETE FROM events WHERE at < ?"};
    if (!s.ok())
      return fail(s.rc, "trim");
    sqlite3_bind_int64(s.get(), 1, before);
    auto rc = sqlite3_step(s.get());
    if (rc != SQLITE_DONE)
      return fail(rc, "trim");
    return static_cast<int64_t>(sqlite3_changes(db_));
  }

  caf::expected<std::string> last_id() override {
    stmt s{db_, "SELECT COALESCE(MAX(seq), 0) FROM events"};
    if (!s.ok())
      return fail(s.rc, "last id");
    auto rc = sqlite3_step(s.get());
    if (rc != SQLITE_ROW)
      return fail(rc, "last id");
    auto v = sqlite3_column_int64(s.get(), 0);
    return v == 0 ? std::string{} : std::to_string(v);
  }

  bool shared() const override {
    return false;
  }

private:
  struct stmt {
    stmt(sqlite3* db, const std::string& sql) {
      rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr);
    }
    ~stmt() {
      sqlite3_finalize(s);
    }
    stmt(const stmt&) = delete;
    stmt& operator=(const stmt&) = delete;
    bool ok() const {
      return rc == SQLITE_OK;
    }
    sqlite3_stmt* get() const {
      return s;
    }
    sqlite3_stmt* s = nullptr;
    int rc = SQLITE_OK;
  };

  static void bind(sqlite3_stmt* s, int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }

  static std::string text(sqlite3_stmt* s, int i) {
    auto p = sqlite3_column_text(s, i);
    return p ? std::string{reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(s, i))}
             : std::string{};
  }

  caf::error fail(int rc, const char* what) const {
    auto code = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED
                    || (rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN
                  ? errc::unavailable
                  : errc::store_failure;
    return caf::make_error(code, "event log " + path_ + ": " + what + ": " + sqlite3_errmsg(db_));
  }

  caf::error exec(const char* sql, const char* what) {
    char* msg = nullptr;
    auto rc = sqlite3_exec(db_, sql, nullptr, nullptr, &msg);
    if (rc == SQLITE_OK)
      return caf::none;
    std::string text = msg ? msg : sqlite3_errstr(rc);
    sqlite3_free(msg);
    return caf::make_error((rc & 0xff) == SQLITE_BUSY ? errc::unavailable : errc::store_failure,
                           "event log " + path_ + ": " + what + ": " + text);
  }

  sqlite3* db_;
  std::string path_;
};

// -- PostgreSQL ---------------------------------------------------------------------

struct result_deleter {
  void operator()(PGresult* r) const {
    PQclear(r);
  }
};

using result_ptr = std::unique_ptr<PGresult, result_deleter>;

class pg_event_log final : public event_log {
public:
  explicit pg_event_log(std::string url) : url_(std::move(url)) {
  }

  ~pg_event_log() override {
    if (conn_ != nullptr)
      PQfinish(conn_);
  }

  caf::expected<std::vector<event_record>> append(std::vector<event_record> evs) override {
    if (evs.empty())
      return evs;
    auto now = now_millis();
    // One statement: a multi-row INSERT ... RETURNING keeps the batch atomic
    // and its seq values in the order of the rows.
    std::string sql = "INSERT INTO events (at, type, execution_id, tenant_id, status, stage, "
                      "progress, details) VALUES ";
    std::vector<std::string> values;
    values.reserve(evs.size() * 8);
    for (size_t i = 0; i < evs.size(); ++i) {
      auto& ev = evs[i];
      if (ev.timestamp == 0)
        ev.timestamp = now;
      auto base = i * 8;
      sql += i ? ",(" : "(";
      for (size_t k = 1; k <= 8; ++k) {
        sql += "$" + std::to_string(base + k);
        sql += k < 8 ? "," : ")";
      }
      values.push_back(std::to_string(ev.timestamp));
      values.push_back(ev.type);
      values.push_back(ev.execution_id);
      values.push_back(ev.tenant_id);
      values.push_back(ev.status);
      values.push_back(ev.stage);
      values.push_back(std::to_string(ev.progress));
      values.push_back(ev.details.empty() ? std::string{"{}"} : ev.details);
    }
    sql += " RETURNING seq";
    auto r = run(sql, values, PGRES_TUPLES_OK, "append");
    if (!r)
      return std::move(r.error());
    if (PQntuples(r->get()) != static_cast<int>(evs.size()))
      return caf::make_error(errc::store_failure, "event log: append returned a wrong row count");
    for (size_t i = 0; i < evs.size(); ++i)
      evs[i].id = PQgetvalue(r->get(), static_cast<int>(i), 0);
    return evs;
  }

  caf::expected<std::vector<event_record>> read_after(const std::string& after, size_t limit,
                                                      int) override {
    uint64_t from = 0;
    if (!after.empty()) {
      auto pos = parse_event_id(after);
      if (!pos || pos->second != 0 || pos->first > INT64_MAX)
        return caf::make_error(errc::invalid_argument, "'" + after + "' is not an event id");
      from = pos->first;
    }
    auto r = run(std::string{"SELECT "} + event_cols
                   + " FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                 {std::to_string(from), std::to_string(limit)}, PGRES_TUPLES_OK, "read");
    if (!r)
      return std::move(r.error());
    std::vector<event_record> out;
    auto rows = PQntuples(r->get());
    out.reserve(static_cast<size_t>(rows));
    for (int i = 0; i < rows; ++i) {
      auto g = [&](int c) { return std::string{PQgetvalue(r->get(), i, c)}; };
      event_record ev;
      ev.id = g(0);
      ev.timestamp = std::stoll(g(1));
      ev.type = g(2);
      ev.execution_id = g(3);
      ev.tenant_id = g(4);
      ev.status = g(5);
      ev.stage = g(6);
      ev.progress = std::stoi(g(7));
      ev.details = g(8);
      out.push_back(std::move(ev));
    }
    return out;
  }

  caf::expected<int64_t> trim(millis before) override {
    auto r = run("DELETE FROM events WHERE at < $1", {std::to_string(before)}, PGRES_COMMAND_OK,
                 "trim");
    if (!r)
      return std::move(r.error());
    return std::stoll(PQcmdTuples(r->get()));
  }

  caf::expected<std::string> last_id() override {
    auto r = run("SELECT COALESCE(MAX(seq), 0) FROM events", {}, PGRES_TUPLES_OK, "last id");
    if (!r)
      return std::move(r.error());
    std::string v = PQgetvalue(r->get(), 0, 0);
    return v == "0" ? std::string{} : v;
  }

  bool shared() const override {
    return false;
  }

  caf::error connect() {
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK)
      return caf::none;
    if (conn_ != nullptr)
      PQfinish(conn_);
    conn_ = detail::pg_connect(url_, "hotswap-events");
    if (conn_ == nullptr)
      return caf::make_error(errc::unavailable, "event log: out of memory while connecting");
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(conn_);
      PQfinish(conn_);
      conn_ = nullptr;
      return caf::make_error(errc::unavailable, "event log: cannot connect: " + msg);
    }
    return caf::none;
  }

private:
  caf::expected<result_ptr> run(const std::string& sql, const std::vector<std::string>& values,
                                ExecStatusType expected, const char* what) {
    if (auto err = connect())
      return err;
    std::vector<const char*> ptrs;
    ptrs.reserve(values.size());
    for (auto& v : values)
      ptrs.push_back(v.c_str());
    result_ptr r{PQexecParams(conn_, sql.c_str(), static_cast<int>(ptrs.size()), nullptr,
                              ptrs.data(), nullptr, nullptr, 0)};
    if (PQresultStatus(r.get()) == expected)
      return r;
    std::string msg = PQerrorMessage(conn_);
    if (PQstatus(conn_) != CONNECTION_OK) {
      PQfinish(conn_);
      conn_ = nullptr;
      return caf::make_error(errc::unavailable, std::string{"event log: "} + what + ": " + msg);
    }
    return caf::make_error(errc::store_failure, std::string{"event log: "} + what + ": " + msg);
  }

  std::string url_;
  PGconn* conn_ = nullptr;
};

} // namespace

caf::expected<std::unique_ptr<event_log>> open_sql_event_log(const std::string& url) {
  auto loc = detail::parse_store_url(url);
  if (!loc)
    return std::move(loc.error());
  if (loc->sqlite) {
    auto db = detail::open_sqlite_connection(loc->target, "event log");
    if (!db)
      return std::move(db.error());
    return std::unique_ptr<event_log>{std::make_unique<sqlite_event_log>(*db, loc->target)};
  }
  auto log = std::make_unique<pg_event_log>(loc->target);
  // A server that is down now is not fatal: every call reconnects.
  log->connect();
  return std::unique_ptr<event_log>{std::move(log)};
}

} // namespace hotswap
