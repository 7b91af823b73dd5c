// Deployment throughput and latency, against the raw worker commands the
// deployment sends, measured in one run.
//
//   deploy_bench [MODULES_DIR] [--deployments N] [--store URL]
//
// One process holds the node's pieces: a store (SQLite file by default, or
// --store postgresql://...), the module loader, a module_host for
// Development, the approval host and the deployment host. It runs N Direct
// deployments of echo, alternating 1.0.0 and 2.0.0, one after the other:
//   (a) raw: the worker commands a Direct deployment sends (stage, weights,
//       probe, retire), sent straight to the module_host;
//   (b) hotswap: create the deployment through the deployment host and wait
//       until its snapshot says Succeeded (every transition persisted with
//       its audit event, plan, epochs, validation).
// Prints deployments/s, p50/p99 from create to Succeeded, and the ratio
// hotswap/raw time per deployment (the cost of durability and orchestration).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/scoped_actor.hpp"

#include "hotswap/actors/approval.hpp"
#include "hotswap/actors/deployment.hpp"
#include "hotswap/actors/deployment_state.hpp"
#include "hotswap/actors/module_host.hpp"
#include "hotswap/actors/module_loader.hpp"
#include "hotswap/actors/node.hpp"
#include "bench_support.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/config/config.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/module_file.hpp"
#include "hotswap/runtime/module_signing.hpp"
#include "hotswap/runtime/store_actor.hpp"

using namespace hotswap;
using clock_type = std::chrono::steady_clock;

#ifndef HOTSWAP_EXAMPLE_MODULES_DIR
#  define HOTSWAP_EXAMPLE_MODULES_DIR "examples/modules"
#endif

namespace {

double percentile(std::vector<double> v, double q) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

} // namespace

int main(int argc, char** argv) {
  setup_logging("warn", false);
  std::string dir = HOTSWAP_EXAMPLE_MODULES_DIR;
  std::string store_url;
  int n = 50;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--deployments" && i + 1 < argc)
      n = std::atoi(argv[++i]);
    else if (a == "--store" && i + 1 < argc)
      store_url = argv[++i];
    else
      dir = a;
  }
  auto tmp = std::filesystem::temp_directory_path()
             / ("hotswap-deploy-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(tmp);
  if (store_url.empty())
    store_url = "sqlite://" + (tmp / "bench.db").string();
  bench::bench_config cfg;
  caf::actor_system sys{cfg};
  auto store = spawn_store_pool(sys, store_url, 4, nullptr);
  if (!store) {
    std::fprintf(stderr, "store: %s\n", sys.render(store.error()).c_str());
    return 1;
  }
  caf::scoped_actor self{sys};
  if (!bench::store_echo_versions(sys, self, *store, dir))
    return 1;
  auto loader = spawn_module_loader(sys, loader_env{*store, modsig::trusted_keys{},
                                                    (tmp / "modules").string()});
  module_host_env menv;
  menv.node_id = "bench";
  menv.environment = "Development";
  menv.require_signed = false;
  menv.loader = loader;
  menv.store = *store;
  auto worker = spawn_module_host(sys, menv);
  node_info me;
  me.id = "bench";
  auto registry = spawn_local_registry(sys, me);
  host_env henv;
  henv.node_id = "bench";
  henv.store = *store;
  henv.registry = registry;
  auto approvals = spawn_approval_host(sys, henv);
  auto node_cfg = std::make_shared<config::node_config>(config::default_config());
  deployment_env denv;
  denv.host = henv;
  denv.cfg = node_cfg;
  denv.workers = std::make_shared<worker_registry>();
  denv.workers->set({{"Development", {{"bench", worker}}}});
  denv.approvals = approvals;
  auto deployments = spawn_deployment_host(sys, denv);
  self->send(approvals, listen_atom::value, caf::actor_cast<approval_listener>(deployments));

  // (a) raw worker commands of a Direct deployment.
  std::vector<double> raw_ms;
  int64_t epoch = 1;
  std::string live;
  bool raw_ok = true;
  for (int i = 0; i < n && raw_ok; ++i) {
    std::string v = i % 2 == 0 ? "1.0.0" : "2.0.0";
    auto t0 = clock_type::now();
    command_origin o{"raw-bench", epoch, "bench", ""};
    auto fail = [&](caf::error& e) {
      std::fprintf(stderr, "raw: %s\n", sys.render(e).c_str());
      raw_ok = false;
    };
    self->request(worker, std::chrono::seconds(30), stage_atom::value,
                  stage_command{"echo", v, live.empty() ? -1 : 0, o})
      .receive([](version_view&) {}, fail);
    self->request(worker, std::chrono::seconds(30), weights_atom::value,
                  weights_command{"echo", {{v, 100}}, o})
      .receive([](module_view&) {}, fail);
    sdk::request probe;
    probe.payload = "probe";
    self->request(worker, std::chrono::seconds(30), probe_atom::value, std::string{"echo"}, v,
                  probe)
      .receive([](invoke_result&) {}, fail);
    if (!live.empty())
      self->request(worker, std::chrono::seconds(30), retire_atom::value,
                    retire_command{"echo", live, o})
        .receive([](ok_atom) {}, fail);
    live = v;
    raw_ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
  }
  // Leave the worker as a fresh one would be for the deployments: retire.
  self->request(worker, std::chrono::seconds(30), retire_atom::value,
                retire_command{"echo", live, command_origin{"raw-bench", epoch, "bench", ""}})
    .receive([](ok_atom) {}, [](caf::error&) {});

  // (b) deployments through the deployment host.
  std::vector<double> dep_ms;
  int failed = 0;
  auto t_all = clock_type::now();
  for (int i = 0; i < n; ++i) {
    deploy::deployment d;
    d.execution_id = crypto::uuid4();
    d.module_name = "echo";
    d.version = i % 2 == 0 ? "1.0.0" : "2.0.0";
    d.environment = "Development";
    d.strategy = deploy::strategy_kind::direct;
    d.status = "Pending";
    d.start = now_millis();
    d.requester_email = "bench@example.com";
    d.requested_by = "bench";
    d.stages = deploy::initial_stages(d.environment, false, d.strategy);
    request_ctx ctx;
    ctx.username = "bench";
    auto t0 = clock_type::now();
    bool created = false;
    self->request(deployments, std::chrono::seconds(30), create_atom::value, d.execution_id,
                  deploy::to_json(d), ctx)
      .receive([&](std::string&) { created = true; },
               [&](caf::error& e) { std::fprintf(stderr, "create: %s\n", sys.render(e).c_str()); });
    if (!created) {
      ++failed;
      continue;
    }
    // Poll the store (what GET /api/v1/deployments/{id} reads) until terminal.
    std::string status;
    auto deadline = clock_type::now() + std::chrono::seconds(60);
    while (clock_type::now() < deadline) {
      self->request(*store, std::chrono::seconds(10), get_atom::value, std::string{"deployment"},
                    d.execution_id)
        .receive([&](snapshot_record& r) { status = r.status; }, [](caf::error&) {});
      if (deploy::is_terminal(status))
        break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    dep_ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
    if (status != "Succeeded")
      ++failed;
  }
  auto total_s = std::chrono::duration<double>(clock_type::now() - t_all).count();
  double raw_sum = 0, dep_sum = 0;
  for (auto x : raw_ms)
    raw_sum += x;
  for (auto x : dep_ms)
    dep_sum += x;
  std::printf("deploy_bench: %d Direct deployments of echo (alternating 1.0.0/2.0.0), one at a "
              "time, store %s\n",
              n, store_url.rfind("sqlite", 0) == 0 ? "SQLite" : "PostgreSQL");
  std::printf("  raw worker commands: %6.1f swaps/s        p50 %6.1f ms  p99 %6.1f ms\n",
              raw_ms.empty() ? 0 : 1000.0 * static_cast<double>(raw_ms.size()) / raw_sum,
              percentile(raw_ms, 0.5), percentile(raw_ms, 0.99));
  std::printf("  hotswap deployments: %6.1f deployments/s  p50 %6.1f ms  p99 %6.1f ms (POST to "
              "Succeeded), %d failed\n",
              static_cast<double>(dep_ms.size()) / total_s, percentile(dep_ms, 0.5),
              percentile(dep_ms, 0.99), failed);
  if (!raw_ms.empty() && !dep_ms.empty())
    std::printf("  cost of durable orchestration: %.1fx the raw commands' time per deployment\n",
                (dep_sum / static_cast<double>(dep_ms.size()))
                  / (raw_sum / static_cast<double>(raw_ms.size())));
  for (auto a : {caf::actor_cast<caf::actor>(deployments), caf::actor_cast<caf::actor>(approvals),
                 caf::actor_cast<caf::actor>(worker), caf::actor_cast<caf::actor>(loader),
                 caf::actor_cast<caf::actor>(registry), caf::actor_cast<caf::actor>(*store)})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  return failed == 0 && raw_ok ? 0 : 1;
}
