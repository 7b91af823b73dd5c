// The store suite: one body of tests run against both back ends.
//
// SQLite runs on a fresh temporary file per test. PostgreSQL runs on a fresh
// database per test (`hotswap_test_<pid>_<n>`, created and dropped through
// the server named by HOTSWAP_TEST_PG_URL). Without HOTSWAP_TEST_PG_URL the
// PostgreSQL half of every test FAILS: run the suite through
//   scripts/services.sh run -- ctest --test-dir build -R runtime_test.store

#define CAF_SUITE store
#include "caf/test/dsl.hpp"

#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/metrics.hpp"
#include "hotswap/runtime/store.hpp"
#include "hotswap/runtime/store_actor.hpp"
#include "hotswap/runtime/types.hpp"

#include "pg_test_db.hpp"

using namespace hotswap;
using hotswap::test::pg_admin_url;

namespace {

struct test_config : caf::actor_system_config {
  test_config() {
    hotswap::register_runtime_types(*this);
  }
};

std::string render(const caf::error& e) {
  return to_string(errc_of(e)) + ": " + error_detail(e);
}

template <class T>
std::string code_of(const caf::expected<T>& x) {
  return x ? std::string{"ok"} : to_string(errc_of(x.error()));
}

#define MUST(expr)                                                                                 \
  [&] {                                                                                            \
    auto must_res_ = (expr);                                                                       \
    if (!must_res_)                                                                                \
      CAF_FAIL(#expr << " failed: " << render(must_res_.error()));                                 \
    return std::move(*must_res_);                                                                  \
  }()

#define MUST_OK(expr)                                                                              \
  do {                                                                                             \
    auto must_res_ = (expr);                                                                       \
    if (!must_res_)                                                                                \
      CAF_FAIL(#expr << " failed: " << render(must_res_.error()));                                 \
  } while (false)

// -- PostgreSQL administration ------------------------------------------------

// -- back ends ------------------------------------------------------------------

/// One fresh database for one test; removed when destroyed.
class backend {
public:
  virtual ~backend() = default;

  /// "sqlite" or "postgresql".
  virtual std::string name() const = 0;

  virtual std::string url() const = 0;

  bool is_pg() const {
    return name() == "postgresql";
  }

  std::unique_ptr<store> open() {
    auto s = open_store(url());
    if (!s)
      CAF_FAIL("open_store(" << url() << ") failed: " << render(s.error()));
    return std::move(*s);
  }

  std::unique_ptr<store> open_migrated() {
    auto s = open();
    auto v = s->migrate();
    if (!v)
      CAF_FAIL("migrate on " << url() << " failed: " << render(v.error()));
    return s;
  }
};

class sqlite_backend : public backend {
public:
  sqlite_backend() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "hotswap-store-test.XXXXXX")
                         .string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr)
      CAF_FAIL("mkdtemp failed");
    dir_ = buf.data();
  }

  ~sqlite_backend() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string name() const override {
    return "sqlite";
  }

  std::string url() const override {
    // A sub directory that does not exist yet: open_store must create it.
    return "sqlite://" + dir_ + "/data/hotswap.db";
  }

private:
  std::string dir_;
};

class pg_backend : public backend {
public:
  pg_backend() {
    if (pg_admin_url().empty())
      CAF_FAIL("HOTSWAP_TEST_PG_URL is not set: the PostgreSQL half of the store suite needs a "
               "server. Run: scripts/services.sh run -- ctest --test-dir <build> -R "
               "runtime_test.store");
    db_.emplace("hotswap_test_");
  }

  std::string name() const override {
    return "postgresql";
  }

  std::string url() const override {
    return db_->url();
  }

  const std::string& admin_url() const {
    return db_->admin_url();
  }

  const std::string& db() const {
    return db_->name();
  }

  /// Kills every server session on the test database (simulates a server
  /// restart or a network cut).
  void terminate_sessions() {
    db_->terminate_sessions();
  }

private:
  std::optional<test::scratch_pg_database> db_;
};

/// Marks the current test as FAILED (without aborting the run, so the
/// SQLite half still runs) when HOTSWAP_TEST_PG_URL is missing.
bool pg_configured() {
  if (!pg_admin_url().empty())
    return true;
  CAF_ERROR("HOTSWAP_TEST_PG_URL is not set: the PostgreSQL half of the store suite needs a "
            "server. Run: scripts/services.sh run -- ctest --test-dir <build> -R "
            "runtime_test.store");
  return false;
}

/// Runs `f` against SQLite, then PostgreSQL (failing when it is not
/// configured).
template <class F>
void for_each_backend(F f) {
  {
    sqlite_backend b;
    CAF_MESSAGE("backend sqlite: " << b.url());
    f(static_cast<backend&>(b));
  }
  if (pg_configured()) {
    pg_backend b;
    CAF_MESSAGE("backend postgresql: " << b.url());
    f(static_cast<backend&>(b));
  }
}

// -- sample data ----------------------------------------------------------------

audit_event event(const std::string& action, const std::string& trace = "trace-1") {
  audit_event ev;
  ev.category = "Tenant";
  ev.action = action;
  ev.result = "Success";
  ev.actor_user = "alice";
  ev.source_ip = "127.0.0.1";
  ev.trace_id = trace;
  ev.message = action + " done";
  ev.detail = R"({"k":"v"})";
  return ev;
}

snapshot_record snapshot(const claim_result& c, const std::string& body,
                         const std::string& status = "Active",
                         const std::string& unique_key = "") {
  auto s = c.snapshot;
  s.epoch = c.epoch;
  s.body = body;
  s.status = status;
  s.tenant_id = "t-1";
  s.unique_key = unique_key;
  return s;
}

std::vector<audit_event> audit_of(store& s, const std::string& kind, const std::string& id) {
  audit_query q;
  q.entity_kind = kind;
  q.entity_id = id;
  q.page_size = 100;
  auto r = s.query_audit(q);
  if (!r)
    CAF_FAIL("query_audit failed: " << render(r.error()));
  return std::move(*r);
}

/// The written snapshot (kind, id); fails the test when absent.
snapshot_record must_get(store& s, const std::string& kind, const std::string& id) {
  auto r = s.get(kind, id);
  if (!r)
    CAF_FAIL("get(" << kind << ", " << id << ") failed: " << render(r.error()));
  if (!r->has_value())
    CAF_FAIL("get(" << kind << ", " << id << ") found nothing");
  return std::move(**r);
}

user_record user(const std::string& id, const std::string& name) {
  user_record u;
  u.id = id;
  u.username = name;
  u.email = name + "@example.com";
  u.full_name = "User " + name;
  u.password_hash = "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA";
  u.roles = {"Viewer", "Deployer"};
  u.tenant_id = "t-1";
  return u;
}

audit_event user_event(const std::string& action) {
  auto ev = event(action);
  ev.category = "User";
  return ev;
}

/// "sha256:<hex>" of `bytes`, as the upload path computes it.
std::string digest_of(const std::string& bytes) {
  return "sha256:" + crypto::hex_encode(crypto::sha256(bytes));
}

/// Every byte value 0..255 twice, then a run of NULs: nothing may be lost to
/// text handling or escaping.
std::string binary_bytes() {
  std::string out;
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 256; ++i)
      out.push_back(static_cast<char>(i));
  out.append(16, '\0');
  return out;
}

/// A pseudo-random buffer of `n` bytes (deterministic for `seed`).
std::string big_bytes(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed;
  for (auto& c : out) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

module_record module(const std::string& name, const std::string& version,
                     const std::string& bytes, millis uploaded_at) {
  module_record m;
  m.name = name;
  m.version = version;
  m.digest = digest_of(bytes);
  m.size = static_cast<int64_t>(bytes.size());
  m.signature = "c2lnbmF0dXJl";
  m.is_signed = true;
  m.signer_key_id = "release-2024";
  m.description = "The " + name + " module";
  m.abi_token = "hotswap-abi-1;caf-0.17.6;gcc-12";
  m.tenant_id = "t-1";
  m.uploaded_by = "alice";
  m.uploaded_at = uploaded_at;
  return m;
}

audit_event module_event(const std::string& trace) {
  auto ev = event("ModuleUploaded", trace);
  ev.category = "Module";
  return ev;
}

std::vector<audit_event> audit_by_trace(store& s, const std::string& trace) {
  audit_query q;
  q.trace_id = trace;
  q.page_size = 100;
  auto r = s.query_audit(q);
  if (!r)
    CAF_FAIL("query_audit failed: " << render(r.error()));
  return std::move(*r);
}

/// "name@version,..." of `xs`, in order.
std::string versions(const std::vector<module_record>& xs) {
  std::string out;
  for (auto& x : xs)
    out += (out.empty() ? "" : ",") + x.name + "@" + x.version;
  return out;
}

void check_same_module(const module_record& got, const module_record& want) {
  CAF_CHECK_EQUAL(got.name, want.name);
  CAF_CHECK_EQUAL(got.version, want.version);
  CAF_CHECK_EQUAL(got.digest, want.digest);
  CAF_CHECK_EQUAL(got.size, want.size);
  CAF_CHECK_EQUAL(got.signature, want.signature);
  CAF_CHECK_EQUAL(got.is_signed, want.is_signed);
  CAF_CHECK_EQUAL(got.signer_key_id, want.signer_key_id);
  CAF_CHECK_EQUAL(got.description, want.description);
  CAF_CHECK_EQUAL(got.abi_token, want.abi_token);
  CAF_CHECK_EQUAL(got.tenant_id, want.tenant_id);
  CAF_CHECK_EQUAL(got.uploaded_by, want.uploaded_by);
  CAF_CHECK_EQUAL(got.uploaded_at, want.uploaded_at);
}

uint16_t closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd); // nobody listens there now
  return ntohs(addr.sin_port);
}

} // namespace

// -- opening and migrating ------------------------------------------------------

CAF_TEST(an unknown url scheme is a configuration error naming the url) {
  auto s = open_store("mysql://db.example.com/hotswap");
  CAF_REQUIRE(!s);
  CAF_CHECK_EQUAL(code_of(s), "config_invalid");
  CAF_CHECK(error_detail(s.error()).find("mysql://db.example.com/hotswap") != std::string::npos);
}

CAF_TEST(migrations are idempotent and keep the data) {
  for_each_backend([](backend& b) {
    auto s = b.open();
    CAF_CHECK_EQUAL(MUST(s->schema_version()), 0);
    auto v = MUST(s->migrate());
    CAF_CHECK_GREATER_OR_EQUAL(v, 1);
    auto c = MUST(s->claim("tenant", "acme", "node-a"));
    MUST(s->put(snapshot(c, R"({"name":"acme"})"), event("TenantCreated")));
    CAF_CHECK_EQUAL(MUST(s->migrate()), v);
    CAF_CHECK_EQUAL(MUST(s->schema_version()), v);
    s.reset();
    auto s2 = b.open();
    CAF_CHECK_EQUAL(MUST(s2->schema_version()), v);
    CAF_CHECK_EQUAL(MUST(s2->migrate()), v);
    auto got = MUST(s2->get("tenant", "acme"));
    CAF_REQUIRE(got.has_value());
    CAF_CHECK_EQUAL(got->body, R"({"name":"acme"})");
    CAF_CHECK_EQUAL(audit_of(*s2, "tenant", "acme").size(), 1u);
    MUST_OK(s2->ping());
  });
}

CAF_TEST(concurrent migrations of a fresh database all succeed) {
  for_each_backend([](backend& b) {
    constexpr int n = 4;
    std::vector<std::unique_ptr<store>> stores;
    for (int i = 0; i < n; ++i)
      stores.push_back(b.open());
    std::vector<caf::expected<int>> results(n, caf::expected<int>{0});
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
      threads.emplace_back([&, i] {
        ++ready;
        while (ready.load() < n)
          std::this_thread::yield();
        results[static_cast<size_t>(i)] = stores[static_cast<size_t>(i)]->migrate();
      });
    for (auto& t : threads)
      t.join();
    int first = 0;
    for (auto& r : results) {
      if (!r)
        CAF_FAIL("concurrent migrate failed: " << render(r.error()));
      if (first == 0)
        first = *r;
      CAF_CHECK_EQUAL(*r, first);
    }
    CAF_CHECK_GREATER_OR_EQUAL(first, 1);
    auto c = MUST(stores[0]->claim("tenant", "x", "node-a"));
    CAF_CHECK_EQUAL(c.epoch, 1);
  });
}

// -- ownership and fencing ------------------------------------------------------

CAF_TEST(claim increments the epoch across re-opens) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    auto c1 = MUST(s->claim("deployment", "d-1", "node-a"));
    CAF_CHECK_EQUAL(c1.epoch, 1);
    CAF_CHECK_EQUAL(c1.snapshot.epoch, 1);
    CAF_CHECK_EQUAL(c1.snapshot.owner_node, "node-a");
    CAF_CHECK_EQUAL(c1.snapshot.body, "");
    CAF_CHECK_EQUAL(c1.snapshot.kind, "deployment");
    CAF_CHECK_EQUAL(c1.snapshot.id, "d-1");
    CAF_CHECK_NOT_EQUAL(c1.snapshot.created_at, 0);
    // Never written: invisible to get.
    CAF_CHECK(!MUST(s->get("deployment", "d-1")).has_value());
    auto c2 = MUST(s->claim("deployment", "d-1", "node-b"));
    CAF_CHECK_EQUAL(c2.epoch, 2);
    CAF_CHECK_EQUAL(c2.snapshot.owner_node, "node-b");
    MUST(s->put(snapshot(c2, R"({"step":3})"), event("StepStarted")));
    s.reset(); // "restart"
    auto s2 = b.open_migrated();
    auto c3 = MUST(s2->claim("deployment", "d-1", "node-c"));
    CAF_CHECK_EQUAL(c3.epoch, 3);
    CAF_CHECK_EQUAL(c3.snapshot.body, R"({"step":3})");
    CAF_CHECK_EQUAL(c3.snapshot.seq, 1);
    CAF_CHECK_EQUAL(c3.snapshot.owner_node, "node-c");
    // Another entity starts at 1 again.
    CAF_CHECK_EQUAL(MUST(s2->claim("deployment", "d-2", "node-c")).epoch, 1);
  });
}

CAF_TEST(a write with a lower epoch is fenced and writes nothing) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    auto old_owner = MUST(s->claim("tenant", "acme", "node-a"));
    CAF_CHECK_EQUAL(MUST(s->put(snapshot(old_owner, R"({"v":1})"), event("TenantCreated"))), 1);
    auto new_owner = MUST(s->claim("tenant", "acme", "node-b"));
    CAF_CHECK_EQUAL(new_owner.epoch, 2);
    auto before = MUST(s->get("tenant", "acme"));
    CAF_REQUIRE(before.has_value());
    // The zombie writes with epoch 1.
    auto zombie = snapshot(old_owner, R"({"v":"zombie"})", "Suspended", "zombie-key");
    auto r = s->put(zombie, event("TenantSuspended", "trace-zombie"));
    CAF_REQUIRE(!r);
    CAF_CHECK_EQUAL(code_of(r), "fenced");
    auto msg = error_detail(r.error());
    CAF_MESSAGE("fenced: " << msg);
    CAF_CHECK(msg.find("tenant/acme") != std::string::npos);
    CAF_CHECK(msg.find("2") != std::string::npos);
    CAF_CHECK(msg.find("1") != std::string::npos);
    // Nothing written: snapshot and audit unchanged.
    auto after = MUST(s->get("tenant", "acme"));
    CAF_REQUIRE(after.has_value());
    CAF_CHECK_EQUAL(*after, *before);
    CAF_CHECK_EQUAL(after->body, R"({"v":1})");
    CAF_CHECK_EQUAL(after->unique_key, "");
    CAF_CHECK_EQUAL(audit_of(*s, "tenant", "acme").size(), 1u);
    audit_query q;
    q.trace_id = "trace-zombie";
    CAF_CHECK(MUST(s->query_audit(q)).empty());
    // The new owner writes fine.
    CAF_CHECK_EQUAL(MUST(s->put(snapshot(new_owner, R"({"v":2})"), event("TenantUpdated"))), 2);
    // Epoch above the stored one: a bug, not a fence.
    auto ahead = snapshot(new_owner, "{}");
    ahead.epoch = 7;
    CAF_CHECK_EQUAL(code_of(s->put(ahead, event("X"))), "internal");
    // Never claimed.
    snapshot_record ghost;
    ghost.kind = "tenant";
    ghost.id = "ghost";
    ghost.epoch = 1;
    ghost.body = "{}";
    CAF_CHECK_EQUAL(code_of(s->put(ghost, event("X"))), "not_found");
    CAF_CHECK_EQUAL(audit_of(*s, "tenant", "acme").size(), 2u);
    CAF_CHECK(audit_of(*s, "tenant", "ghost").empty());
  });
}

CAF_TEST(a put writes the snapshot and its audit event atomically) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    auto t0 = now_millis();
    auto c = MUST(s->claim("tenant", "acme", "node-a"));
    auto snap = snapshot(c, R"({"name":"Acme"})", "Active", "acme");
    auto ev = event("TenantCreated", "trace-acme");
    ev.at = 0; // store's clock
    CAF_CHECK_EQUAL(MUST(s->put(snap, ev)), 1);
    auto got = MUST(s->get("tenant", "acme"));
    CAF_REQUIRE(got.has_value());
    CAF_CHECK_EQUAL(got->body, R"({"name":"Acme"})");
    CAF_CHECK_EQUAL(got->status, "Active");
    CAF_CHECK_EQUAL(got->tenant_id, "t-1");
    CAF_CHECK_EQUAL(got->unique_key, "acme");
    CAF_CHECK_EQUAL(got->owner_node, "node-a");
    CAF_CHECK_EQUAL(got->epoch, 1);
    CAF_CHECK_EQUAL(got->seq, 1);
    CAF_CHECK_GREATER_OR_EQUAL(got->created_at, t0);
    CAF_CHECK_GREATER_OR_EQUAL(got->updated_at, got->created_at);
    auto events = audit_of(*s, "tenant", "acme");
    CAF_REQUIRE_EQUAL(events.size(), 1u);
    CAF_CHECK_EQUAL(events[0].action, "TenantCreated");
    CAF_CHECK_EQUAL(events[0].trace_id, "trace-acme");
    CAF_CHECK_EQUAL(events[0].tenant_id, "t-1");
    CAF_CHECK_EQUAL(events[0].detail, R"({"k":"v"})");
    CAF_CHECK_GREATER_OR_EQUAL(events[0].at, t0);
    CAF_CHECK_GREATER(events[0].id, 0);
    // A second tenant wants the same unique key: conflict, nothing written.
    auto c2 = MUST(s->claim("tenant", "acme-2", "node-a"));
    auto r = s->put(snapshot(c2, R"({"name":"Acme again"})", "Active", "acme"),
                    event("TenantCreated", "trace-dup"));
    CAF_CHECK_EQUAL(code_of(r), "conflict");
    CAF_CHECK(!MUST(s->get("tenant", "acme-2")).has_value());
    CAF_CHECK(audit_of(*s, "tenant", "acme-2").empty());
    audit_query q;
    q.trace_id = "trace-dup";
    CAF_CHECK(MUST(s->query_audit(q)).empty());
    // The same key in another kind is fine.
    auto c3 = MUST(s->claim("deployment", "acme", "node-a"));
    CAF_CHECK_EQUAL(MUST(s->put(snapshot(c3, "{}", "Pending", "acme"), event("X"))), 1);
    // Free the key, then the second tenant can take it.
    snap.unique_key = "acme-old";
    snap.body = R"({"name":"Acme renamed"})";
    CAF_CHECK_EQUAL(MUST(s->put(snap, event("TenantRenamed"))), 2);
    CAF_CHECK_EQUAL(MUST(s->put(snapshot(c2, R"({"name":"Acme again"})", "Active", "acme"),
                                event("TenantCreated"))),
                    1);
    CAF_CHECK_EQUAL(must_get(*s, "tenant", "acme-2").unique_key, "acme");
    // An empty unique key is NULL: many entities may have none.
    auto c4 = MUST(s->claim("tenant", "n1", "node-a"));
    auto c5 = MUST(s->claim("tenant", "n2", "node-a"));
    MUST(s->put(snapshot(c4, "{}"), event("X")));
    MUST(s->put(snapshot(c5, "{}"), event("X")));
  });
}

CAF_TEST(release clears the owner only for the current owner and epoch) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    auto c1 = MUST(s->claim("approval", "a-1", "node-a"));
    MUST(s->put(snapshot(c1, "{}"), event("X")));
    MUST_OK(s->release("approval", "a-1", "node-b", c1.epoch)); // not the owner: no-op
    CAF_CHECK_EQUAL(must_get(*s, "approval", "a-1").owner_node, "node-a");
    MUST_OK(s->release("approval", "a-1", "node-a", c1.epoch + 1)); // wrong epoch: no-op
    CAF_CHECK_EQUAL(must_get(*s, "approval", "a-1").owner_node, "node-a");
    MUST_OK(s->release("approval", "a-1", "node-a", c1.epoch));
    CAF_CHECK_EQUAL(must_get(*s, "approval", "a-1").owner_node, "");
    MUST_OK(s->release("approval", "missing", "node-a", 1)); // absent: no-op
    // The next claim still increases the epoch.
    CAF_CHECK_EQUAL(MUST(s->claim("approval", "a-1", "node-b")).epoch, c1.epoch + 1);
  });
}

CAF_TEST(get and list filter and paginate) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    struct row {
      const char* id;
      const char* status;
      const char* tenant;
    };
    row rows[] = {{"e1", "Active", "t-1"},    {"e2", "Suspended", "t-1"},
                  {"e3", "Active", "t-2"},    {"e4", "Active", "t-1"},
                  {"e5", "Suspended", "t-2"}};
    for (auto& r : rows) {
      auto c = MUST(s->claim("tenant", r.id, "node-a"));
      auto snap = snapshot(c, std::string{R"({"id":")"} + r.id + "\"}", r.status);
      snap.tenant_id = r.tenant;
      MUST(s->put(snap, event("TenantCreated")));
    }
    MUST(s->claim("tenant", "e6-never-written", "node-a"));
    auto other = MUST(s->claim("deployment", "d-1", "node-a"));
    MUST(s->put(snapshot(other, "{}"), event("X")));
    auto ids = [](const std::vector<snapshot_record>& xs) {
      std::string out;
      for (auto& x : xs)
        out += (out.empty() ? "" : ",") + x.id;
      return out;
    };
    snapshot_query q;
    q.kind = "tenant";
    CAF_CHECK_EQUAL(ids(MUST(s->list(q))), "e5,e4,e3,e2,e1");
    q.status = "Active";
    CAF_CHECK_EQUAL(ids(MUST(s->list(q))), "e4,e3,e1");
    q.tenant_id = "t-1";
    CAF_CHECK_EQUAL(ids(MUST(s->list(q))), "e4,e1");
    q.status.clear();
    CAF_CHECK_EQUAL(ids(MUST(s->list(q))), "e4,e2,e1");
    q.tenant_id.clear();
    q.limit = 2;
    CAF_CHECK_EQUAL(ids(MUST(s->list(q))), "e5,e4");
    q.offset = 2;
    CAF_CHECK_EQUAL(ids(MUST(s->list(q))), "e3,e2");
    q.offset = 4;
    CAF_CHECK_EQUAL(ids(MUST(s->list(q))), "e1");
    q.offset = 10;
    CAF_CHECK(MUST(s->list(q)).empty());
    q.kind = "nothing";
    q.offset = 0;
    CAF_CHECK(MUST(s->list(q)).empty());
    auto e3 = MUST(s->get("tenant", "e3"));
    CAF_REQUIRE(e3.has_value());
    CAF_CHECK_EQUAL(e3->body, R"({"id":"e3"})");
    CAF_CHECK_EQUAL(e3->tenant_id, "t-2");
    CAF_CHECK(!MUST(s->get("tenant", "absent")).has_value());
    CAF_CHECK(!MUST(s->get("tenant", "e6-never-written")).has_value());
  });
}

// -- audit ------------------------------------------------------------------------

CAF_TEST(audit queries filter on every field and paginate newest first) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    struct spec {
      millis at;
      const char* category;
      const char* trace;
      const char* kind;
      const char* id;
      const char* actor;
    };
    spec specs[] = {
      {1000, "Authentication", "tr-1", "", "", "alice"},
      {2000, "Tenant", "tr-2", "tenant", "acme", "alice"},
      {3000, "tenant", "tr-2", "tenant", "acme", "bob"},
      {3000, "Deployment", "tr-3", "deployment", "d-1", "bob"},
      {5000, "TENANT", "tr-4", "tenant", "other", "carol"},
    };
    std::vector<int64_t> ids;
    for (auto& sp : specs) {
      audit_event ev;
      ev.at = sp.at;
      ev.category = sp.category;
      ev.action = "A";
      ev.result = "Success";
      ev.trace_id = sp.trace;
      ev.entity_kind = sp.kind;
      ev.entity_id = sp.id;
      ev.actor_user = sp.actor;
      ev.message = "m";
      ids.push_back(MUST(s->append_audit(ev)));
    }
    for (size_t i = 1; i < ids.size(); ++i)
      CAF_CHECK_GREATER(ids[i], ids[i - 1]);
    auto ats = [](const std::vector<audit_event>& xs) {
      std::string out;
      for (auto& x : xs)
        out += (out.empty() ? "" : ",") + std::to_string(x.at) + x.actor_user.substr(0, 1);
      return out;
    };
    audit_query q;
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "5000c,3000b,3000b,2000a,1000a");
    // The two events at 3000 come newest id first.
    auto all = MUST(s->query_audit(q));
    CAF_REQUIRE_EQUAL(all.size(), 5u);
    CAF_CHECK_EQUAL(all[1].id, ids[3]);
    CAF_CHECK_EQUAL(all[2].id, ids[2]);
    CAF_CHECK_EQUAL(all[0].category, "TENANT");
    CAF_CHECK_EQUAL(all[0].detail, "{}");
    q.category = "tenant";
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "5000c,3000b,2000a");
    q.category = "Tenant";
    q.trace_id = "tr-2";
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "3000b,2000a");
    q = audit_query{};
    q.entity_kind = "tenant";
    q.entity_id = "acme";
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "3000b,2000a");
    q = audit_query{};
    q.actor_user = "bob";
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "3000b,3000b");
    q = audit_query{};
    q.from = 2000;
    q.to = 3000;
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "3000b,3000b,2000a");
    q.to = 0;
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "5000c,3000b,3000b,2000a");
    q = audit_query{};
    q.to = 1000;
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "1000a");
    q = audit_query{};
    q.page_size = 2;
    q.page_number = 1;
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "5000c,3000b");
    q.page_number = 3;
    CAF_CHECK_EQUAL(ats(MUST(s->query_audit(q))), "1000a");
    q.page_number = 4;
    CAF_CHECK(MUST(s->query_audit(q)).empty());
    q.page_number = 0; // clamped to 1
    q.page_size = 1000; // clamped to 100
    CAF_CHECK_EQUAL(MUST(s->query_audit(q)).size(), 5u);
    q = audit_query{};
    q.trace_id = "no-such-trace";
    CAF_CHECK(MUST(s->query_audit(q)).empty());
  });
}

// -- users ------------------------------------------------------------------------

CAF_TEST(users are unique by case-insensitive name and writes carry audit events) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    CAF_CHECK_EQUAL(MUST(s->count_users()), 0);
    MUST_OK(s->create_user(user("u-1", "Alice"), user_event("UserCreated")));
    CAF_CHECK_EQUAL(code_of(s->create_user(user("u-2", "ALICE"), user_event("UserCreated"))),
                    "conflict");
    CAF_CHECK_EQUAL(code_of(s->create_user(user("u-1", "someone"), user_event("UserCreated"))),
                    "conflict");
    auto a = MUST(s->user_by_name("aLiCe"));
    CAF_REQUIRE(a.has_value());
    CAF_CHECK_EQUAL(a->id, "u-1");
    CAF_CHECK_EQUAL(a->username, "Alice");
    CAF_CHECK_EQUAL(a->email, "Alice@example.com");
    CAF_CHECK_EQUAL(a->password_hash, user("u-1", "Alice").password_hash);
    CAF_REQUIRE_EQUAL(a->roles.size(), 2u);
    CAF_CHECK_EQUAL(a->roles[0], "Viewer");
    CAF_CHECK_EQUAL(a->roles[1], "Deployer");
    CAF_CHECK_EQUAL(a->tenant_id, "t-1");
    CAF_CHECK(a->active);
    CAF_CHECK_NOT_EQUAL(a->created_at, 0);
    CAF_CHECK(MUST(s->user_by_id("u-1")).has_value());
    CAF_CHECK(!MUST(s->user_by_id("u-9")).has_value());
    CAF_CHECK(!MUST(s->user_by_name("nobody")).has_value());
    MUST_OK(s->create_user(user("u-2", "carol"), user_event("UserCreated")));
    // Update: rename and change roles.
    auto a2 = *a;
    a2.username = "bob";
    a2.roles = {"Admin"};
    a2.active = false;
    MUST_OK(s->update_user(a2, user_event("UserUpdated")));
    CAF_CHECK(!MUST(s->user_by_name("alice")).has_value());
    auto bob = MUST(s->user_by_name("BOB"));
    CAF_REQUIRE(bob.has_value());
    CAF_CHECK_EQUAL(bob->roles, std::vector<std::string>{"Admin"});
    CAF_CHECK(!bob->active);
    CAF_CHECK_EQUAL(bob->created_at, a->created_at);
    // Rename carol to Bob: conflict.
    auto carol = *MUST(s->user_by_name("carol"));
    carol.username = "Bob";
    CAF_CHECK_EQUAL(code_of(s->update_user(carol, user_event("UserUpdated"))), "conflict");
    CAF_CHECK_EQUAL(code_of(s->update_user(user("u-9", "zed"), user_event("UserUpdated"))),
                    "not_found");
    auto names = [](const std::vector<user_record>& xs) {
      std::string out;
      for (auto& x : xs)
        out += (out.empty() ? "" : ",") + x.username;
      return out;
    };
    MUST_OK(s->create_user(user("u-3", "Aaron"), user_event("UserCreated")));
    CAF_CHECK_EQUAL(names(MUST(s->list_users())), "Aaron,bob,carol");
    CAF_CHECK_EQUAL(MUST(s->count_users()), 3);
    MUST_OK(s->delete_user("u-3", user_event("UserDeleted")));
    CAF_CHECK_EQUAL(code_of(s->delete_user("u-3", user_event("UserDeleted"))), "not_found");
    CAF_CHECK_EQUAL(MUST(s->count_users()), 2);
    // One audit event per successful write, none for the failed ones.
    audit_query q;
    q.category = "user";
    auto evs = MUST(s->query_audit(q));
    CAF_CHECK_EQUAL(evs.size(), 5u); // 3 created, 1 updated, 1 deleted
  });
}

CAF_TEST(record_login stores failed attempts and the lock with an audit event) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    MUST_OK(s->create_user(user("u-1", "alice"), user_event("UserCreated")));
    auto ev = user_event("LoginFailed");
    ev.category = "Authentication";
    ev.result = "Failure";
    MUST_OK(s->record_login("u-1", 5, 1234567, ev));
    auto u = MUST(s->user_by_id("u-1"));
    CAF_REQUIRE(u.has_value());
    CAF_CHECK_EQUAL(u->failed_attempts, 5);
    CAF_CHECK_EQUAL(u->locked_until, 1234567);
    MUST_OK(s->record_login("u-1", 0, 0, ev));
    u = MUST(s->user_by_id("u-1"));
    CAF_CHECK_EQUAL(u->failed_attempts, 0);
    CAF_CHECK_EQUAL(u->locked_until, 0);
    CAF_CHECK_EQUAL(code_of(s->record_login("u-9", 1, 0, ev)), "not_found");
    audit_query q;
    q.category = "AUTHENTICATION";
    CAF_CHECK_EQUAL(MUST(s->query_audit(q)).size(), 2u);
  });
}

CAF_TEST(wrong passwords from concurrent logins all count and the last one locks) {
  for_each_backend([](backend& b) {
    auto s1 = b.open_migrated();
    auto s2 = b.open_migrated(); // a second connection, as a second store worker
    MUST_OK(s1->create_user(user("u-1", "alice"), user_event("UserCreated")));
    auto ev = user_event("LoginFailed");
    ev.category = "Authentication";
    ev.result = "Failure";
    // Four failures through two connections: counted, not locked.
    for (int i = 0; i < 4; ++i) {
      auto& s = i % 2 == 0 ? s1 : s2;
      CAF_CHECK_EQUAL(MUST(s->record_failed_login("u-1", 5, 999000, ev)), 0);
    }
    auto u = MUST(s1->user_by_id("u-1"));
    CAF_REQUIRE(u.has_value());
    CAF_CHECK_EQUAL(u->failed_attempts, 4);
    // The fifth locks and resets the counter.
    CAF_CHECK_EQUAL(MUST(s2->record_failed_login("u-1", 5, 999000, ev)), 999000);
    u = MUST(s1->user_by_id("u-1"));
    CAF_CHECK_EQUAL(u->failed_attempts, 0);
    CAF_CHECK_EQUAL(u->locked_until, 999000);
    CAF_CHECK_EQUAL(code_of(s1->record_failed_login("u-9", 5, 1, ev)), "not_found");
    audit_query q;
    q.category = "Authentication";
    CAF_CHECK_EQUAL(MUST(s1->query_audit(q)).size(), 5u);
  });
}

// -- signing keys -----------------------------------------------------------------

CAF_TEST(ensure_signing_key converges on one current key) {
  for_each_backend([](backend& b) {
    auto s1 = b.open_migrated();
    auto s2 = b.open_migrated();
    CAF_CHECK(MUST(s1->signing_keys()).empty());
    signing_key k1{"kid-1", std::string("\x00\x01\xfe\xff secret one", 15), 1000, 0};
    signing_key k2{"kid-2", "secret two", 2000, 0};
    auto r1 = MUST(s1->ensure_signing_key(k1));
    auto r2 = MUST(s2->ensure_signing_key(k2));
    CAF_REQUIRE_EQUAL(r1.size(), 1u);
    CAF_REQUIRE_EQUAL(r2.size(), 1u);
    CAF_CHECK_EQUAL(r2[0].kid, "kid-1");
    CAF_CHECK_EQUAL(r2[0].secret, k1.secret);
    CAF_CHECK_EQUAL(r2[0].created_at, 1000);
    CAF_CHECK_EQUAL(r2[0].retired_at, 0);
    CAF_CHECK_EQUAL(MUST(s2->signing_keys()).size(), 1u);
    // Later calls keep returning the same current key.
    auto r3 = MUST(s1->ensure_signing_key(k2));
    CAF_REQUIRE_EQUAL(r3.size(), 1u);
    CAF_CHECK_EQUAL(r3[0].kid, "kid-1");
  });
}

CAF_TEST(racing nodes on a fresh database agree on one signing key) {
  for_each_backend([](backend& b) {
    constexpr int n = 4;
    std::vector<std::unique_ptr<store>> stores;
    for (int i = 0; i < n; ++i)
      stores.push_back(b.open_migrated());
    std::vector<caf::expected<std::vector<signing_key>>> results(
      n, caf::expected<std::vector<signing_key>>{std::vector<signing_key>{}});
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
      threads.emplace_back([&, i] {
        ++ready;
        while (ready.load() < n)
          std::this_thread::yield();
        signing_key k{"race-" + std::to_string(i), "s-" + std::to_string(i), 1000 + i, 0};
        results[static_cast<size_t>(i)] = stores[static_cast<size_t>(i)]->ensure_signing_key(k);
      });
    for (auto& t : threads)
      t.join();
    std::string kid;
    for (auto& r : results) {
      if (!r)
        CAF_FAIL("ensure_signing_key failed: " << render(r.error()));
      CAF_REQUIRE_EQUAL(r->size(), 1u);
      if (kid.empty())
        kid = r->front().kid;
      CAF_CHECK_EQUAL(r->front().kid, kid);
    }
  });
}

// -- module artifacts -------------------------------------------------------------

CAF_TEST(a module version round-trips its record and bytes) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    CAF_CHECK_GREATER_OR_EQUAL(MUST(s->schema_version()), 2);
    auto t0 = now_millis();
    // Every byte value and NULs.
    auto bytes = binary_bytes();
    auto m = module("echo", "1.0.0", bytes, 1700000000000);
    auto put = MUST(s->put_module(m, bytes, module_event("trace-echo")));
    CAF_CHECK(put.created);
    check_same_module(put.record, m);
    auto got = MUST(s->get_module("echo", "1.0.0"));
    CAF_REQUIRE(got.has_value());
    check_same_module(*got, m);
    auto stored = MUST(s->module_bytes("echo", "1.0.0"));
    CAF_REQUIRE(stored.has_value());
    CAF_CHECK_EQUAL(stored->size(), bytes.size());
    CAF_CHECK(*stored == bytes);
    // Its audit event, with the module as entity (filled in when empty).
    auto evs = audit_by_trace(*s, "trace-echo");
    CAF_REQUIRE_EQUAL(evs.size(), 1u);
    CAF_CHECK_EQUAL(evs[0].action, "ModuleUploaded");
    CAF_CHECK_EQUAL(evs[0].category, "Module");
    CAF_CHECK_EQUAL(evs[0].entity_kind, "module");
    CAF_CHECK_EQUAL(evs[0].entity_id, "echo@1.0.0");
    CAF_CHECK_EQUAL(evs[0].tenant_id, "t-1");
    // A ~5 MiB artifact; size is the stored byte count and uploaded_at 0
    // means the store's clock.
    auto big = big_bytes(5 * 1024 * 1024 + 17, 42);
    auto mb = module("big", "0.1.0-rc.1", big, 0);
    mb.size = 0;
    mb.signature.clear();
    mb.is_signed = false;
    mb.signer_key_id.clear();
    auto ev = module_event("trace-big");
    ev.entity_kind = "module";
    ev.entity_id = "big:0.1.0-rc.1";
    auto putb = MUST(s->put_module(mb, big, ev));
    CAF_CHECK(putb.created);
    CAF_CHECK_EQUAL(putb.record.size, static_cast<int64_t>(big.size()));
    CAF_CHECK_GREATER_OR_EQUAL(putb.record.uploaded_at, t0);
    CAF_CHECK(!putb.record.is_signed);
    CAF_CHECK_EQUAL(putb.record.signature, "");
    auto gotb = MUST(s->get_module("big", "0.1.0-rc.1"));
    CAF_REQUIRE(gotb.has_value());
    check_same_module(*gotb, putb.record);
    auto storedb = MUST(s->module_bytes("big", "0.1.0-rc.1"));
    CAF_REQUIRE(storedb.has_value());
    CAF_CHECK_EQUAL(storedb->size(), big.size());
    CAF_CHECK(*storedb == big);
    CAF_CHECK_EQUAL(digest_of(*storedb), mb.digest);
    // The caller's entity fields are kept.
    auto evb = audit_by_trace(*s, "trace-big");
    CAF_REQUIRE_EQUAL(evb.size(), 1u);
    CAF_CHECK_EQUAL(evb[0].entity_id, "big:0.1.0-rc.1");
    // Empty bytes are bytes too.
    auto empty = MUST(s->put_module(module("empty", "1.0.0", "", 5), "", module_event("t-e")));
    CAF_CHECK(empty.created);
    CAF_CHECK_EQUAL(empty.record.size, 0);
    auto stored_empty = MUST(s->module_bytes("empty", "1.0.0"));
    CAF_REQUIRE(stored_empty.has_value());
    CAF_CHECK(stored_empty->empty());
    // Survives a re-open.
    s.reset();
    auto s2 = b.open_migrated();
    auto again = MUST(s2->module_bytes("echo", "1.0.0"));
    CAF_REQUIRE(again.has_value());
    CAF_CHECK(*again == bytes);
  });
}

CAF_TEST(putting the same module version again is idempotent and writes no audit event) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    auto bytes = binary_bytes();
    auto m = module("echo", "1.0.0", bytes, 1000);
    auto first = MUST(s->put_module(m, bytes, module_event("trace-1st")));
    CAF_CHECK(first.created);
    // A retry (other metadata, same digest): the stored record, nothing written.
    auto retry = m;
    retry.description = "a retry";
    retry.uploaded_by = "bob";
    retry.uploaded_at = 2000;
    auto second = MUST(s->put_module(retry, bytes, module_event("trace-2nd")));
    CAF_CHECK(!second.created);
    check_same_module(second.record, first.record);
    CAF_CHECK_EQUAL(second.record.description, "The echo module");
    CAF_CHECK_EQUAL(audit_by_trace(*s, "trace-1st").size(), 1u);
    CAF_CHECK(audit_by_trace(*s, "trace-2nd").empty());
    audit_query q;
    q.category = "Module";
    CAF_CHECK_EQUAL(MUST(s->query_audit(q)).size(), 1u);
    CAF_CHECK_EQUAL(MUST(s->list_modules("echo")).size(), 1u);
    // Through a second connection too.
    auto s2 = b.open_migrated();
    auto third = MUST(s2->put_module(m, bytes, module_event("trace-3rd")));
    CAF_CHECK(!third.created);
    CAF_CHECK(audit_by_trace(*s, "trace-3rd").empty());
  });
}

CAF_TEST(concurrent identical module puts all succeed and create once) {
  for_each_backend([](backend& b) {
    constexpr int n = 4;
    std::vector<std::unique_ptr<store>> stores;
    for (int i = 0; i < n; ++i)
      stores.push_back(b.open_migrated());
    auto bytes = big_bytes(256 * 1024, 7);
    auto m = module("race", "1.0.0", bytes, 1000);
    std::vector<caf::expected<module_put_result>> results(
      n, caf::expected<module_put_result>{module_put_result{}});
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
      threads.emplace_back([&, i] {
        ++ready;
        while (ready.load() < n)
          std::this_thread::yield();
        results[static_cast<size_t>(i)]
          = stores[static_cast<size_t>(i)]->put_module(m, bytes, module_event("trace-race"));
      });
    for (auto& t : threads)
      t.join();
    int created = 0;
    for (auto& r : results) {
      if (!r)
        CAF_FAIL("concurrent put_module failed: " << render(r.error()));
      if (r->created)
        ++created;
      CAF_CHECK_EQUAL(r->record.digest, m.digest);
    }
    CAF_CHECK_EQUAL(created, 1);
    CAF_CHECK_EQUAL(audit_by_trace(*stores[0], "trace-race").size(), 1u);
    auto stored = MUST(stores[0]->module_bytes("race", "1.0.0"));
    CAF_REQUIRE(stored.has_value());
    CAF_CHECK(*stored == bytes);
  });
}

CAF_TEST(a module version with other bytes conflicts and leaves the stored one unchanged) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    auto bytes = binary_bytes();
    auto m = module("echo", "1.0.0", bytes, 1000);
    auto first = MUST(s->put_module(m, bytes, module_event("trace-1st")));
    CAF_CHECK(first.created);
    auto other = big_bytes(4096, 1);
    auto m2 = module("echo", "1.0.0", other, 2000);
    m2.description = "impostor";
    auto r = s->put_module(m2, other, module_event("trace-other"));
    CAF_REQUIRE(!r);
    CAF_CHECK_EQUAL(code_of(r), "conflict");
    auto msg = error_detail(r.error());
    CAF_MESSAGE("conflict: " << msg);
    CAF_CHECK(msg.find("echo 1.0.0") != std::string::npos);
    CAF_CHECK(msg.find(m.digest) != std::string::npos);
    CAF_CHECK(msg.find("immutable") != std::string::npos);
    // Nothing changed, no audit event for the attempt.
    auto got = MUST(s->get_module("echo", "1.0.0"));
    CAF_REQUIRE(got.has_value());
    check_same_module(*got, first.record);
    auto stored = MUST(s->module_bytes("echo", "1.0.0"));
    CAF_REQUIRE(stored.has_value());
    CAF_CHECK(*stored == bytes);
    CAF_CHECK(audit_by_trace(*s, "trace-other").empty());
    CAF_CHECK_EQUAL(MUST(s->list_modules("")).size(), 1u);
    // Another version of the same module is fine.
    auto m3 = module("echo", "1.0.1", other, 3000);
    CAF_CHECK(MUST(s->put_module(m3, other, module_event("trace-101"))).created);
  });
}

CAF_TEST(modules list by name or all ordered by name then upload time) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    CAF_CHECK(MUST(s->list_modules("")).empty());
    CAF_CHECK(MUST(s->list_modules("echo")).empty());
    struct spec {
      const char* name;
      const char* version;
      millis at;
    };
    // Upload time, not version text, orders one module's versions; equal
    // times fall back to the version.
    spec specs[] = {
      {"echo", "2.0.0", 3000},  {"slow", "1.0.0", 1000}, {"echo", "10.0.0", 5000},
      {"echo", "1.0.0", 2000},  {"Zeta", "1.0.0", 9000}, {"echo-2", "1.0.0", 1},
      {"echo", "1.5.0", 3000},
    };
    for (auto& sp : specs) {
      auto bytes = std::string{sp.name} + "/" + sp.version;
      MUST(s->put_module(module(sp.name, sp.version, bytes, sp.at), bytes,
                         module_event("trace-list")));
    }
    CAF_CHECK_EQUAL(versions(MUST(s->list_modules("echo"))),
                    "echo@1.0.0,echo@1.5.0,echo@2.0.0,echo@10.0.0");
    CAF_CHECK_EQUAL(versions(MUST(s->list_modules(""))),
                    "Zeta@1.0.0,echo@1.0.0,echo@1.5.0,echo@2.0.0,echo@10.0.0,echo-2@1.0.0,"
                    "slow@1.0.0");
    CAF_CHECK_EQUAL(versions(MUST(s->list_modules("slow"))), "slow@1.0.0");
    CAF_CHECK(MUST(s->list_modules("ech")).empty());
    CAF_CHECK(MUST(s->list_modules("ECHO")).empty()); // names are case-sensitive
    auto all = MUST(s->list_modules(""));
    CAF_REQUIRE_EQUAL(all.size(), 7u);
    CAF_CHECK_EQUAL(all[1].digest, digest_of("echo/1.0.0"));
    CAF_CHECK_EQUAL(all[1].size, 10);
    CAF_CHECK_EQUAL(all[1].abi_token, "hotswap-abi-1;caf-0.17.6;gcc-12");
    CAF_CHECK(all[1].is_signed);
  });
}

CAF_TEST(absent modules are not found) {
  for_each_backend([](backend& b) {
    auto s = b.open_migrated();
    CAF_CHECK(!MUST(s->get_module("echo", "1.0.0")).has_value());
    CAF_CHECK(!MUST(s->module_bytes("echo", "1.0.0")).has_value());
    auto bytes = std::string{"\x7f" "ELF"};
    MUST(s->put_module(module("echo", "1.0.0", bytes, 1), bytes, module_event("t")));
    CAF_CHECK(!MUST(s->get_module("echo", "1.0.1")).has_value());
    CAF_CHECK(!MUST(s->module_bytes("echo", "1.0.1")).has_value());
    CAF_CHECK(!MUST(s->get_module("ECHO", "1.0.0")).has_value());
    CAF_CHECK(!MUST(s->module_bytes("other", "1.0.0")).has_value());
  });
}

// -- PostgreSQL connection handling -----------------------------------------------

CAF_TEST(an unreachable PostgreSQL server gives unavailable) {
  auto url = "postgresql://postgres@127.0.0.1:" + std::to_string(closed_port()) + "/postgres";
  auto s = open_store(url);
  CAF_REQUIRE(!s);
  CAF_CHECK_EQUAL(code_of(s), "unavailable");
  CAF_MESSAGE("error: " << render(s.error()));
  CAF_CHECK(error_detail(s.error()).find("PostgreSQL unavailable") != std::string::npos);
}

CAF_TEST(a dropped PostgreSQL connection is re-established) {
  if (!pg_configured())
    return;
  pg_backend b;
  auto s = b.open_migrated();
  auto c = MUST(s->claim("tenant", "acme", "node-a"));
  MUST(s->put(snapshot(c, R"({"v":1})"), event("X")));
  // Reads retry once after a reset: the first read after the cut succeeds.
  b.terminate_sessions();
  auto got = s->get("tenant", "acme");
  CAF_CHECK_EQUAL(code_of(got), "ok");
  // A write after a cut may report unavailable once (it could have been
  // applied), then the next call reconnects and re-prepares.
  b.terminate_sessions();
  auto snap = snapshot(c, R"({"v":2})");
  auto first = s->put(snap, event("X"));
  CAF_MESSAGE("first write after the cut: " << code_of(first));
  CAF_CHECK(code_of(first) == "ok" || code_of(first) == "unavailable");
  if (!first)
    CAF_CHECK_EQUAL(MUST(s->put(snap, event("X"))), 2);
  CAF_CHECK_EQUAL(must_get(*s, "tenant", "acme").body, R"({"v":2})");
  // Now every statement is prepared: a cut before an already prepared write
  // reports unavailable (never a crash, never a silent retry), and the next
  // call recovers.
  b.terminate_sessions();
  snap.body = R"({"v":3})";
  auto third = s->put(snap, event("X"));
  CAF_MESSAGE("prepared write after the cut: " << code_of(third)
                                               << (third ? "" : " " + render(third.error())));
  CAF_CHECK(code_of(third) == "ok" || code_of(third) == "unavailable");
  if (!third)
    MUST(s->put(snap, event("X")));
  CAF_CHECK_EQUAL(must_get(*s, "tenant", "acme").body, R"({"v":3})");
  MUST_OK(s->ping());
}

CAF_TEST(an in-memory sqlite store works) {
  auto s = MUST(open_store("sqlite://:memory:"));
  CAF_CHECK_EQUAL(MUST(s->migrate()), MUST(s->schema_version()));
  auto c = MUST(s->claim("tenant", "acme", "node-a"));
  CAF_CHECK_EQUAL(MUST(s->put(snapshot(c, "{}"), event("X"))), 1);
  CAF_CHECK(MUST(s->get("tenant", "acme")).has_value());
}

// -- the store as an actor --------------------------------------------------------

namespace {

struct fixture : test_coordinator_fixture<test_config> {
  template <class T, class... Ts>
  caf::expected<T> ask(const store_actor& a, Ts&&... xs) {
    auto rh = self->request(a, caf::infinite, std::forward<Ts>(xs)...);
    run();
    caf::expected<T> out{caf::make_error(errc::internal, "no response")};
    rh.receive([&](T& x) { out = std::move(x); }, [&](caf::error& e) { out = std::move(e); });
    return out;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(store_actor_tests, fixture)

CAF_TEST(the store worker answers requests on the deterministic scheduler) {
  for_each_backend([this](backend& b) {
    auto w = spawn_store_worker(sys, b.open_migrated(), nullptr, false);
    CAF_CHECK_EQUAL(code_of(ask<ok_atom>(w, ping_atom::value)), "ok");
    auto c = MUST((ask<claim_result>(w, claim_atom::value, std::string{"tenant"},
                                     std::string{"acme"}, std::string{"node-a"})));
    CAF_CHECK_EQUAL(c.epoch, 1);
    auto seq = MUST(ask<int64_t>(w, put_atom::value, snapshot(c, R"({"v":1})"),
                                 event("TenantCreated")));
    CAF_CHECK_EQUAL(seq, 1);
    auto got = MUST((ask<snapshot_record>(w, get_atom::value, std::string{"tenant"},
                                          std::string{"acme"})));
    CAF_CHECK_EQUAL(got.body, R"({"v":1})");
    auto missing = ask<snapshot_record>(w, get_atom::value, std::string{"tenant"},
                                        std::string{"nope"});
    CAF_CHECK_EQUAL(code_of(missing), "not_found");
    // Fenced writes arrive as errc::fenced.
    MUST((ask<claim_result>(w, claim_atom::value, std::string{"tenant"}, std::string{"acme"},
                            std::string{"node-b"})));
    auto fenced = ask<int64_t>(w, put_atom::value, snapshot(c, "{}"), event("X"));
    CAF_CHECK_EQUAL(code_of(fenced), "fenced");
    snapshot_query q;
    q.kind = "tenant";
    CAF_CHECK_EQUAL(MUST(ask<std::vector<snapshot_record>>(w, list_atom::value, q)).size(), 1u);
    audit_query aq;
    aq.entity_id = "acme";
    CAF_CHECK_EQUAL(MUST(ask<std::vector<audit_event>>(w, audit_atom::value, aq)).size(), 1u);
    CAF_CHECK_GREATER(MUST(ask<int64_t>(w, audit_atom::value, event("Login"))), 0);
    CAF_CHECK_EQUAL(code_of(ask<ok_atom>(w, user_atom::value, create_atom::value,
                                         user("u-1", "alice"), user_event("UserCreated"))),
                    "ok");
    CAF_CHECK_EQUAL(MUST(ask<user_record>(w, user_atom::value, name_atom::value,
                                          std::string{"ALICE"}))
                      .id,
                    "u-1");
    CAF_CHECK_EQUAL(code_of(ask<user_record>(w, user_atom::value, get_atom::value,
                                             std::string{"u-9"})),
                    "not_found");
    CAF_CHECK_EQUAL(MUST(ask<int64_t>(w, user_atom::value, count_atom::value)), 1);
    signing_key k{"kid-1", "secret", 1, 0};
    CAF_CHECK_EQUAL(MUST(ask<std::vector<signing_key>>(w, key_atom::value, put_atom::value, k))
                      .size(),
                    1u);
    caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    run();
  });
}

CAF_TEST(the store worker serves module artifacts on the deterministic scheduler) {
  for_each_backend([this](backend& b) {
    auto w = spawn_store_worker(sys, b.open_migrated(), nullptr, false);
    auto bytes = binary_bytes() + big_bytes(5 * 1024 * 1024, 3);
    auto m = module("echo", "1.0.0", bytes, 1000);
    auto put = MUST((ask<module_put_result>(w, module_atom::value, put_atom::value, m, bytes,
                                            module_event("trace-actor"))));
    CAF_CHECK(put.created);
    check_same_module(put.record, m);
    auto retry = MUST((ask<module_put_result>(w, module_atom::value, put_atom::value, m, bytes,
                                              module_event("trace-actor-retry"))));
    CAF_CHECK(!retry.created);
    auto other = std::string{"other bytes"};
    auto conflict = ask<module_put_result>(w, module_atom::value, put_atom::value,
                                           module("echo", "1.0.0", other, 2000), other,
                                           module_event("trace-actor-conflict"));
    CAF_CHECK_EQUAL(code_of(conflict), "conflict");
    auto got = MUST((ask<module_record>(w, module_atom::value, get_atom::value,
                                        std::string{"echo"}, std::string{"1.0.0"})));
    check_same_module(got, m);
    auto blob = MUST((ask<std::string>(w, module_atom::value, blob_atom::value,
                                       std::string{"echo"}, std::string{"1.0.0"})));
    CAF_CHECK_EQUAL(blob.size(), bytes.size());
    CAF_CHECK(blob == bytes);
    CAF_CHECK_EQUAL(code_of(ask<module_record>(w, module_atom::value, get_atom::value,
                                               std::string{"echo"}, std::string{"9.9.9"})),
                    "not_found");
    CAF_CHECK_EQUAL(code_of(ask<std::string>(w, module_atom::value, blob_atom::value,
                                             std::string{"nope"}, std::string{"1.0.0"})),
                    "not_found");
    auto m2 = module("echo", "2.0.0", other, 3000);
    MUST((ask<module_put_result>(w, module_atom::value, put_atom::value, m2, other,
                                 module_event("trace-actor-2"))));
    auto m3 = module("alpha", "0.1.0", other, 5000);
    MUST((ask<module_put_result>(w, module_atom::value, put_atom::value, m3, other,
                                 module_event("trace-actor-3"))));
    CAF_CHECK_EQUAL(versions(MUST((ask<std::vector<module_record>>(
                      w, module_atom::value, list_atom::value, std::string{"echo"})))),
                    "echo@1.0.0,echo@2.0.0");
    CAF_CHECK_EQUAL(versions(MUST((ask<std::vector<module_record>>(
                      w, module_atom::value, list_atom::value, std::string{})))),
                    "alpha@0.1.0,echo@1.0.0,echo@2.0.0");
    CAF_CHECK(MUST((ask<std::vector<module_record>>(w, module_atom::value, list_atom::value,
                                                    std::string{"nope"})))
                .empty());
    audit_query aq;
    aq.category = "Module";
    CAF_CHECK_EQUAL(MUST(ask<std::vector<audit_event>>(w, audit_atom::value, aq)).size(), 3u);
    caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    run();
  });
}

CAF_TEST_FIXTURE_SCOPE_END()

CAF_TEST(the store pool serves requests and stops all workers on exit) {
  for_each_backend([](backend& b) {
    test_config cfg;
    cfg.set("scheduler.max-threads", 2);
    caf::actor_system sys{cfg};
    CAF_CHECK_EQUAL(sys.render(caf::make_error(errc::fenced, "tenant/acme")),
                    "hotswap: fenced (tenant/acme)");
    node_metrics metrics;
    auto pool = spawn_store_pool(sys, b.url(), 3, &metrics);
    if (!pool)
      CAF_FAIL("spawn_store_pool failed: " << render(pool.error()));
    caf::scoped_actor self{sys};
    auto ask_put = [&](const snapshot_record& s) {
      caf::expected<int64_t> out{0};
      self->request(*pool, std::chrono::seconds(30), put_atom::value, s, event("X"))
        .receive([&](int64_t seq) { out = seq; }, [&](caf::error& e) { out = std::move(e); });
      return out;
    };
    claim_result c;
    self->request(*pool, std::chrono::seconds(30), claim_atom::value, std::string{"tenant"},
                  std::string{"acme"}, std::string{"node-a"})
      .receive([&](claim_result& x) { c = std::move(x); },
               [&](caf::error& e) { CAF_FAIL("claim failed: " << render(e)); });
    CAF_CHECK_EQUAL(c.epoch, 1);
    // Round robin over 3 workers: each of them writes once.
    for (int i = 1; i <= 3; ++i)
      CAF_CHECK_EQUAL(MUST(ask_put(snapshot(c, "{\"v\":" + std::to_string(i) + "}"))), i);
    auto stale = c;
    stale.epoch = 0;
    CAF_CHECK_EQUAL(code_of(ask_put(snapshot(stale, "{}"))), "fenced");
    CAF_CHECK_EQUAL(metrics.fenced_writes().Value(), 1.0);
    CAF_CHECK_EQUAL(metrics.snapshot_write_seconds().Collect().histogram.sample_count, 4u);
    // Exit the pool: every worker must go down with it.
    std::vector<caf::actor> workers;
    self->request(caf::actor_cast<caf::actor>(*pool), std::chrono::seconds(30),
                  caf::sys_atom::value, get_atom::value)
      .receive([&](std::vector<caf::actor>& xs) { workers = std::move(xs); },
               [&](caf::error& e) { CAF_FAIL("listing workers failed: " << sys.render(e)); });
    CAF_CHECK_EQUAL(workers.size(), 3u);
    for (auto& w : workers)
      self->monitor(w);
    self->monitor(*pool);
    caf::anon_send_exit(*pool, caf::exit_reason::user_shutdown);
    size_t down = 0;
    bool timed_out = false;
    while (down < workers.size() + 1 && !timed_out)
      self->receive([&](caf::down_msg&) { ++down; },
                    caf::after(std::chrono::seconds(10)) >> [&] { timed_out = true; });
    CAF_CHECK(!timed_out);
    CAF_CHECK_EQUAL(down, workers.size() + 1);
  });
}
