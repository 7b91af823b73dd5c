#include "hotswap/runtime/store.hpp"

#include <chrono>

#include <boost/json.hpp>

#include "store_impl.hpp"

namespace hotswap {

store::~store() = default;

millis now_millis() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

namespace {

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

} // namespace

caf::expected<std::unique_ptr<store>> open_store(const std::string& url) {
  static constexpr char sqlite_prefix[] = "sqlite://";
  if (starts_with(url, sqlite_prefix)) {
    auto path = url.substr(sizeof(sqlite_prefix) - 1);
    if (path.empty())
      return caf::make_error(errc::config_invalid,
                             "store url '" + url + "' has no path (use sqlite://PATH)");
    return detail::open_sqlite_store(path);
  }
  if (starts_with(url, "postgresql://") || starts_with(url, "postgres://"))
    return detail::open_pg_store(url);
  return caf::make_error(errc::config_invalid,
                         "unsupported store url '" + url
                           + "' (expected sqlite://PATH or postgresql://...)");
}

namespace detail {

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
