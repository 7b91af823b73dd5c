#pragma once

// The event log of a cluster: one Redis Stream (`{prefix}events`) that every
// node appends to (XADD) and tails (XREAD BLOCK), so a WebSocket subscriber on
// any node sees the events of entities owned by every node. Ids are the
// stream's ids ("ms-seq"), ordered across the cluster. Retention: trim()
// drops entries older than the cut-off (XTRIM MINID, approximate). With
// Redis persistence off, a Redis restart loses the retained history (clients
// then resume from what is left); live delivery continues.

#include <chrono>
#include <memory>
#include <string>

#include "caf/expected.hpp"

#include "hotswap/runtime/events.hpp"

namespace hotswap {

/// `url` "redis://host:port[/db]"; keys under `key_prefix`. Connects lazily.
/// Errors (errc::config_invalid) name what is wrong with the URL.
caf::expected<std::unique_ptr<event_log>>
open_redis_event_log(const std::string& url, const std::string& key_prefix,
                     std::chrono::milliseconds connect_timeout,
                     std::chrono::milliseconds command_timeout);

} // namespace hotswap
