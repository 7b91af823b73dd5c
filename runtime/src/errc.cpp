#include "hotswap/runtime/errc.hpp"

#include "caf/message.hpp"
#include "caf/sec.hpp"

namespace hotswap {

std::string to_string(errc x) {
  switch (x) {
    case errc::none: return "none";
    case errc::invalid_argument: return "invalid_argument";
    case errc::not_found: return "not_found";
    case errc::conflict: return "conflict";
    case errc::fenced: return "fenced";
    case errc::unauthorized: return "unauthorized";
    case errc::forbidden: return "forbidden";
    case errc::rate_limited: return "rate_limited";
    case errc::unavailable: return "unavailable";
    case errc::store_failure: return "store_failure";
    case errc::config_invalid: return "config_invalid";
    case errc::payload_too_large: return "payload_too_large";
    case errc::timeout: return "timeout";
    case errc::internal: return "internal";
    case errc::not_owner: return "not_owner";
    case errc::module_failure: return "module_failure";
  }
  return "unknown";
}

int http_status(errc x) {
  switch (x) {
    case errc::none: return 200;
    case errc::invalid_argument: return 400;
    case errc::unauthorized: return 401;
    case errc::forbidden: return 403;
    case errc::not_found: return 404;
    case errc::conflict: return 409;
    case errc::payload_too_large: return 413;
    case errc::rate_limited: return 429;
    case errc::fenced: return 503;
    case errc::not_owner: return 503;
    case errc::module_failure: return 502;
    case errc::unavailable: return 503;
    case errc::timeout: return 504;
    case errc::store_failure: return 503;
    case errc::config_invalid: return 500;
    case errc::internal: return 500;
  }
  return 500;
}

errc errc_of(const caf::error& e) {
  if (!e)
    return errc::none;
  if (e.category() == caf::atom("hotswap"))
    return static_cast<errc>(e.code());
  if (e.category() == caf::atom("system")) {
    auto s = static_cast<caf::sec>(e.code());
    if (s == caf::sec::request_timeout)
      return errc::timeout;
    if (s == caf::sec::request_receiver_down)
      return errc::unavailable;
  }
  return errc::internal;
}

std::string error_detail(const caf::error& e) {
  const auto& ctx = e.context();
  if (ctx.size() > 0 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return {};
}

} // namespace hotswap
