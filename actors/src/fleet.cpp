#include "hotswap/actors/fleet.hpp"

#include <algorithm>
#include <deque>
#include <fstream>
#include <thread>

#include <boost/json.hpp>

#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/json_util.hpp"
#include "hotswap/config/config.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap {

namespace {

namespace json = boost::json;

struct sample {
  millis at = 0;
  double cpu = 0;        ///< percent of the machine's CPU capacity
  double memory = 0;     ///< percent of the machine's memory
  double latency = 0;    ///< mean invocation latency in ms (metrics window)
  double error_rate = 0; ///< percent of invocations that failed (metrics window)
  double rps = 0;        ///< invocations per second (metrics window)
};

struct fleet_state {
  fleet_env env;
  std::map<std::string, std::deque<sample>> samples;
  std::map<std::string, host_view> last_views;
  double cpu_percent = 0;
  double memory_percent = 0;
  double last_cpu_seconds = -1;
  std::chrono::steady_clock::time_point last_cpu_at;
  double mem_total_bytes = 0;
  std::chrono::steady_clock::time_point next_sample;
  static inline const char* name = "fleet";
};

using fleet_ptr = fleet_actor::stateful_pointer<fleet_state>;

double read_mem_total() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemTotal:")
      return kb * 1024.0;
  return 0;
}

bool serves(const node_info& n, const std::string& env) {
  return std::find(n.roles.begin(), n.roles.end(), "worker") != n.roles.end()
         && std::find(n.environments.begin(), n.environments.end(), env)
              != n.environments.end();
}

bool healthy(const fleet_state& st, const node_info& n) {
  return now_millis() - n.last_heartbeat <= st.env.node_ttl.count();
}

void measure_process(fleet_state& st) {
  auto ps = read_process_stats();
  if (!ps.ok)
    return;
  auto now = std::chrono::steady_clock::now();
  if (st.last_cpu_seconds >= 0) {
    auto wall = std::chrono::duration<double>(now - st.last_cpu_at).count();
    auto cores = std::max(1u, std::thread::hardware_concurrency());
    if (wall > 0)
      st.cpu_percent = std::clamp((ps.cpu_seconds - st.last_cpu_seconds) / (wall * cores) * 100.0,
                                  0.0, 100.0);
  }
  st.last_cpu_seconds = ps.cpu_seconds;
  st.last_cpu_at = now;
  if (st.mem_total_bytes > 0)
    st.memory_percent = ps.rss_bytes / st.mem_total_bytes * 100.0;
}

void record_samples(fleet_ptr self) {
  auto& st = self->state;
  auto at = now_millis();
  auto cpu = st.cpu_percent;
  auto mem = st.memory_percent;
  for (auto& [env, host] : st.env.hosts) {
    auto name = env;
    self->request(host, std::chrono::seconds(5), get_atom::value)
      .then(
        [=](host_view& v) {
          auto& st = self->state;
          sample s;
          s.at = at;
          s.cpu = cpu;
          s.memory = mem;
          s.latency = v.mean_ms;
          s.error_rate = v.invocations > 0
                           ? static_cast<double>(v.errors) / static_cast<double>(v.invocations)
                               * 100.0
                           : 0.0;
          s.rps = v.per_second;
          auto& q = st.samples[name];
          q.push_back(s);
          while (q.size() > st.env.retention)
            q.pop_front();
          st.last_views[name] = std::move(v);
        },
        [](caf::error&) {
          // A busy or restarting worker skips one sample.
        });
  }
}

void on_tick(fleet_ptr self) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  if (now >= st.next_sample) {
    measure_process(st);
    record_samples(self);
    st.next_sample = now + st.env.sample_interval;
  }
  self->delayed_send(self, st.env.heartbeat, tick_atom::value);
}

json::object version_json(const version_view& v) {
  json::object o;
  o["version"] = v.version;
  o["weight"] = v.weight;
  o["state"] = v.state;
  o["inFlight"] = v.in_flight;
  o["invocations"] = v.invocations;
  o["errors"] = v.errors;
  o["errorRate"] = v.error_rate * 100.0;
  o["requestsPerSecond"] = v.per_second;
  o["p50Ms"] = v.p50_ms;
  o["p95Ms"] = v.p95_ms;
  o["p99Ms"] = v.p99_ms;
  o["totalInvocations"] = v.total_invocations;
  o["totalErrors"] = v.total_errors;
  o["digest"] = v.digest;
  o["signed"] = v.is_signed;
  o["loadedAt"] = rfc3339(v.loaded_at);
  json::object custom;
  for (auto& [k, x] : v.custom)
    custom[k] = x;
  o["customMetrics"] = std::move(custom);
  return o;
}

/// The detail of one environment from the membership and the live views of
/// the workers that answered (by node id; `local` is this node's).
std::string detail_json(const fleet_state& st, const std::string& env,
                        const std::vector<node_info>& nodes,
                        const std::map<std::string, host_view>& views) {
  json::array out_nodes;
  size_t total = 0, ok = 0;
  for (auto& n : nodes) {
    if (!serves(n, env))
      continue;
    ++total;
    auto h = healthy(st, n);
    if (h)
      ++ok;
    json::object o;
    o["nodeId"] = n.id;
    o["hostname"] = n.id == st.env.self_node.id ? st.env.hostname : n.http_endpoint;
    o["status"] = h ? "Healthy" : "Unhealthy";
    o["lastHeartbeat"] = rfc3339(n.last_heartbeat);
    o["httpEndpoint"] = n.http_endpoint;
    json::array modules;
    if (auto vi = views.find(n.id); vi != views.end()) {
      for (auto& m : vi->second.modules) {
        json::object mo;
        mo["name"] = m.name;
        json::array versions;
        for (auto& v : m.versions)
          versions.push_back(version_json(v));
        mo["versions"] = std::move(versions);
        modules.push_back(std::move(mo));
      }
      o["loadedLibraries"] = vi->second.loaded_libraries;
    }
    o["modules"] = std::move(modules);
    out_nodes.push_back(std::move(o));
  }
  json::object metrics;
  // Invocation figures over every worker that answered (CPU and memory are
  // this process's: other nodes report theirs).
  double lat = 0, err = 0, rps = 0;
  uint64_t invocations = 0, errors = 0;
  for (auto& [id, v] : views) {
    lat += v.mean_ms * static_cast<double>(v.invocations);
    invocations += v.invocations;
    errors += v.errors;
    rps += v.per_second;
  }
  if (invocations > 0) {
    lat /= static_cast<double>(invocations);
    err = static_cast<double>(errors) / static_cast<double>(invocations) * 100.0;
  }
  metrics["avgCpuUsage"] = total > 0 ? st.cpu_percent : 0.0;
  metrics["avgMemoryUsage"] = total > 0 ? st.memory_percent : 0.0;
  metrics["avgLatency"] = lat;
  metrics["errorRate"] = err;
  metrics["requestsPerSecond"] = rps;
  json::object o;
  o["environment"] = env;
  o["totalNodes"] = total;
  o["healthyNodes"] = ok;
  o["unhealthyNodes"] = total - ok;
  o["isHealthy"] = total > 0 && ok == total;
  o["metrics"] = std::move(metrics);
  o["nodes"] = std::move(out_nodes);
  return json::serialize(o);
}

fleet_actor::behavior_type fleet(fleet_ptr self, fleet_env env) {
  auto& st = self->state;
  st.env = std::move(env);
  st.mem_total_bytes = read_mem_total();
  measure_process(st);
  st.next_sample = std::chrono::steady_clock::now() + st.env.sample_interval;
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) { on_tick(self); },
    [=](renew_atom, node_info& info) {
      // The membership actor renews it in the registry (directory.hpp).
      self->state.env.self_node = std::move(info);
    },
    [=](list_atom) -> caf::result<std::string> {
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.env.registry, std::chrono::seconds(5), nodes_atom::value)
        .then(
          [=](std::vector<node_info>& nodes) mutable {
            json::array out;
            for (auto& env : config::environment_names()) {
              size_t total = 0, ok = 0;
              for (auto& n : nodes)
                if (serves(n, env)) {
                  ++total;
                  if (healthy(self->state, n))
                    ++ok;
                }
              json::object o;
              o["environment"] = env;
              o["totalNodes"] = total;
              o["healthyNodes"] = ok;
              o["isHealthy"] = total > 0 && ok == total;
              out.push_back(std::move(o));
            }
            rp.deliver(json::serialize(out));
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](get_atom, std::string& env) -> caf::result<std::string> {
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.env.registry, std::chrono::seconds(5), nodes_atom::value)
        .then(
          [=](std::vector<node_info>& nodes) mutable {
            // Every worker of env: this node's, and the other nodes' from
            // the directory's worker registry (a node that does not answer
            // in time is shown without modules).
            std::vector<std::pair<std::string, module_host_actor>> targets;
            auto& st = self->state;
            if (auto h = st.env.hosts.find(env); h != st.env.hosts.end())
              targets.emplace_back(st.env.self_node.id, h->second);
            if (st.env.workers)
              for (auto& [id, h] : st.env.workers->of(env))
                if (id != st.env.self_node.id)
                  targets.emplace_back(id, h);
            auto views = std::make_shared<std::map<std::string, host_view>>();
            auto left = std::make_shared<size_t>(targets.size());
            auto done = [=]() mutable {
              rp.deliver(detail_json(self->state, env, nodes, *views));
            };
            if (targets.empty()) {
              done();
              return;
            }
            for (auto& [id, h] : targets)
              self->request(h, std::chrono::seconds(2), get_atom::value)
                .then(
                  [=](host_view& v) mutable {
                    views->emplace(id, std::move(v));
                    if (--*left == 0)
                      done();
                  },
                  [=](caf::error&) mutable {
                    if (--*left == 0)
                      done();
                  });
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](metrics_atom, std::string& env, millis from, millis to,
        int64_t interval) -> std::string {
      auto& st = self->state;
      json::array points;
      auto i = st.samples.find(env);
      if (i != st.samples.end() && interval > 0) {
        // Average the samples of each interval bucket in [from, to].
        millis bucket = -1;
        sample acc;
        size_t n = 0;
        auto flush = [&] {
          if (n == 0)
            return;
          json::object p;
          p["timestamp"] = rfc3339(bucket);
          p["cpuUsage"] = acc.cpu / n;
          p["memoryUsage"] = acc.memory / n;
          p["latency"] = acc.latency / n;
          p["errorRate"] = acc.error_rate / n;
          p["requestsPerSecond"] = acc.rps / n;
          p["samples"] = n;
          points.push_back(std::move(p));
        };
        for (auto& s : i->second) {
          if (s.at < from || s.at > to)
            continue;
          auto b = s.at - (s.at - from) % interval;
          if (b != bucket) {
            flush();
            bucket = b;
            acc = sample{};
            n = 0;
          }
          acc.cpu += s.cpu;
          acc.memory += s.memory;
          acc.latency += s.latency;
          acc.error_rate += s.error_rate;
          acc.rps += s.rps;
          ++n;
        }
        flush();
      }
      json::object o;
      o["environment"] = env;
      o["interval"] = std::to_string(interval / 1000) + "s";
      o["from"] = rfc3339(from);
      o["to"] = rfc3339(to);
      o["dataPoints"] = std::move(points);
      return json::serialize(o);
    },
  };
}

} // namespace

fleet_actor spawn_fleet(caf::actor_system& sys, fleet_env env) {
  return sys.spawn<caf::detached>(fleet, std::move(env));
}

} // namespace hotswap
