#define CAF_SUITE rate_limiter
#include "caf/test/dsl.hpp"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "hotswap/actors/rate_limiter.hpp"

using namespace hotswap;
using namespace std::chrono_literals;

namespace {

struct fixture {
  rate_limiter limiter;
  // An arbitrary, injected point in time: tests never read the wall clock.
  rate_limiter::clock::time_point t0 = rate_limiter::clock::time_point{} + 1000h;

  rate_decision take(const std::string& key, uint32_t per_minute,
                     rate_limiter::clock::time_point at) {
    return limiter.take("deployments", key, per_minute, at);
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(rate_limiter_tests, fixture)

CAF_TEST(the first n requests are allowed and the next is denied with a retry after) {
  for (uint32_t i = 0; i < 10; ++i) {
    auto d = take("alice", 10, t0);
    CAF_CHECK(d.allowed);
    CAF_CHECK_EQUAL(d.limit, 10u);
    CAF_CHECK_EQUAL(d.remaining, 9u - i);
  }
  auto d = take("alice", 10, t0);
  CAF_CHECK(!d.allowed);
  CAF_CHECK_EQUAL(d.limit, 10u);
  CAF_CHECK_EQUAL(d.remaining, 0u);
  // 10/min = one token every 6 s.
  CAF_CHECK_EQUAL(d.retry_after, 6);
  CAF_CHECK_GREATER_OR_EQUAL(d.retry_after, 1);
}

CAF_TEST(retry after is at least one second even for fast buckets) {
  for (int i = 0; i < 1000; ++i)
    take("bob", 1000, t0);
  auto d = take("bob", 1000, t0);
  CAF_CHECK(!d.allowed);
  CAF_CHECK_EQUAL(d.retry_after, 1); // 0.06 s rounded up
}

CAF_TEST(tokens refill as time advances) {
  for (int i = 0; i < 10; ++i)
    take("alice", 10, t0);
  CAF_CHECK(!take("alice", 10, t0).allowed);
  // After 5 s: 0.83 tokens, still denied, one more second to wait.
  auto early = take("alice", 10, t0 + 5s);
  CAF_CHECK(!early.allowed);
  CAF_CHECK_EQUAL(early.retry_after, 1);
  // After 6 s: exactly one token.
  auto d = take("alice", 10, t0 + 6s);
  CAF_CHECK(d.allowed);
  CAF_CHECK_EQUAL(d.remaining, 0u);
  CAF_CHECK(!take("alice", 10, t0 + 6s).allowed);
  // After a full minute the bucket is full again, but never fuller.
  auto full = take("alice", 10, t0 + 6s + 10min);
  CAF_CHECK(full.allowed);
  CAF_CHECK_EQUAL(full.remaining, 9u);
}

CAF_TEST(a clock running backwards neither adds nor removes tokens) {
  take("carol", 2, t0);
  take("carol", 2, t0);
  auto d = take("carol", 2, t0 - 1h);
  CAF_CHECK(!d.allowed);
  CAF_CHECK(take("carol", 2, t0 + 30s).allowed);
}

CAF_TEST(keys and categories have independent buckets) {
  CAF_CHECK(limiter.take("login", "alice", 1, t0).allowed);
  CAF_CHECK(!limiter.take("login", "alice", 1, t0).allowed);
  CAF_CHECK(limiter.take("login", "bob", 1, t0).allowed);
  CAF_CHECK(limiter.take("approvals", "alice", 1, t0).allowed);
  CAF_CHECK(limiter.take("global", "alice", 1, t0).allowed);
  // The separator keeps ("a", "bc") and ("ab", "c") apart.
  CAF_CHECK(limiter.take("a", "bc", 1, t0).allowed);
  CAF_CHECK(limiter.take("ab", "c", 1, t0).allowed);
  CAF_CHECK_EQUAL(limiter.size(), 6u);
}

CAF_TEST(remaining and reset describe the bucket after the request) {
  // 60/min = one token per second.
  auto first = take("dave", 60, t0);
  CAF_CHECK(first.allowed);
  CAF_CHECK_EQUAL(first.limit, 60u);
  CAF_CHECK_EQUAL(first.remaining, 59u);
  CAF_CHECK_EQUAL(first.reset_seconds, 1);
  for (int i = 0; i < 9; ++i)
    take("dave", 60, t0);
  auto tenth = take("dave", 60, t0);
  CAF_CHECK_EQUAL(tenth.remaining, 49u);
  CAF_CHECK_EQUAL(tenth.reset_seconds, 11);
  // 2.5 s later: 51.5 tokens, minus one.
  auto later = take("dave", 60, t0 + 2500ms);
  CAF_CHECK(later.allowed);
  CAF_CHECK_EQUAL(later.remaining, 50u);
  CAF_CHECK_EQUAL(later.reset_seconds, 10); // ceil(9.5)
}

CAF_TEST(a denied request reports a full reset in one minute for an empty bucket) {
  auto a = take("erin", 1, t0);
  CAF_CHECK(a.allowed);
  CAF_CHECK_EQUAL(a.remaining, 0u);
  CAF_CHECK_EQUAL(a.reset_seconds, 60);
  auto b = take("erin", 1, t0 + 15s);
  CAF_CHECK(!b.allowed);
  CAF_CHECK_EQUAL(b.retry_after, 45);
  CAF_CHECK_EQUAL(b.reset_seconds, 45);
}

CAF_TEST(a zero limit admits nothing) {
  auto d = take("frank", 0, t0);
  CAF_CHECK(!d.allowed);
  CAF_CHECK_EQUAL(d.limit, 0u);
  CAF_CHECK_GREATER_OR_EQUAL(d.retry_after, 1);
  CAF_CHECK_EQUAL(limiter.size(), 0u);
}

CAF_TEST(a lowered limit caps the tokens already in the bucket) {
  take("gina", 100, t0);
  auto d = take("gina", 5, t0 + 1s);
  CAF_CHECK(d.allowed);
  CAF_CHECK_EQUAL(d.remaining, 4u);
}

CAF_TEST(idle buckets are evicted so the size stays bounded) {
  for (int i = 0; i < 1000; ++i)
    take("user-" + std::to_string(i), 10, t0);
  CAF_CHECK_EQUAL(limiter.size(), 1000u);
  // Not yet full again: nothing is evicted.
  take("late", 10, t0 + 30s);
  CAF_CHECK_EQUAL(limiter.size(), 1001u);
  // A minute after their last use every bucket is full; the next sweep drops
  // them, but keeps the recently used one.
  take("later", 10, t0 + 61s);
  CAF_CHECK_EQUAL(limiter.size(), 2u);
  // Sweeps run at most every 10 s.
  take("user-0", 10, t0 + 62s);
  CAF_CHECK_EQUAL(limiter.size(), 3u);
  // An evicted bucket starts full again.
  auto d = take("user-1", 10, t0 + 63s);
  CAF_CHECK(d.allowed);
  CAF_CHECK_EQUAL(d.remaining, 9u);
}

CAF_TEST(a steady stream of new keys keeps at most about a minute of buckets) {
  size_t peak = 0;
  for (int s = 0; s < 600; ++s) {
    take("client-" + std::to_string(s), 10, t0 + std::chrono::seconds{s});
    peak = std::max(peak, limiter.size());
  }
  // One key per second, evicted 60-70 s after its last use.
  CAF_CHECK_LESS_OR_EQUAL(peak, 71u);
  CAF_CHECK_GREATER_OR_EQUAL(peak, 60u);
}

CAF_TEST(concurrent takes never hand out more tokens than the capacity) {
  std::vector<std::thread> threads;
  std::vector<int> allowed(4, 0);
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i)
        if (take("shared", 100, t0).allowed)
          ++allowed[t];
    });
  for (auto& th : threads)
    th.join();
  CAF_CHECK_EQUAL(allowed[0] + allowed[1] + allowed[2] + allowed[3], 100);
}

CAF_TEST_FIXTURE_SCOPE_END()
