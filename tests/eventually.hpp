#pragma once

// Polling with a deadline for tests that wait on another thread or process
// (never a bare sleep standing in for a condition).

#include <chrono>
#include <thread>

namespace hotswap::test {

/// Polls `pred` every `interval` until it holds (true) or `deadline` has
/// passed (false).
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds deadline,
                std::chrono::milliseconds interval) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until)
      return false;
    std::this_thread::sleep_for(interval);
  }
  return true;
}

} // namespace hotswap::test
