// The module_host actor on CAF's deterministic coordinator. The loader is a
// test double that hands out in-process module definitions (no files, no
// dlopen) and records every unload; the audit events go to a real SQLite
// store in memory.
#define CAF_SUITE module_host
#include "caf/test/dsl.hpp"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hotswap/actors/module_host.hpp"
#include "hotswap/actors/node.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/store_actor.hpp"

using namespace hotswap;
using namespace std::chrono_literals;

namespace {

// -- in-process modules -----------------------------------------------------------------

using reply_promise = caf::typed_response_promise<sdk::reply>;

sdk::reply answer(const std::string& version, const sdk::request& req) {
  sdk::reply r;
  r.payload = version + ":" + req.payload;
  r.content_type = "text/plain";
  return r;
}

/// Answers at once, prefixed with the version its code was built as.
template <const char* Version>
caf::behavior echo(caf::event_based_actor*, const sdk::context&) {
  return {[](sdk::invoke_atom, sdk::request& req) { return answer(Version, req); }};
}

/// Answers every request, with `error` set when the payload is "fail".
caf::behavior flaky(caf::event_based_actor*, const sdk::context&) {
  return {[](sdk::invoke_atom, sdk::request& req) {
    auto r = answer("1.0.0", req);
    if (req.payload == "fail")
      r.error = "boom";
    return r;
  }};
}

/// Answers one second later (the SDK's way: a promise and a delayed tick).
caf::behavior slow(caf::event_based_actor* self, const sdk::context&) {
  auto pending = std::make_shared<std::map<uint64_t, std::pair<reply_promise, sdk::request>>>();
  auto next = std::make_shared<uint64_t>(0);
  return {
    [=](sdk::invoke_atom, sdk::request& req) {
      auto rp = self->make_response_promise<sdk::reply>();
      auto id = ++*next;
      pending->emplace(id, std::make_pair(rp, std::move(req)));
      self->delayed_send(self, 1s, sdk::tick_atom::value, id);
      return rp;
    },
    [=](sdk::tick_atom, uint64_t id) {
      auto i = pending->find(id);
      if (i == pending->end())
        return;
      i->second.first.deliver(answer("1.0.0", i->second.second));
      pending->erase(i);
    },
  };
}

/// Takes every request and never answers.
caf::behavior hang(caf::event_based_actor* self, const sdk::context&) {
  auto held = std::make_shared<std::vector<reply_promise>>();
  return {[=](sdk::invoke_atom, sdk::request&) {
    auto rp = self->make_response_promise<sdk::reply>();
    held->push_back(rp);
    return rp;
  }};
}

const char* healthy() {
  return nullptr;
}

constexpr char v1[] = "1.0.0";
constexpr char v2[] = "2.0.0";

const sdk::module_definition echo_v1{HOTSWAP_ABI_TOKEN, "echo", v1, "echo", echo<v1>, healthy};
const sdk::module_definition echo_v2{HOTSWAP_ABI_TOKEN, "echo", v2, "echo", echo<v2>, healthy};
const sdk::module_definition flaky_v1{HOTSWAP_ABI_TOKEN, "flaky", v1, "flaky", flaky, healthy};
const sdk::module_definition slow_v1{HOTSWAP_ABI_TOKEN, "slow", v1, "slow", slow, healthy};
const sdk::module_definition hang_v1{HOTSWAP_ABI_TOKEN, "hang", v1, "hang", hang, healthy};

const sdk::module_definition* definition_of(const load_request& r) {
  for (auto def : {&echo_v1, &echo_v2, &flaky_v1, &slow_v1, &hang_v1})
    if (r.module == def->name && r.version == def->version)
      return def;
  return nullptr;
}

// -- the loader test double ---------------------------------------------------------------

/// What the test loader was asked, shared with the test body.
struct loader_log {
  std::vector<load_request> loads;
  std::vector<std::string> unloads; ///< "module@version"
  /// Hold unload answers until a tick_atom arrives.
  bool hold_unloads = false;
  std::vector<caf::typed_response_promise<ok_atom>> held;
  /// Runs when an unload arrives, before it is answered.
  std::function<void()> on_unload;
};

/// Loads in-process definitions; version 9.9.9 of anything fails to load.
module_loader_actor::behavior_type fake_loader(module_loader_actor::pointer self,
                                               std::shared_ptr<loader_log> log) {
  return {
    [=](load_atom, load_request& r) -> caf::result<library_ptr> {
      log->loads.push_back(r);
      if (r.version == "9.9.9")
        return caf::make_error(errc::invalid_argument, "bad");
      auto def = definition_of(r);
      if (def == nullptr)
        return caf::make_error(errc::not_found, "no module " + r.module + " " + r.version);
      auto lib = std::make_shared<loaded_library>();
      lib->def = def;
      lib->environment = r.environment;
      lib->record.name = r.module;
      lib->record.version = r.version;
      lib->record.digest = "sha256:" + r.module + "-" + r.version;
      lib->record.abi_token = def->abi_token;
      return lib;
    },
    [=](unload_atom, library_ptr& lib) -> caf::result<ok_atom> {
      log->unloads.push_back(lib->record.name + "@" + lib->record.version);
      if (log->on_unload)
        log->on_unload();
      if (!log->hold_unloads)
        return ok_atom::value;
      auto rp = self->make_response_promise<ok_atom>();
      log->held.push_back(rp);
      return rp;
    },
    [=](tick_atom) {
      for (auto& rp : log->held)
        rp.deliver(ok_atom::value);
      log->held.clear();
    },
  };
}

// -- the fixture ------------------------------------------------------------------------

struct test_config : caf::actor_system_config {
  test_config() {
    register_types(*this);
  }
};

/// An answer that may not have arrived yet.
template <class T>
using outcome = std::shared_ptr<std::optional<caf::expected<T>>>;

template <class T>
bool answered(const outcome<T>& x) {
  return x->has_value();
}

template <class T>
errc error_of(const outcome<T>& x) {
  if (!x->has_value() || **x)
    return errc::none;
  return errc_of((*x)->error());
}

struct fixture : test_coordinator_fixture<test_config> {
  std::shared_ptr<loader_log> log = std::make_shared<loader_log>();
  store_actor store;
  module_loader_actor loader;
  module_host_actor host;
  static constexpr auto drain_timeout = 10s;

  fixture() {
    auto db = open_store("sqlite://:memory:");
    CAF_REQUIRE(db);
    CAF_REQUIRE((*db)->migrate());
    store = spawn_store_worker(sys, std::move(*db), nullptr, false);
    loader = sys.spawn(fake_loader, log);
    host = spawn_host();
    sched.run();
  }

  /// A host for node-a's prod worker (the same durable worker state).
  module_host_actor spawn_host() {
    module_host_env env;
    env.node_id = "node-a";
    env.environment = "prod";
    env.require_signed = false;
    env.loader = loader;
    env.store = store;
    env.metrics = nullptr;
    env.instances = 2;
    env.drain_timeout = drain_timeout;
    return spawn_module_host(sys, env);
  }

  ~fixture() {
    for (auto h : {caf::actor_cast<caf::actor>(host), caf::actor_cast<caf::actor>(loader),
                   caf::actor_cast<caf::actor>(store)})
      caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    sched.run();
  }

  /// Sends a request from a fresh client actor; the answer lands in the
  /// returned outcome once the coordinator runs. Nothing here blocks, so a
  /// request that is never answered fails a check instead of hanging.
  template <class T, class Handle, class... Ts>
  outcome<T> send(Handle hdl, Ts... xs) {
    auto out = std::make_shared<std::optional<caf::expected<T>>>();
    sys.spawn([=](caf::event_based_actor* client) {
      client->request(hdl, caf::infinite, xs...)
        .then([=](T& x) { out->emplace(std::move(x)); },
              [=](caf::error& err) { out->emplace(std::move(err)); });
    });
    return out;
  }

  /// Sends a request to the host and runs the jobs (no timers) until idle.
  template <class T, class... Ts>
  caf::expected<T> ask(Ts... xs) {
    auto out = send<T>(host, xs...);
    sched.run();
    CAF_REQUIRE(answered(out));
    return std::move(**out);
  }

  static command_origin origin(std::string owner = "d-1", int64_t epoch = 1) {
    return {std::move(owner), epoch, "alice", "trace-1"};
  }

  static stage_command stage_cmd(std::string module, std::string version, int32_t weight = -1,
                                 command_origin o = origin()) {
    return {std::move(module), std::move(version), weight, std::move(o)};
  }

  caf::expected<version_view> stage(std::string module, std::string version,
                                    command_origin o = origin()) {
    return ask<version_view>(stage_atom::value, stage_cmd(module, version, -1, o));
  }

  caf::expected<module_view> weights(std::string module, std::map<std::string, uint32_t> ws,
                                     command_origin o = origin()) {
    return ask<module_view>(weights_atom::value, weights_command{module, ws, o});
  }

  outcome<ok_atom> send_retire(std::string module, std::string version,
                               command_origin o = origin()) {
    return send<ok_atom>(host, retire_atom::value, retire_command{module, version, o});
  }

  caf::expected<ok_atom> retire(std::string module, std::string version,
                                command_origin o = origin()) {
    return ask<ok_atom>(retire_atom::value, retire_command{module, version, o});
  }

  outcome<invoke_result> send_invoke(std::string module, std::string payload) {
    sdk::request req;
    req.payload = std::move(payload);
    req.caller = "caf";
    return send<invoke_result>(host, sdk::invoke_atom::value, module, req);
  }

  caf::expected<invoke_result> invoke(std::string module, std::string payload) {
    auto out = send_invoke(std::move(module), std::move(payload));
    sched.run();
    CAF_REQUIRE(answered(out));
    return std::move(**out);
  }

  host_view view() {
    auto v = ask<host_view>(get_atom::value);
    CAF_REQUIRE(v);
    return *v;
  }

  /// The host's view of one version, if it has that version.
  std::optional<version_view> version_in(const host_view& hv, const std::string& module,
                                         const std::string& version) {
    for (auto& m : hv.modules)
      if (m.name == module)
        for (auto& v : m.versions)
          if (v.version == version)
            return v;
    return std::nullopt;
  }

  std::optional<version_view> version_of(const std::string& module, const std::string& version) {
    return version_in(view(), module, version);
  }

  std::vector<audit_event> audit_for(const std::string& entity_id) {
    audit_query q;
    q.entity_kind = "module";
    q.entity_id = entity_id;
    q.page_size = 100;
    auto out = send<std::vector<audit_event>>(store, audit_atom::value, q);
    sched.run();
    CAF_REQUIRE(answered(out));
    CAF_REQUIRE(*out);
    return ***out;
  }

  /// Nothing is loaded: no module, no library, echo is not found.
  void check_nothing_loaded() {
    auto hv = view();
    CAF_CHECK(hv.modules.empty());
    CAF_CHECK_EQUAL(hv.loaded_libraries, 0u);
    auto r = invoke("echo", "x");
    CAF_REQUIRE(!r);
    CAF_CHECK_EQUAL(errc_of(r.error()), errc::not_found);
  }

  /// Stages echo 1.0.0 (weight 100) and 2.0.0 (weight 0).
  void stage_both() {
    CAF_REQUIRE(stage("echo", "1.0.0"));
    CAF_REQUIRE(stage("echo", "2.0.0"));
  }
};

/// How many of `xs` were answered with a reply of `version`.
size_t answered_by(const std::vector<outcome<invoke_result>>& xs, const std::string& version) {
  size_t n = 0;
  for (auto& x : xs)
    if (answered(x) && **x && (**x)->version == version
        && (**x)->reply.payload.rfind(version + ":", 0) == 0)
      ++n;
  return n;
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(module_host_tests, fixture)

CAF_TEST(the first staged version takes all traffic and a second one none) {
  auto first = stage("echo", "1.0.0");
  CAF_REQUIRE(first);
  CAF_CHECK_EQUAL(first->version, "1.0.0");
  CAF_CHECK_EQUAL(first->weight, 100u);
  CAF_CHECK_EQUAL(first->state, "Active");
  CAF_CHECK_EQUAL(first->in_flight, 0u);
  CAF_CHECK_EQUAL(first->digest, "sha256:echo-1.0.0");
  auto second = stage("echo", "2.0.0");
  CAF_REQUIRE(second);
  CAF_CHECK_EQUAL(second->weight, 0u);
  CAF_CHECK_EQUAL(second->state, "Active");
  CAF_REQUIRE_EQUAL(log->loads.size(), 2u);
  CAF_CHECK_EQUAL(log->loads[0].environment, "prod");
  CAF_CHECK_EQUAL(log->loads[0].require_signed, false);
  auto hv = view();
  CAF_CHECK_EQUAL(hv.node, "node-a");
  CAF_CHECK_EQUAL(hv.environment, "prod");
  CAF_CHECK_EQUAL(hv.loaded_libraries, 2u);
  CAF_REQUIRE_EQUAL(hv.modules.size(), 1u);
  CAF_CHECK_EQUAL(hv.modules[0].versions.size(), 2u);
  for (int i = 0; i < 5; ++i) {
    auto r = invoke("echo", "x");
    CAF_REQUIRE(r);
    CAF_CHECK_EQUAL(r->version, "1.0.0");
    CAF_CHECK_EQUAL(r->reply.payload, "1.0.0:x");
  }
  auto evs = audit_for("echo@1.0.0");
  CAF_REQUIRE_EQUAL(evs.size(), 1u);
  CAF_CHECK_EQUAL(evs[0].action, "ModuleStaged");
  CAF_CHECK_EQUAL(evs[0].actor_user, "alice");
  CAF_CHECK_EQUAL(evs[0].trace_id, "trace-1");
}

CAF_TEST(staging the same version twice loads it once) {
  CAF_REQUIRE(stage("echo", "1.0.0"));
  auto again = stage("echo", "1.0.0");
  CAF_REQUIRE(again);
  CAF_CHECK_EQUAL(again->weight, 100u);
  // Two stages before the load finished share that load.
  auto a = send<version_view>(host, stage_atom::value, stage_cmd("echo", "2.0.0"));
  auto b = send<version_view>(host, stage_atom::value, stage_cmd("echo", "2.0.0"));
  sched.run();
  CAF_REQUIRE(answered(a) && answered(b));
  CAF_REQUIRE(*a && *b);
  CAF_CHECK_EQUAL((**a)->version, "2.0.0");
  CAF_CHECK_EQUAL((**b)->version, "2.0.0");
  CAF_CHECK_EQUAL(log->loads.size(), 2u);
  auto hv = view();
  CAF_CHECK_EQUAL(hv.loaded_libraries, 2u);
  CAF_REQUIRE_EQUAL(hv.modules.size(), 1u);
  CAF_CHECK_EQUAL(hv.modules[0].versions.size(), 2u);
}

CAF_TEST(a 50 / 50 split sends half of the invocations to each version) {
  stage_both();
  auto mv = weights("echo", {{"1.0.0", 50}, {"2.0.0", 50}});
  CAF_REQUIRE(mv);
  CAF_CHECK_EQUAL(mv->name, "echo");
  CAF_REQUIRE_EQUAL(mv->versions.size(), 2u);
  for (auto& v : mv->versions)
    CAF_CHECK_EQUAL(v.weight, 50u);
  std::vector<outcome<invoke_result>> calls;
  for (int i = 0; i < 100; ++i)
    calls.push_back(send_invoke("echo", std::to_string(i)));
  sched.run();
  CAF_CHECK_EQUAL(answered_by(calls, "1.0.0"), 50u);
  CAF_CHECK_EQUAL(answered_by(calls, "2.0.0"), 50u);
  for (auto& v : {"1.0.0", "2.0.0"}) {
    auto vv = version_of("echo", v);
    CAF_REQUIRE(vv);
    CAF_CHECK_EQUAL(vv->invocations, 50u);
    CAF_CHECK_EQUAL(vv->total_invocations, 50u);
    CAF_CHECK_EQUAL(vv->errors, 0u);
    CAF_CHECK_EQUAL(vv->in_flight, 0u);
  }
  CAF_CHECK_EQUAL(view().invocations, 100u);
}

CAF_TEST(weights naming a version that is not loaded are refused) {
  stage_both();
  auto mv = weights("echo", {{"1.0.0", 50}, {"3.0.0", 50}});
  CAF_REQUIRE(!mv);
  CAF_CHECK_EQUAL(errc_of(mv.error()), errc::conflict);
  auto kept = version_of("echo", "1.0.0");
  CAF_REQUIRE(kept);
  CAF_CHECK_EQUAL(kept->weight, 100u);
  auto unknown = weights("nope", {{"1.0.0", 100}});
  CAF_REQUIRE(!unknown);
  CAF_CHECK_EQUAL(errc_of(unknown.error()), errc::not_found);
}

CAF_TEST(invoking a module that is not loaded is not found) {
  auto r = invoke("nope", "x");
  CAF_REQUIRE(!r);
  CAF_CHECK_EQUAL(errc_of(r.error()), errc::not_found);
  CAF_REQUIRE(stage("echo", "1.0.0"));
  auto other = invoke("nope", "x");
  CAF_REQUIRE(!other);
  CAF_CHECK_EQUAL(errc_of(other.error()), errc::not_found);
}

CAF_TEST(a module whose versions all have weight zero is unavailable) {
  stage_both();
  CAF_REQUIRE(weights("echo", {{"1.0.0", 0}, {"2.0.0", 0}}));
  auto r = invoke("echo", "x");
  CAF_REQUIRE(!r);
  CAF_CHECK_EQUAL(errc_of(r.error()), errc::unavailable);
  // An empty map means the same: unlisted versions get weight zero.
  CAF_REQUIRE(weights("echo", {{"2.0.0", 1}}));
  CAF_REQUIRE(weights("echo", {}));
  auto again = invoke("echo", "x");
  CAF_REQUIRE(!again);
  CAF_CHECK_EQUAL(errc_of(again.error()), errc::unavailable);
}

CAF_TEST(a reply with an error is counted as an error but delivered as a result) {
  CAF_REQUIRE(stage("flaky", "1.0.0"));
  std::vector<caf::expected<invoke_result>> rs;
  for (auto payload : {"a", "fail", "b", "c"})
    rs.push_back(invoke("flaky", payload));
  for (auto& r : rs)
    CAF_REQUIRE(r);
  CAF_CHECK_EQUAL(rs[1]->reply.error, "boom");
  CAF_CHECK_EQUAL(rs[1]->reply.payload, "1.0.0:fail");
  CAF_CHECK_EQUAL(rs[1]->version, "1.0.0");
  CAF_CHECK(rs[0]->reply.ok());
  auto v = version_of("flaky", "1.0.0");
  CAF_REQUIRE(v);
  CAF_CHECK_EQUAL(v->invocations, 4u);
  CAF_CHECK_EQUAL(v->errors, 1u);
  CAF_CHECK_EQUAL(v->error_rate, 0.25);
  CAF_CHECK_EQUAL(v->total_errors, 1u);
  auto hv = view();
  CAF_CHECK_EQUAL(hv.invocations, 4u);
  CAF_CHECK_EQUAL(hv.errors, 1u);
}

CAF_TEST(a stale epoch is fenced for every command and changes nothing) {
  CAF_REQUIRE(stage("echo", "1.0.0", origin("d-1", 2)));
  auto before = version_of("echo", "1.0.0");
  CAF_REQUIRE(before);
  auto stale = origin("d-1", 1);
  auto st = stage("echo", "2.0.0", stale);
  CAF_REQUIRE(!st);
  CAF_CHECK_EQUAL(errc_of(st.error()), errc::fenced);
  auto ws = weights("echo", {{"1.0.0", 0}}, stale);
  CAF_REQUIRE(!ws);
  CAF_CHECK_EQUAL(errc_of(ws.error()), errc::fenced);
  auto rt = retire("echo", "1.0.0", stale);
  CAF_REQUIRE(!rt);
  CAF_CHECK_EQUAL(errc_of(rt.error()), errc::fenced);
  // Nothing changed: one load, no unload, the same single version at weight 100.
  CAF_CHECK_EQUAL(log->loads.size(), 1u);
  CAF_CHECK(log->unloads.empty());
  auto hv = view();
  CAF_REQUIRE_EQUAL(hv.modules.size(), 1u);
  CAF_REQUIRE_EQUAL(hv.modules[0].versions.size(), 1u);
  auto after = hv.modules[0].versions[0];
  CAF_CHECK_EQUAL(after.version, "1.0.0");
  CAF_CHECK_EQUAL(after.weight, before->weight);
  CAF_CHECK_EQUAL(after.state, before->state);
  CAF_CHECK_EQUAL(after.loaded_at, before->loaded_at);
  CAF_CHECK_EQUAL(hv.loaded_libraries, 1u);
  auto r = invoke("echo", "x");
  CAF_REQUIRE(r);
  CAF_CHECK_EQUAL(r->version, "1.0.0");
  // Fenced commands leave no audit trail.
  CAF_CHECK_EQUAL(audit_for("echo@1.0.0").size(), 1u);
  CAF_CHECK(audit_for("echo@2.0.0").empty());
  CAF_CHECK(audit_for("echo@").empty());
  // The same epoch again is accepted, and other owners have their own epochs.
  CAF_CHECK(weights("echo", {{"1.0.0", 100}}, origin("d-1", 2)));
  CAF_CHECK(weights("echo", {{"1.0.0", 100}}, origin("operator", 0)));
}

CAF_TEST(retire waits for in flight invocations and the unload before it answers) {
  CAF_REQUIRE(stage("slow", "1.0.0"));
  std::vector<outcome<invoke_result>> calls;
  for (int i = 0; i < 3; ++i)
    calls.push_back(send_invoke("slow", "p" + std::to_string(i)));
  sched.run(); // the handlers hold the requests until their timers fire
  for (auto& c : calls)
    CAF_CHECK(!answered(c));
  auto busy = version_of("slow", "1.0.0");
  CAF_REQUIRE(busy);
  CAF_CHECK_EQUAL(busy->in_flight, 3u);
  size_t answered_at_unload = 0;
  log->on_unload = [&] {
    for (auto& c : calls)
      answered_at_unload += answered(c) ? 1 : 0;
  };
  log->hold_unloads = true;
  auto first = send_retire("slow", "1.0.0");
  auto second = send_retire("slow", "1.0.0"); // idempotent while draining
  sched.run();
  CAF_CHECK(!answered(first));
  CAF_CHECK(!answered(second));
  CAF_CHECK(log->unloads.empty());
  auto draining = version_of("slow", "1.0.0");
  CAF_REQUIRE(draining);
  CAF_CHECK_EQUAL(draining->state, "Draining");
  CAF_CHECK_EQUAL(draining->weight, 0u);
  CAF_CHECK_EQUAL(draining->in_flight, 3u);
  // No new request goes to a draining version.
  auto late = invoke("slow", "late");
  CAF_REQUIRE(!late);
  CAF_CHECK_EQUAL(errc_of(late.error()), errc::unavailable);
  // The handlers answer: the version drains, its actors stop, the host asks
  // the loader to unload it, and only the loader's answer ends the retire.
  sched.advance_time(1s);
  sched.run();
  CAF_CHECK_EQUAL(answered_by(calls, "1.0.0"), 3u);
  CAF_REQUIRE_EQUAL(log->unloads.size(), 1u);
  CAF_CHECK_EQUAL(log->unloads[0], "slow@1.0.0");
  CAF_CHECK_EQUAL(answered_at_unload, 3u);
  CAF_CHECK(!answered(first));
  CAF_CHECK(!answered(second));
  caf::anon_send(loader, tick_atom::value);
  sched.run();
  CAF_REQUIRE(answered(first) && answered(second));
  CAF_CHECK(*first && *second);
  CAF_CHECK_EQUAL(log->unloads.size(), 1u);
  auto hv = view();
  CAF_CHECK(hv.modules.empty());
  CAF_CHECK_EQUAL(hv.loaded_libraries, 0u);
  auto evs = audit_for("slow@1.0.0");
  CAF_REQUIRE_EQUAL(evs.size(), 2u);
  CAF_CHECK(evs[0].action == "ModuleRetired" || evs[1].action == "ModuleRetired");
}

CAF_TEST(retiring a version that is not loaded is ok) {
  CAF_CHECK(retire("echo", "1.0.0"));
  CAF_REQUIRE(stage("echo", "1.0.0"));
  CAF_CHECK(retire("echo", "7.0.0"));
  CAF_CHECK(log->unloads.empty());
  CAF_CHECK(version_of("echo", "1.0.0"));
}

CAF_TEST(after a retire the remaining version takes every invocation) {
  stage_both();
  CAF_REQUIRE(weights("echo", {{"1.0.0", 50}, {"2.0.0", 50}}));
  CAF_REQUIRE(retire("echo", "1.0.0"));
  CAF_REQUIRE_EQUAL(log->unloads.size(), 1u);
  CAF_CHECK_EQUAL(log->unloads[0], "echo@1.0.0");
  std::vector<outcome<invoke_result>> calls;
  for (int i = 0; i < 10; ++i)
    calls.push_back(send_invoke("echo", std::to_string(i)));
  sched.run();
  CAF_CHECK_EQUAL(answered_by(calls, "2.0.0"), 10u);
  auto hv = view();
  CAF_CHECK(!version_in(hv, "echo", "1.0.0"));
  CAF_CHECK(version_in(hv, "echo", "2.0.0"));
  CAF_CHECK_EQUAL(hv.loaded_libraries, 1u);
  // Retiring it again is ok and unloads nothing more.
  CAF_CHECK(retire("echo", "1.0.0"));
  CAF_CHECK_EQUAL(log->unloads.size(), 1u);
  // The retired version can be staged again: a fresh load.
  auto back = stage("echo", "1.0.0");
  CAF_REQUIRE(back);
  CAF_CHECK_EQUAL(back->weight, 0u);
  CAF_CHECK_EQUAL(log->loads.size(), 3u);
}

CAF_TEST(a retire that arrives while its version loads undoes the load) {
  auto staged = send<version_view>(host, stage_atom::value, stage_cmd("echo", "1.0.0"));
  auto retired = send_retire("echo", "1.0.0");
  sched.run();
  CAF_REQUIRE(answered(staged) && answered(retired));
  CAF_REQUIRE(!**staged);
  CAF_CHECK_EQUAL(errc_of((**staged).error()), errc::conflict);
  CAF_CHECK(**retired);
  CAF_CHECK_EQUAL(log->loads.size(), 1u);
  CAF_CHECK_EQUAL(log->unloads.size(), 1u);
  check_nothing_loaded();
  // Staging it again afterwards loads it normally.
  CAF_CHECK(stage("echo", "1.0.0"));
  CAF_CHECK(invoke("echo", "x"));
}

CAF_TEST(a failed load answers the stage with the loader error and leaves no slot) {
  auto bad = stage("echo", "9.9.9");
  CAF_REQUIRE(!bad);
  CAF_CHECK_EQUAL(errc_of(bad.error()), errc::invalid_argument);
  CAF_CHECK_EQUAL(error_detail(bad.error()), "bad");
  check_nothing_loaded();
  // Next to a loaded version, and again: each attempt asks the loader anew.
  CAF_REQUIRE(stage("echo", "1.0.0"));
  auto again = stage("echo", "9.9.9");
  CAF_REQUIRE(!again);
  CAF_CHECK_EQUAL(errc_of(again.error()), errc::invalid_argument);
  CAF_CHECK_EQUAL(log->loads.size(), 3u);
  CAF_CHECK(!version_of("echo", "9.9.9"));
  auto good = version_of("echo", "1.0.0");
  CAF_REQUIRE(good);
  CAF_CHECK_EQUAL(good->weight, 100u);
  auto evs = audit_for("echo@9.9.9");
  CAF_REQUIRE_EQUAL(evs.size(), 2u);
  CAF_CHECK_EQUAL(evs[0].action, "ModuleStageFailed");
}

CAF_TEST(past the drain deadline the actors stop and pending invocations fail) {
  CAF_REQUIRE(stage("hang", "1.0.0"));
  std::vector<outcome<invoke_result>> calls;
  for (int i = 0; i < 2; ++i)
    calls.push_back(send_invoke("hang", "p" + std::to_string(i)));
  sched.run();
  auto done = send_retire("hang", "1.0.0");
  sched.run();
  CAF_CHECK(!answered(done));
  CAF_CHECK(log->unloads.empty());
  sched.advance_time(drain_timeout);
  sched.run();
  for (auto& c : calls) {
    CAF_CHECK(answered(c));
    CAF_CHECK_EQUAL(error_of(c), errc::module_failure);
  }
  CAF_REQUIRE_EQUAL(log->unloads.size(), 1u);
  CAF_CHECK_EQUAL(log->unloads[0], "hang@1.0.0");
  CAF_REQUIRE(answered(done));
  CAF_CHECK(*done);
  CAF_CHECK(view().modules.empty());
}

CAF_TEST(a restarted host restores versions and weights before it serves anything) {
  stage_both();
  CAF_REQUIRE(weights("echo", {{"1.0.0", 30}, {"2.0.0", 70}}));
  caf::anon_send_exit(host, caf::exit_reason::kill);
  sched.run();
  log->loads.clear();
  host = spawn_host();
  // Invocations and a command arrive before the restore has even claimed
  // the worker state: they wait, nobody sees "not loaded".
  std::vector<outcome<invoke_result>> calls;
  for (int i = 0; i < 10; ++i)
    calls.push_back(send_invoke("echo", "p" + std::to_string(i)));
  auto w = send<module_view>(host, weights_atom::value,
                             weights_command{"echo", {{"1.0.0", 50}, {"2.0.0", 50}}, origin()});
  sched.run();
  CAF_CHECK_EQUAL(log->loads.size(), 2u);
  for (auto& c : calls) {
    CAF_REQUIRE(answered(c));
    CAF_CHECK(*c);
  }
  CAF_CHECK_EQUAL(answered_by(calls, "1.0.0"), 3u);
  CAF_CHECK_EQUAL(answered_by(calls, "2.0.0"), 7u);
  // The deferred command ran after the restore, so its weights win.
  CAF_REQUIRE(answered(w));
  CAF_REQUIRE(*w);
  auto v1 = version_of("echo", "1.0.0");
  CAF_REQUIRE(v1);
  CAF_CHECK_EQUAL(v1->weight, 50u);
}

CAF_TEST(a host with no saved state serves at once) {
  auto r = invoke("echo", "x");
  CAF_CHECK_EQUAL(r.error() ? errc_of(r.error()) : errc::none, errc::not_found);
}

CAF_TEST_FIXTURE_SCOPE_END()
