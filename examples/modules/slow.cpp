// slow: answers after a configurable delay ({"latency_ms": N}, default 50)
// without blocking a scheduler thread: the answer goes out through a
// response promise when a delayed tick arrives. slow-2.0.0.so adds
// SLOW_EXTRA_MS on top (a canary whose latency must roll it back).

#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include <hotswap/module.hpp>

#ifndef SLOW_VERSION
#  define SLOW_VERSION "1.0.0"
#endif
#ifndef SLOW_EXTRA_MS
#  define SLOW_EXTRA_MS 0
#endif

namespace {

struct slow_state {
  int latency_ms = 50;
  uint64_t next_id = 0;
  std::map<uint64_t, std::pair<caf::response_promise, std::string>> pending;
};

int parse_latency(const std::string& json, int fallback) {
  auto key = json.find("\"latency_ms\"");
  if (key == std::string::npos)
    return fallback;
  auto colon = json.find(':', key);
  if (colon == std::string::npos)
    return fallback;
  auto v = std::atoi(json.c_str() + colon + 1);
  return v < 0 ? 0 : (v > 60000 ? 60000 : v);
}

caf::behavior make_behavior(caf::event_based_actor* self, const hotswap::sdk::context& ctx) {
  auto st = std::make_shared<slow_state>();
  self->request(ctx.runtime, caf::infinite, hotswap::sdk::config_atom::value)
    .then([st](std::string& json) { st->latency_ms = parse_latency(json, 50); });
  return {
    [self, st](hotswap::sdk::invoke_atom, hotswap::sdk::request& req) {
      auto id = st->next_id++;
      auto rp = self->make_response_promise();
      st->pending.emplace(id, std::make_pair(rp, std::move(req.payload)));
      self->delayed_send(self, std::chrono::milliseconds(st->latency_ms + SLOW_EXTRA_MS),
                         hotswap::sdk::tick_atom::value, id);
      return rp;
    },
    [st](hotswap::sdk::tick_atom, uint64_t id) {
      auto i = st->pending.find(id);
      if (i == st->pending.end())
        return;
      hotswap::sdk::reply r;
      r.payload = "slow: " + i->second.second;
      r.content_type = "text/plain";
      i->second.first.deliver(std::move(r));
      st->pending.erase(i);
    },
  };
}

const char* self_check() {
  return nullptr;
}

} // namespace

HOTSWAP_MODULE("slow", SLOW_VERSION, "Answers after a configurable delay", make_behavior,
               self_check)
