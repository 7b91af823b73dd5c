// watcher: reacts to the event stream and to a topic through its module
// context (actor messages only; docs/modules.md, "Events and messages").
//
// - It subscribes to "events": for every deployment that reaches Succeeded it
//   publishes a message on topic "watcher.out" ({"deploymentSucceeded": id}).
// - It subscribes to "topic:watcher.in" (consumer group "module:watcher"): for
//   each message it publishes {"seen": <the message JSON>} on "watcher.out"
//   and acknowledges it, except when the payload contains "reject": then it
//   answers an error, so the queue redelivers it and finally dead-letters it.
// - An invocation answers its counters: "events=E messages=M rejected=R".

#include <atomic>
#include <string>

#include <hotswap/module.hpp>

namespace {

namespace sdk = hotswap::sdk;

std::atomic<uint64_t> events_seen{0};
std::atomic<uint64_t> messages_seen{0};
std::atomic<uint64_t> rejected{0};

/// The value of string field `key` in flat JSON text (enough for the fields
/// this module reads; a real module would use a JSON library).
std::string field(const std::string& json, const std::string& key) {
  auto k = "\"" + key + "\":\"";
  auto i = json.find(k);
  if (i == std::string::npos)
    return {};
  i += k.size();
  auto j = json.find('"', i);
  return j == std::string::npos ? std::string{} : json.substr(i, j - i);
}

caf::behavior make_behavior(caf::event_based_actor* self, const sdk::context& ctx) {
  auto runtime = ctx.runtime;
  // Every handler asks; the runtime subscribes each version once.
  self->send(runtime, sdk::subscribe_atom::value, std::string{"events"});
  self->send(runtime, sdk::subscribe_atom::value, std::string{"topic:watcher.in"});
  return {
    [=](sdk::deliver_atom, sdk::event& ev) {
      sdk::reply r;
      if (ev.topic == "events") {
        events_seen.fetch_add(1, std::memory_order_relaxed);
        if (field(ev.payload, "type") == "DeploymentStatusChanged"
            && field(ev.payload, "status") == "Succeeded")
          self->send(runtime, sdk::publish_atom::value,
                     sdk::event{"watcher.out", "{\"deploymentSucceeded\":\""
                                                 + field(ev.payload, "executionId") + "\"}"});
        return r;
      }
      if (ev.payload.find("reject") != std::string::npos) {
        rejected.fetch_add(1, std::memory_order_relaxed);
        r.error = "watcher: rejected on purpose";
        return r;
      }
      messages_seen.fetch_add(1, std::memory_order_relaxed);
      self->send(runtime, sdk::publish_atom::value,
                 sdk::event{"watcher.out", "{\"seen\":" + ev.payload + "}"});
      return r;
    },
    [](sdk::invoke_atom, sdk::request&) {
      sdk::reply r;
      r.content_type = "text/plain";
      r.payload = "events=" + std::to_string(events_seen.load())
                  + " messages=" + std::to_string(messages_seen.load())
                  + " rejected=" + std::to_string(rejected.load());
      return r;
    },
  };
}

const char* self_check() {
  return nullptr;
}

} // namespace

HOTSWAP_MODULE("watcher", "1.0.0", "Reacts to deployment events and to topic watcher.in",
               make_behavior, self_check)
