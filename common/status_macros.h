// Status propagation helpers. Debian's Abseil (20220623) ships no status macros, so the
// project defines its one pair here.
#ifndef INT4KV_COMMON_STATUS_MACROS_H_
#define INT4KV_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define INT4KV_STATUS_CONCAT_INNER_(a, b) a##b
#define INT4KV_STATUS_CONCAT_(a, b) INT4KV_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    const ::absl::Status int4kv_status_ = (expr);    \
    if (!int4kv_status_.ok()) return int4kv_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` evaluates Foo() (an absl::StatusOr<T>); on error returns
// its status, otherwise moves the value into the declaration `lhs`.
#define ASSIGN_OR_RETURN(lhs, expr) \
  INT4KV_ASSIGN_OR_RETURN_IMPL_(INT4KV_STATUS_CONCAT_(int4kv_statusor_, __LINE__), lhs, expr)

#define INT4KV_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return statusor.status();            \
  lhs = std::move(statusor).value()

#endif  // INT4KV_COMMON_STATUS_MACROS_H_
