// The traffic split between the loaded versions of one module (pure state):
// smooth weighted round-robin, weights, drain, in-flight counts.
#define CAF_SUITE version_router
#include "caf/test/dsl.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "hotswap/actors/version_router.hpp"

using namespace hotswap;

namespace {

std::vector<std::string> picks(version_router& r, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back(r.pick());
  return out;
}

/// The longest run of consecutive picks of `version`.
size_t longest_run(const std::vector<std::string>& xs, const std::string& version) {
  size_t best = 0;
  size_t run = 0;
  for (auto& x : xs) {
    run = x == version ? run + 1 : 0;
    best = std::max(best, run);
  }
  return best;
}

} // namespace

CAF_TEST(a 30 / 70 split picks each version exactly its weight and interleaves them) {
  version_router r;
  r.add("1.0.0", 30);
  r.add("2.0.0", 70);
  CAF_CHECK_EQUAL(r.total_weight(), 100u);
  auto xs = picks(r, 100);
  CAF_CHECK_EQUAL(std::count(xs.begin(), xs.end(), "1.0.0"), 30);
  CAF_CHECK_EQUAL(std::count(xs.begin(), xs.end(), "2.0.0"), 70);
  // Interleaved, not 30 then 70: the minority version never runs twice in a
  // row, the majority never more than ceil(70 / 30) = 3 times.
  CAF_CHECK_EQUAL(longest_run(xs, "1.0.0"), 1u);
  CAF_CHECK_LESS_OR_EQUAL(longest_run(xs, "2.0.0"), 3u);
  // Smooth: every block of ten picks already holds the 3:7 ratio.
  for (size_t block = 0; block < 10; ++block) {
    auto first = xs.begin() + static_cast<std::ptrdiff_t>(block * 10);
    CAF_CHECK_EQUAL(std::count(first, first + 10, "1.0.0"), 3);
  }
  // The next cycle repeats the same split.
  auto again = picks(r, 100);
  CAF_CHECK_EQUAL(std::count(again.begin(), again.end(), "1.0.0"), 30);
}

CAF_TEST(a router without any weight picks nothing) {
  version_router empty;
  CAF_CHECK_EQUAL(empty.pick(), "");
  version_router r;
  r.add("1.0.0", 0);
  r.add("2.0.0", 0);
  CAF_CHECK_EQUAL(r.total_weight(), 0u);
  for (auto& x : picks(r, 10))
    CAF_CHECK_EQUAL(x, "");
}

CAF_TEST(a version with weight zero is never picked next to a weighted one) {
  version_router r;
  r.add("1.0.0", 0);
  r.add("2.0.0", 5);
  for (auto& x : picks(r, 20))
    CAF_CHECK_EQUAL(x, "2.0.0");
}

CAF_TEST(adding a present version keeps its weight) {
  version_router r;
  r.add("1.0.0", 100);
  r.add("1.0.0", 0);
  CAF_CHECK_EQUAL(r.weight("1.0.0"), 100u);
  CAF_CHECK_EQUAL(r.weights().size(), 1u);
}

CAF_TEST(set_weights gives unlisted versions weight zero) {
  version_router r;
  r.add("1.0.0", 100);
  r.add("2.0.0", 0);
  CAF_CHECK_EQUAL(r.set_weights({{"2.0.0", 10}}), "");
  CAF_CHECK_EQUAL(r.weight("1.0.0"), 0u);
  CAF_CHECK_EQUAL(r.weight("2.0.0"), 10u);
  for (auto& x : picks(r, 10))
    CAF_CHECK_EQUAL(x, "2.0.0");
}

CAF_TEST(set_weights refusing an unknown version changes nothing) {
  version_router r;
  r.add("1.0.0", 100);
  r.add("2.0.0", 0);
  // The known version is listed first in map order: a partial update would
  // already have changed it before meeting the unknown one.
  auto why = r.set_weights({{"1.0.0", 50}, {"3.0.0", 50}});
  CAF_CHECK_NOT_EQUAL(why, "");
  CAF_CHECK_NOT_EQUAL(why.find("3.0.0"), std::string::npos);
  CAF_CHECK_EQUAL(r.weight("1.0.0"), 100u);
  CAF_CHECK_EQUAL(r.weight("2.0.0"), 0u);
  CAF_CHECK(!r.contains("3.0.0"));
  using weights = std::vector<std::pair<std::string, uint32_t>>;
  CAF_CHECK(r.weights() == (weights{{"1.0.0", 100}, {"2.0.0", 0}}));
  for (auto& x : picks(r, 10))
    CAF_CHECK_EQUAL(x, "1.0.0");
}

CAF_TEST(weight zero for a version that is not loaded is accepted and ignored) {
  version_router r;
  r.add("1.0.0", 0);
  CAF_CHECK_EQUAL(r.set_weights({{"1.0.0", 100}, {"4.0.0", 0}}), "");
  CAF_CHECK_EQUAL(r.weight("1.0.0"), 100u);
  CAF_CHECK(!r.contains("4.0.0"));
}

CAF_TEST(a draining version is never picked and refuses a positive weight) {
  version_router r;
  r.add("1.0.0", 50);
  r.add("2.0.0", 50);
  r.pick(); // leave some smooth-round-robin credit behind
  r.drain("2.0.0");
  CAF_CHECK(r.draining("2.0.0"));
  CAF_CHECK(!r.draining("1.0.0"));
  CAF_CHECK(r.contains("2.0.0"));
  CAF_CHECK_EQUAL(r.weight("2.0.0"), 0u);
  CAF_CHECK_EQUAL(r.total_weight(), 50u);
  for (auto& x : picks(r, 20))
    CAF_CHECK_EQUAL(x, "1.0.0");
  auto why = r.set_weights({{"1.0.0", 50}, {"2.0.0", 50}});
  CAF_CHECK_NOT_EQUAL(why, "");
  CAF_CHECK_EQUAL(r.weight("1.0.0"), 50u);
  CAF_CHECK_EQUAL(r.weight("2.0.0"), 0u);
  // Weight zero for a draining version is fine.
  CAF_CHECK_EQUAL(r.set_weights({{"1.0.0", 70}, {"2.0.0", 0}}), "");
  CAF_CHECK_EQUAL(r.weight("1.0.0"), 70u);
  CAF_CHECK(r.draining("2.0.0"));
  for (auto& x : picks(r, 20))
    CAF_CHECK_EQUAL(x, "1.0.0");
}

CAF_TEST(in flight counts are kept per version and never drop below zero) {
  version_router r;
  r.add("1.0.0", 100);
  r.add("2.0.0", 0);
  r.begin("1.0.0");
  r.begin("1.0.0");
  r.begin("2.0.0");
  CAF_CHECK_EQUAL(r.in_flight("1.0.0"), 2u);
  CAF_CHECK_EQUAL(r.in_flight("2.0.0"), 1u);
  r.end("1.0.0");
  CAF_CHECK_EQUAL(r.in_flight("1.0.0"), 1u);
  r.end("2.0.0");
  r.end("2.0.0");
  CAF_CHECK_EQUAL(r.in_flight("2.0.0"), 0u);
  // Draining keeps the count: in-flight requests still finish.
  r.drain("1.0.0");
  CAF_CHECK_EQUAL(r.in_flight("1.0.0"), 1u);
  // Unknown versions count nothing and are not created.
  r.begin("9.9.9");
  CAF_CHECK_EQUAL(r.in_flight("9.9.9"), 0u);
  CAF_CHECK(!r.contains("9.9.9"));
}

CAF_TEST(a removed version is forgotten entirely) {
  version_router r;
  r.add("1.0.0", 50);
  r.add("2.0.0", 50);
  r.begin("2.0.0");
  r.drain("2.0.0");
  r.remove("2.0.0");
  CAF_CHECK(!r.contains("2.0.0"));
  CAF_CHECK(!r.draining("2.0.0"));
  CAF_CHECK_EQUAL(r.in_flight("2.0.0"), 0u);
  CAF_CHECK_EQUAL(r.weights().size(), 1u);
  CAF_CHECK_NOT_EQUAL(r.set_weights({{"2.0.0", 10}}), "");
  for (auto& x : picks(r, 10))
    CAF_CHECK_EQUAL(x, "1.0.0");
  // Removing it again, or a version never added, is harmless.
  r.remove("2.0.0");
  r.remove("7.0.0");
  CAF_CHECK_EQUAL(r.total_weight(), 50u);
  // Once removed it can come back fresh.
  r.add("2.0.0", 50);
  CAF_CHECK(!r.draining("2.0.0"));
  auto xs = picks(r, 10);
  CAF_CHECK_EQUAL(std::count(xs.begin(), xs.end(), "2.0.0"), 5);
}
