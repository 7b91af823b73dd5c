#pragma once

// The hotswap module SDK: the one header a module author builds against.
//
// A module is a shared library that exports one versioned entry point,
// `hotswap_module_v1`, declared with HOTSWAP_MODULE below. The runtime reads
// the library's ABI token (SDK version, CAF version, compiler, C++ standard
// library ABI) from the ELF section ".hotswap_abi" before it trusts the file
// (at upload, without running any code), checks it again through the entry
// point after dlopen, runs the module's self-check, and only then spawns the
// module's handler.
//
// The handler is a CAF actor spawned by the runtime: the runtime's own actor
// type, with the behavior the module returns from `make_behavior`. It answers
//
//   (invoke_atom, hotswap::sdk::request) -> hotswap::sdk::reply
//
// and talks to the runtime only through actor messages to `context::runtime`
// (see "Messages to the runtime" below). Messages between a module and the
// runtime use the types of this header only, never types defined inside a
// module: the runtime unloads (dlclose) a retired version once its actors are
// gone, and no message, behavior or callback whose code lives in the library
// may outlive that. Rules for module authors (docs/modules.md):
//
//   - keep all state inside the behavior (captured by its handlers);
//   - do not spawn actors, attach functors, set default/exit/down handlers or
//     store the actor pointer anywhere else;
//   - use only the message shapes listed here (delayed messages to yourself
//     included: use tick_atom with an integer);
//   - never block: answer later with a response promise and a delayed
//     tick_atom message instead of sleeping.

#include <cstdint>
#include <string>

#include "caf/actor.hpp"
#include "caf/atom.hpp"
#include "caf/behavior.hpp"
#include "caf/config.hpp"
#include "caf/event_based_actor.hpp"
#include "caf/meta/type_name.hpp"

/// The version of this SDK. Incremented on any change to the entry point,
/// the structs or the message shapes below.
#define HOTSWAP_SDK_VERSION 2

#define HOTSWAP_SDK_STR2(x) #x
#define HOTSWAP_SDK_STR(x) HOTSWAP_SDK_STR2(x)

/// What must match between the runtime and a module, as one string.
#define HOTSWAP_ABI_TOKEN                                                                       \
  "hotswap-sdk/" HOTSWAP_SDK_STR(HOTSWAP_SDK_VERSION) " caf/" HOTSWAP_SDK_STR(CAF_VERSION)     \
    " gcc/" HOTSWAP_SDK_STR(__GNUC__) "." HOTSWAP_SDK_STR(__GNUC_MINOR__) " cxx11abi/"          \
    HOTSWAP_SDK_STR(_GLIBCXX_USE_CXX11_ABI)

namespace hotswap::sdk {

// -- message tags ----------------------------------------------------------------

/// Runtime -> module: one request. Module -> runtime: call another module.
using invoke_atom = caf::atom_constant<caf::atom("invoke")>;
/// Module -> runtime: publish a durable message on a topic of the message
/// queue (fire and forget; event.topic is the topic, event.payload JSON).
using publish_atom = caf::atom_constant<caf::atom("publish")>;
/// Module -> runtime: receive a stream (fire and forget, idempotent).
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
/// Runtime -> module: one delivery of a subscribed stream (a request).
using deliver_atom = caf::atom_constant<caf::atom("deliver")>;
/// Module -> runtime: read this module's configuration (JSON text).
using config_atom = caf::atom_constant<caf::atom("config")>;
/// Module -> runtime: report a custom metric sample (fire and forget).
using metric_atom = caf::atom_constant<caf::atom("metric")>;
/// Module -> itself: a timer (e.g. to answer a promise later).
using tick_atom = caf::atom_constant<caf::atom("sdk_tick")>;

// -- message types ---------------------------------------------------------------

/// One invocation.
struct request {
  std::string payload;      ///< raw request bytes (the HTTP body for REST calls)
  std::string content_type; ///< the caller's content type, may be empty
  std::string trace_id;     ///< W3C trace id of the call
  std::string caller;       ///< "http:<user>" or "module:<name>" or "caf"
  std::string tenant;       ///< the calling user's tenant; empty for platform callers
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request& x) {
  return f(caf::meta::type_name("hotswap_sdk_request"), x.payload, x.content_type, x.trace_id,
           x.caller, x.tenant);
}

/// The answer to one invocation. A non-empty `error` marks a failed
/// invocation (counted as an error; REST answers 502 with the text).
struct reply {
  std::string payload;
  std::string content_type = "application/octet-stream";
  std::string error;

  bool ok() const {
    return error.empty();
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, reply& x) {
  return f(caf::meta::type_name("hotswap_sdk_reply"), x.payload, x.content_type, x.error);
}

/// A message a module publishes, or one delivery to a module.
struct event {
  std::string topic;
  std::string payload;      ///< JSON text
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event& x) {
  return f(caf::meta::type_name("hotswap_sdk_event"), x.topic, x.payload);
}

/// A custom metric sample (a gauge: the last value per name is kept).
struct metric {
  std::string name;         ///< [a-z0-9_]{1,64}; up to 16 names per version
  double value = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, metric& x) {
  return f(caf::meta::type_name("hotswap_sdk_metric"), x.name, x.value);
}

// -- the module context ----------------------------------------------------------

/// What the runtime hands to `make_behavior`. Plain values plus one actor
/// handle; copy what you need into the behavior.
///
/// Messages to the runtime (send them to `runtime`):
///   (publish_atom, event)                  -> no answer; a durable message on
///                                             topic event.topic (the Messages
///                                             API's queue), payload JSON
///   (subscribe_atom, std::string source)   -> no answer; from then on the
///                                             module's actors receive
///                                             (deliver_atom, event) requests:
///     "events"        every event of the node's event stream the module's
///                     tenant may see (platform modules: all); topic "events",
///                     payload the event JSON as WebSocket clients get it
///     "topic:<name>"  the messages of topic <name> in consumer group
///                     "module:<module name>"; topic <name>, payload the
///                     message JSON. Answer a reply: without error the message
///                     is acknowledged; with an error (or none within the ack
///                     deadline) it is redelivered, then dead-lettered.
///   (metric_atom, metric)                  -> no answer
///   (config_atom)                          -> std::string (JSON text, "{}" when none)
///   (invoke_atom, std::string module, request) -> reply (same environment,
///                                              routed by weight like any call)
struct context {
  std::string module;       ///< the module's name
  std::string version;      ///< the loaded version
  std::string environment;  ///< the environment this slot serves
  std::string node;         ///< the node id
  caf::actor runtime;       ///< the runtime's gateway for this version
};

// -- the entry point ----------------------------------------------------------------

/// Builds the behavior of one handler actor. Called once per handler actor
/// (the runtime may run several per version).
using make_behavior_fn = caf::behavior (*)(caf::event_based_actor* self, const context& ctx);

/// Returns nullptr when the module is healthy, else a static message. Runs
/// once after loading, off the scheduler threads; it must not block long.
using self_check_fn = const char* (*)();

/// What the entry point returns. The layout is fixed for SDK version 1.
struct module_definition {
  const char* abi_token;
  const char* name;
  const char* version;
  const char* description;
  make_behavior_fn make_behavior;
  self_check_fn self_check;
};

/// The entry point's type and name.
using entry_fn = const module_definition* (*)();
constexpr const char* entry_symbol = "hotswap_module_v1";

/// The ELF section that carries "ABI-TOKEN\nNAME\nVERSION" (NUL-terminated)
/// so the runtime can check an uploaded file without loading it.
constexpr const char* abi_section = ".hotswap_abi";

} // namespace hotswap::sdk

/// Declares a module. Use once, at namespace scope, in one source file:
///
///   HOTSWAP_MODULE("echo", "1.0.0", "Echoes its payload", make_behavior, self_check)
///
/// NAME and VERSION must be string literals; they must match the name and
/// version the module is uploaded under.
#define HOTSWAP_MODULE(NAME, VERSION, DESCRIPTION, MAKE_BEHAVIOR, SELF_CHECK)                  \
  extern "C" __attribute__((section(".hotswap_abi"), used, visibility("default")))             \
  const char hotswap_module_abi[] = HOTSWAP_ABI_TOKEN "\n" NAME "\n" VERSION;                   \
  extern "C" __attribute__((visibility("default"))) const ::hotswap::sdk::module_definition*   \
  hotswap_module_v1() {                                                                         \
    static const ::hotswap::sdk::module_definition definition{                                 \
      HOTSWAP_ABI_TOKEN, NAME, VERSION, DESCRIPTION, MAKE_BEHAVIOR, SELF_CHECK};               \
    return &definition;                                                                         \
  }
