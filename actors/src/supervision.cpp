#include "hotswap/actors/supervision.hpp"

#include <algorithm>

namespace hotswap {

void restart_policy::expire(time_point now) {
  while (!failures_.empty() && now - failures_.front() >= cfg_.period)
    failures_.pop_front();
}

size_t restart_policy::recent_failures(time_point now) {
  expire(now);
  return failures_.size();
}

restart_decision restart_policy::on_failure(time_point now) {
  expire(now);
  failures_.push_back(now);
  restart_decision d;
  if (failures_.size() > cfg_.intensity) {
    d.escalate = true;
    return d;
  }
  // 1st failure: initial backoff; each further failure in the period doubles it.
  auto delay = cfg_.backoff_initial;
  for (size_t i = 1; i < failures_.size() && delay < cfg_.backoff_max; ++i)
    delay *= 2;
  d.delay = std::min(delay, cfg_.backoff_max);
  return d;
}

} // namespace hotswap
