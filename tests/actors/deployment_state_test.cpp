#define CAF_SUITE deployment_state
#include "caf/test/dsl.hpp"

#include <set>

#include <boost/json.hpp>

#include "hotswap/actors/deployment_state.hpp"

using namespace hotswap;
using namespace hotswap::deploy;
namespace json = boost::json;

namespace {

using problems = std::vector<std::string>;
const problems none;

// -- a simulated fleet: per node, the loaded versions and their weights ---------------

struct fleet_model {
  std::map<std::string, std::map<std::string, uint32_t>> nodes;
  problems errors;

  fleet_model(const std::vector<std::string>& ids, const std::string& live) {
    for (auto& n : ids) {
      nodes[n];
      if (!live.empty())
        nodes[n][live] = 100;
    }
  }

  /// Applies one step as the engine would (stage: weight 0 unless first version).
  void apply(const step& s, const std::string& where) {
    for (auto& n : s.nodes) {
      if (nodes.count(n) == 0) {
        errors.push_back(where + ": unknown node " + n);
        continue;
      }
      auto& loaded = nodes[n];
      switch (s.kind) {
        case step_kind::stage:
          if (loaded.count(s.version) == 0)
            loaded[s.version] = loaded.empty() ? 100 : 0;
          break;
        case step_kind::weights:
          for (auto& [v, w] : s.weights) {
            if (loaded.count(v) == 1)
              loaded[v] = w;
            else if (w > 0)
              errors.push_back(where + ": weight " + std::to_string(w) + " for unloaded " + v
                               + " on " + n);
          }
          break;
        case step_kind::retire:
          loaded.erase(s.version);
          break;
        default:
          break;
      }
    }
    // No node that serves the module may be left without traffic.
    for (auto& [n, loaded] : nodes) {
      uint32_t total = 0;
      for (auto& [v, w] : loaded)
        total += w;
      if (!loaded.empty() && total == 0)
        errors.push_back(where + ": no traffic on " + n);
    }
  }

  uint32_t weight(const std::string& node, const std::string& v) const {
    auto& loaded = nodes.at(node);
    auto i = loaded.find(v);
    return i == loaded.end() ? 0 : i->second;
  }

  bool loaded(const std::string& node, const std::string& v) const {
    return nodes.at(node).count(v) == 1;
  }
};

std::vector<std::string> node_ids(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 1; i <= n; ++i)
    out.push_back("node-" + std::to_string(i));
  return out;
}

plan_input make_input(strategy_kind s, const std::string& previous, size_t nodes) {
  plan_input in;
  in.strategy = s;
  in.module = "echo";
  in.version = "2.0.0";
  in.previous = previous;
  in.nodes = node_ids(nodes);
  in.batch_size = 2;
  in.keep_seconds = 300;
  return in;
}

std::string case_name(const plan_input& in) {
  return to_string(in.strategy) + (in.previous.empty() ? " without" : " with")
         + " previous on " + std::to_string(in.nodes.size()) + " node(s)";
}

const std::vector<strategy_kind> all_strategies{strategy_kind::direct, strategy_kind::rolling,
                                                strategy_kind::blue_green,
                                                strategy_kind::canary};

/// Every invariant of a plan; returns the violations.
problems plan_violations(const plan_input& in, const std::vector<step>& plan) {
  problems out;
  auto name = case_name(in);
  auto fail = [&](const std::string& what) { out.push_back(name + ": " + what); };
  const auto& v = in.version;
  const auto& prev = in.previous;
  if (plan.empty()) {
    fail("empty plan");
    return out;
  }
  // The first step stages the new version (on all nodes, or the first batch).
  if (plan[0].kind != step_kind::stage || plan[0].version != v)
    fail("first step is not a stage of the new version");
  if (in.strategy != strategy_kind::rolling && plan[0].nodes != in.nodes)
    fail("first step does not cover every node");
  // Every node is staged before a weights step touches it.
  std::set<std::string> staged;
  std::set<std::string> switched;
  for (size_t i = 0; i < plan.size(); ++i) {
    auto& s = plan[i];
    if (s.label.empty())
      fail("step " + std::to_string(i) + " has no label");
    if (s.nodes.empty())
      fail("step " + std::to_string(i) + " acts on no node");
    if (s.kind == step_kind::stage && s.version == v)
      staged.insert(s.nodes.begin(), s.nodes.end());
    if (s.kind == step_kind::weights) {
      for (auto& n : s.nodes)
        if (staged.count(n) == 0)
          fail("weights on " + n + " before the new version is staged there");
      auto w = s.weights.find(v);
      if (w != s.weights.end() && w->second == 100)
        switched.insert(s.nodes.begin(), s.nodes.end());
      uint32_t total = 0;
      for (auto& [ver, x] : s.weights)
        total += x;
      if (total != 100)
        fail("weights step " + std::to_string(i) + " does not add up to 100");
      if (prev.empty() && s.weights.size() != 1)
        fail("weights mention a version other than the new one without a previous");
    }
  }
  if (switched != std::set<std::string>(in.nodes.begin(), in.nodes.end()))
    fail("not every node gets new=100");
  // Retire of the previous version only as the very last step.
  size_t retires = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].kind != step_kind::retire)
      continue;
    ++retires;
    if (plan[i].version != prev || prev.empty())
      fail("retires " + plan[i].version);
    if (i + 1 != plan.size())
      fail("retire is not the last step");
    if (plan[i].nodes != in.nodes)
      fail("retire does not cover every node");
  }
  if (retires != (prev.empty() ? 0u : 1u))
    fail("expected " + std::string(prev.empty() ? "no" : "one") + " retire, got "
         + std::to_string(retires));
  // A verify step follows the switch.
  bool verified = false;
  for (auto& s : plan)
    verified = verified || s.kind == step_kind::verify;
  if (!verified)
    fail("no verify step");
  // Canary with a previous version: 10/30/50/100, each step < 100 analyzed.
  if (in.strategy == strategy_kind::canary && !prev.empty()) {
    std::vector<uint32_t> percents;
    for (size_t i = 0; i < plan.size(); ++i) {
      auto& s = plan[i];
      if (s.kind != step_kind::weights)
        continue;
      percents.push_back(s.weights.at(v));
      if (s.weights.at(v) < 100) {
        if (s.weights.at(prev) != 100 - s.weights.at(v))
          fail("canary step does not give the rest to the previous version");
        if (i + 1 >= plan.size() || plan[i + 1].kind != step_kind::analyze)
          fail("canary step " + std::to_string(s.weights.at(v)) + "% not followed by analyze");
        else {
          auto& a = plan[i + 1];
          if (a.version != v || a.baseline != prev || a.percent != s.weights.at(v)
              || a.hold_seconds != in.canary.step_seconds)
            fail("analyze step has wrong version/baseline/percent/hold");
        }
      }
    }
    if (percents != std::vector<uint32_t>{10, 30, 50, 100})
      fail("canary percents are not 10/30/50/100");
  } else {
    for (auto& s : plan)
      if (s.kind == step_kind::analyze)
        fail("analyze step outside a canary with a baseline");
  }
  // Blue-green with a previous version: smoke before the switch, hold before retire.
  if (in.strategy == strategy_kind::blue_green && !prev.empty()) {
    if (plan.size() != 6 || plan[1].kind != step_kind::smoke
        || plan[2].kind != step_kind::weights || plan[2].nodes != in.nodes
        || plan[4].kind != step_kind::hold || plan[4].hold_seconds != in.keep_seconds)
      fail("blue-green plan is not stage/smoke/switch/verify/hold/retire");
  }
  // Simulate the plan: never a node without traffic, and the end state is new=100 only.
  fleet_model fleet(in.nodes, prev);
  for (size_t i = 0; i < plan.size(); ++i)
    fleet.apply(plan[i], name + " step " + std::to_string(i));
  out.insert(out.end(), fleet.errors.begin(), fleet.errors.end());
  for (auto& n : in.nodes) {
    if (fleet.weight(n, v) != 100)
      fail("new version does not carry 100% on " + n);
    if (!prev.empty() && fleet.loaded(n, prev))
      fail("previous version still loaded on " + n);
  }
  return out;
}

} // namespace

// -- strategies -------------------------------------------------------------------

CAF_TEST(strategy names round trip and accept legacy spellings) {
  for (auto s : all_strategies) {
    strategy_kind parsed{};
    CAF_CHECK(parse_strategy(to_string(s), parsed));
    CAF_CHECK(parsed == s);
  }
  strategy_kind k{};
  CAF_CHECK(parse_strategy("blue-green", k) && k == strategy_kind::blue_green);
  CAF_CHECK(parse_strategy("CANARY", k) && k == strategy_kind::canary);
  CAF_CHECK(parse_strategy("1", k) && k == strategy_kind::rolling);
  CAF_CHECK(!parse_strategy("4", k));
  CAF_CHECK(!parse_strategy("", k));
  CAF_CHECK(!parse_strategy("bluegreen ", k));
  CAF_CHECK_EQUAL(to_string(step_kind::analyze), "analyze");
}

// -- plans -----------------------------------------------------------------------------

CAF_TEST(every strategy builds a plan that keeps traffic flowing and ends on the new version) {
  size_t cases = 0;
  for (auto s : all_strategies)
    for (std::string prev : {"", "1.0.0"})
      for (size_t n : {1u, 3u}) {
        auto in = make_input(s, prev, n);
        auto plan = build_plan(in);
        CAF_MESSAGE(case_name(in) << ": " << plan.size() << " steps");
        CAF_CHECK_EQUAL(plan_violations(in, plan), none);
        ++cases;
      }
  CAF_CHECK_EQUAL(cases, 16u);
}

CAF_TEST(every strategy rolls back to the previous version after a failure at any step) {
  for (auto s : all_strategies)
    for (std::string prev : {"", "1.0.0"})
      for (size_t n : {1u, 3u}) {
        auto in = make_input(s, prev, n);
        auto plan = build_plan(in);
        CAF_CHECK(build_rollback(in, plan, 0).empty());
        for (size_t applied = 1; applied <= plan.size(); ++applied) {
          auto where = case_name(in) + " failing at step " + std::to_string(applied - 1);
          fleet_model fleet(in.nodes, prev);
          std::set<std::string> touched;
          for (size_t i = 0; i < applied; ++i) {
            fleet.apply(plan[i], where + " (plan)");
            touched.insert(plan[i].nodes.begin(), plan[i].nodes.end());
          }
          auto rb = build_rollback(in, plan, applied);
          problems errs;
          if (rb.empty())
            errs.push_back(where + ": empty rollback");
          for (size_t i = 0; i < rb.size(); ++i) {
            if (rb[i].label.empty())
              errs.push_back(where + ": rollback step without label");
            fleet.apply(rb[i], where + " rollback step " + std::to_string(i));
          }
          errs.insert(errs.end(), fleet.errors.begin(), fleet.errors.end());
          for (auto& node : in.nodes) {
            if (fleet.loaded(node, in.version))
              errs.push_back(where + ": new version still loaded on " + node);
            if (prev.empty()) {
              if (!fleet.nodes.at(node).empty())
                errs.push_back(where + ": something still loaded on " + node);
            } else if (fleet.weight(node, prev) != 100) {
              errs.push_back(where + ": previous not at 100% on " + node);
            }
          }
          // Only touched nodes are acted upon.
          for (auto& step : rb)
            for (auto& node : step.nodes)
              if (touched.count(node) == 0)
                errs.push_back(where + ": rollback touches untouched " + node);
          CAF_CHECK_EQUAL(errs, none);
        }
      }
}

CAF_TEST(a rollback after the retire of the previous version stages it again first) {
  auto in = make_input(strategy_kind::direct, "1.0.0", 3);
  auto plan = build_plan(in);
  CAF_REQUIRE_EQUAL(plan.size(), 4u);
  CAF_REQUIRE(plan.back().kind == step_kind::retire);
  auto before = build_rollback(in, plan, 3);
  CAF_REQUIRE_EQUAL(before.size(), 2u);
  CAF_CHECK(before[0].kind == step_kind::weights);
  CAF_CHECK_EQUAL(before[0].weights.at("1.0.0"), 100u);
  CAF_CHECK_EQUAL(before[0].weights.at("2.0.0"), 0u);
  CAF_CHECK(before[1].kind == step_kind::retire && before[1].version == "2.0.0");
  auto after = build_rollback(in, plan, 4);
  CAF_REQUIRE_EQUAL(after.size(), 3u);
  CAF_CHECK(after[0].kind == step_kind::stage && after[0].version == "1.0.0");
  CAF_CHECK(after[1].kind == step_kind::weights);
  CAF_CHECK(after[2].kind == step_kind::retire && after[2].version == "2.0.0");
  // applied beyond the plan is clamped.
  CAF_CHECK_EQUAL(build_rollback(in, plan, 99).size(), 3u);
}

CAF_TEST(a rolling rollback covers the failing batch and leaves later batches alone) {
  auto in = make_input(strategy_kind::rolling, "1.0.0", 5);
  auto plan = build_plan(in);
  // 3 batches (2, 2, 1) of stage/weights/verify, then retire.
  CAF_REQUIRE_EQUAL(plan.size(), 10u);
  CAF_CHECK_EQUAL(plan[0].nodes, (std::vector<std::string>{"node-1", "node-2"}));
  CAF_CHECK_EQUAL(plan[3].nodes, (std::vector<std::string>{"node-3", "node-4"}));
  CAF_CHECK_EQUAL(plan[6].nodes, (std::vector<std::string>{"node-5"}));
  // The stage of batch 2 failed: batches 1 and 2 are rolled back, batch 3 is not.
  auto rb = build_rollback(in, plan, 4);
  CAF_REQUIRE(!rb.empty());
  for (auto& s : rb)
    CAF_CHECK_EQUAL(s.nodes,
                    (std::vector<std::string>{"node-1", "node-2", "node-3", "node-4"}));
  // A batch size of 0 behaves as 1.
  in.batch_size = 0;
  CAF_CHECK_EQUAL(build_plan(in).size(), 5u * 3u + 1u);
}

CAF_TEST(direct weights carry the previous version at zero only when there is one) {
  auto with = build_plan(make_input(strategy_kind::direct, "1.0.0", 1));
  CAF_REQUIRE_EQUAL(with.size(), 4u);
  CAF_CHECK_EQUAL(with[1].weights, (std::map<std::string, uint32_t>{{"1.0.0", 0}, {"2.0.0", 100}}));
  auto without = build_plan(make_input(strategy_kind::direct, "", 1));
  CAF_REQUIRE_EQUAL(without.size(), 3u);
  CAF_CHECK_EQUAL(without[1].weights, (std::map<std::string, uint32_t>{{"2.0.0", 100}}));
  CAF_CHECK(without[2].kind == step_kind::verify);
}

CAF_TEST(canary and blue green without a previous version degrade to a smoke checked switch) {
  for (auto s : {strategy_kind::canary, strategy_kind::blue_green}) {
    auto plan = build_plan(make_input(s, "", 3));
    CAF_REQUIRE_EQUAL(plan.size(), 4u);
    CAF_CHECK(plan[0].kind == step_kind::stage);
    CAF_CHECK(plan[1].kind == step_kind::smoke);
    CAF_CHECK(plan[2].kind == step_kind::weights);
    CAF_CHECK(plan[3].kind == step_kind::verify);
  }
}

CAF_TEST(custom canary steps are followed and a final 100 is not analyzed) {
  auto in = make_input(strategy_kind::canary, "1.0.0", 2);
  in.canary.steps = {5, 100};
  in.canary.step_seconds = 7;
  auto plan = build_plan(in);
  // stage, weights 5, analyze, weights 100, verify, retire
  CAF_REQUIRE_EQUAL(plan.size(), 6u);
  CAF_CHECK_EQUAL(plan[1].weights.at("2.0.0"), 5u);
  CAF_CHECK_EQUAL(plan[1].weights.at("1.0.0"), 95u);
  CAF_CHECK(plan[2].kind == step_kind::analyze);
  CAF_CHECK_EQUAL(plan[2].hold_seconds, 7u);
  CAF_CHECK_EQUAL(plan[3].weights.at("2.0.0"), 100u);
  CAF_CHECK_EQUAL(plan[3].weights.at("1.0.0"), 0u);
  CAF_CHECK_EQUAL(plan_violations(in, plan).size(), 1u); // only "not 10/30/50/100"
}

CAF_TEST(a redeploy of the live version never retires it) {
  for (auto s : all_strategies) {
    auto in = make_input(s, "2.0.0", 3);
    auto plan = build_plan(in);
    CAF_REQUIRE_EQUAL(plan.size(), 3u);
    CAF_CHECK(plan[0].kind == step_kind::stage);
    CAF_CHECK(plan[1].kind == step_kind::weights);
    CAF_CHECK_EQUAL(plan[1].weights, (std::map<std::string, uint32_t>{{"2.0.0", 100}}));
    CAF_CHECK(plan[2].kind == step_kind::verify);
    for (size_t applied = 1; applied <= plan.size(); ++applied) {
      fleet_model fleet(in.nodes, "2.0.0");
      for (size_t i = 0; i < applied; ++i)
        fleet.apply(plan[i], "plan");
      for (auto& st : build_rollback(in, plan, applied)) {
        CAF_CHECK(st.kind != step_kind::retire);
        fleet.apply(st, "rollback");
      }
      CAF_CHECK_EQUAL(fleet.errors, none);
      for (auto& n : in.nodes)
        CAF_CHECK_EQUAL(fleet.weight(n, "2.0.0"), 100u);
    }
  }
}

CAF_TEST(an environment without worker nodes has an empty plan) {
  CAF_CHECK(build_plan(make_input(strategy_kind::canary, "1.0.0", 0)).empty());
}

// -- validation ------------------------------------------------------------------------

namespace {

json::object good_body() {
  return json::object{{"moduleName", "echo"},
                      {"version", "2.0.0-rc.1"},
                      {"targetEnvironment", "production"},
                      {"requesterEmail", "dev@example.com"}};
}

field_errors errors_of(const json::value& body) {
  field_errors errs;
  parse_request(json::serialize(body), errs);
  return errs;
}

std::string environment_of(const json::value& env, field_errors& errs) {
  auto body = good_body();
  body["targetEnvironment"] = env;
  return parse_request(json::serialize(body), errs).environment;
}

} // namespace

CAF_TEST(a valid request is parsed with a canonical environment and a pre release version) {
  auto body = good_body();
  body["description"] = "first canary";
  body["metadata"] = json::object{{"ticket", "OPS-1"}};
  body["requireApproval"] = true;
  body["strategy"] = "blue-green";
  body["canary"] = json::object{{"steps", json::array{20, 100}}, {"minSamples", 10}};
  field_errors errs;
  auto req = parse_request(json::serialize(body), errs);
  CAF_CHECK(errs.empty());
  CAF_CHECK_EQUAL(req.module_name, "echo");
  CAF_CHECK_EQUAL(req.version, "2.0.0-rc.1");
  CAF_CHECK_EQUAL(req.environment, "Production");
  CAF_CHECK_EQUAL(req.requester_email, "dev@example.com");
  CAF_CHECK_EQUAL(req.description, "first canary");
  CAF_CHECK_EQUAL(req.metadata.at("ticket"), "OPS-1");
  CAF_CHECK(req.require_approval);
  CAF_CHECK(req.has_strategy && req.strategy == strategy_kind::blue_green);
  CAF_CHECK(req.has_canary);
  CAF_CHECK(req.canary_has_steps && req.canary_has_min_samples);
  CAF_CHECK(!req.canary_has_step_seconds && !req.canary_has_error && !req.canary_has_latency);
  CAF_CHECK_EQUAL(req.canary.steps, (std::vector<uint32_t>{20, 100}));
  CAF_CHECK_EQUAL(req.canary.min_samples, 10u);
  // Optional fields absent: defaults.
  field_errors errs2;
  auto plain = parse_request(json::serialize(good_body()), errs2);
  CAF_CHECK(errs2.empty());
  CAF_CHECK(!plain.has_strategy && !plain.has_canary && !plain.require_approval);
}

CAF_TEST(the environment is a name or a json number but never a numeric string) {
  field_errors errs;
  CAF_CHECK_EQUAL(environment_of("STAGING", errs), "Staging");
  CAF_CHECK_EQUAL(environment_of("qa", errs), "QA");
  CAF_CHECK_EQUAL(environment_of(0, errs), "Development");
  CAF_CHECK_EQUAL(environment_of(2, errs), "Staging");
  CAF_CHECK_EQUAL(environment_of(3, errs), "Production");
  CAF_CHECK(errs.empty());
  for (auto bad : {json::value("7"), json::value("2"), json::value(7), json::value(-1),
                   json::value(2.5), json::value(true), json::value("Prod"),
                   json::value(json::array{})}) {
    field_errors e;
    environment_of(bad, e);
    CAF_CHECK_EQUAL(e.count("targetEnvironment"), 1u);
    CAF_CHECK_EQUAL(e.size(), 1u);
  }
}

CAF_TEST(the strategy is a name or a json number but never a numeric string) {
  for (auto [value, expected] :
       std::vector<std::pair<json::value, strategy_kind>>{{"Canary", strategy_kind::canary},
                                                          {"bluegreen", strategy_kind::blue_green},
                                                          {1, strategy_kind::rolling},
                                                          {0, strategy_kind::direct}}) {
    auto body = good_body();
    body["strategy"] = value;
    field_errors errs;
    auto req = parse_request(json::serialize(body), errs);
    CAF_CHECK(errs.empty());
    CAF_CHECK(req.has_strategy && req.strategy == expected);
  }
  for (auto bad : {json::value("3"), json::value(4), json::value("fast"), json::value(false)}) {
    auto body = good_body();
    body["strategy"] = bad;
    CAF_CHECK_EQUAL(errors_of(body).count("strategy"), 1u);
  }
}

CAF_TEST(every violation of a request is reported at once) {
  json::object metadata;
  for (int i = 0; i < 51; ++i)
    metadata["k" + std::to_string(i)] = "v";
  json::object body{{"moduleName", "Echo_Module"},
                    {"version", "1.0"},
                    {"targetEnvironment", "7"},
                    {"requesterEmail", "not-an-email"},
                    {"description", std::string(1001, 'd')},
                    {"metadata", metadata},
                    {"requireApproval", "yes"},
                    {"strategy", "sideways"},
                    {"canary", json::object{{"steps", json::array{10, "x"}},
                                            {"stepDurationSeconds", -1},
                                            {"maxErrorRateIncreasePercent", 1.5},
                                            {"maxLatencyIncreasePercent", "10"},
                                            {"minSamples", json::array{}}}}};
  auto errs = errors_of(body);
  for (auto field :
       {"moduleName", "version", "targetEnvironment", "requesterEmail", "description",
        "metadata", "requireApproval", "strategy", "canary.steps", "canary.stepDurationSeconds",
        "canary.maxErrorRateIncreasePercent", "canary.maxLatencyIncreasePercent",
        "canary.minSamples"}) {
    CAF_MESSAGE("field " << field);
    CAF_CHECK_EQUAL(errs.count(field), 1u);
  }
  CAF_CHECK_EQUAL(errs.size(), 13u);
}

CAF_TEST(missing fields and wrong json types are field errors) {
  auto errs = errors_of(json::object{});
  for (auto field : {"moduleName", "version", "targetEnvironment", "requesterEmail"})
    CAF_CHECK_EQUAL(errs.count(field), 1u);
  CAF_CHECK_EQUAL(errs.size(), 4u);
  json::object wrong{{"moduleName", 5},
                     {"version", json::array{}},
                     {"targetEnvironment", nullptr},
                     {"requesterEmail", false},
                     {"description", 3},
                     {"metadata", json::array{}},
                     {"canary", "fast"}};
  errs = errors_of(wrong);
  for (auto field : {"moduleName", "version", "targetEnvironment", "requesterEmail",
                     "description", "metadata", "canary"})
    CAF_CHECK_EQUAL(errs.count(field), 1u);
  CAF_CHECK_EQUAL(errs.size(), 7u);
  // Null optional fields count as absent.
  auto body = good_body();
  body["description"] = nullptr;
  body["strategy"] = nullptr;
  body["canary"] = nullptr;
  CAF_CHECK(errors_of(body).empty());
}

CAF_TEST(a body that is not a json object is rejected as a whole) {
  for (auto text : {"", "not json", "[1,2]", "\"echo\"", "42", "{\"moduleName\":"}) {
    field_errors errs;
    parse_request(text, errs);
    CAF_CHECK_EQUAL(errs.count("body"), 1u);
    CAF_CHECK_EQUAL(errs.size(), 1u);
  }
}

CAF_TEST(module names and versions follow the contract patterns) {
  auto check_name = [](const std::string& name, bool ok) {
    auto body = good_body();
    body["moduleName"] = name;
    CAF_CHECK_EQUAL(errors_of(body).count("moduleName"), ok ? 0u : 1u);
  };
  check_name("abc", true);
  check_name("a-1", true);
  check_name(std::string(64, 'a'), true);
  check_name("ab", false);
  check_name(std::string(65, 'a'), false);
  check_name("-abc", false);
  check_name("abc-", false);
  check_name("Abc", false);
  check_name("a_c", false);
  auto check_version = [](const std::string& v, bool ok) {
    auto body = good_body();
    body["version"] = v;
    CAF_CHECK_EQUAL(errors_of(body).count("version"), ok ? 0u : 1u);
  };
  check_version("1.0.0", true);
  check_version("2.0.0-rc.1", true);
  check_version("10.20.30-alpha", true);
  check_version("1.0", false);
  check_version("01.0.0", false);
  check_version("1.0.0-", false);
  check_version("v1.0.0", false);
  check_version("", false);
}

CAF_TEST(description and metadata limits are inclusive) {
  auto check = [](json::object patch, const char* field, bool ok) {
    auto body = good_body();
    for (auto& kv : patch)
      body[kv.key()] = kv.value();
    CAF_CHECK_EQUAL(errors_of(body).count(field), ok ? 0u : 1u);
  };
  check({{"description", std::string(1000, 'x')}}, "description", true);
  check({{"description", std::string(1001, 'x')}}, "description", false);
  json::object fifty;
  for (int i = 0; i < 50; ++i)
    fifty["k" + std::to_string(i)] = "v";
  check({{"metadata", fifty}}, "metadata", true);
  check({{"metadata", json::object{{std::string(100, 'k'), std::string(500, 'v')}}}},
        "metadata", true);
  check({{"metadata", json::object{{std::string(101, 'k'), "v"}}}}, "metadata", false);
  check({{"metadata", json::object{{"", "v"}}}}, "metadata", false);
  check({{"metadata", json::object{{"k", std::string(501, 'v')}}}}, "metadata", false);
  check({{"metadata", json::object{{"k", 1}}}}, "metadata", false);
  check({{"requesterEmail", "a@b"}}, "requesterEmail", false);
}

CAF_TEST(canary overrides are merged into the defaults within bounds) {
  canary_settings defaults;
  defaults.step_seconds = 45;
  defaults.inconclusive = "extend";
  deployment_request req;
  field_errors errs;
  auto same = effective_canary(defaults, req, errs);
  CAF_CHECK(errs.empty());
  CAF_CHECK_EQUAL(same.step_seconds, 45u);
  CAF_CHECK_EQUAL(same.steps, defaults.steps);
  CAF_CHECK_EQUAL(same.inconclusive, "extend");
  req.has_canary = true;
  req.canary_has_steps = req.canary_has_step_seconds = req.canary_has_error = true;
  req.canary_has_latency = req.canary_has_min_samples = true;
  req.canary.steps = {1, 100};
  req.canary.step_seconds = 3600;
  req.canary.max_error_rate_increase_percent = 1000;
  req.canary.max_latency_increase_percent = 1;
  req.canary.min_samples = 100000;
  auto merged = effective_canary(defaults, req, errs);
  CAF_CHECK(errs.empty());
  CAF_CHECK_EQUAL(merged.steps, (std::vector<uint32_t>{1, 100}));
  CAF_CHECK_EQUAL(merged.step_seconds, 3600u);
  CAF_CHECK_EQUAL(merged.max_error_rate_increase_percent, 1000u);
  CAF_CHECK_EQUAL(merged.max_latency_increase_percent, 1u);
  CAF_CHECK_EQUAL(merged.min_samples, 100000u);
  CAF_CHECK_EQUAL(merged.inconclusive, "extend");
  // Out of bounds: every field reported, defaults kept.
  req.canary.step_seconds = 0;
  req.canary.max_error_rate_increase_percent = 1001;
  req.canary.max_latency_increase_percent = 0;
  req.canary.min_samples = 100001;
  for (auto steps : std::vector<std::vector<uint32_t>>{
         {}, {10, 50}, {50, 30, 100}, {0, 100}, {10, 10, 100}, {10, 100, 101}, {100, 100}}) {
    req.canary.steps = steps;
    field_errors e;
    auto bad = effective_canary(defaults, req, e);
    CAF_CHECK_EQUAL(e.count("canary.steps"), 1u);
    CAF_CHECK_EQUAL(e.count("canary.stepDurationSeconds"), 1u);
    CAF_CHECK_EQUAL(e.count("canary.maxErrorRateIncreasePercent"), 1u);
    CAF_CHECK_EQUAL(e.count("canary.maxLatencyIncreasePercent"), 1u);
    CAF_CHECK_EQUAL(e.count("canary.minSamples"), 1u);
    CAF_CHECK_EQUAL(bad.steps, defaults.steps);
    CAF_CHECK_EQUAL(bad.step_seconds, 45u);
  }
  req.canary.step_seconds = 3601;
  field_errors e;
  effective_canary(defaults, req, e);
  CAF_CHECK_EQUAL(e.count("canary.stepDurationSeconds"), 1u);
}

// -- canary analysis ---------------------------------------------------------------------

namespace {

canary_settings thresholds() {
  canary_settings s;
  s.min_samples = 50;
  s.max_error_rate_increase_percent = 50;
  s.max_latency_increase_percent = 100;
  return s;
}

version_sample sample(uint64_t n, uint64_t errors, double p95) {
  version_sample x;
  x.invocations = n;
  x.errors = errors;
  x.p95_ms = p95;
  return x;
}

} // namespace

CAF_TEST(analysis with no traffic at all waits for the window then fails as inconclusive) {
  auto s = thresholds();
  CAF_CHECK(analyze({}, {}, s, 0).result == verdict::wait);
  auto a = analyze({}, {}, s, 1);
  CAF_CHECK(a.result == verdict::fail);
  CAF_CHECK(a.reason.find("inconclusive") != std::string::npos);
  s.min_samples = 0; // a misconfigured zero never divides by zero
  CAF_CHECK(analyze({}, {}, s, 0).result == verdict::wait);
  CAF_CHECK(analyze({}, {}, s, 1).result == verdict::fail);
}

CAF_TEST(analysis against a baseline without traffic uses absolute tolerances only) {
  auto s = thresholds();
  version_sample zero;
  // Latency is not compared: nothing to compare against.
  CAF_CHECK(analyze(zero, sample(100, 0, 5000), s, 1).result == verdict::pass);
  // 1 % error rate is within the 1 percentage point tolerance; 2 % is not.
  CAF_CHECK(analyze(zero, sample(100, 1, 10), s, 1).result == verdict::pass);
  auto a = analyze(zero, sample(100, 2, 10), s, 1);
  CAF_CHECK(a.result == verdict::fail);
  CAF_CHECK(a.reason.find("error rate") != std::string::npos);
  // 0 % vs 0.5 % is no failure.
  CAF_CHECK(analyze(sample(1000, 0, 10), sample(1000, 5, 10), s, 1).result == verdict::pass);
}

CAF_TEST(analysis below the minimum sample waits then fails as inconclusive) {
  auto s = thresholds();
  auto base = sample(1000, 0, 10);
  CAF_CHECK(analyze(base, sample(49, 0, 10), s, 0).result == verdict::wait);
  auto a = analyze(base, sample(49, 0, 10), s, 1);
  CAF_CHECK(a.result == verdict::fail);
  CAF_CHECK(a.reason.find("inconclusive") != std::string::npos);
  // Exactly min_samples is enough.
  CAF_CHECK(analyze(base, sample(50, 0, 10), s, 1).result == verdict::pass);
  // Even a terrible canary waits while the sample is too small.
  CAF_CHECK(analyze(base, sample(49, 49, 10), s, 0).result == verdict::wait);
}

CAF_TEST(analysis with inconclusive extend waits up to three more windows) {
  auto s = thresholds();
  s.inconclusive = "extend";
  auto base = sample(1000, 0, 10);
  for (uint32_t w = 0; w <= 3; ++w)
    CAF_CHECK(analyze(base, sample(10, 0, 10), s, w).result == verdict::wait);
  CAF_CHECK(analyze(base, sample(10, 0, 10), s, 4).result == verdict::fail);
  CAF_CHECK(analyze(base, sample(10, 0, 10), s, 9).result == verdict::fail);
  // Enough samples during an extension: pass.
  CAF_CHECK(analyze(base, sample(60, 0, 10), s, 2).result == verdict::pass);
}

CAF_TEST(analysis thresholds fail just above and pass at the limit) {
  auto s = thresholds();
  // Baseline 2 % errors: limit 2 x 1.5 + 1 = 4 %.
  auto base = sample(1000, 20, 100);
  CAF_CHECK(analyze(base, sample(1000, 40, 100), s, 1).result == verdict::pass);
  CAF_CHECK(analyze(base, sample(1000, 41, 100), s, 1).result == verdict::fail);
  // Baseline p95 100 ms: limit 100 x 2 + 1 = 201 ms.
  CAF_CHECK(analyze(base, sample(1000, 0, 201.0), s, 1).result == verdict::pass);
  auto slow = analyze(base, sample(1000, 0, 201.5), s, 1);
  CAF_CHECK(slow.result == verdict::fail);
  CAF_CHECK(slow.reason.find("p95") != std::string::npos);
  // Baseline below min samples: latency is not compared.
  CAF_CHECK(analyze(sample(49, 0, 100), sample(1000, 0, 900), s, 1).result == verdict::pass);
}

CAF_TEST(analysis waits for the window but fails early on a breach) {
  auto s = thresholds();
  auto base = sample(1000, 0, 10);
  CAF_CHECK(analyze(base, sample(500, 0, 10), s, 0).result == verdict::wait);
  CAF_CHECK(analyze(base, sample(500, 0, 10), s, 1).result == verdict::pass);
  CAF_CHECK(analyze(base, sample(500, 100, 10), s, 0).result == verdict::fail);
  CAF_CHECK(analyze(base, sample(500, 0, 100), s, 0).result == verdict::fail);
}

// -- the record -----------------------------------------------------------------------------

CAF_TEST(initial stages name the environment and put approval first when needed) {
  auto st = initial_stages("Production", true, strategy_kind::canary);
  CAF_REQUIRE_EQUAL(st.size(), 4u);
  CAF_CHECK_EQUAL(st[0].name, "Approval");
  CAF_CHECK_EQUAL(st[1].name, "Security Scan");
  CAF_CHECK_EQUAL(st[2].name, "Deploy to Production");
  CAF_CHECK_EQUAL(st[2].strategy, "Canary");
  CAF_CHECK_EQUAL(st[3].name, "Validation");
  for (auto& s : st)
    CAF_CHECK_EQUAL(s.status, "Pending");
  auto plain = initial_stages("QA", false, strategy_kind::rolling);
  CAF_REQUIRE_EQUAL(plain.size(), 3u);
  CAF_CHECK_EQUAL(plain[0].name, "Security Scan");
  CAF_CHECK_EQUAL(plain[1].name, "Deploy to QA");
  CAF_CHECK_EQUAL(plain[1].strategy, "Rolling");
  CAF_CHECK(plain[0].strategy.empty());
}

CAF_TEST(terminal statuses are exactly the four final ones) {
  for (auto s : {"Succeeded", "Failed", "RolledBack", "Cancelled"})
    CAF_CHECK(is_terminal(s));
  for (auto s : {"Pending", "PendingApproval", "Running", "RollingBack", "", "succeeded"})
    CAF_CHECK(!is_terminal(s));
}

namespace {

canary_settings odd_canary() {
  canary_settings c;
  c.steps = {5, 25, 100};
  c.step_seconds = 11;
  c.max_error_rate_increase_percent = 12;
  c.max_latency_increase_percent = 13;
  c.min_samples = 14;
  c.inconclusive = "extend";
  return c;
}

deployment full_record() {
  deployment d;
  d.execution_id = "d-123";
  d.module_name = "echo";
  d.version = "2.0.0-rc.1";
  d.environment = "Production";
  d.strategy = strategy_kind::canary;
  d.status = "RollingBack";
  d.start = 1'700'000'000'123;
  d.end = 1'700'000'090'623;
  d.requester_email = "dev@example.com";
  d.requested_by = "alice";
  d.requested_by_id = "u-1";
  d.tenant_id = "t-9";
  d.description = "a \"quoted\" description\nwith a newline";
  d.metadata = {{"ticket", "OPS-1"}, {"team", "payments"}};
  d.trace_id = "trace-abc";
  d.idempotency_key = "idem-1";
  d.needs_approval = true;
  d.canary = odd_canary();
  d.input = make_input(strategy_kind::canary, "1.0.0", 3);
  d.input.batch_size = 3;
  d.input.keep_seconds = 77;
  d.input.canary = odd_canary();
  d.plan = build_plan(d.input);
  d.cursor = 3;
  d.step_started = true;
  d.step_started_at = 1'700'000'050'000;
  d.rollback = build_rollback(d.input, d.plan, 4);
  d.rollback_cursor = 1;
  d.rollback_started = true;
  d.rollback_reason = "error rate 9% exceeds 1%";
  d.rollback_outcome = "Failed";
  d.rollback_id = "rb-7";
  d.stages = initial_stages("Production", true, strategy_kind::canary);
  d.stages[0].status = "Succeeded";
  d.stages[0].start = 1'700'000'000'200;
  d.stages[0].end = 1'700'000'001'200;
  d.stages[0].message = "approved by bob";
  d.stages[0].progress = 100;
  d.stages[2].status = "Failed";
  d.stages[2].nodes_deployed = 2;
  d.stages[2].nodes_failed = 1;
  d.stages[2].progress = 40;
  d.message = "canary failed";
  d.quota_reserved = true;
  return d;
}

problems differences(const step& a, const step& b, const std::string& where) {
  problems out;
  if (a.kind != b.kind)
    out.push_back(where + ".kind");
  if (a.nodes != b.nodes)
    out.push_back(where + ".nodes");
  if (a.version != b.version)
    out.push_back(where + ".version");
  if (a.baseline != b.baseline)
    out.push_back(where + ".baseline");
  if (a.weights != b.weights)
    out.push_back(where + ".weights");
  if (a.hold_seconds != b.hold_seconds)
    out.push_back(where + ".hold_seconds");
  if (a.percent != b.percent)
    out.push_back(where + ".percent");
  if (a.label != b.label)
    out.push_back(where + ".label");
  return out;
}

problems differences(const std::vector<step>& a, const std::vector<step>& b,
                     const std::string& where) {
  if (a.size() != b.size())
    return {where + ".size"};
  problems out;
  for (size_t i = 0; i < a.size(); ++i) {
    auto d = differences(a[i], b[i], where + "[" + std::to_string(i) + "]");
    out.insert(out.end(), d.begin(), d.end());
  }
  return out;
}

problems differences(const canary_settings& a, const canary_settings& b,
                     const std::string& where) {
  problems out;
  if (a.steps != b.steps)
    out.push_back(where + ".steps");
  if (a.step_seconds != b.step_seconds)
    out.push_back(where + ".step_seconds");
  if (a.max_error_rate_increase_percent != b.max_error_rate_increase_percent)
    out.push_back(where + ".max_error_rate_increase_percent");
  if (a.max_latency_increase_percent != b.max_latency_increase_percent)
    out.push_back(where + ".max_latency_increase_percent");
  if (a.min_samples != b.min_samples)
    out.push_back(where + ".min_samples");
  if (a.inconclusive != b.inconclusive)
    out.push_back(where + ".inconclusive");
  return out;
}

problems differences(const deployment& a, const deployment& b) {
  problems out;
  auto field = [&](bool same, const char* name) {
    if (!same)
      out.push_back(name);
  };
  field(a.execution_id == b.execution_id, "execution_id");
  field(a.module_name == b.module_name, "module_name");
  field(a.version == b.version, "version");
  field(a.environment == b.environment, "environment");
  field(a.strategy == b.strategy, "strategy");
  field(a.status == b.status, "status");
  field(a.start == b.start, "start");
  field(a.end == b.end, "end");
  field(a.requester_email == b.requester_email, "requester_email");
  field(a.requested_by == b.requested_by, "requested_by");
  field(a.requested_by_id == b.requested_by_id, "requested_by_id");
  field(a.tenant_id == b.tenant_id, "tenant_id");
  field(a.description == b.description, "description");
  field(a.metadata == b.metadata, "metadata");
  field(a.trace_id == b.trace_id, "trace_id");
  field(a.idempotency_key == b.idempotency_key, "idempotency_key");
  field(a.needs_approval == b.needs_approval, "needs_approval");
  auto c = differences(a.canary, b.canary, "canary");
  out.insert(out.end(), c.begin(), c.end());
  field(a.input.strategy == b.input.strategy, "input.strategy");
  field(a.input.module == b.input.module, "input.module");
  field(a.input.version == b.input.version, "input.version");
  field(a.input.previous == b.input.previous, "input.previous");
  field(a.input.nodes == b.input.nodes, "input.nodes");
  field(a.input.batch_size == b.input.batch_size, "input.batch_size");
  field(a.input.keep_seconds == b.input.keep_seconds, "input.keep_seconds");
  auto ic = differences(a.input.canary, b.input.canary, "input.canary");
  out.insert(out.end(), ic.begin(), ic.end());
  auto p = differences(a.plan, b.plan, "plan");
  out.insert(out.end(), p.begin(), p.end());
  field(a.cursor == b.cursor, "cursor");
  field(a.step_started == b.step_started, "step_started");
  field(a.step_started_at == b.step_started_at, "step_started_at");
  auto r = differences(a.rollback, b.rollback, "rollback");
  out.insert(out.end(), r.begin(), r.end());
  field(a.rollback_cursor == b.rollback_cursor, "rollback_cursor");
  field(a.rollback_started == b.rollback_started, "rollback_started");
  field(a.rollback_reason == b.rollback_reason, "rollback_reason");
  field(a.rollback_outcome == b.rollback_outcome, "rollback_outcome");
  field(a.rollback_id == b.rollback_id, "rollback_id");
  if (a.stages.size() != b.stages.size()) {
    out.push_back("stages.size");
  } else {
    for (size_t i = 0; i < a.stages.size(); ++i) {
      auto& x = a.stages[i];
      auto& y = b.stages[i];
      if (x.name != y.name || x.status != y.status || x.start != y.start || x.end != y.end
          || x.strategy != y.strategy || x.nodes_deployed != y.nodes_deployed
          || x.nodes_failed != y.nodes_failed || x.message != y.message
          || x.progress != y.progress)
        out.push_back("stages[" + std::to_string(i) + "]");
    }
  }
  field(a.message == b.message, "message");
  field(a.quota_reserved == b.quota_reserved, "quota_reserved");
  return out;
}

} // namespace

CAF_TEST(a fully populated record round trips through its json form) {
  auto d = full_record();
  CAF_REQUIRE(!d.plan.empty());
  CAF_REQUIRE(!d.rollback.empty());
  // The fixture differs from a default record in all 49 compared fields.
  deployment empty;
  CAF_CHECK_EQUAL(differences(d, empty).size(), 49u); // every compared field
  deployment back;
  CAF_REQUIRE(from_json(to_json(d), back));
  CAF_CHECK_EQUAL(differences(d, back), none);
  CAF_CHECK_EQUAL(to_json(back), to_json(d));
  // A default record round trips too (no field is required beyond the id).
  deployment minimal;
  minimal.execution_id = "d-1";
  deployment back2;
  CAF_REQUIRE(from_json(to_json(minimal), back2));
  CAF_CHECK_EQUAL(differences(minimal, back2), none);
}

CAF_TEST(a malformed record is refused) {
  deployment out;
  out.execution_id = "untouched";
  CAF_CHECK(!from_json("", out));
  CAF_CHECK(!from_json("[]", out));
  CAF_CHECK(!from_json("{}", out)); // no execution id
  CAF_CHECK(!from_json(R"({"executionId":"d","cursor":"x"})", out));
  CAF_CHECK(!from_json(R"({"executionId":"d","strategy":"Sideways"})", out));
  CAF_CHECK(!from_json(R"({"executionId":"d","plan":[{"kind":"teleport"}]})", out));
  CAF_CHECK(!from_json(R"({"executionId":"d","plan":[{"kind":"weights","weights":{"a":-1}}]})",
                       out));
  CAF_CHECK(!from_json(R"({"executionId":"d","metadata":{"k":1}})", out));
  CAF_CHECK(!from_json(R"({"executionId":"d","cursor":4294967296})", out));
  CAF_CHECK_EQUAL(out.execution_id, "untouched");
}

CAF_TEST(the view has the contract fields with nulls until the deployment ends) {
  auto d = full_record();
  d.end = 0;
  auto v = json::parse(to_view_json(d)).as_object();
  for (auto key : {"executionId", "moduleName", "version", "targetEnvironment", "strategy",
                   "status", "startTime", "endTime", "duration", "requesterEmail", "stages",
                   "traceId"})
    CAF_CHECK(v.contains(key));
  CAF_CHECK_EQUAL(v["executionId"].as_string(), "d-123");
  CAF_CHECK_EQUAL(v["targetEnvironment"].as_string(), "Production");
  CAF_CHECK_EQUAL(v["strategy"].as_string(), "Canary");
  CAF_CHECK_EQUAL(v["status"].as_string(), "RollingBack");
  CAF_CHECK_EQUAL(v["startTime"].as_string(), "2023-11-14T22:13:20.123Z");
  CAF_CHECK(v["endTime"].is_null());
  CAF_CHECK(v["duration"].is_null());
  CAF_CHECK_EQUAL(v["traceId"].as_string(), "trace-abc");
  CAF_CHECK_EQUAL(v["rollbackId"].as_string(), "rb-7");
  CAF_CHECK_EQUAL(v["metadata"].as_object().size(), 2u);
  auto& stages = v["stages"].as_array();
  CAF_REQUIRE_EQUAL(stages.size(), 4u);
  auto& approval = stages[0].as_object();
  for (auto key : {"name", "status", "startTime", "endTime", "duration", "strategy",
                   "nodesDeployed", "nodesFailed", "message", "progress"})
    CAF_CHECK(approval.contains(key));
  CAF_CHECK_EQUAL(approval.at("duration").as_string(), "PT1S");
  CAF_CHECK_EQUAL(approval.at("message").as_string(), "approved by bob");
  CAF_CHECK_EQUAL(approval.at("progress").as_int64(), 100);
  auto& deploy = stages[2].as_object();
  CAF_CHECK_EQUAL(deploy.at("name").as_string(), "Deploy to Production");
  CAF_CHECK_EQUAL(deploy.at("strategy").as_string(), "Canary");
  CAF_CHECK_EQUAL(deploy.at("nodesDeployed").as_int64(), 2);
  CAF_CHECK_EQUAL(deploy.at("nodesFailed").as_int64(), 1);
  CAF_CHECK(deploy.at("startTime").is_null());
  CAF_CHECK(deploy.at("duration").is_null());
  // Once ended: endTime and duration.
  d.end = d.start + 90'500;
  auto ended = json::parse(to_view_json(d)).as_object();
  CAF_CHECK_EQUAL(ended["endTime"].as_string(), "2023-11-14T22:14:50.623Z");
  CAF_CHECK_EQUAL(ended["duration"].as_string(), "PT1M30.5S");
}

CAF_TEST(a list item has exactly the contract fields) {
  auto d = full_record();
  auto v = json::parse(to_list_json(d)).as_object();
  CAF_CHECK_EQUAL(v.size(), 7u);
  for (auto key : {"executionId", "moduleName", "version", "targetEnvironment", "status",
                   "startTime", "duration"})
    CAF_CHECK(v.contains(key));
  CAF_CHECK_EQUAL(v["duration"].as_string(), "PT1M30.5S");
  CAF_CHECK_EQUAL(v["version"].as_string(), "2.0.0-rc.1");
}

CAF_TEST(durations are written as iso 8601 hours minutes and fractional seconds) {
  CAF_CHECK_EQUAL(iso_duration(0), "PT0S");
  CAF_CHECK_EQUAL(iso_duration(-5), "PT0S");
  CAF_CHECK_EQUAL(iso_duration(1), "PT0.001S");
  CAF_CHECK_EQUAL(iso_duration(120), "PT0.12S");
  CAF_CHECK_EQUAL(iso_duration(500), "PT0.5S");
  CAF_CHECK_EQUAL(iso_duration(1000), "PT1S");
  CAF_CHECK_EQUAL(iso_duration(59'999), "PT59.999S");
  CAF_CHECK_EQUAL(iso_duration(60'000), "PT1M0S");
  CAF_CHECK_EQUAL(iso_duration(90'500), "PT1M30.5S");
  CAF_CHECK_EQUAL(iso_duration(3'600'000), "PT1H0M0S");
  CAF_CHECK_EQUAL(iso_duration(7'205'000), "PT2H0M5S");
  CAF_CHECK_EQUAL(iso_duration(90LL * 3'600'000 + 61'001), "PT90H1M1.001S");
}
