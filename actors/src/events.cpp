#include "hotswap/actors/events.hpp"

#include <deque>
#include <unordered_set>

#include <boost/json.hpp>

#include "caf/actor_registry.hpp"
#include "caf/event_based_actor.hpp"
#include "caf/send.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/json_util.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/metrics.hpp"
#include "hotswap/runtime/store.hpp"

namespace hotswap {

namespace {

using append_atom = caf::atom_constant<caf::atom("append")>;
using read_atom = caf::atom_constant<caf::atom("read")>;
using trim_atom = caf::atom_constant<caf::atom("trim")>;
using last_atom = caf::atom_constant<caf::atom("last")>;

constexpr auto registry_name = caf::atom("evhub");

std::shared_ptr<spdlog::logger> elog() {
  return logger("events");
}

// -- the log worker (detached: the log's calls block) ------------------------------------

using log_worker_actor = caf::typed_actor<
  caf::replies_to<append_atom, std::vector<event_record>>::with<std::vector<event_record>>,
  caf::replies_to<read_atom, std::string, uint32_t>::with<std::vector<event_record>>,
  caf::replies_to<trim_atom, millis>::with<int64_t>>;

struct log_worker_state {
  std::unique_ptr<event_log> log;
  static inline const char* name = "event_log";
};

log_worker_actor::behavior_type
log_worker(log_worker_actor::stateful_pointer<log_worker_state> self,
           std::shared_ptr<std::unique_ptr<event_log>> log) {
  self->state.log = std::move(*log);
  return {
    [=](append_atom, std::vector<event_record>& evs)
      -> caf::result<std::vector<event_record>> {
      auto r = self->state.log->append(std::move(evs));
      if (!r)
        return std::move(r.error());
      return std::move(*r);
    },
    [=](read_atom, const std::string& after,
        uint32_t limit) -> caf::result<std::vector<event_record>> {
      auto r = self->state.log->read_after(after, limit, 0);
      if (!r)
        return std::move(r.error());
      return std::move(*r);
    },
    [=](trim_atom, millis before) -> caf::result<int64_t> {
      auto r = self->state.log->trim(before);
      if (!r)
        return std::move(r.error());
      return *r;
    },
  };
}

// -- the tail reader of a shared log (detached: XREAD BLOCK) -----------------------------

struct tail_state {
  std::unique_ptr<event_log> log;
  std::string last;
  bool started = false;
  bool down = false;
  static inline const char* name = "event_tail";
};

constexpr int tail_block_ms = 1000;
constexpr auto tail_retry = std::chrono::milliseconds(500);

caf::behavior tail_reader(caf::stateful_actor<tail_state>* self,
                          std::shared_ptr<std::unique_ptr<event_log>> log, events_actor hub) {
  self->state.log = std::move(*log);
  self->send(self, read_atom::value);
  return {
    [=](read_atom) {
      auto& st = self->state;
      if (!st.started) {
        // Live from now: what was appended before this node started is
        // replayed on request, not pushed.
        auto last = st.log->last_id();
        if (!last) {
          if (!st.down)
            elog()->warn("event stream unreachable: {}", error_detail(last.error()));
          st.down = true;
          self->delayed_send(self, tail_retry, read_atom::value);
          return;
        }
        st.last = *last;
        st.started = true;
      }
      auto evs = st.log->read_after(st.last, 500, tail_block_ms);
      if (!evs) {
        if (!st.down)
          elog()->warn("event stream unreachable: {}", error_detail(evs.error()));
        st.down = true;
        self->delayed_send(self, tail_retry, read_atom::value);
        return;
      }
      if (st.down)
        elog()->info("event stream reachable again");
      st.down = false;
      if (!evs->empty()) {
        st.last = evs->back().id;
        self->send(hub, appended_atom::value, std::move(*evs));
      }
      self->send(self, read_atom::value);
    },
  };
}

// -- the hub ------------------------------------------------------------------------------

struct hub_state {
  events_options opts;
  node_metrics* metrics = nullptr;
  log_worker_actor worker;
  bool shared = false;
  std::deque<event_record> pending;
  bool appending = false;
  size_t dropped = 0;
  std::vector<caf::actor> subscribers;
  std::vector<caf::typed_response_promise<ok_atom>> flushes;
  static inline const char* name = "events";
};

using hub_ptr = events_actor::stateful_pointer<hub_state>;

void fan_out(hub_ptr self, std::vector<event_record> evs) {
  auto& st = self->state;
  if (evs.empty() || st.subscribers.empty())
    return;
  // One message shared by every subscriber (no copy per subscriber).
  auto msg = caf::make_message(event_atom::value, std::move(evs));
  for (auto& s : st.subscribers)
    caf::anon_send(s, msg);
}

void flush(hub_ptr self) {
  auto& st = self->state;
  if (!st.appending && st.pending.empty()) {
    for (auto& rp : st.flushes)
      rp.deliver(ok_atom::value);
    st.flushes.clear();
  }
  if (st.appending || st.pending.empty())
    return;
  std::vector<event_record> batch;
  auto n = std::min(st.pending.size(), st.opts.max_batch);
  batch.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    batch.push_back(std::move(st.pending.front()));
    st.pending.pop_front();
  }
  st.appending = true;
  auto retry = batch;
  self->request(st.worker, caf::infinite, append_atom::value, std::move(batch))
    .then(
      [=](std::vector<event_record>& stored) {
        auto& st = self->state;
        st.appending = false;
        if (st.metrics)
          st.metrics->events_published().Increment(static_cast<double>(stored.size()));
        if (!st.shared)
          fan_out(self, std::move(stored));
        flush(self);
      },
      [=](caf::error& err) {
        // Keep the batch at the front and try again shortly: the log (store
        // or Redis) comes back by itself.
        auto& st = self->state;
        st.appending = false;
        elog()->warn("{} events not appended yet: {}", retry.size(), error_detail(err));
        for (auto i = retry.rbegin(); i != retry.rend(); ++i)
          st.pending.push_front(*i);
        self->delayed_send(self, std::chrono::milliseconds(500), resume_atom::value);
      });
}

constexpr auto trim_interval = std::chrono::seconds(60);

events_actor::behavior_type hub(hub_ptr self, events_options opts, log_worker_actor worker,
                                bool shared, node_metrics* metrics) {
  auto& st = self->state;
  st.opts = opts;
  st.worker = worker;
  st.shared = shared;
  st.metrics = metrics;
  self->link_to(worker);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& subs = self->state.subscribers;
    subs.erase(std::remove_if(subs.begin(), subs.end(),
                              [&](const caf::actor& a) { return a.address() == dm.source; }),
               subs.end());
  });
  self->delayed_send(self, trim_interval, tick_atom::value);
  return {
    [=](emit_atom, event_record& ev) {
      auto& st = self->state;
      if (st.pending.size() >= st.opts.max_pending) {
        st.pending.pop_front();
        if (st.dropped++ % 1000 == 0)
          elog()->error("event log unavailable and {} events waiting: dropping the oldest "
                        "({} dropped so far)",
                        st.opts.max_pending, st.dropped);
      }
      st.pending.push_back(std::move(ev));
      flush(self);
    },
    [=](subscribe_atom, caf::actor& sub) {
      auto& subs = self->state.subscribers;
      if (std::find(subs.begin(), subs.end(), sub) == subs.end()) {
        self->monitor(sub);
        subs.push_back(sub);
      }
    },
    [=](unsubscribe_atom, caf::actor& sub) {
      auto& subs = self->state.subscribers;
      subs.erase(std::remove(subs.begin(), subs.end(), sub), subs.end());
      self->demonitor(sub);
    },
    [=](replay_atom, std::string& after, uint32_t limit) {
      return self->delegate(self->state.worker, read_atom::value, std::move(after), limit);
    },
    [=](appended_atom, std::vector<event_record>& evs) { fan_out(self, std::move(evs)); },
    [=](done_atom) -> caf::result<ok_atom> {
      auto& st = self->state;
      if (!st.appending && st.pending.empty())
        return ok_atom::value;
      st.flushes.push_back(self->make_response_promise<ok_atom>());
      return st.flushes.back();
    },
    [=](resume_atom) { flush(self); },
    [=](tick_atom) {
      auto& st = self->state;
      self->delayed_send(self, trim_interval, tick_atom::value);
      auto before = now_millis() - st.opts.retention;
      self->request(st.worker, caf::infinite, trim_atom::value, before)
        .then([](int64_t n) {
                if (n > 0)
                  elog()->debug("trimmed {} events past retention", n);
              },
              [](caf::error& err) { elog()->warn("trimming events: {}", error_detail(err)); });
    },
  };
}

} // namespace

events_actor spawn_events_hub(caf::actor_system& sys, std::unique_ptr<event_log> log,
                              std::unique_ptr<event_log> tail, events_options opts,
                              node_metrics* metrics) {
  bool shared = log->shared();
  auto boxed = std::make_shared<std::unique_ptr<event_log>>(std::move(log));
  auto worker = opts.detached_log ? sys.spawn<caf::detached>(log_worker, boxed)
                                  : sys.spawn(log_worker, boxed);
  auto h = sys.spawn(hub, opts, worker, shared, metrics);
  if (shared && tail && opts.detached_log) {
    auto t = sys.spawn<caf::detached>(
      tail_reader, std::make_shared<std::unique_ptr<event_log>>(std::move(tail)), h);
    // The reader ends with the hub.
    h->attach_functor([t](const caf::error&) { caf::anon_send_exit(t, caf::exit_reason::kill); });
  }
  sys.registry().put(registry_name, caf::actor_cast<caf::strong_actor_ptr>(h));
  return h;
}

events_actor events_hub_of(caf::actor_system& sys) {
  return caf::actor_cast<events_actor>(sys.registry().get(registry_name));
}

void publish_event(caf::local_actor* self, event_record ev) {
  if (ev.timestamp == 0)
    ev.timestamp = now_millis();
  auto h = events_hub_of(self->home_system());
  // Anonymous, but from one actor at a time: the hub's mailbox keeps the
  // order in which each publisher sent.
  if (h)
    caf::anon_send(h, emit_atom::value, std::move(ev));
}

std::string to_json(const event_record& ev) {
  boost::json::object o;
  o["id"] = ev.id;
  o["type"] = ev.type;
  if (!ev.execution_id.empty())
    o["executionId"] = ev.execution_id;
  if (!ev.tenant_id.empty())
    o["tenantId"] = ev.tenant_id;
  o["status"] = ev.status;
  o["stage"] = ev.stage;
  if (ev.progress >= 0)
    o["progress"] = ev.progress;
  else
    o["progress"] = nullptr;
  o["timestamp"] = rfc3339(ev.timestamp);
  boost::system::error_code ec;
  auto details = boost::json::parse(ev.details, ec);
  if (ec || !details.is_object())
    o["details"] = boost::json::object{};
  else
    o["details"] = std::move(details);
  return boost::json::serialize(o);
}

} // namespace hotswap
