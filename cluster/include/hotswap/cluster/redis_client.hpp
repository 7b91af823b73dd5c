#pragma once

// One blocking hiredis connection, for a detached actor (the registry, the
// shared rate limiter): it connects lazily, reconnects after any I/O failure,
// backs off so that requests queued behind an unreachable Redis fail at once
// instead of each waiting out its own timeout, logs the transitions between
// reachable and unreachable once (not per request), and runs Lua scripts by
// SHA1, loading them again after Redis forgot them (restart, SCRIPT FLUSH).

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "caf/error.hpp"
#include "caf/expected.hpp"

namespace hotswap::redis {

struct reply_deleter {
  void operator()(redisReply* r) const {
    if (r != nullptr)
      freeReplyObject(r);
  }
};

using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

using argv_t = std::vector<std::string>;

std::string reply_string(const redisReply* r);

bool is_string(const redisReply* r);

struct client_options {
  std::string url;                 ///< "redis://host:port[/db]" (for messages)
  std::string host;
  uint16_t port = 0;
  int db = 0;
  std::string what;                ///< "registry", "shared rate limits": names it in messages
  std::string log_name;            ///< the logger
  std::string down_hint;           ///< appended to the "unavailable" warning
  std::chrono::milliseconds connect_timeout{300};
  std::chrono::milliseconds command_timeout{500};
  /// After a failed connect, requests fail at once for this long.
  std::chrono::milliseconds connect_backoff{300};
  /// After an I/O failure on an open connection (no answer in time, reset),
  /// requests fail at once for this long (0: the next one reconnects).
  std::chrono::milliseconds io_backoff{0};
};

/// Options for a client of `url` ("redis://host:port[/db]"), named `what`
/// in messages and logging to `log_name`; the back-offs stay at their
/// defaults. Errors (errc::config_invalid) name what is wrong with the URL or
/// the timeouts.
caf::expected<client_options> options_for(const std::string& url, std::string what,
                                          std::string log_name,
                                          std::chrono::milliseconds connect_timeout,
                                          std::chrono::milliseconds command_timeout);

class client {
public:
  explicit client(client_options opts);

  client(const client&) = delete;
  client& operator=(const client&) = delete;

  const client_options& options() const {
    return opts_;
  }

  /// Sends `cmds` in one round trip. Error replies are returned as replies;
  /// only I/O failures are errors (errc::unavailable).
  caf::expected<std::vector<reply_ptr>> pipeline(const std::vector<argv_t>& cmds);

  /// One command; an error reply is an error too.
  caf::expected<reply_ptr> run(const argv_t& cmd);

  /// Runs `script` (by SHA1) with keys and args; an error reply other than
  /// NOSCRIPT is an error.
  caf::expected<reply_ptr> eval(const char* script, const argv_t& keys, const argv_t& args);

  /// Drops the connection (the next request reconnects after the back-off)
  /// and returns the error every caller answers with.
  caf::error unavailable(const std::string& why, std::chrono::milliseconds backoff);

private:
  struct context_deleter {
    void operator()(redisContext* c) const {
      if (c != nullptr)
        redisFree(c);
    }
  };

  using context_ptr = std::unique_ptr<redisContext, context_deleter>;

  caf::error failure(const std::string& why) const;
  caf::error io_error(const std::string& what, int sys_errno);
  caf::error connect();

  client_options opts_;
  context_ptr ctx_;
  bool down_ = false;
  bool ever_connected_ = false;
  std::chrono::steady_clock::time_point retry_at_{};
  std::string last_error_;
  std::map<const char*, std::string> shas_; ///< script -> SHA1 on this connection
};

} // namespace hotswap::redis
