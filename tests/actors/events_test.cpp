// The events hub on CAF's deterministic coordinator with an in-memory event
// log that can be made to fail: order of appends and fan-out, retention of
// events while the log is down, shared logs (fan-out from the tail only),
// flush before shutdown, replay through the log.
#define CAF_SUITE events
#include "caf/test/dsl.hpp"


#include "hotswap/actors/events.hpp"
#include "hotswap/actors/node.hpp"
#include "hotswap/runtime/errc.hpp"

using namespace hotswap;

namespace {

struct test_config : caf::actor_system_config {
  test_config() {
    register_types(*this);
  }
};

/// What the fake log holds, shared with the test (the hub owns the log).
struct memory {
  std::vector<event_record> rows;
  bool down = false;
  size_t appends = 0;
  size_t trims = 0;
};

class memory_log final : public event_log {
public:
  memory_log(std::shared_ptr<memory> m, bool shared) : m_(std::move(m)), shared_(shared) {
  }

  caf::expected<std::vector<event_record>> append(std::vector<event_record> evs) override {
    if (m_->down)
      return caf::make_error(errc::unavailable, "log down");
    ++m_->appends;
    for (auto& ev : evs) {
      ev.id = std::to_string(m_->rows.size() + 1);
      m_->rows.push_back(ev);
    }
    return evs;
  }

  caf::expected<std::vector<event_record>> read_after(const std::string& after, size_t limit,
                                                      int) override {
    auto pos = after.empty() ? std::optional<std::pair<uint64_t, uint64_t>>{{0, 0}}
                             : parse_event_id(after);
    if (!pos)
      return caf::make_error(errc::invalid_argument, "bad id");
    std::vector<event_record> out;
    for (size_t i = pos->first; i < m_->rows.size() && out.size() < limit; ++i)
      out.push_back(m_->rows[i]);
    return out;
  }

  caf::expected<int64_t> trim(millis) override {
    ++m_->trims;
    return int64_t{0};
  }

  caf::expected<std::string> last_id() override {
    return m_->rows.empty() ? std::string{} : m_->rows.back().id;
  }

  bool shared() const override {
    return shared_;
  }

private:
  std::shared_ptr<memory> m_;
  bool shared_;
};

/// A subscriber that records what it receives.
struct sink_state {
  std::vector<event_record> got;
};

caf::behavior sink(caf::stateful_actor<sink_state>* self) {
  return {
    [=](event_atom, const std::vector<event_record>& evs) {
      self->state.got.insert(self->state.got.end(), evs.begin(), evs.end());
    },
  };
}

event_record ev(const std::string& exec, const std::string& status) {
  event_record e;
  e.type = "DeploymentStatusChanged";
  e.execution_id = exec;
  e.status = status;
  e.timestamp = 1;
  return e;
}

struct fixture : test_coordinator_fixture<test_config> {
  std::shared_ptr<memory> mem = std::make_shared<memory>();
  events_actor hub;
  caf::actor subscriber;

  void start(bool shared, size_t max_batch = 500) {
    events_options opts;
    opts.detached_log = false;
    opts.max_batch = max_batch;
    hub = spawn_events_hub(sys, std::make_unique<memory_log>(mem, shared), nullptr, opts,
                           nullptr);
    subscriber = sys.spawn(sink);
    self->send(hub, subscribe_atom::value, subscriber);
    sched.run();
  }

  ~fixture() {
    caf::anon_send_exit(hub, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(subscriber, caf::exit_reason::user_shutdown);
    sched.run();
  }

  std::vector<event_record>& received() {
    return deref<caf::stateful_actor<sink_state>>(subscriber).state.got;
  }

  std::vector<std::string> statuses(const std::vector<event_record>& evs) {
    std::vector<std::string> out;
    for (auto& e : evs)
      out.push_back(e.status);
    return out;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(events_tests, fixture)

CAF_TEST(published events reach the log and the subscribers in publication order) {
  start(false, 2);
  for (auto s : {"Pending", "Running", "Succeeded"})
    self->send(hub, emit_atom::value, ev("d-1", s));
  sched.run();
  using v = std::vector<std::string>;
  CAF_CHECK_EQUAL(statuses(mem->rows), (v{"Pending", "Running", "Succeeded"}));
  CAF_CHECK_EQUAL(statuses(received()), (v{"Pending", "Running", "Succeeded"}));
  CAF_CHECK_EQUAL(received().back().id, "3");
  // At most two per append (max_batch), one append in flight at a time.
  CAF_CHECK_GREATER_OR_EQUAL(mem->appends, 2u);
}

CAF_TEST(events wait in order while the log is down and are appended once it is back) {
  start(false);
  mem->down = true;
  self->send(hub, emit_atom::value, ev("d-1", "Pending"));
  self->send(hub, emit_atom::value, ev("d-1", "Running"));
  sched.run();
  CAF_CHECK(mem->rows.empty());
  CAF_CHECK(received().empty());
  mem->down = false;
  // The retry is a timer of the hub.
  sched.trigger_timeouts();
  sched.run();
  using v = std::vector<std::string>;
  CAF_CHECK_EQUAL(statuses(mem->rows), (v{"Pending", "Running"}));
  CAF_CHECK_EQUAL(statuses(received()), (v{"Pending", "Running"}));
}

CAF_TEST(retention sweeps keep running across a log outage) {
  start(false);
  mem->down = true;
  self->send(hub, emit_atom::value, ev("d-1", "Pending"));
  sched.run();
  // Append retries and retention sweeps are separate timers: neither stops
  // the other.
  for (int i = 0; i < 3; ++i) {
    sched.trigger_timeouts();
    sched.run();
  }
  auto during = mem->trims;
  CAF_CHECK_GREATER_OR_EQUAL(during, 3u);
  CAF_CHECK(mem->rows.empty());
  mem->down = false;
  for (int i = 0; i < 2; ++i) {
    sched.trigger_timeouts();
    sched.run();
  }
  CAF_CHECK_EQUAL(mem->rows.size(), 1u);
  CAF_CHECK_GREATER(mem->trims, during);
}

CAF_TEST(a shared log fans out from the tail only) {
  start(true);
  self->send(hub, emit_atom::value, ev("d-1", "Pending"));
  sched.run();
  CAF_CHECK_EQUAL(mem->rows.size(), 1u);
  CAF_CHECK(received().empty());
  // What the tail reader read (also other nodes' events) is what goes out.
  auto other = ev("d-2", "Running");
  other.id = "2";
  self->send(hub, appended_atom::value, std::vector<event_record>{mem->rows[0], other});
  sched.run();
  CAF_CHECK_EQUAL(received().size(), 2u);
  CAF_CHECK_EQUAL(received()[1].execution_id, "d-2");
}

CAF_TEST(flush answers once everything published before it is in the log) {
  start(false);
  mem->down = true;
  self->send(hub, emit_atom::value, ev("d-1", "Pending"));
  sched.run();
  auto f = self->request(hub, caf::infinite, done_atom::value);
  sched.run();
  CAF_CHECK(self->mailbox().empty()); // the log is down: no answer yet
  mem->down = false;
  sched.trigger_timeouts();
  sched.run();
  CAF_CHECK_EQUAL(mem->rows.size(), 1u);
  bool flushed = false;
  f.receive([&](ok_atom) { flushed = true; }, [](caf::error&) {});
  CAF_CHECK(flushed);
}

CAF_TEST(replay returns the retained events after an id and refuses a bad id) {
  start(false);
  for (auto s : {"Pending", "Running", "Succeeded"})
    self->send(hub, emit_atom::value, ev("d-1", s));
  sched.run();
  auto f = self->request(hub, caf::infinite, replay_atom::value, std::string{"1"},
                         uint32_t{10});
  sched.run();
  std::vector<event_record> got;
  f.receive([&](std::vector<event_record>& evs) { got = std::move(evs); },
            [](caf::error& err) { CAF_FAIL("replay failed: " << caf::to_string(err)); });
  using v = std::vector<std::string>;
  CAF_CHECK_EQUAL(statuses(got), (v{"Running", "Succeeded"}));
  auto g = self->request(hub, caf::infinite, replay_atom::value, std::string{"not-an-id"},
                         uint32_t{10});
  sched.run();
  bool refused = false;
  g.receive([](std::vector<event_record>&) {},
            [&](caf::error& err) { refused = err == errc::invalid_argument; });
  CAF_CHECK(refused);
}

CAF_TEST_FIXTURE_SCOPE_END()
