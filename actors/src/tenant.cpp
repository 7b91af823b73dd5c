#include "hotswap/actors/tenant.hpp"

#include "hotswap/actors/events.hpp"

#include <boost/json.hpp>

#include <spdlog/spdlog.h>

#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

namespace hotswap {

namespace {

std::shared_ptr<spdlog::logger> control_log() {
  auto l = spdlog::get("control");
  return l ? l : spdlog::default_logger();
}

struct tenant_actor_state {
  std::string id;
  int64_t epoch = 0;
  bool exists = false;
  tenant current;
  std::string json; ///< to_json(current), as persisted
  host_env env;
  caf::actor_clock::time_point last_active; ///< of the last command
  static inline const char* name = "tenant";
};

using tenant_ptr = tenant_actor::stateful_pointer<tenant_actor_state>;

/// Records activity. The idle check is one timer per idle period (not one
/// per command): see the tick handler.
void touch(tenant_ptr self) {
  self->state.last_active = self->clock().now();
}

void schedule_idle_check(tenant_ptr self, caf::actor_clock::duration_type after) {
  self->delayed_send(self, after, tick_atom::value, uint64_t{0});
}

audit_event make_audit(tenant_ptr self, const tenant& next, const std::string& action,
                       const request_ctx& ctx) {
  audit_event ev;
  ev.at = now_millis();
  ev.category = "Tenant";
  ev.action = action;
  ev.result = "Success";
  ev.entity_kind = "tenant";
  ev.entity_id = self->state.id;
  ev.tenant_id = self->state.id;
  ev.actor_user = ctx.username;
  ev.source_ip = ctx.source_ip;
  ev.trace_id = ctx.trace_id;
  ev.message = action + " " + next.name + " (" + next.subdomain + ") status " + next.status;
  ev.detail = to_json(next);
  return ev;
}

/// The TenantChanged event of a tenant transition (visible to the tenant's
/// own users and to platform users).
event_record tenant_event(const tenant& t, const std::string& action) {
  event_record ev;
  ev.type = "TenantChanged";
  ev.tenant_id = t.id;
  ev.status = t.status;
  boost::json::object d;
  d["action"] = action;
  d["tenantId"] = t.id;
  d["name"] = t.name;
  d["subdomain"] = t.subdomain;
  ev.details = boost::json::serialize(d);
  return ev;
}

/// Persists `next` with its audit event, then (and only then) adopts it and
/// answers. `await` keeps later commands queued until the write is decided,
/// so transitions apply one at a time on the persisted state.
caf::typed_response_promise<tenant> persist(tenant_ptr self, tenant next, const std::string& action,
                                            const request_ctx& ctx) {
  auto rp = self->make_response_promise<tenant>();
  snapshot_record snap;
  snap.kind = "tenant";
  snap.id = self->state.id;
  snap.tenant_id = self->state.id;
  snap.status = next.status;
  // A deleted tenant frees its subdomain.
  snap.unique_key = next.status == "Deleted" ? std::string{} : lower(next.subdomain);
  snap.epoch = self->state.epoch;
  snap.body = to_json(next);
  snap.created_at = next.created_at;
  snap.updated_at = next.updated_at;
  auto ev = make_audit(self, next, action, ctx);
  self->request(self->state.env.store, self->state.env.call_timeout, put_atom::value, snap, ev)
    .await(
      [=](int64_t) mutable {
        // Quota bookkeeping is not a change a client watches for.
        if (action.rfind("Quota", 0) != 0)
          publish_event(self, tenant_event(next, action));
        self->state.current = next;
        self->state.json = snap.body;
        self->state.exists = true;
        control_log()->info("[T:{} e{}] {} -> {}", self->state.id, self->state.epoch, action,
                            next.status);
        rp.deliver(next);
      },
      [=](caf::error& err) mutable {
        if (err == errc::conflict) {
          rp.deliver(caf::make_error(errc::conflict, "The subdomain '" + next.subdomain
                                                       + "' is already taken."));
        } else {
          rp.deliver(err);
        }
        if (err == errc::fenced) {
          control_log()->warn("[T:{} e{}] fenced: {}", self->state.id, self->state.epoch,
                              error_detail(err));
          self->quit(err);
        } else if (!self->state.exists) {
          // A create that did not persist leaves nothing to own.
          self->quit();
        }
      });
  return rp;
}

caf::result<tenant> run_transition(tenant_ptr self, const transition& tr, const request_ctx& ctx) {
  switch (tr.kind) {
    case transition::refused:
      return caf::make_error(errc::conflict, tr.reason);
    case transition::unchanged:
      return tr.next;
    case transition::changed:
    default:
      return persist(self, tr.next, tr.action, ctx);
  }
}

caf::error not_found(tenant_ptr self) {
  return caf::make_error(errc::not_found, "Tenant " + self->state.id + " was not found.");
}

tenant_actor::behavior_type tenant_behavior(tenant_ptr self, std::string id, claim_result claim,
                                            host_env env) {
  self->state.id = std::move(id);
  self->state.epoch = claim.epoch;
  self->state.env = std::move(env);
  if (!claim.snapshot.body.empty()) {
    if (from_json(claim.snapshot.body, self->state.current)) {
      self->state.exists = true;
      self->state.json = claim.snapshot.body;
    }
    else
      self->quit(caf::make_error(errc::internal, "unreadable snapshot of tenant "
                                                   + self->state.id));
  }
  touch(self);
  schedule_idle_check(self, self->state.env.idle_timeout);
  return {
    [=](get_atom) -> caf::result<tenant> {
      touch(self);
      if (!self->state.exists)
        return not_found(self);
      return self->state.current;
    },
    [=](get_atom, json_atom) -> caf::result<std::string> {
      touch(self);
      if (!self->state.exists)
        return not_found(self);
      return self->state.json;
    },
    [=](create_atom, tenant_spec& spec, request_ctx& ctx) -> caf::result<tenant> {
      touch(self);
      if (self->state.exists)
        return caf::make_error(errc::conflict, "Tenant " + self->state.id + " already exists.");
      auto errs = validate(spec);
      if (!errs.empty())
        return caf::make_error(errc::invalid_argument, "The tenant is invalid.");
      auto t = make_tenant(self->state.id, spec, now_millis());
      return persist(self, std::move(t), "TenantCreated", ctx);
    },
    [=](update_atom, tenant_patch& patch, request_ctx& ctx) -> caf::result<tenant> {
      touch(self);
      if (!self->state.exists)
        return not_found(self);
      return run_transition(self, apply(self->state.current, patch, now_millis()), ctx);
    },
    [=](status_atom, int32_t op, request_ctx& ctx) -> caf::result<tenant> {
      touch(self);
      if (!self->state.exists)
        return not_found(self);
      return run_transition(self, apply(self->state.current, op, now_millis()), ctx);
    },
    [=](tier_atom, tier_change& change, request_ctx& ctx) -> caf::result<tenant> {
      touch(self);
      if (!self->state.exists)
        return not_found(self);
      return run_transition(self, apply(self->state.current, change, now_millis()), ctx);
    },
    [=](reserve_atom, std::string& execution_id, request_ctx& ctx) -> caf::result<tenant> {
      touch(self);
      if (!self->state.exists)
        return not_found(self);
      return run_transition(self, reserve(self->state.current, execution_id, now_millis()), ctx);
    },
    [=](release_atom, std::string& execution_id, request_ctx& ctx) -> caf::result<tenant> {
      touch(self);
      if (!self->state.exists)
        return not_found(self);
      return run_transition(self, release(self->state.current, execution_id, now_millis()), ctx);
    },
    [=](tick_atom, uint64_t) {
      // Idle for a whole period: passivate (state is already durable).
      auto idle = self->clock().now() - self->state.last_active;
      if (idle >= self->state.env.idle_timeout)
        self->quit();
      else
        schedule_idle_check(self, self->state.env.idle_timeout - idle);
    },
  };
}

// -- host ---------------------------------------------------------------------

struct tenant_host_state : entity_host_state<tenant_actor> {
  static inline const char* name = "tenant_host";
};

using host_ptr = tenant_host_actor::stateful_pointer<tenant_host_state>;

/// Runs one command on the tenant's actor once it is active, here or on
/// the node that owns it.
template <class... Ts>
caf::typed_response_promise<tenant> forward(host_ptr self, const std::string& id, bool must_exist,
                                            std::function<caf::error(const caf::error&)> translate,
                                            Ts... xs) {
  auto rp = self->make_response_promise<tenant>();
  route<tenant_host_actor, tenant>(self, self->state, &node_hosts::tenants, id, must_exist, rp,
                                   std::move(translate), true, xs...);
  return rp;
}

caf::error tenant_not_found(const std::string& id) {
  return caf::make_error(errc::not_found, "Tenant " + id + " was not found.");
}

tenant_host_actor::behavior_type tenant_host(host_ptr self, host_env env) {
  auto spawner = [env](caf::local_actor* host, const std::string& id,
                       const claim_result& cr) -> tenant_actor {
    return spawn_tenant(host, id, cr, env);
  };
  self->state.init("tenant", env, spawner);
  self->set_down_handler([=](caf::down_msg& dm) { self->state.on_down(self, dm); });
  // Translate "no such entity" from the store into the tenant's own 404.
  auto must_exist = [=](const std::string& id, auto... xs) {
    return forward(
      self, id, true,
      [id](const caf::error& err) { return err == errc::not_found ? tenant_not_found(id) : err; },
      xs...);
  };
  return {
    [=](get_atom, const std::string& id) { return must_exist(id, get_atom::value); },
    [=](create_atom, const std::string& id, tenant_spec& spec, request_ctx& ctx) {
      return forward(self, id, false, nullptr, create_atom::value, spec, ctx);
    },
    [=](update_atom, const std::string& id, tenant_patch& p, request_ctx& ctx) {
      return must_exist(id, update_atom::value, p, ctx);
    },
    [=](status_atom, const std::string& id, int32_t op, request_ctx& ctx) {
      return must_exist(id, status_atom::value, op, ctx);
    },
    [=](tier_atom, const std::string& id, tier_change& c, request_ctx& ctx) {
      return must_exist(id, tier_atom::value, c, ctx);
    },
    [=](reserve_atom, const std::string& id, std::string& execution_id, request_ctx& ctx) {
      return must_exist(id, reserve_atom::value, execution_id, ctx);
    },
    [=](release_atom, const std::string& id, std::string& execution_id, request_ctx& ctx) {
      return must_exist(id, release_atom::value, execution_id, ctx);
    },
    [=](passivate_atom) {
      auto rp = self->make_response_promise<ok_atom>();
      self->state.passivate_all(self, [rp]() mutable { rp.deliver(ok_atom::value); });
      return rp;
    },
    [=](stats_atom) { return self->state.stats; },
    [=](child_atom, const std::string& id) {
      // The actor may live on another node: its handle works all the same.
      auto rp = self->make_response_promise<tenant_actor>();
      entity_host_state<tenant_actor>::waiter w;
      w.run = [=](const tenant_actor& c) mutable { rp.deliver(c); };
      w.fail = [=](const caf::error& err) mutable {
        rp.deliver(err == errc::not_found ? tenant_not_found(id) : err);
      };
      w.forward = [=](const std::string& owner) mutable {
        forward_to_owner<tenant_host_actor>(self, self->state.env, owner, &node_hosts::tenants,
                                            rp, nullptr, child_atom::value, id);
      };
      self->state.with_child(self, id, true, std::move(w));
      return rp;
    },
    [=](fence_atom) { self->state.fence(self); },
    [=](unfence_atom) { self->state.unfence(); },
    [=](list_atom) { return self->state.active_ids(); },
    [=](restart_atom, const std::string& id) { self->state.on_restart(self, id); },
  };
}

} // namespace

tenant_actor spawn_tenant(caf::local_actor* host, const std::string& id, const claim_result& claim,
                          const host_env& env) {
  return host->spawn<caf::monitored>(tenant_behavior, id, claim, env);
}

tenant_host_actor spawn_tenant_host(caf::actor_system& sys, host_env env) {
  return sys.spawn(tenant_host, std::move(env));
}

} // namespace hotswap
