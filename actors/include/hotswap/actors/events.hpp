#pragma once

// The events hub of a node (architecture.md, "Events"; api-v1.md, "Events").
//
// Entity actors publish one event_record per durable transition
// (publish_event()). The hub batches them into the event log — the node's
// store on a single node, the cluster's Redis Stream in a cluster — through a
// detached log worker, one append in flight at a time, so ids follow the
// order of publication. Fan-out to subscribers happens from what the log
// returned (single node) or from a detached tail reader of the shared stream
// (cluster: every node sees every node's events, in stream order).
//
// Subscribers are actors (one per WebSocket, or a module host) that receive
// (event_atom, std::vector<event_record>) batches in log order. A subscriber
// that resumes asks the hub for the retained events after an id (replay) and
// buffers live batches meanwhile (see the WebSocket session in
// api_events.cpp).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "caf/actor.hpp"
#include "caf/actor_system.hpp"
#include "caf/local_actor.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/events.hpp"

namespace hotswap {

class node_metrics;

using event_atom = caf::atom_constant<caf::atom("event")>;
using emit_atom = caf::atom_constant<caf::atom("emit")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
using unsubscribe_atom = caf::atom_constant<caf::atom("unsub")>;
using replay_atom = caf::atom_constant<caf::atom("replay")>;
using appended_atom = caf::atom_constant<caf::atom("appended")>;

using events_actor = caf::typed_actor<
  // one event of an entity transition (fire and forget)
  caf::reacts_to<emit_atom, event_record>,
  // a subscriber: receives (event_atom, std::vector<event_record>) until it
  // unsubscribes or terminates (monitored)
  caf::reacts_to<subscribe_atom, caf::actor>,
  caf::reacts_to<unsubscribe_atom, caf::actor>,
  // retained events after an id ("" = the oldest), oldest first, at most
  // `limit`; errc::invalid_argument for a malformed id
  caf::replies_to<replay_atom, std::string, uint32_t>::with<std::vector<event_record>>,
  // events read from a shared log by the tail reader (cluster)
  caf::reacts_to<appended_atom, std::vector<event_record>>,
  // retention sweep (every minute)
  caf::reacts_to<tick_atom>,
  // retry of an append that failed
  caf::reacts_to<resume_atom>,
  // answers once every event published before it is in the log (shutdown)
  caf::replies_to<done_atom>::with<ok_atom>>;

struct events_options {
  millis retention = 86400 * 1000;
  /// Events kept waiting for the log while an append is in flight; beyond
  /// this the oldest are dropped (counted, logged): publishers never block.
  size_t max_pending = 100000;
  /// Events per append (one transaction / one pipeline).
  size_t max_batch = 500;
  /// The log worker runs detached (its calls block). false: scheduled like
  /// any actor and no tail reader — only for tests on the deterministic
  /// coordinator with a log that does not block.
  bool detached_log = true;
};

/// Spawns the hub with its detached log worker (and, when the log is shared,
/// its tail reader). Registers the hub in the actor system's registry so that
/// publish_event() finds it. `metrics` may be null.
events_actor spawn_events_hub(caf::actor_system& sys, std::unique_ptr<event_log> log,
                              std::unique_ptr<event_log> tail, events_options opts,
                              node_metrics* metrics);

/// Sends `ev` to this node's hub (if any). Never blocks; events of one
/// publisher reach the log in the order they were published.
void publish_event(caf::local_actor* self, event_record ev);

/// The hub registered in `sys` (invalid when none).
events_actor events_hub_of(caf::actor_system& sys);

/// The JSON a WebSocket client receives for `ev` (the contract's fields).
std::string to_json(const event_record& ev);

} // namespace hotswap
