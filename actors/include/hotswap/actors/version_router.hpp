#pragma once

// Traffic split between the loaded versions of one module (pure state, no
// CAF): weights, smooth weighted round-robin, drain, in-flight counts. The
// module_host actor owns one per module and keeps its handlers thin.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hotswap {

class version_router {
public:
  /// Adds a loaded version with `weight` (no-op when present).
  void add(const std::string& version, uint32_t weight);

  /// Whether `version` is known (routable or draining).
  bool contains(const std::string& version) const;

  /// Replaces the weights: every listed version with a positive weight must
  /// be present and not draining (weight 0 for an absent version is
  /// accepted and ignored); versions not listed get weight 0. Returns an empty string on
  /// success, else why the weights were refused (nothing changed).
  std::string set_weights(const std::map<std::string, uint32_t>& weights);

  /// Stops routing to `version` (weight 0, draining). In-flight requests
  /// finish; no new request goes there.
  void drain(const std::string& version);

  bool draining(const std::string& version) const;

  /// Forgets `version` entirely.
  void remove(const std::string& version);

  /// The next version by smooth weighted round-robin (nginx's algorithm:
  /// deterministic, and over every cycle of sum(weights) picks each version
  /// exactly weight times, interleaved). Empty when no version has weight.
  std::string pick();

  void begin(const std::string& version);
  void end(const std::string& version);
  uint64_t in_flight(const std::string& version) const;

  uint32_t weight(const std::string& version) const;

  /// Total weight of routable versions.
  uint64_t total_weight() const;

  /// Versions in name order with their weights.
  std::vector<std::pair<std::string, uint32_t>> weights() const;

private:
  struct entry {
    uint32_t weight = 0;
    int64_t current = 0;
    uint64_t in_flight = 0;
    bool draining = false;
  };
  std::map<std::string, entry> entries_;
};

} // namespace hotswap
