#pragma once

// The durable message queue of the Messages API (api-v1.md, "Messages"):
// one synchronous interface, two implementations — SQL on the node's store
// (sqlite:// or postgresql://, tables from store migration 3) for a single
// node, Redis Streams (cluster/redis_messages.hpp) in a cluster. Calls block;
// only the detached broker actor (actors/messages.hpp) calls them.
//
// Semantics shared by both implementations (the broker relies on them):
// - publish: a new id stores the message; the same id with the same topic and
//   payload is an idempotent retry (stored = false, nothing written); the same
//   id with other content is errc::conflict.
// - consume(topic, group, max, now, policy): returns up to `max` messages of
//   `topic` that `group` may receive now, highest priority first, then oldest
//   first, and leases them to the group: each returned message has
//   delivery_attempts = this group's attempts including this one. A message
//   is available to a group when it is not expired, not deleted, not
//   acknowledged (by the group or as a whole), and either never delivered to
//   the group or its last lease ended: a lease of attempt n ends at
//   delivered_at + ack_deadline + backoff_initial * 2^(n-1) (exponential
//   backoff). A message whose lease ended after max_attempts attempts is
//   dead-lettered for the group instead: a copy (new id, same payload,
//   headers plus x-dead-letter-reason / x-original-message-id /
//   x-original-topic / x-consumer-group / x-delivery-attempts) is published to
//   "<topic>.dlq" and the original's status becomes failed. Expired messages
//   (expires_at != 0 and <= now) are never delivered; their status becomes
//   expired. A group that consumes a topic for the first time sees every
//   retained message of it. Each message reaches one consumer of a group at a
//   time, and never again after the group acknowledged it.
// - acknowledge(id, group, now): group non-empty -> for that group (errc::
//   conflict when the message was never delivered to the group or was
//   dead-lettered for it, idempotent when already acknowledged); empty group
//   -> for the message as a whole (legacy: no group receives it afterwards).
//   Returns the message afterwards as the acknowledging group sees it: status
//   acknowledged, acknowledged_at = when it was acknowledged (the first
//   acknowledgement; a retry changes nothing), delivery_attempts = the
//   group's attempts (the maximum over groups for an empty group).
// - Message status as a whole (get, list_topic): pending (no group received
//   it yet), delivered (some group received it), acknowledged (acknowledged
//   as a whole, or by a group while no other group still owes it), failed
//   (dead-lettered for some group, whatever other groups did before; only an
//   acknowledgement as a whole changes that), expired (marked by a consume of
//   its topic after expires_at).
// - Clarifications both implementations follow: the backoff exponent is
//   capped at 30 (2^(n-1) with n - 1 <= 30); a lease that ended after
//   max_attempts is dead-lettered by the next consume of that (topic, group),
//   not by a timer; the DLQ copy has a new UUID, expires_at 0, created_at =
//   the consume's `now`, status pending, and everything else of the
//   original; x-dead-letter-reason is a sentence, x-delivery-attempts the
//   group's attempts in decimal.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "caf/expected.hpp"
#include "caf/meta/type_name.hpp"

#include "hotswap/runtime/records.hpp"

namespace hotswap {

enum class message_status : int32_t {
  pending = 0,
  delivered = 1,
  acknowledged = 2,
  failed = 3,
  expired = 4,
};

/// "Pending", "Delivered", ... (the contract's names).
const char* to_name(message_status s);

struct message_record {
  std::string id;
  std::string topic;
  std::string payload;        ///< JSON text of the payload as published
  std::string schema_version;
  std::map<std::string, std::string> headers;
  std::string correlation_id;
  int32_t priority = 0;       ///< 0-9, 9 first
  millis expires_at = 0;      ///< 0 = never
  std::string partition_key;
  millis created_at = 0;      ///< set by the broker at publish
  int32_t status = 0;         ///< message_status
  millis acknowledged_at = 0; ///< when status became acknowledged; 0 = not acknowledged
  int32_t delivery_attempts = 0; ///< in consume results: this group's attempts; else the maximum over groups
  std::string published_by;   ///< user name of the publisher
  std::string tenant_id;      ///< tenant of the publisher ("" = platform)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, message_record& x) {
  return f(caf::meta::type_name("message_record"), x.id, x.topic, x.payload, x.schema_version,
           x.headers, x.correlation_id, x.priority, x.expires_at, x.partition_key, x.created_at,
           x.status, x.acknowledged_at, x.delivery_attempts, x.published_by, x.tenant_id);
}

/// Delivery rules from config ([messages]).
struct message_policy {
  millis ack_deadline = 30000;
  int32_t max_attempts = 5;
  millis backoff_initial = 2000;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, message_policy& x) {
  return f(caf::meta::type_name("message_policy"), x.ack_deadline, x.max_attempts,
           x.backoff_initial);
}

/// What consume() did besides returning messages (for metrics).
struct consume_result {
  std::vector<message_record> messages;
  int32_t redelivered = 0;    ///< returned messages with delivery_attempts > 1
  int32_t dead_lettered = 0;  ///< moved to "<topic>.dlq" by this call
  int32_t expired = 0;        ///< marked expired by this call
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, consume_result& x) {
  return f(caf::meta::type_name("consume_result"), x.messages, x.redelivered, x.dead_lettered,
           x.expired);
}

class message_store {
public:
  virtual ~message_store();

  /// Stores `m` (status pending). Returns true when stored, false for an
  /// idempotent retry of the same id; errc::conflict for the same id with
  /// another topic or payload.
  virtual caf::expected<bool> publish(const message_record& m) = 0;

  /// One message; nullopt when absent or deleted.
  virtual caf::expected<std::optional<message_record>> get(const std::string& id) = 0;

  /// Messages of `topic`, newest first, each once, at most `limit`.
  virtual caf::expected<std::vector<message_record>> list_topic(const std::string& topic,
                                                                size_t limit) = 0;

  /// Leases up to `max` messages to `group` (see the file comment).
  virtual caf::expected<consume_result> consume(const std::string& topic,
                                                const std::string& group, size_t max,
                                                millis now, const message_policy& policy) = 0;

  /// Acknowledges (see the file comment); errc::not_found when absent.
  virtual caf::expected<message_record> acknowledge(const std::string& id,
                                                    const std::string& group, millis now) = 0;

  /// Deletes a message; errc::not_found when absent.
  virtual caf::expected<void> remove(const std::string& id) = 0;

  /// Consumer lag: deliveries still owed, summed over every (topic, group)
  /// that has consumed — messages not yet acknowledged by that group and not
  /// dead-lettered or expired.
  virtual caf::expected<int64_t> lag() = 0;
};

/// Opens the SQL message store on the node's store URL (sqlite:// or
/// postgresql://; the tables come from the store's migrations).
caf::expected<std::unique_ptr<message_store>> open_sql_message_store(const std::string& url);

} // namespace hotswap
