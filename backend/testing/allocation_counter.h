// Test support: counts every global operator new of the test binary that links it (the
// library replaces operator new and delete), for tests of code that must allocate nothing.
#ifndef INT4KV_BACKEND_TESTING_ALLOCATION_COUNTER_H_
#define INT4KV_BACKEND_TESTING_ALLOCATION_COUNTER_H_

#include <cstdint>

namespace int4kv {

// Global operator new calls since the program started, from any thread.
int64_t GlobalAllocations();

}  // namespace int4kv

#endif  // INT4KV_BACKEND_TESTING_ALLOCATION_COUNTER_H_
