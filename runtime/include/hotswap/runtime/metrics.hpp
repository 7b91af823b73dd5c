#pragma once

// The node's Prometheus registry and the metric families every area records
// into. One instance per node, created at start and passed down by reference
// (no global state). prometheus-cpp metrics are thread-safe.

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace hotswap {

/// The Prometheus series of one module version (handles stay valid for the
/// registry's lifetime).
struct module_series {
  prometheus::Counter* ok = nullptr;
  prometheus::Counter* error = nullptr;
  prometheus::Histogram* seconds = nullptr;
};

/// CPU time and resident memory of this process, from /proc/self.
struct process_stats {
  double cpu_seconds = 0;
  double rss_bytes = 0;
  bool ok = false;
};

/// Reads /proc/self/stat (a pseudo-file: no disk I/O).
process_stats read_process_stats();

class node_metrics {
public:
  node_metrics();

  prometheus::Registry& registry() {
    return *registry_;
  }

  /// Renders the registry plus process metrics in Prometheus text format.
  std::string render() const;

  /// Records one HTTP request. `route` is the route template (bounded set).
  void http_request(const std::string& method, const std::string& route, int status,
                    double seconds);

  prometheus::Histogram& snapshot_write_seconds() {
    return *snapshot_write_;
  }

  prometheus::Counter& ownership_claims() {
    return *ownership_claims_;
  }

  prometheus::Counter& fenced_writes() {
    return *fenced_writes_;
  }

  /// Commands forwarded to the node that owns the entity.
  prometheus::Counter& forwarded_requests() {
    return *forwarded_;
  }

  /// Entities adopted from a node that died or left (by kind).
  prometheus::Counter& failovers(const std::string& kind);

  /// Times this node stopped its entity work because it could not renew its lease.
  prometheus::Counter& self_fences() {
    return *self_fences_;
  }

  /// Gauge of active (activated) entity actors per kind.
  prometheus::Gauge& entities_active(const std::string& kind);

  /// Counts entity restarts by their supervisor.
  prometheus::Counter& entity_restarts(const std::string& kind);

  /// hotswap_module_invocations_total{module,version,outcome} and
  /// hotswap_module_invocation_seconds{module,version}.
  module_series module_series_for(const std::string& module, const std::string& version);

  /// Module libraries currently loaded (dlopen'ed) on this node.
  prometheus::Gauge& module_libraries_loaded() {
    return *module_libraries_;
  }

  /// Events published by modules.
  prometheus::Counter& module_events() {
    return *module_events_;
  }

  prometheus::Counter& deployments_started() {
    return *deployments_started_;
  }
  prometheus::Counter& deployments_completed() {
    return *deployments_completed_;
  }
  prometheus::Counter& deployments_failed() {
    return *deployments_failed_;
  }
  prometheus::Counter& deployments_rolled_back() {
    return *deployments_rolled_back_;
  }
  prometheus::Histogram& deployment_duration() {
    return *deployment_duration_;
  }

  /// hotswap_approvals_total{decision}: approved, rejected, expired.
  prometheus::Counter& approvals(const std::string& decision);

  /// Module uploads by outcome ("stored", "duplicate", "rejected").
  prometheus::Counter& module_uploads(const std::string& outcome);

  /// Rate limit decisions taken from this node's buckets because the
  /// cluster-wide limiter (Redis) failed or did not answer in time.
  prometheus::Counter& rate_limit_fallbacks() {
    return *rate_limit_fallbacks_;
  }

  // -- events and messages (#6) -------------------------------------------------

  /// Events appended to the event log by this node.
  prometheus::Counter& events_published() {
    return *events_published_;
  }

  /// Events sent to WebSocket subscribers of this node.
  prometheus::Counter& events_delivered() {
    return *events_delivered_;
  }

  /// WebSocket subscribers connected to this node.
  prometheus::Gauge& event_subscribers() {
    return *event_subscribers_;
  }

  /// Subscribers disconnected because their send buffer was full.
  prometheus::Counter& slow_subscribers_closed() {
    return *slow_subscribers_closed_;
  }

  prometheus::Counter& messages_published() {
    return *messages_published_;
  }

  /// Message deliveries to consumers (first deliveries and redeliveries).
  prometheus::Counter& messages_delivered() {
    return *messages_delivered_;
  }

  prometheus::Counter& messages_acknowledged() {
    return *messages_acknowledged_;
  }

  /// Deliveries after the first (ack deadline passed).
  prometheus::Counter& messages_redelivered() {
    return *messages_redelivered_;
  }

  /// Messages moved to "<topic>.dlq" after max_attempts.
  prometheus::Counter& messages_dead_lettered() {
    return *messages_dead_lettered_;
  }

  prometheus::Counter& messages_expired() {
    return *messages_expired_;
  }

  /// Deliveries owed to consumer groups (not yet acknowledged), as last measured.
  prometheus::Gauge& message_consumer_lag() {
    return *message_consumer_lag_;
  }

private:
  /// Metric handles per (method, route): prometheus-cpp's Family::Add hashes
  /// a label map under a lock on every call; this cache makes the per-request
  /// cost one small lookup.
  struct http_series {
    prometheus::Histogram* duration = nullptr;
    std::array<prometheus::Counter*, 6> by_class{}; ///< 1xx..5xx, index 1..5
  };
  std::mutex http_mtx_;
  std::unordered_map<std::string, http_series> http_series_;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* http_requests_;
  prometheus::Family<prometheus::Histogram>* http_duration_;
  prometheus::Family<prometheus::Gauge>* entities_active_;
  prometheus::Family<prometheus::Counter>* entity_restarts_;
  prometheus::Histogram* snapshot_write_;
  prometheus::Counter* ownership_claims_;
  prometheus::Counter* fenced_writes_;
  prometheus::Counter* forwarded_;
  prometheus::Counter* self_fences_;
  prometheus::Family<prometheus::Counter>* failovers_;
  prometheus::Family<prometheus::Counter>* module_invocations_;
  prometheus::Family<prometheus::Histogram>* module_seconds_;
  prometheus::Family<prometheus::Counter>* module_uploads_;
  prometheus::Gauge* module_libraries_;
  prometheus::Counter* module_events_;
  prometheus::Counter* deployments_started_;
  prometheus::Counter* deployments_completed_;
  prometheus::Counter* deployments_failed_;
  prometheus::Counter* deployments_rolled_back_;
  prometheus::Histogram* deployment_duration_;
  prometheus::Family<prometheus::Counter>* approvals_;
  prometheus::Counter* rate_limit_fallbacks_;
  prometheus::Counter* events_published_;
  prometheus::Counter* events_delivered_;
  prometheus::Gauge* event_subscribers_;
  prometheus::Counter* slow_subscribers_closed_;
  prometheus::Counter* messages_published_;
  prometheus::Counter* messages_delivered_;
  prometheus::Counter* messages_acknowledged_;
  prometheus::Counter* messages_redelivered_;
  prometheus::Counter* messages_dead_lettered_;
  prometheus::Counter* messages_expired_;
  prometheus::Gauge* message_consumer_lag_;
};

} // namespace hotswap
