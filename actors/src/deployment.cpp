#include "hotswap/actors/deployment.hpp"

#include <algorithm>
#include <deque>
#include <memory>
#include <set>

#include <boost/json.hpp>

#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/deployment_state.hpp"
#include "hotswap/actors/events.hpp"
#include "hotswap/actors/json_util.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap {

namespace {

using namespace deploy;
namespace json = boost::json;

constexpr auto retry_delay = std::chrono::seconds(1);
constexpr int max_rollback_attempts = 5;

struct dep_state {
  std::string id;
  int64_t epoch = 0;
  deployment_env env;
  deployment_host_actor host;
  deployment d;
  bool exists = false;
  bool busy = false;          ///< a persist or worker command is in flight
  /// Activated over a plan in progress (restart, adoption): the first write
  /// records who resumed it, at which epoch and step.
  bool announce_resume = false;
  bool has_slot = false;      ///< the host granted a run slot
  uint64_t generation = 0;    ///< guards timers
  // Canary analysis of the current step (memory only: a restart restarts the window).
  bool window_open = false;
  uint32_t windows = 0;
  version_sample start_canary;
  version_sample start_baseline;
  int rollback_attempts = 0;
  static inline const char* name = "deployment";
};

using dep_ptr = deployment_actor::stateful_pointer<dep_state>;

std::shared_ptr<spdlog::logger> dlog() {
  return logger("deploy");
}

std::string tag(const dep_state& st) {
  return "[D:" + st.id + " e" + std::to_string(st.epoch) + "]";
}

const config::environment_section& env_cfg(const dep_state& st) {
  return st.env.cfg->environments.at(st.d.environment);
}

stage_view* find_stage(deployment& d, const std::string& prefix) {
  for (auto& s : d.stages)
    if (s.name.rfind(prefix, 0) == 0)
      return &s;
  return nullptr;
}

void set_stage(deployment& d, const std::string& prefix, const std::string& status,
               const std::string& message = {}) {
  auto s = find_stage(d, prefix);
  if (s == nullptr)
    return;
  auto now = now_millis();
  if (status == "Running" && s->start == 0)
    s->start = now;
  if (status == "Succeeded" || status == "Failed" || status == "Skipped") {
    if (s->start == 0)
      s->start = now;
    s->end = now;
  }
  if (status == "Succeeded")
    s->progress = 100;
  s->status = status;
  if (!message.empty())
    s->message = message;
}

void advance(dep_ptr self);

/// The stage a client should show: the one running, else the last one that
/// left Pending.
std::string current_stage(const deployment& d) {
  std::string last;
  for (auto& s : d.stages) {
    if (s.status == "Running" || s.status == "WaitingForApproval")
      return s.name;
    if (s.status != "Pending")
      last = s.name;
  }
  return last;
}

/// Overall progress 0-100 over the plan (100 once Succeeded).
int32_t overall_progress(const deployment& d) {
  if (d.status == "Succeeded")
    return 100;
  if (d.plan.empty())
    return 0;
  auto done = std::min<size_t>(static_cast<size_t>(std::max(d.cursor, 0)), d.plan.size());
  return static_cast<int32_t>(done * 100 / d.plan.size());
}

/// The events of one durable transition from `prev` to `next` (api-v1.md,
/// "Events"): a status change, a finished step, a finished rollback.
void publish_transition(dep_ptr self, const deployment* prev, const deployment& next,
                        const std::string& action, const std::string& message) {
  auto& st = self->state;
  auto make = [&](const char* type) {
    event_record ev;
    ev.type = type;
    ev.execution_id = st.id;
    ev.tenant_id = next.tenant_id;
    ev.status = next.status;
    ev.stage = current_stage(next);
    ev.progress = overall_progress(next);
    json::object detail;
    detail["action"] = action;
    detail["message"] = message;
    detail["module"] = next.module_name;
    detail["version"] = next.version;
    detail["environment"] = next.environment;
    detail["strategy"] = to_string(next.strategy);
    detail["step"] = next.cursor;
    detail["steps"] = static_cast<int64_t>(next.plan.size());
    detail["node"] = st.env.host.node_id;
    if (prev != nullptr && prev->status != next.status)
      detail["previousStatus"] = prev->status;
    ev.details = json::serialize(detail);
    return ev;
  };
  if (prev == nullptr || prev->status != next.status)
    publish_event(self, make("DeploymentStatusChanged"));
  if (action == "DeploymentStepDone" || action == "RollbackStepDone")
    publish_event(self, make("DeploymentProgress"));
  if (next.status == "RolledBack" && (prev == nullptr || prev->status != "RolledBack"))
    publish_event(self, make("DeploymentRolledBack"));
}

/// Persists `next` with an audit event, adopts it, then runs `cont`. On a
/// store failure the actor keeps its last durable state and retries from it;
/// when fenced it stops (another owner has it).
void persist(dep_ptr self, deployment next, const std::string& action, const std::string& message,
             const request_ctx& ctx, std::function<void()> cont) {
  auto& st = self->state;
  snapshot_record snap;
  snap.kind = "deployment";
  snap.id = st.id;
  snap.tenant_id = next.tenant_id;
  snap.status = next.status;
  snap.epoch = st.epoch;
  snap.body = to_json(next);
  snap.created_at = next.start;
  snap.updated_at = now_millis();
  audit_event ev;
  ev.at = snap.updated_at;
  ev.category = "Deployment";
  ev.action = action;
  ev.result = (next.status == "Failed" && action != "DeploymentRollingBack") ? "Failure"
                                                                             : "Success";
  ev.entity_kind = "deployment";
  ev.entity_id = st.id;
  ev.tenant_id = next.tenant_id;
  ev.actor_user = ctx.username.empty() ? "system" : ctx.username;
  ev.source_ip = ctx.source_ip;
  ev.trace_id = ctx.trace_id.empty() ? next.trace_id : ctx.trace_id;
  ev.message = message;
  json::object detail;
  detail["status"] = next.status;
  detail["module"] = next.module_name;
  detail["version"] = next.version;
  detail["environment"] = next.environment;
  detail["step"] = next.cursor;
  detail["node"] = st.env.host.node_id;
  detail["epoch"] = st.epoch;
  ev.detail = json::serialize(detail);
  st.busy = true;
  self->request(st.env.host.store, st.env.host.call_timeout, put_atom::value, snap, ev)
    .await(
      [=](int64_t) {
        auto& st = self->state;
        st.busy = false;
        publish_transition(self, st.exists ? &st.d : nullptr, next, action, message);
        st.d = next;
        st.exists = true;
        dlog()->info("{} {}: {}", tag(st), action, message);
        cont();
      },
      [=](caf::error& err) {
        auto& st = self->state;
        st.busy = false;
        if (err == errc::fenced) {
          dlog()->warn("{} fenced: {}", tag(st), error_detail(err));
          self->quit(err);
          return;
        }
        dlog()->warn("{} {} not persisted ({}); retrying from the last durable state", tag(st),
                     action, error_detail(err));
        if (!st.exists) {
          self->quit(err);
          return;
        }
        self->delayed_send(self, retry_delay, resume_atom::value);
      });
}

void persist(dep_ptr self, deployment next, const std::string& action, const std::string& message,
             std::function<void()> cont) {
  persist(self, std::move(next), action, message, request_ctx{}, std::move(cont));
}

/// Ends the deployment in `status`, frees the run slot.
void finish(dep_ptr self, deployment next, const std::string& status, const std::string& action,
            const std::string& message) {
  next.status = status;
  next.end = now_millis();
  next.message = message;
  persist(self, std::move(next), action, message, [=] {
    auto& st = self->state;
    if (st.env.host.metrics) {
      auto& m = *st.env.host.metrics;
      if (status == "Succeeded")
        m.deployments_completed().Increment();
      else if (status == "Failed")
        m.deployments_failed().Increment();
      else if (status == "RolledBack")
        m.deployments_rolled_back().Increment();
      m.deployment_duration().Observe(static_cast<double>(st.d.end - st.d.start) / 1000.0);
    }
    st.has_slot = false;
    caf::anon_send(st.host, done_atom::value, st.id);
    if (st.d.quota_reserved && !st.d.tenant_id.empty()) {
      // Give the tenant's quota back (idempotent per execution id).
      request_ctx ctx;
      ctx.username = "system";
      auto id = st.id;
      self->request(st.env.tenants, st.env.host.call_timeout, release_atom::value,
                    st.d.tenant_id, st.id, ctx)
        .then([](tenant&) {},
              [id](caf::error& err) {
                logger("deploy")->warn("[D:{}] quota not released: {}", id, error_detail(err));
              });
    }
    // Terminal: stop and release ownership; reads come from the store, a
    // later rollback re-activates it from its snapshot.
    self->quit();
  });
}

// -- fan-out of worker commands -------------------------------------------------------------

command_origin origin(const dep_state& st) {
  command_origin o;
  o.owner = st.id;
  o.epoch = st.epoch;
  o.actor_user = st.d.requested_by.empty() ? "system" : st.d.requested_by;
  o.trace_id = st.d.trace_id;
  return o;
}

/// The module_hosts of `nodes` in the deployment's environment.
std::vector<module_host_actor> hosts_of(const dep_state& st, const std::vector<std::string>& nodes,
                                        std::string& missing) {
  std::vector<module_host_actor> out;
  auto workers = st.env.workers->of(st.d.environment);
  for (auto& n : nodes) {
    bool found = false;
    for (auto& [id, h] : workers)
        if (id == n) {
          out.push_back(h);
          found = true;
        }
    if (!found)
      missing = n;
  }
  return out;
}

/// Sends one request per host; calls `ok` when all succeeded, `fail` with
/// the first error otherwise (after all answered).
template <class Make>
void fan_out(dep_ptr self, const std::vector<module_host_actor>& hosts, Make make,
             std::function<void()> ok, std::function<void(std::string)> fail) {
  struct tally {
    size_t left;
    std::string error;
  };
  auto t = std::make_shared<tally>(tally{hosts.size(), {}});
  if (hosts.empty()) {
    ok();
    return;
  }
  auto timeout = std::chrono::seconds(self->state.env.cfg->deployments.step_timeout_seconds);
  auto done = [=] {
    if (--t->left > 0)
      return;
    if (t->error.empty())
      ok();
    else
      fail(t->error);
  };
  for (auto& h : hosts)
    make(h, timeout, done, [=](std::string e) {
      if (t->error.empty())
        t->error = std::move(e);
      done();
    });
}

// -- steps ------------------------------------------------------------------------------------

void start_rollback(dep_ptr self, const std::string& reason, const std::string& outcome);

/// Sums a version's totals over the views of the step's nodes.
version_sample totals(const std::vector<host_view>& views, const std::string& module,
                      const std::string& version) {
  version_sample s;
  for (auto& v : views)
    for (auto& m : v.modules)
      if (m.name == module)
        for (auto& x : m.versions)
          if (x.version == version) {
            s.invocations += x.total_invocations;
            s.errors += x.total_errors;
            s.p95_ms = std::max(s.p95_ms, x.p95_ms);
          }
  return s;
}

void fetch_views(dep_ptr self, const std::vector<module_host_actor>& hosts,
                 std::function<void(std::vector<host_view>)> cont) {
  auto views = std::make_shared<std::vector<host_view>>();
  auto left = std::make_shared<size_t>(hosts.size());
  if (hosts.empty()) {
    cont({});
    return;
  }
  for (auto& h : hosts)
    self->request(h, std::chrono::seconds(10), get_atom::value)
      .then(
        [=](host_view& v) {
          views->push_back(std::move(v));
          if (--*left == 0)
            cont(std::move(*views));
        },
        [=](caf::error&) {
          if (--*left == 0)
            cont(std::move(*views));
        });
}

/// Marks the current step done (plan or rollback) and continues.
void step_done(dep_ptr self, bool rollback) {
  auto next = self->state.d;
  auto& steps = rollback ? next.rollback : next.plan;
  auto& cursor = rollback ? next.rollback_cursor : next.cursor;
  auto& started = rollback ? next.rollback_started : next.step_started;
  auto label = steps[static_cast<size_t>(cursor)].label;
  ++cursor;
  started = false;
  self->state.window_open = false;
  self->state.windows = 0;
  if (!rollback) {
    if (auto s = find_stage(next, "Deploy to")) {
      s->progress = static_cast<int32_t>(100 * cursor / std::max<size_t>(1, steps.size()));
      s->message = "done: " + label;
    }
  }
  persist(self, std::move(next), rollback ? "RollbackStepDone" : "DeploymentStepDone",
          "done: " + label, [=] { advance(self); });
}

void step_failed(dep_ptr self, bool rollback, const std::string& why) {
  auto& st = self->state;
  if (!rollback) {
    start_rollback(self, why, "Failed");
    return;
  }
  // A rollback step failed: retry it a few times, then give up loudly.
  if (++st.rollback_attempts < max_rollback_attempts) {
    dlog()->warn("{} rollback step failed ({}); retrying", tag(st), why);
    self->delayed_send(self, retry_delay, resume_atom::value);
    return;
  }
  dlog()->error("{} rollback failed: {}", tag(st), why);
  auto next = st.d;
  set_stage(next, "Deploy to", "Failed", st.d.rollback_reason + "; rollback failed: " + why);
  for (auto& s : next.stages)
    if (s.status == "Pending" || s.status == "Running")
      s.status = "Skipped";
  finish(self, std::move(next), "Failed", "DeploymentFailed",
         st.d.rollback_reason + "; rollback failed after "
           + std::to_string(max_rollback_attempts) + " attempts: " + why);
}

void run_step(dep_ptr self, bool rollback) {
  auto& st = self->state;
  auto& d = st.d;
  auto& steps = rollback ? d.rollback : d.plan;
  auto cursor = static_cast<size_t>(rollback ? d.rollback_cursor : d.cursor);
  auto started = rollback ? d.rollback_started : d.step_started;
  const auto step = steps[cursor];
  if (!started) {
    // Persist "step k started" before acting on it.
    auto next = d;
    (rollback ? next.rollback_started : next.step_started) = true;
    next.step_started_at = now_millis();
    persist(self, std::move(next), rollback ? "RollbackStepStarted" : "DeploymentStepStarted",
            "started: " + step.label, [=] { run_step(self, rollback); });
    return;
  }
  std::string missing;
  auto hosts = hosts_of(st, step.nodes, missing);
  if (!missing.empty()) {
    step_failed(self, rollback, "no worker for " + d.environment + " on node " + missing);
    return;
  }
  auto module = d.module_name;
  auto o = origin(st);
  auto ok = [=] { step_done(self, rollback); };
  auto fail = [=](std::string why) { step_failed(self, rollback, step.label + ": " + why); };
  st.busy = true;
  auto unbusy_ok = [=] {
    self->state.busy = false;
    ok();
  };
  auto unbusy_fail = [=](std::string why) {
    self->state.busy = false;
    fail(std::move(why));
  };
  auto render = [=](const caf::error& e) { return error_detail(e).empty() ? self->system().render(e) : error_detail(e); };
  switch (step.kind) {
    case step_kind::stage: {
      // The first version of a module takes traffic at once; otherwise it
      // is staged at 0 % and the plan's weights steps move traffic.
      int32_t weight = d.input.previous.empty() ? -1 : 0;
      fan_out(
        self, hosts,
        [=](module_host_actor h, auto timeout, auto done, auto err) {
          self->request(h, timeout, stage_atom::value,
                        stage_command{module, step.version, weight, o})
            .then([=](version_view&) { done(); },
                  [=](caf::error& e) { err(render(e)); });
        },
        unbusy_ok, unbusy_fail);
      return;
    }
    case step_kind::weights:
      fan_out(
        self, hosts,
        [=](module_host_actor h, auto timeout, auto done, auto err) {
          self->request(h, timeout, weights_atom::value, weights_command{module, step.weights, o})
            .then([=](module_view&) { done(); },
                  [=](caf::error& e) { err(render(e)); });
        },
        unbusy_ok, unbusy_fail);
      return;
    case step_kind::retire:
      fan_out(
        self, hosts,
        [=](module_host_actor h, auto timeout, auto done, auto err) {
          self->request(h, timeout, retire_atom::value, retire_command{module, step.version, o})
            .then([=](ok_atom) { done(); }, [=](caf::error& e) { err(render(e)); });
        },
        unbusy_ok, unbusy_fail);
      return;
    case step_kind::smoke:
    case step_kind::verify: {
      sdk::request probe;
      probe.payload = "hotswap-probe";
      probe.caller = "deployment:" + st.id;
      probe.trace_id = d.trace_id;
      fan_out(
        self, hosts,
        [=](module_host_actor h, auto timeout, auto done, auto err) {
          self->request(h, timeout, probe_atom::value, module, step.version, probe)
            .then(
              [=](invoke_result& r) {
                if (r.reply.ok())
                  done();
                else
                  err("probe of " + step.version + " answered an error: " + r.reply.error);
              },
              [=](caf::error& e) { err(render(e)); });
        },
        unbusy_ok, unbusy_fail);
      return;
    }
    case step_kind::hold: {
      st.busy = false;
      auto elapsed = now_millis() - d.step_started_at;
      auto left = std::max<int64_t>(0, int64_t{step.hold_seconds} * 1000 - elapsed);
      self->delayed_send(self, std::chrono::milliseconds(left), tick_atom::value,
                         ++st.generation);
      return;
    }
    case step_kind::analyze: {
      if (!st.window_open) {
        // Open the window: remember both versions' totals now.
        fetch_views(self, hosts, [=](std::vector<host_view> views) {
          auto& st = self->state;
          st.busy = false;
          st.start_canary = totals(views, module, step.version);
          st.start_baseline = totals(views, module, step.baseline);
          st.window_open = true;
          st.windows = 0;
          self->delayed_send(self, std::chrono::seconds(step.hold_seconds), tick_atom::value,
                             ++st.generation);
        });
        return;
      }
      fetch_views(self, hosts, [=](std::vector<host_view> views) {
        auto& st = self->state;
        st.busy = false;
        auto c = totals(views, module, step.version);
        auto b = totals(views, module, step.baseline);
        version_sample dc{c.invocations - std::min(c.invocations, st.start_canary.invocations),
                          c.errors - std::min(c.errors, st.start_canary.errors), c.p95_ms};
        version_sample db{b.invocations - std::min(b.invocations, st.start_baseline.invocations),
                          b.errors - std::min(b.errors, st.start_baseline.errors), b.p95_ms};
        auto a = analyze(db, dc, st.d.canary, st.windows);
        dlog()->info("{} canary {}% analysis: canary {}/{} errors p95 {:.2f} ms, baseline {}/{} "
                     "p95 {:.2f} ms -> {} {}",
                     tag(st), step.percent, dc.errors, dc.invocations, dc.p95_ms, db.errors,
                     db.invocations, db.p95_ms,
                     a.result == verdict::pass ? "pass"
                                               : (a.result == verdict::fail ? "fail" : "wait"),
                     a.reason);
        if (a.result == verdict::pass) {
          step_done(self, false);
        } else if (a.result == verdict::fail) {
          start_rollback(self, "canary analysis at " + std::to_string(step.percent)
                                 + " %: " + a.reason,
                         "Failed");
        } else {
          self->delayed_send(self, std::chrono::seconds(step.hold_seconds), tick_atom::value,
                             ++st.generation);
        }
      });
      return;
    }
  }
}

void start_rollback(dep_ptr self, const std::string& reason, const std::string& outcome) {
  auto& st = self->state;
  auto next = st.d;
  auto applied = static_cast<size_t>(next.cursor) + (next.step_started ? 1 : 0);
  next.rollback = build_rollback(next.input, next.plan, std::min(applied, next.plan.size()));
  next.rollback_cursor = 0;
  next.rollback_started = false;
  next.rollback_reason = reason;
  next.rollback_outcome = outcome;
  next.status = "RollingBack";
  next.message = reason;
  if (outcome == "Failed")
    set_stage(next, "Deploy to", "Failed", reason);
  st.window_open = false;
  st.rollback_attempts = 0;
  ++st.generation; // stale timers of the plan no longer apply
  persist(self, std::move(next), "DeploymentRollingBack", "rolling back: " + reason,
          [=] { advance(self); });
}

// -- the main loop --------------------------------------------------------------------------

/// The live version of the module on the environment's workers (highest
/// weight), or empty.
void find_previous_now(dep_ptr self,
                       std::function<void(std::string, std::vector<std::string>)> cont);

/// Plans over a current view of the cluster's workers: the directory
/// refreshes it first (a node that just started knows only its own).
void find_previous(dep_ptr self, std::function<void(std::string, std::vector<std::string>)> cont) {
  auto& st = self->state;
  if (!st.env.host.directory) {
    find_previous_now(self, std::move(cont));
    return;
  }
  // (The caller holds st.busy for the whole lookup.)
  self->request(st.env.host.directory, st.env.host.call_timeout, nodes_atom::value)
    .then([=](ok_atom) { find_previous_now(self, cont); },
          [=](caf::error&) { find_previous_now(self, cont); });
}

void find_previous_now(dep_ptr self,
                       std::function<void(std::string, std::vector<std::string>)> cont) {
  auto& st = self->state;
  std::vector<module_host_actor> hosts;
  std::vector<std::string> nodes;
  for (auto& [id, h] : st.env.workers->of(st.d.environment)) {
    hosts.push_back(h);
    nodes.push_back(id);
  }
  auto module = st.d.module_name;
  fetch_views(self, hosts, [=](std::vector<host_view> views) {
    std::map<std::string, uint64_t> weight;
    for (auto& v : views)
      for (auto& m : v.modules)
        if (m.name == module)
          for (auto& x : m.versions)
            if (x.state == "Active")
              weight[x.version] += x.weight;
    std::string best;
    uint64_t best_w = 0;
    for (auto& [v, w] : weight)
      if (w > best_w) {
        best = v;
        best_w = w;
      }
    cont(best, nodes);
  });
}

void run_validation(dep_ptr self) {
  auto& st = self->state;
  std::string missing;
  auto hosts = hosts_of(st, st.d.input.nodes, missing);
  sdk::request probe;
  probe.payload = "hotswap-validation";
  probe.caller = "deployment:" + st.id;
  auto module = st.d.module_name;
  auto version = st.d.version;
  st.busy = true;
  fan_out(
    self, hosts,
    [=](module_host_actor h, auto timeout, auto done, auto err) {
      self->request(h, timeout, probe_atom::value, module, version, probe)
        .then(
          [=](invoke_result& r) {
            if (r.reply.ok())
              done();
            else
              err(r.reply.error);
          },
          [=](caf::error& e) { err(error_detail(e)); });
    },
    [=] {
      self->state.busy = false;
      auto next = self->state.d;
      set_stage(next, "Validation", "Succeeded", version + " answers on every node");
      finish(self, std::move(next), "Succeeded", "DeploymentSucceeded",
             "deployed " + module + " " + version + " to " + next.environment);
    },
    [=](std::string why) {
      self->state.busy = false;
      auto next = self->state.d;
      set_stage(next, "Validation", "Failed", why);
      self->state.d = next;
      start_rollback(self, "validation failed: " + why, "Failed");
    });
}

void security_scan(dep_ptr self) {
  auto& st = self->state;
  st.busy = true;
  self->request(st.env.host.store, st.env.host.call_timeout, module_atom::value, get_atom::value,
                st.d.module_name, st.d.version)
    .then(
      [=](module_record& rec) {
        auto& st = self->state;
        st.busy = false;
        auto next = st.d;
        if (!rec.is_signed && env_cfg(st).require_signed_modules) {
          auto why = rec.name + " " + rec.version + " is unsigned and " + next.environment
                     + " requires signed modules (require_signed_modules)";
          set_stage(next, "Security Scan", "Failed", why);
          for (auto& s : next.stages)
            if (s.status == "Pending")
              s.status = "Skipped";
          finish(self, std::move(next), "Failed", "SecurityScanFailed", why);
          return;
        }
        set_stage(next, "Security Scan", "Succeeded",
                  rec.is_signed ? "signed by " + rec.signer_key_id + ", digest " + rec.digest
                                : "unsigned (allowed in " + next.environment + ")");
        set_stage(next, "Deploy to", "Running");
        next.status = "Running";
        persist(self, std::move(next), "SecurityScanPassed", "security scan passed",
                [=] { advance(self); });
      },
      [=](caf::error& err) {
        auto& st = self->state;
        st.busy = false;
        if (err == errc::not_found) {
          auto next = st.d;
          set_stage(next, "Security Scan", "Failed", "the module version no longer exists");
          finish(self, std::move(next), "Failed", "SecurityScanFailed",
                 "module " + next.module_name + " " + next.version + " not found");
          return;
        }
        self->delayed_send(self, retry_delay, resume_atom::value);
      });
}

void request_approval(dep_ptr self) {
  auto& st = self->state;
  approval a;
  a.execution_id = st.id;
  a.module_name = st.d.module_name;
  a.version = st.d.version;
  a.environment = st.d.environment;
  a.requester_email = st.d.requester_email;
  a.requested_by = st.d.requested_by;
  a.requested_by_id = st.d.requested_by_id;
  a.tenant_id = st.d.tenant_id;
  a.requested_at = now_millis();
  a.timeout_at = a.requested_at + int64_t{env_cfg(st).approval_timeout_seconds} * 1000;
  a.separation_of_duties = env_cfg(st).separation_of_duties;
  request_ctx ctx;
  ctx.username = st.d.requested_by;
  ctx.user_id = st.d.requested_by_id;
  ctx.tenant_id = st.d.tenant_id;
  ctx.trace_id = st.d.trace_id;
  st.busy = true;
  self->request(st.env.approvals, st.env.host.call_timeout, create_atom::value, st.id, a, ctx)
    .then(
      [=](approval& created) {
        auto& st = self->state;
        st.busy = false;
        auto next = st.d;
        next.status = "PendingApproval";
        set_stage(next, "Approval", "WaitingForApproval",
                  "waiting for an Admin until " + rfc3339(created.timeout_at));
        persist(self, std::move(next), "DeploymentAwaitingApproval",
                "approval requested (deadline " + rfc3339(created.timeout_at) + ")",
                [=] { advance(self); });
      },
      [=](caf::error& err) {
        self->state.busy = false;
        dlog()->warn("{} approval not created: {}; retrying", tag(self->state), error_detail(err));
        self->delayed_send(self, retry_delay, resume_atom::value);
      });
}

void on_decision(dep_ptr self, const approval& a) {
  auto& st = self->state;
  if (st.d.status != "PendingApproval" || st.busy)
    return;
  auto next = st.d;
  if (a.status == "Approved") {
    set_stage(next, "Approval", "Succeeded", "approved by " + a.responded_by
                                                  + (a.response_reason.empty()
                                                       ? std::string{}
                                                       : ": " + a.response_reason));
    next.status = "Running";
    if (st.env.host.metrics)
      st.env.host.metrics->approvals("approved").Increment();
    persist(self, std::move(next), "DeploymentApproved", "approved by " + a.responded_by,
            [=] { advance(self); });
    return;
  }
  std::string why = a.status == "Rejected"
                      ? "rejected by " + a.responded_by
                          + (a.response_reason.empty() ? std::string{} : ": " + a.response_reason)
                      : "the approval expired at " + rfc3339(a.timeout_at);
  if (st.env.host.metrics)
    st.env.host.metrics->approvals(a.status == "Rejected" ? "rejected" : "expired").Increment();
  set_stage(next, "Approval", "Failed", why);
  for (auto& s : next.stages)
    if (s.status == "Pending")
      s.status = "Skipped";
  finish(self, std::move(next), "Failed",
         a.status == "Rejected" ? "DeploymentRejected" : "DeploymentApprovalExpired", why);
}

void advance(dep_ptr self) {
  auto& st = self->state;
  auto& d = st.d;
  if (!st.exists || st.busy || is_terminal(d.status))
    return;
  // Waiting for an approval holds no run slot (it may take a day).
  if (d.status != "RollingBack") {
    auto approval_stage = find_stage(d, "Approval");
    if (approval_stage != nullptr && approval_stage->status == "Pending") {
      request_approval(self);
      return;
    }
    if (d.status == "PendingApproval") {
      // The decision may have been made while this actor was not running.
      st.busy = true;
      self->request(st.env.approvals, st.env.host.call_timeout, get_atom::value, st.id)
        .then(
          [=](approval& a) {
            self->state.busy = false;
            if (a.status != "Pending")
              on_decision(self, a);
          },
          [=](caf::error&) { self->state.busy = false; });
      return;
    }
  }
  if (!st.has_slot) {
    st.busy = true;
    self->request(st.host, st.env.host.call_timeout, run_atom::value, st.id)
      .then(
        [=](bool granted) {
          self->state.busy = false;
          if (!granted)
            return; // queued: the host resumes us when a slot frees
          self->state.has_slot = true;
          advance(self);
        },
        [=](caf::error&) {
          self->state.busy = false;
          self->delayed_send(self, retry_delay, resume_atom::value);
        });
    return;
  }
  if (d.status == "RollingBack") {
    if (static_cast<size_t>(d.rollback_cursor) < d.rollback.size()) {
      run_step(self, true);
      return;
    }
    auto next = d;
    auto outcome = next.rollback_outcome.empty() ? std::string{"Failed"} : next.rollback_outcome;
    auto msg = outcome == "RolledBack"
                 ? "rolled back to " + (next.input.previous.empty() ? std::string{"nothing"}
                                                                     : next.input.previous)
                 : (outcome == "Cancelled" ? "cancelled: " + next.rollback_reason
                                           : next.rollback_reason + "; rolled back");
    for (auto& s : next.stages)
      if (s.status == "Pending" || s.status == "Running")
        s.status = "Skipped";
    finish(self, std::move(next), outcome,
           outcome == "RolledBack" ? "DeploymentRolledBack"
                                   : (outcome == "Cancelled" ? "DeploymentCancelled"
                                                             : "DeploymentFailed"),
           msg);
    return;
  }
  auto scan = find_stage(d, "Security Scan");
  if (scan != nullptr && (scan->status == "Pending" || scan->status == "Running")) {
    if (d.status == "Pending") {
      auto next = d;
      next.status = "Running";
      set_stage(next, "Security Scan", "Running");
      if (st.env.host.metrics)
        st.env.host.metrics->deployments_started().Increment();
      persist(self, std::move(next), "DeploymentStarted", "started", [=] { advance(self); });
      return;
    }
    security_scan(self);
    return;
  }
  if (d.plan.empty()) {
    st.busy = true;
    find_previous(self, [=](std::string previous, std::vector<std::string> nodes) {
      auto& st = self->state;
      st.busy = false;
      auto next = st.d;
      auto& e = env_cfg(st);
      next.input.strategy = next.strategy;
      next.input.module = next.module_name;
      next.input.version = next.version;
      next.input.previous = previous;
      next.input.nodes = nodes;
      next.input.batch_size = e.rolling_batch_size;
      next.input.keep_seconds = e.bluegreen_keep_seconds;
      next.input.canary = next.canary;
      if (nodes.empty()) {
        set_stage(next, "Deploy to", "Failed", "no worker serves " + next.environment);
        finish(self, std::move(next), "Failed", "DeploymentFailed",
               "no worker node serves " + st.d.environment);
        return;
      }
      next.plan = build_plan(next.input);
      next.cursor = 0;
      next.step_started = false;
      if (auto s = find_stage(next, "Deploy to"))
        s->nodes_deployed = 0;
      auto msg = "plan of " + std::to_string(next.plan.size()) + " steps over "
                 + std::to_string(nodes.size()) + " node(s), previous version "
                 + (previous.empty() ? std::string{"none"} : previous);
      persist(self, std::move(next), "DeploymentPlanned", msg, [=] { advance(self); });
    });
    return;
  }
  if (static_cast<size_t>(d.cursor) < d.plan.size()) {
    run_step(self, false);
    return;
  }
  auto validation = find_stage(d, "Validation");
  if (validation != nullptr && validation->status != "Succeeded") {
    auto deploy_stage = find_stage(d, "Deploy to");
    if (deploy_stage != nullptr && deploy_stage->status != "Succeeded") {
      auto next = d;
      set_stage(next, "Deploy to", "Succeeded", d.version + " live on every node");
      if (auto s = find_stage(next, "Deploy to"))
        s->nodes_deployed = static_cast<int32_t>(d.input.nodes.size());
      set_stage(next, "Validation", "Running");
      persist(self, std::move(next), "DeploymentDeployed", "deployed on every node",
              [=] { advance(self); });
      return;
    }
    run_validation(self);
  }
}

// -- the behavior -------------------------------------------------------------------------------

deployment_actor::behavior_type deployment_behavior(dep_ptr self, std::string id,
                                                    claim_result claim, deployment_env env,
                                                    deployment_host_actor host) {
  auto& st = self->state;
  st.id = std::move(id);
  st.epoch = claim.epoch;
  st.env = std::move(env);
  st.host = host;
  if (!claim.snapshot.body.empty()) {
    if (from_json(claim.snapshot.body, st.d))
      st.exists = true;
    else
      self->quit(caf::make_error(errc::internal, "unreadable snapshot of deployment " + st.id));
  }
  if (st.exists && !is_terminal(st.d.status)) {
    st.announce_resume = st.d.status == "Running" || st.d.status == "RollingBack";
    self->send(self, resume_atom::value);
  }
  return {
    [=](create_atom, std::string& record, request_ctx& ctx) -> caf::result<std::string> {
      auto& st = self->state;
      if (st.exists)
        return to_view_json(st.d); // idempotent retry (same execution id)
      deployment d;
      if (!from_json(record, d))
        return caf::make_error(errc::internal, "unreadable deployment record");
      d.execution_id = st.id;
      auto rp = self->make_response_promise<std::string>();
      auto msg = "created " + d.module_name + " " + d.version + " -> " + d.environment;
      persist(self, std::move(d), "DeploymentCreated", msg, ctx,
              [=]() mutable {
                rp.deliver(to_view_json(self->state.d));
                advance(self);
              });
      return rp;
    },
    [=](get_atom) -> caf::result<std::string> {
      if (!self->state.exists)
        return caf::make_error(errc::not_found, "Deployment " + self->state.id + " was not found.");
      return to_view_json(self->state.d);
    },
    [=](rollback_atom, request_ctx& ctx) -> caf::result<std::string> {
      auto& st = self->state;
      if (!st.exists)
        return caf::make_error(errc::not_found, "Deployment " + st.id + " was not found.");
      auto& d = st.d;
      if (d.status == "RolledBack" || d.status == "RollingBack")
        return caf::make_error(errc::conflict, "Deployment " + st.id + " is already "
                                                 + (d.status == "RolledBack" ? "rolled back."
                                                                             : "rolling back."));
      if (!is_terminal(d.status))
        return caf::make_error(errc::invalid_argument,
                               "Deployment " + st.id + " is still " + d.status
                                 + "; cancel it instead.");
      if (d.status != "Succeeded")
        return caf::make_error(errc::conflict, "Deployment " + st.id + " ended " + d.status
                                                 + "; there is nothing of it to roll back.");
      if (st.busy)
        return caf::make_error(errc::unavailable, "Deployment " + st.id + " is busy; retry.");
      auto next = d;
      next.rollback = build_rollback(next.input, next.plan, next.plan.size());
      next.rollback_cursor = 0;
      next.rollback_started = false;
      next.rollback_reason = "requested by " + ctx.username;
      next.rollback_outcome = "RolledBack";
      next.rollback_id = crypto::uuid4();
      next.status = "RollingBack";
      next.end = 0;
      auto nodes = next.input.nodes.size();
      auto rp = self->make_response_promise<std::string>();
      persist(self, std::move(next), "DeploymentRollbackRequested",
              "rollback requested by " + ctx.username, ctx, [=]() mutable {
                json::object o;
                o["rollbackId"] = self->state.d.rollback_id;
                o["status"] = "InProgress";
                o["nodesAffected"] = nodes;
                rp.deliver(json::serialize(o));
                self->state.has_slot = false;
                advance(self);
              });
      return rp;
    },
    [=](cancel_atom, request_ctx& ctx) -> caf::result<std::string> {
      auto& st = self->state;
      if (!st.exists)
        return caf::make_error(errc::not_found, "Deployment " + st.id + " was not found.");
      if (is_terminal(st.d.status) || st.d.status == "RollingBack")
        return caf::make_error(errc::conflict, "Deployment " + st.id + " is " + st.d.status
                                                 + " and cannot be cancelled.");
      if (st.busy)
        return caf::make_error(errc::unavailable, "Deployment " + st.id + " is busy; retry.");
      auto rp = self->make_response_promise<std::string>();
      auto next = st.d;
      auto applied = static_cast<size_t>(next.cursor) + (next.step_started ? 1 : 0);
      next.rollback = build_rollback(next.input, next.plan, std::min(applied, next.plan.size()));
      next.rollback_cursor = 0;
      next.rollback_started = false;
      next.rollback_reason = "cancelled by " + ctx.username;
      next.rollback_outcome = "Cancelled";
      next.status = "RollingBack";
      ++st.generation;
      st.window_open = false;
      auto was_pending_approval = st.d.status == "PendingApproval";
      persist(self, std::move(next), "DeploymentCancelRequested",
              "cancel requested by " + ctx.username, ctx, [=]() mutable {
                auto& st = self->state;
                if (was_pending_approval) {
                  // Close the approval: a cancelled deployment can no longer be approved.
                  approval_decision dec;
                  dec.approve = false;
                  dec.user_id = "system";
                  dec.username = "system";
                  dec.reason = "the deployment was cancelled by " + ctx.username;
                  self->request(st.env.approvals, st.env.host.call_timeout, decide_atom::value,
                                st.id, dec, ctx)
                    .then([](approval&) {},
                          [](caf::error&) {
                            // Already decided or expired: nothing to close.
                          });
                }
                rp.deliver(to_view_json(st.d));
                advance(self);
              });
      return rp;
    },
    [=](decided_atom, approval& a) { on_decision(self, a); },
    [=](resume_atom) {
      auto& st = self->state;
      if (st.announce_resume && !st.busy && st.exists && !is_terminal(st.d.status)) {
        st.announce_resume = false;
        auto rollback = st.d.status == "RollingBack";
        auto cursor = rollback ? st.d.rollback_cursor : st.d.cursor;
        auto total = rollback ? st.d.rollback.size() : st.d.plan.size();
        persist(self, st.d, "DeploymentResumed",
                "resumed by node " + st.env.host.node_id + " at epoch " + std::to_string(st.epoch)
                  + (rollback ? ", rollback step " : ", step ") + std::to_string(cursor + 1)
                  + " of " + std::to_string(total),
                [=] { advance(self); });
        return;
      }
      advance(self);
    },
    [=](tick_atom, uint64_t generation) {
      auto& st = self->state;
      if (generation != st.generation || st.busy)
        return;
      auto& d = st.d;
      auto rollback = d.status == "RollingBack";
      auto& steps = rollback ? d.rollback : d.plan;
      auto cursor = static_cast<size_t>(rollback ? d.rollback_cursor : d.cursor);
      if (cursor >= steps.size())
        return;
      auto& step = steps[cursor];
      if (step.kind == step_kind::hold) {
        step_done(self, rollback);
      } else if (step.kind == step_kind::analyze) {
        ++st.windows;
        run_step(self, rollback);
      }
    },
  };
}

// -- host ----------------------------------------------------------------------------------------

struct dep_host_state : entity_host_state<deployment_actor> {
  deployment_env denv;
  std::set<std::string> running;
  std::deque<std::string> queue;
  static inline const char* name = "deployment_host";
};

using dhost_ptr = deployment_host_actor::stateful_pointer<dep_host_state>;

deployment_host_actor::behavior_type deployment_host(dhost_ptr self, deployment_env env) {
  self->state.denv = env;
  auto spawner = [self, env](caf::local_actor* host, const std::string& id,
                             const claim_result& cr) -> deployment_actor {
    return host->spawn<caf::monitored>(deployment_behavior, id, cr, env,
                                       deployment_host_actor{self});
  };
  self->state.init("deployment", env.host, spawner);
  self->set_down_handler([=](caf::down_msg& dm) {
    // A child that stops for good (fenced: another node owns it now; or an
    // orderly stop) gives its run slot back; a crashed one is restarted and
    // keeps it.
    std::string id;
    for (auto& [cid, c] : self->state.children)
      if (c.handle.address() == dm.source)
        id = cid;
    self->state.on_down(self, dm);
    if (!id.empty() && (dm.reason == errc::fenced || is_orderly_exit(dm.reason)))
      self->send(self, done_atom::value, id);
  });
  auto forward = [=](const std::string& id, bool must_exist, auto... xs) {
    auto rp = self->make_response_promise<std::string>();
    route<deployment_host_actor, std::string>(
      self, self->state, &node_hosts::deployments, id, must_exist, rp,
      [id](const caf::error& err) {
        return err == errc::not_found
                 ? caf::make_error(errc::not_found, "Deployment " + id + " was not found.")
                 : err;
      },
      true, xs...);
    return rp;
  };
  return {
    [=](create_atom, const std::string& id, std::string& record,
        request_ctx& ctx) -> caf::result<std::string> {
      auto& st = self->state;
      auto& limits = st.denv.cfg->deployments;
      if (st.running.size() >= limits.max_running_per_node
          && st.queue.size() >= limits.queue_limit && st.running.count(id) == 0)
        return caf::make_error(errc::rate_limited,
                               "The deployment queue is full (" + std::to_string(limits.queue_limit)
                                 + " pending). Retry later.");
      return forward(id, false, create_atom::value, record, ctx);
    },
    [=](rollback_atom, const std::string& id, request_ctx& ctx) {
      return forward(id, true, rollback_atom::value, ctx);
    },
    [=](cancel_atom, const std::string& id, request_ctx& ctx) {
      return forward(id, true, cancel_atom::value, ctx);
    },
    [=](resume_atom, const std::string& id) {
      self->state.with_child(self, id, true,
                             {[](const deployment_actor& child) {
                                caf::anon_send(child, resume_atom::value);
                              },
                              [id](const caf::error& err) {
                                logger("deploy")->warn("[D:{}] not resumed: {}", id,
                                                       error_detail(err));
                              }});
    },
    [=](run_atom, const std::string& id) {
      auto& st = self->state;
      if (st.running.count(id))
        return true;
      if (st.running.size() < st.denv.cfg->deployments.max_running_per_node) {
        st.running.insert(id);
        st.queue.erase(std::remove(st.queue.begin(), st.queue.end(), id), st.queue.end());
        return true;
      }
      if (std::find(st.queue.begin(), st.queue.end(), id) == st.queue.end())
        st.queue.push_back(id);
      return false;
    },
    [=](done_atom, const std::string& id) {
      auto& st = self->state;
      st.running.erase(id);
      while (!st.queue.empty() && st.running.size() < st.denv.cfg->deployments.max_running_per_node) {
        auto next = st.queue.front();
        st.queue.pop_front();
        st.running.insert(next);
        self->send(self, resume_atom::value, next);
      }
    },
    [=](decided_atom, const std::string& id, approval& a) {
      entity_host_state<deployment_actor>::waiter w;
      w.run = [a](const deployment_actor& child) {
        caf::anon_send(child, decided_atom::value, a);
      };
      w.fail = [id](const caf::error& err) {
        logger("deploy")->warn("[D:{}] decision not delivered: {}", id, error_detail(err));
      };
      // The deployment is owned elsewhere: its owner's host gets the decision
      // (if that fails, the deployment still reads it when it advances).
      w.forward = [=](const std::string& owner) {
        auto& env = self->state.env;
        self->request(env.directory, env.call_timeout, hosts_atom::value, owner)
          .then(
            [=](node_hosts& nh) {
              if (auto h = caf::actor_cast<deployment_host_actor>(nh.deployments)) {
                if (self->state.env.metrics)
                  self->state.env.metrics->forwarded_requests().Increment();
                caf::anon_send(h, decided_atom::value, id, a);
              }
            },
            [id](caf::error& err) {
              logger("deploy")->warn("[D:{}] decision not forwarded: {}", id,
                                     error_detail(err));
            });
      };
      self->state.with_child(self, id, true, std::move(w));
    },
    [=](adopt_atom, const std::string& id, bool from_other) {
      self->state.adopt(self, id, from_other, [](const deployment_actor& child) {
        caf::anon_send(child, resume_atom::value);
      });
    },
    [=](fence_atom) { self->state.fence(self); },
    [=](unfence_atom) { self->state.unfence(); },
    [=](list_atom) { return self->state.active_ids(); },
    [=](passivate_atom) {
      auto rp = self->make_response_promise<ok_atom>();
      self->state.passivate_all(self, [rp]() mutable { rp.deliver(ok_atom::value); });
      return rp;
    },
    [=](stats_atom) { return self->state.stats; },
    [=](restart_atom, const std::string& id) { self->state.on_restart(self, id); },
  };
}

} // namespace

deployment_host_actor spawn_deployment_host(caf::actor_system& sys, deployment_env env) {
  return sys.spawn(deployment_host, std::move(env));
}

} // namespace hotswap
