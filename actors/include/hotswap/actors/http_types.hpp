#pragma once

// The seam between the Beast server (http_server.hpp, io threads) and the
// bridge actor that routes requests to actors (api.hpp).

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hotswap {

struct http_request {
  std::string method;                   ///< "GET", "POST", ...
  std::string target;                   ///< raw request target
  std::string path;                     ///< target without query, percent-decoded
  std::map<std::string, std::string> query; ///< decoded query parameters (last wins)
  std::vector<std::pair<std::string, std::string>> headers; ///< names lower-case
  std::string body;
  std::string peer_address;             ///< remote IP of the TCP peer
  std::string request_id;               ///< X-Request-Id (incoming, or generated)
  std::string trace_id;                 ///< W3C traceparent trace id (incoming, or generated)
  bool tls = false;

  /// Value of header `name` (lower-case), or empty.
  std::string header(std::string_view name) const;
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool close = false;                   ///< send Connection: close and close after writing
};

/// One request in flight. The server creates it on an io thread; whoever
/// handles it calls respond() exactly once, from any thread. respond()
/// posts the write to the connection's executor and never blocks.
class http_exchange {
public:
  using responder = std::function<void(http_response)>;

  http_exchange(http_request req, responder r)
    : request_(std::move(req)), responder_(std::move(r)),
      started_(std::chrono::steady_clock::now()) {
  }

  const http_request& request() const {
    return request_;
  }

  /// Sends the response; later calls are ignored. Returns false if ignored.
  bool respond(http_response res) {
    if (responded_.exchange(true))
      return false;
    responder_(std::move(res));
    return true;
  }

  bool responded() const {
    return responded_.load();
  }

  std::chrono::steady_clock::time_point started() const {
    return started_;
  }

  /// The route template that matched (bounded label for metrics), set by
  /// the router; "unmatched" when no route matched.
  void set_route(std::string r) {
    route_ = std::move(r);
  }

  const std::string& route() const {
    return route_;
  }

private:
  http_request request_;
  responder responder_;
  std::chrono::steady_clock::time_point started_;
  std::atomic<bool> responded_{false};
  std::string route_ = "unmatched";
};

using http_exchange_ptr = std::shared_ptr<http_exchange>;

/// The reason phrase used as problem title for `status` ("Not Found", ...).
const char* status_title(int status);

/// Builds an application/problem+json response with the legacy `error` and
/// `message` fields. `errors` maps field names to messages (validation).
http_response problem(int status, const std::string& title, const std::string& detail,
                      const std::string& trace_id,
                      const std::map<std::string, std::vector<std::string>>& errors = {});

/// Builds a JSON response from serialized JSON text.
http_response json_response(int status, std::string body);

} // namespace hotswap
