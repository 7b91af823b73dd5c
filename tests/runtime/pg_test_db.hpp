#pragma once

// PostgreSQL administration for the runtime suites that run on a real server
// (HOTSWAP_TEST_PG_URL, started by scripts/services.sh): one scratch database
// per test.

#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "caf/test/dsl.hpp"

namespace hotswap::test {

/// HOTSWAP_TEST_PG_URL, or "" when unset.
inline std::string pg_admin_url() {
  auto p = std::getenv("HOTSWAP_TEST_PG_URL");
  return p != nullptr ? std::string{p} : std::string{};
}

/// Replaces the database name of a libpq URI (or appends dbname=...).
inline std::string with_dbname(const std::string& url, const std::string& db) {
  auto p = url.find("://");
  if (p == std::string::npos)
    return url + " dbname=" + db;
  auto slash = url.find('/', p + 3);
  auto q = url.find('?', p + 3);
  std::string query = q != std::string::npos ? url.substr(q) : std::string{};
  size_t end = url.size();
  if (slash != std::string::npos && (q == std::string::npos || slash < q))
    end = slash;
  else if (q != std::string::npos)
    end = q;
  return url.substr(0, end) + "/" + db + query;
}

/// Runs `sql` on `url`; returns the first value of the first row (or "") and
/// reports errors through `err`.
inline std::string pg_exec(const std::string& url, const std::string& sql, std::string& err) {
  err.clear();
  PGconn* c = PQconnectdb(url.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    err = PQerrorMessage(c);
    if (err.empty())
      err = "connection failed";
    PQfinish(c);
    return {};
  }
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
  PGresult* r = PQexec(c, sql.c_str());
  std::string out;
  auto st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    err = PQresultErrorMessage(r);
  else if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
    out = PQgetvalue(r, 0, 0);
  PQclear(r);
  PQfinish(c);
  return out;
}

/// A fresh database on the test server, dropped when destroyed. The caller
/// checks first that pg_admin_url() is set (with its own message).
class scratch_pg_database {
public:
  explicit scratch_pg_database(const std::string& prefix) : admin_(pg_admin_url()) {
    static std::atomic<int> counter{0};
    name_ = prefix + std::to_string(getpid()) + "_" + std::to_string(++counter);
    std::string err;
    pg_exec(admin_, "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)", err);
    pg_exec(admin_, "CREATE DATABASE " + name_, err);
    if (!err.empty())
      CAF_FAIL("cannot create test database " << name_ << " on " << admin_ << ": " << err);
  }

  scratch_pg_database(const scratch_pg_database&) = delete;
  scratch_pg_database& operator=(const scratch_pg_database&) = delete;

  ~scratch_pg_database() {
    std::string err;
    pg_exec(admin_, "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)", err);
  }

  const std::string& admin_url() const {
    return admin_;
  }

  const std::string& name() const {
    return name_;
  }

  std::string url() const {
    return with_dbname(admin_, name_);
  }

  /// Kills every server session on the database (a server restart or a
  /// network cut, as the clients see it).
  void terminate_sessions() const {
    std::string err;
    pg_exec(admin_,
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
            "WHERE datname = '"
              + name_ + "' AND pid <> pg_backend_pid()",
            err);
    if (!err.empty())
      CAF_FAIL("pg_terminate_backend failed: " << err);
  }

private:
  std::string admin_;
  std::string name_;
};

} // namespace hotswap::test
