#pragma once

// The node's Prometheus registry and the metric families every area records
// into. One instance per node, created at start and passed down by reference
// (no global state). prometheus-cpp metrics are thread-safe.

#include <memory>
#include <string>

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
