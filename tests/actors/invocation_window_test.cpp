// Windowed invocation metrics of one module version (pure state; every call
// passes the time explicitly, so nothing here reads a clock).
#define CAF_SUITE invocation_window
#include "caf/test/dsl.hpp"

#include <cmath>
#include <vector>

#include "hotswap/actors/invocation_window.hpp"

using namespace hotswap;

namespace {

/// The histogram's relative resolution: 8 sub-buckets per power of two.
const double resolution = std::exp2(1.0 / 8.0); // ~1.09

void record_n(invocation_window& w, int64_t now_ms, size_t n, uint64_t latency_us,
              bool error = false) {
  for (size_t i = 0; i < n; ++i)
    w.record(now_ms, latency_us, error);
}

bool all_zero(const window_stats& s) {
  return s.invocations == 0 && s.errors == 0 && s.error_rate == 0 && s.per_second == 0
         && s.p50_ms == 0 && s.p95_ms == 0 && s.p99_ms == 0 && s.mean_ms == 0;
}

} // namespace

CAF_TEST(invocations and the error rate are counted within the window) {
  invocation_window w{60};
  record_n(w, 10'000, 6, 1000);
  record_n(w, 10'400, 2, 1000, true);
  record_n(w, 11'200, 2, 1000);
  auto s = w.stats(11'500);
  CAF_CHECK_EQUAL(s.invocations, 10u);
  CAF_CHECK_EQUAL(s.errors, 2u);
  CAF_CHECK_EQUAL(s.error_rate, 0.2);
  CAF_CHECK_EQUAL(s.per_second, 10.0 / 60.0);
  // A shorter view: only the current partial second (second 11).
  auto last = w.stats(11'500, 1);
  CAF_CHECK_EQUAL(last.invocations, 2u);
  CAF_CHECK_EQUAL(last.errors, 0u);
  CAF_CHECK_EQUAL(last.error_rate, 0.0);
  CAF_CHECK_EQUAL(last.per_second, 2.0);
  // Asking for more than the window is capped to the window.
  CAF_CHECK_EQUAL(w.stats(11'500, 3600).per_second, 10.0 / 60.0);
  CAF_CHECK_EQUAL(w.total_invocations(), 10u);
  CAF_CHECK_EQUAL(w.total_errors(), 2u);
}

CAF_TEST(buckets older than the window drop out as time advances) {
  invocation_window w{10};
  record_n(w, 1'000, 5, 1000, true); // second 1
  record_n(w, 5'000, 3, 1000);       // second 5
  CAF_CHECK_EQUAL(w.stats(5'500).invocations, 8u);
  CAF_CHECK_EQUAL(w.stats(5'500, 2).invocations, 3u);
  // Second 10 still covers seconds 1..10.
  CAF_CHECK_EQUAL(w.stats(10'999).invocations, 8u);
  CAF_CHECK_EQUAL(w.stats(10'999).errors, 5u);
  // Second 11 covers 2..11: the errors of second 1 are gone.
  auto s = w.stats(11'000);
  CAF_CHECK_EQUAL(s.invocations, 3u);
  CAF_CHECK_EQUAL(s.errors, 0u);
  CAF_CHECK_EQUAL(s.error_rate, 0.0);
  // Second 15 covers 6..15: nothing left.
  CAF_CHECK(all_zero(w.stats(15'000)));
  // The totals never forget.
  CAF_CHECK_EQUAL(w.total_invocations(), 8u);
  CAF_CHECK_EQUAL(w.total_errors(), 5u);
}

CAF_TEST(a bucket reused for a later second forgets the earlier one) {
  invocation_window w{10};
  record_n(w, 1'000, 4, 1000, true); // second 1, slot 1
  record_n(w, 11'000, 1, 1000);      // second 11, the same slot
  auto s = w.stats(11'000);
  CAF_CHECK_EQUAL(s.invocations, 1u);
  CAF_CHECK_EQUAL(s.errors, 0u);
  CAF_CHECK_EQUAL(w.total_invocations(), 5u);
}

CAF_TEST(a time before a bucket does not count that bucket) {
  invocation_window w{10};
  record_n(w, 5'000, 3, 1000);
  CAF_CHECK(all_zero(w.stats(4'999)));
  CAF_CHECK_EQUAL(w.stats(5'000).invocations, 3u);
}

CAF_TEST(percentiles of a known distribution fall within the bucket resolution) {
  invocation_window w{60};
  record_n(w, 2'000, 90, 1'000);   // 1 ms
  record_n(w, 2'100, 10, 100'000); // 100 ms
  auto s = w.stats(2'500);
  CAF_REQUIRE_EQUAL(s.invocations, 100u);
  // Percentiles report the upper bound of their bucket: at or above the
  // true value, by less than one bucket width.
  CAF_CHECK_GREATER_OR_EQUAL(s.p50_ms, 1.0);
  CAF_CHECK_LESS(s.p50_ms, 1.0 * resolution);
  CAF_CHECK_GREATER_OR_EQUAL(s.p95_ms, 100.0);
  CAF_CHECK_LESS(s.p95_ms, 100.0 * resolution);
  CAF_CHECK_GREATER_OR_EQUAL(s.p99_ms, 100.0);
  CAF_CHECK_LESS(s.p99_ms, 100.0 * resolution);
  // The mean is exact: (90 * 1 + 10 * 100) / 100.
  CAF_CHECK_LESS(std::abs(s.mean_ms - 10.9), 1e-9);
}

CAF_TEST(a percentile moves to the slow bucket exactly at its rank) {
  // 95 fast and 5 slow: rank 95 is the last fast sample, rank 99 a slow one.
  invocation_window w{60};
  record_n(w, 2'000, 95, 1'000);
  record_n(w, 2'000, 5, 100'000);
  auto s = w.stats(2'000);
  CAF_CHECK_LESS(s.p95_ms, 1.0 * resolution);
  CAF_CHECK_GREATER_OR_EQUAL(s.p99_ms, 100.0);
  // One more slow sample of 101 pushes rank 96 (p95) into the slow bucket.
  record_n(w, 2'000, 1, 100'000);
  auto t = w.stats(2'000);
  CAF_CHECK_LESS(t.p50_ms, 1.0 * resolution);
  CAF_CHECK_GREATER_OR_EQUAL(t.p95_ms, 100.0);
}

CAF_TEST(an empty window reports zeros and divides by nothing) {
  invocation_window w{60};
  auto s = w.stats(123'456);
  CAF_CHECK(all_zero(s));
  CAF_CHECK(!std::isnan(s.error_rate));
  CAF_CHECK(!std::isnan(s.mean_ms));
  CAF_CHECK(!std::isnan(s.per_second));
  // A zero-length request and a zero-length window are both one second.
  CAF_CHECK(all_zero(w.stats(123'456, 0)));
  invocation_window tiny{0};
  tiny.record(7'000, 2'000, false);
  auto t = tiny.stats(7'200, 0);
  CAF_CHECK_EQUAL(t.invocations, 1u);
  CAF_CHECK_EQUAL(t.per_second, 1.0);
  CAF_CHECK(all_zero(tiny.stats(8'000)));
}

CAF_TEST(bucket_of and upper_bound_us are monotonic and bound the latency) {
  CAF_CHECK_EQUAL(invocation_window::bucket_of(0), 0u);
  CAF_CHECK_EQUAL(invocation_window::bucket_of(1), 0u);
  std::vector<uint64_t> latencies;
  for (uint64_t us = 0; us <= 5'000; ++us)
    latencies.push_back(us);
  for (double us = 5'001; us < 1e12; us *= 1.01)
    latencies.push_back(static_cast<uint64_t>(us));
  size_t previous = 0;
  size_t violations = 0;
  for (auto us : latencies) {
    auto b = invocation_window::bucket_of(us);
    if (b < previous || b >= invocation_window::latency_buckets)
      ++violations;
    previous = b;
    // Below the cap, a latency lies within its bucket: at most the upper
    // bound and above the bound of the bucket before.
    if (b > 0 && b < invocation_window::latency_buckets - 1) {
      if (static_cast<double>(us) > invocation_window::upper_bound_us(b)
          || static_cast<double>(us) <= invocation_window::upper_bound_us(b - 1))
        ++violations;
    }
  }
  CAF_CHECK_EQUAL(violations, 0u);
  for (size_t b = 1; b < invocation_window::latency_buckets; ++b)
    CAF_CHECK_LESS(invocation_window::upper_bound_us(b - 1), invocation_window::upper_bound_us(b));
  // The last bucket takes everything above the range (~2 min and more).
  CAF_CHECK_EQUAL(invocation_window::bucket_of(uint64_t{1} << 62),
                  invocation_window::latency_buckets - 1);
  CAF_CHECK_GREATER_OR_EQUAL(
    invocation_window::upper_bound_us(invocation_window::latency_buckets - 1), 120e6);
}
