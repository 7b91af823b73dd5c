#include "hotswap/actors/messages.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <list>
#include <utility>

#include "caf/spawn_options.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"
#include "caf/typed_response_promise.hpp"

#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/store.hpp"

namespace hotswap {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// How often the broker wakes up: long-poll deadlines are kept to this.
constexpr milliseconds tick_interval{100};

/// How often a waiting consume is retried without a local publish (messages
/// published on other nodes, redeliveries that became due).
constexpr milliseconds retry_interval{500};

/// How often the consumer lag is measured.
constexpr milliseconds lag_interval{5000};

// -- decisions (pure) ---------------------------------------------------------------

/// The status a reader sees: a pending or delivered message whose expiry has
/// passed is expired even before a consume marked it.
message_record as_seen(message_record m, millis now) {
  auto live = m.status == static_cast<int32_t>(message_status::pending)
              || m.status == static_cast<int32_t>(message_status::delivered);
  if (live && m.expires_at != 0 && m.expires_at <= now)
    m.status = static_cast<int32_t>(message_status::expired);
  return m;
}

milliseconds wait_of(uint32_t wait_ms) {
  return milliseconds{std::min(wait_ms, max_consume_wait_ms)};
}

// -- the actor ----------------------------------------------------------------------

using messages_promise = caf::typed_response_promise<std::vector<message_record>>;

/// A consume that found nothing and waits.
struct waiter {
  std::string topic;
  std::string group;
  uint32_t max = 0;
  clock_type::time_point deadline;
  clock_type::time_point next_try;
  messages_promise rp;
};

struct broker_state {
  std::shared_ptr<message_store> store;
  message_policy policy;
  node_metrics* metrics = nullptr;
  std::list<waiter> waiters;
  /// Topics whose waiters should be retried now.
  std::deque<std::string> to_wake;
  clock_type::time_point next_lag;
  bool lag_failing = false;
  static inline const char* name = "message_broker";

  /// One consume with the metrics counted.
  caf::expected<consume_result> consume(const std::string& topic, const std::string& group,
                                        uint32_t max) {
    auto r = store->consume(topic, group, max, now_millis(), policy);
    if (r && metrics != nullptr) {
      metrics->messages_delivered().Increment(static_cast<double>(r->messages.size()));
      metrics->messages_redelivered().Increment(r->redelivered);
      metrics->messages_dead_lettered().Increment(r->dead_lettered);
      metrics->messages_expired().Increment(r->expired);
    }
    return r;
  }
};

using broker_ptr = message_broker_actor::stateful_pointer<broker_state>;

/// Tries waiter `w` once; true when it was answered (the caller removes it).
bool try_waiter(broker_ptr self, waiter& w) {
  auto& st = self->state;
  auto r = st.consume(w.topic, w.group, w.max);
  if (!r) {
    w.rp.deliver(std::move(r.error()));
    return true;
  }
  if (r->dead_lettered > 0)
    st.to_wake.push_back(w.topic + ".dlq");
  if (!r->messages.empty()) {
    w.rp.deliver(std::move(r->messages));
    return true;
  }
  w.next_try = clock_type::now() + retry_interval;
  return false;
}

/// Messages arrived on the topics in `to_wake` (published through this
/// broker or dead-lettered by it): retry their waiters, oldest first.
void wake(broker_ptr self) {
  auto& st = self->state;
  while (!st.to_wake.empty()) {
    auto topic = std::move(st.to_wake.front());
    st.to_wake.pop_front();
    for (auto i = st.waiters.begin(); i != st.waiters.end();) {
      if (i->topic == topic && try_waiter(self, *i))
        i = st.waiters.erase(i);
      else
        ++i;
    }
  }
}

void on_tick(broker_ptr self) {
  auto& st = self->state;
  auto now = clock_type::now();
  for (auto i = st.waiters.begin(); i != st.waiters.end();) {
    if (i->deadline <= now) {
      i->rp.deliver(std::vector<message_record>{});
      i = st.waiters.erase(i);
      continue;
    }
    if (i->next_try <= now && try_waiter(self, *i))
      i = st.waiters.erase(i);
    else
      ++i;
  }
  wake(self);
  if (now >= st.next_lag) {
    st.next_lag = now + lag_interval;
    auto lag = st.store->lag();
    if (lag) {
      if (st.metrics != nullptr)
        st.metrics->message_consumer_lag().Set(static_cast<double>(*lag));
      if (st.lag_failing)
        logger("store")->info("messages: the consumer lag can be measured again");
      st.lag_failing = false;
    } else if (!st.lag_failing) {
      st.lag_failing = true;
      logger("store")->warn("messages: cannot measure the consumer lag: {} {}",
                            to_string(errc_of(lag.error())), error_detail(lag.error()));
    }
  }
}

message_broker_actor::behavior_type broker(broker_ptr self, std::shared_ptr<message_store> store,
                                           message_policy policy, node_metrics* metrics) {
  auto& st = self->state;
  st.store = std::move(store);
  st.policy = policy;
  st.metrics = metrics;
  st.next_lag = clock_type::now();
  self->send(self, tick_atom::value);
  return {
    [=](put_atom, message_record& m) -> caf::result<message_record, bool> {
      auto& st = self->state;
      if (m.created_at == 0)
        m.created_at = now_millis();
      m.status = static_cast<int32_t>(message_status::pending);
      m.acknowledged_at = 0;
      m.delivery_attempts = 0;
      auto created = st.store->publish(m);
      if (!created)
        return std::move(created.error());
      if (!*created) {
        auto stored = st.store->get(m.id);
        if (!stored)
          return std::move(stored.error());
        if (!*stored)
          return caf::make_error(errc::conflict, "message " + m.id + " was removed meanwhile");
        return {as_seen(std::move(**stored), now_millis()), false};
      }
      if (st.metrics != nullptr)
        st.metrics->messages_published().Increment();
      st.to_wake.push_back(m.topic);
      wake(self);
      return {std::move(m), true};
    },
    [=](get_atom, const std::string& id) -> caf::result<message_record> {
      auto m = self->state.store->get(id);
      if (!m)
        return std::move(m.error());
      if (!*m)
        return caf::make_error(errc::not_found, "no message " + id);
      return as_seen(std::move(**m), now_millis());
    },
    [=](list_atom, const std::string& topic,
        uint32_t limit) -> caf::result<std::vector<message_record>> {
      auto ms = self->state.store->list_topic(topic, limit);
      if (!ms)
        return std::move(ms.error());
      auto now = now_millis();
      for (auto& m : *ms)
        m = as_seen(std::move(m), now);
      return std::move(*ms);
    },
    [=](consume_atom, std::string& topic, std::string& group, uint32_t max,
        uint32_t wait_ms) -> caf::result<std::vector<message_record>> {
      auto& st = self->state;
      auto r = st.consume(topic, group, max);
      if (!r)
        return std::move(r.error());
      if (r->dead_lettered > 0) {
        st.to_wake.push_back(topic + ".dlq");
        wake(self);
      }
      if (!r->messages.empty() || wait_ms == 0 || max == 0)
        return std::move(r->messages);
      auto rp = self->make_response_promise<std::vector<message_record>>();
      auto now = clock_type::now();
      st.waiters.push_back(
        waiter{std::move(topic), std::move(group), max, now + wait_of(wait_ms), now + retry_interval, rp});
      return rp;
    },
    [=](ack_atom, const std::string& id, const std::string& group) -> caf::result<message_record> {
      auto& st = self->state;
      auto m = st.store->acknowledge(id, group, now_millis());
      if (!m)
        return std::move(m.error());
      if (st.metrics != nullptr)
        st.metrics->messages_acknowledged().Increment();
      return std::move(*m);
    },
    [=](delete_atom, const std::string& id) -> caf::result<ok_atom> {
      auto r = self->state.store->remove(id);
      if (!r)
        return std::move(r.error());
      return ok_atom::value;
    },
    [=](tick_atom) {
      on_tick(self);
      self->delayed_send(self, tick_interval, tick_atom::value);
    },
  };
}

} // namespace

message_broker_actor spawn_message_broker(caf::actor_system& sys,
                                          std::unique_ptr<message_store> store,
                                          message_policy policy, node_metrics* metrics) {
  std::shared_ptr<message_store> shared{std::move(store)};
  return sys.spawn<caf::detached>(broker, std::move(shared), policy, metrics);
}

} // namespace hotswap
