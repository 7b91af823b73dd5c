// flaky: answers a configurable share of requests with an error. The share
// comes from the module's configuration ({"error_percent": 0..100}, default
// 50), read from the runtime at start; calls are counted across all handler
// actors of the version so the share is exact over every 100 calls of the
// version (no random numbers).

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>

#include <hotswap/module.hpp>

namespace {

struct flaky_state {
  int error_percent = 50;
};

/// Calls of this version over all its handlers. Module-wide state must be
/// trivially destructible (docs/modules.md): nothing runs at dlclose.
std::atomic<uint64_t> calls{0};

/// Reads "error_percent" from a flat JSON object without a JSON library.
int parse_percent(const std::string& json, int fallback) {
  auto key = json.find("\"error_percent\"");
  if (key == std::string::npos)
    return fallback;
  auto colon = json.find(':', key);
  if (colon == std::string::npos)
    return fallback;
  auto v = std::atoi(json.c_str() + colon + 1);
  return v < 0 ? 0 : (v > 100 ? 100 : v);
}

caf::behavior make_behavior(caf::event_based_actor* self, const hotswap::sdk::context& ctx) {
  auto st = std::make_shared<flaky_state>();
  self->request(ctx.runtime, caf::infinite, hotswap::sdk::config_atom::value)
    .then([st](std::string& json) { st->error_percent = parse_percent(json, 50); });
  return {
    [st](hotswap::sdk::invoke_atom, hotswap::sdk::request& req) {
      hotswap::sdk::reply r;
      auto n = calls.fetch_add(1, std::memory_order_relaxed) % 100;
      if (static_cast<int>(n) < st->error_percent) {
        r.error = "flaky: simulated failure";
      } else {
        r.payload = "flaky ok: " + req.payload;
        r.content_type = "text/plain";
      }
      return r;
    },
  };
}

const char* self_check() {
  return nullptr;
}

} // namespace

HOTSWAP_MODULE("flaky", "1.0.0", "Fails a configurable share of requests", make_behavior,
               self_check)
