// The Beast HTTP/1.1 listener: one strand per connection, one request at a
// time per connection, responses posted back from any thread.
//
// Lifetimes:
// - `server_core` is the state shared by the listener, the sessions and the
//   responders of outstanding exchanges. Its `life_mu`/`stopped` pair is the
//   gate every responder passes before it touches a session, the io_context
//   or the metrics: once stop() flipped `stopped` (exclusive lock), no
//   responder posts anything, so the io_context may go away while exchanges
//   are still alive somewhere in the actor system.
// - The session registry holds the only long-lived strong reference to a
//   session (handlers hold temporary ones). A session leaves the registry when
//   it closes; stop() clears what is left after joining the io threads, so
//   every socket is destroyed while its io_context still exists.
// - A responder holds a weak reference to its session: a late response for a
//   connection that died is dropped.
// - WebSockets: a response with `upgrade` moves the session's socket into a
//   `ws_session`, which the core's WebSocket registry holds like a session
//   until it ends. The `ws_connection` handed to the application holds the
//   ws_session only weakly and passes the same life gate as a responder, so
//   an application may keep it after stop() without keeping a socket alive.
//   Every ws_handler the server is given gets on_close() exactly once, also
//   when its handshake never happened.

#include "hotswap/actors/http_server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <spdlog/spdlog.h>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

constexpr uint32_t header_limit_bytes = 16 * 1024;
constexpr std::chrono::seconds linger_timeout{3};
constexpr std::chrono::milliseconds accept_backoff{50};
constexpr size_t read_chunk = 8 * 1024;
/// How long a WebSocket close may take (waiting for the write in progress,
/// then for the client's close frame) before the socket is torn down.
constexpr std::chrono::seconds ws_close_timeout{5};
/// The same during stop(), which joins the io threads behind it.
constexpr std::chrono::seconds ws_stop_timeout{1};
/// A close frame's reason is at most 123 bytes.
constexpr size_t ws_max_reason_bytes = 123;

// -- ids ---------------------------------------------------------------------

/// Request and trace ids are identifiers, not secrets: a per-thread PRNG
/// seeded from the CSPRNG (crypto::id_hex) keeps OpenSSL off the hot path.
std::string random_hex(size_t bytes) {
  return crypto::id_hex(bytes);
}

bool valid_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128)
    return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.'
           || c == '_' || c == '-';
  });
}

bool lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool all_zero(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == '0'; });
}

/// The trace id of a W3C `traceparent` value
/// (`version-traceid-parentid-flags`), or nothing when it is invalid.
std::optional<std::string> trace_id_of(std::string_view tp) {
  if (tp.size() < 55)
    return std::nullopt;
  auto version = tp.substr(0, 2);
  if (!lower_hex(version) || version == "ff" || tp[2] != '-')
    return std::nullopt;
  if (version == "00" ? tp.size() != 55 : (tp.size() > 55 && tp[55] != '-'))
    return std::nullopt;
  auto trace = tp.substr(3, 32);
  auto parent = tp.substr(36, 16);
  auto flags = tp.substr(53, 2);
  if (tp[35] != '-' || tp[52] != '-' || !lower_hex(trace) || all_zero(trace)
      || !lower_hex(parent) || all_zero(parent) || !lower_hex(flags))
    return std::nullopt;
  return std::string{trace};
}

// -- target parsing ------------------------------------------------------------

/// Percent-decodes `in`; `+` becomes a space in query components. Rejects
/// broken escapes and NUL bytes.
bool percent_decode(std::string_view in, bool plus_is_space, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size())
        return false;
      int hi = crypto::hex_digit(in[i + 1]);
      int lo = crypto::hex_digit(in[i + 2]);
      if (hi < 0 || lo < 0)
        return false;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (c == '\0')
      return false;
    out.push_back(c);
  }
  return true;
}

/// Splits an origin-form target into its decoded path and query.
bool parse_target(std::string_view target, std::string& path,
                  std::map<std::string, std::string>& query) {
  if (target.empty() || target.front() != '/')
    return false;
  auto qpos = target.find('?');
  if (!percent_decode(target.substr(0, qpos), false, path))
    return false;
  if (qpos == std::string_view::npos)
    return true;
  auto rest = target.substr(qpos + 1);
  auto fragment = rest.find('#');
  if (fragment != std::string_view::npos)
    rest = rest.substr(0, fragment);
  std::string key;
  std::string value;
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto part = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    if (part.empty())
      continue;
    auto eq = part.find('=');
    if (!percent_decode(part.substr(0, eq), true, key))
      return false;
    if (eq == std::string_view::npos)
      value.clear();
    else if (!percent_decode(part.substr(eq + 1), true, value))
      return false;
    query[key] = value; // last wins
  }
  return true;
}

std::string lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
  return out;
}

/// Bounded metric label for a request method.
std::string method_label(std::string_view m) {
  static constexpr std::string_view known[] = {"GET",     "HEAD",    "POST",  "PUT",    "DELETE",
                                               "PATCH",   "OPTIONS", "TRACE", "CONNECT"};
  for (auto k : known)
    if (k == m)
      return std::string{k};
  return "OTHER";
}

bool is_parse_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category()
         && ec != http::error::end_of_stream && ec != http::error::partial_message;
}

bool safe_header_value(std::string_view v) {
  return v.find_first_of("\r\n") == std::string_view::npos && v.find('\0') == std::string_view::npos;
}

/// The "http" logger of setup_logging(), or (tests, tools) an unregistered
/// one on the default logger's sinks, so that a later setup_logging() can
/// still register "http" without a name clash.
std::shared_ptr<spdlog::logger> http_logger() {
  if (auto log = spdlog::get("http"))
    return log;
  auto def = spdlog::default_logger();
  auto log = std::make_shared<spdlog::logger>("http", def->sinks().begin(), def->sinks().end());
  log->set_level(def->level());
  return log;
}

/// The headers the server puts on every response (and on the 101 of a
/// WebSocket handshake).
void set_standard_headers(http::fields& f, bool tls, const std::string& request_id) {
  f.set("X-Content-Type-Options", "nosniff");
  f.set(http::field::x_frame_options, "DENY");
  f.set("Referrer-Policy", "no-referrer");
  f.set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
  f.set("Permissions-Policy", "geolocation=(), camera=(), microphone=()");
  // Everything this server answers is dynamic API or operations data;
  // a handler may set its own Cache-Control.
  f.set(http::field::cache_control, "no-store");
  if (tls)
    f.set(http::field::strict_transport_security, "max-age=31536000; includeSubDomains");
  f.set("X-Request-Id", request_id);
}

/// Whether a handler may set header `name`: the server owns framing and
/// connection management (and, for a 101, the handshake fields).
bool handler_header_allowed(const std::string& name, const std::string& value, bool upgrade) {
  if (name.empty() || !safe_header_value(name) || !safe_header_value(value))
    return false;
  auto f = http::string_to_field(name);
  if (f == http::field::server || f == http::field::connection
      || f == http::field::content_length || f == http::field::transfer_encoding)
    return false;
  return !upgrade || (f != http::field::upgrade && f != http::field::sec_websocket_accept);
}

/// `s` cut to a close frame's reason limit, without splitting a UTF-8
/// sequence.
std::string clip_reason(std::string s) {
  if (s.size() <= ws_max_reason_bytes)
    return s;
  auto n = ws_max_reason_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
    --n; // s[n] continues a sequence that starts before the cut
  s.resize(n);
  return s;
}

/// Close codes an endpoint may put in a close frame (RFC 6455 7.4).
bool sendable_close_code(uint16_t code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)
         || (code >= 3000 && code <= 4999);
}

/// Ends a ws_handler whose connection never opened (code 1006).
void end_unopened(const std::shared_ptr<ws_handler>& handler, const std::string& reason,
                  spdlog::logger& log, const std::string& request_id) {
  try {
    handler->on_close(1006, reason);
  } catch (const std::exception& e) {
    log.error("[R:{}] ws_handler::on_close threw: {}", request_id, e.what());
  }
}

class session;
class ws_session;

// -- shared state ----------------------------------------------------------------

struct server_core {
  server_core(http_server_options o, http_server::dispatch_fn d, node_metrics* m)
    : opts(std::move(o)), dispatch(std::move(d)), metrics(m), log(http_logger()) {
  }

  const http_server_options opts;
  const http_server::dispatch_fn dispatch;
  node_metrics* const metrics;
  const std::shared_ptr<spdlog::logger> log;

  std::atomic<bool> draining{false};
  std::atomic<size_t> in_flight{0};

  /// Shared by responders, exclusive in stop(); see the file comment.
  std::shared_mutex life_mu;
  bool stopped = false;

  std::mutex sessions_mu;
  bool closing = false; ///< set by stop(): no new sessions register
  std::unordered_map<session*, std::shared_ptr<session>> sessions;
  std::unordered_map<ws_session*, std::shared_ptr<ws_session>> websockets;

  bool add_websocket(const std::shared_ptr<ws_session>& s) {
    std::lock_guard<std::mutex> guard{sessions_mu};
    if (closing)
      return false;
    websockets.emplace(s.get(), s);
    return true;
  }

  void remove_websocket(ws_session* s) {
    std::shared_ptr<ws_session> keep; // destroyed after the lock is released
    std::lock_guard<std::mutex> guard{sessions_mu};
    auto i = websockets.find(s);
    if (i != websockets.end()) {
      keep = std::move(i->second);
      websockets.erase(i);
    }
  }

  std::vector<std::shared_ptr<ws_session>> open_websockets() {
    std::lock_guard<std::mutex> guard{sessions_mu};
    std::vector<std::shared_ptr<ws_session>> out;
    out.reserve(websockets.size());
    for (auto& kv : websockets)
      out.push_back(kv.second);
    return out;
  }

  bool add_session(const std::shared_ptr<session>& s) {
    std::lock_guard<std::mutex> guard{sessions_mu};
    if (closing)
      return false;
    sessions.emplace(s.get(), s);
    return true;
  }

  void remove_session(session* s) {
    std::shared_ptr<session> keep; // destroyed after the lock is released
    std::lock_guard<std::mutex> guard{sessions_mu};
    auto i = sessions.find(s);
    if (i != sessions.end()) {
      keep = std::move(i->second);
      sessions.erase(i);
    }
  }

  void record(const std::string& method, const std::string& route, int status,
              clock_type::time_point started) {
    if (metrics == nullptr)
      return;
    auto secs = std::chrono::duration<double>(clock_type::now() - started).count();
    metrics->http_request(method, route, status, secs);
  }
};

/// Everything about the current request a response needs.
struct request_meta {
  std::string method;       ///< bounded label
  std::string target;       ///< for logs
  std::string request_id;
  std::string trace_id;
  unsigned version = 11;
  bool keep_alive = false;
  bool head = false;
  clock_type::time_point started = clock_type::now();
};

// -- websockets ------------------------------------------------------------------

/// The application's handle on a WebSocket. Holds the connection weakly and
/// passes the life gate of server_core, so it may outlive the server.
class ws_conn final : public ws_connection {
public:
  ws_conn(std::shared_ptr<server_core> core, std::weak_ptr<ws_session> s)
    : core_(std::move(core)), session_(std::move(s)) {
  }

  bool send(std::string text) override;

  void close(uint16_t code, std::string reason) override;

private:
  std::shared_ptr<server_core> core_;
  std::weak_ptr<ws_session> session_;
};

/// One accepted WebSocket. Everything but the send buffer lives on the
/// connection's strand; the send buffer (`out_mu_`) is shared with the
/// threads that call ws_connection::send/close. One write at a time; the
/// close frame goes out once the buffer is empty; a read is always pending
/// from the handshake to the end, and its end (or a close timeout) ends the
/// connection.
class ws_session : public std::enable_shared_from_this<ws_session> {
public:
  using stream_type = websocket::stream<beast::tcp_stream>;
  using executor_type = stream_type::executor_type;

  ws_session(tcp::socket&& socket, std::shared_ptr<server_core> core,
             std::shared_ptr<ws_handler> handler, std::string request_id, std::string peer)
    : ws_(std::move(socket)), ex_(ws_.get_executor()), close_timer_(ex_), core_(std::move(core)),
      handler_(std::move(handler)), request_id_(std::move(request_id)), peer_(std::move(peer)) {
  }

  /// Answers the handshake `req` with 101 plus the standard headers and
  /// the handler's `headers` (on the strand).
  void start(http::request<http::string_body> req,
             std::vector<std::pair<std::string, std::string>> headers) {
    req_ = std::move(req);
    if (!core_->add_websocket(shared_from_this())) {
      finish(1006, "server stopping"); // stop() is running: no handshake
      return;
    }
    if (core_->draining.load())
      request_close(1001, "server shutting down", false, ws_close_timeout);
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.set_option(websocket::stream_base::decorator(
      [tls = core_->opts.tls, rid = request_id_,
       headers = std::move(headers)](websocket::response_type& res) {
        set_standard_headers(res, tls, rid);
        for (const auto& [name, value] : headers)
          if (handler_header_allowed(name, value, true))
            res.set(name, value);
        // Beast names itself (with its version) in a Server field unless
        // one is present: present, but empty.
        res.set(http::field::server, "");
      }));
    ws_.read_message_max(core_->opts.ws_max_message_bytes);
    ws_.async_accept(req_, [self = shared_from_this()](beast::error_code ec) {
      self->on_accept(ec);
    });
  }

  /// Queues one text message (any thread); see ws_connection::send.
  bool enqueue(std::string text) {
    const auto& opts = core_->opts;
    bool kick = false;
    std::string overflow;
    {
      std::lock_guard<std::mutex> guard{out_mu_};
      if (close_requested_)
        return false;
      auto messages = queue_.size() + (writing_out_ ? 1 : 0);
      auto bytes = queued_bytes_ + writing_bytes_;
      if (messages >= opts.ws_max_queued_messages) {
        overflow = "client too slow: send buffer of " + std::to_string(opts.ws_max_queued_messages)
                   + " messages full";
      } else if (text.size() > opts.ws_max_queued_bytes
                 || bytes > opts.ws_max_queued_bytes - text.size()) {
        overflow = "client too slow: send buffer of " + std::to_string(opts.ws_max_queued_bytes)
                   + " bytes full";
      } else {
        queued_bytes_ += text.size();
        queue_.push_back(std::move(text));
        kick = !kick_pending_;
        kick_pending_ = true;
      }
      if (!overflow.empty())
        mark_close_locked(1008, overflow, true);
    }
    if (!overflow.empty()) {
      core_->log->info("[R:{}] websocket from {} closing: {}", request_id_, peer_, overflow);
      if (core_->metrics != nullptr)
        core_->metrics->slow_subscribers_closed().Increment();
      asio::post(ex_, [self = shared_from_this()] { self->on_close_requested(ws_close_timeout); });
      return false;
    }
    if (kick)
      asio::post(ex_, [self = shared_from_this()] { self->pump(); });
    return true;
  }

  /// Closes with `code` and `reason` (any thread; the first request wins).
  /// `drop_queued`: unsent messages are discarded instead of sent first.
  /// After `timeout` the socket is torn down whatever the client does.
  void request_close(uint16_t code, std::string reason, bool drop_queued,
                     std::chrono::milliseconds timeout) {
    {
      std::lock_guard<std::mutex> guard{out_mu_};
      mark_close_locked(code, std::move(reason), drop_queued);
    }
    asio::post(ex_, [self = shared_from_this(), timeout] { self->on_close_requested(timeout); });
  }

private:
  void mark_close_locked(uint16_t code, std::string reason, bool drop_queued) {
    if (!close_requested_) {
      close_requested_ = true;
      close_code_ = code;
      close_reason_ = clip_reason(std::move(reason));
    }
    if (drop_queued) {
      queue_.clear();
      queued_bytes_ = 0;
    }
  }

  /// The code and reason to report: those of the close the server asked
  /// for, else the given ones.
  std::pair<uint16_t, std::string> ours_or(uint16_t code, std::string reason) {
    std::lock_guard<std::mutex> guard{out_mu_};
    if (close_requested_)
      return {close_code_, close_reason_};
    return {code, std::move(reason)};
  }

  void on_accept(beast::error_code ec) {
    if (finished_)
      return;
    if (ec) {
      finish(1006, "WebSocket handshake failed: " + ec.message());
      return;
    }
    opened_ = true;
    ws_.text(true);
    core_->log->debug("[R:{}] websocket open from {}", request_id_, peer_);
    auto conn = std::make_shared<ws_conn>(core_, weak_from_this());
    call_handler("on_open", [&] { handler_->on_open(std::move(conn)); });
    read();
    pump();
  }

  /// Runs a handler callback; one that throws closes the connection with
  /// 1011.
  template <class F>
  void call_handler(const char* what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      core_->log->error("[R:{}] ws_handler::{} threw: {}", request_id_, what, e.what());
      request_close(1011, "internal error", false, ws_close_timeout);
    }
  }

  // -- reading ---------------------------------------------------------------

  void read() {
    ws_.async_read(rbuf_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->on_read(ec);
    });
  }

  void on_read(beast::error_code ec) {
    if (finished_)
      return;
    if (ec) {
      uint16_t code = 1006;
      std::string reason = ec.message();
      if (ec == websocket::error::closed) {
        const auto& peer = ws_.reason();
        code = peer.code == websocket::close_code::none ? uint16_t{1005} : peer.code;
        reason.assign(peer.reason.data(), peer.reason.size());
      } else if (ec == websocket::error::message_too_big) {
        code = 1009; // Beast sent that close frame
        reason = "message too big";
      }
      auto [c, r] = ours_or(code, std::move(reason));
      finish(c, std::move(r));
      return;
    }
    if (!ws_.got_text()) {
      rbuf_.clear();
      request_close(1003, "binary messages are not supported", false, ws_close_timeout);
      read();
      return;
    }
    auto text = beast::buffers_to_string(rbuf_.data());
    rbuf_.clear();
    bool closing = false;
    {
      std::lock_guard<std::mutex> guard{out_mu_};
      closing = close_requested_;
    }
    if (!closing)
      call_handler("on_text", [&] { handler_->on_text(std::move(text)); });
    read();
  }

  // -- writing ---------------------------------------------------------------

  void on_close_requested(std::chrono::milliseconds timeout) {
    if (finished_)
      return;
    auto deadline = clock_type::now() + timeout;
    if (!close_deadline_ || deadline < *close_deadline_) {
      close_deadline_ = deadline;
      close_timer_.expires_at(deadline);
      close_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (ec == asio::error::operation_aborted || self->finished_)
          return;
        self->core_->log->debug("[R:{}] websocket close timed out; dropping the connection",
                                self->request_id_);
        auto [c, r] = self->ours_or(1006, "close timed out");
        self->finish(c, std::move(r));
      });
    }
    pump();
  }

  /// Starts the next write, or the close once the buffer is empty.
  void pump() {
    uint16_t code = 0;
    std::string reason;
    bool close = false;
    {
      std::lock_guard<std::mutex> guard{out_mu_};
      kick_pending_ = false;
      if (finished_ || !opened_ || writing_out_ || closing_started_)
        return;
      if (!queue_.empty()) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= current_.size();
        writing_out_ = true;
        writing_bytes_ = current_.size();
      } else if (close_requested_) {
        closing_started_ = true;
        close = true;
        code = close_code_;
        reason = close_reason_;
      } else {
        return;
      }
    }
    if (close) {
      websocket::close_reason cr{code};
      cr.reason.assign(reason.data(), reason.size());
      ws_.async_close(cr, [self = shared_from_this()](beast::error_code ec) {
        if (self->finished_)
          return;
        auto [c, r] = self->ours_or(1006, ec ? ec.message() : std::string{});
        self->finish(c, std::move(r));
      });
      return;
    }
    ws_.async_write(asio::buffer(current_), [self = shared_from_this()](beast::error_code ec,
                                                                        size_t) {
      self->on_write(ec);
    });
  }

  void on_write(beast::error_code ec) {
    {
      std::lock_guard<std::mutex> guard{out_mu_};
      writing_out_ = false;
      writing_bytes_ = 0;
    }
    std::string{}.swap(current_); // frees a large message now
    if (finished_)
      return;
    if (ec) {
      auto [c, r] = ours_or(1006, "write failed: " + ec.message());
      finish(c, std::move(r));
      return;
    }
    pump();
  }

  // -- the end ---------------------------------------------------------------

  /// Ends the connection and reports it to the handler, once.
  void finish(uint16_t code, std::string reason) {
    if (finished_)
      return;
    finished_ = true;
    {
      std::lock_guard<std::mutex> guard{out_mu_};
      close_requested_ = true; // send() returns false from now on
      queue_.clear();
      queued_bytes_ = 0;
    }
    close_timer_.cancel();
    beast::get_lowest_layer(ws_).close();
    core_->remove_websocket(this);
    core_->log->debug("[R:{}] websocket from {} closed: {} {}", request_id_, peer_, code, reason);
    auto handler = std::move(handler_);
    try {
      handler->on_close(code, std::move(reason));
    } catch (const std::exception& e) {
      core_->log->error("[R:{}] ws_handler::on_close threw: {}", request_id_, e.what());
    }
  }

  stream_type ws_;
  const executor_type ex_;
  asio::steady_timer close_timer_;
  std::shared_ptr<server_core> core_;
  std::shared_ptr<ws_handler> handler_;
  const std::string request_id_;
  const std::string peer_;
  http::request<http::string_body> req_;
  beast::flat_buffer rbuf_;
  std::string current_; ///< the message being written
  std::optional<clock_type::time_point> close_deadline_;
  bool opened_ = false;
  bool finished_ = false;

  // The send buffer, shared with the callers of ws_connection.
  std::mutex out_mu_;
  std::deque<std::string> queue_;
  uint64_t queued_bytes_ = 0;
  bool writing_out_ = false;
  uint64_t writing_bytes_ = 0;
  bool kick_pending_ = false;
  bool close_requested_ = false;
  bool closing_started_ = false;
  uint16_t close_code_ = 1000;
  std::string close_reason_;
};

bool ws_conn::send(std::string text) {
  std::shared_lock<std::shared_mutex> guard{core_->life_mu};
  if (core_->stopped)
    return false;
  auto s = session_.lock();
  return s && s->enqueue(std::move(text));
}

void ws_conn::close(uint16_t code, std::string reason) {
  if (!sendable_close_code(code)) {
    core_->log->error("websocket close code {} cannot be sent; using 1011", code);
    code = 1011;
  }
  std::shared_lock<std::shared_mutex> guard{core_->life_mu};
  if (core_->stopped)
    return;
  if (auto s = session_.lock())
    s->request_close(code, std::move(reason), false, ws_close_timeout);
}

// -- the connection ------------------------------------------------------------------

class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket&& socket, std::shared_ptr<server_core> core)
    : stream_(std::move(socket)), ex_(stream_.get_executor()), core_(std::move(core)) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec)
      peer_ = ep.address().to_string();
  }

  using executor_type = beast::tcp_stream::executor_type;

  /// Still valid after the socket moved to a ws_session.
  executor_type executor() const {
    return ex_;
  }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->wait_request(); });
  }

  /// Ends the connection at once (stop()).
  void close_now() {
    if (closed_)
      return;
    closed_ = true;
    stream_.close();
    core_->remove_session(this);
  }

  /// Writes the response to the dispatched request, or completes the
  /// WebSocket handshake it accepts (on the strand).
  void deliver(http_response res) {
    if (closed_ || !awaiting_) {
      core_->log->debug("[R:{}] response dropped: connection closed", meta_.request_id);
      if (res.upgrade)
        end_unopened(res.upgrade, "connection closed before the WebSocket handshake", *core_->log,
                     meta_.request_id);
      return;
    }
    awaiting_ = false;
    if (res.upgrade) {
      if (!upgrade_req_) {
        core_->log->error("[R:{} T:{}] upgrade answered to a request that is not a WebSocket "
                          "handshake; sending 500",
                          meta_.request_id, meta_.trace_id);
        end_unopened(res.upgrade, "not a WebSocket handshake", *core_->log, meta_.request_id);
        write_response(problem(500, "Internal Server Error",
                               "The request is not a WebSocket handshake.", meta_.trace_id));
        return;
      }
      upgrade(std::move(res));
      return;
    }
    if (upgrade_req_)
      res.close = true; // a declined handshake
    write_response(std::move(res));
  }

private:
  // -- reading ---------------------------------------------------------------

  void wait_request() {
    if (closed_)
      return;
    if (buffer_.size() > 0) {
      read_header();
      return;
    }
    // A new connection must speak promptly; a kept-alive one may idle.
    stream_.expires_after(first_ ? core_->opts.header_timeout : core_->opts.idle_timeout);
    stream_.async_read_some(buffer_.prepare(read_chunk),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->on_first_bytes(ec, n);
                            });
  }

  void on_first_bytes(beast::error_code ec, size_t n) {
    if (ec) {
      // EOF, reset, idle timeout or stop(): nothing to answer.
      close_now();
      return;
    }
    buffer_.commit(n);
    read_header();
  }

  void read_header() {
    meta_ = request_meta{};
    parser_.emplace();
    parser_->header_limit(header_limit_bytes);
    // The real limit depends on the target, known only after the header:
    // admit the larger one here and check again in on_header().
    parser_->body_limit(std::max(core_->opts.max_body_bytes, core_->opts.max_module_bytes));
    stream_.expires_after(core_->opts.header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              self->on_header(ec);
                            });
  }

  void fill_meta_from_header() {
    const auto& req = parser_->get();
    meta_.method = method_label(req.method_string());
    meta_.target = std::string{req.target()};
    meta_.version = req.version() == 10 ? 10 : 11;
    meta_.keep_alive = req.keep_alive();
    meta_.head = req.method() == http::verb::head;
    auto rid = req["X-Request-Id"];
    meta_.request_id = valid_request_id(rid) ? std::string{rid} : random_hex(16);
    auto tid = trace_id_of(req["traceparent"]);
    meta_.trace_id = tid ? std::move(*tid) : random_hex(16);
  }

  void ensure_ids() {
    if (meta_.request_id.empty())
      meta_.request_id = random_hex(16);
    if (meta_.trace_id.empty())
      meta_.trace_id = random_hex(16);
    if (meta_.method.empty())
      meta_.method = "OTHER";
  }

  void on_header(beast::error_code ec) {
    if (ec == http::error::body_limit || ec == http::error::header_limit) {
      // The header itself was parsed (body_limit) or is too large: answer.
      if (ec == http::error::body_limit)
        fill_meta_from_header();
      ensure_ids();
      if (ec == http::error::body_limit)
        reject(413, "Payload Too Large", "The request body exceeds the size limit.");
      else
        reject(431, "Request Header Fields Too Large", "The request header is too large.");
      return;
    }
    if (ec) {
      if (is_parse_error(ec)) {
        ensure_ids();
        reject(400, "Bad Request", "Malformed HTTP request: " + ec.message());
      } else {
        close_now();
      }
      return;
    }
    fill_meta_from_header();
    const auto& req = parser_->get();
    if (core_->draining.load()) {
      reject(503, "Service Unavailable", "The node is shutting down; retry on another node.",
             true);
      return;
    }
    std::string path;
    auto target = req.target();
    auto qpos = target.find('?');
    if (!percent_decode(target.substr(0, qpos), false, path)) {
      reject(400, "Bad Request", "The request target is not a valid origin-form path.");
      return;
    }
    auto limit = req.method() == http::verb::post && path == core_->opts.module_upload_path
                   ? core_->opts.max_module_bytes
                   : core_->opts.max_body_bytes;
    if (auto len = parser_->content_length(); len && *len > limit) {
      reject(413, "Payload Too Large",
             "The request body exceeds the limit of " + std::to_string(limit) + " bytes.");
      return;
    }
    parser_->body_limit(limit); // counts chunked bodies from here on
    if (parser_->is_done()) {
      on_request();
      return;
    }
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                     meta_.version);
      stream_.expires_after(core_->opts.idle_timeout);
      http::async_write(stream_, *cont,
                        [self = shared_from_this(), cont](beast::error_code wec, size_t) {
                          if (wec)
                            self->close_now();
                          else
                            self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    // An inactivity limit, renewed for every chunk.
    stream_.expires_after(core_->opts.idle_timeout);
    http::async_read_some(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            self->on_body(ec);
                          });
  }

  void on_body(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      reject(413, "Payload Too Large", "The request body exceeds the size limit.");
      return;
    }
    if (ec) {
      if (is_parse_error(ec))
        reject(400, "Bad Request", "Malformed HTTP request: " + ec.message());
      else
        close_now();
      return;
    }
    if (!parser_->is_done()) {
      read_body();
      return;
    }
    on_request();
  }

  // -- dispatching -----------------------------------------------------------

  void on_request();

  /// Hands the socket to a ws_session, which answers the handshake.
  void upgrade(http_response res) {
    closed_ = true;
    if (buffer_.size() > 0)
      core_->log->debug("[R:{}] {} bytes sent before the WebSocket handshake completed dropped",
                        meta_.request_id, buffer_.size());
    auto ws = std::make_shared<ws_session>(stream_.release_socket(), core_,
                                           std::move(res.upgrade), meta_.request_id, peer_);
    auto req = std::move(*upgrade_req_);
    upgrade_req_.reset();
    core_->remove_session(this); // the caller holds a reference
    ws->start(std::move(req), std::move(res.headers));
  }

  // -- writing ---------------------------------------------------------------

  /// A response the server makes itself; always closes the connection.
  void reject(int status, const std::string& title, const std::string& detail,
              bool draining = false) {
    auto res = problem(status, title, detail, meta_.trace_id);
    res.close = true;
    if (draining)
      res.headers.emplace_back("Retry-After", "1");
    core_->record(meta_.method, "rejected", status, meta_.started);
    if (draining)
      core_->log->debug("[R:{} T:{}] {} {} -> {} (draining)", meta_.request_id, meta_.trace_id,
                        meta_.method, meta_.target, status);
    else
      core_->log->debug("[R:{} T:{}] {} {} from {} -> {} {}", meta_.request_id, meta_.trace_id,
                        meta_.method, meta_.target, peer_, status, detail);
    write_response(std::move(res));
  }

  void write_response(http_response r) {
    stream_.expires_never();
    int status = r.status;
    if (status < 100 || status > 599) {
      core_->log->error("[R:{}] handler produced invalid status {}; sending 500",
                        meta_.request_id, status);
      r = problem(500, "Internal Server Error", "Invalid response status.", meta_.trace_id);
      status = 500;
    }
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(meta_.version);
    res->result(static_cast<unsigned>(status));
    set_standard_headers(*res, core_->opts.tls, meta_.request_id);
    for (auto& [name, value] : r.headers) {
      if (!handler_header_allowed(name, value, false)) {
        core_->log->warn("[R:{}] handler header '{}' dropped", meta_.request_id, name);
        continue;
      }
      res->set(name, value);
    }
    bool no_body = status < 200 || status == 204 || status == 304;
    if (!no_body) {
      if (!r.content_type.empty())
        res->set(http::field::content_type, r.content_type);
      res->body() = std::move(r.body);
    }
    bool keep = meta_.keep_alive && !r.close;
    res->keep_alive(keep);
    res->prepare_payload();
    if (meta_.head)
      res->body().clear(); // Content-Length stays that of the GET answer
    stream_.expires_after(core_->opts.idle_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep](beast::error_code ec, size_t) {
                        self->on_write(ec, keep);
                      });
  }

  void on_write(beast::error_code ec, bool keep) {
    if (ec) {
      core_->log->debug("[R:{}] write failed: {}", meta_.request_id, ec.message());
      close_now();
      return;
    }
    if (!keep) {
      graceful_close();
      return;
    }
    first_ = false;
    parser_.reset();
    wait_request();
  }

  /// Shuts down the send side (the client reads EOF after the response),
  /// then reads and discards until the client closes, so that unread request
  /// bytes do not turn the close into a reset that could destroy the
  /// response in flight. Bounded by linger_timeout.
  void graceful_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      close_now();
      return;
    }
    buffer_.clear();
    stream_.expires_after(linger_timeout);
    discard();
  }

  void discard() {
    stream_.async_read_some(buffer_.prepare(read_chunk),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) {
                                self->close_now();
                                return;
                              }
                              self->buffer_.clear();
                              self->discard();
                            });
  }

  beast::tcp_stream stream_;
  const executor_type ex_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  /// The current request if it is a WebSocket handshake (the accept needs it).
  std::optional<http::request<http::string_body>> upgrade_req_;
  std::shared_ptr<server_core> core_;
  std::string peer_;
  request_meta meta_;
  bool first_ = true;
  bool awaiting_ = false;
  bool closed_ = false;
};

/// Captured by the responder of one exchange. Delivers at most once; an
/// exchange destroyed without a response is answered with 500 so the
/// connection does not hang.
class pending_response {
public:
  pending_response(std::shared_ptr<server_core> core, std::weak_ptr<session> s,
                   std::string method, std::string request_id, std::string trace_id,
                   clock_type::time_point started, bool websocket)
    : core_(std::move(core)), session_(std::move(s)), method_(std::move(method)),
      request_id_(std::move(request_id)), trace_id_(std::move(trace_id)), started_(started),
      websocket_(websocket) {
  }

  pending_response(const pending_response&) = delete;
  pending_response& operator=(const pending_response&) = delete;

  ~pending_response() {
    if (!done_.load())
      deliver(problem(500, "Internal Server Error", "The request was not answered.", trace_id_),
              "unmatched", true);
  }

  /// Set once before the exchange is dispatched.
  void set_exchange(const std::shared_ptr<http_exchange>& ex) {
    exchange_ = ex;
  }

  /// The route the router recorded (read on the responding thread, which
  /// is the one that set it).
  std::string route() const {
    if (auto ex = exchange_.lock())
      return ex->route();
    return "unmatched";
  }

  /// `abandoned`: the exchange died without respond() (a bug in the
  /// handler, or an actor that went down with the request in its mailbox).
  void deliver(http_response res, const std::string& route, bool abandoned = false) {
    if (done_.exchange(true))
      return;
    core_->in_flight.fetch_sub(1); // an accepted WebSocket stops counting here
    auto upgrade = res.upgrade;
    if (!post(std::move(res), route, abandoned) && upgrade)
      end_unopened(upgrade, "connection closed before the WebSocket handshake", *core_->log,
                   request_id_); // outside the life gate: the handler may respond to others
  }

private:
  /// Posts `res` to the session; false if it was dropped.
  bool post(http_response res, const std::string& route, bool abandoned) {
    std::shared_lock<std::shared_mutex> guard{core_->life_mu};
    if (core_->stopped) {
      core_->log->debug("[R:{}] response after stop dropped", request_id_);
      return false;
    }
    if (abandoned)
      core_->log->error("[R:{} T:{}] request dropped without a response; answering 500",
                        request_id_, trace_id_);
    if (res.upgrade)
      res.status = websocket_ ? 101 : 500; // what the session will send
    core_->record(method_, route, res.status, started_);
    auto secs = std::chrono::duration<double>(clock_type::now() - started_).count();
    if (res.status >= 500)
      core_->log->warn("[R:{} T:{}] {} {} -> {} in {:.1f} ms", request_id_, trace_id_, method_,
                       route, res.status, secs * 1e3);
    else
      core_->log->debug("[R:{} T:{}] {} {} -> {} in {:.1f} ms", request_id_, trace_id_, method_,
                        route, res.status, secs * 1e3);
    auto s = session_.lock();
    if (!s)
      return false;
    auto ex = s->executor();
    asio::post(ex, [s = std::move(s), res = std::move(res)]() mutable {
      s->deliver(std::move(res));
    });
    return true;
  }

  std::shared_ptr<server_core> core_;
  std::weak_ptr<session> session_;
  std::weak_ptr<http_exchange> exchange_;
  std::string method_;
  std::string request_id_;
  std::string trace_id_;
  clock_type::time_point started_;
  bool websocket_;
  std::atomic<bool> done_{false};
};

void session::on_request() {
  stream_.expires_never();
  upgrade_req_.reset();
  auto msg = parser_->release();
  http_request req;
  if (!parse_target(msg.target(), req.path, req.query)) {
    reject(400, "Bad Request", "The request target is not a valid origin-form path or query.");
    return;
  }
  req.method = std::string{msg.method_string()};
  req.target = std::string{msg.target()};
  req.headers.reserve(static_cast<size_t>(std::distance(msg.begin(), msg.end())));
  for (const auto& field : msg)
    req.headers.emplace_back(lower(field.name_string()), std::string{field.value()});
  req.body = std::move(msg.body());
  // Beast checks GET, HTTP/1.1, Connection: upgrade and Upgrade: websocket;
  // the accept also needs a key and version 13.
  req.websocket = websocket::is_upgrade(msg) && !msg[http::field::sec_websocket_key].empty()
                  && msg[http::field::sec_websocket_version] == "13";
  if (req.websocket)
    upgrade_req_ = std::move(msg);
  req.peer_address = peer_;
  req.request_id = meta_.request_id;
  req.trace_id = meta_.trace_id;
  req.tls = core_->opts.tls;
  core_->log->debug("[R:{} T:{}] {} {} from {}", meta_.request_id, meta_.trace_id, req.method,
                    req.target, peer_);
  awaiting_ = true;
  core_->in_flight.fetch_add(1);
  auto pending = std::make_shared<pending_response>(core_, weak_from_this(), meta_.method,
                                                    meta_.request_id, meta_.trace_id,
                                                    meta_.started, req.websocket);
  // The exchange owns the responder, the responder owns `pending`, `pending`
  // knows the exchange only weakly: no cycle.
  auto exchange = std::make_shared<http_exchange>(std::move(req), [pending](http_response res) {
    pending->deliver(std::move(res), pending->route());
  });
  pending->set_exchange(exchange);
  try {
    core_->dispatch(std::move(exchange));
  } catch (const std::exception& e) {
    core_->log->error("[R:{}] dispatch threw: {}", meta_.request_id, e.what());
    pending->deliver(problem(500, "Internal Server Error", "The request could not be dispatched.",
                             meta_.trace_id),
                     "unmatched");
  }
}

} // namespace

// -- the listener ----------------------------------------------------------------------

struct http_server::impl {
  impl(http_server_options opts, dispatch_fn dispatch, node_metrics* metrics)
    : core(std::make_shared<server_core>(std::move(opts), std::move(dispatch), metrics)),
      acceptor(asio::make_strand(ioc)), retry_timer(acceptor.get_executor()) {
  }

  ~impl() {
    stop();
  }

  caf::expected<uint16_t> start();
  void stop();
  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);

  // Declaration order is destruction order in reverse: the io_context
  // outlives everything bound to it.
  asio::io_context ioc;
  std::shared_ptr<server_core> core;
  tcp::acceptor acceptor;
  asio::steady_timer retry_timer;
  std::vector<std::thread> threads;
  std::mutex state_mu; ///< serializes start() and stop()
  bool started = false;
};

caf::expected<uint16_t> http_server::impl::start() {
  std::lock_guard<std::mutex> guard{state_mu};
  const auto& opts = core->opts;
  auto where = opts.host + ":" + std::to_string(opts.port);
  if (opts.tls)
    return caf::make_error(errc::config_invalid,
                           std::string{"TLS is not implemented by this http_server yet"});
  if (started)
    return caf::make_error(errc::internal, std::string{"http_server started twice"});
  {
    std::shared_lock<std::shared_mutex> life{core->life_mu};
    if (core->stopped)
      return caf::make_error(errc::internal, std::string{"http_server restarted after stop"});
  }
  beast::error_code ec;
  tcp::endpoint ep;
  auto addr = asio::ip::make_address(opts.host, ec);
  if (!ec) {
    ep = tcp::endpoint{addr, opts.port};
  } else {
    // A host name: resolving blocks, but start() runs before any io thread.
    tcp::resolver resolver{ioc};
    auto results = resolver.resolve(opts.host, std::to_string(opts.port), ec);
    if (ec || results.empty())
      return caf::make_error(errc::unavailable, "cannot listen on " + where + ": "
                                                  + (ec ? ec.message() : "no address"));
    ep = results.begin()->endpoint();
  }
  auto fail = [&](const beast::error_code& err) {
    beast::error_code ignored;
    acceptor.close(ignored);
    return caf::make_error(errc::unavailable, "cannot listen on " + where + ": " + err.message());
  };
  if (acceptor.open(ep.protocol(), ec); ec)
    return fail(ec);
  if (acceptor.set_option(asio::socket_base::reuse_address(true), ec); ec)
    return fail(ec);
  if (acceptor.bind(ep, ec); ec)
    return fail(ec);
  if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec)
    return fail(ec);
  auto bound = acceptor.local_endpoint(ec);
  if (ec)
    return fail(ec);
  started = true;
  do_accept();
  auto n = std::max<size_t>(1, opts.io_threads);
  threads.reserve(n);
  for (size_t i = 0; i < n; ++i)
    threads.emplace_back([this] {
      for (;;) {
        try {
          ioc.run();
          return;
        } catch (const std::exception& e) {
          // A throwing handler must not take the io thread down.
          core->log->error("exception on an http io thread: {}", e.what());
        }
      }
    });
  core->log->info("listening on {}:{} ({} io threads, max body {} B, max module {} B)",
                  bound.address().to_string(), bound.port(), n, opts.max_body_bytes,
                  opts.max_module_bytes);
  return bound.port();
}

void http_server::impl::do_accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    on_accept(ec, std::move(socket));
  });
}

void http_server::impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor.is_open())
    return;
  if (ec) {
    if (ec == asio::error::connection_aborted) {
      do_accept();
      return;
    }
    // EMFILE and friends: back off instead of spinning.
    core->log->warn("accept failed: {}; retrying in {} ms", ec.message(), accept_backoff.count());
    retry_timer.expires_after(accept_backoff);
    retry_timer.async_wait([this](beast::error_code tec) {
      if (!tec && acceptor.is_open())
        do_accept();
    });
    return;
  }
  beast::error_code opt_ec;
  socket.set_option(tcp::no_delay(true), opt_ec);
  auto s = std::make_shared<session>(std::move(socket), core);
  if (!core->add_session(s))
    return; // stop() is running; the socket closes with `s`
  s->start();
  do_accept();
}

void http_server::impl::stop() {
  std::lock_guard<std::mutex> guard{state_mu};
  {
    std::unique_lock<std::shared_mutex> life{core->life_mu};
    if (core->stopped)
      return;
    core->stopped = true;
  }
  if (ioc.get_executor().running_in_this_thread()) {
    // Joining ourselves would deadlock: a broken usage invariant.
    core->log->critical("http_server::stop() called on one of its own io threads");
    std::abort();
  }
  std::vector<std::shared_ptr<session>> live;
  std::vector<std::shared_ptr<ws_session>> live_ws;
  {
    std::lock_guard<std::mutex> sguard{core->sessions_mu};
    core->closing = true;
    live.reserve(core->sessions.size());
    for (auto& kv : core->sessions)
      live.push_back(kv.second);
    live_ws.reserve(core->websockets.size());
    for (auto& kv : core->websockets)
      live_ws.push_back(kv.second);
  }
  if (started) {
    asio::post(acceptor.get_executor(), [this] {
      beast::error_code ec;
      acceptor.close(ec);
      retry_timer.cancel();
    });
    for (auto& s : live) {
      auto ex = s->executor();
      asio::post(ex, [s] { s->close_now(); });
    }
    live.clear();
    // A WebSocket gets a close frame and a short while to answer it; its
    // handler's on_close() runs before the io threads end.
    for (auto& ws : live_ws)
      ws->request_close(1001, "server stopping", true, ws_stop_timeout);
    live_ws.clear();
    // No responder posts any more and every socket is closing: run() returns
    // once the cancelled operations completed.
    for (auto& t : threads)
      t.join();
    threads.clear();
  }
  live.clear();
  live_ws.clear();
  std::unordered_map<session*, std::shared_ptr<session>> rest;
  std::unordered_map<ws_session*, std::shared_ptr<ws_session>> rest_ws;
  {
    std::lock_guard<std::mutex> sguard{core->sessions_mu};
    rest.swap(core->sessions);
    rest_ws.swap(core->websockets);
  }
  rest.clear(); // sessions still waiting for a response: destroyed while ioc lives
  rest_ws.clear(); // empty once the io threads ran; never started otherwise
  beast::error_code ec;
  acceptor.close(ec);
  if (started)
    core->log->info("stopped ({} requests were still in flight)", core->in_flight.load());
}

// -- public interface ------------------------------------------------------------------

http_server::http_server(http_server_options opts, dispatch_fn dispatch, node_metrics* metrics)
  : impl_(std::make_shared<impl>(std::move(opts), std::move(dispatch), metrics)) {
}

http_server::~http_server() {
  impl_->stop();
}

caf::expected<uint16_t> http_server::start() {
  return impl_->start();
}

void http_server::begin_drain() {
  auto& core = *impl_->core;
  if (core.draining.exchange(true))
    return;
  // The life gate keeps the io_context alive while posting, and the
  // references below are dropped under it. A WebSocket that registers from
  // here on sees `draining` itself (ws_session::start).
  std::shared_lock<std::shared_mutex> life{core.life_mu};
  std::vector<std::shared_ptr<ws_session>> websockets;
  if (!core.stopped)
    websockets = core.open_websockets();
  core.log->info("draining: new requests get 503, {} in flight, closing {} websockets",
                 core.in_flight.load(), websockets.size());
  for (auto& ws : websockets)
    ws->request_close(1001, "server shutting down", false, ws_close_timeout);
  websockets.clear();
}

bool http_server::draining() const {
  return impl_->core->draining.load();
}

size_t http_server::in_flight() const {
  return impl_->core->in_flight.load();
}

void http_server::stop() {
  impl_->stop();
}

} // namespace hotswap
