#include "hotswap/runtime/store.hpp"

#include <chrono>

#include <boost/json.hpp>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "store_impl.hpp"

namespace hotswap {

store::~store() = default;

millis now_millis() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

caf::expected<std::unique_ptr<store>> open_store(const std::string& url) {
  auto loc = detail::parse_store_url(url);
  if (!loc)
    return std::move(loc.error());
  return loc->sqlite ? detail::open_sqlite_store(loc->target) : detail::open_pg_store(loc->target);
}

namespace detail {

caf::expected<store_location> parse_store_url(const std::string& url) {
  static constexpr char sqlite_prefix[] = "sqlite://";
  auto starts_with = [&](const char* prefix) { return url.rfind(prefix, 0) == 0; };
  if (starts_with(sqlite_prefix)) {
    auto path = url.substr(sizeof(sqlite_prefix) - 1);
    if (path.empty())
      return caf::make_error(errc::config_invalid,
                             "store url '" + url + "' has no path (use sqlite://PATH)");
    return store_location{true, std::move(path)};
  }
  if (starts_with("postgresql://") || starts_with("postgres://"))
    return store_location{false, url};
  return caf::make_error(errc::config_invalid,
                         "unsupported store url '" + url
                           + "' (expected sqlite://PATH or postgresql://...)");
}

pg_conn* pg_connect(const std::string& conninfo, const char* application_name,
                    const char* options) {
  // Defaults first: settings in the URL ("dbname" expanded last) override them.
  const char* keys[] = {"connect_timeout", "application_name", "keepalives_idle",
                        "keepalives_interval", "keepalives_count", "options", "dbname", nullptr};
  const char* vals[] = {"5", application_name, "15", "5", "3", options != nullptr ? options : "",
                        conninfo.c_str(), nullptr};
  auto c = PQconnectdbParams(keys, vals, 1);
  if (c != nullptr)
    PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
  return c;
}

caf::expected<sqlite3*> open_sqlite_connection(const std::string& path, const std::string& what) {
  sqlite3* db = nullptr;
  auto rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                            nullptr);
  if (rc != SQLITE_OK) {
    std::string text = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return caf::make_error(errc::unavailable, what + " " + path + ": cannot open: " + text);
  }
  sqlite3_busy_timeout(db, 5000);
  char* msg = nullptr;
  rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", nullptr, nullptr,
                    &msg);
  if (rc != SQLITE_OK) {
    std::string text = msg ? msg : sqlite3_errstr(rc);
    sqlite3_free(msg);
    sqlite3_close_v2(db);
    return caf::make_error(errc::unavailable, what + " " + path + ": configuring: " + text);
  }
  return db;
}

std::string roles_to_json(const std::vector<std::string>& roles) {
  boost::json::array arr;
  for (auto& r : roles)
    arr.emplace_back(boost::json::string_view{r});
  return boost::json::serialize(arr);
}

std::vector<std::string> roles_from_json(const std::string& text) {
  std::vector<std::string> out;
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec || !v.is_array())
    return out;
  for (auto& x : v.as_array())
    if (x.is_string())
      out.emplace_back(x.as_string().c_str(), x.as_string().size());
  return out;
}

std::string ascii_lower(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::string fenced_message(const std::string& kind, const std::string& id, int64_t stored,
                           int64_t attempted) {
  return "write to " + kind + "/" + id + " fenced: stored epoch " + std::to_string(stored)
         + " is higher than the writer's epoch " + std::to_string(attempted);
}

} // namespace detail

} // namespace hotswap
