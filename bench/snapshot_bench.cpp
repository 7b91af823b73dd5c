// Snapshot write throughput: the hotswap store path against a raw libpq
// baseline measured in the same run.
//
//   snapshot_bench [POSTGRES_URL] [N] [CONCURRENCY...]
//
// POSTGRES_URL defaults to $HOTSWAP_TEST_PG_URL, N to 2000, concurrency to
// "1 4". For every concurrency level c it measures
//   (a) raw libpq: one prepared single-statement upsert of the same row shape
//       (kind, id, ..., ~1 KiB JSON body), autocommit, c connections each on
//       its own row, N writes in total;
//   (b) hotswap: a store_actor pool of c workers; c clients (scoped_actor)
//       each request put(snapshot, audit event) on their own row, N writes in
//       total, sequentially per client (request(...).receive).
// and prints writes/s, p50/p99 latency and the ratio hotswap/raw (target
// >= 0.8). Run it against a private server: scripts/services.sh run --
// build/bench/snapshot_bench

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/scoped_actor.hpp"

#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/store.hpp"
#include "hotswap/runtime/store_actor.hpp"
#include "hotswap/runtime/types.hpp"

using namespace hotswap;
using clock_type = std::chrono::steady_clock;

namespace {

struct bench_config : caf::actor_system_config {
  bench_config() {
    register_runtime_types(*this);
  }
};

struct figures {
  double writes_per_sec = 0;
  double p50_us = 0;
  double p99_us = 0;
  size_t errors = 0;
};

/// Raw measurements of one or more rounds.
struct sample {
  std::vector<double> lat_us;
  double seconds = 0;
  size_t errors = 0;

  void add(sample&& other) {
    lat_us.insert(lat_us.end(), other.lat_us.begin(), other.lat_us.end());
    seconds += other.seconds;
    errors += other.errors;
  }
};

figures summarize(std::vector<double> lat_us, double seconds, size_t errors) {
  figures f;
  f.errors = errors;
  if (lat_us.empty() || seconds <= 0)
    return f;
  std::sort(lat_us.begin(), lat_us.end());
  f.writes_per_sec = static_cast<double>(lat_us.size()) / seconds;
  f.p50_us = lat_us[lat_us.size() / 2];
  f.p99_us = lat_us[std::min(lat_us.size() - 1, lat_us.size() * 99 / 100)];
  return f;
}

void print(const char* label, int conc, const figures& f) {
  std::printf("%s (concurrency %d): %.0f writes/s p50 %.0fus p99 %.0fus%s\n", label, conc,
              f.writes_per_sec, f.p50_us, f.p99_us,
              f.errors > 0 ? (" errors " + std::to_string(f.errors)).c_str() : "");
  std::fflush(stdout);
}

std::string make_body(int i) {
  std::string body = "{\"id\":\"tenant-" + std::to_string(i)
                     + "\",\"name\":\"Acme Corporation\",\"status\":\"Active\",\"plan\":"
                       "\"enterprise\",\"settings\":{";
  int k = 0;
  while (body.size() < 1000) {
    body += (k == 0 ? "" : ",");
    body += "\"key" + std::to_string(k) + "\":\"value-" + std::to_string(k * 7919) + "\"";
    ++k;
  }
  body += "}}";
  return body;
}

bool exec_ok(PGconn* c, const char* sql) {
  PGresult* r = PQexec(c, sql);
  auto st = PQresultStatus(r);
  bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok)
    std::fprintf(stderr, "SQL failed: %s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return ok;
}

constexpr const char* raw_upsert
  = "INSERT INTO bench_raw_snapshots (kind, id, tenant_id, status, unique_key, owner_node, "
    "epoch, seq, body, created_at, updated_at) VALUES ($1::text, $2::text, $3::text, $4::text, "
    "NULL, $5::text, $6::bigint, 1, $7::text, $8::bigint, $8::bigint) "
    "ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body, status = EXCLUDED.status, "
    "tenant_id = EXCLUDED.tenant_id, updated_at = EXCLUDED.updated_at, "
    "seq = bench_raw_snapshots.seq + 1 WHERE bench_raw_snapshots.epoch = EXCLUDED.epoch";

// (a) raw libpq: `conc` connections, `total` upserts in all.
sample run_raw(const std::string& url, int total, int conc, const std::string& body) {
  std::vector<std::vector<double>> lats(static_cast<size_t>(conc));
  std::atomic<size_t> errors{0};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < conc; ++t) {
    threads.emplace_back([&, t] {
      PGconn* c = PQconnectdb(url.c_str());
      if (PQstatus(c) != CONNECTION_OK) {
        std::fprintf(stderr, "raw: connect failed: %s", PQerrorMessage(c));
        errors += 1;
        PQfinish(c);
        ++ready;
        return;
      }
      PGresult* pr = PQprepare(c, "raw_upsert", raw_upsert, 8, nullptr);
      if (PQresultStatus(pr) != PGRES_COMMAND_OK) {
        std::fprintf(stderr, "raw: prepare failed: %s", PQresultErrorMessage(pr));
        errors += 1;
      }
      PQclear(pr);
      std::string id = "raw-" + std::to_string(t);
      auto now = std::to_string(now_millis());
      const char* vals[8] = {"bench", id.c_str(), "t-1", "Active", "node-a", "1", body.c_str(),
                             now.c_str()};
      auto once = [&]() {
        PGresult* r = PQexecPrepared(c, "raw_upsert", 8, vals, nullptr, nullptr, 0);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK && std::string{PQcmdTuples(r)} == "1";
        if (!ok && errors.fetch_add(1) == 0)
          std::fprintf(stderr, "raw: upsert failed: %s", PQresultErrorMessage(r));
        PQclear(r);
      };
      for (int i = 0; i < 20; ++i) // warm-up
        once();
      ++ready;
      while (!go.load())
        std::this_thread::yield();
      auto n = total / conc;
      auto& lat = lats[static_cast<size_t>(t)];
      lat.reserve(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        auto t0 = clock_type::now();
        once();
        lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
      }
      PQfinish(c);
    });
  }
  while (ready.load() < conc)
    std::this_thread::yield();
  auto start = clock_type::now();
  go = true;
  for (auto& th : threads)
    th.join();
  double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  sample out;
  for (auto& l : lats)
    out.lat_us.insert(out.lat_us.end(), l.begin(), l.end());
  out.seconds = secs;
  out.errors = errors.load();
  return out;
}

// (b) hotswap: a pool of `conc` store workers, `conc` clients.
sample run_hotswap(caf::actor_system& sys, const store_actor& pool, int total, int conc,
                   const std::string& body) {
  std::vector<std::vector<double>> lats(static_cast<size_t>(conc));
  std::atomic<size_t> errors{0};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < conc; ++t) {
    threads.emplace_back([&, t] {
      caf::scoped_actor self{sys};
      auto id = "hotswap-" + std::to_string(t);
      snapshot_record snap;
      self
        ->request(pool, std::chrono::seconds(30), claim_atom::value, std::string{"bench"}, id,
                  std::string{"node-a"})
        .receive(
          [&](claim_result& c) {
            snap = c.snapshot;
            snap.epoch = c.epoch;
          },
          [&](caf::error& e) {
            std::fprintf(stderr, "hotswap: claim failed: %s\n", sys.render(e).c_str());
            errors += 1;
          });
      snap.body = body;
      snap.status = "Active";
      snap.tenant_id = "t-1";
      audit_event ev;
      ev.category = "Tenant";
      ev.action = "TenantUpdated";
      ev.result = "Success";
      ev.entity_kind = "bench";
      ev.entity_id = id;
      ev.tenant_id = "t-1";
      ev.actor_user = "bench";
      ev.source_ip = "127.0.0.1";
      ev.trace_id = "0af7651916cd43dd8448eb211c80319c";
      ev.message = "tenant updated";
      ev.detail = R"({"fields":["settings"]})";
      auto once = [&]() {
        self->request(pool, caf::infinite, put_atom::value, snap, ev)
          .receive([](int64_t) {},
                   [&](caf::error& e) {
                     if (errors.fetch_add(1) == 0)
                       std::fprintf(stderr, "hotswap: put failed: %s\n", sys.render(e).c_str());
                   });
      };
      for (int i = 0; i < 20; ++i) // warm-up
        once();
      ++ready;
      while (!go.load())
        std::this_thread::yield();
      auto n = total / conc;
      auto& lat = lats[static_cast<size_t>(t)];
      lat.reserve(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        auto t0 = clock_type::now();
        once();
        lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
      }
    });
  }
  while (ready.load() < conc)
    std::this_thread::yield();
  auto start = clock_type::now();
  go = true;
  for (auto& th : threads)
    th.join();
  double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  sample out;
  for (auto& l : lats)
    out.lat_us.insert(out.lat_us.end(), l.begin(), l.end());
  out.seconds = secs;
  out.errors = errors.load();
  return out;
}

// (c) diagnostic: the store called directly (no actors), `conc` threads.
sample run_direct(const std::string& url, int total, int conc, const std::string& body) {
  std::vector<std::vector<double>> lats(static_cast<size_t>(conc));
  std::atomic<size_t> errors{0};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < conc; ++t) {
    threads.emplace_back([&, t] {
      auto db = open_store(url);
      if (!db) {
        errors += 1;
        ++ready;
        return;
      }
      auto id = "direct-" + std::to_string(t);
      auto c = (*db)->claim("bench", id, "node-a");
      if (!c) {
        errors += 1;
        ++ready;
        return;
      }
      auto snap = c->snapshot;
      snap.epoch = c->epoch;
      snap.body = body;
      snap.status = "Active";
      snap.tenant_id = "t-1";
      audit_event ev;
      ev.category = "Tenant";
      ev.action = "TenantUpdated";
      ev.result = "Success";
      ev.actor_user = "bench";
      ev.trace_id = "0af7651916cd43dd8448eb211c80319c";
      ev.message = "tenant updated";
      auto once = [&]() {
        auto r = (*db)->put(snap, ev);
        if (!r && errors.fetch_add(1) == 0)
          std::fprintf(stderr, "direct: put failed: %s\n", error_detail(r.error()).c_str());
      };
      for (int i = 0; i < 20; ++i)
        once();
      ++ready;
      while (!go.load())
        std::this_thread::yield();
      auto n = total / conc;
      auto& lat = lats[static_cast<size_t>(t)];
      for (int i = 0; i < n; ++i) {
        auto t0 = clock_type::now();
        once();
        lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
      }
    });
  }
  while (ready.load() < conc)
    std::this_thread::yield();
  auto start = clock_type::now();
  go = true;
  for (auto& th : threads)
    th.join();
  double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  sample out;
  for (auto& l : lats)
    out.lat_us.insert(out.lat_us.end(), l.begin(), l.end());
  out.seconds = secs;
  out.errors = errors.load();
  return out;
}

} // namespace

int main(int argc, char** argv) {
  std::string url;
  if (argc > 1)
    url = argv[1];
  else if (auto env = std::getenv("HOTSWAP_TEST_PG_URL"))
    url = env;
  if (url.empty()) {
    std::fprintf(stderr, "usage: snapshot_bench POSTGRES_URL [N] [CONCURRENCY...]\n"
                         "(or set HOTSWAP_TEST_PG_URL; scripts/services.sh run -- ... starts a "
                         "private server)\n");
    return 2;
  }
  int n = argc > 2 ? std::atoi(argv[2]) : 2000;
  if (n <= 0)
    n = 2000;
  std::vector<int> levels;
  for (int i = 3; i < argc; ++i)
    if (std::atoi(argv[i]) > 0)
      levels.push_back(std::atoi(argv[i]));
  if (levels.empty())
    levels = {1, 4};

  // Schema: the store's migrations plus a raw table of the same shape.
  {
    auto db = open_store(url);
    if (!db) {
      std::fprintf(stderr, "cannot open %s: %s\n", url.c_str(), error_detail(db.error()).c_str());
      return 1;
    }
    auto v = (*db)->migrate();
    if (!v) {
      std::fprintf(stderr, "migrate failed: %s\n", error_detail(v.error()).c_str());
      return 1;
    }
    PGconn* c = PQconnectdb(url.c_str());
    if (PQstatus(c) != CONNECTION_OK) {
      std::fprintf(stderr, "cannot connect: %s", PQerrorMessage(c));
      PQfinish(c);
      return 1;
    }
    PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
    bool ok = exec_ok(c, "DROP TABLE IF EXISTS bench_raw_snapshots")
              && exec_ok(c, "CREATE TABLE bench_raw_snapshots "
                            "(LIKE snapshots INCLUDING DEFAULTS INCLUDING INDEXES)")
              && exec_ok(c, "DELETE FROM snapshots WHERE kind = 'bench'")
              && exec_ok(c, "DELETE FROM audit_events WHERE entity_kind = 'bench'");
    PQfinish(c);
    if (!ok)
      return 1;
  }

  bench_config cfg;
  caf::actor_system sys{cfg};
  auto body = make_body(1);
  std::printf("snapshot_bench: %d writes per run, body %zu bytes, server %s\n", n, body.size(),
              url.c_str());
  int rc = 0;
  // Raw and hotswap alternate in rounds so that drift on the server (WAL
  // segment creation, checkpoints, a noisy VM) hits both alike.
  constexpr int rounds = 8;
  bool direct = std::getenv("SNAPSHOT_BENCH_DIRECT") != nullptr;
  for (auto conc : levels) {
    auto pool = spawn_store_pool(sys, url, static_cast<size_t>(conc), nullptr);
    if (!pool) {
      std::fprintf(stderr, "hotswap: spawn_store_pool failed: %s\n",
                   sys.render(pool.error()).c_str());
      return 1;
    }
    sample raw;
    sample hs;
    sample dir;
    std::vector<double> round_ratios;
    for (int r = 0; r < rounds; ++r) {
      auto rr = run_raw(url, n / rounds, conc, body);
      auto rh = run_hotswap(sys, *pool, n / rounds, conc, body);
      // Per-round ratio: an fsync stall hits one round, not the median.
      if (rr.seconds > 0 && rh.seconds > 0 && !rr.lat_us.empty())
        round_ratios.push_back((static_cast<double>(rh.lat_us.size()) / rh.seconds)
                               / (static_cast<double>(rr.lat_us.size()) / rr.seconds));
      raw.add(std::move(rr));
      hs.add(std::move(rh));
      if (direct)
        dir.add(run_direct(url, n / rounds, conc, body));
    }
    caf::anon_send_exit(*pool, caf::exit_reason::user_shutdown);
    auto fraw = summarize(raw.lat_us, raw.seconds, raw.errors);
    auto fhs = summarize(hs.lat_us, hs.seconds, hs.errors);
    print("raw libpq upsert", conc, fraw);
    print("hotswap store put", conc, fhs);
    if (direct)
      print("store put without actors (diagnostic)", conc,
            summarize(dir.lat_us, dir.seconds, dir.errors));
    double ratio = fraw.writes_per_sec > 0 ? fhs.writes_per_sec / fraw.writes_per_sec : 0;
    std::printf("ratio (concurrency %d): %.2f (target >= 0.80)\n", conc, ratio);
    if (!round_ratios.empty()) {
      std::sort(round_ratios.begin(), round_ratios.end());
      std::printf("median per-round ratio (concurrency %d): %.2f over %zu rounds (min %.2f, "
                  "max %.2f)\n",
                  conc, round_ratios[round_ratios.size() / 2], round_ratios.size(),
                  round_ratios.front(), round_ratios.back());
    }
    std::fflush(stdout);
    if (fraw.errors > 0 || fhs.errors > 0)
      rc = 1;
  }
  return rc;
}
