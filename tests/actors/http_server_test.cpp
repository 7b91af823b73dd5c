#define CAF_SUITE http_server

#include "hotswap/actors/http_server.hpp"

#include "caf/test/dsl.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <sys/socket.h>

#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/metrics.hpp"

#include "../eventually.hpp"

using namespace hotswap;
using namespace std::chrono_literals;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;

using response = http::response<http::string_body>;

constexpr auto deadline = 5s;

/// Polls `pred` every millisecond until it holds or the deadline passes.
template <class Pred>
bool eventually(Pred pred) {
  return test::eventually(pred, deadline, 1ms);
}

bool is_hex(const std::string& s, size_t len) {
  return s.size() == len && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

/// Records what the server tells a ws_handler (io threads) for the test
/// thread to look at.
class recording_handler : public ws_handler {
public:
  using close_event = std::pair<uint16_t, std::string>;

  void on_open(ws_connection_ptr conn) override {
    std::lock_guard<std::mutex> guard{mu_};
    conn_ = std::move(conn);
    ++opens_;
  }

  void on_text(std::string text) override {
    std::lock_guard<std::mutex> guard{mu_};
    texts_.push_back(std::move(text));
  }

  void on_close(uint16_t code, std::string reason) override {
    std::lock_guard<std::mutex> guard{mu_};
    closes_.emplace_back(code, std::move(reason));
  }

  ws_connection_ptr conn() const {
    std::lock_guard<std::mutex> guard{mu_};
    return conn_;
  }

  size_t opens() const {
    std::lock_guard<std::mutex> guard{mu_};
    return opens_;
  }

  std::vector<std::string> texts() const {
    std::lock_guard<std::mutex> guard{mu_};
    return texts_;
  }

  std::vector<close_event> closes() const {
    std::lock_guard<std::mutex> guard{mu_};
    return closes_;
  }

  /// The code of the first on_close (0 if none).
  uint16_t close_code() const {
    std::lock_guard<std::mutex> guard{mu_};
    return closes_.empty() ? uint16_t{0} : closes_.front().first;
  }

  std::string close_reason() const {
    std::lock_guard<std::mutex> guard{mu_};
    return closes_.empty() ? std::string{} : closes_.front().second;
  }

private:
  mutable std::mutex mu_;
  ws_connection_ptr conn_;
  size_t opens_ = 0;
  std::vector<std::string> texts_;
  std::vector<close_event> closes_;
};

/// Stands in for the bridge actor: answers exchanges on its own thread.
/// `/hold...` requests are parked until the test answers them; `/drop` is
/// destroyed without an answer; `/ws` accepts a WebSocket handshake with the
/// handler of set_ws_handler(), `/ws-denied` declines it with 401 and
/// `/ws-any` answers any request with that handler; everything else is
/// echoed as JSON.
class fake_actor {
public:
  fake_actor() : thread_([this] { run(); }) {
  }

  ~fake_actor() {
    {
      std::lock_guard<std::mutex> guard{mu_};
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void post(http_exchange_ptr ex) {
    {
      std::lock_guard<std::mutex> guard{mu_};
      inbox_.push_back(std::move(ex));
    }
    cv_.notify_all();
  }

  /// Waits until `n` requests are parked.
  bool wait_held(size_t n) {
    std::unique_lock<std::mutex> guard{mu_};
    return cv_.wait_for(guard, deadline, [&] { return held_.size() >= n; });
  }

  void set_ws_handler(std::shared_ptr<ws_handler> handler) {
    std::lock_guard<std::mutex> guard{mu_};
    ws_handler_ = std::move(handler);
  }

  http_exchange_ptr take_held() {
    std::lock_guard<std::mutex> guard{mu_};
    auto ex = held_.front();
    held_.pop_front();
    return ex;
  }

  static http_response echo(const http_request& req) {
    json::object obj;
    obj["method"] = req.method;
    obj["path"] = req.path;
    json::object query;
    for (const auto& [k, v] : req.query)
      query[k] = v;
    obj["query"] = std::move(query);
    obj["requestId"] = req.request_id;
    obj["traceId"] = req.trace_id;
    obj["bodySize"] = req.body.size();
    obj["peer"] = req.peer_address;
    obj["tls"] = req.tls;
    obj["custom"] = req.header("X-Custom");
    auto res = json_response(200, json::serialize(obj));
    res.headers.emplace_back("X-Test", "1");
    return res;
  }

private:
  void run() {
    for (;;) {
      http_exchange_ptr ex;
      {
        std::unique_lock<std::mutex> guard{mu_};
        cv_.wait(guard, [&] { return quit_ || !inbox_.empty(); });
        if (quit_)
          return;
        ex = std::move(inbox_.front());
        inbox_.pop_front();
      }
      const auto& path = ex->request().path;
      if (path.rfind("/hold", 0) == 0) {
        {
          std::lock_guard<std::mutex> guard{mu_};
          held_.push_back(std::move(ex));
        }
        cv_.notify_all();
      } else if (path == "/drop") {
        ex.reset();
      } else if (path == "/missing") {
        ex->respond(problem(404, "Not Found", "no such thing", ex->request().trace_id));
      } else if (path == "/ws" && !ex->request().websocket) {
        ex->respond(problem(400, "Bad Request", "not a handshake", ex->request().trace_id));
      } else if (path == "/ws" || path == "/ws-any") {
        auto res = json_response(200, "{}");
        res.headers.emplace_back("X-Test", "ws");
        std::lock_guard<std::mutex> guard{mu_};
        res.upgrade = ws_handler_;
        ex->respond(std::move(res));
      } else if (path == "/ws-denied") {
        ex->respond(problem(401, "Unauthorized", "no token", ex->request().trace_id));
      } else {
        ex->set_route("/echo");
        ex->respond(echo(ex->request()));
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<http_exchange_ptr> inbox_;
  std::deque<http_exchange_ptr> held_;
  std::shared_ptr<ws_handler> ws_handler_;
  bool quit_ = false;
  std::thread thread_;
};

/// A Beast client whose every operation has a deadline.
class client {
public:
  beast::error_code connect(uint16_t port) {
    return run([&](auto handler) {
      stream_.async_connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port},
                            [handler](beast::error_code ec) mutable { handler(ec, 0); });
    });
  }

  beast::error_code send(http::request<http::string_body> req) {
    req.prepare_payload();
    return run([&](auto handler) { http::async_write(stream_, req, handler); });
  }

  beast::error_code send_raw(const std::string& bytes) {
    return run([&](auto handler) { asio::async_write(stream_, asio::buffer(bytes), handler); });
  }

  std::pair<beast::error_code, response> receive(bool head = false) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    parser.skip(head);
    auto ec = run([&](auto handler) { http::async_read(stream_, buffer_, parser, handler); });
    return {ec, parser.release()};
  }

  /// Sends `req` and reads the answer; requires both to succeed.
  response exchange(http::request<http::string_body> req) {
    auto ec = send(std::move(req));
    CAF_REQUIRE(!ec);
    auto [rec, res] = receive();
    CAF_REQUIRE(!rec);
    return res;
  }

  /// What the next read sees: eof after a graceful close.
  beast::error_code read_end() {
    if (buffer_.size() > 0)
      return {};
    char c;
    return run([&](auto handler) { stream_.async_read_some(asio::buffer(&c, 1), handler); });
  }

private:
  template <class Start>
  beast::error_code run(Start start) {
    beast::error_code result = asio::error::would_block;
    stream_.expires_after(deadline);
    start([&result](beast::error_code ec, size_t) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  asio::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buffer_;
};

/// Beast's synchronous WebSocket client, driven by the test thread (or a
/// reader thread of the test). A watchdog shuts the socket down after twice
/// the deadline, so that a server that never answers fails the test instead
/// of hanging it.
class ws_client {
public:
  /// How a connection ended: the messages read before, then the error and
  /// the close frame the server sent (if any).
  struct ending {
    std::vector<std::string> texts;
    beast::error_code ec;
    websocket::close_reason reason;
  };

  ws_client() : watchdog_([this] { watch(); }) {
  }

  ~ws_client() {
    {
      std::lock_guard<std::mutex> guard{mu_};
      done_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
  }

  /// Connects and sends the opening handshake; `res` gets the answer.
  beast::error_code open(uint16_t port, const std::string& target,
                         websocket::response_type& res) {
    beast::error_code ec;
    ws_.next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port}, ec);
    if (ec)
      return ec;
    {
      std::lock_guard<std::mutex> guard{mu_};
      fd_ = ws_.next_layer().native_handle();
    }
    ws_.handshake(res, "127.0.0.1:" + std::to_string(port), target, ec);
    return ec;
  }

  beast::error_code open(uint16_t port) {
    websocket::response_type res;
    return open(port, "/ws", res);
  }

  beast::error_code write(const std::string& payload, bool binary = false) {
    beast::error_code ec;
    ws_.binary(binary);
    ws_.write(asio::buffer(payload), ec);
    return ec;
  }

  /// Bytes waiting in the socket's receive buffer.
  size_t available() {
    beast::error_code ec;
    return ws_.next_layer().available(ec);
  }

  std::pair<beast::error_code, std::string> read() {
    beast::error_code ec;
    buffer_.clear();
    ws_.read(buffer_, ec);
    return {ec, beast::buffers_to_string(buffer_.data())};
  }

  /// Reads until the connection ends.
  ending read_to_end() {
    ending out;
    for (;;) {
      auto [ec, text] = read();
      if (ec) {
        out.ec = ec;
        break;
      }
      out.texts.push_back(std::move(text));
    }
    out.reason = ws_.reason();
    return out;
  }

  beast::error_code close(websocket::close_code code) {
    beast::error_code ec;
    ws_.close(code, ec);
    return ec;
  }

private:
  void watch() {
    std::unique_lock<std::mutex> guard{mu_};
    if (!cv_.wait_for(guard, 2 * deadline, [this] { return done_; }) && fd_ >= 0)
      ::shutdown(fd_, SHUT_RDWR);
  }

  asio::io_context ioc_;
  websocket::stream<tcp::socket> ws_{ioc_};
  beast::flat_buffer buffer_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  int fd_ = -1;
  std::thread watchdog_; ///< last: starts once the members above exist
};

std::string reason_of(const websocket::close_reason& r) {
  return std::string{r.reason.data(), r.reason.size()};
}

http::request<http::string_body> get(const std::string& target) {
  http::request<http::string_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  return req;
}

http::request<http::string_body> post(const std::string& target, std::string body) {
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "application/octet-stream");
  req.body() = std::move(body);
  return req;
}

json::object body_of(const response& res) {
  return json::parse(res.body()).as_object();
}

std::string str(const json::object& obj, const char* key) {
  auto i = obj.find(key);
  if (i == obj.end() || !i->value().is_string())
    return {};
  return std::string{i->value().get_string()};
}

bool closes(const response& res) {
  return beast::iequals(res[http::field::connection], "close");
}

struct fixture {
  fake_actor actor;
  node_metrics metrics;
  std::optional<http_server> server;
  uint16_t port = 0;

  static http_server_options defaults() {
    http_server_options opts;
    opts.host = "127.0.0.1";
    opts.port = 0;
    opts.max_body_bytes = 1024;
    opts.max_module_bytes = 64 * 1024;
    return opts;
  }

  /// Replaces the server with one started with `opts`.
  void restart(http_server_options opts) {
    server.reset();
    start(std::move(opts));
  }

  /// Opens a WebSocket on a fresh handler and waits for on_open.
  std::shared_ptr<recording_handler> open_ws(ws_client& c) {
    auto handler = std::make_shared<recording_handler>();
    actor.set_ws_handler(handler);
    CAF_REQUIRE(!c.open(port));
    CAF_REQUIRE(eventually([&] { return handler->opens() == 1; }));
    return handler;
  }

  /// A client that does not read while the server sends `payload`s until a
  /// send is refused; then it reads what arrived. Returns the number of
  /// accepted sends, what the client read, and the handler.
  struct slow_result {
    size_t accepted = 0;
    ws_client::ending end;
    std::shared_ptr<recording_handler> handler;
  };

  slow_result slow_consumer(const std::string& payload) {
    slow_result out;
    ws_client c;
    out.handler = open_ws(c);
    auto conn = out.handler->conn();
    // First in batches of 8 (half the buffer), each once the one before
    // reached the client's socket, until the socket buffers are full and
    // nothing moves any more (so the close frame has to wait behind data
    // the client has not read); then without pause. The socket buffers hold a few MB:
    // an unbounded send buffer would accept all 10000 (40 MB and more).
    bool flowing = true;
    size_t sent_bytes = 0;
    for (size_t i = 0; i < 10000; ++i) {
      auto text = std::to_string(i) + ":" + payload;
      if (!conn->send(text))
        break;
      ++out.accepted;
      sent_bytes += text.size();
      if (flowing && out.accepted % 8 == 0)
        flowing = test::eventually([&] { return c.available() >= sent_bytes; }, 500ms, 1ms);
    }
    CAF_REQUIRE(out.accepted < 10000);
    CAF_REQUIRE(!flowing); // the buffer overflowed behind a full socket
    CAF_CHECK(!conn->send("after the refusal"));
    out.end = c.read_to_end();
    CAF_MESSAGE("accepted " << out.accepted << ", received " << out.end.texts.size());
    return out;
  }

  void start(http_server_options opts = defaults()) {
    server.emplace(std::move(opts), [this](http_exchange_ptr ex) { actor.post(std::move(ex)); },
                   &metrics);
    auto bound = server->start();
    CAF_REQUIRE(bound);
    port = *bound;
    CAF_REQUIRE_NOT_EQUAL(port, 0u);
  }

  fixture() {
    start();
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(http_server_tests, fixture)

CAF_TEST(two requests share one keep alive connection) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto first = c.exchange(get("/echo/1"));
  CAF_CHECK_EQUAL(first.result_int(), 200u);
  CAF_CHECK(first.keep_alive());
  CAF_CHECK_EQUAL(str(body_of(first), "path"), "/echo/1");
  auto second = c.exchange(get("/echo/2"));
  CAF_CHECK_EQUAL(second.result_int(), 200u);
  CAF_CHECK_EQUAL(str(body_of(second), "path"), "/echo/2");
  CAF_CHECK_EQUAL(second[http::field::content_type], "application/json");
  CAF_CHECK_EQUAL(second["X-Test"], "1");
}

CAF_TEST(every response carries the security headers and no Server header) {
  auto check = [](const response& res) {
    CAF_CHECK_EQUAL(res["X-Content-Type-Options"], "nosniff");
    CAF_CHECK_EQUAL(res["X-Frame-Options"], "DENY");
    CAF_CHECK_EQUAL(res["Referrer-Policy"], "no-referrer");
    CAF_CHECK_EQUAL(res["Content-Security-Policy"], "default-src 'none'; frame-ancestors 'none'");
    CAF_CHECK_EQUAL(res["Permissions-Policy"], "geolocation=(), camera=(), microphone=()");
    CAF_CHECK_EQUAL(res[http::field::cache_control], "no-store");
    CAF_CHECK(res.find(http::field::server) == res.end());
    CAF_CHECK(res.find(http::field::strict_transport_security) == res.end()); // not TLS
    CAF_CHECK(!res["X-Request-Id"].empty());
  };
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto ok = c.exchange(get("/echo"));
  CAF_CHECK_EQUAL(ok.result_int(), 200u);
  check(ok);
  auto missing = c.exchange(get("/missing"));
  CAF_CHECK_EQUAL(missing.result_int(), 404u);
  check(missing);
  client bad;
  CAF_REQUIRE(!bad.connect(port));
  CAF_REQUIRE(!bad.send_raw("NOT A REQUEST\r\n\r\n"));
  auto [ec, rejected] = bad.receive();
  CAF_REQUIRE(!ec);
  CAF_CHECK_EQUAL(rejected.result_int(), 400u);
  check(rejected);
}

CAF_TEST(a valid X-Request-Id is echoed and an invalid or missing one replaced) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto req = get("/echo");
  req.set("X-Request-Id", "abc-123.X_y");
  auto res = c.exchange(req);
  CAF_CHECK_EQUAL(res["X-Request-Id"], "abc-123.X_y");
  CAF_CHECK_EQUAL(str(body_of(res), "requestId"), "abc-123.X_y");
  auto bad = get("/echo");
  bad.set("X-Request-Id", "bad id!");
  res = c.exchange(bad);
  auto generated = std::string{res["X-Request-Id"]};
  CAF_CHECK(is_hex(generated, 32));
  CAF_CHECK_EQUAL(str(body_of(res), "requestId"), generated);
  auto too_long = get("/echo");
  too_long.set("X-Request-Id", std::string(129, 'a'));
  res = c.exchange(too_long);
  CAF_CHECK(is_hex(std::string{res["X-Request-Id"]}, 32));
  res = c.exchange(get("/echo"));
  auto other = std::string{res["X-Request-Id"]};
  CAF_CHECK(is_hex(other, 32));
  CAF_CHECK_NOT_EQUAL(other, generated);
}

CAF_TEST(a valid traceparent sets the trace id and an invalid one is replaced) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto req = get("/echo");
  req.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  CAF_CHECK_EQUAL(str(body_of(c.exchange(req)), "traceId"), "4bf92f3577b34da6a3ce929d0e0e4736");
  for (auto bad : {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                   "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                   "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                   "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "garbage"}) {
    auto r = get("/echo");
    r.set("traceparent", bad);
    auto trace = str(body_of(c.exchange(r)), "traceId");
    CAF_CHECK(is_hex(trace, 32));
    CAF_CHECK_NOT_EQUAL(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
  }
  auto future = get("/echo");
  future.set("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more");
  CAF_CHECK_EQUAL(str(body_of(c.exchange(future)), "traceId"),
                  "4bf92f3577b34da6a3ce929d0e0e4736");
}

CAF_TEST(path and query are percent decoded and headers lower cased) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto req = get("/echo/a%20b+c?x=1&y=hello+world%21&x=2&flag");
  req.set("X-Custom", "Value");
  auto obj = body_of(c.exchange(req));
  CAF_CHECK_EQUAL(str(obj, "path"), "/echo/a b+c");
  auto query = obj["query"].as_object();
  CAF_CHECK_EQUAL(str(query, "x"), "2");
  CAF_CHECK_EQUAL(str(query, "y"), "hello world!");
  CAF_CHECK(query.contains("flag"));
  CAF_CHECK_EQUAL(str(obj, "custom"), "Value");
  CAF_CHECK_EQUAL(str(obj, "peer"), "127.0.0.1");
  CAF_CHECK(!obj["tls"].as_bool());
  CAF_CHECK_EQUAL(str(obj, "method"), "GET");
  client broken;
  CAF_REQUIRE(!broken.connect(port));
  auto res = broken.exchange(get("/echo%zz"));
  CAF_CHECK_EQUAL(res.result_int(), 400u);
  CAF_CHECK(closes(res));
}

CAF_TEST(a body over max_body_bytes is answered 413 problem json and closed) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto small = c.exchange(post("/echo", std::string(1024, 'x')));
  CAF_CHECK_EQUAL(small.result_int(), 200u);
  CAF_CHECK_EQUAL(body_of(small)["bodySize"].to_number<int>(), 1024);
  auto res = c.exchange(post("/echo", std::string(4096, 'x')));
  CAF_CHECK_EQUAL(res.result_int(), 413u);
  CAF_CHECK_EQUAL(res[http::field::content_type], "application/problem+json");
  CAF_CHECK(closes(res));
  auto obj = body_of(res);
  CAF_CHECK_EQUAL(obj["status"].to_number<int>(), 413);
  CAF_CHECK_EQUAL(str(obj, "title"), "Payload Too Large");
  CAF_CHECK_EQUAL(str(obj, "error"), "Payload Too Large");
  CAF_CHECK(!str(obj, "message").empty());
  CAF_CHECK_EQUAL(str(obj, "message"), str(obj, "detail"));
  CAF_CHECK(is_hex(str(obj, "traceId"), 32));
  CAF_CHECK(!str(obj, "type").empty());
  CAF_CHECK(c.read_end() == asio::error::eof);
  // A chunked body has no Content-Length: the limit applies while reading.
  client chunked;
  CAF_REQUIRE(!chunked.connect(port));
  std::string raw = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 4; ++i)
    raw += "400\r\n" + std::string(1024, 'y') + "\r\n";
  raw += "0\r\n\r\n";
  CAF_REQUIRE(!chunked.send_raw(raw));
  auto [ec, cres] = chunked.receive();
  CAF_REQUIRE(!ec);
  CAF_CHECK_EQUAL(cres.result_int(), 413u);
  CAF_CHECK(chunked.read_end() == asio::error::eof);
  // Counted with the bounded route label of server rejections.
  auto text = metrics.render();
  CAF_CHECK(text.find("route=\"rejected\"") != std::string::npos);
  CAF_CHECK(text.find("route=\"/echo\"") != std::string::npos);
}

CAF_TEST(a malformed request is answered 400 and the connection closed) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  CAF_REQUIRE(!c.send_raw("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"));
  auto [ec, res] = c.receive();
  CAF_REQUIRE(!ec);
  CAF_CHECK_EQUAL(res.result_int(), 400u);
  CAF_CHECK_EQUAL(res[http::field::content_type], "application/problem+json");
  CAF_CHECK(closes(res));
  CAF_CHECK_EQUAL(str(body_of(res), "error"), "Bad Request");
  CAF_CHECK(c.read_end() == asio::error::eof);
}

CAF_TEST(the module upload path accepts a body larger than max_body_bytes) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto res = c.exchange(post("/api/v1/modules", std::string(32 * 1024, 'm')));
  CAF_CHECK_EQUAL(res.result_int(), 200u);
  CAF_CHECK_EQUAL(body_of(res)["bodySize"].to_number<int>(), 32 * 1024);
  // Only POST to exactly that path gets the larger limit.
  client other;
  CAF_REQUIRE(!other.connect(port));
  auto put = post("/api/v1/modules", std::string(4096, 'm'));
  put.method(http::verb::put);
  CAF_CHECK_EQUAL(other.exchange(put).result_int(), 413u);
  client huge;
  CAF_REQUIRE(!huge.connect(port));
  CAF_CHECK_EQUAL(huge.exchange(post("/api/v1/modules", std::string(65 * 1024, 'm'))).result_int(),
                  413u);
}

CAF_TEST(a body announced with Expect 100-continue gets an interim response) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  CAF_REQUIRE(!c.send_raw("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                          "Expect: 100-continue\r\n\r\n"));
  auto [ec, interim] = c.receive();
  CAF_REQUIRE(!ec);
  CAF_CHECK_EQUAL(interim.result_int(), 100u);
  CAF_REQUIRE(!c.send_raw("hello"));
  auto [ec2, res] = c.receive();
  CAF_REQUIRE(!ec2);
  CAF_CHECK_EQUAL(res.result_int(), 200u);
  CAF_CHECK_EQUAL(body_of(res)["bodySize"].to_number<int>(), 5);
}

CAF_TEST(a HEAD request gets the headers without a body) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto req = get("/echo");
  req.method(http::verb::head);
  CAF_REQUIRE(!c.send(req));
  auto [ec, res] = c.receive(true);
  CAF_REQUIRE(!ec);
  CAF_CHECK_EQUAL(res.result_int(), 200u);
  CAF_CHECK(res.body().empty());
  CAF_CHECK_NOT_EQUAL(res[http::field::content_length], "0");
  // The connection is still in sync for the next request.
  CAF_CHECK_EQUAL(c.exchange(get("/echo")).result_int(), 200u);
}

CAF_TEST(in_flight counts dispatched requests until they are answered) {
  CAF_CHECK_EQUAL(server->in_flight(), 0u);
  client a;
  client b;
  CAF_REQUIRE(!a.connect(port));
  CAF_REQUIRE(!b.connect(port));
  CAF_REQUIRE(!a.send(get("/hold/a")));
  CAF_REQUIRE(!b.send(get("/hold/b")));
  CAF_REQUIRE(actor.wait_held(2));
  CAF_CHECK_EQUAL(server->in_flight(), 2u);
  auto first = actor.take_held();
  CAF_CHECK(first->respond(json_response(200, "{}")));
  CAF_CHECK(!first->respond(json_response(500, "{}"))); // only once
  CAF_CHECK(eventually([&] { return server->in_flight() == 1; }));
  auto second = actor.take_held();
  second->respond(json_response(201, "{}"));
  CAF_CHECK(eventually([&] { return server->in_flight() == 0; }));
  auto [ea, ra] = a.receive();
  auto [eb, rb] = b.receive();
  CAF_REQUIRE(!ea);
  CAF_REQUIRE(!eb);
  // Which held exchange was which does not matter: one 200, one 201.
  CAF_CHECK_EQUAL(ra.result_int() + rb.result_int(), 401u);
}

CAF_TEST(an exchange dropped without a response is answered 500) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto res = c.exchange(get("/drop"));
  CAF_CHECK_EQUAL(res.result_int(), 500u);
  CAF_CHECK_EQUAL(res[http::field::content_type], "application/problem+json");
  CAF_CHECK(eventually([&] { return server->in_flight() == 0; }));
}

CAF_TEST(the drain finishes requests in flight and answers new ones 503) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  CAF_REQUIRE(!c.send(get("/hold/drain")));
  CAF_REQUIRE(actor.wait_held(1));
  CAF_CHECK_EQUAL(server->in_flight(), 1u);
  server->begin_drain();
  CAF_CHECK(server->draining());
  actor.take_held()->respond(json_response(200, R"({"done":true})"));
  auto [ec, res] = c.receive();
  CAF_REQUIRE(!ec);
  CAF_CHECK_EQUAL(res.result_int(), 200u);
  CAF_CHECK_EQUAL(res.body(), R"({"done":true})");
  CAF_CHECK(!closes(res));
  CAF_CHECK_EQUAL(server->in_flight(), 0u);
  // The next request on the same keep-alive connection.
  auto next = c.exchange(get("/echo"));
  CAF_CHECK_EQUAL(next.result_int(), 503u);
  CAF_CHECK(closes(next));
  CAF_CHECK_EQUAL(next[http::field::retry_after], "1");
  CAF_CHECK_EQUAL(next[http::field::content_type], "application/problem+json");
  CAF_CHECK_EQUAL(next["X-Frame-Options"], "DENY");
  CAF_CHECK_EQUAL(str(body_of(next), "error"), "Service Unavailable");
  // Closed gracefully: EOF, not a reset.
  CAF_CHECK(c.read_end() == asio::error::eof);
  // A new connection is still accepted, and answered 503.
  client late;
  CAF_REQUIRE(!late.connect(port));
  auto late_res = late.exchange(post("/echo", "payload"));
  CAF_CHECK_EQUAL(late_res.result_int(), 503u);
  CAF_CHECK(closes(late_res));
  CAF_CHECK(late.read_end() == asio::error::eof);
  CAF_CHECK_EQUAL(server->in_flight(), 0u);
}

CAF_TEST(stop is idempotent and drops late responses) {
  client c;
  CAF_REQUIRE(!c.connect(port));
  CAF_REQUIRE(!c.send(get("/hold/stop")));
  CAF_REQUIRE(actor.wait_held(1));
  server->stop();
  server->stop();
  auto held = actor.take_held();
  CAF_CHECK(held->respond(json_response(200, "{}"))); // dropped, not crashing
  CAF_CHECK_EQUAL(server->in_flight(), 0u);
  auto [ec, res] = c.receive();
  CAF_CHECK(ec); // the connection was closed by stop()
  client after;
  CAF_CHECK(after.connect(port)); // nobody listens any more
  server.reset(); // the destructor stops again
}

CAF_TEST(stop under load closes every connection and returns) {
  std::atomic<int> answered{0};
  std::atomic<bool> quit{false};
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i)
    clients.emplace_back([&, i] {
      while (!quit.load()) {
        client c;
        if (c.connect(port))
          return; // the listener is gone
        for (int n = 0; !quit.load(); ++n) {
          auto target = (n % 7 == 3) ? "/drop" : "/echo/" + std::to_string(i);
          if (c.send(get(target)))
            break;
          auto [ec, res] = c.receive();
          if (ec)
            break;
          ++answered;
        }
      }
    });
  CAF_CHECK(eventually([&] { return answered.load() >= 300; }));
  server->begin_drain();
  server->stop();
  quit = true;
  for (auto& t : clients)
    t.join();
  CAF_CHECK(eventually([&] { return server->in_flight() == 0; }));
}

CAF_TEST(binding a port in use fails with errc unavailable) {
  auto opts = defaults();
  opts.port = port;
  http_server second{opts, [](http_exchange_ptr) {}, nullptr};
  auto res = second.start();
  CAF_REQUIRE(!res);
  CAF_CHECK_EQUAL(errc_of(res.error()), errc::unavailable);
  auto detail = error_detail(res.error());
  CAF_CHECK(detail.find("cannot listen on 127.0.0.1:" + std::to_string(port)) == 0);
  auto tls = defaults();
  tls.tls = true;
  http_server third{tls, [](http_exchange_ptr) {}, nullptr};
  CAF_CHECK(!third.start());
}

CAF_TEST(a websocket handshake answered with an upgrade carries messages both ways) {
  auto handler = std::make_shared<recording_handler>();
  actor.set_ws_handler(handler);
  ws_client c;
  websocket::response_type res;
  CAF_REQUIRE(!c.open(port, "/ws", res));
  CAF_CHECK_EQUAL(res.result_int(), 101u);
  CAF_CHECK_EQUAL(res["X-Content-Type-Options"], "nosniff");
  CAF_CHECK_EQUAL(res["X-Frame-Options"], "DENY");
  CAF_CHECK_EQUAL(res[http::field::cache_control], "no-store");
  CAF_CHECK(is_hex(std::string{res["X-Request-Id"]}, 32));
  CAF_CHECK_EQUAL(res["X-Test"], "ws"); // the handler's own header
  CAF_CHECK(res[http::field::server].empty()); // no Beast version
  CAF_REQUIRE(eventually([&] { return handler->opens() == 1; }));
  CAF_CHECK_EQUAL(server->in_flight(), 0u); // an open WebSocket is not a request in flight
  std::vector<std::string> sent;
  for (int i = 0; i < 10; ++i) {
    sent.push_back("client " + std::to_string(i));
    CAF_REQUIRE(!c.write(sent.back()));
  }
  CAF_CHECK(eventually([&] { return handler->texts().size() == sent.size(); }));
  CAF_CHECK_EQUAL(handler->texts(), sent);
  auto conn = handler->conn();
  for (int i = 0; i < 10; ++i)
    CAF_CHECK(conn->send("server " + std::to_string(i)));
  for (int i = 0; i < 10; ++i) {
    auto [ec, text] = c.read();
    CAF_REQUIRE(!ec);
    CAF_CHECK_EQUAL(text, "server " + std::to_string(i));
  }
  CAF_CHECK(handler->closes().empty());
  CAF_REQUIRE(!c.close(websocket::close_code::normal));
  CAF_REQUIRE(eventually([&] { return handler->closes().size() == 1; }));
  CAF_CHECK_EQUAL(handler->close_code(), 1000);
  CAF_CHECK(!conn->send("after the close"));
  CAF_CHECK(metrics.render().find("status=\"1xx\"") != std::string::npos);
  CAF_CHECK_EQUAL(handler->closes().size(), 1u);
}

CAF_TEST(a websocket handshake answered without an upgrade fails with that status) {
  ws_client c;
  websocket::response_type res;
  auto ec = c.open(port, "/ws-denied", res);
  CAF_CHECK(ec == websocket::error::upgrade_declined);
  CAF_CHECK_EQUAL(res.result_int(), 401u);
  CAF_CHECK_EQUAL(res[http::field::content_type], "application/problem+json");
  CAF_CHECK(beast::iequals(res[http::field::connection], "close"));
  CAF_CHECK_EQUAL(server->in_flight(), 0u);
}

CAF_TEST(an upgrade answered to a request that is no handshake is a 500) {
  auto handler = std::make_shared<recording_handler>();
  actor.set_ws_handler(handler);
  client c;
  CAF_REQUIRE(!c.connect(port));
  auto res = c.exchange(get("/ws-any"));
  CAF_CHECK_EQUAL(res.result_int(), 500u);
  CAF_CHECK_EQUAL(res[http::field::content_type], "application/problem+json");
  CAF_REQUIRE(eventually([&] { return handler->closes().size() == 1; }));
  CAF_CHECK_EQUAL(handler->close_code(), 1006); // ended without opening
  CAF_CHECK_EQUAL(handler->opens(), 0u);
  CAF_CHECK_EQUAL(server->in_flight(), 0u);
}

CAF_TEST(a client too slow to read is closed with 1008 once its send buffer is full) {
  auto opts = defaults();
  opts.ws_max_queued_messages = 16;
  restart(opts);
  auto r = slow_consumer(std::string(4096, 'x'));
  CAF_CHECK(r.end.ec == websocket::error::closed);
  CAF_CHECK_EQUAL(r.end.reason.code, 1008);
  CAF_CHECK_EQUAL(reason_of(r.end.reason), "client too slow: send buffer of 16 messages full");
  // What arrived is a prefix of what was accepted, in order; the rest (the
  // buffer when it overflowed) was dropped, so it never held more than 16.
  CAF_REQUIRE(r.end.texts.size() <= r.accepted);
  CAF_CHECK(r.accepted - r.end.texts.size() <= 16u);
  for (size_t i = 0; i < r.end.texts.size(); ++i)
    CAF_CHECK_EQUAL(r.end.texts[i].substr(0, r.end.texts[i].find(':')), std::to_string(i));
  CAF_REQUIRE(eventually([&] { return r.handler->closes().size() == 1; }));
  CAF_CHECK_EQUAL(r.handler->close_code(), 1008);
  CAF_CHECK_EQUAL(r.handler->close_reason(), "client too slow: send buffer of 16 messages full");
}

CAF_TEST(a client too slow to read is closed with 1008 once its send buffer bytes are used) {
  auto opts = defaults();
  opts.ws_max_queued_bytes = 64 * 1024;
  restart(opts);
  auto r = slow_consumer(std::string(4000, 'y'));
  CAF_CHECK(r.end.ec == websocket::error::closed);
  CAF_CHECK_EQUAL(r.end.reason.code, 1008);
  CAF_CHECK_EQUAL(reason_of(r.end.reason), "client too slow: send buffer of 65536 bytes full");
  CAF_REQUIRE(r.end.texts.size() <= r.accepted);
  // Each message is a bit over 4000 bytes: 16 of them fill 64 KiB.
  CAF_CHECK(r.accepted - r.end.texts.size() <= 16u);
  CAF_REQUIRE(eventually([&] { return r.handler->closes().size() == 1; }));
  CAF_CHECK_EQUAL(r.handler->close_code(), 1008);
}

CAF_TEST(a client message over ws_max_message_bytes closes with 1009) {
  auto opts = defaults();
  opts.ws_max_message_bytes = 1024;
  restart(opts);
  ws_client c;
  auto handler = open_ws(c);
  CAF_REQUIRE(!c.write(std::string(1024, 'a')));
  CAF_REQUIRE(eventually([&] { return handler->texts().size() == 1; }));
  CAF_REQUIRE(!c.write(std::string(1025, 'b')));
  auto end = c.read_to_end();
  CAF_CHECK(end.ec == websocket::error::closed);
  CAF_CHECK_EQUAL(end.reason.code, 1009);
  CAF_REQUIRE(eventually([&] { return handler->closes().size() == 1; }));
  CAF_CHECK_EQUAL(handler->close_code(), 1009);
  CAF_CHECK_EQUAL(handler->texts().size(), 1u);
}

CAF_TEST(a binary client message closes with 1003) {
  ws_client c;
  auto handler = open_ws(c);
  CAF_REQUIRE(!c.write("\x01\x02", true));
  auto end = c.read_to_end();
  CAF_CHECK(end.ec == websocket::error::closed);
  CAF_CHECK_EQUAL(end.reason.code, 1003);
  CAF_REQUIRE(eventually([&] { return handler->closes().size() == 1; }));
  CAF_CHECK_EQUAL(handler->close_code(), 1003);
  CAF_CHECK(handler->texts().empty());
}

CAF_TEST(the application closes a websocket after its queued messages) {
  ws_client c;
  auto handler = open_ws(c);
  auto conn = handler->conn();
  CAF_CHECK(conn->send("a"));
  CAF_CHECK(conn->send("b"));
  auto long_reason = "bye " + std::string(200, 'r');
  conn->close(4000, long_reason);
  conn->close(4001, "again"); // idempotent: the first close wins
  CAF_CHECK(!conn->send("c"));
  auto end = c.read_to_end();
  CAF_CHECK_EQUAL(end.texts, (std::vector<std::string>{"a", "b"}));
  CAF_CHECK(end.ec == websocket::error::closed);
  CAF_CHECK_EQUAL(end.reason.code, 4000);
  CAF_CHECK_EQUAL(reason_of(end.reason), long_reason.substr(0, 123)); // the frame's limit
  CAF_REQUIRE(eventually([&] { return handler->closes().size() == 1; }));
  CAF_CHECK_EQUAL(handler->close_code(), 4000);
  CAF_CHECK_EQUAL(handler->close_reason(), long_reason.substr(0, 123));
}

CAF_TEST(stop closes open websockets with 1001 and ends each handler once) {
  ws_client c;
  auto handler = open_ws(c);
  ws_client idle; // never answers the close frame
  auto idle_handler = open_ws(idle);
  ws_client::ending end;
  std::thread reader([&] { end = c.read_to_end(); });
  server->stop();
  reader.join();
  CAF_CHECK(end.ec == websocket::error::closed);
  CAF_CHECK_EQUAL(end.reason.code, 1001);
  // stop() returns after the io threads ran the handlers' on_close.
  auto closes = handler->closes();
  CAF_REQUIRE_EQUAL(closes.size(), 1u);
  CAF_CHECK_EQUAL(closes[0].first, 1001);
  CAF_REQUIRE_EQUAL(idle_handler->closes().size(), 1u);
  CAF_CHECK_EQUAL(idle_handler->close_code(), 1001);
  CAF_CHECK_EQUAL(idle.read_to_end().reason.code, 1001); // the frame was sent
  CAF_CHECK(!handler->conn()->send("after stop"));
  handler->conn()->close(1000, "after stop"); // ignored, not crashing
  server.reset();
  CAF_CHECK_EQUAL(handler->closes().size(), 1u);
}

CAF_TEST(begin_drain closes open websockets with 1001 after their queued messages) {
  ws_client c;
  auto handler = open_ws(c);
  CAF_REQUIRE(handler->conn()->send("before the drain"));
  // Returns at once although the client is not reading yet.
  server->begin_drain();
  auto end = c.read_to_end();
  CAF_CHECK_EQUAL(end.texts, std::vector<std::string>{"before the drain"});
  CAF_CHECK(end.ec == websocket::error::closed);
  CAF_CHECK_EQUAL(end.reason.code, 1001);
  CAF_CHECK_EQUAL(reason_of(end.reason), "server shutting down");
  CAF_REQUIRE(eventually([&] { return handler->closes().size() == 1; }));
  CAF_CHECK_EQUAL(handler->close_code(), 1001);
  CAF_CHECK_EQUAL(server->in_flight(), 0u);
  // A new handshake is answered like any request during the drain.
  ws_client late;
  websocket::response_type res;
  CAF_CHECK(late.open(port, "/ws", res) == websocket::error::upgrade_declined);
  CAF_CHECK_EQUAL(res.result_int(), 503u);
}

CAF_TEST_FIXTURE_SCOPE_END()
