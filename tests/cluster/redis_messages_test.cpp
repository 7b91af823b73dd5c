// The Redis message store (cluster/redis_messages.hpp) against a real Redis.
//
// The server is named by HOTSWAP_TEST_REDIS_URL; without it every test
// FAILS: run the suite through
//   scripts/services.sh run -- ctest --test-dir build -R cluster_test.redis_messages
// Each test uses its own key prefix, so tests (and concurrent runs) sharing
// one server never see each other's keys. The durability test starts a
// private redis-server of its own (AOF, appendfsync always) on a free port.
// Times (`now`) are chosen by the tests: no wall clock in the semantics.

#define CAF_SUITE redis_messages
#include "caf/test/dsl.hpp"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hotswap/cluster/redis_messages.hpp"
#include "hotswap/cluster/redis_registry.hpp"
#include "hotswap/runtime/errc.hpp"

#include "raw_redis.hpp"

#include "../eventually.hpp"
#include "../message_store_cases.hpp"

using hotswap::test::free_port;
using hotswap::test::raw_redis;

extern char** environ;

using namespace hotswap;
using namespace std::chrono_literals;

namespace {

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

void must_impl(caf::expected<void> x, const char* what, int line) {
  if (!x)
    CAF_FAIL(what << " failed at line " << line << ": " << render(x.error()));
}

#define MUST(expr) must_impl((expr), #expr, __LINE__)

/// The errc of a call that must fail.
template <class T>
errc error_of(const caf::expected<T>& x) {
  if (x)
    return errc::none;
  CAF_MESSAGE("expected error: " << render(x.error()));
  return errc_of(x.error());
}

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
  std::snprintf(buf, sizeof(buf), "m%016llx:", static_cast<unsigned long long>(dist(rd)));
  return buf;
}


/// A redis-server of one test, persisting with AOF and appendfsync always
/// in a directory of its own; restartable on the same port and directory.
class private_redis {
public:
  private_redis() : port_(free_port()) {
    char tmpl[] = "/tmp/hstest-msgredis-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      CAF_FAIL("cannot create a temporary directory");
    dir_ = tmpl;
    start();
  }

  private_redis(const private_redis&) = delete;
  private_redis& operator=(const private_redis&) = delete;

  ~private_redis() {
    kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string url() const {
    return "redis://127.0.0.1:" + std::to_string(port_) + "/0";
  }

  void start() {
    auto port = std::to_string(port_);
    auto log = dir_ + "/redis.log";
    std::vector<std::string> args{"redis-server", "--port",       port,      "--bind",
                                  "127.0.0.1",    "--save",       "",        "--appendonly",
                                  "yes",          "--appendfsync", "always", "--dir",
                                  dir_,           "--logfile",    log};
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawnp(&pid_, "redis-server", nullptr, nullptr, argv.data(), environ) != 0)
      CAF_FAIL("cannot start redis-server (apt-get install redis-server)");
    auto up = test::eventually(
      [&] {
        redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, timeval{0, 200000});
        bool ok = c != nullptr && c->err == 0;
        if (ok) {
          auto r = static_cast<redisReply*>(redisCommand(c, "PING"));
          ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
          if (r != nullptr)
            freeReplyObject(r);
        }
        if (c != nullptr)
          redisFree(c);
        return ok;
      },
      10s, 20ms);
    if (!up)
      CAF_FAIL("redis-server on port " << port_ << " did not come up; see " << log);
  }

  /// SHUTDOWN (Redis flushes the AOF) and waits for the process to end.
  void shutdown() {
    {
      raw_redis raw{url()};
      std::string err; // the server closes the connection instead of answering
      raw.try_command({"SHUTDOWN"}, err);
    }
    wait();
  }

  /// SIGKILL: a crash, nothing flushed at exit.
  void kill() {
    if (pid_ > 0)
      ::kill(pid_, SIGKILL);
    wait();
  }

private:
  void wait() {
    if (pid_ > 0) {
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }

  uint16_t port_;
  std::string dir_;
  pid_t pid_ = -1;
};

constexpr millis t0 = 1'700'000'000'000;

message_record make_message(const std::string& id, const std::string& topic,
                            int32_t priority = 0, millis created_at = t0) {
  message_record m;
  m.id = id;
  m.topic = topic;
  m.payload = R"({"n":")" + id + R"("})";
  m.schema_version = "1.0";
  m.priority = priority;
  m.created_at = created_at;
  m.published_by = "alice";
  return m;
}

std::vector<std::string> ids_of(const std::vector<message_record>& ms) {
  std::vector<std::string> out;
  for (const auto& m : ms)
    out.push_back(m.id);
  return out;
}

using ids = std::vector<std::string>;

message_policy policy(millis ack_deadline, int32_t max_attempts, millis backoff) {
  message_policy p;
  p.ack_deadline = ack_deadline;
  p.max_attempts = max_attempts;
  p.backoff_initial = backoff;
  return p;
}

struct fixture {
  std::string url = redis_url();
  std::string prefix = unique_prefix();
  raw_redis raw{url};
  std::unique_ptr<message_store> store = open();

  ~fixture() {
    std::string err;
    raw.forget(prefix, err);
  }

  std::unique_ptr<message_store> open() {
    return MUST(open_redis_message_store(url, prefix));
  }

  void publish(const message_record& m) {
    CAF_CHECK(MUST(store->publish(m)));
  }

  message_record get(const std::string& id) {
    auto m = MUST(store->get(id));
    if (!m)
      CAF_FAIL("message " << id << " is missing");
    return *m;
  }

  consume_result consume(const std::string& topic, const std::string& group, size_t max,
                         millis now, const message_policy& p = message_policy{}) {
    return MUST(store->consume(topic, group, max, now, p));
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(redis_messages_tests, fixture)

CAF_TEST(a published message is read back with every field) {
  auto m = make_message("m-1", "orders", 7);
  m.headers = {{"content-type", "application/json"}, {"h:odd", "colon"}, {"empty", ""}};
  m.correlation_id = "c-9";
  m.expires_at = t0 + 60000;
  m.partition_key = "customer-3";
  m.tenant_id = "tenant-a";
  m.payload = std::string{"{\"bin\":\"\0\xff\",\"x\":1.5e300}", 24};
  publish(m);
  auto got = get("m-1");
  CAF_CHECK_EQUAL(got.id, m.id);
  CAF_CHECK_EQUAL(got.topic, m.topic);
  CAF_CHECK_EQUAL(got.payload, m.payload);
  CAF_CHECK_EQUAL(got.schema_version, m.schema_version);
  CAF_CHECK(got.headers == m.headers);
  CAF_CHECK_EQUAL(got.correlation_id, m.correlation_id);
  CAF_CHECK_EQUAL(got.priority, 7);
  CAF_CHECK_EQUAL(got.expires_at, m.expires_at);
  CAF_CHECK_EQUAL(got.partition_key, m.partition_key);
  CAF_CHECK_EQUAL(got.created_at, t0);
  CAF_CHECK_EQUAL(got.status, static_cast<int32_t>(message_status::pending));
  CAF_CHECK_EQUAL(got.acknowledged_at, 0);
  CAF_CHECK_EQUAL(got.delivery_attempts, 0);
  CAF_CHECK_EQUAL(got.published_by, "alice");
  CAF_CHECK_EQUAL(got.tenant_id, "tenant-a");
  CAF_CHECK(!MUST(store->get("m-2")));
}

CAF_TEST(a retry with the same id is idempotent and other content conflicts) {
  auto m = make_message("m-1", "orders");
  publish(m);
  CAF_CHECK(!MUST(store->publish(m)));
  auto other_payload = m;
  other_payload.payload = "{}";
  CAF_CHECK_EQUAL(error_of(store->publish(other_payload)), errc::conflict);
  auto other_topic = m;
  other_topic.topic = "invoices";
  CAF_CHECK_EQUAL(error_of(store->publish(other_topic)), errc::conflict);
  CAF_CHECK_EQUAL(MUST(store->list_topic("orders", 10)).size(), 1u);
  CAF_CHECK(MUST(store->list_topic("invoices", 10)).empty());
  auto bad = make_message("m-2", "orders", 10);
  CAF_CHECK_EQUAL(error_of(store->publish(bad)), errc::invalid_argument);
}

CAF_TEST(a topic lists newest first across priorities without removed messages) {
  publish(make_message("a", "orders", 0));
  publish(make_message("b", "orders", 9));
  publish(make_message("c", "orders", 3));
  publish(make_message("other", "invoices", 3));
  publish(make_message("d", "orders", 0));
  CAF_CHECK(ids_of(MUST(store->list_topic("orders", 100))) == (ids{"d", "c", "b", "a"}));
  CAF_CHECK(ids_of(MUST(store->list_topic("orders", 2))) == (ids{"d", "c"}));
  CAF_CHECK(MUST(store->list_topic("orders", 0)).empty());
  MUST(store->remove("c"));
  CAF_CHECK(ids_of(MUST(store->list_topic("orders", 100))) == (ids{"d", "b", "a"}));
  CAF_CHECK(!MUST(store->get("c")));
  CAF_CHECK_EQUAL(error_of(store->remove("c")), errc::not_found);
  CAF_CHECK(MUST(store->list_topic("nothing", 10)).empty());
}

CAF_TEST(consume hands out higher priorities first and then the oldest) {
  publish(make_message("low-1", "jobs", 1));
  publish(make_message("high-1", "jobs", 8));
  publish(make_message("low-2", "jobs", 1));
  publish(make_message("high-2", "jobs", 8));
  publish(make_message("mid", "jobs", 5));
  auto first = consume("jobs", "g", 3, t0);
  CAF_CHECK(ids_of(first.messages) == (ids{"high-1", "high-2", "mid"}));
  for (const auto& m : first.messages) {
    CAF_CHECK_EQUAL(m.delivery_attempts, 1);
    CAF_CHECK_EQUAL(m.status, static_cast<int32_t>(message_status::delivered));
  }
  publish(make_message("top", "jobs", 9));
  CAF_CHECK(ids_of(consume("jobs", "g", 10, t0).messages) == (ids{"top", "low-1", "low-2"}));
  CAF_CHECK(consume("jobs", "g", 10, t0).messages.empty());
  CAF_CHECK_EQUAL(get("mid").status, static_cast<int32_t>(message_status::delivered));
  CAF_CHECK_EQUAL(get("mid").delivery_attempts, 1);
}

CAF_TEST(every group receives every message once and a new group sees retained messages) {
  for (int i = 0; i < 5; ++i)
    publish(make_message("m-" + std::to_string(i), "events"));
  auto a = consume("events", "a", 3, t0);
  auto b = consume("events", "b", 10, t0);
  CAF_CHECK(ids_of(a.messages) == (ids{"m-0", "m-1", "m-2"}));
  CAF_CHECK_EQUAL(b.messages.size(), 5u);
  CAF_CHECK(ids_of(consume("events", "a", 10, t0).messages) == (ids{"m-3", "m-4"}));
  MUST(store->acknowledge("m-0", "a", t0));
  auto late = consume("events", "late", 10, t0);
  CAF_CHECK(ids_of(late.messages) == (ids{"m-0", "m-1", "m-2", "m-3", "m-4"}));
}

CAF_TEST(an unacknowledged message returns after its lease with exponential backoff) {
  auto p = policy(1000, 5, 100);
  publish(make_message("m", "jobs"));
  CAF_CHECK_EQUAL(consume("jobs", "g", 10, t0, p).messages.size(), 1u);
  // Attempt 1 is leased until t0 + 1000 + 100.
  CAF_CHECK(consume("jobs", "g", 10, t0 + 1099, p).messages.empty());
  auto second = consume("jobs", "g", 10, t0 + 1100, p);
  CAF_REQUIRE_EQUAL(second.messages.size(), 1u);
  CAF_CHECK_EQUAL(second.messages[0].delivery_attempts, 2);
  CAF_CHECK_EQUAL(second.redelivered, 1);
  // Attempt 2 is leased until delivered_at + 1000 + 200.
  auto t2 = t0 + 1100;
  CAF_CHECK(consume("jobs", "g", 10, t2 + 1199, p).messages.empty());
  auto third = consume("jobs", "g", 10, t2 + 1200, p);
  CAF_REQUIRE_EQUAL(third.messages.size(), 1u);
  CAF_CHECK_EQUAL(third.messages[0].delivery_attempts, 3);
  // Attempt 3: + 400. Another group is not affected by this one's leases.
  auto t3 = t2 + 1200;
  CAF_CHECK(consume("jobs", "g", 10, t3 + 1399, p).messages.empty());
  CAF_CHECK_EQUAL(consume("jobs", "other", 10, t3, p).messages.size(), 1u);
  CAF_CHECK_EQUAL(get("m").delivery_attempts, 3);
  MUST(store->acknowledge("m", "g", t3 + 1));
  CAF_CHECK(consume("jobs", "g", 10, t3 + 100000, p).messages.empty());
}

CAF_TEST(redeliveries come in priority and age order before new messages of lower priority) {
  auto p = policy(1000, 5, 0);
  publish(make_message("old-low", "jobs", 1));
  publish(make_message("old-high", "jobs", 7));
  CAF_CHECK_EQUAL(consume("jobs", "g", 10, t0, p).messages.size(), 2u);
  publish(make_message("new-high", "jobs", 7));
  publish(make_message("new-low", "jobs", 1));
  auto again = consume("jobs", "g", 10, t0 + 1000, p);
  CAF_CHECK(ids_of(again.messages) == (ids{"old-high", "new-high", "old-low", "new-low"}));
  CAF_CHECK_EQUAL(again.redelivered, 2);
}

CAF_TEST(a message is dead lettered after max attempts with its reasons) {
  auto p = policy(100, 2, 10);
  auto m = make_message("m", "jobs", 4);
  m.headers = {{"trace", "t-1"}};
  m.correlation_id = "c-1";
  publish(m);
  auto now = t0;
  CAF_CHECK_EQUAL(consume("jobs", "g", 10, now, p).messages.size(), 1u);
  now += 110;
  CAF_CHECK_EQUAL(consume("jobs", "g", 10, now, p).messages.size(), 1u);
  now += 119;
  CAF_CHECK(consume("jobs", "g", 10, now, p).messages.empty());
  now += 1;
  auto r = consume("jobs", "g", 10, now, p);
  CAF_CHECK(r.messages.empty());
  CAF_CHECK_EQUAL(r.dead_lettered, 1);
  CAF_CHECK_EQUAL(get("m").status, static_cast<int32_t>(message_status::failed));
  auto dlq = MUST(store->list_topic("jobs.dlq", 10));
  CAF_REQUIRE_EQUAL(dlq.size(), 1u);
  const auto& copy = dlq[0];
  CAF_CHECK_NOT_EQUAL(copy.id, "m");
  CAF_CHECK_EQUAL(copy.id.size(), 36u);
  CAF_CHECK_EQUAL(copy.topic, "jobs.dlq");
  CAF_CHECK_EQUAL(copy.payload, m.payload);
  CAF_CHECK_EQUAL(copy.priority, 4);
  CAF_CHECK_EQUAL(copy.correlation_id, "c-1");
  CAF_CHECK_EQUAL(copy.status, static_cast<int32_t>(message_status::pending));
  CAF_CHECK_EQUAL(copy.headers.at("trace"), "t-1");
  CAF_CHECK(!copy.headers.at("x-dead-letter-reason").empty());
  CAF_CHECK_EQUAL(copy.headers.at("x-original-message-id"), "m");
  CAF_CHECK_EQUAL(copy.headers.at("x-original-topic"), "jobs");
  CAF_CHECK_EQUAL(copy.headers.at("x-consumer-group"), "g");
  CAF_CHECK_EQUAL(copy.headers.at("x-delivery-attempts"), "2");
  CAF_CHECK(consume("jobs", "g", 10, now + 100000, p).messages.empty());
  // The dead-letter topic is consumed like any other.
  CAF_CHECK(ids_of(consume("jobs.dlq", "ops", 10, now, p).messages) == (ids{copy.id}));
  CAF_CHECK_EQUAL(error_of(store->acknowledge("m", "g", now)), errc::conflict);
}

CAF_TEST(expired messages are never delivered and become expired) {
  auto soon = make_message("soon", "jobs");
  soon.expires_at = t0 + 500;
  publish(soon);
  publish(make_message("keeps", "jobs"));
  auto r = consume("jobs", "g", 10, t0 + 500);
  CAF_CHECK(ids_of(r.messages) == (ids{"keeps"}));
  CAF_CHECK_EQUAL(r.expired, 1);
  CAF_CHECK_EQUAL(get("soon").status, static_cast<int32_t>(message_status::expired));
  CAF_CHECK(consume("jobs", "other", 10, t0).messages.size() == 1u);
  // A leased message that expires is not redelivered.
  auto leased = make_message("leased", "jobs");
  leased.expires_at = t0 + 5000;
  publish(leased);
  auto p = policy(100, 5, 0);
  CAF_CHECK(ids_of(consume("jobs", "h", 10, t0, p).messages) == (ids{"keeps", "leased"}));
  auto later = consume("jobs", "h", 10, t0 + 5000, p);
  CAF_CHECK(ids_of(later.messages) == (ids{"keeps"}));
  CAF_CHECK_EQUAL(later.expired, 1);
  CAF_CHECK_EQUAL(get("leased").status, static_cast<int32_t>(message_status::expired));
}

CAF_TEST(acknowledgements count per group or for the whole message) {
  publish(make_message("m", "jobs"));
  publish(make_message("n", "jobs"));
  CAF_CHECK_EQUAL(error_of(store->acknowledge("m", "g", t0)), errc::conflict);
  CAF_CHECK_EQUAL(error_of(store->acknowledge("absent", "g", t0)), errc::not_found);
  CAF_CHECK_EQUAL(consume("jobs", "g", 10, t0).messages.size(), 2u);
  auto acked = MUST(store->acknowledge("m", "g", t0 + 5));
  CAF_CHECK_EQUAL(acked.status, static_cast<int32_t>(message_status::acknowledged));
  CAF_CHECK_EQUAL(acked.acknowledged_at, t0 + 5);
  CAF_CHECK_EQUAL(MUST(store->acknowledge("m", "g", t0 + 6)).acknowledged_at, t0 + 5);
  // The only group of the topic acknowledged it: acknowledged as a whole
  // for get, yet a group that consumes later still receives it.
  CAF_CHECK_EQUAL(get("m").status, static_cast<int32_t>(message_status::acknowledged));
  CAF_CHECK_EQUAL(get("m").acknowledged_at, t0 + 5);
  // Another group still receives it; a whole acknowledgement ends it for all.
  CAF_CHECK(ids_of(consume("jobs", "h", 1, t0).messages) == (ids{"m"}));
  auto whole = MUST(store->acknowledge("n", "", t0 + 7));
  CAF_CHECK_EQUAL(whole.status, static_cast<int32_t>(message_status::acknowledged));
  CAF_CHECK_EQUAL(whole.acknowledged_at, t0 + 7);
  CAF_CHECK(consume("jobs", "h", 10, t0).messages.empty());
  CAF_CHECK(consume("jobs", "new", 10, t0).messages.size() == 1u);
  CAF_CHECK(consume("jobs", "g", 10, t0 + 10'000'000).messages.empty());
  CAF_CHECK_EQUAL(MUST(store->acknowledge("n", "", t0 + 8)).acknowledged_at, t0 + 7);
}

CAF_TEST(lag counts the deliveries owed over every topic and group) {
  CAF_CHECK_EQUAL(MUST(store->lag()), 0);
  for (int i = 0; i < 4; ++i)
    publish(make_message("a-" + std::to_string(i), "a"));
  publish(make_message("b-0", "b"));
  CAF_CHECK_EQUAL(MUST(store->lag()), 0); // nobody consumed yet
  consume("a", "g1", 1, t0);
  CAF_CHECK_EQUAL(MUST(store->lag()), 4);
  consume("a", "g2", 1, t0);
  CAF_CHECK_EQUAL(MUST(store->lag()), 8);
  consume("b", "g1", 10, t0);
  CAF_CHECK_EQUAL(MUST(store->lag()), 9);
  MUST(store->acknowledge("a-0", "g1", t0));
  CAF_CHECK_EQUAL(MUST(store->lag()), 8);
  MUST(store->acknowledge("a-0", "g1", t0)); // idempotent
  CAF_CHECK_EQUAL(MUST(store->lag()), 8);
  MUST(store->acknowledge("a-0", "", t0)); // g2 (leased) owed it, g1 no longer
  CAF_CHECK_EQUAL(MUST(store->lag()), 7);
  MUST(store->remove("a-1")); // owed to both
  CAF_CHECK_EQUAL(MUST(store->lag()), 5);
  publish(make_message("a-4", "a"));
  CAF_CHECK_EQUAL(MUST(store->lag()), 7);
  auto exp = make_message("a-5", "a");
  exp.expires_at = t0 + 1;
  publish(exp);
  CAF_CHECK_EQUAL(MUST(store->lag()), 9);
  CAF_CHECK_EQUAL(consume("a", "g2", 0, t0 + 1).expired, 0); // max 0 does nothing
  CAF_CHECK_EQUAL(MUST(store->lag()), 9);
  CAF_CHECK_EQUAL(consume("a", "g2", 10, t0 + 1).expired, 1);
  CAF_CHECK_EQUAL(MUST(store->lag()), 7);
  // Dead-lettering: g1 gives up on a-2 (owed no more) and the copy is owed
  // to nobody until a group consumes the dead-letter topic.
  auto p = policy(10, 1, 0);
  consume("a", "g1", 10, t0 + 2, p);
  auto r = consume("a", "g1", 1, t0 + 1000, p);
  CAF_CHECK_EQUAL(r.dead_lettered, 3); // a-2, a-3, a-4 leased once each
  CAF_CHECK(r.messages.empty());
  CAF_CHECK_EQUAL(MUST(store->lag()), 4);
  CAF_CHECK_EQUAL(consume("a.dlq", "ops", 1, t0).messages.size(), 1u);
  CAF_CHECK_EQUAL(MUST(store->lag()), 7);
}

CAF_TEST(a failing script is a store failure with the redis message) {
  publish(make_message("m", "jobs"));
  raw.command({"SET", prefix + "seq", "not a number"});
  auto r = store->publish(make_message("n", "jobs"));
  CAF_REQUIRE(!r);
  CAF_MESSAGE(render(r.error()));
  CAF_CHECK_EQUAL(errc_of(r.error()), errc::store_failure);
  CAF_CHECK(error_detail(r.error()).find("not an integer") != std::string::npos);
  CAF_CHECK(MUST(store->get("m")).has_value());
  raw.command({"SET", prefix + "lag", "x"});
  CAF_CHECK_EQUAL(error_of(store->lag()), errc::store_failure);
}

CAF_TEST(scripts that redis forgot are loaded again) {
  publish(make_message("m", "jobs"));
  CAF_CHECK_EQUAL(raw.command({"SCRIPT", "FLUSH"}), "OK");
  publish(make_message("n", "jobs"));
  CAF_CHECK_EQUAL(consume("jobs", "g", 10, t0).messages.size(), 2u);
}

CAF_TEST(the key prefix and url are checked when the store opens) {
  CAF_CHECK_EQUAL(error_of(open_redis_message_store(url, "")), errc::config_invalid);
  CAF_CHECK_EQUAL(error_of(open_redis_message_store("http://x:1", prefix)),
                  errc::config_invalid);
  CAF_CHECK_EQUAL(error_of(open_redis_message_store(url, prefix, 0ms, 500ms)),
                  errc::config_invalid);
}

CAF_TEST(two nodes consuming one group concurrently never get the same message) {
  constexpr int n = 300;
  for (int i = 0; i < n; ++i)
    publish(make_message("m-" + std::to_string(i), "jobs", i % 10));
  auto node_a = open();
  auto node_b = open();
  std::vector<std::string> got_a;
  std::vector<std::string> got_b;
  std::string err_a;
  std::string err_b;
  auto run = [](message_store& s, std::vector<std::string>& got, std::string& err) {
    for (;;) {
      auto r = s.consume("jobs", "workers", 7, t0, message_policy{});
      if (!r) {
        err = render(r.error());
        return;
      }
      if (r->messages.empty())
        return;
      for (const auto& m : r->messages)
        got.push_back(m.id);
    }
  };
  std::thread ta{[&] { run(*node_a, got_a, err_a); }};
  std::thread tb{[&] { run(*node_b, got_b, err_b); }};
  ta.join();
  tb.join();
  CAF_CHECK_EQUAL(err_a, "");
  CAF_CHECK_EQUAL(err_b, "");
  CAF_MESSAGE("node a got " << got_a.size() << ", node b got " << got_b.size());
  std::set<std::string> all(got_a.begin(), got_a.end());
  for (const auto& id : got_b)
    CAF_CHECK(all.insert(id).second);
  CAF_CHECK_EQUAL(got_a.size() + got_b.size(), static_cast<size_t>(n));
  CAF_CHECK_EQUAL(all.size(), static_cast<size_t>(n));
}

CAF_TEST(an unreachable redis answers unavailable within the timeouts) {
  auto url = "redis://127.0.0.1:" + std::to_string(free_port());
  auto s = MUST(open_redis_message_store(url, prefix, 200ms, 300ms));
  auto start = std::chrono::steady_clock::now();
  auto check = [&](errc got, const char* what) {
    CAF_MESSAGE(what);
    CAF_CHECK_EQUAL(got, errc::unavailable);
  };
  check(error_of(s->publish(make_message("m", "jobs"))), "publish");
  check(error_of(s->get("m")), "get");
  check(error_of(s->list_topic("jobs", 10)), "list_topic");
  check(error_of(s->consume("jobs", "g", 10, t0, message_policy{})), "consume");
  check(error_of(s->acknowledge("m", "g", t0)), "acknowledge");
  check(error_of(s->remove("m")), "remove");
  check(error_of(s->lag()), "lag");
  CAF_CHECK(std::chrono::steady_clock::now() - start < 7 * 200ms + 1s);
  auto r = s->lag();
  CAF_REQUIRE(!r);
  CAF_CHECK(error_detail(r.error()).find(url) != std::string::npos);
}

CAF_TEST(a redis restart with persistence keeps every published message) {
  private_redis server;
  auto s = MUST(open_redis_message_store(server.url(), prefix, 300ms, 2000ms));
  constexpr int n = 50;
  for (int i = 0; i < n; ++i)
    CAF_CHECK(MUST(s->publish(make_message("m-" + std::to_string(i), "jobs", i % 3))));
  // A clean shutdown: published messages, and the group's progress, remain.
  auto first = MUST(s->consume("jobs", "g", 10, t0, message_policy{}));
  CAF_CHECK_EQUAL(first.messages.size(), 10u);
  server.shutdown();
  CAF_CHECK_EQUAL(error_of(s->lag()), errc::unavailable);
  server.start();
  CAF_REQUIRE(test::eventually([&] { return static_cast<bool>(s->lag()); }, 5s, 50ms));
  CAF_CHECK_EQUAL(MUST(s->list_topic("jobs", 1000)).size(), static_cast<size_t>(n));
  CAF_CHECK_EQUAL(MUST(s->lag()), n);
  std::set<std::string> seen;
  for (const auto& m : first.messages)
    seen.insert(m.id);
  // A crash (SIGKILL) right after publishing: appendfsync always kept it.
  CAF_CHECK(MUST(s->publish(make_message("last", "jobs"))));
  server.kill();
  server.start();
  CAF_REQUIRE(test::eventually([&] { return static_cast<bool>(s->lag()); }, 5s, 50ms));
  CAF_CHECK(MUST(s->get("last")).has_value());
  for (;;) {
    auto r = MUST(s->consume("jobs", "g", 7, t0 + 1, message_policy{}));
    if (r.messages.empty())
      break;
    for (const auto& m : r.messages) {
      CAF_CHECK_EQUAL(m.delivery_attempts, 1);
      CAF_CHECK(seen.insert(m.id).second);
    }
  }
  CAF_CHECK_EQUAL(seen.size(), static_cast<size_t>(n + 1));
  CAF_CHECK_EQUAL(MUST(s->lag()), n + 1);
}

// -- the shared semantic cases (tests/message_store_cases.hpp) ------------------

namespace cases = hotswap::message_store_cases;

#define REDIS_MESSAGE_CASE(name)                                                             \
  CAF_TEST(shared case name) {                                                               \
    cases::name([this] { return open(); });                                                  \
  }

REDIS_MESSAGE_CASE(publish_is_idempotent_and_conflicts)
REDIS_MESSAGE_CASE(list_is_newest_first_without_duplicates)
REDIS_MESSAGE_CASE(consume_orders_by_priority_then_age)
REDIS_MESSAGE_CASE(every_group_receives_every_message_once)
REDIS_MESSAGE_CASE(consumers_of_one_group_never_share_a_message)
REDIS_MESSAGE_CASE(acknowledged_by_a_group_is_never_redelivered_to_it)
REDIS_MESSAGE_CASE(acknowledged_as_a_whole_reaches_no_group)
REDIS_MESSAGE_CASE(redelivery_follows_the_ack_deadline_with_exponential_backoff)
REDIS_MESSAGE_CASE(dead_letters_after_max_attempts)
REDIS_MESSAGE_CASE(expired_messages_are_never_delivered)
REDIS_MESSAGE_CASE(removed_messages_are_gone)
REDIS_MESSAGE_CASE(lag_counts_what_groups_still_owe)

CAF_TEST_FIXTURE_SCOPE_END()
