#include "hotswap/actors/invocation_window.hpp"

#include <algorithm>
#include <cmath>

namespace hotswap {

invocation_window::invocation_window(uint32_t seconds) : buckets_(std::max<uint32_t>(1, seconds)) {
}

size_t invocation_window::bucket_of(uint64_t latency_us) {
  if (latency_us <= 1)
    return 0;
  // 8 sub-buckets per power of two: index = ceil(8 * log2(us)).
  auto idx = static_cast<size_t>(std::ceil(8.0 * std::log2(static_cast<double>(latency_us))));
  return std::min(idx, latency_buckets - 1);
}

double invocation_window::upper_bound_us(size_t bucket) {
  return std::exp2(static_cast<double>(bucket) / 8.0);
}

void invocation_window::record(int64_t now_ms, uint64_t latency_us, bool error) {
  auto second = now_ms / 1000;
  auto& b = buckets_[static_cast<size_t>(second) % buckets_.size()];
  if (b.second != second) {
    b = bucket{};
    b.second = second;
  }
  ++b.invocations;
  if (error)
    ++b.errors;
  b.latency_sum_us += static_cast<double>(latency_us);
  ++b.latency[bucket_of(latency_us)];
  ++total_;
  if (error)
    ++total_errors_;
}

window_stats invocation_window::stats(int64_t now_ms, uint32_t seconds) const {
  seconds = std::max<uint32_t>(1, std::min<uint32_t>(seconds, buckets_.size()));
  auto now_second = now_ms / 1000;
  window_stats out;
  std::array<uint64_t, latency_buckets> merged{};
  double sum_us = 0;
  for (auto& b : buckets_) {
    if (b.second < 0 || b.second > now_second || now_second - b.second >= seconds)
      continue;
    out.invocations += b.invocations;
    out.errors += b.errors;
    sum_us += b.latency_sum_us;
    for (size_t i = 0; i < latency_buckets; ++i)
      merged[i] += b.latency[i];
  }
  out.per_second = static_cast<double>(out.invocations) / seconds;
  if (out.invocations == 0)
    return out;
  out.error_rate = static_cast<double>(out.errors) / static_cast<double>(out.invocations);
  out.mean_ms = sum_us / static_cast<double>(out.invocations) / 1000.0;
  auto quantile = [&](double q) {
    // The smallest bucket whose cumulative count reaches q of all samples.
    auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(out.invocations)));
    rank = std::max<uint64_t>(1, rank);
    uint64_t seen = 0;
    for (size_t i = 0; i < latency_buckets; ++i) {
      seen += merged[i];
      if (seen >= rank)
        return upper_bound_us(i) / 1000.0;
    }
    return upper_bound_us(latency_buckets - 1) / 1000.0;
  };
  out.p50_ms = quantile(0.50);
  out.p95_ms = quantile(0.95);
  out.p99_ms = quantile(0.99);
  return out;
}

} // namespace hotswap
