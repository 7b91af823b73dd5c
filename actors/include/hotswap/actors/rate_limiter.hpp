#pragma once

// Token buckets per (category, key), refilled continuously at limit/minute.
// Thread-safe (a mutex per limiter); memory bounded by evicting full, idle
// buckets. The cluster issue replaces the storage with Redis.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace hotswap {

struct rate_decision {
  bool allowed = true;
  uint32_t limit = 0;        ///< X-RateLimit-Limit
  uint32_t remaining = 0;    ///< X-RateLimit-Remaining (after this request)
  int64_t reset_seconds = 0; ///< X-RateLimit-Reset: seconds until the bucket is full again
  int64_t retry_after = 0;   ///< Retry-After when denied (seconds, >= 1)
};

class rate_limiter {
public:
  using clock = std::chrono::steady_clock;

  /// Takes one token from bucket (category, key) whose capacity is
  /// `per_minute`; `now` is injectable for tests.
  rate_decision take(const std::string& category, const std::string& key, uint32_t per_minute,
                     clock::time_point now = clock::now());

  size_t size() const;

private:
  struct bucket {
    double tokens;
    clock::time_point last;
  };
  void evict_idle(clock::time_point now);
  mutable std::mutex mtx_;
  std::unordered_map<std::string, bucket> buckets_;
  clock::time_point last_sweep_{};
};

} // namespace hotswap
