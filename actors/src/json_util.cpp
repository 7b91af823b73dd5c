#include "hotswap/actors/json_util.hpp"

#include <cstdio>
#include <ctime>
#include <regex>

namespace hotswap {

std::string rfc3339(millis t) {
  auto secs = static_cast<time_t>(t / 1000);
  auto ms = static_cast<int>(t % 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

boost::json::value rfc3339_or_null(millis t) {
  if (t == 0)
    return nullptr;
  return boost::json::value(rfc3339(t));
}

millis parse_rfc3339(const std::string& text, bool* ok) {
  static const std::regex re{
    R"(^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.(\d{1,9}))?([Zz]|([+-])(\d{2}):(\d{2}))$)"};
  std::smatch m;
  if (ok)
    *ok = false;
  if (text.empty() || !std::regex_match(text, m, re))
    return 0;
  std::tm tm{};
  tm.tm_year = std::stoi(m[1]) - 1900;
  tm.tm_mon = std::stoi(m[2]) - 1;
  tm.tm_mday = std::stoi(m[3]);
  tm.tm_hour = std::stoi(m[4]);
  tm.tm_min = std::stoi(m[5]);
  tm.tm_sec = std::stoi(m[6]);
  if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23
      || tm.tm_min > 59 || tm.tm_sec > 60)
    return 0;
  auto secs = static_cast<int64_t>(timegm(&tm));
  int64_t ms = 0;
  if (m[8].matched) {
    auto frac = m[8].str() + "00";
    ms = std::stoi(frac.substr(0, 3));
  }
  if (m[10].matched) {
    auto off = (std::stoi(m[11]) * 60 + std::stoi(m[12])) * 60;
    secs += m[10] == "+" ? -off : off;
  }
  if (ok)
    *ok = true;
  return secs * 1000 + ms;
}

bool valid_email(const std::string& s) {
  static const std::regex re{R"(^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$)"};
  return s.size() <= 254 && std::regex_match(s, re);
}

std::string get_string(const boost::json::object& o, const char* key) {
  if (auto v = o.if_contains(key); v && v->is_string())
    return std::string(v->as_string());
  return {};
}

int64_t get_int(const boost::json::object& o, const char* key) {
  if (auto v = o.if_contains(key)) {
    if (v->is_int64())
      return v->as_int64();
    if (v->is_uint64())
      return static_cast<int64_t>(v->as_uint64());
  }
  return 0;
}

} // namespace hotswap
