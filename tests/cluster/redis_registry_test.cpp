// The Redis registry against a real Redis server.
//
// The server is named by HOTSWAP_TEST_REDIS_URL; without it every test
// FAILS: run the suite through
//   scripts/services.sh run -- ctest --test-dir build -R cluster_test.redis_registry
// Each test uses its own key prefix, so tests (and concurrent runs) sharing
// one server never see each other's keys. The registry is a detached actor,
// so the tests run on a real actor system and wait with finite timeouts.

#define CAF_SUITE redis_registry
#include "caf/test/dsl.hpp"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hotswap/cluster/redis_registry.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/types.hpp"

#include "raw_redis.hpp"
#include "test_config.hpp"

#include "../eventually.hpp"

using hotswap::test::free_port;
using hotswap::test::raw_redis;

using namespace hotswap;
using namespace std::chrono_literals;

namespace {

using test_config = test::cluster_test_config;

std::string render(const caf::error& e) {
  return to_string(errc_of(e)) + ": " + error_detail(e);
}

/// The value of `x`; fails the test (naming `what` and the error) otherwise.
template <class T>
T must_impl(caf::expected<T> x, const char* what, int line) {
  if (!x)
    CAF_FAIL(what << " failed at line " << line << ": " << render(x.error()));
  return std::move(*x);
}

#define MUST(expr) must_impl((expr), #expr, __LINE__)

std::string redis_url() {
  auto p = std::getenv("HOTSWAP_TEST_REDIS_URL");
  if (p == nullptr || *p == '\0')
    CAF_FAIL("HOTSWAP_TEST_REDIS_URL is not set; run the suite through "
             "scripts/services.sh run -- <test command> (it starts a private Redis)");
  return p;
}

std::string unique_prefix() {
  std::random_device rd;
  std::uniform_int_distribution<uint64_t> dist;
  char buf[32];
  std::snprintf(buf, sizeof(buf), "t%016llx:", static_cast<unsigned long long>(dist(rd)));
  return buf;
}


/// Polls `pred` every 20 ms until it holds or 5 s passed.
template <class Pred>
bool eventually(Pred pred) {
  return test::eventually(pred, 5s, 20ms);
}

node_info make_node(const std::string& id) {
  node_info n;
  n.id = id;
  n.http_endpoint = "127.0.0.1:80" + std::to_string(id.size());
  n.caf_endpoint = "127.0.0.1:71" + std::to_string(id.size());
  n.roles = {"api", "worker"};
  n.environments = {"QA", "Production"};
  return n;
}

std::vector<std::string> ids_of(const std::vector<node_info>& nodes) {
  std::vector<std::string> out;
  for (const auto& n : nodes)
    out.push_back(n.id);
  return out;
}

bool contains(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

struct fixture {
  std::string url = redis_url();
  std::string prefix = unique_prefix();
  raw_redis raw{url};
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  std::vector<registry_actor> spawned;

  ~fixture() {
    for (auto& reg : spawned)
      caf::anon_send_exit(reg, caf::exit_reason::user_shutdown);
    std::string err;
    raw.forget(prefix, err);
  }

  redis_registry_options options(const std::string& self_node) {
    redis_registry_options opts;
    opts.url = url;
    opts.self_node = self_node;
    opts.prefix = prefix;
    return opts;
  }

  registry_actor spawn(redis_registry_options opts) {
    auto reg = MUST(spawn_redis_registry(sys, std::move(opts)));
    spawned.push_back(reg);
    return reg;
  }

  registry_actor spawn(const std::string& self_node) {
    return spawn(options(self_node));
  }

  template <class T, class... Ts>
  caf::expected<T> ask(const registry_actor& reg, Ts&&... xs) {
    caf::expected<T> result{caf::make_error(errc::internal, "no answer")};
    self->request(reg, 5s, std::forward<Ts>(xs)...)
      .receive([&](T& x) { result = std::move(x); },
               [&](caf::error& e) { result = std::move(e); });
    return result;
  }

  caf::expected<claim_outcome> claim(const registry_actor& reg, const std::string& id,
                                     const std::string& node) {
    return ask<claim_outcome>(reg, claim_atom::value, std::string{"tenant"}, id, node);
  }

  caf::expected<ok_atom> renew(const registry_actor& reg, const node_info& n) {
    return ask<ok_atom>(reg, renew_atom::value, n);
  }

  caf::expected<ok_atom> renew(const registry_actor& reg, const std::string& id) {
    return renew(reg, make_node(id));
  }

  caf::expected<ok_atom> release(const registry_actor& reg, const std::string& id,
                                 const std::string& node) {
    return ask<ok_atom>(reg, release_atom::value, std::string{"tenant"}, id, node);
  }

  caf::expected<std::string> owner(const registry_actor& reg, const std::string& id) {
    return ask<std::string>(reg, owner_atom::value, std::string{"tenant"}, id);
  }

  caf::expected<std::vector<node_info>> nodes(const registry_actor& reg) {
    return ask<std::vector<node_info>>(reg, nodes_atom::value);
  }

  caf::expected<std::vector<std::string>> live(const registry_actor& reg) {
    auto ns = nodes(reg);
    if (!ns)
      return std::move(ns.error());
    return ids_of(*ns);
  }

  caf::expected<std::vector<std::string>> left(const registry_actor& reg) {
    return ask<std::vector<std::string>>(reg, left_atom::value);
  }

  caf::expected<ok_atom> leave(const registry_actor& reg, const std::string& node) {
    return ask<ok_atom>(reg, leave_atom::value, node);
  }
};

/// A TCP server on a loopback port that answers PING like Redis, on one
/// connection. With `hang_first`, it accepts a first connection and never
/// answers on it: a Redis that hangs once.
class fake_redis {
public:
  fake_redis(uint16_t port, bool hang_first) : hang_first_(hang_first) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0
        || ::listen(fd_, 8) != 0
        || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      CAF_FAIL("cannot listen on loopback port " << port);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }

  fake_redis(const fake_redis&) = delete;
  fake_redis& operator=(const fake_redis&) = delete;

  /// Returns once the client closed the answered connection (or after 5 s
  /// of silence).
  ~fake_redis() {
    thread_.join();
    ::close(fd_);
  }

  uint16_t port() const {
    return port_;
  }

private:
  /// Waits up to 5 s for `fd` to become readable.
  static bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 5000) == 1;
  }

  void serve() {
    int silent = -1;
    if (hang_first_ && readable(fd_))
      silent = ::accept(fd_, nullptr, nullptr);
    if (readable(fd_)) {
      int conn = ::accept(fd_, nullptr, nullptr);
      std::string in;
      char buf[256];
      while (readable(conn)) {
        auto n = ::read(conn, buf, sizeof(buf));
        if (n <= 0)
          break;
        in.append(buf, static_cast<size_t>(n));
        for (auto p = in.find("PING"); p != std::string::npos; p = in.find("PING")) {
          in.erase(0, p + 4);
          const char pong[] = "+PONG\r\n";
          if (::write(conn, pong, sizeof(pong) - 1) < 0)
            break;
        }
      }
      ::close(conn);
    }
    if (silent >= 0)
      ::close(silent);
  }

  bool hang_first_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(redis_registry_tests, fixture)

CAF_TEST(a live node is granted an unowned entity and others are refused) {
  auto a = spawn("A");
  auto b = spawn("B");
  MUST(renew(a, "A"));
  MUST(renew(b, "B"));
  auto first = MUST(claim(a, "t-1", "A"));
  CAF_CHECK(first.granted);
  CAF_CHECK_EQUAL(first.owner, "A");
  CAF_CHECK_EQUAL(first.previous, "");
  auto refused = MUST(claim(b, "t-1", "B"));
  CAF_CHECK(!refused.granted);
  CAF_CHECK_EQUAL(refused.owner, "A");
  CAF_CHECK_EQUAL(refused.previous, "");
  auto again = MUST(claim(a, "t-1", "A"));
  CAF_CHECK(again.granted);
  CAF_CHECK_EQUAL(again.owner, "A");
  CAF_CHECK_EQUAL(again.previous, "");
  CAF_CHECK_EQUAL(MUST(owner(b, "t-1")), "A");
  CAF_CHECK_EQUAL(MUST(owner(b, "t-2")), "");
}

CAF_TEST(a node that is not live is never granted an entity) {
  auto a = spawn("A");
  auto out = claim(a, "t-1", "A");
  CAF_REQUIRE(!out);
  CAF_CHECK_EQUAL(errc_of(out.error()), errc::unavailable);
  CAF_CHECK_EQUAL(error_detail(out.error()),
                  "node A is not a live member of the cluster (its liveness key is missing)");
  CAF_CHECK_EQUAL(MUST(owner(a, "t-1")), "");
}

CAF_TEST(an entity of a node that stopped renewing is taken over with its previous owner named) {
  auto opts = options("A");
  opts.node_ttl = 300ms;
  auto a = spawn(opts);
  opts.self_node = "B";
  auto b = spawn(opts);
  MUST(renew(a, "A"));
  CAF_CHECK(MUST(claim(a, "t-1", "A")).granted);
  CAF_CHECK(contains(MUST(live(b)), "A"));
  CAF_REQUIRE(eventually([&] { return !contains(MUST(live(b)), "A"); }));
  MUST(renew(b, "B"));
  auto out = MUST(claim(b, "t-1", "B"));
  CAF_CHECK(out.granted);
  CAF_CHECK_EQUAL(out.owner, "B");
  CAF_CHECK_EQUAL(out.previous, "A");
  CAF_CHECK_EQUAL(MUST(owner(a, "t-1")), "B");
}

CAF_TEST(only the owner releases an entity and a released entity is claimed without predecessor) {
  auto a = spawn("A");
  auto b = spawn("B");
  MUST(renew(a, "A"));
  MUST(renew(b, "B"));
  CAF_CHECK(MUST(claim(a, "t-1", "A")).granted);
  MUST(release(b, "t-1", "B"));
  CAF_CHECK_EQUAL(MUST(owner(b, "t-1")), "A");
  MUST(release(a, "t-1", "A"));
  CAF_CHECK_EQUAL(MUST(owner(b, "t-1")), "");
  CAF_CHECK_EQUAL(raw.command({"EXISTS", prefix + "own:tenant:t-1"}), "");
  auto out = MUST(claim(b, "t-1", "B"));
  CAF_CHECK(out.granted);
  CAF_CHECK_EQUAL(out.owner, "B");
  CAF_CHECK_EQUAL(out.previous, "");
}

CAF_TEST(a node that leaves is gone at once and listed as left until it renews) {
  auto a = spawn("A");
  auto b = spawn("B");
  MUST(renew(a, "A"));
  MUST(renew(b, "B"));
  CAF_CHECK(MUST(live(b)) == (std::vector<std::string>{"A", "B"}));
  CAF_CHECK(MUST(left(b)).empty());
  MUST(leave(a, "A"));
  CAF_CHECK(MUST(live(b)) == (std::vector<std::string>{"B"}));
  CAF_CHECK(MUST(left(b)) == (std::vector<std::string>{"A"}));
  // Its entities can be adopted without waiting for a TTL.
  MUST(renew(a, "A"));
  CAF_CHECK(MUST(claim(a, "t-1", "A")).granted);
  MUST(leave(a, "A"));
  auto out = MUST(claim(b, "t-1", "B"));
  CAF_CHECK(out.granted);
  CAF_CHECK_EQUAL(out.previous, "A");
  MUST(renew(a, "A"));
  CAF_CHECK(MUST(left(b)).empty());
  CAF_CHECK(MUST(live(b)) == (std::vector<std::string>{"A", "B"}));
}

CAF_TEST(after redis lost its data a renewal re-asserts the entities nobody else took) {
  auto a = spawn("A");
  auto b = spawn("B");
  MUST(renew(a, "A"));
  CAF_CHECK(MUST(claim(a, "t-1", "A")).granted);
  CAF_CHECK(MUST(claim(a, "t-2", "A")).granted);
  CAF_CHECK(MUST(claim(a, "t-3", "A")).granted);
  MUST(release(a, "t-3", "A"));
  std::string err;
  CAF_CHECK_EQUAL(raw.forget(prefix, err), 3u); // node:A, own:t-1, own:t-2
  CAF_REQUIRE_EQUAL(err, "");
  CAF_CHECK_EQUAL(MUST(owner(a, "t-1")), "");
  // B takes t-2 while A's claims are missing.
  MUST(renew(b, "B"));
  auto taken = MUST(claim(b, "t-2", "B"));
  CAF_CHECK(taken.granted);
  CAF_CHECK_EQUAL(taken.previous, "");
  MUST(renew(a, "A"));
  CAF_CHECK(contains(MUST(live(b)), "A"));
  CAF_CHECK_EQUAL(MUST(owner(b, "t-1")), "A");
  CAF_CHECK_EQUAL(MUST(owner(b, "t-2")), "B");
  CAF_CHECK_EQUAL(MUST(owner(b, "t-3")), "");
  // t-2 is no longer A's: a second loss re-asserts t-1 only.
  CAF_CHECK_EQUAL(raw.forget(prefix, err), 4u); // node:A, node:B, own:t-1, own:t-2
  MUST(renew(a, "A"));
  CAF_CHECK_EQUAL(MUST(owner(b, "t-1")), "A");
  CAF_CHECK_EQUAL(MUST(owner(b, "t-2")), "");
}

CAF_TEST(an unreachable redis answers every request with unavailable and no hang) {
  auto opts = options("A");
  opts.url = "redis://127.0.0.1:1/0";
  auto reg = spawn(opts);
  auto check = [&](const caf::error& e, const char* what) {
    CAF_MESSAGE(what << ": " << render(e));
    CAF_CHECK_EQUAL(errc_of(e), errc::unavailable);
    CAF_CHECK(error_detail(e).find("redis://127.0.0.1:1/0") != std::string::npos);
    CAF_CHECK(error_detail(e).find("onnect") != std::string::npos);
  };
  auto start = std::chrono::steady_clock::now();
  check(renew(reg, "A").error(), "renew");
  check(claim(reg, "t-1", "A").error(), "claim");
  check(release(reg, "t-1", "A").error(), "release");
  check(owner(reg, "t-1").error(), "owner");
  check(nodes(reg).error(), "nodes");
  check(leave(reg, "A").error(), "leave");
  check(left(reg).error(), "left");
  check(ask<ok_atom>(reg, ping_atom::value).error(), "ping");
  // A refused connection fails at once; a slow one within the connect
  // timeout (300 ms), and requests right after it do not wait again.
  CAF_CHECK(std::chrono::steady_clock::now() - start < 8 * 300ms + 1s);
}

CAF_TEST(a redis that stops answering times out and the next request reconnects) {
  fake_redis server{0, true};
  auto opts = options("A");
  opts.url = "redis://127.0.0.1:" + std::to_string(server.port());
  opts.command_timeout = 200ms;
  auto reg = spawn(opts);
  auto start = std::chrono::steady_clock::now();
  auto hung = ask<ok_atom>(reg, ping_atom::value);
  CAF_REQUIRE(!hung);
  CAF_MESSAGE("hung: " << render(hung.error()));
  CAF_CHECK_EQUAL(errc_of(hung.error()), errc::unavailable);
  CAF_CHECK(error_detail(hung.error()).find("no answer within 200 ms") != std::string::npos);
  CAF_CHECK(std::chrono::steady_clock::now() - start < 2s);
  MUST(ask<ok_atom>(reg, ping_atom::value));
  // Closes the registry's connection, which ends the server.
  caf::anon_send_exit(reg, caf::exit_reason::user_shutdown);
}

CAF_TEST(a registry started while redis is down connects once redis is up) {
  auto port = free_port();
  auto opts = options("A");
  opts.url = "redis://127.0.0.1:" + std::to_string(port);
  auto reg = spawn(opts);
  auto down = ask<ok_atom>(reg, ping_atom::value);
  CAF_REQUIRE(!down);
  CAF_CHECK_EQUAL(errc_of(down.error()), errc::unavailable);
  fake_redis server{port, false};
  CAF_CHECK(eventually([&] { return static_cast<bool>(ask<ok_atom>(reg, ping_atom::value)); }));
  caf::anon_send_exit(reg, caf::exit_reason::user_shutdown);
}

CAF_TEST(redis urls name what is wrong with them) {
  for (auto bad : {"redis://", "redis://h:0", "redis://h:99999", "redis://h:6379/x", "http://x",
                   "redis://h", "redis://:6379", "redis://h:6379/16", "redis://h:6379/",
                   "rediss://h:6379"}) {
    auto r = parse_redis_url(bad);
    CAF_CHECK(!r);
    if (!r) {
      CAF_MESSAGE(bad << " -> " << render(r.error()));
      CAF_CHECK_EQUAL(errc_of(r.error()), errc::config_invalid);
      CAF_CHECK(error_detail(r.error()).find(bad) != std::string::npos);
    }
  }
  auto ok = MUST(parse_redis_url("redis://127.0.0.1:6379/3"));
  CAF_CHECK_EQUAL(std::get<0>(ok), "127.0.0.1");
  CAF_CHECK_EQUAL(std::get<1>(ok), 6379);
  CAF_CHECK_EQUAL(std::get<2>(ok), 3);
  auto v6 = MUST(parse_redis_url("redis://[::1]:6380"));
  CAF_CHECK_EQUAL(std::get<0>(v6), "::1");
  CAF_CHECK_EQUAL(std::get<2>(v6), 0);
  auto opts = options("A");
  opts.url = "redis://h:0";
  CAF_CHECK_EQUAL(errc_of(spawn_redis_registry(sys, opts).error()), errc::config_invalid);
}

CAF_TEST(nodes lists what each node renewed with and skips records it cannot read) {
  auto a = spawn("A");
  auto n = make_node("A");
  n.http_endpoint = "10.0.0.1:8080";
  n.caf_endpoint = "10.0.0.1:7100";
  n.roles = {"api", "control", "worker"};
  n.environments = {"Development", "Staging"};
  MUST(renew(a, n));
  MUST(renew(a, "B"));
  raw.command({"SET", prefix + "node:junk", "not json", "PX", "5000"});
  auto ns = MUST(nodes(a));
  CAF_REQUIRE_EQUAL(ns.size(), 2u);
  CAF_CHECK_EQUAL(ns[0].id, "A");
  CAF_CHECK_EQUAL(ns[0].http_endpoint, "10.0.0.1:8080");
  CAF_CHECK_EQUAL(ns[0].caf_endpoint, "10.0.0.1:7100");
  CAF_CHECK(ns[0].roles == n.roles);
  CAF_CHECK(ns[0].environments == n.environments);
  CAF_CHECK_NOT_EQUAL(ns[0].last_heartbeat, 0);
  CAF_CHECK_EQUAL(ns[1].id, "B");
  MUST(ask<ok_atom>(a, ping_atom::value));
}

CAF_TEST_FIXTURE_SCOPE_END()
