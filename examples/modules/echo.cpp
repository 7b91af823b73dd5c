// echo: answers with its payload, prefixed by the module version so a client
// can tell versions apart. Built as echo-1.0.0.so and echo-2.0.0.so
// (ECHO_VERSION is set by CMake), and as two broken versions that test
// fixtures deploy on purpose: echo-3.0.0.so fails ECHO_FAIL_PERCENT of its
// calls (a canary that must roll back), echo-4.0.0.so fails its self-check
// (a version that must never take traffic).

#include <atomic>

#include <hotswap/module.hpp>

#ifndef ECHO_VERSION
#  error "ECHO_VERSION must be defined"
#endif

#ifndef ECHO_FAIL_PERCENT
#  define ECHO_FAIL_PERCENT 0
#endif

namespace {

/// Calls of this version over all its handlers (trivially destructible).
std::atomic<uint64_t> calls{0};

caf::behavior make_behavior(caf::event_based_actor*, const hotswap::sdk::context& ctx) {
  auto prefix = "echo " + ctx.version + ": ";
  return {
    [prefix](hotswap::sdk::invoke_atom, hotswap::sdk::request& req) {
      hotswap::sdk::reply r;
      auto n = calls.fetch_add(1, std::memory_order_relaxed) % 100;
      if (static_cast<int>(n) < ECHO_FAIL_PERCENT) {
        r.error = "echo " ECHO_VERSION ": failing on purpose";
        return r;
      }
      r.payload = prefix + req.payload;
      r.content_type = "text/plain";
      return r;
    },
  };
}

const char* self_check() {
#ifdef ECHO_SELF_CHECK_FAILS
  return "echo " ECHO_VERSION " fails its self-check on purpose";
#else
  return nullptr;
#endif
}

} // namespace

HOTSWAP_MODULE("echo", ECHO_VERSION, "Echoes its payload, prefixed by its version",
               make_behavior, self_check)
