#include "hotswap/actors/invoker.hpp"

#include "caf/typed_event_based_actor.hpp"

#include "hotswap/runtime/errc.hpp"

namespace hotswap {

namespace {

node_invoker_actor::behavior_type invoker(node_invoker_actor::pointer self, node_hosts local) {
  std::map<std::string, module_host_actor> hosts;
  for (auto& [env, ptr] : local.workers)
    hosts.emplace(env, caf::actor_cast<module_host_actor>(ptr));
  return {
    [=](sdk::invoke_atom, std::string& env, std::string& module,
        sdk::request& req) -> caf::delegated<invoke_result> {
      auto i = hosts.find(env);
      if (i == hosts.end()) {
        auto rp = self->make_response_promise();
        rp.deliver(caf::make_error(errc::not_found, "this node serves no environment " + env));
        return {};
      }
      if (req.caller.empty())
        req.caller = "caf";
      return self->delegate(i->second, sdk::invoke_atom::value, std::move(module),
                            std::move(req));
    },
    [=](hosts_atom) { return local; },
  };
}

} // namespace

node_invoker_actor spawn_node_invoker(caf::actor_system& sys, node_hosts local) {
  return sys.spawn(invoker, std::move(local));
}

} // namespace hotswap
