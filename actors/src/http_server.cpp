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

#include "hotswap/actors/http_server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
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

#include <spdlog/spdlog.h>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

constexpr uint32_t header_limit_bytes = 16 * 1024;
constexpr std::chrono::seconds linger_timeout{3};
constexpr std::chrono::milliseconds accept_backoff{50};
constexpr size_t read_chunk = 8 * 1024;

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

class session;

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

// -- the connection ------------------------------------------------------------------

class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket&& socket, std::shared_ptr<server_core> core)
    : stream_(std::move(socket)), core_(std::move(core)) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec)
      peer_ = ep.address().to_string();
  }

  using executor_type = beast::tcp_stream::executor_type;

  executor_type executor() {
    return stream_.get_executor();
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

  /// Writes the response to the dispatched request (on the strand).
  void deliver(http_response res) {
    if (closed_ || !awaiting_) {
      core_->log->debug("[R:{}] response dropped: connection closed", meta_.request_id);
      return;
    }
    awaiting_ = false;
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
    res->set("X-Content-Type-Options", "nosniff");
    res->set(http::field::x_frame_options, "DENY");
    res->set("Referrer-Policy", "no-referrer");
    res->set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
    res->set("Permissions-Policy", "geolocation=(), camera=(), microphone=()");
    // Everything this server answers is dynamic API or operations data;
    // a handler may set its own Cache-Control below.
    res->set(http::field::cache_control, "no-store");
    if (core_->opts.tls)
      res->set(http::field::strict_transport_security, "max-age=31536000; includeSubDomains");
    res->set("X-Request-Id", meta_.request_id);
    for (auto& [name, value] : r.headers) {
      auto f = http::string_to_field(name);
      if (f == http::field::server || f == http::field::connection
          || f == http::field::content_length || f == http::field::transfer_encoding
          || name.empty() || !safe_header_value(name) || !safe_header_value(value)) {
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
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
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
                   clock_type::time_point started)
    : core_(std::move(core)), session_(std::move(s)), method_(std::move(method)),
      request_id_(std::move(request_id)), trace_id_(std::move(trace_id)), started_(started) {
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
    core_->in_flight.fetch_sub(1);
    std::shared_lock<std::shared_mutex> guard{core_->life_mu};
    if (core_->stopped) {
      core_->log->debug("[R:{}] response after stop dropped", request_id_);
      return;
    }
    if (abandoned)
      core_->log->error("[R:{} T:{}] request dropped without a response; answering 500",
                        request_id_, trace_id_);
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
      return;
    auto ex = s->executor();
    asio::post(ex, [s = std::move(s), res = std::move(res)]() mutable {
      s->deliver(std::move(res));
    });
  }

private:
  std::shared_ptr<server_core> core_;
  std::weak_ptr<session> session_;
  std::weak_ptr<http_exchange> exchange_;
  std::string method_;
  std::string request_id_;
  std::string trace_id_;
  clock_type::time_point started_;
  std::atomic<bool> done_{false};
};

void session::on_request() {
  stream_.expires_never();
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
                                                    meta_.started);
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
  {
    std::lock_guard<std::mutex> sguard{core->sessions_mu};
    core->closing = true;
    live.reserve(core->sessions.size());
    for (auto& kv : core->sessions)
      live.push_back(kv.second);
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
    // No responder posts any more and every socket is closing: run() returns
    // once the cancelled operations completed.
    for (auto& t : threads)
      t.join();
    threads.clear();
  }
  live.clear();
  std::unordered_map<session*, std::shared_ptr<session>> rest;
  {
    std::lock_guard<std::mutex> sguard{core->sessions_mu};
    rest.swap(core->sessions);
  }
  rest.clear(); // sessions still waiting for a response: destroyed while ioc lives
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
  if (!impl_->core->draining.exchange(true))
    impl_->core->log->info("draining: new requests get 503, {} in flight",
                           impl_->core->in_flight.load());
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
