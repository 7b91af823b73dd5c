#include "hotswap/actors/rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace hotswap {

namespace {

/// Sweeps for idle buckets run at most this often.
constexpr auto sweep_interval = std::chrono::seconds{10};

/// A bucket refills at capacity/60 tokens per second, so whatever its capacity
/// it is full again at the latest one minute after its last use. A full bucket
/// is indistinguishable from a fresh one, so dropping it changes no decision.
constexpr auto full_after = std::chrono::seconds{60};

/// Absorbs floating-point noise from summing refills (0.9999999999 tokens is
/// one token, 1.0000000001 s is 1 s).
constexpr double epsilon = 1e-9;

int64_t ceil_seconds(double x) {
  return static_cast<int64_t>(std::ceil(x - epsilon));
}

} // namespace

rate_decision rate_limiter::take(const std::string& category, const std::string& key,
                                 uint32_t per_minute, clock::time_point now) {
  rate_decision d;
  d.limit = per_minute;
  if (per_minute == 0) {
    // A zero limit admits nothing; no bucket is kept for it.
    d.allowed = false;
    d.remaining = 0;
    d.reset_seconds = 60;
    d.retry_after = 60;
    return d;
  }
  const double capacity = per_minute;
  const double rate = capacity / 60.0; // tokens per second
  std::string id;
  id.reserve(category.size() + 1 + key.size());
  id.append(category).append(1, '\x1f').append(key);
  std::lock_guard<std::mutex> guard{mtx_};
  evict_idle(now);
  auto [it, fresh] = buckets_.try_emplace(std::move(id), bucket{capacity, now});
  auto& b = it->second;
  if (!fresh) {
    // Time never runs backwards for a bucket (injected clocks may).
    if (now > b.last) {
      std::chrono::duration<double> elapsed = now - b.last;
      b.tokens += elapsed.count() * rate;
      b.last = now;
    }
    // The limit may have been reconfigured downwards.
    b.tokens = std::min(b.tokens, capacity);
  }
  if (b.tokens + epsilon >= 1.0) {
    b.tokens = std::max(0.0, b.tokens - 1.0);
    d.allowed = true;
    d.retry_after = 0;
  } else {
    d.allowed = false;
    d.retry_after = std::max<int64_t>(1, ceil_seconds((1.0 - b.tokens) / rate));
  }
  d.remaining = static_cast<uint32_t>(std::floor(b.tokens + epsilon));
  d.reset_seconds = std::max<int64_t>(0, ceil_seconds((capacity - b.tokens) / rate));
  return d;
}

size_t rate_limiter::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return buckets_.size();
}

void rate_limiter::evict_idle(clock::time_point now) {
  // Called with mtx_ held.
  if (now - last_sweep_ < sweep_interval)
    return;
  last_sweep_ = now;
  for (auto i = buckets_.begin(); i != buckets_.end();) {
    if (now - i->second.last >= full_after)
      i = buckets_.erase(i);
    else
      ++i;
  }
}

} // namespace hotswap
