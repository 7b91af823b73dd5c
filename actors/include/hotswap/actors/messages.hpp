#pragma once

// The message broker: the one actor that calls a node's message_store
// (runtime/messages.hpp: SQL on a single node, Redis Streams in a cluster).
// It runs detached (the store blocks), counts the message metrics, keeps the
// consumer-lag gauge current, and holds long polls: a consume with a wait that
// finds nothing is answered later — when a message is published to its topic
// through this broker, when a periodic retry finds one (redeliveries become
// due by time; other nodes publish too), or empty when the wait has passed.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/messages.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap {

using consume_atom = caf::atom_constant<caf::atom("consume")>;
using ack_atom = caf::atom_constant<caf::atom("ack")>;

/// The longest wait of one consume (longer waits are cut to it).
constexpr uint32_t max_consume_wait_ms = 30000;

using message_broker_actor = caf::typed_actor<
  /// Publishes a message (created_at 0 = now): the message as stored and
  /// true, or the stored message and false for an idempotent retry;
  /// errc::conflict for the same id with other content.
  caf::replies_to<put_atom, message_record>::with<message_record, bool>,
  /// One message (errc::not_found).
  caf::replies_to<get_atom, std::string>::with<message_record>,
  /// A topic's messages, newest first, at most `limit`.
  caf::replies_to<list_atom, std::string /*topic*/, uint32_t /*limit*/>::with<
    std::vector<message_record>>,
  /// Leases up to `max` messages of `topic` to `group`, waiting up to
  /// `wait_ms` (0 = answer at once) when there are none.
  caf::replies_to<consume_atom, std::string /*topic*/, std::string /*group*/, uint32_t /*max*/,
                  uint32_t /*wait_ms*/>::with<std::vector<message_record>>,
  /// Acknowledges for `group` ("" = as a whole): the message afterwards.
  caf::replies_to<ack_atom, std::string /*id*/, std::string /*group*/>::with<message_record>,
  /// Deletes a message (errc::not_found).
  caf::replies_to<delete_atom, std::string>::with<ok_atom>,
  /// Internal timer: long-poll retries and deadlines, the lag gauge.
  caf::reacts_to<tick_atom>>;

/// Spawns the broker (detached) owning `store`. `metrics` may be null.
message_broker_actor spawn_message_broker(caf::actor_system& sys,
                                          std::unique_ptr<message_store> store,
                                          message_policy policy, node_metrics* metrics);

} // namespace hotswap
