// The message_store suite: the semantic cases of tests/message_store_cases.hpp
// on the SQL message store, each on SQLite (a fresh temporary file) and on
// PostgreSQL (a fresh database `hotswap_msg_test_<pid>_<n>` on the server named
// by HOTSWAP_TEST_PG_URL). Without HOTSWAP_TEST_PG_URL the PostgreSQL half of
// every test FAILS: run the suite through
//   scripts/services.sh run -- ctest --test-dir build -R runtime_test.message_store

#define CAF_SUITE message_store
#include "caf/test/dsl.hpp"

#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "hotswap/runtime/messages.hpp"
#include "hotswap/runtime/store.hpp"

#include "../message_store_cases.hpp"
#include "pg_test_db.hpp"

using namespace hotswap;
namespace cases = hotswap::message_store_cases;
using hotswap::test::pg_admin_url;

namespace {

/// Migrates the store at `url` (the message tables come from its migrations).
void migrate(const std::string& url) {
  auto s = open_store(url);
  if (!s)
    CAF_FAIL("open_store(" << url << ") failed: " << cases::code_of(s.error()));
  auto v = (*s)->migrate();
  if (!v)
    CAF_FAIL("migrate on " << url << " failed: " << cases::code_of(v.error()));
}

cases::factory factory_for(const std::string& url) {
  return [url] {
    auto s = open_sql_message_store(url);
    if (!s)
      CAF_FAIL("open_sql_message_store(" << url << ") failed: " << cases::code_of(s.error()));
    return std::move(*s);
  };
}

class sqlite_db {
public:
  sqlite_db() {
    auto tmpl = (std::filesystem::temp_directory_path() / "hotswap-msg-test.XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr)
      CAF_FAIL("mkdtemp failed");
    dir_ = buf.data();
    url_ = "sqlite://" + dir_ + "/hotswap.db";
    migrate(url_);
  }

  ~sqlite_db() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  const std::string& url() const {
    return url_;
  }

private:
  std::string dir_;
  std::string url_;
};

/// A fresh, migrated PostgreSQL database.
class pg_db {
public:
  pg_db() : db_("hotswap_msg_test_") {
    migrate(db_.url());
  }

  std::string url() const {
    return db_.url();
  }

  void terminate_sessions() const {
    db_.terminate_sessions();
  }

private:
  test::scratch_pg_database db_;
};

/// Runs `c` on SQLite, then on PostgreSQL (failing the test, after the SQLite
/// half ran, when HOTSWAP_TEST_PG_URL is missing).
void on_both(void (*c)(const cases::factory&)) {
  {
    sqlite_db db;
    CAF_MESSAGE("sqlite: " << db.url());
    c(factory_for(db.url()));
  }
  if (pg_admin_url().empty()) {
    CAF_ERROR("HOTSWAP_TEST_PG_URL is not set: the PostgreSQL half of the message_store suite "
              "needs a server. Run: scripts/services.sh run -- ctest --test-dir <build> -R "
              "runtime_test.message_store");
    return;
  }
  pg_db db;
  CAF_MESSAGE("postgresql: " << db.url());
  c(factory_for(db.url()));
}

} // namespace

CAF_TEST(publishing an id again is idempotent with the same content and a conflict otherwise) {
  on_both(cases::publish_is_idempotent_and_conflicts);
}

CAF_TEST(a topic lists newest first without duplicates up to the limit) {
  on_both(cases::list_is_newest_first_without_duplicates);
}

CAF_TEST(consumers get priority 9 before 0 and then the oldest first) {
  on_both(cases::consume_orders_by_priority_then_age);
}

CAF_TEST(every consumer group receives every message once) {
  on_both(cases::every_group_receives_every_message_once);
}

CAF_TEST(two consumers of one group never receive the same message) {
  on_both(cases::consumers_of_one_group_never_share_a_message);
}

CAF_TEST(a message acknowledged by a group is never redelivered to that group) {
  on_both(cases::acknowledged_by_a_group_is_never_redelivered_to_it);
}

CAF_TEST(a message acknowledged as a whole reaches no group any more) {
  on_both(cases::acknowledged_as_a_whole_reaches_no_group);
}

CAF_TEST(unacknowledged messages come back after the ack deadline with exponential backoff) {
  on_both(cases::redelivery_follows_the_ack_deadline_with_exponential_backoff);
}

CAF_TEST(a message goes to the dead letter topic after max_attempts with the reason) {
  on_both(cases::dead_letters_after_max_attempts);
}

CAF_TEST(expired messages are never delivered) {
  on_both(cases::expired_messages_are_never_delivered);
}

CAF_TEST(a removed message is gone) {
  on_both(cases::removed_messages_are_gone);
}

CAF_TEST(lag counts the deliveries groups still owe) {
  on_both(cases::lag_counts_what_groups_still_owe);
}

CAF_TEST(the SQL message store refuses an unknown url and a database without its tables) {
  auto bad = open_sql_message_store("mysql://x");
  CAF_REQUIRE(!bad);
  CAF_CHECK_EQUAL(errc_of(bad.error()), errc::config_invalid);
  auto dir = std::filesystem::temp_directory_path() / ("hotswap-msg-empty-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  {
    // An existing but unmigrated database.
    auto s = open_store("sqlite://" + (dir / "empty.db").string());
    CAF_REQUIRE(static_cast<bool>(s));
  }
  auto empty = open_sql_message_store("sqlite://" + (dir / "empty.db").string());
  CAF_CHECK(!empty);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

CAF_TEST(the PostgreSQL message store reconnects after the server dropped its connection) {
  if (pg_admin_url().empty()) {
    CAF_ERROR("HOTSWAP_TEST_PG_URL is not set: this test needs a PostgreSQL server");
    return;
  }
  pg_db db;
  auto s = factory_for(db.url())();
  auto topic = cases::fresh_topic("reconnect");
  auto m = cases::make_message(topic, "");
  CAF_REQUIRE(static_cast<bool>(s->publish(m)));
  db.terminate_sessions();
  // A read is retried once after a reset: it succeeds at once.
  auto got = s->get(m.id);
  CAF_REQUIRE(static_cast<bool>(got));
  CAF_CHECK(got->has_value());
  db.terminate_sessions();
  // A write fails with unavailable (it may not be repeated blindly), the next
  // call reconnects.
  auto w = s->consume(topic, "g", 10, cases::t0(), message_policy{});
  if (!w)
    CAF_CHECK_EQUAL(errc_of(w.error()), errc::unavailable);
  auto again = s->consume(topic, "g", 10, cases::t0(), message_policy{});
  CAF_REQUIRE(static_cast<bool>(again));
  CAF_CHECK_EQUAL(again->messages.size() + (w ? w->messages.size() : 0), 1u);
}

CAF_TEST(message status names are those of the contract) {
  CAF_CHECK_EQUAL(std::string{to_name(message_status::pending)}, "Pending");
  CAF_CHECK_EQUAL(std::string{to_name(message_status::delivered)}, "Delivered");
  CAF_CHECK_EQUAL(std::string{to_name(message_status::acknowledged)}, "Acknowledged");
  CAF_CHECK_EQUAL(std::string{to_name(message_status::failed)}, "Failed");
  CAF_CHECK_EQUAL(std::string{to_name(message_status::expired)}, "Expired");
}
