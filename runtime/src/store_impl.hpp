#pragma once

// Private to the store implementations (store.cpp, sqlite_store.cpp,
// pg_store.cpp): constructors of the two back ends and small helpers shared
// by both.

#include <memory>
#include <string>
#include <vector>

#include "caf/error.hpp"
#include "caf/expected.hpp"

struct sqlite3;
struct pg_conn;

#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/store.hpp"

namespace hotswap::detail {

/// Opens an SQLite store at `path` (`:memory:` allowed). Creates the parent
/// directory of `path` when missing.
caf::expected<std::unique_ptr<store>> open_sqlite_store(const std::string& path);

/// Opens a PostgreSQL store with a libpq connection string or URI.
caf::expected<std::unique_ptr<store>> open_pg_store(const std::string& conninfo);

/// Where a store URL points: an SQLite file or a PostgreSQL server.
struct store_location {
  bool sqlite = false;
  std::string target; ///< the SQLite path, or the whole libpq URI
};

/// Parses `sqlite://PATH` or `postgresql://...` (also `postgres://`);
/// errc::config_invalid naming the URL otherwise.
caf::expected<store_location> parse_store_url(const std::string& url);

/// Opens one more connection to the SQLite file of a store (the event log and
/// the message queue have their own): read-write, not created here, with the
/// store's pragmas (WAL, synchronous FULL, busy timeout 5 s). `what` names
/// the user in errors. The caller owns the handle (sqlite3_close_v2).
caf::expected<sqlite3*> open_sqlite_connection(const std::string& path, const std::string& what);

/// Opens a libpq connection to `conninfo` with the store's defaults (connect
/// timeout 5 s, keepalives that reveal a silently dead server within ~30 s,
/// `application_name`, optional server `options`); settings in `conninfo`
/// override them. Quiets NOTICEs. nullptr only when out of memory; check
/// PQstatus for the rest.
pg_conn* pg_connect(const std::string& conninfo, const char* application_name,
                    const char* options = nullptr);

/// Encodes roles as a JSON array of strings.
std::string roles_to_json(const std::vector<std::string>& roles);

/// Decodes a JSON array of strings; anything else yields an empty list.
std::vector<std::string> roles_from_json(const std::string& text);

/// Lower-cases ASCII letters (user names are compared case-insensitively).
std::string ascii_lower(std::string s);

/// Clamps audit paging: page_size into 1..100, page_number >= 1.
inline void audit_paging(int32_t page_number, int32_t page_size, int64_t& limit,
                         int64_t& offset) {
  int64_t size = page_size < 1 ? 1 : (page_size > 100 ? 100 : page_size);
  int64_t number = page_number < 1 ? 1 : page_number;
  limit = size;
  offset = (number - 1) * size;
}

/// Clamps snapshot listing: limit into 1..1000, offset >= 0.
inline void list_paging(int32_t lim, int32_t off, int64_t& limit, int64_t& offset) {
  limit = lim < 1 ? 1 : (lim > 1000 ? 1000 : lim);
  offset = off < 0 ? 0 : off;
}

/// The message of a fenced write.
std::string fenced_message(const std::string& kind, const std::string& id, int64_t stored,
                           int64_t attempted);

} // namespace hotswap::detail
