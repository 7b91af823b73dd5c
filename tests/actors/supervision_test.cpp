#define CAF_SUITE supervision
#include "caf/test/dsl.hpp"

#include "hotswap/actors/supervision.hpp"

using namespace hotswap;
using namespace std::chrono_literals;

CAF_TEST(backoff doubles with every failure inside the period up to the maximum) {
  restart_policy p{{100ms, 500ms, 10, 60s}};
  auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  CAF_CHECK_EQUAL(p.on_failure(t0).delay.count(), 100);
  CAF_CHECK_EQUAL(p.on_failure(t0 + 1s).delay.count(), 200);
  CAF_CHECK_EQUAL(p.on_failure(t0 + 2s).delay.count(), 400);
  CAF_CHECK_EQUAL(p.on_failure(t0 + 3s).delay.count(), 500);
}

CAF_TEST(more failures than the intensity inside the period escalate) {
  restart_policy p{{100ms, 1s, 2, 10s}};
  auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  CAF_CHECK(!p.on_failure(t0).escalate);
  CAF_CHECK(!p.on_failure(t0 + 1s).escalate);
  CAF_CHECK(p.on_failure(t0 + 2s).escalate);
}

CAF_TEST(failures older than the period are forgotten) {
  restart_policy p{{100ms, 1s, 2, 10s}};
  auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  p.on_failure(t0);
  p.on_failure(t0 + 1s);
  auto d = p.on_failure(t0 + 12s);
  CAF_CHECK(!d.escalate);
  CAF_CHECK_EQUAL(d.delay.count(), 100);
  CAF_CHECK_EQUAL(p.recent_failures(t0 + 12s), 1u);
}
