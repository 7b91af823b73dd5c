#pragma once

// One named spdlog logger per area, created once at start (the logger
// registry is the only global hotswap uses).

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace hotswap {

/// Creates the loggers "node", "http", "store", "cluster", "control", "auth",
/// "deploy" and "worker" writing to stderr at `level` (trace..error), as JSON
/// lines when `json`. Returns false for an unknown level.
bool setup_logging(const std::string& level, bool json);

/// The logger for `area`, or the default logger when it was not set up.
std::shared_ptr<spdlog::logger> logger(const std::string& area);

} // namespace hotswap
