#include "hotswap/actors/module_host.hpp"

#include <algorithm>
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include <boost/json.hpp>

#include "caf/actor_system_config.hpp"
#include "caf/event_based_actor.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/events.hpp"
#include "hotswap/actors/invocation_window.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/actors/version_router.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap {

extern int sdk_instances_anchor;

namespace {

// -- the handler actor ----------------------------------------------------------------

/// The runtime's own actor type for module handlers: its code lives in the
/// runtime, only the behavior comes from the module. on_exit drops every
/// behavior and pending response handler (module code) before the down
/// message goes out, so once the host has seen all down messages of a
/// version nothing of the library's code is referenced by an actor.
class module_actor : public caf::event_based_actor {
public:
  module_actor(caf::actor_config& cfg, library_ptr lib, sdk::context ctx)
    : caf::event_based_actor(cfg), lib_(std::move(lib)), ctx_(std::move(ctx)) {
  }

  caf::behavior make_behavior() override {
    return lib_->def->make_behavior(this, ctx_);
  }

  void on_exit() override {
    bhvr_stack_.clear();
    bhvr_stack_.cleanup();
    awaited_responses_.clear();
    multiplexed_responses_.clear();
    ctx_.runtime = nullptr;
  }

  const char* name() const override {
    return "module_actor";
  }

private:
  library_ptr lib_; ///< released with the actor object; the loader waits for it
  sdk::context ctx_;
};

// -- the gateway ------------------------------------------------------------------------

/// How long one consume of a module's topic subscription waits for messages.
constexpr uint32_t module_consume_wait_ms = 5000;
constexpr uint32_t module_consume_batch = 10;

using handlers_atom = caf::atom_constant<caf::atom("handlers")>;
using poll_atom = caf::atom_constant<caf::atom("poll")>;

struct gateway_state {
  std::vector<caf::actor> handlers; ///< the version's actors (deliveries go round robin)
  size_t next = 0;
  std::set<std::string> sources;    ///< subscriptions made (idempotent)
  static inline const char* name = "module_gateway";
};

std::string message_json(const message_record& m) {
  boost::json::object o;
  o["messageId"] = m.id;
  o["topicName"] = m.topic;
  boost::system::error_code ec;
  auto payload = boost::json::parse(m.payload, ec);
  o["payload"] = ec ? boost::json::value(m.payload) : std::move(payload);
  o["schemaVersion"] = m.schema_version;
  boost::json::object headers;
  for (auto& [k, v] : m.headers)
    headers[k] = v;
  o["headers"] = std::move(headers);
  o["correlationId"] = m.correlation_id;
  o["priority"] = m.priority;
  o["deliveryAttempts"] = m.delivery_attempts;
  return boost::json::serialize(o);
}

/// What a module reaches through context::runtime: runtime code that knows
/// which module and version it serves. It also runs the version's
/// subscriptions: the event stream (as a subscriber of the events hub) and
/// topics (a consume loop in group "module:<name>" that acknowledges what
/// the module answered without error).
caf::behavior gateway(caf::stateful_actor<gateway_state>* self, module_host_actor host,
                      std::string module, std::string version, std::string settings,
                      std::string tenant, message_broker_actor broker) {
  auto deliver = [=]() -> std::optional<caf::actor> {
    auto& st = self->state;
    if (st.handlers.empty())
      return std::nullopt;
    auto h = st.handlers[st.next++ % st.handlers.size()];
    return h;
  };
  auto group = "module:" + module;
  return {
    [=](sdk::publish_atom, sdk::event& ev) {
      caf::anon_send(host, sdk::publish_atom::value, module, version, ev);
      if (!broker) {
        logger("worker")->warn("{} {}: published to {} but this node has no message queue",
                               module, version, ev.topic);
        return;
      }
      message_record m;
      m.id = crypto::uuid4();
      m.topic = ev.topic;
      m.payload = ev.payload;
      m.schema_version = "1.0";
      m.published_by = "module:" + module;
      m.tenant_id = tenant;
      m.headers["x-module-version"] = version;
      self->request(broker, caf::infinite, put_atom::value, std::move(m))
        .then([](const message_record&, bool) {},
              [=](caf::error& err) {
                logger("worker")->warn("{} {}: publish to {} failed: {}", module, version,
                                       ev.topic, error_detail(err));
              });
    },
    [=](sdk::metric_atom, sdk::metric& m) {
      caf::anon_send(host, sdk::metric_atom::value, module, version, std::move(m));
    },
    [=](sdk::config_atom) { return settings; },
    [=](sdk::invoke_atom, std::string& target, sdk::request& req) {
      auto rp = self->make_response_promise<sdk::reply>();
      req.caller = "module:" + module;
      req.tenant = tenant; // a module calls with its own tenant, whatever it wrote
      self->request(host, caf::infinite, sdk::invoke_atom::value, std::move(target), std::move(req))
        .then([=](invoke_result& r) mutable { rp.deliver(std::move(r.reply)); },
              [=](caf::error& err) mutable {
                sdk::reply r;
                r.error = to_string(errc_of(err)) + ": " + error_detail(err);
                rp.deliver(std::move(r));
              });
      return rp;
    },
    [=](handlers_atom, std::vector<caf::actor>& hs) { self->state.handlers = std::move(hs); },
    [=](sdk::subscribe_atom, std::string& source) {
      auto& st = self->state;
      if (!st.sources.insert(source).second)
        return;
      if (source == "events") {
        auto hub = events_hub_of(self->system());
        if (hub)
          self->send(hub, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
        return;
      }
      if (source.rfind("topic:", 0) == 0 && source.size() > 6 && broker) {
        self->send(self, poll_atom::value, source.substr(6));
        return;
      }
      logger("worker")->warn("{} {}: cannot subscribe to '{}'", module, version, source);
      st.sources.erase(source);
    },
    [=](event_atom, const std::vector<event_record>& evs) {
      for (auto& ev : evs) {
        if (!tenant.empty() && ev.tenant_id != tenant)
          continue;
        if (auto h = deliver())
          self->request(*h, caf::infinite, sdk::deliver_atom::value,
                        sdk::event{"events", to_json(ev)})
            .then([](const sdk::reply&) {}, [](caf::error&) {});
      }
    },
    [=](poll_atom, const std::string& topic) {
      self->request(broker, caf::infinite, consume_atom::value, topic, group,
                    module_consume_batch, module_consume_wait_ms)
        .then(
          [=](std::vector<message_record>& msgs) {
            for (auto& m : msgs) {
              auto h = deliver();
              if (!h)
                break; // not acknowledged: redelivered after the ack deadline
              auto id = m.id;
              self->request(*h, caf::infinite, sdk::deliver_atom::value,
                            sdk::event{m.topic, message_json(m)})
                .then(
                  [=](const sdk::reply& r) {
                    if (r.ok())
                      self->request(broker, caf::infinite, ack_atom::value, id, group)
                        .then([](const message_record&) {}, [](caf::error&) {});
                  },
                  [](caf::error&) {});
            }
            self->send(self, poll_atom::value, topic);
          },
          [=](caf::error& err) {
            logger("worker")->warn("{} {}: consuming {} failed: {}", module, version, topic,
                                   error_detail(err));
            self->delayed_send(self, std::chrono::seconds(1), poll_atom::value, topic);
          });
    },
  };
}

// -- state --------------------------------------------------------------------------------

struct version_slot {
  library_ptr lib;
  std::vector<caf::actor> actors;
  size_t next = 0;
  caf::actor gateway;
  size_t alive = 0;              ///< handler actors not yet down
  bool retiring = false;
  bool stopping = false;         ///< exit sent to the actors
  uint64_t generation = 0;
  invocation_window window;
  std::map<std::string, double> custom;
  millis loaded_at = 0;
  std::vector<caf::typed_response_promise<ok_atom>> retire_waiters;
  command_origin retire_origin;
  module_series series;

  explicit version_slot(uint32_t window_seconds) : window(window_seconds) {
  }
};

struct module_entry {
  version_router router;
  std::map<std::string, version_slot> slots;
  /// Versions being loaded, with who waits for them.
  std::map<std::string, std::vector<caf::typed_response_promise<version_view>>> staging;
  /// Retires that arrived while their version was still loading: the load
  /// is undone as soon as it finishes, then they are answered.
  std::map<std::string, std::vector<caf::typed_response_promise<ok_atom>>> retire_after_load;
};

/// One invocation a handler has taken and not answered yet.
struct pending_call {
  caf::typed_response_promise<invoke_result> rp;
  std::string module;
  std::string version;
  caf::actor_addr handler;
  std::chrono::steady_clock::time_point started;
};

struct host_state {
  module_host_env env;
  /// Invocations in flight by id: CAF 0.17 drops a dead handler's response
  /// promises silently, so the host fails them itself on the down message.
  std::unordered_map<uint64_t, pending_call> calls;
  uint64_t next_call = 0;
  std::map<std::string, module_entry> modules;
  /// The highest epoch seen per command owner.
  std::map<std::string, int64_t> epochs;
  /// Handler actors -> (module, version), for down messages.
  std::unordered_map<caf::actor_addr, std::pair<std::string, std::string>> index;
  uint64_t generations = 0;
  uint64_t libraries = 0;
  /// The worker's loaded versions and weights are durable (snapshot kind
  /// "worker", id "<node>/<environment>") so a restarted node restores them.
  int64_t state_epoch = 0;       ///< 0 until the start-up claim answered
  bool writing = false;
  std::deque<std::pair<std::string, audit_event>> writes;
  /// False until the start-up restore has staged every version and set its
  /// weights: invocations and commands that arrive before wait here, in
  /// order, so nobody sees a half-restored worker (nullptr: go ahead;
  /// otherwise: fail with that error).
  bool restored = false;
  std::vector<std::function<void(const caf::error*)>> deferred;
  static inline const char* name = "module_host";

  host_state() = default;
  host_state(const host_state&) = delete;
  host_state& operator=(const host_state&) = delete;

  /// The host is going away (node shutdown or failure): its handler actors
  /// and gateways go with it (they are not linked, so a module's failure
  /// never takes the host down).
  ~host_state() {
    for (auto& [name, m] : modules)
      for (auto& [version, s] : m.slots) {
        for (auto& a : s.actors)
          caf::anon_send_exit(a, caf::exit_reason::kill);
        if (s.gateway)
          caf::anon_send_exit(s.gateway, caf::exit_reason::kill);
      }
  }
};

using host_ptr = module_host_actor::stateful_pointer<host_state>;

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

std::string tag(const host_state& st, const std::string& module, const std::string& version) {
  return "[W:" + st.env.environment + " M:" + module + (version.empty() ? "" : " " + version)
         + "]";
}

/// Refuses a stale epoch; remembers a newer one.
caf::error check_epoch(host_ptr self, const command_origin& o) {
  if (o.owner.empty())
    return caf::make_error(errc::invalid_argument, "a worker command needs an owner");
  auto& seen = self->state.epochs[o.owner];
  if (o.epoch < seen)
    return caf::make_error(errc::fenced, "epoch " + std::to_string(o.epoch) + " of " + o.owner
                                           + " is older than epoch " + std::to_string(seen)
                                           + " already seen by this worker");
  seen = o.epoch;
  return {};
}

audit_event make_event(host_ptr self, const command_origin& o, const std::string& action,
                       const std::string& result, const std::string& module,
                       const std::string& version, const std::string& message) {
  auto& st = self->state;
  audit_event ev;
  ev.at = now_millis();
  ev.category = "Module";
  ev.action = action;
  ev.result = result;
  ev.entity_kind = "module";
  ev.entity_id = module + "@" + version;
  ev.actor_user = o.actor_user.empty() ? "system" : o.actor_user;
  ev.trace_id = o.trace_id;
  ev.message = message;
  boost::json::object d;
  d["module"] = module;
  d["version"] = version;
  d["environment"] = st.env.environment;
  d["node"] = st.env.node_id;
  d["owner"] = o.owner;
  d["epoch"] = o.epoch;
  ev.detail = boost::json::serialize(d);
  return ev;
}

/// An audit event without a state change (a failed stage).
void audit(host_ptr self, const command_origin& o, const std::string& action,
           const std::string& result, const std::string& module, const std::string& version,
           const std::string& message) {
  auto& st = self->state;
  auto ev = make_event(self, o, action, result, module, version, message);
  auto log_tag = tag(st, module, version);
  self->request(st.env.store, caf::infinite, audit_atom::value, ev)
    .then([](int64_t) {},
          [log_tag, action](caf::error& err) {
            logger("worker")->warn("{} audit event {} not written: {}", log_tag, action,
                                   error_detail(err));
          });
}

std::string worker_id(const host_state& st) {
  return st.env.node_id + "/" + st.env.environment;
}

/// {"modules":{"echo":{"1.0.0":100,"2.0.0":0}}} of the versions taking part
/// (retiring ones excluded).
std::string state_json(const host_state& st) {
  boost::json::object modules;
  for (auto& [name, m] : st.modules) {
    boost::json::object versions;
    for (auto& [version, slot] : m.slots)
      if (!slot.retiring)
        versions[version] = m.router.weight(version);
    if (!versions.empty())
      modules[name] = std::move(versions);
  }
  boost::json::object o;
  o["modules"] = std::move(modules);
  return boost::json::serialize(o);
}

void drain_writes(host_ptr self) {
  auto& st = self->state;
  if (st.writing || st.writes.empty() || st.state_epoch == 0)
    return;
  auto [body, ev] = std::move(st.writes.front());
  st.writes.pop_front();
  snapshot_record snap;
  snap.kind = "worker";
  snap.id = worker_id(st);
  snap.status = "Active";
  snap.epoch = st.state_epoch;
  snap.body = body;
  snap.updated_at = now_millis();
  st.writing = true;
  auto action = ev.action;
  self->request(st.env.store, caf::infinite, put_atom::value, snap, ev)
    .then(
      [=](int64_t) {
        self->state.writing = false;
        drain_writes(self);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        st.writing = false;
        logger("worker")->warn("[W:{}] worker state and {} not written: {}", st.env.environment,
                               action, error_detail(err));
        drain_writes(self);
      });
}

/// Records the worker's current state together with the audit event of the
/// change (one transaction), in order.
void save_state(host_ptr self, audit_event ev) {
  auto& st = self->state;
  st.writes.emplace_back(state_json(st), std::move(ev));
  drain_writes(self);
}

/// How many invocations and commands may wait for the start-up restore.
constexpr size_t max_deferred = 10000;

/// The restore origin: its own stage and weights commands never wait.
const std::string restore_owner = "restore";

/// Keeps a message that arrived before the restore finished; it is handled
/// (delegated to this host again, same sender and request id) once the
/// worker is whole.
template <class T, class... Ts>
caf::result<T> defer(host_ptr self, Ts... xs) {
  auto& st = self->state;
  if (st.deferred.size() >= max_deferred)
    return caf::make_error(errc::unavailable, "the " + st.env.environment + " worker on node "
                                                + st.env.node_id
                                                + " is still restoring its modules");
  auto rp = self->make_response_promise<T>();
  st.deferred.emplace_back([self, rp, xs...](const caf::error* err) mutable {
    if (err != nullptr)
      rp.deliver(*err);
    else
      rp.delegate(module_host_actor{self}, xs...);
  });
  return rp;
}

void run_deferred(host_ptr self, const caf::error* err) {
  auto deferred = std::move(self->state.deferred);
  self->state.deferred.clear();
  for (auto& f : deferred)
    f(err);
}

void finish_restore(host_ptr self) {
  auto& st = self->state;
  if (st.restored)
    return;
  st.restored = true;
  if (!st.deferred.empty())
    logger("worker")->info("[W:{}] restored; handling {} waiting request(s)",
                           st.env.environment, st.deferred.size());
  run_deferred(self, nullptr);
}

/// The last step of restoring one module: its weights (versions that could
/// not be staged are left out, so the others still take their share).
template <class Done>
void restore_weights(host_ptr self, const std::string& module,
                     std::map<std::string, uint32_t> weights, const command_origin& o,
                     Done done) {
  auto& st = self->state;
  auto mi = st.modules.find(module);
  for (auto i = weights.begin(); i != weights.end();)
    if (mi == st.modules.end() || mi->second.slots.count(i->first) == 0)
      i = weights.erase(i);
    else
      ++i;
  if (weights.empty()) {
    done();
    return;
  }
  self->request(module_host_actor{self}, std::chrono::minutes(2), weights_atom::value,
                weights_command{module, weights, o})
    .then([done](module_view&) mutable { done(); },
          [module, done](caf::error& err) mutable {
            logger("worker")->warn("[M:{}] weights not restored: {}", module, error_detail(err));
            done();
          });
}

/// Start-up: claim this worker's state and restore what a previous run had
/// loaded (stage every version, then its weights). Until it is done,
/// invocations and commands wait (defer).
void restore(host_ptr self) {
  auto& st = self->state;
  self->request(st.env.store, std::chrono::seconds(30), claim_atom::value,
                std::string{"worker"}, worker_id(st), st.env.node_id)
    .then(
      [=](claim_result& cr) {
        auto& st = self->state;
        st.state_epoch = cr.epoch;
        auto modules_left = std::make_shared<size_t>(0);
        if (!cr.snapshot.body.empty()) {
          boost::system::error_code ec;
          auto v = boost::json::parse(cr.snapshot.body, ec);
          if (!ec && v.is_object() && v.as_object().contains("modules")
              && v.as_object().at("modules").is_object()) {
            command_origin o;
            o.owner = restore_owner;
            o.actor_user = "system";
            for (auto& [name, versions] : v.as_object().at("modules").as_object())
              if (versions.is_object() && !versions.as_object().empty())
                ++*modules_left;
            auto module_done = [self, modules_left] {
              if (--*modules_left == 0)
                finish_restore(self);
            };
            for (auto& [name, versions] : v.as_object().at("modules").as_object()) {
              if (!versions.is_object() || versions.as_object().empty())
                continue;
              std::map<std::string, uint32_t> weights;
              for (auto& [version, w] : versions.as_object())
                weights[std::string(version)] = w.is_int64() ? static_cast<uint32_t>(w.as_int64())
                                                             : 0u;
              auto module = std::string(name);
              auto left = std::make_shared<size_t>(weights.size());
              logger("worker")->info("[W:{} M:{}] restoring {} version(s)", st.env.environment,
                                     module, weights.size());
              for (auto& [version, w] : weights) {
                self->request(module_host_actor{self}, std::chrono::minutes(2), stage_atom::value,
                              stage_command{module, version, 0, o})
                  .then(
                    [=](version_view&) {
                      if (--*left == 0)
                        restore_weights(self, module, weights, o, module_done);
                    },
                    [=](caf::error& err) {
                      logger("worker")->warn("[M:{} {}] not restored: {}", module, version,
                                             error_detail(err));
                      if (--*left == 0)
                        restore_weights(self, module, weights, o, module_done);
                    });
              }
            }
          }
        }
        drain_writes(self);
        if (*modules_left == 0)
          finish_restore(self); // nothing to restore
      },
      [=](caf::error& err) {
        auto& st = self->state;
        logger("worker")->error("[W:{}] worker state not claimed: {}; retrying",
                                st.env.environment, error_detail(err));
        // Whoever waits gets a clear 503 instead of waiting for the store.
        auto why = caf::make_error(errc::unavailable,
                                   "the " + st.env.environment + " worker on node "
                                     + st.env.node_id + " cannot read its state from the store: "
                                     + error_detail(err));
        run_deferred(self, &why);
        self->delayed_send(self, std::chrono::seconds(1), restore_atom::value);
      });
}

version_view view_of(const host_state& st, const module_entry& m, const std::string& version,
                     const version_slot& s) {
  version_view v;
  v.version = version;
  v.weight = m.router.weight(version);
  v.state = s.retiring ? "Draining" : "Active";
  v.in_flight = m.router.in_flight(version);
  auto w = s.window.stats(steady_ms(), st.env.window_seconds);
  v.invocations = w.invocations;
  v.errors = w.errors;
  v.error_rate = w.error_rate;
  v.per_second = w.per_second;
  v.p50_ms = w.p50_ms;
  v.p95_ms = w.p95_ms;
  v.p99_ms = w.p99_ms;
  v.total_invocations = s.window.total_invocations();
  v.total_errors = s.window.total_errors();
  v.digest = s.lib->record.digest;
  v.is_signed = s.lib->record.is_signed;
  v.loaded_at = s.loaded_at;
  v.custom = s.custom;
  return v;
}

module_view module_view_of(const host_state& st, const std::string& name, const module_entry& m) {
  module_view out;
  out.name = name;
  for (auto& [version, s] : m.slots)
    out.versions.push_back(view_of(st, m, version, s));
  return out;
}

// -- retire ---------------------------------------------------------------------------------

/// All handler actors of a retiring version are down: hand the library to
/// the loader for dlclose, then answer the retire waiters.
void unload(host_ptr self, const std::string& module, const std::string& version) {
  auto& st = self->state;
  auto mi = st.modules.find(module);
  if (mi == st.modules.end())
    return;
  auto si = mi->second.slots.find(version);
  if (si == mi->second.slots.end())
    return;
  auto lib = std::move(si->second.lib);
  auto waiters = std::move(si->second.retire_waiters);
  auto origin = si->second.retire_origin;
  if (si->second.gateway)
    self->send_exit(si->second.gateway, caf::exit_reason::user_shutdown);
  mi->second.router.remove(version);
  mi->second.slots.erase(si);
  if (mi->second.slots.empty() && mi->second.staging.empty())
    st.modules.erase(mi);
  auto t = tag(st, module, version);
  self->request(st.env.loader, caf::infinite, unload_atom::value, std::move(lib))
    .then(
      [=](ok_atom) mutable {
        auto& st = self->state;
        if (st.libraries > 0)
          --st.libraries;
        if (st.env.metrics)
          st.env.metrics->module_libraries_loaded().Decrement();
        logger("worker")->info("{} retired", t);
        save_state(self, make_event(self, origin, "ModuleRetired", "Success", module, version,
                                    "retired " + module + " " + version + " in "
                                      + st.env.environment));
        for (auto& w : waiters)
          w.deliver(ok_atom::value);
      },
      [=](caf::error& err) mutable {
        logger("worker")->error("{} unload failed: {}", t, error_detail(err));
        for (auto& w : waiters)
          w.deliver(err);
      });
}

/// Stops the version's handler actors (drained, or past the drain deadline).
void stop_actors(host_ptr self, const std::string& module, const std::string& version,
                 caf::exit_reason reason) {
  auto& st = self->state;
  auto& s = st.modules.at(module).slots.at(version);
  if (s.stopping)
    return;
  s.stopping = true;
  auto actors = std::move(s.actors);
  s.actors.clear();
  if (actors.empty() || s.alive == 0) {
    unload(self, module, version);
    return;
  }
  for (auto& a : actors)
    self->send_exit(a, reason);
}

/// Called when an invocation ends or a retire starts.
void maybe_finish_drain(host_ptr self, const std::string& module, const std::string& version) {
  auto& st = self->state;
  auto mi = st.modules.find(module);
  if (mi == st.modules.end())
    return;
  auto si = mi->second.slots.find(version);
  if (si == mi->second.slots.end() || !si->second.retiring || si->second.stopping)
    return;
  if (mi->second.router.in_flight(version) == 0)
    stop_actors(self, module, version, caf::exit_reason::user_shutdown);
}

// -- stage ------------------------------------------------------------------------------------

void spawn_handlers(host_ptr self, version_slot& s, const std::string& module,
                    const std::string& version, size_t count) {
  auto& st = self->state;
  for (size_t i = 0; i < count; ++i) {
    sdk::context ctx;
    ctx.module = module;
    ctx.version = version;
    ctx.environment = st.env.environment;
    ctx.node = st.env.node_id;
    ctx.runtime = s.gateway;
    auto a = self->system().spawn<module_actor>(s.lib, std::move(ctx));
    self->monitor(a);
    st.index.emplace(a.address(), std::make_pair(module, version));
    s.actors.push_back(a);
    ++s.alive;
  }
}

void loaded(host_ptr self, const stage_command& cmd, library_ptr lib) {
  auto& st = self->state;
  auto& m = st.modules[cmd.module];
  auto waiters = std::move(m.staging[cmd.version]);
  m.staging.erase(cmd.version);
  if (auto r = m.retire_after_load.find(cmd.version); r != m.retire_after_load.end()) {
    // Retired while loading: never route to it; close it again at once.
    auto retirers = std::move(r->second);
    m.retire_after_load.erase(r);
    if (m.slots.empty() && m.staging.empty() && m.retire_after_load.empty())
      st.modules.erase(cmd.module);
    logger("worker")->info("{} retired while it was loading; unloading",
                           tag(st, cmd.module, cmd.version));
    auto err = caf::make_error(errc::conflict, cmd.module + " " + cmd.version
                                                 + " was retired while it was loading");
    for (auto& w : waiters)
      w.deliver(err);
    self->request(st.env.loader, caf::infinite, unload_atom::value, std::move(lib))
      .then(
        [=](ok_atom) mutable {
          for (auto& w : retirers)
            w.deliver(ok_atom::value);
        },
        [=](caf::error& e) mutable {
          for (auto& w : retirers)
            w.deliver(e);
        });
    return;
  }
  auto [si, added] = m.slots.emplace(cmd.version, version_slot{st.env.window_seconds});
  auto& s = si->second;
  s.lib = std::move(lib);
  s.loaded_at = now_millis();
  if (st.env.metrics)
    s.series = st.env.metrics->module_series_for(cmd.module, cmd.version);
  auto settings = std::string{"{}"};
  if (auto i = st.env.settings.find(cmd.module); i != st.env.settings.end())
    settings = i->second;
  s.gateway = self->system().spawn(gateway, module_host_actor{self}, cmd.module, cmd.version,
                                   settings, s.lib->record.tenant_id, st.env.messages);
  spawn_handlers(self, s, cmd.module, cmd.version, std::max<uint32_t>(1, st.env.instances));
  caf::anon_send(s.gateway, handlers_atom::value, s.actors);
  uint32_t weight = cmd.weight >= 0 ? static_cast<uint32_t>(cmd.weight)
                                    : (m.router.total_weight() == 0 ? 100u : 0u);
  m.router.add(cmd.version, weight);
  ++st.libraries;
  if (st.env.metrics)
    st.env.metrics->module_libraries_loaded().Increment();
  logger("worker")->info("{} staged with weight {} ({} handler actors)",
                         tag(st, cmd.module, cmd.version), weight, s.actors.size());
  save_state(self, make_event(self, cmd.origin, "ModuleStaged", "Success", cmd.module,
                              cmd.version,
                              "staged " + cmd.module + " " + cmd.version + " in "
                                + st.env.environment));
  auto v = view_of(st, m, cmd.version, s);
  for (auto& w : waiters)
    w.deliver(v);
}

void stage_failed(host_ptr self, const stage_command& cmd, const caf::error& err) {
  auto& st = self->state;
  auto mi = st.modules.find(cmd.module);
  if (mi == st.modules.end())
    return;
  auto waiters = std::move(mi->second.staging[cmd.version]);
  mi->second.staging.erase(cmd.version);
  if (auto r = mi->second.retire_after_load.find(cmd.version);
      r != mi->second.retire_after_load.end()) {
    for (auto& w : r->second)
      w.deliver(ok_atom::value); // nothing was loaded: retired
    mi->second.retire_after_load.erase(r);
  }
  if (mi->second.slots.empty() && mi->second.staging.empty())
    st.modules.erase(mi);
  logger("worker")->warn("{} stage failed: {}", tag(st, cmd.module, cmd.version),
                         error_detail(err));
  audit(self, cmd.origin, "ModuleStageFailed", "Failure", cmd.module, cmd.version,
        error_detail(err));
  for (auto& w : waiters)
    w.deliver(err);
}

// -- invoke -----------------------------------------------------------------------------------

void finished(host_ptr self, const std::string& module, const std::string& version,
              std::chrono::steady_clock::time_point t0, bool error) {
  auto& st = self->state;
  auto mi = st.modules.find(module);
  if (mi == st.modules.end())
    return;
  auto si = mi->second.slots.find(version);
  if (si == mi->second.slots.end())
    return;
  auto now = std::chrono::steady_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - t0).count();
  mi->second.router.end(version);
  si->second.window.record(steady_ms(), static_cast<uint64_t>(us), error);
  auto& series = si->second.series;
  if (series.seconds != nullptr) {
    (error ? series.error : series.ok)->Increment();
    series.seconds->Observe(static_cast<double>(us) / 1e6);
  }
  if (si->second.retiring)
    maybe_finish_drain(self, module, version);
}

std::optional<pending_call> take_call(host_ptr self, uint64_t id) {
  auto& calls = self->state.calls;
  auto i = calls.find(id);
  if (i == calls.end())
    return std::nullopt;
  auto call = std::move(i->second);
  calls.erase(i);
  return call;
}

/// Fails every invocation the handler `addr` had taken (it is down).
void fail_calls(host_ptr self, const caf::actor_addr& addr, const caf::error& reason) {
  auto& calls = self->state.calls;
  std::vector<pending_call> failed;
  for (auto i = calls.begin(); i != calls.end();) {
    if (i->second.handler == addr) {
      failed.push_back(std::move(i->second));
      i = calls.erase(i);
    } else {
      ++i;
    }
  }
  for (auto& call : failed) {
    finished(self, call.module, call.version, call.started, true);
    call.rp.deliver(caf::make_error(errc::module_failure,
                                    "module " + call.module + " " + call.version
                                      + " stopped before answering: "
                                      + self->system().render(reason)));
  }
}

/// Sends one request to the next handler of `version` and answers through
/// the returned promise once the handler replies (or is gone); every call is
/// tracked so a dying handler's calls can be failed (fail_calls).
caf::typed_response_promise<invoke_result> dispatch(host_ptr self, module_entry& m,
                                                    const std::string& module,
                                                    const std::string& version,
                                                    sdk::request req) {
  auto& st = self->state;
  auto& s = m.slots.at(version);
  m.router.begin(version);
  auto target = s.actors[s.next++ % s.actors.size()];
  auto rp = self->make_response_promise<invoke_result>();
  auto id = ++st.next_call;
  st.calls.emplace(id, pending_call{rp, module, version, target.address(),
                                    std::chrono::steady_clock::now()});
  self->request(target, caf::infinite, sdk::invoke_atom::value, std::move(req))
    .then(
      [=](sdk::reply& r) {
        auto call = take_call(self, id);
        if (!call)
          return; // already failed when its handler went down
        finished(self, module, version, call->started, !r.ok());
        call->rp.deliver(invoke_result{module, version, std::move(r)});
      },
      [=](caf::error& err) {
        auto call = take_call(self, id);
        if (!call)
          return;
        finished(self, module, version, call->started, true);
        call->rp.deliver(caf::make_error(errc::module_failure,
                                         "module " + module + " " + version + " failed: "
                                           + self->system().render(err)));
      });
  return rp;
}

// -- the behavior -----------------------------------------------------------------------------

module_host_actor::behavior_type host(host_ptr self, module_host_env env) {
  self->state.env = std::move(env);
  restore(self);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto ii = st.index.find(dm.source);
    if (ii == st.index.end())
      return;
    auto [module, version] = ii->second;
    st.index.erase(ii);
    // Before anything else: its taken invocations will never be answered.
    fail_calls(self, dm.source, dm.reason);
    auto mi = st.modules.find(module);
    if (mi == st.modules.end())
      return;
    auto si = mi->second.slots.find(version);
    if (si == mi->second.slots.end())
      return;
    auto& s = si->second;
    if (s.alive > 0)
      --s.alive;
    if (s.stopping) {
      if (s.alive == 0)
        unload(self, module, version);
      return;
    }
    // A handler died while serving: replace it (its taken invocations were
    // failed above).
    logger("worker")->warn("{} handler actor stopped: {}; replacing it", tag(st, module, version),
                           caf::to_string(dm.reason));
    auto addr = dm.source;
    s.actors.erase(std::remove_if(s.actors.begin(), s.actors.end(),
                                  [&](const caf::actor& a) { return a.address() == addr; }),
                   s.actors.end());
    spawn_handlers(self, s, module, version, 1);
  });
  return {
    [=](sdk::invoke_atom, std::string& module,
        sdk::request& req) -> caf::result<invoke_result> {
      auto& st = self->state;
      if (!st.restored)
        return defer<invoke_result>(self, sdk::invoke_atom::value, std::move(module),
                                    std::move(req));
      auto mi = st.modules.find(module);
      if (mi == st.modules.end() || mi->second.slots.empty())
        return caf::make_error(errc::not_found, "module " + module + " is not loaded in "
                                                  + st.env.environment + " on node "
                                                  + st.env.node_id);
      auto version = mi->second.router.pick();
      if (version.empty())
        return caf::make_error(errc::unavailable, "no version of module " + module
                                                    + " takes traffic in " + st.env.environment);
      auto& s = mi->second.slots.at(version);
      // A tenant's caller reaches platform modules and its own tenant's only.
      if (!req.tenant.empty() && !s.lib->record.tenant_id.empty()
          && s.lib->record.tenant_id != req.tenant)
        return caf::make_error(errc::not_found, "module " + module + " is not loaded in "
                                                  + st.env.environment + " on node "
                                                  + st.env.node_id);
      if (s.actors.empty())
        return caf::make_error(errc::unavailable, "module " + module + " " + version
                                                    + " has no running handler");
      return dispatch(self, mi->second, module, version, std::move(req));
    },
    [=](stage_atom, stage_command& cmd) -> caf::result<version_view> {
      auto& st = self->state;
      if (!st.restored && cmd.origin.owner != restore_owner)
        return defer<version_view>(self, stage_atom::value, std::move(cmd));
      if (auto err = check_epoch(self, cmd.origin))
        return err;
      auto& m = st.modules[cmd.module];
      if (auto si = m.slots.find(cmd.version); si != m.slots.end()) {
        if (si->second.retiring)
          return caf::make_error(errc::conflict, cmd.module + " " + cmd.version
                                                   + " is being retired; stage it again after");
        return view_of(st, m, cmd.version, si->second);
      }
      auto rp = self->make_response_promise<version_view>();
      auto& waiters = m.staging[cmd.version];
      waiters.push_back(rp);
      if (waiters.size() > 1)
        return rp; // a load of this version is already running
      load_request lr{cmd.module, cmd.version, st.env.environment, st.env.require_signed};
      self->request(st.env.loader, std::chrono::minutes(2), load_atom::value, lr)
        .then([=](library_ptr& lib) { loaded(self, cmd, std::move(lib)); },
              [=](caf::error& err) { stage_failed(self, cmd, err); });
      return rp;
    },
    [=](weights_atom, weights_command& cmd) -> caf::result<module_view> {
      auto& st = self->state;
      if (!st.restored && cmd.origin.owner != restore_owner)
        return defer<module_view>(self, weights_atom::value, std::move(cmd));
      if (auto err = check_epoch(self, cmd.origin))
        return err;
      auto mi = st.modules.find(cmd.module);
      if (mi == st.modules.end() || mi->second.slots.empty())
        return caf::make_error(errc::not_found, "module " + cmd.module + " is not loaded in "
                                                  + st.env.environment);
      auto why = mi->second.router.set_weights(cmd.weights);
      if (!why.empty())
        return caf::make_error(errc::conflict, why);
      std::string summary;
      for (auto& [v, w] : mi->second.router.weights())
        summary += (summary.empty() ? "" : ", ") + v + "=" + std::to_string(w);
      logger("worker")->info("{} weights {}", tag(st, cmd.module, ""), summary);
      save_state(self, make_event(self, cmd.origin, "ModuleWeightsSet", "Success", cmd.module,
                                  "", "weights of " + cmd.module + " in " + st.env.environment
                                        + ": " + summary));
      return module_view_of(st, cmd.module, mi->second);
    },
    [=](retire_atom, retire_command& cmd) -> caf::result<ok_atom> {
      auto& st = self->state;
      if (!st.restored)
        return defer<ok_atom>(self, retire_atom::value, std::move(cmd));
      if (auto err = check_epoch(self, cmd.origin))
        return err;
      auto mi = st.modules.find(cmd.module);
      if (mi == st.modules.end())
        return ok_atom::value;
      auto si = mi->second.slots.find(cmd.version);
      if (si == mi->second.slots.end()) {
        if (mi->second.staging.count(cmd.version)) {
          // Still loading: retire it as soon as the load finishes.
          auto rp = self->make_response_promise<ok_atom>();
          mi->second.retire_after_load[cmd.version].push_back(rp);
          return rp;
        }
        return ok_atom::value; // never loaded or already retired
      }
      auto& s = si->second;
      auto rp = self->make_response_promise<ok_atom>();
      s.retire_waiters.push_back(rp);
      if (s.retiring)
        return rp;
      s.retiring = true;
      s.retire_origin = cmd.origin;
      s.generation = ++st.generations;
      mi->second.router.drain(cmd.version);
      logger("worker")->info("{} retiring: draining {} in-flight",
                             tag(st, cmd.module, cmd.version),
                             mi->second.router.in_flight(cmd.version));
      self->delayed_send(self, st.env.drain_timeout, retire_atom::value, cmd.module, cmd.version,
                         s.generation);
      maybe_finish_drain(self, cmd.module, cmd.version);
      return rp;
    },
    [=](retire_atom, std::string& module, std::string& version, uint64_t generation) {
      // The drain deadline: stop the actors; their in-flight requests fail.
      auto& st = self->state;
      auto mi = st.modules.find(module);
      if (mi == st.modules.end())
        return;
      auto si = mi->second.slots.find(version);
      if (si == mi->second.slots.end() || si->second.generation != generation
          || si->second.stopping)
        return;
      logger("worker")->warn("{} drain deadline passed with {} in flight; stopping its actors",
                             tag(st, module, version), mi->second.router.in_flight(version));
      stop_actors(self, module, version, caf::exit_reason::kill);
    },
    [=](probe_atom, std::string& module, std::string& version,
        sdk::request& req) -> caf::result<invoke_result> {
      auto& st = self->state;
      if (!st.restored)
        return defer<invoke_result>(self, probe_atom::value, std::move(module),
                                    std::move(version), std::move(req));
      auto mi = st.modules.find(module);
      if (mi == st.modules.end() || mi->second.slots.count(version) == 0)
        return caf::make_error(errc::not_found, "module " + module + " " + version
                                                  + " is not loaded in " + st.env.environment
                                                  + " on node " + st.env.node_id);
      auto& s = mi->second.slots.at(version);
      if (s.retiring || s.actors.empty())
        return caf::make_error(errc::unavailable, "module " + module + " " + version
                                                    + " is being retired");
      if (req.caller.empty())
        req.caller = "probe";
      return dispatch(self, mi->second, module, version, std::move(req));
    },
    [=](restore_atom) { restore(self); },
    [=](get_atom) {
      auto& st = self->state;
      host_view out;
      out.node = st.env.node_id;
      out.environment = st.env.environment;
      out.loaded_libraries = st.libraries;
      double weighted_mean = 0;
      for (auto& [name, m] : st.modules) {
        if (m.slots.empty())
          continue;
        auto mv = module_view_of(st, name, m);
        for (auto& v : mv.versions) {
          out.invocations += v.invocations;
          out.errors += v.errors;
          out.per_second += v.per_second;
          out.p95_ms = std::max(out.p95_ms, v.p95_ms);
        }
        out.modules.push_back(std::move(mv));
      }
      for (auto& [name, m] : st.modules)
        for (auto& [version, s] : m.slots) {
          auto w = s.window.stats(steady_ms(), st.env.window_seconds);
          weighted_mean += w.mean_ms * static_cast<double>(w.invocations);
        }
      out.mean_ms = out.invocations > 0 ? weighted_mean / static_cast<double>(out.invocations) : 0;
      return out;
    },
    [=](sdk::publish_atom, std::string& module, std::string& version, sdk::event& ev) {
      // The gateway publishes the message; the host counts and logs it.
      auto& st = self->state;
      logger("worker")->debug("{} published to {}: {}", tag(st, module, version), ev.topic,
                              ev.payload);
      if (st.env.metrics)
        st.env.metrics->module_events().Increment();
    },
    [=](sdk::metric_atom, std::string& module, std::string& version, sdk::metric& m) {
      auto& st = self->state;
      auto mi = st.modules.find(module);
      if (mi == st.modules.end())
        return;
      auto si = mi->second.slots.find(version);
      if (si == mi->second.slots.end())
        return;
      auto valid = !m.name.empty() && m.name.size() <= 64
                   && std::all_of(m.name.begin(), m.name.end(), [](char c) {
                        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                      });
      auto& custom = si->second.custom;
      if (!valid || (custom.size() >= 16 && custom.count(m.name) == 0)) {
        logger("worker")->debug("{} metric {} ignored (invalid name or more than 16 names)",
                                tag(st, module, version), m.name);
        return;
      }
      custom[m.name] = m.value;
    },
  };
}

} // namespace

module_host_actor spawn_module_host(caf::actor_system& sys, module_host_env env) {
  ++sdk_instances_anchor;
  return sys.spawn(host, std::move(env));
}

void register_worker_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<sdk::request>("hotswap_sdk_request");
  cfg.add_message_type<sdk::reply>("hotswap_sdk_reply");
  cfg.add_message_type<sdk::event>("hotswap_sdk_event");
  cfg.add_message_type<sdk::metric>("hotswap_sdk_metric");
  cfg.add_message_type<command_origin>("command_origin");
  cfg.add_message_type<stage_command>("stage_command");
  cfg.add_message_type<weights_command>("weights_command");
  cfg.add_message_type<retire_command>("retire_command");
  cfg.add_message_type<invoke_result>("invoke_result");
  cfg.add_message_type<version_view>("version_view");
  cfg.add_message_type<module_view>("module_view");
  cfg.add_message_type<host_view>("host_view");
  cfg.add_message_type<load_request>("load_request");
  cfg.add_message_type<std::map<std::string, uint32_t>>("std::map<std::string,uint32_t>");
  cfg.add_message_type<std::map<std::string, double>>("std::map<std::string,double>");
  cfg.add_message_type<std::vector<version_view>>("std::vector<version_view>");
  cfg.add_message_type<std::vector<module_view>>("std::vector<module_view>");
}

} // namespace hotswap
