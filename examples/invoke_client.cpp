// An external CAF client that calls a module through a hotswap node's typed
// invocation interface (node_invoker_actor, published on cluster.listen).
//
//   invoke_client HOST PORT ENVIRONMENT MODULE PAYLOAD [COUNT]
//
// e.g. after `scripts/dev.sh` and staging echo in Development:
//   build/examples/invoke_client 127.0.0.1 7100 Development echo hello 3

#include <cstdlib>
#include <iostream>
#include <string>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/io/middleman.hpp"
#include "caf/scoped_actor.hpp"

#include "hotswap/actors/invoker.hpp"
#include "hotswap/actors/node.hpp"
#include "hotswap/runtime/errc.hpp"

namespace {

struct client_config : caf::actor_system_config {
  client_config() {
    hotswap::register_types(*this); // the same message types as the node
    load<caf::io::middleman>();
  }
};

} // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::cerr << "usage: invoke_client HOST PORT ENVIRONMENT MODULE PAYLOAD [COUNT]\n";
    return 2;
  }
  std::string host = argv[1];
  auto port = static_cast<uint16_t>(std::atoi(argv[2]));
  std::string env = argv[3];
  std::string module = argv[4];
  std::string payload = argv[5];
  int count = argc > 6 ? std::atoi(argv[6]) : 1;
  client_config cfg;
  caf::actor_system sys{cfg};
  auto node = sys.middleman().remote_actor<hotswap::node_invoker_actor>(host, port);
  if (!node) {
    std::cerr << "cannot connect to " << host << ":" << port << ": " << sys.render(node.error())
              << "\n";
    return 1;
  }
  caf::scoped_actor self{sys};
  int failures = 0;
  for (int i = 0; i < count; ++i) {
    hotswap::sdk::request req;
    req.payload = payload;
    req.content_type = "text/plain";
    req.caller = "caf:invoke_client";
    self->request(*node, std::chrono::seconds(10), hotswap::sdk::invoke_atom::value, env, module,
                  req)
      .receive(
        [&](hotswap::invoke_result& r) {
          if (r.reply.ok())
            std::cout << "[" << r.version << "] " << r.reply.payload << "\n";
          else {
            std::cout << r.module << " " << r.version << " failed: " << r.reply.error << "\n";
            ++failures;
          }
        },
        [&](caf::error& err) {
          std::cout << "error: " << sys.render(err) << "\n";
          ++failures;
        });
  }
  return failures == 0 ? 0 : 1;
}
