#pragma once

// The Beast HTTP/1.1 listener of the api role. It runs on its own io_context
// threads (never on CAF's scheduler), parses requests into http_exchange
// objects and hands them to a dispatch callback (in the product: a message to
// the bridge actor). Responses come back through http_exchange::respond() from
// any thread and are posted to the connection's strand.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "caf/expected.hpp"

#include "hotswap/actors/http_types.hpp"

namespace hotswap {

class node_metrics;

struct http_server_options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;                  ///< 0 = ephemeral, start() returns the bound port
  size_t io_threads = 2;
  uint64_t max_body_bytes = 1 << 20;
  uint64_t max_module_bytes = 64 << 20;
  std::string module_upload_path = "/api/v1/modules"; ///< POST here may carry max_module_bytes
  bool tls = false;                   ///< not implemented yet: start() refuses it
  /// Keep-alive: how long a connection may wait for the first byte of its
  /// next request; also the inactivity limit while a body is read and while a
  /// response is written.
  std::chrono::milliseconds idle_timeout{60000};
  /// How long the request line and header fields may take once the first
  /// byte arrived (and how long a new connection may stay silent).
  std::chrono::milliseconds header_timeout{15000};
  /// WebSocket send buffer of one connection, in messages (the one being
  /// written included). A send() that finds it full is refused and the
  /// connection closed with 1008: a client too slow to read is cut off
  /// instead of growing the buffer.
  size_t ws_max_queued_messages = 1024;
  /// The same buffer in bytes of message text; a single message larger than
  /// this can never be queued.
  uint64_t ws_max_queued_bytes = 8 << 20;
  /// Largest message a WebSocket client may send; a larger one closes the
  /// connection with 1009.
  uint64_t ws_max_message_bytes = 64 << 10;
};

/// The HTTP listener. All members are thread-safe except that stop() (and the
/// destructor) must not be called from inside the dispatch callback (an io
/// thread).
class http_server {
public:
  using dispatch_fn = std::function<void(http_exchange_ptr)>;

  /// `dispatch` is called on an io thread for every request that was read in
  /// full; it must not block. `metrics` may be null.
  http_server(http_server_options opts, dispatch_fn dispatch, node_metrics* metrics);

  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  ~http_server();

  /// Binds, listens and starts the io threads. Returns the bound port.
  /// Fails with errc::unavailable when the address cannot be bound.
  caf::expected<uint16_t> start();

  /// From now on every new request (also the next one on a keep-alive
  /// connection) gets 503 + Retry-After + Connection: close; dispatched
  /// requests finish normally. The listener keeps accepting. Every open
  /// WebSocket gets close 1001 "server shutting down" after the messages
  /// already queued (its client reconnects elsewhere); the drain does not
  /// wait for them.
  void begin_drain();

  bool draining() const;

  /// Requests dispatched and not yet responded to (an accepted WebSocket
  /// no longer counts).
  size_t in_flight() const;

  /// Closes the listener and every connection, stops and joins the io
  /// threads. Idempotent. Responses that arrive later are dropped. Open
  /// WebSockets get close 1001 (unsent messages are dropped) and at most
  /// one second to answer it; every ws_handler gets its on_close() before
  /// stop() returns.
  void stop();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace hotswap
