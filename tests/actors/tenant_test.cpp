// Tenant entity actors and their host on CAF's deterministic coordinator,
// over a real SQLite store (in memory) and the local registry.
#define CAF_SUITE tenant
#include "caf/test/dsl.hpp"

#include "hotswap/actors/node.hpp"
#include "hotswap/actors/tenant.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/store_actor.hpp"

using namespace hotswap;
using namespace std::chrono_literals;

namespace {

struct test_config : caf::actor_system_config {
  test_config() {
    register_types(*this);
  }
};

struct fixture : test_coordinator_fixture<test_config> {
  store_actor store;
  registry_actor registry;
  tenant_host_actor host;
  host_env env;

  fixture() {
    auto db = open_store("sqlite://:memory:");
    CAF_REQUIRE(db);
    CAF_REQUIRE((*db)->migrate());
    store = spawn_store_worker(sys, std::move(*db), nullptr, false);
    node_info self_node;
    self_node.id = "node-a";
    registry = spawn_local_registry(sys, self_node);
    env.node_id = "node-a";
    env.store = store;
    env.registry = registry;
    env.restart.backoff_initial = 100ms;
    env.restart.backoff_max = 1s;
    env.restart.intensity = 2;
    env.restart.period = 60s;
    env.idle_timeout = 3600s;
    host = spawn_tenant_host(sys, env);
    sched.run();
  }

  ~fixture() {
    for (auto h : {caf::actor_cast<caf::actor>(host), caf::actor_cast<caf::actor>(registry),
                   caf::actor_cast<caf::actor>(store)})
      caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    sched.run();
  }

  request_ctx ctx() {
    return {"u-1", "admin", "", "trace-1", "127.0.0.1"};
  }

  tenant_spec spec(std::string sub) {
    tenant_spec s;
    s.name = "Acme " + sub;
    s.subdomain = sub;
    s.contact_email = "ops@" + sub + ".io";
    s.tier = 1;
    return s;
  }

  /// Sends a request and runs the coordinator until it is answered.
  template <class T, class... Ts>
  caf::expected<T> ask(Ts&&... xs) {
    caf::expected<T> result{caf::make_error(errc::internal, "no answer")};
    auto rh = self->request(host, caf::infinite, std::forward<Ts>(xs)...);
    sched.run();
    rh.receive([&](T& x) { result = std::move(x); }, [&](caf::error& e) { result = e; });
    return result;
  }

  caf::expected<tenant> create(const std::string& id, const std::string& sub) {
    return ask<tenant>(create_atom::value, id, spec(sub), ctx());
  }

  tenant_actor child(const std::string& id) {
    auto c = ask<tenant_actor>(child_atom::value, id);
    CAF_REQUIRE(c);
    return *c;
  }

  host_stats stats() {
    auto s = ask<host_stats>(stats_atom::value);
    CAF_REQUIRE(s);
    return *s;
  }

  snapshot_record stored(const std::string& id) {
    snapshot_record out;
    auto rh = self->request(store, caf::infinite, get_atom::value, std::string{"tenant"}, id);
    sched.run();
    rh.receive([&](snapshot_record& r) { out = r; }, [&](caf::error&) {});
    return out;
  }

  std::vector<audit_event> audit_for(const std::string& id) {
    audit_query q;
    q.entity_kind = "tenant";
    q.entity_id = id;
    q.page_size = 100;
    std::vector<audit_event> out;
    auto rh = self->request(store, caf::infinite, audit_atom::value, q);
    sched.run();
    rh.receive([&](std::vector<audit_event>& evs) { out = evs; }, [&](caf::error&) {});
    return out;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(tenant_tests, fixture)

CAF_TEST(a created tenant is persisted with its audit event before it is answered) {
  auto t = create("t-1", "acme");
  CAF_REQUIRE(t);
  CAF_CHECK_EQUAL(t->status, "Active");
  CAF_CHECK_EQUAL(t->quota.max_concurrent_deployments, 3);
  auto row = stored("t-1");
  CAF_CHECK_EQUAL(row.status, "Active");
  CAF_CHECK_EQUAL(row.epoch, 1);
  CAF_CHECK_EQUAL(row.unique_key, "acme");
  tenant back;
  CAF_REQUIRE(from_json(row.body, back));
  CAF_CHECK_EQUAL(back.name, "Acme acme");
  auto evs = audit_for("t-1");
  CAF_REQUIRE_EQUAL(evs.size(), 1u);
  CAF_CHECK_EQUAL(evs[0].action, "TenantCreated");
  CAF_CHECK_EQUAL(evs[0].trace_id, "trace-1");
}

CAF_TEST(reading an unknown tenant is not found and creates no row) {
  auto t = ask<tenant>(get_atom::value, std::string{"nope"});
  CAF_REQUIRE(!t);
  CAF_CHECK_EQUAL(errc_of(t.error()), errc::not_found);
  CAF_CHECK_EQUAL(stats().activations, 0);
  CAF_CHECK_EQUAL(stored("nope").epoch, 0);
}

CAF_TEST(a taken subdomain is a conflict regardless of case and leaves no tenant) {
  CAF_REQUIRE(create("t-1", "acme"));
  auto dup = create("t-2", "ACME");
  CAF_REQUIRE(!dup);
  CAF_CHECK_EQUAL(errc_of(dup.error()), errc::conflict);
  CAF_CHECK(stored("t-2").body.empty());
  CAF_CHECK(audit_for("t-2").empty());
  CAF_CHECK_EQUAL(stats().active, 1); // the failed create passivated
}

CAF_TEST(a deleted tenant cannot be activated or suspended but still reads) {
  CAF_REQUIRE(create("t-1", "acme"));
  auto del = ask<tenant>(status_atom::value, std::string{"t-1"}, tenant_op::remove, ctx());
  CAF_REQUIRE(del);
  CAF_CHECK_EQUAL(del->status, "Deleted");
  CAF_CHECK_NOT_EQUAL(del->deleted_at, 0);
  for (auto op : {tenant_op::activate, tenant_op::suspend}) {
    auto r = ask<tenant>(status_atom::value, std::string{"t-1"}, op, ctx());
    CAF_REQUIRE(!r);
    CAF_CHECK_EQUAL(errc_of(r.error()), errc::conflict);
  }
  auto again = ask<tenant>(get_atom::value, std::string{"t-1"});
  CAF_REQUIRE(again);
  CAF_CHECK_EQUAL(again->status, "Deleted");
  // Deleting frees the subdomain.
  CAF_CHECK(create("t-2", "acme"));
}

CAF_TEST(the host restarts a failed tenant from its last snapshot after a backoff) {
  CAF_REQUIRE(create("t-1", "acme"));
  CAF_REQUIRE(ask<tenant>(status_atom::value, std::string{"t-1"}, tenant_op::suspend, ctx()));
  auto c = child("t-1");
  self->send_exit(c, caf::make_error(errc::internal, "boom"));
  sched.run();
  CAF_CHECK_EQUAL(stats().restarts, 1);
  CAF_CHECK_EQUAL(stats().active, 0);
  // A command during the backoff waits for the restart instead of failing.
  auto rh = self->request(host, caf::infinite, get_atom::value, std::string{"t-1"});
  sched.run();
  CAF_CHECK_EQUAL(stats().active, 0);
  sched.advance_time(100ms);
  sched.run();
  rh.receive(
    [&](tenant& t) {
      CAF_CHECK_EQUAL(t.status, "Suspended");
      CAF_CHECK_EQUAL(t.subdomain, "acme");
    },
    [&](caf::error& e) { CAF_FAIL("restarted tenant did not answer: " << sys.render(e)); });
  CAF_CHECK_EQUAL(stats().active, 1);
  CAF_CHECK_EQUAL(stored("t-1").epoch, 2); // re-claimed at a new fencing epoch
  CAF_CHECK(child("t-1") != c);
}

CAF_TEST(the host escalates when restarts exceed the intensity) {
  CAF_REQUIRE(create("t-1", "acme"));
  self->monitor(host);
  // intensity 2: the third failure inside the period escalates.
  for (int i = 0; i < 3; ++i) {
    auto c = child("t-1");
    self->send_exit(c, caf::make_error(errc::internal, "boom"));
    sched.run();
    if (i < 2) {
      sched.advance_time(1s);
      sched.run();
    }
  }
  bool host_down = false;
  self->receive(
    [&](caf::down_msg& dm) {
      host_down = true;
      CAF_CHECK_EQUAL(errc_of(dm.reason), errc::internal);
    },
    caf::after(std::chrono::seconds(0)) >> [] {});
  CAF_CHECK(host_down);
}

CAF_TEST(a tenant whose write is fenced stops and the requester learns why) {
  CAF_REQUIRE(create("t-1", "acme"));
  auto c = child("t-1");
  self->monitor(c);
  // Another node takes over: the store issues it a higher epoch.
  auto rh = self->request(store, caf::infinite, claim_atom::value, std::string{"tenant"},
                          std::string{"t-1"}, std::string{"node-b"});
  sched.run();
  rh.receive([](claim_result& cr) { CAF_CHECK_EQUAL(cr.epoch, 2); },
             [](caf::error&) { CAF_FAIL("claim failed"); });
  auto r = ask<tenant>(status_atom::value, std::string{"t-1"}, tenant_op::suspend, ctx());
  CAF_REQUIRE(!r);
  CAF_CHECK_EQUAL(errc_of(r.error()), errc::fenced);
  bool stopped = false;
  self->receive(
    [&](caf::down_msg& dm) {
      stopped = true;
      CAF_CHECK_EQUAL(errc_of(dm.reason), errc::fenced);
    },
    caf::after(std::chrono::seconds(0)) >> [] {});
  CAF_CHECK(stopped);
  CAF_CHECK_EQUAL(stats().fenced, 1);
  CAF_CHECK_EQUAL(stats().restarts, 0);
  // Nothing the fenced owner tried is in the store.
  CAF_CHECK_EQUAL(stored("t-1").status, "Active");
  CAF_CHECK_EQUAL(audit_for("t-1").size(), 1u);
}

CAF_TEST(passivation stops every tenant and releases ownership) {
  CAF_REQUIRE(create("t-1", "acme"));
  CAF_REQUIRE(create("t-2", "beta"));
  CAF_CHECK_EQUAL(stats().active, 2);
  auto done = ask<ok_atom>(passivate_atom::value);
  CAF_CHECK(done);
  CAF_CHECK_EQUAL(stats().active, 0);
  CAF_CHECK_EQUAL(stored("t-1").owner_node, "");
  CAF_CHECK_EQUAL(stored("t-2").owner_node, "");
  auto after = ask<tenant>(get_atom::value, std::string{"t-1"});
  CAF_REQUIRE(!after);
  CAF_CHECK_EQUAL(errc_of(after.error()), errc::unavailable);
}

CAF_TEST(an idle tenant passivates and reactivates from its snapshot) {
  CAF_REQUIRE(create("t-1", "acme"));
  CAF_CHECK_EQUAL(stats().active, 1);
  sched.advance_time(3600s);
  sched.run();
  CAF_CHECK_EQUAL(stats().active, 0);
  CAF_CHECK_EQUAL(stored("t-1").owner_node, "");
  auto t = ask<tenant>(get_atom::value, std::string{"t-1"});
  CAF_REQUIRE(t);
  CAF_CHECK_EQUAL(t->subdomain, "acme");
  CAF_CHECK_EQUAL(stored("t-1").epoch, 2);
}

CAF_TEST_FIXTURE_SCOPE_END()
