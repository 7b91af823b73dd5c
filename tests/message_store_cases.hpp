#pragma once

// The semantic cases of hotswap::message_store (runtime/messages.hpp), written
// once and run on every implementation: the SQL store on SQLite and
// PostgreSQL (tests/runtime/message_store_test.cpp) and the Redis Streams
// store (tests/cluster/). Include after caf/test/dsl.hpp (the cases use the
// CAF_CHECK family).
//
// A case takes a factory that opens ANOTHER CONNECTION TO THE SAME fresh,
// migrated database each time it is called (the consumer cases open two).
// Cases never share topics (each makes its own names), so one database may
// serve several cases. Time is the `now` the cases pass in, starting one day
// ahead of the wall clock: nothing expires or leases out by wall-clock time
// while a case runs, and no case sleeps.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/messages.hpp"
#include "hotswap/runtime/store.hpp"

namespace hotswap::message_store_cases {

using factory = std::function<std::unique_ptr<message_store>()>;

// -- helpers --------------------------------------------------------------------

/// The virtual clock of the cases: a day ahead of the wall clock.
inline millis t0() {
  return now_millis() + 24 * 3600 * 1000;
}

/// A topic name no other case (or run) uses.
inline std::string fresh_topic(const std::string& what) {
  return "cases." + what + "." + crypto::random_hex(4);
}

inline std::string code_of(const caf::error& e) {
  return to_string(errc_of(e)) + ": " + error_detail(e);
}

template <class T>
T must(caf::expected<T> x, const char* what) {
  if (!x)
    CAF_FAIL(what << " failed: " << code_of(x.error()));
  return std::move(*x);
}

inline void must_ok(caf::expected<void> x, const char* what) {
  if (!x)
    CAF_FAIL(what << " failed: " << code_of(x.error()));
}

inline message_record make_message(const std::string& topic, const std::string& id,
                                   int32_t priority = 0, millis created = 0) {
  message_record m;
  m.id = id.empty() ? crypto::uuid4() : id;
  m.topic = topic;
  m.payload = R"({"n":")" + m.id + R"(","ok":true})";
  m.schema_version = "1.0";
  m.priority = priority;
  m.created_at = created != 0 ? created : t0();
  m.published_by = "alice";
  return m;
}

inline std::vector<std::string> ids_of(const std::vector<message_record>& ms) {
  std::vector<std::string> out;
  for (auto& m : ms)
    out.push_back(m.id);
  return out;
}

inline message_policy policy(millis ack_deadline, int32_t max_attempts, millis backoff) {
  message_policy p;
  p.ack_deadline = ack_deadline;
  p.max_attempts = max_attempts;
  p.backoff_initial = backoff;
  return p;
}

/// The stored message `id` (fails the test when it is absent).
inline message_record stored(message_store& s, const std::string& id) {
  auto m = must(s.get(id), "get");
  if (!m)
    CAF_FAIL("message " << id << " is gone");
  message_record out = std::move(*m);
  return out;
}

inline int32_t status_of(message_store& s, const std::string& id) {
  return stored(s, id).status;
}

constexpr int32_t pending = static_cast<int32_t>(message_status::pending);
constexpr int32_t delivered = static_cast<int32_t>(message_status::delivered);
constexpr int32_t acknowledged = static_cast<int32_t>(message_status::acknowledged);
constexpr int32_t failed = static_cast<int32_t>(message_status::failed);
constexpr int32_t expired = static_cast<int32_t>(message_status::expired);

// -- cases ----------------------------------------------------------------------

/// publish: a new id is stored as published; the same id with the same topic
/// and payload is an idempotent retry; other content is a conflict.
inline void publish_is_idempotent_and_conflicts(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("publish");
  auto m = make_message(topic, "");
  m.headers = {{"content-type", "application/json"}, {"x-trace", "abc"}};
  m.correlation_id = "corr-1";
  m.partition_key = "customer-7";
  m.priority = 7;
  m.expires_at = t0() + 3600 * 1000;
  m.tenant_id = "tenant-a";
  CAF_CHECK_EQUAL(must(s->publish(m), "publish"), true);
  CAF_CHECK_EQUAL(must(s->publish(m), "publish again"), false);
  auto other_payload = m;
  other_payload.payload = R"({"other":1})";
  auto r = s->publish(other_payload);
  CAF_REQUIRE(!r);
  CAF_CHECK_EQUAL(errc_of(r.error()), errc::conflict);
  auto other_topic = m;
  other_topic.topic = topic + ".other";
  r = s->publish(other_topic);
  CAF_REQUIRE(!r);
  CAF_CHECK_EQUAL(errc_of(r.error()), errc::conflict);
  auto got = must(s->get(m.id), "get");
  CAF_REQUIRE(got.has_value());
  CAF_CHECK_EQUAL(got->id, m.id);
  CAF_CHECK_EQUAL(got->topic, topic);
  CAF_CHECK_EQUAL(got->payload, m.payload);
  CAF_CHECK_EQUAL(got->schema_version, "1.0");
  CAF_CHECK(got->headers == m.headers);
  CAF_CHECK_EQUAL(got->correlation_id, "corr-1");
  CAF_CHECK_EQUAL(got->partition_key, "customer-7");
  CAF_CHECK_EQUAL(got->priority, 7);
  CAF_CHECK_EQUAL(got->expires_at, m.expires_at);
  CAF_CHECK_EQUAL(got->created_at, m.created_at);
  CAF_CHECK_EQUAL(got->status, pending);
  CAF_CHECK_EQUAL(got->acknowledged_at, 0);
  CAF_CHECK_EQUAL(got->delivery_attempts, 0);
  CAF_CHECK_EQUAL(got->published_by, "alice");
  CAF_CHECK_EQUAL(got->tenant_id, "tenant-a");
  // The conflicting publishes stored nothing.
  CAF_CHECK_EQUAL(must(s->list_topic(topic, 100), "list").size(), 1u);
  CAF_CHECK(must(s->list_topic(topic + ".other", 100), "list other").empty());
  CAF_CHECK(!must(s->get("no-such-message"), "get absent").has_value());
}

/// list_topic: newest first, each message once, at most `limit`.
inline void list_is_newest_first_without_duplicates(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("list");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto m = make_message(topic, "list-" + std::to_string(i) + "-" + crypto::random_hex(4),
                          i % 2 == 0 ? 9 : 0, t0() + i);
    ids.push_back(m.id);
    must(s->publish(m), "publish");
    must(s->publish(m), "publish retry"); // an idempotent retry adds nothing
  }
  must(s->publish(make_message(topic + ".elsewhere", "")), "publish elsewhere");
  auto all = ids_of(must(s->list_topic(topic, 100), "list"));
  std::vector<std::string> expected(ids.rbegin(), ids.rend());
  CAF_CHECK(all == expected);
  auto three = ids_of(must(s->list_topic(topic, 3), "list 3"));
  CAF_CHECK(three == std::vector<std::string>(expected.begin(), expected.begin() + 3));
  // Consuming does not duplicate entries.
  must(s->consume(topic, "g", 10, t0(), policy(30000, 5, 2000)), "consume");
  CAF_CHECK(ids_of(must(s->list_topic(topic, 100), "list after consume")) == expected);
}

/// consume: priority 9 before 0, then oldest first; leased messages are not
/// handed out again before their lease ends.
inline void consume_orders_by_priority_then_age(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("prio");
  auto now = t0();
  std::vector<std::pair<std::string, int32_t>> spec
    = {{"a", 0}, {"b", 9}, {"c", 5}, {"d", 9}, {"e", 0}};
  std::map<std::string, std::string> id_of;
  for (auto& [name, prio] : spec) {
    auto m = make_message(topic, name + "-" + crypto::random_hex(4), prio, now);
    id_of[name] = m.id;
    must(s->publish(m), "publish");
  }
  auto p = policy(30000, 5, 2000);
  auto r = must(s->consume(topic, "workers", 3, now, p), "consume 3");
  CAF_CHECK(ids_of(r.messages) == (std::vector<std::string>{id_of["b"], id_of["d"], id_of["c"]}));
  for (auto& m : r.messages) {
    CAF_CHECK_EQUAL(m.delivery_attempts, 1);
    CAF_CHECK_EQUAL(m.status, delivered);
  }
  CAF_CHECK_EQUAL(r.redelivered, 0);
  r = must(s->consume(topic, "workers", 10, now + 1, p), "consume rest");
  CAF_CHECK(ids_of(r.messages) == (std::vector<std::string>{id_of["a"], id_of["e"]}));
  r = must(s->consume(topic, "workers", 10, now + 2, p), "consume again");
  CAF_CHECK(r.messages.empty());
  CAF_CHECK(must(s->consume(topic, "workers", 0, now + 3, p), "consume 0").messages.empty());
  CAF_CHECK_EQUAL(status_of(*s, id_of["a"]), delivered);
}

/// Every group receives every message once; a group that consumes for the
/// first time sees every retained message; later publishes reach every group.
inline void every_group_receives_every_message_once(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("groups");
  auto now = t0();
  auto p = policy(30000, 5, 2000);
  std::set<std::string> first;
  for (int i = 0; i < 4; ++i) {
    auto m = make_message(topic, "", 0, now + i);
    first.insert(m.id);
    must(s->publish(m), "publish");
  }
  auto a = must(s->consume(topic, "a", 100, now, p), "consume a");
  auto a_ids = ids_of(a.messages);
  CAF_CHECK_EQUAL(a_ids.size(), 4u);
  CAF_CHECK(std::set<std::string>(a_ids.begin(), a_ids.end()) == first);
  CAF_CHECK(must(s->consume(topic, "a", 100, now, p), "consume a again").messages.empty());
  auto late = make_message(topic, "", 0, now + 10);
  must(s->publish(late), "publish late");
  auto b = must(s->consume(topic, "b", 100, now, p), "consume b");
  auto b_ids = ids_of(b.messages);
  auto want = first;
  want.insert(late.id);
  CAF_CHECK_EQUAL(b_ids.size(), 5u);
  CAF_CHECK(std::set<std::string>(b_ids.begin(), b_ids.end()) == want);
  a = must(s->consume(topic, "a", 100, now, p), "consume a late");
  CAF_CHECK(ids_of(a.messages) == std::vector<std::string>{late.id});
  CAF_CHECK(must(s->consume(topic, "b", 100, now, p), "consume b again").messages.empty());
  CAF_CHECK(must(s->consume(topic, "a", 100, now, p), "consume a once more").messages.empty());
}

/// Two consumers of one group (two connections, two threads) never receive
/// the same message, and together they receive all of them.
inline void consumers_of_one_group_never_share_a_message(const factory& make) {
  auto setup = make();
  auto topic = fresh_topic("share");
  auto now = t0();
  constexpr int total = 300;
  std::set<std::string> published;
  for (int i = 0; i < total; ++i) {
    auto m = make_message(topic, "", i % 10, now + i);
    published.insert(m.id);
    must(setup->publish(m), "publish");
  }
  auto c1 = make();
  auto c2 = make();
  auto p = policy(60000, 5, 2000);
  struct outcome {
    std::vector<std::string> ids;
    std::string error;
  };
  auto run = [&](message_store* st, outcome* out) {
    int empty_in_a_row = 0;
    while (empty_in_a_row < 3) {
      auto r = st->consume(topic, "workers", 7, now + 1000, p);
      if (!r) {
        out->error = code_of(r.error());
        return;
      }
      if (r->messages.empty()) {
        ++empty_in_a_row;
        continue;
      }
      empty_in_a_row = 0;
      for (auto& m : r->messages)
        out->ids.push_back(m.id);
    }
  };
  outcome o1;
  outcome o2;
  std::thread t1{run, c1.get(), &o1};
  std::thread t2{run, c2.get(), &o2};
  t1.join();
  t2.join();
  CAF_CHECK_EQUAL(o1.error, "");
  CAF_CHECK_EQUAL(o2.error, "");
  std::multiset<std::string> all(o1.ids.begin(), o1.ids.end());
  all.insert(o2.ids.begin(), o2.ids.end());
  CAF_CHECK_EQUAL(all.size(), static_cast<size_t>(total));
  std::set<std::string> distinct(all.begin(), all.end());
  CAF_CHECK_EQUAL(distinct.size(), all.size());
  CAF_CHECK(distinct == published);
  CAF_MESSAGE("consumer 1 got " << o1.ids.size() << ", consumer 2 got " << o2.ids.size());
}

/// A group's acknowledgement ends deliveries of that message to that group
/// (and only that group); errors for unknown ids and foreign groups.
inline void acknowledged_by_a_group_is_never_redelivered_to_it(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("ack");
  auto now = t0();
  auto p = policy(1000, 5, 200);
  auto m1 = make_message(topic, "", 0, now);
  auto m2 = make_message(topic, "", 0, now + 1);
  must(s->publish(m1), "publish 1");
  must(s->publish(m2), "publish 2");
  CAF_CHECK_EQUAL(must(s->consume(topic, "g1", 10, now, p), "consume g1").messages.size(), 2u);
  CAF_CHECK_EQUAL(must(s->consume(topic, "g2", 10, now, p), "consume g2").messages.size(), 2u);
  auto acked = must(s->acknowledge(m1.id, "g1", now + 10), "ack g1");
  CAF_CHECK_EQUAL(acked.id, m1.id);
  CAF_CHECK_EQUAL(acked.status, acknowledged);
  CAF_CHECK_EQUAL(acked.acknowledged_at, now + 10);
  CAF_CHECK_EQUAL(acked.delivery_attempts, 1);
  // Idempotent: the first acknowledgement time stays.
  CAF_CHECK_EQUAL(must(s->acknowledge(m1.id, "g1", now + 20), "ack again").acknowledged_at,
                  now + 10);
  // g2 still owes m1: the message as a whole is not acknowledged yet.
  CAF_CHECK_EQUAL(status_of(*s, m1.id), delivered);
  auto never = s->acknowledge(m1.id, "never-consumed", now);
  CAF_REQUIRE(!never);
  CAF_CHECK_EQUAL(errc_of(never.error()), errc::conflict);
  auto absent = s->acknowledge("no-such-message", "g1", now);
  CAF_REQUIRE(!absent);
  CAF_CHECK_EQUAL(errc_of(absent.error()), errc::not_found);
  // After the lease: g1 gets m2 again but never m1; g2 gets both again.
  auto later = now + 1200;
  auto r1 = must(s->consume(topic, "g1", 10, later, p), "consume g1 later");
  CAF_CHECK(ids_of(r1.messages) == std::vector<std::string>{m2.id});
  CAF_CHECK_EQUAL(r1.redelivered, 1);
  auto r2 = must(s->consume(topic, "g2", 10, later, p), "consume g2 later");
  CAF_CHECK(ids_of(r2.messages) == (std::vector<std::string>{m1.id, m2.id}));
  must(s->acknowledge(m1.id, "g2", later), "ack g2");
  // Every group that had it acknowledged it: acknowledged as a whole.
  auto got = stored(*s, m1.id);
  CAF_CHECK_EQUAL(got.status, acknowledged);
  CAF_CHECK_EQUAL(got.acknowledged_at, later);
  CAF_CHECK(must(s->consume(topic, "g1", 10, later + 100000, p), "consume g1 much later")
              .messages.size()
            == 1u); // m2 only
}

/// Acknowledging without a group ends the message for every group, also
/// for groups that consume for the first time afterwards.
inline void acknowledged_as_a_whole_reaches_no_group(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("ackall");
  auto now = t0();
  auto p = policy(1000, 5, 200);
  auto m = make_message(topic, "", 0, now);
  must(s->publish(m), "publish");
  CAF_CHECK_EQUAL(must(s->consume(topic, "g1", 10, now, p), "consume").messages.size(), 1u);
  auto acked = must(s->acknowledge(m.id, "", now + 5), "ack whole");
  CAF_CHECK_EQUAL(acked.status, acknowledged);
  CAF_CHECK_EQUAL(acked.acknowledged_at, now + 5);
  CAF_CHECK_EQUAL(must(s->acknowledge(m.id, "", now + 50), "ack whole again").acknowledged_at,
                  now + 5);
  CAF_CHECK(must(s->consume(topic, "g1", 10, now + 100000, p), "consume g1 later").messages.empty());
  CAF_CHECK(must(s->consume(topic, "g-new", 10, now + 100000, p), "consume new group")
              .messages.empty());
  CAF_CHECK_EQUAL(status_of(*s, m.id), acknowledged);
  // A group that received it may still acknowledge it (idempotent).
  CAF_CHECK_EQUAL(must(s->acknowledge(m.id, "g1", now + 60), "ack by g1").status, acknowledged);
}

/// An unacknowledged message is redelivered when its lease ends: attempt n
/// ends at delivered_at + ack_deadline + backoff_initial * 2^(n-1).
inline void redelivery_follows_the_ack_deadline_with_exponential_backoff(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("backoff");
  auto t = t0();
  auto p = policy(1000, 10, 200);
  auto m = make_message(topic, "", 0, t);
  must(s->publish(m), "publish");
  auto r = must(s->consume(topic, "g", 10, t, p), "attempt 1");
  CAF_REQUIRE_EQUAL(r.messages.size(), 1u);
  CAF_CHECK_EQUAL(r.messages[0].delivery_attempts, 1);
  // Lease 1 ends at t + 1000 + 200.
  CAF_CHECK(must(s->consume(topic, "g", 10, t + 1199, p), "before lease 1 ends").messages.empty());
  r = must(s->consume(topic, "g", 10, t + 1200, p), "attempt 2");
  CAF_REQUIRE_EQUAL(r.messages.size(), 1u);
  CAF_CHECK_EQUAL(r.messages[0].delivery_attempts, 2);
  CAF_CHECK_EQUAL(r.redelivered, 1);
  // Lease 2 ends at (t + 1200) + 1000 + 400.
  auto t2 = t + 1200;
  CAF_CHECK(must(s->consume(topic, "g", 10, t2 + 1399, p), "before lease 2 ends").messages.empty());
  r = must(s->consume(topic, "g", 10, t2 + 1400, p), "attempt 3");
  CAF_REQUIRE_EQUAL(r.messages.size(), 1u);
  CAF_CHECK_EQUAL(r.messages[0].delivery_attempts, 3);
  // Lease 3 ends at (t2 + 1400) + 1000 + 800.
  auto t3 = t2 + 1400;
  CAF_CHECK(must(s->consume(topic, "g", 10, t3 + 1799, p), "before lease 3 ends").messages.empty());
  r = must(s->consume(topic, "g", 10, t3 + 1800, p), "attempt 4");
  CAF_REQUIRE_EQUAL(r.messages.size(), 1u);
  CAF_CHECK_EQUAL(r.messages[0].delivery_attempts, 4);
  CAF_CHECK_EQUAL(stored(*s, m.id).delivery_attempts, 4);
}

/// After max_attempts leases ended without acknowledgement the message is
/// dead-lettered for the group: a copy with the reason headers goes to
/// "<topic>.dlq" (readable and consumable like any topic) and the original
/// becomes failed; other groups are not affected.
inline void dead_letters_after_max_attempts(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("dlq");
  auto dlq = topic + ".dlq";
  auto t = t0();
  auto p = policy(1000, 2, 200);
  auto m = make_message(topic, "", 4, t);
  m.headers = {{"origin", "test"}};
  m.correlation_id = "corr-dlq";
  must(s->publish(m), "publish");
  CAF_CHECK_EQUAL(must(s->consume(topic, "other", 10, t, p), "other group").messages.size(), 1u);
  must(s->acknowledge(m.id, "other", t + 1), "other group acks");
  CAF_CHECK_EQUAL(must(s->consume(topic, "g", 10, t, p), "attempt 1").messages.size(), 1u);
  CAF_CHECK_EQUAL(must(s->consume(topic, "g", 10, t + 1200, p), "attempt 2").messages.size(), 1u);
  // Lease 2 ends at t + 1200 + 1000 + 400 = t + 2600.
  auto r = must(s->consume(topic, "g", 10, t + 2599, p), "still leased");
  CAF_CHECK(r.messages.empty());
  CAF_CHECK_EQUAL(r.dead_lettered, 0);
  CAF_CHECK(must(s->list_topic(dlq, 10), "dlq before").empty());
  r = must(s->consume(topic, "g", 10, t + 2600, p), "lease 2 ended");
  CAF_CHECK(r.messages.empty());
  CAF_CHECK_EQUAL(r.dead_lettered, 1);
  CAF_CHECK_EQUAL(status_of(*s, m.id), failed);
  auto copies = must(s->list_topic(dlq, 10), "dlq");
  CAF_REQUIRE_EQUAL(copies.size(), 1u);
  auto& c = copies[0];
  CAF_CHECK_NOT_EQUAL(c.id, m.id);
  CAF_CHECK_EQUAL(c.topic, dlq);
  CAF_CHECK_EQUAL(c.payload, m.payload);
  CAF_CHECK_EQUAL(c.correlation_id, "corr-dlq");
  CAF_CHECK_EQUAL(c.priority, 4);
  CAF_CHECK_EQUAL(c.status, pending);
  CAF_CHECK_EQUAL(c.headers["origin"], "test");
  CAF_CHECK_EQUAL(c.headers["x-original-message-id"], m.id);
  CAF_CHECK_EQUAL(c.headers["x-original-topic"], topic);
  CAF_CHECK_EQUAL(c.headers["x-consumer-group"], "g");
  CAF_CHECK_EQUAL(c.headers["x-delivery-attempts"], "2");
  CAF_CHECK(!c.headers["x-dead-letter-reason"].empty());
  // Never again for g, not even much later; acknowledging it is too late.
  r = must(s->consume(topic, "g", 10, t + 1000000, p), "after dead-lettering");
  CAF_CHECK(r.messages.empty());
  CAF_CHECK_EQUAL(r.dead_lettered, 0);
  auto late = s->acknowledge(m.id, "g", t + 1000000);
  CAF_REQUIRE(!late);
  CAF_CHECK_EQUAL(errc_of(late.error()), errc::conflict);
  // The DLQ is a topic like any other.
  auto d = must(s->consume(dlq, "ops", 10, t + 3000, p), "consume dlq");
  CAF_REQUIRE_EQUAL(d.messages.size(), 1u);
  CAF_CHECK_EQUAL(d.messages[0].id, c.id);
  CAF_CHECK_EQUAL(must(s->acknowledge(c.id, "ops", t + 3001), "ack dlq").status, acknowledged);
}

/// Expired messages are never delivered and become expired.
inline void expired_messages_are_never_delivered(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("expiry");
  auto t = t0();
  auto p = policy(1000, 5, 200);
  auto soon = make_message(topic, "", 9, t);
  soon.expires_at = t + 1000;
  auto never = make_message(topic, "", 0, t + 1);
  must(s->publish(soon), "publish soon");
  must(s->publish(never), "publish never");
  auto r = must(s->consume(topic, "g", 10, t + 1000, p), "consume at expiry");
  CAF_CHECK(ids_of(r.messages) == std::vector<std::string>{never.id});
  CAF_CHECK_EQUAL(r.expired, 1);
  CAF_CHECK_EQUAL(status_of(*s, soon.id), expired);
  CAF_CHECK(must(s->consume(topic, "g2", 10, t + 1000, p), "new group").messages.size() == 1u);
  // A leased message that expires is not redelivered.
  auto leased = make_message(topic, "", 0, t + 2);
  leased.expires_at = t + 5000;
  must(s->publish(leased), "publish leased");
  r = must(s->consume(topic, "g", 10, t + 2000, p), "lease it");
  CAF_CHECK(ids_of(r.messages) == std::vector<std::string>{leased.id});
  r = must(s->consume(topic, "g", 10, t + 100000, p), "after expiry");
  CAF_CHECK(ids_of(r.messages) == std::vector<std::string>{never.id}); // never acked: redelivered
  CAF_CHECK_EQUAL(status_of(*s, leased.id), expired);
}

/// remove: the message is gone for reads and consumers; a second remove is
/// not_found.
inline void removed_messages_are_gone(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("remove");
  auto t = t0();
  auto p = policy(1000, 5, 200);
  auto a = make_message(topic, "", 0, t);
  auto b = make_message(topic, "", 0, t + 1);
  must(s->publish(a), "publish a");
  must(s->publish(b), "publish b");
  must(s->consume(topic, "g", 1, t, p), "create the group");
  must_ok(s->remove(a.id), "remove a");
  must_ok(s->remove(b.id), "remove b");
  CAF_CHECK(!must(s->get(a.id), "get a").has_value());
  auto again = s->remove(a.id);
  CAF_REQUIRE(!again);
  CAF_CHECK_EQUAL(errc_of(again.error()), errc::not_found);
  CAF_CHECK(must(s->list_topic(topic, 10), "list").empty());
  CAF_CHECK(must(s->consume(topic, "g", 10, t + 100000, p), "consume g").messages.empty());
  CAF_CHECK(must(s->consume(topic, "g-new", 10, t + 100000, p), "consume new").messages.empty());
  auto ack = s->acknowledge(a.id, "g", t);
  CAF_REQUIRE(!ack);
  CAF_CHECK_EQUAL(errc_of(ack.error()), errc::not_found);
  // The id may be published again: it is a new message.
  CAF_CHECK_EQUAL(must(s->publish(a), "publish a again"), true);
}

/// lag: deliveries still owed, summed over every (topic, group) that has
/// consumed.
inline void lag_counts_what_groups_still_owe(const factory& make) {
  auto s = make();
  auto topic = fresh_topic("lag");
  auto t = t0();
  auto p = policy(1000, 2, 200);
  auto base = must(s->lag(), "lag");
  std::vector<message_record> ms;
  for (int i = 0; i < 3; ++i) {
    ms.push_back(make_message(topic, "", 0, t + i));
    must(s->publish(ms.back()), "publish");
  }
  // No group has consumed yet: nothing is owed.
  CAF_CHECK_EQUAL(must(s->lag(), "lag 0") - base, 0);
  must(s->consume(topic, "g1", 2, t, p), "g1 takes 2");
  CAF_CHECK_EQUAL(must(s->lag(), "lag 1") - base, 3);
  must(s->acknowledge(ms[0].id, "g1", t), "g1 acks one");
  CAF_CHECK_EQUAL(must(s->lag(), "lag 2") - base, 2);
  must(s->consume(topic, "g2", 1, t, p), "g2 takes 1");
  CAF_CHECK_EQUAL(must(s->lag(), "lag 3") - base, 5);
  must(s->acknowledge(ms[2].id, "", t), "ack the third as a whole");
  CAF_CHECK_EQUAL(must(s->lag(), "lag 4") - base, 3);
  must(s->publish(make_message(topic, "", 0, t + 10)), "publish a fourth");
  CAF_CHECK_EQUAL(must(s->lag(), "lag 5") - base, 5);
  // g1's lease of ms[1] runs out twice (max_attempts 2): dead-lettered, no
  // longer owed by g1 (the DLQ topic has no group).
  must(s->consume(topic, "g1", 10, t + 1200, p), "g1 second attempt");
  must(s->consume(topic, "g1", 10, t + 100000, p), "g1 dead-letters");
  auto left = must(s->lag(), "lag 6") - base;
  // g1: ms[1] dead-lettered, the fourth leased (owed) -> 1; g2: ms[0],
  // ms[1] and the fourth -> 3.
  CAF_CHECK_EQUAL(left, 4);
}

/// Every case, in order (for a store that wants to run them all at once).
inline void run_all(const factory& make) {
  publish_is_idempotent_and_conflicts(make);
  list_is_newest_first_without_duplicates(make);
  consume_orders_by_priority_then_age(make);
  every_group_receives_every_message_once(make);
  consumers_of_one_group_never_share_a_message(make);
  acknowledged_by_a_group_is_never_redelivered_to_it(make);
  acknowledged_as_a_whole_reaches_no_group(make);
  redelivery_follows_the_ack_deadline_with_exponential_backoff(make);
  dead_letters_after_max_attempts(make);
  expired_messages_are_never_delivered(make);
  removed_messages_are_gone(make);
  lag_counts_what_groups_still_owe(make);
}

} // namespace hotswap::message_store_cases
