#define CAF_SUITE tenant_state
#include "caf/test/dsl.hpp"

#include "hotswap/actors/tenant_state.hpp"

using namespace hotswap;

namespace {

tenant_spec good() {
  tenant_spec s;
  s.name = "Acme";
  s.subdomain = "Acme-1";
  s.contact_email = "ops@acme.io";
  s.tier = 0;
  return s;
}

} // namespace

CAF_TEST(a valid spec has no errors and every violation is reported at once) {
  CAF_CHECK(validate(good()).empty());
  tenant_spec bad;
  bad.subdomain = "-bad-";
  bad.contact_email = "nope";
  bad.tier = 9;
  for (int i = 0; i < 51; ++i)
    bad.metadata["k" + std::to_string(i)] = "v";
  auto errs = validate(bad);
  for (auto field : {"name", "subdomain", "contactEmail", "tier", "metadata"})
    CAF_CHECK(errs.count(field) == 1);
}

CAF_TEST(the custom tier needs a positive quota) {
  auto s = good();
  s.tier = 4;
  CAF_CHECK(validate(s).count("resourceQuota") == 1);
  s.has_quota = true;
  s.quota = {5, 5, 5, 5};
  CAF_CHECK(validate(s).empty());
  auto t = make_tenant("t", s, 1000);
  CAF_CHECK_EQUAL(t.quota.max_concurrent_deployments, 5);
}

CAF_TEST(tiers map to their quotas and parse by name or case) {
  CAF_CHECK_EQUAL(parse_tier("professional"), 2);
  CAF_CHECK_EQUAL(parse_tier("Gold"), -1);
  CAF_CHECK_EQUAL(quota_for(0).max_concurrent_deployments, 1);
  CAF_CHECK_EQUAL(quota_for(1).max_concurrent_deployments, 3);
  CAF_CHECK_EQUAL(quota_for(2).max_concurrent_deployments, 10);
  CAF_CHECK_EQUAL(quota_for(3).max_concurrent_deployments, 50);
}

CAF_TEST(lifecycle transitions guard deleted tenants and repeat idempotently) {
  auto t = make_tenant("t", good(), 1000);
  CAF_CHECK_EQUAL(t.subdomain, "acme-1");
  auto s = apply(t, tenant_op::suspend, 2000);
  CAF_CHECK_EQUAL(s.kind, transition::changed);
  CAF_CHECK_EQUAL(s.next.status, "Suspended");
  CAF_CHECK_EQUAL(s.next.suspended_at, 2000);
  CAF_CHECK_EQUAL(apply(s.next, tenant_op::suspend, 3000).kind, transition::unchanged);
  auto d = apply(s.next, tenant_op::remove, 4000);
  CAF_CHECK_EQUAL(d.next.status, "Deleted");
  CAF_CHECK_EQUAL(apply(d.next, tenant_op::activate, 5000).kind, transition::refused);
  CAF_CHECK_EQUAL(apply(d.next, tenant_op::suspend, 5000).kind, transition::refused);
  CAF_CHECK_EQUAL(apply(d.next, tenant_op::remove, 5000).kind, transition::unchanged);
  tier_change c;
  c.tier = 3;
  CAF_CHECK_EQUAL(apply(d.next, c, 5000).kind, transition::refused);
  tenant_patch p;
  p.has_name = true;
  p.name = "x";
  CAF_CHECK_EQUAL(apply(d.next, p, 5000).kind, transition::refused);
}

CAF_TEST(the snapshot body round trips through JSON) {
  auto s = good();
  s.metadata["region"] = "eu";
  s.custom_domain = "acme.example.com";
  auto t = make_tenant("t-9", s, 1700000000123);
  t.suspended_at = 1700000001000;
  tenant back;
  CAF_REQUIRE(from_json(to_json(t), back));
  CAF_CHECK_EQUAL(back.id, t.id);
  CAF_CHECK_EQUAL(back.name, t.name);
  CAF_CHECK_EQUAL(back.subdomain, t.subdomain);
  CAF_CHECK_EQUAL(back.custom_domain, t.custom_domain);
  CAF_CHECK_EQUAL(back.tier, t.tier);
  CAF_CHECK(back.quota == t.quota);
  CAF_CHECK(back.metadata == t.metadata);
  CAF_CHECK_EQUAL(back.created_at, t.created_at);
  CAF_CHECK_EQUAL(back.suspended_at, t.suspended_at);
  CAF_CHECK_EQUAL(back.deleted_at, 0);
}
