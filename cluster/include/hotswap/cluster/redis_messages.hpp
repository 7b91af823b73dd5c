#pragma once

// The message queue of a cluster (runtime/messages.hpp) kept in Redis, so
// that every node shares one queue. docs/messages-redis.md has the whole
// story; in short:
//
// Keys (p = the key prefix; {n} = the byte length of the topic name, which
// keeps "topic:group" pairs unambiguous whatever characters they contain):
//   {p}msg:{id}                   hash: the message (id, topic, payload,
//                                 schema_version, correlation_id, priority,
//                                 expires_at, partition_key, created_at,
//                                 status, acknowledged_at (as a whole),
//                                 attempts (max over groups), published_by,
//                                 tenant_id), its headers as "h:{name}"
//                                 fields, and bookkeeping: sid (its stream
//                                 entry), live (1 while groups may still owe
//                                 it: not acknowledged as a whole, not
//                                 expired), acked (1 once acknowledged as a
//                                 whole), group_acked_at (latest group ack)
//   {p}dlv:{id}                   hash: group -> "state:attempts:delivered_at:
//                                 lease_end:acked_at", state leased, acked or
//                                 dead (dead-lettered for the group)
//   {p}stream:{priority}:{topic}  stream, the log: one entry "{seq}-0" {id =
//                                 message id} per message; seq comes from
//                                 {p}seq, so the entries of all priorities of
//                                 all topics are totally ordered by age
//   {p}seq                        counter of published messages
//   {p}exp:{topic}                sorted set: ids of messages with an
//                                 expires_at, scored by it
//   {p}groups:{topic}             set: the groups that consumed the topic
//   {p}pos:{n}:{topic}:{group}    hash: "p{priority}" -> the last stream
//                                 entry of that priority the group has read
//   {p}lease:{n}:{topic}:{group}  sorted set: ids leased to the group and not
//                                 acknowledged, scored by the lease's end
//   {p}live                       hash: topic -> its messages with live = 1
//   {p}lag                        counter: the lag (below)
//
// Every call is one command or one Lua script, so each is atomic across the
// nodes; times come from the caller (`now`), never from Redis' clock.
//
// lag() is GET {p}lag, a counter the scripts keep equal to
//   sum over (topic, group in {p}groups:{topic}) of
//     live(topic) - #(live messages of topic the group acknowledged or
//                     dead-lettered)
// publish adds the number of the topic's groups; a group's first consume
// adds live(topic); a group acknowledging or dead-lettering a live message
// subtracts 1; a message leaving the live set (acknowledged as a whole,
// expired, removed) subtracts the number of its topic's groups that had not
// acknowledged or dead-lettered it. Expiry is noticed by the next consume of
// the topic (the store has no clock), so an expired message is owed until
// then.

#include <chrono>
#include <memory>
#include <string>

#include "caf/expected.hpp"

#include "hotswap/runtime/messages.hpp"

namespace hotswap {

/// Opens the message store on the Redis at `url` ("redis://host:port[/db]"),
/// with every key under `key_prefix`. Redis need not be up: each call
/// (re)connects when there is no connection and answers errc::unavailable
/// (naming the URL and the hiredis error) within the timeouts while Redis is
/// unreachable; a failing script is errc::store_failure with Redis' message.
/// Calls block: make them from a detached actor only. Fails (errc::
/// config_invalid) only for an invalid URL, prefix or timeouts.
caf::expected<std::unique_ptr<message_store>>
open_redis_message_store(const std::string& url, const std::string& key_prefix,
                         std::chrono::milliseconds connect_timeout = std::chrono::milliseconds{300},
                         std::chrono::milliseconds command_timeout = std::chrono::milliseconds{500});

} // namespace hotswap
