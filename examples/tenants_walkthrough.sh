#!/usr/bin/env bash
# A tour of the node foundation against a running development node
# (scripts/dev.sh): log in, create a tenant, change it, read the audit log.
# Usage: examples/tenants_walkthrough.sh [http://127.0.0.1:8080]
set -euo pipefail
base="${1:-http://127.0.0.1:8080}"
json() { python3 -c "import sys,json; print(json.load(sys.stdin)$1)"; }

echo "# log in as the dev-mode admin"
token=$(curl -sf -XPOST "$base/api/v1/authentication/login" -H 'content-type: application/json' \
  -d '{"username":"admin","password":"Admin123!"}' | json '["token"]')
auth=(-H "Authorization: Bearer $token")

echo "# create a tenant (the answer comes after the tenant actor persisted it)"
sub="demo$RANDOM"
id=$(curl -sf -XPOST "$base/api/v1/tenants" "${auth[@]}" \
  -d "{\"name\":\"Demo\",\"subdomain\":\"$sub\",\"tier\":\"Starter\",\"contactEmail\":\"ops@demo.io\"}" \
  | json '["tenantId"]')
echo "tenant $id"

echo "# upgrade, suspend, read"
curl -sf -XPUT "$base/api/v1/tenants/$id/subscription" "${auth[@]}" -d '{"tier":"Professional"}' \
  | json '["resourceQuota"]'
curl -sf -XPOST "$base/api/v1/tenants/$id/suspend" "${auth[@]}" | json '["status"]'
curl -sf "$base/api/v1/tenants/$id" "${auth[@]}" | json '["status"]'

echo "# a bad request gets a problem+json with every violation"
curl -s -XPOST "$base/api/v1/tenants" "${auth[@]}" -d '{"name":"","subdomain":"-","tier":"Gold"}' \
  | json '["errors"]'

echo "# the audit trail of tenant changes, newest first"
curl -sf "$base/api/v1/auditlogs/category/Tenant?pageSize=5" "${auth[@]}" \
  | python3 -c 'import sys,json; [print(e["timestamp"], e["eventType"], e["entityId"], e["username"]) for e in json.load(sys.stdin)]'
