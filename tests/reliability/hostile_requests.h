// Generated hostile Generate requests and the documented answer to each (proto/
// generation.proto): random and extreme values in every field, one defect at a time or many
// at once, plus valid requests at the edges of the ranges. The oracle encodes the API's rules
// independently of the server: a request that breaks any rule must get INVALID_ARGUMENT whose
// message starts with the name of a broken field and states that field's limit; a request
// breaking none must succeed.
#ifndef INT4KV_TESTS_RELIABILITY_HOSTILE_REQUESTS_H_
#define INT4KV_TESTS_RELIABILITY_HOSTILE_REQUESTS_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "proto/generation.pb.h"

namespace int4kv {

// The server's limits, from GetServerInfo.
struct RequestRules {
  int32_t vocab_size = 0;
  int32_t max_seq_len = 0;
  int32_t max_new_tokens = 0;
  int64_t kv_slots = 0;
};

// One broken rule: the message must start with `prefix` and contain `limit`.
struct Defect {
  std::string prefix;
  std::string limit;
};

// Every rule `request` breaks, in no particular order; empty for a valid request.
std::vector<Defect> FindDefects(const v1::GenerateRequest& request, const RequestRules& rules);

struct HostileCase {
  std::string kind;  // how it was generated, for failure messages and the tally
  v1::GenerateRequest request;
};

// True if `text` is valid UTF-8. A proto3 string field must be: a request_id that is not is
// refused by protobuf's parser on the server before the service sees it (see
// docs/RELIABILITY.md for the status that gets today).
bool IsUtf8(const std::string& text);

// Generates cases reproducibly from `seed`.
class HostileRequestGenerator {
 public:
  HostileRequestGenerator(const RequestRules& rules, uint64_t seed);

  // A valid request with one field (or a pair, for the length rules) made invalid.
  HostileCase OneDefect();
  // Every field drawn from a pool of extreme and ordinary values; usually invalid.
  HostileCase AllRandom();
  // A valid request at the edges of the ranges, generating 1-3 tokens.
  HostileCase EdgeValid();

 private:
  v1::GenerateRequest SmallValid();
  int32_t AnyId();         // any int32, weighted to the interesting ones
  int32_t ValidId();       // in [0, vocab_size)
  float AnyTemperature();  // NaN, infinities, negatives, huge, tiny, valid
  float AnyTopP();
  std::string AnyRequestId();

  const RequestRules rules_;
  std::mt19937_64 rng_;
};

}  // namespace int4kv

#endif  // INT4KV_TESTS_RELIABILITY_HOSTILE_REQUESTS_H_
