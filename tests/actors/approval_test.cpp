// Approvals: the pure transitions, and the entity actors with their host on
// CAF's deterministic coordinator over a real SQLite store (in memory) and the
// local registry. Deadlines run on the coordinator's virtual clock.
#define CAF_SUITE approval
#include "caf/test/dsl.hpp"

#include <memory>
#include <vector>

#include "hotswap/actors/approval.hpp"
#include "hotswap/actors/node.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/store.hpp"
#include "hotswap/runtime/store_actor.hpp"

using namespace hotswap;
using namespace std::chrono_literals;

namespace {

constexpr millis minute = 60 * 1000;
constexpr millis hour = 60 * minute;
constexpr millis day = 24 * hour;

approval pending(millis now, millis timeout = hour) {
  approval a;
  a.approval_id = "ap-1";
  a.execution_id = "d-1";
  a.module_name = "billing";
  a.version = "1.2.0";
  a.environment = "Production";
  a.requester_email = "alice@acme.io";
  a.requested_by = "alice";
  a.requested_by_id = "u-alice";
  a.tenant_id = "t-1";
  a.requested_at = now;
  a.timeout_at = now + timeout;
  a.separation_of_duties = true;
  return a;
}

approval_decision by(std::string user_id, std::string username, bool approve = true) {
  approval_decision d;
  d.approve = approve;
  d.user_id = std::move(user_id);
  d.username = std::move(username);
  d.approver_email = d.username + "@acme.io";
  d.reason = approve ? "looks good" : "not now";
  return d;
}

struct test_config : caf::actor_system_config {
  test_config() {
    register_types(*this);
  }
};

using received = std::shared_ptr<std::vector<approval>>;

approval_listener::behavior_type recorder(approval_listener::pointer, received got) {
  return {
    [=](decided_atom, const std::string& id, const approval& a) {
      CAF_CHECK_EQUAL(id, a.execution_id);
      got->push_back(a);
    },
  };
}

struct fixture : test_coordinator_fixture<test_config> {
  store_actor store;
  registry_actor registry;
  approval_host_actor host;
  approval_listener listener;
  received got = std::make_shared<std::vector<approval>>();
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
    listener = sys.spawn(recorder, got);
    start_host();
  }

  ~fixture() {
    for (auto h : {caf::actor_cast<caf::actor>(host), caf::actor_cast<caf::actor>(listener),
                   caf::actor_cast<caf::actor>(registry), caf::actor_cast<caf::actor>(store)})
      caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    sched.run();
  }

  void start_host() {
    host = spawn_approval_host(sys, env);
    caf::anon_send(host, listen_atom::value, listener);
    sched.run();
  }

  request_ctx ctx(std::string user = "bob") {
    return {"u-" + user, user, "", "trace-" + user, "127.0.0.1"};
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

  caf::expected<approval> create(const approval& a) {
    return ask<approval>(create_atom::value, a.execution_id, a, ctx("alice"));
  }

  caf::expected<approval> get(const std::string& id) {
    return ask<approval>(get_atom::value, id);
  }

  caf::expected<approval> decide_as(const std::string& id, const std::string& user,
                                    bool approve = true) {
    return ask<approval>(decide_atom::value, id, by("u-" + user, user, approve), ctx(user));
  }

  host_stats stats() {
    auto s = ask<host_stats>(stats_atom::value);
    CAF_REQUIRE(s);
    return *s;
  }

  snapshot_record stored(const std::string& id) {
    snapshot_record out;
    auto rh = self->request(store, caf::infinite, get_atom::value, std::string{"approval"}, id);
    sched.run();
    rh.receive([&](snapshot_record& r) { out = r; }, [&](caf::error&) {});
    return out;
  }

  approval stored_approval(const std::string& id) {
    approval a;
    CAF_CHECK(from_json(stored(id).body, a));
    return a;
  }

  std::vector<snapshot_record> listed(const std::string& status) {
    snapshot_query q;
    q.kind = "approval";
    q.status = status;
    std::vector<snapshot_record> out;
    auto rh = self->request(store, caf::infinite, list_atom::value, q);
    sched.run();
    rh.receive([&](std::vector<snapshot_record>& rs) { out = rs; }, [&](caf::error&) {});
    return out;
  }

  std::vector<audit_event> audit_for(const std::string& id) {
    audit_query q;
    q.entity_kind = "approval";
    q.entity_id = id;
    q.page_size = 100;
    std::vector<audit_event> out;
    auto rh = self->request(store, caf::infinite, audit_atom::value, q);
    sched.run();
    rh.receive([&](std::vector<audit_event>& evs) { out = evs; }, [&](caf::error&) {});
    return out;
  }

  bool has_action(const std::string& id, const std::string& action) {
    for (auto& ev : audit_for(id))
      if (ev.action == action)
        return true;
    return false;
  }
};

} // namespace

// -- pure functions -----------------------------------------------------------------------

CAF_TEST(time remaining reads days and hours then hours and minutes then minutes) {
  millis now = 1'700'000'000'000;
  CAF_CHECK_EQUAL(time_remaining(now, now + 2 * day + 3 * hour + 59 * minute), "2d 3h");
  CAF_CHECK_EQUAL(time_remaining(now, now + day), "1d 0h");
  CAF_CHECK_EQUAL(time_remaining(now, now + 5 * hour + 7 * minute + 30000), "5h 7m");
  CAF_CHECK_EQUAL(time_remaining(now, now + hour), "1h 0m");
  CAF_CHECK_EQUAL(time_remaining(now, now + 42 * minute + 59000), "42m");
  CAF_CHECK_EQUAL(time_remaining(now, now + 59000), "0m");
  CAF_CHECK_EQUAL(time_remaining(now, now + 1), "0m");
  CAF_CHECK_EQUAL(time_remaining(now, now), "Expired");
  CAF_CHECK_EQUAL(time_remaining(now, now - minute), "Expired");
}

CAF_TEST(an approval round trips through its persisted json) {
  auto a = pending(1'700'000'000'123);
  a.status = "Rejected";
  a.responded_at = 1'700'000'100'456;
  a.responded_by = "bob";
  a.approver_email = "bob@acme.io";
  a.response_reason = "not \"now\"";
  approval back;
  CAF_REQUIRE(from_json(to_json(a), back));
  CAF_CHECK_EQUAL(to_json(back), to_json(a));
  CAF_CHECK_EQUAL(back.requested_by_id, "u-alice");
  CAF_CHECK_EQUAL(back.responded_at, a.responded_at);
  CAF_CHECK(back.separation_of_duties);
  CAF_CHECK(!from_json("[]", back));
  CAF_CHECK(!from_json("not json", back));
}

CAF_TEST(the api views show the documented fields) {
  auto a = pending(1'700'000'000'000, 90 * minute);
  auto view = to_view_json(a);
  for (auto key : {"approvalId", "deploymentExecutionId", "moduleName", "version",
                   "targetEnvironment", "requesterEmail", "status", "requestedAt",
                   "respondedAt", "respondedBy", "responseReason", "timeoutAt"})
    CAF_CHECK(view.find(std::string{"\""} + key + "\":") != std::string::npos);
  CAF_CHECK(view.find("\"respondedAt\":null") != std::string::npos);
  CAF_CHECK(view.find("\"timeoutAt\":\"2023-11-14T23:43:20.000Z\"") != std::string::npos);
  auto item = to_pending_json(a, a.requested_at);
  CAF_CHECK(item.find("\"timeRemaining\":\"1h 30m\"") != std::string::npos);
  CAF_CHECK(item.find("\"status\"") == std::string::npos);
}

CAF_TEST(deciding follows status deadline and separation of duties) {
  millis now = 1'700'000'000'000;
  auto a = pending(now);
  auto ok = decide(a, by("u-bob", "bob"), now + 1000);
  CAF_REQUIRE_EQUAL(ok.kind, approval_transition::changed);
  CAF_CHECK_EQUAL(ok.next.status, "Approved");
  CAF_CHECK_EQUAL(ok.next.responded_by, "bob");
  CAF_CHECK_EQUAL(ok.next.responded_at, now + 1000);
  CAF_CHECK_EQUAL(ok.action, "ApprovalGranted");
  auto no = decide(a, by("u-bob", "bob", false), now);
  CAF_CHECK_EQUAL(no.next.status, "Rejected");
  CAF_CHECK_EQUAL(no.action, "ApprovalRejected");
  auto twice = decide(ok.next, by("u-carol", "carol"), now);
  CAF_CHECK_EQUAL(twice.kind, approval_transition::refused);
  CAF_CHECK_EQUAL(twice.code, errc::conflict);
  auto late = decide(a, by("u-bob", "bob"), a.timeout_at);
  CAF_CHECK_EQUAL(late.kind, approval_transition::refused);
  CAF_CHECK_EQUAL(late.code, errc::conflict);
  auto own = decide(a, by("u-alice", "alice"), now);
  CAF_CHECK_EQUAL(own.kind, approval_transition::refused);
  CAF_CHECK_EQUAL(own.code, errc::forbidden);
  a.separation_of_duties = false;
  CAF_CHECK_EQUAL(decide(a, by("u-alice", "alice"), now).kind, approval_transition::changed);
}

CAF_TEST(only a pending approval past its deadline expires) {
  millis now = 1'700'000'000'000;
  auto a = pending(now);
  CAF_CHECK_EQUAL(expire(a, a.timeout_at - 1).kind, approval_transition::unchanged);
  auto ex = expire(a, a.timeout_at);
  CAF_REQUIRE_EQUAL(ex.kind, approval_transition::changed);
  CAF_CHECK_EQUAL(ex.next.status, "Expired");
  CAF_CHECK_EQUAL(ex.action, "ApprovalExpired");
  CAF_CHECK_EQUAL(expire(ex.next, a.timeout_at + day).kind, approval_transition::unchanged);
}

// -- actors -----------------------------------------------------------------------------------

CAF_TEST_FIXTURE_SCOPE(approval_tests, fixture)

CAF_TEST(a created approval is persisted pending with its audit event) {
  auto a = pending(now_millis());
  a.approval_id.clear();
  auto r = create(a);
  CAF_REQUIRE(r);
  CAF_CHECK_EQUAL(r->status, "Pending");
  CAF_CHECK_EQUAL(r->approval_id.size(), 36u);
  auto row = stored("d-1");
  CAF_CHECK_EQUAL(row.status, "Pending");
  CAF_CHECK_EQUAL(row.tenant_id, "t-1");
  CAF_CHECK_EQUAL(row.epoch, 1);
  auto back = stored_approval("d-1");
  CAF_CHECK_EQUAL(back.approval_id, r->approval_id);
  CAF_CHECK_EQUAL(back.timeout_at, a.timeout_at);
  CAF_CHECK_EQUAL(listed("Pending").size(), 1u);
  auto evs = audit_for("d-1");
  CAF_REQUIRE_EQUAL(evs.size(), 1u);
  CAF_CHECK_EQUAL(evs[0].category, "Approval");
  CAF_CHECK_EQUAL(evs[0].action, "ApprovalRequested");
  CAF_CHECK_EQUAL(evs[0].actor_user, "alice");
  CAF_CHECK_EQUAL(evs[0].trace_id, "trace-alice");
  CAF_CHECK_EQUAL(evs[0].tenant_id, "t-1");
  CAF_CHECK_EQUAL(stats().active, 1); // pending: waits for its deadline
}

CAF_TEST(creating an existing approval returns it unchanged) {
  auto first = create(pending(now_millis()));
  CAF_REQUIRE(first);
  auto other = pending(now_millis(), 2 * hour);
  other.approval_id = "ap-2";
  auto again = create(other);
  CAF_REQUIRE(again);
  CAF_CHECK_EQUAL(again->approval_id, "ap-1");
  CAF_CHECK_EQUAL(again->timeout_at, first->timeout_at);
  CAF_CHECK_EQUAL(audit_for("d-1").size(), 1u);
  CAF_CHECK_EQUAL(stored("d-1").seq, 1);
}

CAF_TEST(reading an unknown approval is not found) {
  auto r = get("nope");
  CAF_REQUIRE(!r);
  CAF_CHECK_EQUAL(errc_of(r.error()), errc::not_found);
  CAF_CHECK_EQUAL(error_detail(r.error()), "No approval for deployment nope.");
  auto d = decide_as("nope", "bob");
  CAF_REQUIRE(!d);
  CAF_CHECK_EQUAL(errc_of(d.error()), errc::not_found);
  CAF_CHECK_EQUAL(stats().activations, 0);
}

CAF_TEST(an approval by another user is persisted reported and stops the approval) {
  CAF_REQUIRE(create(pending(now_millis())));
  auto r = decide_as("d-1", "bob");
  CAF_REQUIRE(r);
  CAF_CHECK_EQUAL(r->status, "Approved");
  CAF_CHECK_EQUAL(r->responded_by, "bob");
  CAF_CHECK_EQUAL(r->approver_email, "bob@acme.io");
  CAF_CHECK_EQUAL(r->response_reason, "looks good");
  CAF_CHECK_EQUAL(stored("d-1").status, "Approved");
  CAF_CHECK_EQUAL(stored_approval("d-1").responded_by, "bob");
  CAF_CHECK(has_action("d-1", "ApprovalGranted"));
  CAF_REQUIRE_EQUAL(got->size(), 1u);
  CAF_CHECK_EQUAL(got->at(0).status, "Approved");
  CAF_CHECK_EQUAL(stats().active, 0);
  CAF_CHECK_EQUAL(stored("d-1").owner_node, ""); // passivated: ownership released
  CAF_CHECK(listed("Pending").empty());
}

CAF_TEST(a rejection is persisted and reported) {
  CAF_REQUIRE(create(pending(now_millis())));
  auto r = decide_as("d-1", "bob", false);
  CAF_REQUIRE(r);
  CAF_CHECK_EQUAL(r->status, "Rejected");
  CAF_CHECK_EQUAL(stored("d-1").status, "Rejected");
  CAF_CHECK(has_action("d-1", "ApprovalRejected"));
  CAF_REQUIRE_EQUAL(got->size(), 1u);
  CAF_CHECK_EQUAL(got->at(0).status, "Rejected");
}

CAF_TEST(a decided approval cannot be decided again) {
  CAF_REQUIRE(create(pending(now_millis())));
  CAF_REQUIRE(decide_as("d-1", "bob"));
  auto again = decide_as("d-1", "carol", false);
  CAF_REQUIRE(!again);
  CAF_CHECK_EQUAL(errc_of(again.error()), errc::conflict);
  CAF_CHECK_EQUAL(stored("d-1").status, "Approved");
  CAF_CHECK_EQUAL(got->size(), 1u);
  CAF_CHECK_EQUAL(audit_for("d-1").size(), 2u);
}

CAF_TEST(the requester cannot decide under separation of duties) {
  CAF_REQUIRE(create(pending(now_millis())));
  auto own = decide_as("d-1", "alice");
  CAF_REQUIRE(!own);
  CAF_CHECK_EQUAL(errc_of(own.error()), errc::forbidden);
  CAF_CHECK_EQUAL(stored("d-1").status, "Pending");
  CAF_CHECK_EQUAL(audit_for("d-1").size(), 1u);
  CAF_CHECK(got->empty());
  CAF_CHECK_EQUAL(stats().active, 1);
}

CAF_TEST(the requester may approve without separation of duties) {
  auto a = pending(now_millis());
  a.separation_of_duties = false;
  CAF_REQUIRE(create(a));
  auto own = decide_as("d-1", "alice");
  CAF_REQUIRE(own);
  CAF_CHECK_EQUAL(own->status, "Approved");
  CAF_CHECK_EQUAL(own->responded_by, "alice");
}

CAF_TEST(a pending approval expires at its deadline on the actor clock) {
  CAF_REQUIRE(create(pending(now_millis(), 10 * minute)));
  sched.advance_time(9min);
  sched.run();
  CAF_CHECK_EQUAL(stored("d-1").status, "Pending");
  CAF_CHECK(got->empty());
  sched.advance_time(1min);
  sched.run();
  CAF_CHECK_EQUAL(stored("d-1").status, "Expired");
  CAF_CHECK(has_action("d-1", "ApprovalExpired"));
  for (auto& ev : audit_for("d-1"))
    if (ev.action == "ApprovalExpired")
      CAF_CHECK_EQUAL(ev.actor_user, "system");
  CAF_REQUIRE_EQUAL(got->size(), 1u);
  CAF_CHECK_EQUAL(got->at(0).status, "Expired");
  CAF_CHECK_EQUAL(stats().active, 0);
  // Deciding it afterwards is a conflict.
  auto late = decide_as("d-1", "bob");
  CAF_REQUIRE(!late);
  CAF_CHECK_EQUAL(errc_of(late.error()), errc::conflict);
  CAF_CHECK_EQUAL(stored("d-1").status, "Expired");
}

CAF_TEST(deciding past the deadline expires the approval first and is a conflict) {
  // Already overdue: its timer is armed but the virtual clock has not moved.
  CAF_REQUIRE(create(pending(now_millis(), -minute)));
  CAF_CHECK_EQUAL(stored("d-1").status, "Pending");
  auto r = decide_as("d-1", "bob");
  CAF_REQUIRE(!r);
  CAF_CHECK_EQUAL(errc_of(r.error()), errc::conflict);
  CAF_CHECK_EQUAL(error_detail(r.error()), "The approval for deployment d-1 has expired.");
  CAF_CHECK_EQUAL(stored("d-1").status, "Expired");
  CAF_REQUIRE_EQUAL(got->size(), 1u);
  CAF_CHECK_EQUAL(got->at(0).status, "Expired");
  // The stale timer finds nothing left to do.
  sched.trigger_timeouts();
  sched.run();
  CAF_CHECK_EQUAL(got->size(), 1u);
  CAF_CHECK_EQUAL(audit_for("d-1").size(), 2u);
}

CAF_TEST(a pending approval keeps its deadline across a host restart) {
  auto a = pending(now_millis(), 30 * minute);
  CAF_REQUIRE(create(a));
  caf::anon_send_exit(host, caf::exit_reason::kill);
  sched.run();
  start_host();
  CAF_CHECK_EQUAL(stats().active, 0);
  caf::anon_send(host, expire_atom::value, std::string{"d-1"});
  sched.run();
  CAF_CHECK_EQUAL(stats().active, 1);
  auto row = stored("d-1");
  CAF_CHECK_EQUAL(row.epoch, 2);
  CAF_CHECK_EQUAL(row.status, "Pending");
  CAF_CHECK_EQUAL(stored_approval("d-1").timeout_at, a.timeout_at);
  sched.advance_time(30min);
  sched.run();
  CAF_CHECK_EQUAL(stored("d-1").status, "Expired");
  CAF_CHECK_EQUAL(stored("d-1").epoch, 2);
  CAF_REQUIRE_EQUAL(got->size(), 1u);
  CAF_CHECK_EQUAL(got->at(0).status, "Expired");
  CAF_CHECK_EQUAL(got->at(0).timeout_at, a.timeout_at);
}

CAF_TEST(resuming an unknown approval creates nothing) {
  caf::anon_send(host, expire_atom::value, std::string{"nope"});
  sched.run();
  CAF_CHECK_EQUAL(stats().activations, 0);
  CAF_CHECK_EQUAL(stored("nope").epoch, 0);
}

CAF_TEST(a decided approval reads from its snapshot after passivation) {
  CAF_REQUIRE(create(pending(now_millis(), 10 * minute)));
  CAF_REQUIRE(decide_as("d-1", "bob", false));
  CAF_CHECK_EQUAL(stats().active, 0);
  auto r = get("d-1");
  CAF_REQUIRE(r);
  CAF_CHECK_EQUAL(r->status, "Rejected");
  CAF_CHECK_EQUAL(r->responded_by, "bob");
  CAF_CHECK_EQUAL(stored("d-1").epoch, 2);
  // No deadline is armed for it: passing the old deadline changes nothing,
  // and it passivates once idle.
  sched.advance_time(10min);
  sched.run();
  CAF_CHECK_EQUAL(stored("d-1").status, "Rejected");
  CAF_CHECK_EQUAL(got->size(), 1u);
  CAF_CHECK_EQUAL(stats().active, 1);
  sched.advance_time(3600s);
  sched.run();
  CAF_CHECK_EQUAL(stats().active, 0);
  CAF_CHECK_EQUAL(audit_for("d-1").size(), 2u);
}

CAF_TEST(passivation stops pending approvals and a new activation re-arms them) {
  CAF_REQUIRE(create(pending(now_millis(), 5 * minute)));
  CAF_CHECK(ask<ok_atom>(passivate_atom::value));
  CAF_CHECK_EQUAL(stats().active, 0);
  CAF_CHECK_EQUAL(stored("d-1").owner_node, "");
  sched.advance_time(5min);
  sched.run();
  CAF_CHECK_EQUAL(stored("d-1").status, "Pending"); // nobody owns it on this host
  caf::anon_send_exit(host, caf::exit_reason::user_shutdown);
  sched.run();
  start_host();
  caf::anon_send(host, expire_atom::value, std::string{"d-1"});
  sched.run();
  CAF_CHECK_EQUAL(stats().active, 1);
  sched.advance_time(5min);
  sched.run();
  CAF_CHECK_EQUAL(stored("d-1").status, "Expired");
  CAF_CHECK_EQUAL(got->size(), 1u);
}

CAF_TEST_FIXTURE_SCOPE_END()
