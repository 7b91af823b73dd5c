// echo: answers with its payload, prefixed by the module version so a client
// can tell versions apart. Built twice, as echo-1.0.0.so and echo-2.0.0.so
// (ECHO_VERSION is set by CMake).

#include <hotswap/module.hpp>

#ifndef ECHO_VERSION
#  error "ECHO_VERSION must be defined"
#endif

namespace {

caf::behavior make_behavior(caf::event_based_actor*, const hotswap::sdk::context& ctx) {
  auto prefix = "echo " + ctx.version + ": ";
  return {
    [prefix](hotswap::sdk::invoke_atom, hotswap::sdk::request& req) {
      hotswap::sdk::reply r;
      r.payload = prefix + req.payload;
      r.content_type = "text/plain";
      return r;
    },
  };
}

const char* self_check() {
  return nullptr;
}

} // namespace

HOTSWAP_MODULE("echo", ECHO_VERSION, "Echoes its payload, prefixed by its version",
               make_behavior, self_check)
