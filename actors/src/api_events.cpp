// The event stream over WebSocket (api-v1.md, "Events"): /api/v1/events and
// its alias /hubs/deployment. The bridge authenticates the opening handshake
// like any request (token in Authorization or ?access_token=); the answer
// hands the connection to an event_socket, which runs one session actor per
// connection: it subscribes to the node's events hub, filters by the
// client's subscriptions and tenant, and replays retained events on resume.

#include <set>

#include <boost/json.hpp>

#include "caf/event_based_actor.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"
#include "caf/send.hpp"

#include "api_internal.hpp"
#include "hotswap/actors/events.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap::api_detail {

namespace {

namespace json = boost::json;

using text_atom = caf::atom_constant<caf::atom("wstext")>;

/// Retained events per replay request.
constexpr uint32_t replay_page = 200;

/// Live events held back while a replay runs; beyond this the client is
/// closed (it resumes again from its last id).
constexpr size_t max_held = 20000;

struct session_state {
  ws_connection_ptr conn;
  events_actor hub;
  std::string tenant_id; ///< empty: a platform user (sees every event)
  node_metrics* metrics = nullptr;
  bool all = false;
  std::set<std::string> deployments;
  // The replay in progress (at most one).
  bool replaying = false;
  bool replay_all = false;
  std::string replay_execution;
  std::string replay_cursor;
  std::vector<event_record> held;
  bool closed = false;
  static inline const char* name = "event_session";
};

using session_ptr = caf::stateful_actor<session_state>*;

bool visible(const session_state& st, const event_record& ev) {
  return st.tenant_id.empty() || st.tenant_id == ev.tenant_id;
}

bool subscribed(const session_state& st, const event_record& ev) {
  return st.all || (!ev.execution_id.empty() && st.deployments.count(ev.execution_id) > 0);
}

void send_text(session_ptr self, std::string text) {
  auto& st = self->state;
  if (st.closed)
    return;
  if (!st.conn->send(std::move(text))) {
    // Closed, or closed by the server because the client reads too slowly.
    st.closed = true;
    self->quit();
  }
}

void send_event(session_ptr self, const event_record& ev) {
  send_text(self, to_json(ev));
  if (auto m = self->state.metrics)
    m->events_delivered().Increment();
}

void send_reply(session_ptr self, const char* type, const std::string& subscription,
                const std::string& execution_id, const std::string& after = {}) {
  json::object o;
  o["type"] = type;
  o["subscription"] = subscription;
  if (!execution_id.empty())
    o["executionId"] = execution_id;
  if (!after.empty())
    o["after"] = after;
  send_text(self, json::serialize(o));
}

void send_error(session_ptr self, const std::string& message) {
  json::object o;
  o["type"] = "Error";
  o["message"] = message;
  send_text(self, json::serialize(o));
}

void deliver_live(session_ptr self, const std::vector<event_record>& evs) {
  for (auto& ev : evs)
    if (visible(self->state, ev) && subscribed(self->state, ev))
      send_event(self, ev);
}

bool replay_matches(const session_state& st, const event_record& ev) {
  return st.replay_all || ev.execution_id == st.replay_execution;
}

void finish_replay(session_ptr self) {
  auto& st = self->state;
  st.replaying = false;
  auto held = std::move(st.held);
  st.held.clear();
  for (auto& ev : held) {
    // Events the replay already sent (appended while it ran) are skipped.
    if (replay_matches(st, ev) && !st.replay_cursor.empty()
        && !event_id_less(st.replay_cursor, ev.id))
      continue;
    if (visible(st, ev) && subscribed(st, ev))
      send_event(self, ev);
  }
}

void replay_next(session_ptr self) {
  auto& st = self->state;
  self->request(st.hub, caf::infinite, replay_atom::value, st.replay_cursor, replay_page)
    .then(
      [=](std::vector<event_record>& evs) {
        auto& st = self->state;
        for (auto& ev : evs) {
          st.replay_cursor = ev.id;
          if (visible(st, ev) && replay_matches(st, ev))
            send_event(self, ev);
        }
        if (st.closed)
          return;
        if (evs.size() == replay_page)
          replay_next(self);
        else
          finish_replay(self);
      },
      [=](caf::error& err) {
        send_error(self, errc_of(err) == errc::invalid_argument
                           ? "'after' is not an event id of this stream."
                           : "The retained events cannot be read right now; resume again.");
        finish_replay(self);
      });
}

void on_command(session_ptr self, const std::string& text) {
  auto& st = self->state;
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    send_error(self, "Messages must be JSON objects such as {\"subscribe\":\"all\"}.");
    return;
  }
  auto& o = v.as_object();
  auto str = [&](const char* key) -> std::optional<std::string> {
    auto p = o.if_contains(key);
    if (!p || !p->is_string())
      return std::nullopt;
    return std::string(p->as_string());
  };
  auto sub = str("subscribe");
  auto unsub = str("unsubscribe");
  if (!sub && !unsub) {
    send_error(self, "Expected \"subscribe\" or \"unsubscribe\" with \"all\" or \"deployment\".");
    return;
  }
  auto what = sub ? *sub : *unsub;
  if (what != "all" && what != "deployment") {
    send_error(self, "Unknown subscription '" + what + "': use \"all\" or \"deployment\".");
    return;
  }
  std::string execution_id;
  if (what == "deployment") {
    auto id = str("executionId");
    if (!id || id->empty() || id->size() > 200) {
      send_error(self, "A deployment subscription needs an \"executionId\".");
      return;
    }
    execution_id = *id;
  }
  if (unsub) {
    if (what == "all")
      st.all = false;
    else
      st.deployments.erase(execution_id);
    send_reply(self, "Unsubscribed", what, execution_id);
    return;
  }
  auto after_v = o.if_contains("after");
  std::optional<std::string> after;
  if (after_v && !after_v->is_null()) {
    if (!after_v->is_string() || !parse_event_id(std::string(after_v->as_string()))) {
      send_error(self, "\"after\" must be an event id received from this stream.");
      return;
    }
    after = std::string(after_v->as_string());
  }
  if (after && st.replaying) {
    send_error(self, "A replay is already running on this connection; resume after it ends.");
    return;
  }
  if (what == "all")
    st.all = true;
  else if (st.deployments.size() >= 1000) {
    send_error(self, "Too many deployment subscriptions on one connection (1000).");
    return;
  } else
    st.deployments.insert(execution_id);
  send_reply(self, "Subscribed", what, execution_id, after ? *after : std::string{});
  if (!after)
    return;
  st.replaying = true;
  st.replay_all = what == "all";
  st.replay_execution = execution_id;
  st.replay_cursor = *after;
  replay_next(self);
}

caf::behavior event_session(session_ptr self, ws_connection_ptr conn, events_actor hub,
                            std::string tenant_id, node_metrics* metrics) {
  auto& st = self->state;
  st.conn = std::move(conn);
  st.hub = hub;
  st.tenant_id = std::move(tenant_id);
  st.metrics = metrics;
  self->send(hub, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
  return {
    [=](text_atom, const std::string& text) { on_command(self, text); },
    [=](event_atom, const std::vector<event_record>& evs) {
      auto& st = self->state;
      if (!st.replaying) {
        deliver_live(self, evs);
        return;
      }
      if (st.held.size() + evs.size() > max_held) {
        st.conn->close(1008, "too many events while replaying: resume from the last id");
        st.closed = true;
        self->quit();
        return;
      }
      st.held.insert(st.held.end(), evs.begin(), evs.end());
    },
  };
}

/// The WebSocket side: spawns the session on open, feeds it the client's
/// messages, stops it on close.
class event_socket final : public ws_handler {
public:
  event_socket(caf::actor_system& sys, events_actor hub, std::string tenant_id,
               node_metrics* metrics)
    : sys_(sys), hub_(std::move(hub)), tenant_id_(std::move(tenant_id)), metrics_(metrics) {
  }

  void on_open(ws_connection_ptr conn) override {
    session_ = sys_.spawn(event_session, std::move(conn), hub_, tenant_id_, metrics_);
    if (metrics_)
      metrics_->event_subscribers().Increment();
  }

  void on_text(std::string text) override {
    if (session_)
      caf::anon_send(session_, text_atom::value, std::move(text));
  }

  void on_close(uint16_t, std::string) override {
    if (!session_)
      return;
    caf::anon_send_exit(session_, caf::exit_reason::user_shutdown);
    session_ = nullptr;
    if (metrics_)
      metrics_->event_subscribers().Decrement();
  }

private:
  caf::actor_system& sys_;
  events_actor hub_;
  std::string tenant_id_;
  node_metrics* metrics_;
  caf::actor session_;
};

void get_events(bridge_ptr self, const call_ptr& c) {
  if (!c->req().websocket) {
    c->extra_headers.emplace_back("Upgrade", "websocket");
    reply_problem(c, 426, "This endpoint is a WebSocket: open it with an Upgrade: websocket "
                          "handshake.");
    return;
  }
  auto hub = events_hub_of(self->system());
  if (!hub) {
    reply_problem(c, 503, "The event stream is not running on this node.");
    return;
  }
  http_response res;
  res.status = 101;
  res.upgrade = std::make_shared<event_socket>(self->system(), hub, c->who.tenant_id,
                                               self->state.env.metrics);
  reply(c, std::move(res));
}

} // namespace

void add_event_routes(std::vector<route>& rs) {
  for (const char* path : {"/api/v1/events", "/hubs/deployment"}) {
    route r;
    r.method = "GET";
    r.segments = split_path(path);
    r.name = path;
    r.auth = true;
    r.min_rank = 1;
    r.query_token = true;
    r.fn = get_events;
    rs.push_back(std::move(r));
  }
}

} // namespace hotswap::api_detail
