// http_bench: request throughput and latency of a hotswap HTTP endpoint,
// against a raw Beast server measured in the same run.
//
//   http_bench --url http://127.0.0.1:8080/api/tenants/<id>
//              --header 'Authorization: Bearer …' --connections 32 --seconds 5
//   http_bench --raw-only            # the load generator against the raw server alone
//
// Parts:
// (a) the baseline: a raw Beast async HTTP/1.1 server in this process, with
//     the io thread count of hotswapd's default (2), answering `GET /raw`
//     from memory with exactly the bytes and the content type the target URL
//     returned when fetched once at start (raw-only: a fixed JSON document);
// (b) the load generator: C keep-alive connections on its own io thread(s),
//     each sending GET requests back to back; 1 s warm-up, then D seconds of
//     measurement with per-request latency. It prints requests/s, p50 and p99
//     for the target and for the raw server and the ratio hotswap/raw of the
//     requests/s (target >= 0.5).
//
// Caveat: everything competes for the same cores. On a 2-core machine the
// load generator's thread takes a good share of one core from the server
// under test (hotswapd for the target, this process's raw server for the
// baseline), so absolute figures are lower than on separate machines; the
// ratio is the meaningful figure because both runs pay the same tax. The
// raw server idles (blocked in epoll) while the target is measured, and
// hotswapd idles while the raw server is measured.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

// -- options ---------------------------------------------------------------------

struct url {
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

std::optional<url> parse_url(const std::string& text) {
  const std::string scheme = "http://";
  if (text.compare(0, scheme.size(), scheme) != 0)
    return std::nullopt; // https is not supported by this tool
  auto rest = text.substr(scheme.size());
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  url u;
  if (slash != std::string::npos)
    u.target = rest.substr(slash);
  auto colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']') == std::string::npos) {
    u.host = authority.substr(0, colon);
    u.port = authority.substr(colon + 1);
  } else {
    u.host = authority;
  }
  if (u.host.empty() || u.port.empty())
    return std::nullopt;
  return u;
}

struct options {
  std::optional<url> target;
  std::string target_text;
  std::vector<std::pair<std::string, std::string>> headers;
  size_t connections = 32;
  double seconds = 5;
  double warmup = 1;
  size_t client_threads = 1;
  size_t raw_threads = 2;
  size_t rounds = 3;     ///< hotswap and raw alternate, so machine noise hits both alike
  bool raw_only = false;
};

void usage() {
  std::cerr << "usage: http_bench (--url http://host:port/path | --raw-only)\n"
               "                  [--header 'Name: value']... [--connections 32] [--seconds 5]\n"
               "                  [--warmup 1] [--client-threads 1] [--raw-threads 2] [--rounds 3]\n";
}

std::optional<options> parse_args(int argc, char** argv) {
  options opts;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc)
        return std::nullopt;
      return std::string{argv[++i]};
    };
    auto number = [&](auto& out) {
      auto v = value();
      if (!v)
        return false;
      try {
        double d = std::stod(*v);
        if (d <= 0)
          return false;
        out = static_cast<std::remove_reference_t<decltype(out)>>(d);
      } catch (const std::exception&) {
        return false;
      }
      return true;
    };
    if (arg == "--url") {
      auto v = value();
      if (!v || !(opts.target = parse_url(*v))) {
        std::cerr << "--url needs http://host[:port]/path\n";
        return std::nullopt;
      }
      opts.target_text = *v;
    } else if (arg == "--header") {
      auto v = value();
      auto colon = v ? v->find(':') : std::string::npos;
      if (colon == std::string::npos || colon == 0) {
        std::cerr << "--header needs 'Name: value'\n";
        return std::nullopt;
      }
      auto val = v->substr(colon + 1);
      val.erase(0, val.find_first_not_of(" \t"));
      opts.headers.emplace_back(v->substr(0, colon), val);
    } else if (arg == "--connections") {
      if (!number(opts.connections))
        return std::nullopt;
    } else if (arg == "--seconds") {
      if (!number(opts.seconds))
        return std::nullopt;
    } else if (arg == "--warmup") {
      if (!number(opts.warmup))
        return std::nullopt;
    } else if (arg == "--client-threads") {
      if (!number(opts.client_threads))
        return std::nullopt;
    } else if (arg == "--raw-threads") {
      if (!number(opts.raw_threads))
        return std::nullopt;
    } else if (arg == "--rounds") {
      if (!number(opts.rounds) || opts.rounds == 0)
        return std::nullopt;
    } else if (arg == "--raw-only") {
      opts.raw_only = true;
    } else {
      std::cerr << "unknown argument: " << arg << "\n";
      return std::nullopt;
    }
  }
  if (!opts.raw_only && !opts.target) {
    std::cerr << "--url or --raw-only is required\n";
    return std::nullopt;
  }
  return opts;
}

http::request<http::empty_body> make_request(const std::string& host, const std::string& target,
                                             const options& opts) {
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "hotswap-http-bench");
  for (const auto& [name, value] : opts.headers)
    req.set(name, value);
  req.keep_alive(true);
  return req;
}

// -- (a) the raw baseline server ---------------------------------------------------

class raw_session : public std::enable_shared_from_this<raw_session> {
public:
  raw_session(tcp::socket&& socket, const std::string& body, const std::string& content_type)
    : stream_(std::move(socket)), body_(body), content_type_(content_type) {
  }

  void start() {
    read();
  }

private:
  void read() {
    req_ = {};
    http::async_read(stream_, buffer_, req_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec)
                         return; // the client went away
                       self->respond();
                     });
  }

  void respond() {
    bool hit = req_.method() == http::verb::get && req_.target() == "/raw";
    res_ = {};
    res_.version(req_.version());
    res_.result(hit ? http::status::ok : http::status::not_found);
    res_.set(http::field::content_type, hit ? content_type_ : "text/plain");
    res_.body() = hit ? body_ : "not found";
    res_.keep_alive(req_.keep_alive());
    res_.prepare_payload();
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec || !self->res_.keep_alive())
        return;
      self->read();
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  const std::string& body_;
  const std::string& content_type_;
};

class raw_server {
public:
  raw_server(std::string body, std::string content_type, size_t threads)
    : body_(std::move(body)), content_type_(std::move(content_type)),
      acceptor_(asio::make_strand(ioc_)), threads_n_(threads) {
  }

  ~raw_server() {
    asio::post(acceptor_.get_executor(), [this] {
      beast::error_code ec;
      acceptor_.close(ec);
    });
    ioc_.stop();
    for (auto& t : threads_)
      t.join();
  }

  uint16_t start() {
    tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), 0};
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    accept();
    for (size_t i = 0; i < threads_n_; ++i)
      threads_.emplace_back([this] { ioc_.run(); });
    return acceptor_.local_endpoint().port();
  }

private:
  void accept() {
    acceptor_.async_accept(asio::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted)
        return;
      if (!ec) {
        s.set_option(tcp::no_delay(true), ec);
        std::make_shared<raw_session>(std::move(s), body_, content_type_)->start();
      }
      accept();
    });
  }

  std::string body_;
  std::string content_type_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  size_t threads_n_;
  std::vector<std::thread> threads_;
};

// -- fetching the target once ------------------------------------------------------

struct fetched {
  unsigned status = 0;
  std::string body;
  std::string content_type;
};

std::optional<fetched> fetch_once(const url& u, const options& opts, std::string& error) {
  try {
    asio::io_context ioc;
    tcp::resolver resolver{ioc};
    beast::tcp_stream stream{ioc};
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(resolver.resolve(u.host, u.port));
    auto req = make_request(u.host, u.target, opts);
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(stream, buffer, parser);
    auto res = parser.release();
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    fetched out;
    out.status = res.result_int();
    out.body = std::move(res.body());
    out.content_type = std::string{res[http::field::content_type]};
    return out;
  } catch (const std::exception& e) {
    error = e.what();
    return std::nullopt;
  }
}

// -- (b) the load generator ---------------------------------------------------------

struct load_result {
  uint64_t requests = 0; ///< answered inside the measurement window
  uint64_t non_2xx = 0;
  uint64_t errors = 0;   ///< connection errors (each followed by a reconnect)
  double seconds = 0;
  std::vector<uint32_t> latencies_us;

  double rps() const {
    return seconds > 0 ? static_cast<double>(requests) / seconds : 0;
  }

  double percentile_ms(double p) {
    if (latencies_us.empty())
      return 0;
    auto k = static_cast<size_t>(p * static_cast<double>(latencies_us.size() - 1));
    std::nth_element(latencies_us.begin(), latencies_us.begin() + static_cast<ptrdiff_t>(k),
                     latencies_us.end());
    return latencies_us[k] / 1000.0;
  }
};

struct window {
  clock_type::time_point measure_from;
  clock_type::time_point end;
};

class load_connection : public std::enable_shared_from_this<load_connection> {
public:
  load_connection(asio::io_context& ioc, tcp::resolver::results_type endpoints,
                  http::request<http::empty_body> req, window w)
    : stream_(asio::make_strand(ioc)), endpoints_(std::move(endpoints)), req_(std::move(req)),
      window_(w) {
  }

  void start() {
    connect();
  }

  load_result& result() {
    return result_;
  }

private:
  void connect() {
    if (clock_type::now() >= window_.end)
      return;
    stream_.expires_after(std::chrono::seconds(10));
    stream_.async_connect(endpoints_, [self = shared_from_this()](beast::error_code ec,
                                                                   const tcp::endpoint&) {
      if (ec) {
        ++self->result_.errors;
        self->connect();
        return;
      }
      beast::error_code opt_ec;
      self->stream_.socket().set_option(tcp::no_delay(true), opt_ec);
      self->send();
    });
  }

  void send() {
    sent_ = clock_type::now();
    if (sent_ >= window_.end) {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      stream_.close();
      return;
    }
    stream_.expires_after(std::chrono::seconds(10));
    http::async_write(stream_, req_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec)
        return self->fail();
      self->receive();
    });
  }

  void receive() {
    res_ = {};
    http::async_read(stream_, buffer_, res_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec)
                         return self->fail();
                       self->on_response();
                     });
  }

  void on_response() {
    auto now = clock_type::now();
    if (sent_ >= window_.measure_from && now <= window_.end) {
      ++result_.requests;
      auto status = res_.result_int();
      if (status < 200 || status > 299)
        ++result_.non_2xx;
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - sent_).count();
      result_.latencies_us.push_back(static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX)));
    }
    if (!res_.keep_alive()) {
      stream_.close();
      buffer_.clear();
      connect();
      return;
    }
    send();
  }

  void fail() {
    if (clock_type::now() < window_.end)
      ++result_.errors;
    stream_.close();
    buffer_.clear();
    connect();
  }

  beast::tcp_stream stream_;
  tcp::resolver::results_type endpoints_;
  http::request<http::empty_body> req_;
  window window_;
  beast::flat_buffer buffer_;
  http::response<http::string_body> res_;
  clock_type::time_point sent_;
  load_result result_;
};

load_result run_load(const url& u, const options& opts) {
  asio::io_context ioc;
  tcp::resolver resolver{ioc};
  auto endpoints = resolver.resolve(u.host, u.port);
  auto start = clock_type::now();
  auto warm = std::chrono::duration_cast<clock_type::duration>(
    std::chrono::duration<double>(opts.warmup));
  auto measure = std::chrono::duration_cast<clock_type::duration>(
    std::chrono::duration<double>(opts.seconds));
  window w{start + warm, start + warm + measure};
  std::vector<std::shared_ptr<load_connection>> conns;
  for (size_t i = 0; i < opts.connections; ++i) {
    conns.push_back(std::make_shared<load_connection>(ioc, endpoints,
                                                      make_request(u.host, u.target, opts), w));
    conns.back()->start();
  }
  std::vector<std::thread> threads;
  for (size_t i = 1; i < opts.client_threads; ++i)
    threads.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : threads)
    t.join();
  load_result total;
  total.seconds = opts.seconds;
  for (auto& c : conns) {
    auto& r = c->result();
    total.requests += r.requests;
    total.non_2xx += r.non_2xx;
    total.errors += r.errors;
    total.latencies_us.insert(total.latencies_us.end(), r.latencies_us.begin(),
                              r.latencies_us.end());
  }
  return total;
}

void print(const char* name, const std::string& what, load_result& r) {
  std::printf("%-8s %-48s %10.0f req/s   p50 %7.3f ms   p99 %7.3f ms   non-2xx %llu   "
              "errors %llu\n",
              name, what.c_str(), r.rps(), r.percentile_ms(0.50), r.percentile_ms(0.99),
              static_cast<unsigned long long>(r.non_2xx),
              static_cast<unsigned long long>(r.errors));
  std::fflush(stdout);
}

} // namespace

int main(int argc, char** argv) {
  auto parsed = parse_args(argc, argv);
  if (!parsed) {
    usage();
    return 2;
  }
  auto& opts = *parsed;
  std::string body = R"({"tenantId":"bench","name":"Benchmark tenant","status":"Active"})";
  std::string content_type = "application/json";
  if (!opts.raw_only) {
    std::string error;
    auto got = fetch_once(*opts.target, opts, error);
    if (!got) {
      std::cerr << "cannot fetch " << opts.target_text << ": " << error << "\n";
      return 1;
    }
    if (got->status < 200 || got->status > 299) {
      std::cerr << "GET " << opts.target_text << " answered " << got->status
                << "; benchmark a URL that answers 2xx (missing --header?)\n"
                << got->body << "\n";
      return 1;
    }
    body = std::move(got->body);
    content_type = std::move(got->content_type);
  }
  raw_server raw{body, content_type, opts.raw_threads};
  uint16_t raw_port = 0;
  try {
    raw_port = raw.start();
  } catch (const std::exception& e) {
    std::cerr << "cannot start the raw server: " << e.what() << "\n";
    return 1;
  }
  url raw_url{"127.0.0.1", std::to_string(raw_port), "/raw"};
  std::printf("http_bench: %zu connections, %.1f s warm-up, %.1f s measured, %zu client "
              "thread(s), raw server %zu io thread(s), body %zu bytes (%s)\n"
              "note: the load generator shares the CPU cores with the server under test; "
              "compare the ratio, not absolute figures\n",
              opts.connections, opts.warmup, opts.seconds, opts.client_threads,
              opts.raw_threads, body.size(), content_type.c_str());
  std::optional<load_result> target_result;
  load_result raw_result;
  auto merge = [](load_result& into, const load_result& r) {
    into.requests += r.requests;
    into.non_2xx += r.non_2xx;
    into.errors += r.errors;
    into.seconds += r.seconds;
    into.latencies_us.insert(into.latencies_us.end(), r.latencies_us.begin(),
                             r.latencies_us.end());
  };
  for (size_t round = 0; round < opts.rounds; ++round) {
    if (!opts.raw_only) {
      if (!target_result)
        target_result.emplace();
      merge(*target_result, run_load(*opts.target, opts));
    }
    merge(raw_result, run_load(raw_url, opts));
  }
  std::printf("%zu alternating round(s) of %.1f s each\n", opts.rounds, opts.seconds);
  if (target_result)
    print("hotswap", opts.target_text, *target_result);
  print("raw", "http://127.0.0.1:" + raw_url.port + "/raw", raw_result);
  if (target_result) {
    auto ratio = raw_result.rps() > 0 ? target_result->rps() / raw_result.rps() : 0;
    std::printf("ratio hotswap/raw req/s: %.2f (target >= 0.50: %s)\n", ratio,
                ratio >= 0.5 ? "met" : "NOT met");
    if (target_result->non_2xx > 0 || target_result->errors > 0)
      std::printf("warning: the target answered non-2xx or failed; the figures are not "
                  "comparable\n");
  }
  return 0;
}
