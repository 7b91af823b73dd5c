#pragma once

// What the in-process benchmarks (module_bench, deploy_bench) share: the
// node's scheduler settings and storing the example echo module versions.

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/scoped_actor.hpp"

#include "hotswap/actors/node.hpp"
#include "hotswap/runtime/module_file.hpp"
#include "hotswap/runtime/module_signing.hpp"
#include "hotswap/runtime/store_actor.hpp"

namespace hotswap::bench {

/// The node's types and scheduler (docs/adr/0002-scheduler.md).
struct bench_config : caf::actor_system_config {
  bench_config() {
    register_types(*this);
    auto cores = std::max(2u, std::thread::hardware_concurrency());
    set("scheduler.policy", caf::atom("sharing"));
    set("scheduler.max-threads", static_cast<size_t>(cores));
  }
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Stores echo 1.0.0 and 2.0.0 from `dir` (unsigned) in `store`; prints the
/// reason and returns false when a file is not a module or the store refuses.
inline bool store_echo_versions(caf::actor_system& sys, caf::scoped_actor& self,
                                const store_actor& store, const std::string& dir) {
  for (auto version : {"1.0.0", "2.0.0"}) {
    auto bytes = read_file(dir + "/echo-" + version + ".so");
    auto info = inspect_module_file(bytes);
    if (!info) {
      std::fprintf(stderr, "%s/echo-%s.so: %s\n", dir.c_str(), version,
                   sys.render(info.error()).c_str());
      return false;
    }
    module_record r;
    r.name = "echo";
    r.version = version;
    r.digest = modsig::digest(bytes);
    r.size = static_cast<int64_t>(bytes.size());
    r.abi_token = info->abi_token;
    r.uploaded_by = "bench";
    audit_event ev;
    ev.category = "Module";
    ev.action = "ModuleUploaded";
    ev.result = "Success";
    ev.actor_user = "bench";
    ev.detail = "{}";
    bool ok = false;
    self->request(store, std::chrono::seconds(30), module_atom::value, put_atom::value, r, bytes,
                  ev)
      .receive([&](module_put_result&) { ok = true; },
               [&](caf::error& e) { std::fprintf(stderr, "put: %s\n", sys.render(e).c_str()); });
    if (!ok)
      return false;
  }
  return true;
}

} // namespace hotswap::bench
