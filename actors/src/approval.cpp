// Approval entity actors and their host (see approval.hpp). Every transition
// is written with its audit event at the owner's epoch before it is answered;
// a decided or expired approval tells its host and stops.

#include "hotswap/actors/approval.hpp"

#include "hotswap/actors/events.hpp"

#include <algorithm>

#include <boost/json.hpp>
#include <functional>

#include <spdlog/spdlog.h>

#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/json_util.hpp"
#include "hotswap/runtime/crypto.hpp"

namespace hotswap {

namespace {

std::shared_ptr<spdlog::logger> control_log() {
  auto l = spdlog::get("control");
  return l ? l : spdlog::default_logger();
}

caf::error no_approval(const std::string& id) {
  return caf::make_error(errc::not_found, "No approval for deployment " + id + ".");
}

struct approval_actor_state {
  std::string id;                ///< the deployment's execution id
  int64_t epoch = 0;
  bool exists = false;
  approval current;
  host_env env;
  approval_host_actor host;      ///< hears about decisions and expiry
  bool timer_armed = false;      ///< one expire_atom in flight at most
  /// "Now" is wall-clock millis that never runs behind the actor clock since
  /// the last arming: a timer that fired has always reached its deadline,
  /// also on the deterministic test clock (which does not move the wall).
  millis base_wall = 0;
  caf::actor_clock::time_point base_clock;
  caf::actor_clock::time_point last_active;
  static inline const char* name = "approval";
};

using approval_ptr = approval_actor::stateful_pointer<approval_actor_state>;

millis now_of(approval_ptr self) {
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                   self->clock().now() - self->state.base_clock)
                   .count();
  return std::max(now_millis(), self->state.base_wall + static_cast<millis>(elapsed));
}

void rebase(approval_ptr self) {
  self->state.base_wall = now_of(self);
  self->state.base_clock = self->clock().now();
}

void touch(approval_ptr self) {
  self->state.last_active = self->clock().now();
}

/// Arms the single timer: the deadline of a pending approval, or the idle
/// check of a decided one (read after passivation; it holds nothing to do).
void arm(approval_ptr self) {
  auto& st = self->state;
  if (st.timer_armed || !st.exists)
    return;
  st.timer_armed = true;
  if (st.current.status == "Pending") {
    rebase(self);
    auto delay = std::max<millis>(0, st.current.timeout_at - st.base_wall);
    self->delayed_send(self, std::chrono::milliseconds(delay), expire_atom::value);
  } else {
    auto idle = self->clock().now() - st.last_active;
    auto left = idle >= st.env.idle_timeout ? caf::actor_clock::duration_type::zero()
                                            : st.env.idle_timeout - idle;
    self->delayed_send(self, left, expire_atom::value);
  }
}

request_ctx system_ctx(const std::string& trace_id = {}) {
  request_ctx ctx;
  ctx.username = "system";
  ctx.trace_id = trace_id;
  return ctx;
}

std::string describe(const approval& a) {
  return a.module_name + " " + a.version + " to " + a.environment + " (deployment "
         + a.execution_id + ")";
}

std::string audit_message(const approval& a, const std::string& action) {
  if (action == "ApprovalRequested")
    return "Approval requested for " + describe(a) + " by "
           + (a.requested_by.empty() ? std::string{"unknown"} : a.requested_by) + ", expires "
           + rfc3339(a.timeout_at);
  if (action == "ApprovalExpired")
    return "Approval for " + describe(a) + " expired at " + rfc3339(a.timeout_at);
  auto verb = action == "ApprovalGranted" ? "approved" : "rejected";
  auto msg = describe(a) + " " + verb + " by " + a.responded_by;
  if (!a.response_reason.empty())
    msg += ": " + a.response_reason;
  return msg;
}

audit_event make_audit(approval_ptr self, const approval& next, const std::string& action,
                       const request_ctx& ctx, millis now) {
  audit_event ev;
  ev.at = now;
  ev.category = "Approval";
  ev.action = action;
  ev.result = "Success";
  ev.entity_kind = "approval";
  ev.entity_id = self->state.id;
  ev.tenant_id = next.tenant_id;
  ev.actor_user = ctx.username;
  ev.source_ip = ctx.source_ip;
  ev.trace_id = ctx.trace_id;
  ev.message = audit_message(next, action);
  ev.detail = to_json(next);
  return ev;
}

/// The event of an approval transition: ApprovalRequested, or ApprovalDecided
/// (approved, rejected, expired), keyed by the deployment's execution id.
event_record approval_event(const approval& a, const std::string& action,
                            const std::string& message) {
  event_record ev;
  ev.type = action == "ApprovalRequested" ? "ApprovalRequested" : "ApprovalDecided";
  ev.execution_id = a.execution_id;
  ev.tenant_id = a.tenant_id;
  ev.status = a.status;
  ev.stage = "Approval";
  boost::json::object d;
  d["action"] = action;
  d["message"] = message;
  d["module"] = a.module_name;
  d["environment"] = a.environment;
  d["requestedBy"] = a.requested_by;
  if (!a.responded_by.empty())
    d["respondedBy"] = a.responded_by;
  ev.details = boost::json::serialize(d);
  return ev;
}

/// Writes `next` with its audit event at the owner's epoch; adopts it and
/// calls `done` only once the write is decided. `await` keeps later commands
/// (and the timer) queued meanwhile, so transitions apply one at a time.
void persist(approval_ptr self, approval next, const std::string& action, const request_ctx& ctx,
             std::function<void()> done, std::function<void(const caf::error&)> failed) {
  auto now = now_of(self);
  snapshot_record snap;
  snap.kind = "approval";
  snap.id = self->state.id;
  snap.tenant_id = next.tenant_id;
  snap.status = next.status;
  snap.epoch = self->state.epoch;
  snap.body = to_json(next);
  snap.created_at = next.requested_at;
  snap.updated_at = now;
  auto ev = make_audit(self, next, action, ctx, now);
  self->request(self->state.env.store, self->state.env.call_timeout, put_atom::value, snap, ev)
    .await(
      [=](int64_t) {
        publish_event(self, approval_event(next, action, ev.message));
        self->state.current = next;
        self->state.exists = true;
        control_log()->info("[A:{} e{}] {} -> {}", self->state.id, self->state.epoch, action,
                            next.status);
        done();
      },
      [=](caf::error& err) {
        control_log()->warn("[A:{} e{}] {} not persisted: {}", self->state.id,
                            self->state.epoch, action, error_detail(err));
        failed(err);
        if (err == errc::fenced)
          self->quit(err);
      });
}

/// Tells the host (and through it the deployment) and stops: a decided
/// approval lives on in its snapshot only.
void finish(approval_ptr self) {
  self->send(self->state.host, decided_atom::value, self->state.id, self->state.current);
  self->quit();
}

approval_actor::behavior_type approval_behavior(approval_ptr self, std::string id,
                                                claim_result claim, host_env env,
                                                approval_host_actor host) {
  auto& st = self->state;
  st.id = std::move(id);
  st.epoch = claim.epoch;
  st.env = std::move(env);
  st.host = std::move(host);
  st.base_wall = now_millis();
  st.base_clock = self->clock().now();
  touch(self);
  // Nobody to report to once the host is gone (node stopping or crashed):
  // stop too; the snapshot holds everything and a new host re-activates.
  self->monitor(st.host);
  self->set_down_handler([=](caf::down_msg& dm) {
    if (dm.source == self->state.host.address())
      self->quit();
  });
  if (!claim.snapshot.body.empty()) {
    if (from_json(claim.snapshot.body, st.current)) {
      st.exists = true;
      arm(self);
    } else {
      self->quit(caf::make_error(errc::internal, "unreadable snapshot of approval " + st.id));
    }
  }
  // An actor that holds no approval has no timer to stop it: it answers and stops.
  auto absent = [=]() -> caf::result<approval> {
    auto rp = self->make_response_promise<approval>();
    rp.deliver(no_approval(self->state.id));
    self->quit();
    return rp;
  };
  return {
    [=](create_atom, approval& a, request_ctx& ctx) -> caf::result<approval> {
      touch(self);
      if (self->state.exists)
        return self->state.current;
      auto rp = self->make_response_promise<approval>();
      if (a.timeout_at <= 0) {
        rp.deliver(caf::make_error(errc::invalid_argument,
                                   "The approval for deployment " + self->state.id
                                     + " needs a deadline."));
        self->quit();
        return rp;
      }
      auto now = now_of(self);
      a.execution_id = self->state.id;
      a.status = "Pending";
      if (a.approval_id.empty())
        a.approval_id = crypto::uuid4();
      if (a.requested_at == 0)
        a.requested_at = now;
      a.responded_at = 0;
      a.responded_by.clear();
      a.approver_email.clear();
      a.response_reason.clear();
      persist(
        self, a, "ApprovalRequested", ctx,
        [=]() mutable {
          arm(self);
          rp.deliver(self->state.current);
        },
        [=](const caf::error& err) mutable {
          rp.deliver(err);
          if (err != errc::fenced) // (fenced: persist stops it with that reason)
            self->quit();          // a create that did not persist leaves nothing to own
        });
      return rp;
    },
    [=](get_atom) -> caf::result<approval> {
      touch(self);
      if (!self->state.exists)
        return absent();
      return self->state.current;
    },
    [=](decide_atom, approval_decision& d, request_ctx& ctx) -> caf::result<approval> {
      touch(self);
      if (!self->state.exists)
        return absent();
      auto now = now_of(self);
      auto rp = self->make_response_promise<approval>();
      auto ex = expire(self->state.current, now);
      if (ex.kind == approval_transition::changed) {
        // Past its deadline (the timer has not run yet): expire it first.
        auto expired = caf::make_error(errc::conflict, "The approval for deployment "
                                                         + self->state.id + " has expired.");
        persist(
          self, ex.next, ex.action, system_ctx(ctx.trace_id),
          [=]() mutable {
            rp.deliver(expired);
            finish(self);
          },
          [=](const caf::error& err) mutable { rp.deliver(err); });
        return rp;
      }
      auto tr = decide(self->state.current, d, now);
      switch (tr.kind) {
        case approval_transition::refused:
          rp.deliver(caf::make_error(tr.code, tr.reason));
          break;
        case approval_transition::unchanged:
          rp.deliver(tr.next);
          break;
        case approval_transition::changed:
          persist(
            self, tr.next, tr.action, ctx,
            [=]() mutable {
              rp.deliver(self->state.current);
              finish(self);
            },
            [=](const caf::error& err) mutable { rp.deliver(err); });
          break;
      }
      return rp;
    },
    [=](expire_atom) {
      auto& st = self->state;
      st.timer_armed = false;
      if (!st.exists)
        return;
      if (st.current.status != "Pending") {
        // The idle check of a decided approval.
        if (self->clock().now() - st.last_active >= st.env.idle_timeout)
          self->quit();
        else
          arm(self);
        return;
      }
      auto tr = expire(st.current, now_of(self));
      if (tr.kind != approval_transition::changed) {
        arm(self); // the wall clock ran behind: wait for the rest
        return;
      }
      persist(
        self, tr.next, tr.action, system_ctx(), [=] { finish(self); },
        [=](const caf::error& err) {
          // Let the host restart it from its snapshot: activation re-arms
          // the (now overdue) deadline and the expiry is retried.
          if (err != errc::fenced)
            self->quit(err);
        });
    },
  };
}

// -- host ---------------------------------------------------------------------

struct approval_host_state : entity_host_state<approval_actor> {
  approval_listener listener;
  static inline const char* name = "approval_host";
};

using host_ptr = approval_host_actor::stateful_pointer<approval_host_state>;

approval_host_actor::behavior_type approval_host(host_ptr self, host_env env) {
  auto spawner = [env](caf::local_actor* host, const std::string& id,
                       const claim_result& cr) -> approval_actor {
    return host->spawn<caf::monitored>(approval_behavior, id, cr, env,
                                       caf::actor_cast<approval_host_actor>(host));
  };
  self->state.init("approval", env, spawner);
  self->set_down_handler([=](caf::down_msg& dm) { self->state.on_down(self, dm); });
  /// Forwards one command once the approval's actor is active; `must_exist`
  /// turns "never written" into the approval's own 404.
  auto forward = [=](const std::string& id, bool must_exist, auto... xs) {
    auto rp = self->make_response_promise<approval>();
    route<approval_host_actor, approval>(
      self, self->state, &node_hosts::approvals, id, must_exist, rp,
      [id](const caf::error& err) { return err == errc::not_found ? no_approval(id) : err; },
      true, xs...);
    return rp;
  };
  return {
    [=](create_atom, const std::string& id, approval& a, request_ctx& ctx) {
      return forward(id, false, create_atom::value, a, ctx);
    },
    [=](get_atom, const std::string& id) { return forward(id, true, get_atom::value); },
    [=](decide_atom, const std::string& id, approval_decision& d, request_ctx& ctx) {
      return forward(id, true, decide_atom::value, d, ctx);
    },
    [=](listen_atom, approval_listener& l) { self->state.listener = std::move(l); },
    [=](expire_atom, const std::string& id) {
      // Activation is all it takes: the approval arms its deadline itself.
      // (Start and adoption; an approval active here or elsewhere is left.)
      self->state.adopt(self, id, false, [](const approval_actor&) {});
    },
    [=](adopt_atom, const std::string& id, bool from_other) {
      self->state.adopt(self, id, from_other, [](const approval_actor&) {});
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
    [=](decided_atom, const std::string& id, approval& a) {
      if (self->state.listener)
        self->send(self->state.listener, decided_atom::value, id, std::move(a));
      else
        control_log()->warn("[A:{}] {} with no listener: the deployment will not hear of it",
                            id, a.status);
    },
  };
}

} // namespace

approval_host_actor spawn_approval_host(caf::actor_system& sys, host_env env) {
  return sys.spawn(approval_host, std::move(env));
}

} // namespace hotswap
