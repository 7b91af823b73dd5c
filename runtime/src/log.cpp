#include "hotswap/runtime/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace hotswap {

bool setup_logging(const std::string& level, bool json) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    return false;
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto pattern = json ? std::string{R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","area":"%n","msg":"%v"})"}
                      : std::string{"%Y-%m-%dT%H:%M:%S.%eZ %-5l [%n] %v"};
  sink->set_formatter(
    std::make_unique<spdlog::pattern_formatter>(pattern, spdlog::pattern_time_type::utc));
  for (auto area : {"node", "http", "store", "cluster", "control", "auth", "deploy", "worker"}) {
    spdlog::drop(area);
    auto l = std::make_shared<spdlog::logger>(area, sink);
    l->set_level(lvl);
    l->flush_on(spdlog::level::warn);
    spdlog::register_logger(l);
  }
  return true;
}

std::shared_ptr<spdlog::logger> logger(const std::string& area) {
  auto l = spdlog::get(area);
  return l ? l : spdlog::default_logger();
}

} // namespace hotswap
