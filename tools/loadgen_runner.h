// The load generator's driver: opens the channels, sends requests in a closed or open loop
// until a bound is reached, waits for the streams in flight, prints a progress line every
// progress_interval, and folds every call's outcome into a LoadgenResult.
//
// Thread ownership: RunLoad runs on the caller's thread (the driver), which owns the request
// mix, the statistics and every counter except the live token count. gRPC's threads run the
// calls' callbacks and only push finished outcomes onto a locked queue that the driver drains.
#ifndef INT4KV_TOOLS_LOADGEN_RUNNER_H_
#define INT4KV_TOOLS_LOADGEN_RUNNER_H_

#include <ostream>

#include "proto/generation.pb.h"
#include "tools/loadgen_config.h"
#include "tools/loadgen_report.h"

namespace int4kv {

// `config` must pass ValidateConfig and CheckAgainstServer(config, info). Progress lines go
// to `progress` (nullptr: none).
LoadgenResult RunLoad(const LoadgenConfig& config, const v1::ServerInfo& info,
                      std::ostream* progress);

}  // namespace int4kv

#endif  // INT4KV_TOOLS_LOADGEN_RUNNER_H_
