// Module invocation overhead and hot-swap pauses, measured in one run.
//
//   module_bench [MODULES_DIR] [--requests N] [--rounds R] [--swaps S]
//
// MODULES_DIR defaults to the build's examples/modules. The bench uses the
// real worker path: an SQLite store (temporary file) holding echo 1.0.0 and
// 2.0.0, the module loader (verify, write, dlopen, self-check) and a
// module_host with two handler actors per version.
//
// For concurrency 1 and 4 it alternates R rounds of
//   (a) raw: clients send (invoke, request) straight to handler actors of the
//       loaded echo library (the same behavior, spawned directly: no router,
//       no metrics) and wait for the reply;
//   (b) hotswap: clients send (invoke, module, request) to the module_host,
//       which picks a version by weight, forwards, measures and answers;
// and prints invocations/s, p50/p99 and the overhead ratio raw/hotswap
// throughput (target: hotswap costs at most 2x, i.e. ratio <= 2).
// Then 4 clients invoke continuously while the control swaps echo
// 1.0.0 -> 2.0.0 -> 1.0.0 S times (stage at weight 0, set weights, retire);
// it prints the longest latency any client saw during the swaps (target
// < 5 ms), p99, the failed invocations (must be 0) and the swap time.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/event_based_actor.hpp"
#include "caf/scoped_actor.hpp"

#include "hotswap/actors/module_host.hpp"
#include "hotswap/actors/module_loader.hpp"
#include "hotswap/actors/node.hpp"
#include "bench_support.hpp"
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

struct figures {
  double per_sec = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
  size_t errors = 0;
  size_t count = 0;
};

double percentile(std::vector<double>& v, double q) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto idx = static_cast<size_t>(q * static_cast<double>(v.size() - 1));
  return v[idx];
}

/// Runs `clients` threads, each sending `per_client` sequential requests
/// through `call` (which returns false on failure); collects latencies.
template <class Call>
figures run_clients(caf::actor_system& sys, size_t clients, size_t per_client, Call call) {
  std::vector<std::vector<double>> lat(clients);
  std::atomic<size_t> errors{0};
  std::vector<std::thread> threads;
  auto t0 = clock_type::now();
  for (size_t c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      caf::scoped_actor self{sys};
      lat[c].reserve(per_client);
      for (size_t i = 0; i < per_client; ++i) {
        auto s = clock_type::now();
        if (!call(self, c, i))
          ++errors;
        lat[c].push_back(std::chrono::duration<double, std::micro>(clock_type::now() - s).count());
      }
    });
  for (auto& t : threads)
    t.join();
  auto secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::vector<double> all;
  for (auto& v : lat)
    all.insert(all.end(), v.begin(), v.end());
  figures f;
  f.count = all.size();
  f.per_sec = static_cast<double>(all.size()) / secs;
  f.errors = errors;
  f.max_us = all.empty() ? 0 : *std::max_element(all.begin(), all.end());
  f.p50_us = percentile(all, 0.50);
  f.p99_us = percentile(all, 0.99);
  return f;
}

command_origin origin(int64_t epoch) {
  command_origin o;
  o.owner = "bench";
  o.epoch = epoch;
  o.actor_user = "bench";
  return o;
}

} // namespace

int main(int argc, char** argv) {
  // Lifecycle logs (stage/retire) at info would write to the terminal from
  // the measured path; keep warnings only.
  setup_logging("warn", false);
  std::string dir = HOTSWAP_EXAMPLE_MODULES_DIR;
  size_t requests = 20000;
  int rounds = 3;
  int swaps = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--requests" && i + 1 < argc)
      requests = std::strtoul(argv[++i], nullptr, 10);
    else if (a == "--rounds" && i + 1 < argc)
      rounds = std::atoi(argv[++i]);
    else if (a == "--swaps" && i + 1 < argc)
      swaps = std::atoi(argv[++i]);
    else
      dir = a;
  }
  auto tmp = std::filesystem::temp_directory_path()
             / ("hotswap-module-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(tmp);
  bench::bench_config cfg;
  caf::actor_system sys{cfg};
  auto store = spawn_store_pool(sys, "sqlite://" + (tmp / "bench.db").string(), 1, nullptr);
  if (!store) {
    std::fprintf(stderr, "store: %s\n", sys.render(store.error()).c_str());
    return 1;
  }
  caf::scoped_actor self{sys};
  if (!bench::store_echo_versions(sys, self, *store, dir))
    return 1;
  auto loader = spawn_module_loader(sys, loader_env{*store, modsig::trusted_keys{},
                                                    (tmp / "modules").string()});
  module_host_env env;
  env.node_id = "bench";
  env.environment = "Development";
  env.require_signed = false;
  env.loader = loader;
  env.store = *store;
  env.instances = 2;
  auto host = spawn_module_host(sys, env);
  int64_t epoch = 1;
  auto stage = [&](const std::string& v, int32_t weight) {
    stage_command cmd{"echo", v, weight, origin(epoch)};
    bool ok = false;
    self->request(host, std::chrono::seconds(60), stage_atom::value, cmd)
      .receive([&](version_view&) { ok = true; },
               [&](caf::error& e) { std::fprintf(stderr, "stage: %s\n", sys.render(e).c_str()); });
    return ok;
  };
  auto weights = [&](std::map<std::string, uint32_t> w) {
    weights_command cmd{"echo", std::move(w), origin(epoch)};
    bool ok = false;
    self->request(host, std::chrono::seconds(60), weights_atom::value, cmd)
      .receive([&](module_view&) { ok = true; },
               [&](caf::error& e) { std::fprintf(stderr, "weights: %s\n", sys.render(e).c_str()); });
    return ok;
  };
  auto retire = [&](const std::string& v) {
    retire_command cmd{"echo", v, origin(epoch)};
    bool ok = false;
    self->request(host, std::chrono::seconds(60), retire_atom::value, cmd)
      .receive([&](ok_atom) { ok = true; },
               [&](caf::error& e) { std::fprintf(stderr, "retire: %s\n", sys.render(e).c_str()); });
    return ok;
  };
  if (!stage("1.0.0", 100))
    return 1;
  // The raw baseline: handler actors of the same loaded library, spawned
  // directly (the library comes from the loader like the host's).
  library_ptr lib;
  self->request(loader, std::chrono::seconds(60), load_atom::value,
                load_request{"echo", "2.0.0", "Bench", false})
    .receive([&](library_ptr& l) { lib = std::move(l); },
             [&](caf::error& e) {
               std::fprintf(stderr, "load: %s\n", sys.render(e).c_str());
               std::exit(1);
             });
  std::vector<caf::actor> raw;
  for (int i = 0; i < 2; ++i) {
    sdk::context ctx;
    ctx.module = "echo";
    ctx.version = "2.0.0";
    ctx.environment = "Bench";
    raw.push_back(sys.spawn([lib, ctx](caf::event_based_actor* a) {
      return lib->def->make_behavior(a, ctx);
    }));
  }
  auto payload = std::string(64, 'x');
  auto raw_call = [&](caf::scoped_actor& s, size_t c, size_t i) {
    sdk::request req;
    req.payload = payload;
    bool ok = false;
    s->request(raw[(c + i) % raw.size()], caf::infinite, sdk::invoke_atom::value, req)
      .receive([&](sdk::reply& r) { ok = r.ok(); }, [&](caf::error&) {});
    return ok;
  };
  auto host_call = [&](caf::scoped_actor& s, size_t, size_t) {
    sdk::request req;
    req.payload = payload;
    bool ok = false;
    s->request(host, caf::infinite, sdk::invoke_atom::value, std::string{"echo"}, req)
      .receive([&](invoke_result& r) { ok = r.reply.ok(); }, [&](caf::error&) {});
    return ok;
  };
  std::printf("module_bench: echo through module_host vs direct requests to the module's "
              "actors, %zu requests per round, %d rounds\n",
              requests, rounds);
  for (size_t clients : {size_t{1}, size_t{4}}) {
    std::vector<figures> raws, hosts;
    for (int r = 0; r < rounds; ++r) {
      raws.push_back(run_clients(sys, clients, requests / clients, raw_call));
      hosts.push_back(run_clients(sys, clients, requests / clients, host_call));
    }
    auto best = [](std::vector<figures>& v) {
      return *std::max_element(v.begin(), v.end(), [](const figures& a, const figures& b) {
        return a.per_sec < b.per_sec;
      });
    };
    auto br = best(raws);
    auto bh = best(hosts);
    // Ratios per round (same conditions back to back), then the median.
    std::vector<double> ratios;
    for (int r = 0; r < rounds; ++r)
      ratios.push_back(raws[r].per_sec / hosts[r].per_sec);
    auto med = percentile(ratios, 0.5);
    std::printf("  c=%zu raw:     %9.0f inv/s  p50 %6.1f us  p99 %7.1f us  errors %zu\n", clients,
                br.per_sec, br.p50_us, br.p99_us, br.errors);
    std::printf("  c=%zu hotswap: %9.0f inv/s  p50 %6.1f us  p99 %7.1f us  errors %zu\n", clients,
                bh.per_sec, bh.p50_us, bh.p99_us, bh.errors);
    std::printf("  c=%zu overhead (raw/hotswap throughput, median of rounds): %.2fx "
                "(target <= 2x)\n",
                clients, med);
  }
  for (auto& a : raw)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  raw.clear();
  self->request(loader, std::chrono::seconds(60), unload_atom::value, std::move(lib))
    .receive([](ok_atom) {}, [](caf::error&) {});
  // The same 4-client loop without swaps: the longest latency the machine
  // itself produces (scheduling noise), to read the swap figure against.
  {
    auto steady = run_clients(sys, 4, requests / 4, host_call);
    std::printf("  steady (no swap), c=4: longest client latency %.2f ms, p99 %.1f us over %zu "
                "invocations\n",
                steady.max_us / 1000.0, steady.p99_us, steady.count);
  }
  // Hot swap under load.
  std::atomic<bool> running{true};
  std::atomic<bool> swapping{false};
  std::vector<std::vector<double>> during(4);
  std::atomic<size_t> failures{0};
  std::atomic<size_t> total{0};
  std::vector<std::thread> clients;
  for (size_t c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      caf::scoped_actor s{sys};
      while (running) {
        auto t = clock_type::now();
        auto in_swap = swapping.load();
        if (!host_call(s, c, 0))
          ++failures;
        ++total;
        if (in_swap || swapping.load())
          during[c].push_back(
            std::chrono::duration<double, std::micro>(clock_type::now() - t).count());
      }
    });
  std::string live = "1.0.0";
  std::vector<double> swap_ms;
  bool swap_ok = true;
  for (int i = 0; i < swaps * 2 && swap_ok; ++i) {
    auto next = live == "1.0.0" ? std::string{"2.0.0"} : std::string{"1.0.0"};
    swapping = true;
    auto t = clock_type::now();
    swap_ok = stage(next, 0) && weights({{next, 100}}) && retire(live);
    swap_ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t).count());
    swapping = false;
    live = next;
  }
  running = false;
  for (auto& t : clients)
    t.join();
  std::vector<double> all;
  for (auto& v : during)
    all.insert(all.end(), v.begin(), v.end());
  auto longest = all.empty() ? 0 : *std::max_element(all.begin(), all.end());
  std::printf("  hot swap: %zu swaps (%s) under 4 clients, %zu invocations, %zu failed\n",
              swap_ms.size(), swap_ok ? "all done" : "FAILED", total.load(), failures.load());
  std::printf("  hot swap: longest client pause during swaps %.2f ms (target < 5 ms), p99 %.1f us, "
              "%zu invocations during swaps\n",
              longest / 1000.0, percentile(all, 0.99), all.size());
  auto swap_median = percentile(swap_ms, 0.5);
  auto swap_max = swap_ms.empty() ? 0 : swap_ms.back(); // sorted by percentile()
  std::printf("  hot swap: swap (stage+weights+retire incl. dlopen/dlclose) median %.1f ms, "
              "max %.1f ms\n",
              swap_median, swap_max);
  caf::anon_send_exit(host, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(loader, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(*store, caf::exit_reason::user_shutdown);
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  return failures == 0 && swap_ok ? 0 : 1;
}
