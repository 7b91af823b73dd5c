#pragma once

// Small Boost.JSON helpers shared by the API and entity state code.

#include <cstdint>
#include <string>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "hotswap/runtime/records.hpp"

namespace hotswap {

/// "2026-11-27T07:14:25.123Z".
std::string rfc3339(millis t);

/// rfc3339(t), or JSON null when t == 0.
boost::json::value rfc3339_or_null(millis t);

/// Parses RFC 3339 (with 'Z' or an offset, optional fraction); 0 on failure
/// or empty input; `ok` (if given) tells which.
millis parse_rfc3339(const std::string& text, bool* ok = nullptr);

/// A loose but practical e-mail check: local@domain.tld, no spaces, <= 254.
bool valid_email(const std::string& s);

/// The string at key, or "" when absent or not a string.
std::string get_string(const boost::json::object& o, const char* key);

/// The integer at key, or 0 when absent or not an integer.
int64_t get_int(const boost::json::object& o, const char* key);

} // namespace hotswap
