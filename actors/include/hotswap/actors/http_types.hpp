#pragma once

// The seam between the Beast server (http_server.hpp, io threads) and the
// bridge actor that routes requests to actors (api.hpp).

#include <atomic>
#include <cstdint>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hotswap {

class ws_handler;

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
  /// A WebSocket opening handshake (GET with Upgrade: websocket, version 13):
  /// the handler may answer with http_response::upgrade set.
  bool websocket = false;

  /// Value of header `name` (lower-case), or empty.
  std::string header(std::string_view name) const;
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool close = false;                   ///< send Connection: close and close after writing
  /// Accepts a WebSocket opening handshake (request.websocket): the server
  /// completes the handshake (101) instead of writing this response, then
  /// drives `upgrade` with the connection. Ignored (500) for other requests.
  std::shared_ptr<ws_handler> upgrade;
};

/// A WebSocket connection accepted by the server. Thread-safe; never blocks.
class ws_connection {
public:
  virtual ~ws_connection() = default;

  /// Queues one text message. Returns false after close, and when the send
  /// buffer is full: the server then closes the connection with 1008 and a
  /// reason saying the client is too slow (it never grows without bound).
  virtual bool send(std::string text) = 0;

  /// Sends a close frame with `code` and `reason` after the queued
  /// messages, then closes. Idempotent.
  virtual void close(uint16_t code, std::string reason) = 0;
};

using ws_connection_ptr = std::shared_ptr<ws_connection>;

/// The application side of one WebSocket (given in http_response::upgrade).
/// Called on io threads, one call at a time per connection; must not block.
class ws_handler {
public:
  virtual ~ws_handler() = default;

  /// Once, after the handshake completed.
  virtual void on_open(ws_connection_ptr conn) = 0;

  /// Each text message from the client, in order.
  virtual void on_text(std::string text) = 0;

  /// Once, when the connection ended for any reason (after on_open; also
  /// when the handshake failed, with code 1006).
  ///
  /// `code`: that of the close frame the server sent (ws_connection::close,
  /// 1008 too slow, 1009 message too big, 1003 binary message, 1001 drain or
  /// stop), else the client's (1005 if its frame had none), else 1006.
  /// Every handler given to the server in http_response::upgrade gets it,
  /// also when the handshake never happened (1006: the request was no
  /// handshake, or the connection or the server went away first); in that
  /// case it may run on the thread that called http_exchange::respond().
  virtual void on_close(uint16_t code, std::string reason) = 0;
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
