#include "hotswap/actors/version_router.hpp"

namespace hotswap {

void version_router::add(const std::string& version, uint32_t weight) {
  auto [i, added] = entries_.emplace(version, entry{});
  if (added)
    i->second.weight = weight;
}

bool version_router::contains(const std::string& version) const {
  return entries_.count(version) != 0;
}

std::string version_router::set_weights(const std::map<std::string, uint32_t>& weights) {
  for (auto& [v, w] : weights) {
    auto i = entries_.find(v);
    if (i == entries_.end()) {
      // Weight 0 for a version that is not loaded is already true (a
      // rollback that names a version whose stage failed).
      if (w == 0)
        continue;
      return "version " + v + " is not loaded";
    }
    if (i->second.draining && w > 0)
      return "version " + v + " is being retired";
  }
  for (auto& [v, e] : entries_) {
    auto i = weights.find(v);
    e.weight = i == weights.end() ? 0 : i->second;
    e.current = 0;
  }
  return {};
}

void version_router::drain(const std::string& version) {
  auto i = entries_.find(version);
  if (i == entries_.end())
    return;
  i->second.draining = true;
  i->second.weight = 0;
  i->second.current = 0;
}

bool version_router::draining(const std::string& version) const {
  auto i = entries_.find(version);
  return i != entries_.end() && i->second.draining;
}

void version_router::remove(const std::string& version) {
  entries_.erase(version);
}

std::string version_router::pick() {
  int64_t total = 0;
  entry* best = nullptr;
  const std::string* best_name = nullptr;
  for (auto& [v, e] : entries_) {
    if (e.weight == 0)
      continue;
    e.current += e.weight;
    total += e.weight;
    if (best == nullptr || e.current > best->current) {
      best = &e;
      best_name = &v;
    }
  }
  if (best == nullptr)
    return {};
  best->current -= total;
  return *best_name;
}

void version_router::begin(const std::string& version) {
  if (auto i = entries_.find(version); i != entries_.end())
    ++i->second.in_flight;
}

void version_router::end(const std::string& version) {
  if (auto i = entries_.find(version); i != entries_.end() && i->second.in_flight > 0)
    --i->second.in_flight;
}

uint64_t version_router::in_flight(const std::string& version) const {
  auto i = entries_.find(version);
  return i == entries_.end() ? 0 : i->second.in_flight;
}

uint32_t version_router::weight(const std::string& version) const {
  auto i = entries_.find(version);
  return i == entries_.end() ? 0 : i->second.weight;
}

uint64_t version_router::total_weight() const {
  uint64_t total = 0;
  for (auto& [v, e] : entries_)
    total += e.weight;
  return total;
}

std::vector<std::pair<std::string, uint32_t>> version_router::weights() const {
  std::vector<std::pair<std::string, uint32_t>> out;
  for (auto& [v, e] : entries_)
    out.emplace_back(v, e.weight);
  return out;
}

} // namespace hotswap
