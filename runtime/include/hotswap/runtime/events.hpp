#pragma once

// The event stream (api-v1.md, "Events"): every entity transition becomes one
// event_record, appended to an ordered, retained log — the node's store
// (table `events`, store migration 3) on a single node, a Redis Stream in a
// cluster (cluster/redis_events.hpp) — and fanned out to subscribers by the
// events hub actor (actors/events.hpp). Calls block; only detached actors
// call them.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "caf/expected.hpp"
#include "caf/meta/type_name.hpp"

#include "hotswap/runtime/records.hpp"

namespace hotswap {

struct event_record {
  std::string id;           ///< assigned by the log: ordered, opaque to clients
  std::string type;         ///< DeploymentStatusChanged, DeploymentProgress, ...
  std::string execution_id; ///< deployment / approval id ("" for tenants, modules)
  std::string tenant_id;    ///< "" = platform (visible to platform users only)
  std::string status;
  std::string stage;
  int32_t progress = -1;    ///< 0-100; -1 = not applicable
  millis timestamp = 0;
  std::string details;      ///< JSON object text ("{}" when none)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event_record& x) {
  return f(caf::meta::type_name("event_record"), x.id, x.type, x.execution_id, x.tenant_id,
           x.status, x.stage, x.progress, x.timestamp, x.details);
}

/// The position an event id stands for: "N" (store) or "MS-SEQ" (Redis
/// Stream). nullopt for anything else.
std::optional<std::pair<uint64_t, uint64_t>> parse_event_id(const std::string& id);

/// a < b in log order (both must parse).
bool event_id_less(const std::string& a, const std::string& b);

class event_log {
public:
  virtual ~event_log();

  /// Appends `evs` in order; returns them with ids and timestamps assigned.
  virtual caf::expected<std::vector<event_record>> append(std::vector<event_record> evs) = 0;

  /// Up to `limit` retained events after `after` ("" = from the oldest
  /// retained), oldest first. `block_ms` > 0: when there is none yet, waits
  /// up to that long for one (tail readers; the store log does not wait).
  /// errc::invalid_argument when `after` is not an id of this log's format.
  virtual caf::expected<std::vector<event_record>> read_after(const std::string& after,
                                                              size_t limit, int block_ms) = 0;

  /// Drops events older than `before`; returns how many were dropped (an
  /// estimate where the backend trims approximately).
  virtual caf::expected<int64_t> trim(millis before) = 0;

  /// The id of the newest event ("" when empty).
  virtual caf::expected<std::string> last_id() = 0;

  /// True when appends reach every node's tail reader (a shared log): the hub
  /// then fans out from the tail instead of from its own appends.
  virtual bool shared() const = 0;
};

/// Opens the event log on the node's store URL (sqlite:// or postgresql://).
caf::expected<std::unique_ptr<event_log>> open_sql_event_log(const std::string& url);

} // namespace hotswap
