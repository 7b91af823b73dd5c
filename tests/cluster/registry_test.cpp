// The local registry on CAF's deterministic coordinator.
#define CAF_SUITE registry
#include "caf/test/dsl.hpp"

#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/types.hpp"

#include "test_config.hpp"

using namespace hotswap;

namespace {

using test_config = test::cluster_test_config;

struct fixture : test_coordinator_fixture<test_config> {
  registry_actor reg;

  fixture() {
    node_info self_node;
    self_node.id = "node-a";
    self_node.roles = {"api", "control"};
    reg = spawn_local_registry(sys, self_node);
    sched.run();
  }

  ~fixture() {
    caf::anon_send_exit(reg, caf::exit_reason::user_shutdown);
    sched.run();
  }

  template <class T, class... Ts>
  T ask(Ts&&... xs) {
    T result{};
    auto rh = self->request(reg, caf::infinite, std::forward<Ts>(xs)...);
    sched.run();
    rh.receive([&](T& x) { result = std::move(x); },
               [&](caf::error& e) { CAF_FAIL("registry error: " << sys.render(e)); });
    return result;
  }

  claim_outcome claim(const std::string& id, const std::string& node) {
    return ask<claim_outcome>(claim_atom::value, std::string{"tenant"}, id, node);
  }

  std::string owner(const std::string& id) {
    return ask<std::string>(owner_atom::value, std::string{"tenant"}, id);
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(registry_tests, fixture)

CAF_TEST(an unowned entity is granted to the claiming node and claims repeat idempotently) {
  auto out = claim("t-1", "node-a");
  CAF_CHECK(out.granted);
  CAF_CHECK_EQUAL(out.owner, "node-a");
  CAF_CHECK_EQUAL(owner("t-1"), "node-a");
  CAF_CHECK(claim("t-1", "node-a").granted);
}

CAF_TEST(release frees an entity only for its owner) {
  CAF_CHECK(claim("t-1", "node-a").granted);
  ask<ok_atom>(release_atom::value, std::string{"tenant"}, std::string{"t-1"},
               std::string{"node-b"});
  CAF_CHECK_EQUAL(owner("t-1"), "node-a");
  ask<ok_atom>(release_atom::value, std::string{"tenant"}, std::string{"t-1"},
               std::string{"node-a"});
  CAF_CHECK_EQUAL(owner("t-1"), "");
}

CAF_TEST(the only live node is this node and renewal updates its identity) {
  auto nodes = ask<std::vector<node_info>>(nodes_atom::value);
  CAF_REQUIRE_EQUAL(nodes.size(), 1u);
  CAF_CHECK_EQUAL(nodes[0].id, "node-a");
  CAF_CHECK_NOT_EQUAL(nodes[0].last_heartbeat, 0);
  node_info renewed = nodes[0];
  renewed.http_endpoint = "127.0.0.1:9999";
  ask<ok_atom>(renew_atom::value, renewed);
  nodes = ask<std::vector<node_info>>(nodes_atom::value);
  CAF_CHECK_EQUAL(nodes[0].http_endpoint, "127.0.0.1:9999");
}

CAF_TEST(an entity held by a node that is not live can be taken over) {
  // A local registry knows one live node: an owner recorded under another
  // name (e.g. a previous node id) is dead.
  CAF_CHECK(claim("t-1", "old-node").granted);
  auto out = claim("t-1", "node-a");
  CAF_CHECK(out.granted);
  CAF_CHECK_EQUAL(owner("t-1"), "node-a");
  auto refused = claim("t-1", "node-b");
  CAF_CHECK(!refused.granted);
  CAF_CHECK_EQUAL(refused.owner, "node-a");
}

CAF_TEST_FIXTURE_SCOPE_END()
