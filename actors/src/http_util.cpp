// Helpers of the HTTP seam: header lookup and the JSON response builders.

#include "hotswap/actors/http_types.hpp"

#include <boost/json.hpp>

namespace hotswap {

const char* status_title(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status >= 500 ? "Server Error" : "Client Error";
  }
}

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto x = static_cast<unsigned char>(a[i]);
    auto y = static_cast<unsigned char>(b[i]);
    if (x >= 'A' && x <= 'Z')
      x = static_cast<unsigned char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z')
      y = static_cast<unsigned char>(y - 'A' + 'a');
    if (x != y)
      return false;
  }
  return true;
}

} // namespace

std::string http_request::header(std::string_view name) const {
  // Names are stored lower-case; compare case-insensitively anyway so that a
  // caller passing "Authorization" is not silently wrong.
  for (const auto& [key, value] : headers)
    if (iequals(key, name))
      return value;
  return {};
}

http_response problem(int status, const std::string& title, const std::string& detail,
                      const std::string& trace_id,
                      const std::map<std::string, std::vector<std::string>>& errors) {
  const std::string effective_title = title.empty() ? status_title(status) : title;
  boost::json::object obj;
  obj["type"] = "https://httpstatuses.io/" + std::to_string(status);
  obj["title"] = effective_title;
  obj["status"] = status;
  obj["detail"] = detail;
  obj["traceId"] = trace_id;
  if (!errors.empty()) {
    boost::json::object errs;
    for (const auto& [field, messages] : errors) {
      boost::json::array arr;
      for (const auto& msg : messages)
        arr.emplace_back(msg);
      errs[field] = std::move(arr);
    }
    obj["errors"] = std::move(errs);
  }
  // Legacy clients of the HotSwap.Distributed v1 API read these two.
  obj["error"] = effective_title;
  obj["message"] = detail;
  http_response res;
  res.status = status;
  res.content_type = "application/problem+json";
  res.body = boost::json::serialize(obj);
  return res;
}

http_response json_response(int status, std::string body) {
  http_response res;
  res.status = status;
  res.content_type = "application/json";
  res.body = std::move(body);
  return res;
}

} // namespace hotswap
