#pragma once

// OTP-style restart intensity with exponential backoff, as a plain value
// type (no CAF): supervisors feed it failures and act on its decision.

#include <chrono>
#include <cstdint>
#include <deque>

namespace hotswap {

struct restart_policy_config {
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{5000};
  uint32_t intensity = 5;                 ///< more restarts than this ...
  std::chrono::milliseconds period{60000}; ///< ... within this period escalate
};

struct restart_decision {
  bool escalate = false;
  std::chrono::milliseconds delay{0};     ///< wait this long before restarting
};

class restart_policy {
public:
  using time_point = std::chrono::steady_clock::time_point;

  explicit restart_policy(restart_policy_config cfg = {}) : cfg_(cfg) {
  }

  /// Records one failure at `now` and decides: restart after a delay that
  /// doubles with every failure inside the period, or escalate when the
  /// number of failures inside the period exceeds the intensity.
  restart_decision on_failure(time_point now);

  /// Failures still inside the period at `now`.
  size_t recent_failures(time_point now);

private:
  void expire(time_point now);
  restart_policy_config cfg_;
  std::deque<time_point> failures_;
};

} // namespace hotswap
