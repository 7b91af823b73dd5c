#pragma once

// Windowed invocation metrics of one module version (pure state, no CAF, no
// clock: callers pass the time, so tests are deterministic). One bucket per
// second over the window; each bucket holds counts and a log-scale latency
// histogram (8 sub-buckets per power of two, ~9 % resolution, 1 us .. ~2 min).

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace hotswap {

/// What a window says about its recent past.
struct window_stats {
  uint64_t invocations = 0;
  uint64_t errors = 0;
  double error_rate = 0;       ///< errors / invocations, 0 when none
  double per_second = 0;       ///< invocations / window length
  double p50_ms = 0;           ///< 0 when there was no invocation
  double p95_ms = 0;
  double p99_ms = 0;
  double mean_ms = 0;
};

class invocation_window {
public:
  static constexpr size_t latency_buckets = 8 * 28;

  /// A window of `seconds` one-second buckets (at least 1).
  explicit invocation_window(uint32_t seconds = 60);

  /// Records one invocation that finished at `now_ms` (any monotonic
  /// milliseconds) after `latency_us`.
  void record(int64_t now_ms, uint64_t latency_us, bool error);

  /// Statistics over the last `seconds` (capped to the window) before
  /// `now_ms`, the current partial second included.
  window_stats stats(int64_t now_ms, uint32_t seconds) const;

  window_stats stats(int64_t now_ms) const {
    return stats(now_ms, static_cast<uint32_t>(buckets_.size()));
  }

  /// All invocations and errors ever recorded.
  uint64_t total_invocations() const {
    return total_;
  }
  uint64_t total_errors() const {
    return total_errors_;
  }

  /// The histogram bucket of a latency and the upper bound of a bucket (us).
  static size_t bucket_of(uint64_t latency_us);
  static double upper_bound_us(size_t bucket);

private:
  struct bucket {
    int64_t second = -1;       ///< which second this bucket holds (-1 = empty)
    uint64_t invocations = 0;
    uint64_t errors = 0;
    double latency_sum_us = 0;
    std::array<uint32_t, latency_buckets> latency{};
  };
  std::vector<bucket> buckets_;
  uint64_t total_ = 0;
  uint64_t total_errors_ = 0;
};

} // namespace hotswap
