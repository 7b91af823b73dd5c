#include "hotswap/runtime/metrics.hpp"

#include <prometheus/text_serializer.h>

#include <fstream>
#include <sstream>
#include <unistd.h>

namespace hotswap {

namespace {

const prometheus::Histogram::BucketBoundaries& latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries b{0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                         0.025,  0.05,  0.1,    0.25,  0.5,
                                                         1,      2.5,   5,      10};
  return b;
}

std::string status_class(int status) {
  return std::to_string(status / 100) + "xx";
}

// Process metrics read from /proc/self (no global state).
void append_process_metrics(std::string& out) {
  auto ps = read_process_stats();
  if (!ps.ok)
    return;
  std::ostringstream os;
  os << "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
     << "# TYPE process_cpu_seconds_total counter\n"
     << "process_cpu_seconds_total " << ps.cpu_seconds << "\n"
     << "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
     << "# TYPE process_resident_memory_bytes gauge\n"
     << "process_resident_memory_bytes " << ps.rss_bytes << "\n";
  out += os.str();
}

} // namespace

process_stats read_process_stats() {
  process_stats out;
  std::ifstream stat("/proc/self/stat");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  auto rp = content.rfind(')');
  if (rp == std::string::npos || rp + 2 > content.size())
    return out;
  std::istringstream in(content.substr(rp + 2));
  std::string field;
  // Fields after ')' start at field 3 (state). utime = 14, stime = 15,
  // starttime = 22, rss = 24.
  unsigned long long utime = 0, stime = 0, rss = 0;
  try {
    for (int i = 3; i <= 24 && in >> field; ++i) {
      if (i == 14)
        utime = std::stoull(field);
      else if (i == 15)
        stime = std::stoull(field);
      else if (i == 24)
        rss = std::stoull(field);
    }
  } catch (const std::exception&) {
    return out;
  }
  auto ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  auto page = static_cast<double>(sysconf(_SC_PAGESIZE));
  out.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  out.rss_bytes = static_cast<double>(rss) * page;
  out.ok = true;
  return out;
}

node_metrics::node_metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  http_requests_ = &prometheus::BuildCounter()
                      .Name("hotswap_http_requests_total")
                      .Help("HTTP requests by method, route template and status class")
                      .Register(*registry_);
  http_duration_ = &prometheus::BuildHistogram()
                      .Name("hotswap_http_request_duration_seconds")
                      .Help("HTTP request latency by method and route template")
                      .Register(*registry_);
  entities_active_ = &prometheus::BuildGauge()
                        .Name("hotswap_entities_active")
                        .Help("Entity actors active on this node by kind")
                        .Register(*registry_);
  entity_restarts_ = &prometheus::BuildCounter()
                        .Name("hotswap_entity_restarts_total")
                        .Help("Entity actors restarted from their snapshot by kind")
                        .Register(*registry_);
  snapshot_write_ = &prometheus::BuildHistogram()
                       .Name("hotswap_snapshot_write_seconds")
                       .Help("Latency of fenced snapshot writes (with their audit event)")
                       .Register(*registry_)
                       .Add({}, latency_buckets());
  ownership_claims_ = &prometheus::BuildCounter()
                         .Name("hotswap_ownership_claims_total")
                         .Help("Entity ownership claims won by this node")
                         .Register(*registry_)
                         .Add({});
  forwarded_ = &prometheus::BuildCounter()
                  .Name("hotswap_forwarded_requests_total")
                  .Help("Entity commands forwarded to the owning node over CAF")
                  .Register(*registry_)
                  .Add({});
  self_fences_ = &prometheus::BuildCounter()
                    .Name("hotswap_self_fences_total")
                    .Help("Times this node stopped entity work after failing to renew its lease")
                    .Register(*registry_)
                    .Add({});
  failovers_ = &prometheus::BuildCounter()
                  .Name("hotswap_failovers_total")
                  .Help("Entities adopted from a node that died or left")
                  .Register(*registry_);
  fenced_writes_ = &prometheus::BuildCounter()
                      .Name("hotswap_fenced_writes_total")
                      .Help("Snapshot writes rejected because a newer owner holds the entity")
                      .Register(*registry_)
                      .Add({});
  module_invocations_ = &prometheus::BuildCounter()
                           .Name("hotswap_module_invocations_total")
                           .Help("Module invocations by module, version and outcome")
                           .Register(*registry_);
  module_seconds_ = &prometheus::BuildHistogram()
                       .Name("hotswap_module_invocation_seconds")
                       .Help("Module invocation latency through the worker by module and version")
                       .Register(*registry_);
  module_uploads_ = &prometheus::BuildCounter()
                       .Name("hotswap_module_uploads_total")
                       .Help("Module uploads by outcome")
                       .Register(*registry_);
  module_libraries_ = &prometheus::BuildGauge()
                         .Name("hotswap_module_libraries_loaded")
                         .Help("Module libraries currently loaded on this node")
                         .Register(*registry_)
                         .Add({});
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add({});
  };
  deployments_started_ = counter("hotswap_deployments_started_total", "Deployments started");
  deployments_completed_ = counter("hotswap_deployments_completed_total",
                                   "Deployments that succeeded");
  deployments_failed_ = counter("hotswap_deployments_failed_total", "Deployments that failed");
  deployments_rolled_back_ = counter("hotswap_deployments_rolled_back_total",
                                     "Deployments rolled back on request");
  deployment_duration_ = &prometheus::BuildHistogram()
                            .Name("hotswap_deployment_duration_seconds")
                            .Help("Time from creation to a terminal state")
                            .Register(*registry_)
                            .Add({}, prometheus::Histogram::BucketBoundaries{
                                       0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 86400});
  approvals_ = &prometheus::BuildCounter()
                  .Name("hotswap_approvals_total")
                  .Help("Approval outcomes by decision")
                  .Register(*registry_);
  module_events_ = &prometheus::BuildCounter()
                      .Name("hotswap_module_events_total")
                      .Help("Events published by modules")
                      .Register(*registry_)
                      .Add({});
  rate_limit_fallbacks_ = counter("hotswap_rate_limit_fallbacks_total",
                                  "Rate limit decisions taken from this node's buckets because "
                                  "the cluster-wide limiter failed");
  auto gauge = [this](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
  };
  events_published_ = counter("hotswap_events_published_total",
                              "Events appended to the event log by this node");
  events_delivered_ = counter("hotswap_events_delivered_total",
                              "Events sent to WebSocket subscribers of this node");
  event_subscribers_ = gauge("hotswap_event_subscribers",
                             "WebSocket event subscribers connected to this node");
  slow_subscribers_closed_ = counter("hotswap_event_slow_subscribers_closed_total",
                                     "WebSockets closed (1008) because their send buffer was full");
  messages_published_ = counter("hotswap_messages_published_total", "Messages published");
  messages_delivered_ = counter("hotswap_messages_delivered_total",
                                "Message deliveries to consumer groups (incl. redeliveries)");
  messages_acknowledged_ = counter("hotswap_messages_acknowledged_total",
                                   "Message acknowledgements");
  messages_redelivered_ = counter("hotswap_messages_redelivered_total",
                                  "Deliveries after the ack deadline passed");
  messages_dead_lettered_ = counter("hotswap_messages_dead_lettered_total",
                                    "Messages moved to <topic>.dlq after max_attempts");
  messages_expired_ = counter("hotswap_messages_expired_total",
                              "Messages that expired before delivery");
  message_consumer_lag_ = gauge("hotswap_message_consumer_lag",
                                "Deliveries owed to consumer groups (not yet acknowledged)");
}

prometheus::Counter& node_metrics::approvals(const std::string& decision) {
  return approvals_->Add({{"decision", decision}});
}

module_series node_metrics::module_series_for(const std::string& module,
                                              const std::string& version) {
  module_series s;
  s.ok = &module_invocations_->Add({{"module", module}, {"version", version}, {"outcome", "ok"}});
  s.error = &module_invocations_->Add(
    {{"module", module}, {"version", version}, {"outcome", "error"}});
  s.seconds = &module_seconds_->Add({{"module", module}, {"version", version}}, latency_buckets());
  return s;
}

prometheus::Counter& node_metrics::module_uploads(const std::string& outcome) {
  return module_uploads_->Add({{"outcome", outcome}});
}

std::string node_metrics::render() const {
  prometheus::TextSerializer ser;
  auto out = ser.Serialize(registry_->Collect());
  append_process_metrics(out);
  return out;
}

void node_metrics::http_request(const std::string& method, const std::string& route, int status,
                                double seconds) {
  auto cls = static_cast<size_t>(status / 100);
  if (cls < 1 || cls > 5)
    cls = 5;
  prometheus::Histogram* duration = nullptr;
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard<std::mutex> guard{http_mtx_};
    auto& series = http_series_[method + ' ' + route];
    if (!series.duration)
      series.duration = &http_duration_->Add({{"method", method}, {"route", route}},
                                             latency_buckets());
    if (!series.by_class[cls])
      series.by_class[cls] = &http_requests_->Add(
        {{"method", method}, {"route", route}, {"status", status_class(status)}});
    duration = series.duration;
    counter = series.by_class[cls];
  }
  counter->Increment();
  duration->Observe(seconds);
}

prometheus::Gauge& node_metrics::entities_active(const std::string& kind) {
  return entities_active_->Add({{"kind", kind}});
}

prometheus::Counter& node_metrics::entity_restarts(const std::string& kind) {
  return entity_restarts_->Add({{"kind", kind}});
}

prometheus::Counter& node_metrics::failovers(const std::string& kind) {
  return failovers_->Add({{"kind", kind}});
}

} // namespace hotswap
