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

  /// Gauge of active (activated) entity actors per kind.
  prometheus::Gauge& entities_active(const std::string& kind);

  /// Counts entity restarts by their supervisor.
  prometheus::Counter& entity_restarts(const std::string& kind);

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
};

} // namespace hotswap
