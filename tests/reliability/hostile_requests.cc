#include "tests/reliability/hostile_requests.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/exact_number.h"

namespace int4kv {
namespace {

constexpr int32_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int32_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr size_t kMaxRequestIdBytes = 128;
constexpr int kMaxStopTokens = 64;

bool ValidTemperature(float t) { return t >= 0.0f && t <= 100.0f; }
bool ValidTopP(float p) { return p > 0.0f && p <= 1.0f; }

template <typename T>
T Pick(std::mt19937_64& rng, std::initializer_list<T> values) {
  return *(values.begin() + rng() % values.size());
}

}  // namespace

bool IsUtf8(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    int extra = 0;
    uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= text.size()) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    static const uint32_t kMinimum[] = {0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

std::vector<Defect> FindDefects(const v1::GenerateRequest& request, const RequestRules& rules) {
  std::vector<Defect> defects;
  const std::string vocab_range = absl::StrCat("[0, ", rules.vocab_size, ")");
  const std::string& id = request.request_id();
  if (id.size() > kMaxRequestIdBytes) defects.push_back({"request_id has", "at most 128"});
  for (const char c : id) {
    if (static_cast<unsigned char>(c) < 32 || static_cast<unsigned char>(c) > 126) {
      defects.push_back({"request_id byte", "printable ASCII (32 to 126)"});
      break;
    }
  }
  if (request.prompt().empty()) defects.push_back({"prompt is empty", "at least 1 token"});
  for (const int32_t token : request.prompt()) {
    if (token < 0 || token >= rules.vocab_size) {
      defects.push_back({"prompt[", vocab_range});
      break;
    }
  }
  // Rejected numbers must be quoted exactly: a value just past a limit must not read as the
  // limit itself (100.00001 printed as "100").
  if (request.max_new_tokens() < 1 || request.max_new_tokens() > rules.max_new_tokens) {
    defects.push_back({absl::StrCat("max_new_tokens = ", request.max_new_tokens(), " is invalid"),
                       absl::StrCat("[1, ", rules.max_new_tokens, "]")});
  }
  const v1::SamplingParams& s = request.sampling();
  if (!ValidTemperature(s.temperature())) {
    defects.push_back(
        {absl::StrCat("sampling.temperature = ", ExactNumber(s.temperature()), " is invalid"),
         "[0, 100]"});
  }
  if (s.has_top_p() && !ValidTopP(s.top_p())) {
    defects.push_back(
        {absl::StrCat("sampling.top_p = ", ExactNumber(s.top_p()), " is invalid"), "(0, 1]"});
  }
  if (s.top_k() < 0) {
    defects.push_back({absl::StrCat("sampling.top_k = ", s.top_k(), " is invalid"), ">= 0"});
  }
  if (s.stop_token_ids_size() > kMaxStopTokens) {
    defects.push_back({"sampling.stop_token_ids has", "at most 64"});
  }
  for (const int32_t token : s.stop_token_ids()) {
    if (token < 0 || token >= rules.vocab_size) {
      defects.push_back({"sampling.stop_token_ids[", vocab_range});
      break;
    }
  }
  const int64_t total = static_cast<int64_t>(request.prompt_size()) + request.max_new_tokens();
  if (total > rules.max_seq_len) {
    defects.push_back({"prompt length (", absl::StrCat("max_seq_len (", rules.max_seq_len, ")")});
  }
  if (total > rules.kv_slots) {
    defects.push_back({"prompt length (", absl::StrCat("KV cache capacity (", rules.kv_slots)});
  }
  return defects;
}

HostileRequestGenerator::HostileRequestGenerator(const RequestRules& rules, uint64_t seed)
    : rules_(rules), rng_(seed) {}

int32_t HostileRequestGenerator::ValidId() {
  return static_cast<int32_t>(rng_() % rules_.vocab_size);
}

int32_t HostileRequestGenerator::AnyId() {
  if (rng_() % 5 < 2) return ValidId();
  const int32_t v = rules_.vocab_size;
  return Pick<int32_t>(rng_, {-1, -2, kInt32Min, kInt32Max, v, v + 1, v - 1, 0, 1 << 20, -v});
}

float HostileRequestGenerator::AnyTemperature() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  return Pick<float>(
      rng_, {nan, -nan, inf, -inf, -1.0f, -1e-30f, -0.0f, 0.0f, 1e-38f, 1e-45f, 0.7f, 1.0f, 100.0f,
             std::nextafter(100.0f, 200.0f), 101.0f, 1e30f, std::numeric_limits<float>::max()});
}

float HostileRequestGenerator::AnyTopP() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  return Pick<float>(rng_, {nan, inf, -inf, -1.0f, 0.0f, -0.0f, 1e-45f, 1e-30f, 0.5f, 1.0f,
                            std::nextafter(1.0f, 2.0f), 2.0f, 1e30f});
}

std::string HostileRequestGenerator::AnyRequestId() {
  switch (rng_() % 12) {
    case 0:
      return "";
    case 1:
      return std::string(kMaxRequestIdBytes, 'a');
    case 2:
      return std::string(kMaxRequestIdBytes + 1, 'a');
    case 3:
      return std::string(10000, 'b');
    case 4:
      return "\x01";
    case 5:
      return "id\n";
    case 6:
      return "\x7f";
    case 7:
      return "caf\xc3\xa9";
    case 8:
      return "tab\t";
    case 9:
      return std::string(1, '\0') + "x";
    case 10:
      return " ~!";
    default:
      return absl::StrCat("h-", rng_() % 100000);
  }
}

v1::GenerateRequest HostileRequestGenerator::SmallValid() {
  v1::GenerateRequest request;
  const int len = 1 + static_cast<int>(rng_() % 16);
  for (int i = 0; i < len; ++i) request.add_prompt(ValidId());
  request.set_max_new_tokens(1 + static_cast<int32_t>(rng_() % 3));
  request.set_request_id(absl::StrCat("v-", rng_() % 100000));
  if (rng_() % 2 == 0) {
    v1::SamplingParams& s = *request.mutable_sampling();
    s.set_temperature(0.8f);
    s.set_top_k(40);
    s.set_top_p(0.9f);
    s.set_seed(rng_());
  }
  return request;
}

HostileCase HostileRequestGenerator::OneDefect() {
  HostileCase c{"", SmallValid()};
  v1::GenerateRequest& r = c.request;
  v1::SamplingParams& s = *r.mutable_sampling();
  const int32_t S = rules_.max_seq_len;
  auto fill_prompt = [&](int32_t len) {
    r.clear_prompt();
    for (int32_t i = 0; i < len; ++i) r.add_prompt(ValidId());
  };
  switch (rng_() % 14) {
    case 0:
      c.kind = "empty prompt";
      r.clear_prompt();
      break;
    case 1: {
      c.kind = "prompt id out of range";
      int32_t bad = AnyId();
      while (bad >= 0 && bad < rules_.vocab_size) bad = AnyId();
      r.set_prompt(static_cast<int>(rng_() % r.prompt_size()), bad);
      break;
    }
    case 2:
      c.kind = "max_new_tokens out of range";
      r.set_max_new_tokens(
          Pick<int32_t>(rng_, {0, -1, kInt32Min, rules_.max_new_tokens + 1, kInt32Max, 1 << 30}));
      break;
    case 3: {
      c.kind = "bad temperature";
      float t = AnyTemperature();
      while (ValidTemperature(t)) t = AnyTemperature();
      s.set_temperature(t);
      break;
    }
    case 4: {
      c.kind = "bad top_p";
      float p = AnyTopP();
      while (ValidTopP(p)) p = AnyTopP();
      s.set_top_p(p);
      break;
    }
    case 5:
      c.kind = "negative top_k";
      s.set_top_k(Pick<int32_t>(rng_, {-1, -2, -1000, kInt32Min}));
      break;
    case 6: {
      c.kind = "too many stop ids";
      const int n = Pick<int>(rng_, {kMaxStopTokens + 1, 100, 1000});
      for (int i = 0; i < n; ++i) s.add_stop_token_ids(ValidId());
      break;
    }
    case 7: {
      c.kind = "stop id out of range";
      int32_t bad = AnyId();
      while (bad >= 0 && bad < rules_.vocab_size) bad = AnyId();
      s.add_stop_token_ids(ValidId());
      s.add_stop_token_ids(bad);
      break;
    }
    case 8:
      c.kind = "request_id too long";
      r.set_request_id(std::string(kMaxRequestIdBytes + 1 + rng_() % 10000, 'r'));
      break;
    case 9: {
      std::string id = "ok-id";
      if (rng_() % 4 != 0) {
        c.kind = "request_id not printable";
        id[rng_() % id.size()] = static_cast<char>(Pick<int>(rng_, {0, 1, 9, 10, 31, 127}));
      } else {
        c.kind = "request_id not UTF-8";
        id[rng_() % id.size()] = static_cast<char>(Pick<int>(rng_, {0x80, 0xc3, 0xff}));
      }
      r.set_request_id(id);
      break;
    }
    case 10:
      c.kind = "prompt at max_seq_len";
      fill_prompt(S);
      r.set_max_new_tokens(1);
      break;
    case 11:
      c.kind = "prompt past max_seq_len";
      fill_prompt(S + 1 + static_cast<int32_t>(rng_() % S));
      break;
    case 12:
      c.kind = "prompt + max_new_tokens one past max_seq_len";
      fill_prompt(S - 1);
      r.set_max_new_tokens(2);
      break;
    default:
      c.kind = "largest max_new_tokens with a 2-token prompt";
      fill_prompt(2);
      r.set_max_new_tokens(rules_.max_new_tokens);
      break;
  }
  return c;
}

HostileCase HostileRequestGenerator::AllRandom() {
  HostileCase c{"all fields random", v1::GenerateRequest()};
  v1::GenerateRequest& r = c.request;
  const int32_t S = rules_.max_seq_len;
  const int32_t len = rng_() % 4 != 0 ? Pick<int32_t>(rng_, {0, 1, 2, 5, 16})
                                      : Pick<int32_t>(rng_, {S - 3, S - 1, S, S + 1, 2 * S, 5000});
  const bool clean_ids = rng_() % 10 < 7;
  for (int32_t i = 0; i < len; ++i) r.add_prompt(ValidId());
  if (!clean_ids && len > 0) {
    for (int k = 0; k < 3; ++k) r.set_prompt(static_cast<int>(rng_() % len), AnyId());
  }
  r.set_max_new_tokens(Pick<int32_t>(
      rng_, {0, -1, kInt32Min, 1, 2, 3, rules_.max_new_tokens + 1, kInt32Max, 1 << 20}));
  v1::SamplingParams& s = *r.mutable_sampling();
  s.set_temperature(AnyTemperature());
  if (rng_() % 5 < 3) s.set_top_p(AnyTopP());
  s.set_top_k(Pick<int32_t>(
      rng_, {0, 1, 5, -1, kInt32Min, kInt32Max, rules_.vocab_size, rules_.vocab_size + 1}));
  if (rng_() % 2 == 0) s.set_seed(Pick<uint64_t>(rng_, {0, 1, ~uint64_t{0}}));
  const int stops = Pick<int>(rng_, {0, 0, 1, 2, kMaxStopTokens, kMaxStopTokens + 1, 1000});
  for (int i = 0; i < stops; ++i) s.add_stop_token_ids(rng_() % 4 == 0 ? AnyId() : ValidId());
  s.set_ignore_eos(rng_() % 2 == 0);
  r.set_request_id(AnyRequestId());
  return c;
}

HostileCase HostileRequestGenerator::EdgeValid() {
  HostileCase c{"valid at the edges", SmallValid()};
  v1::GenerateRequest& r = c.request;
  r.set_prompt(0, Pick<int32_t>(rng_, {0, rules_.vocab_size - 1}));
  if (rng_() % 100 == 0) {
    c.kind = "valid, prompt + max_new_tokens = max_seq_len";
    r.clear_prompt();
    for (int32_t i = 0; i < rules_.max_seq_len - 1; ++i) r.add_prompt(ValidId());
    r.set_max_new_tokens(1);
  }
  v1::SamplingParams& s = *r.mutable_sampling();
  s.set_temperature(Pick<float>(rng_, {0.0f, -0.0f, 1e-45f, 1e-30f, 1.0f, 100.0f}));
  switch (rng_() % 4) {
    case 0:
      s.clear_top_p();
      break;
    case 1:
      s.set_top_p(1e-45f);
      break;
    case 2:
      s.set_top_p(1.0f);
      break;
    default:
      s.set_top_p(0.5f);
  }
  s.set_top_k(Pick<int32_t>(rng_, {0, 1, kInt32Max, rules_.vocab_size + 5}));
  if (rng_() % 3 == 0) {
    s.set_seed(Pick<uint64_t>(rng_, {0, ~uint64_t{0}}));
  } else {
    s.clear_seed();
  }
  s.clear_stop_token_ids();
  if (rng_() % 3 == 0) {
    for (int i = 0; i < kMaxStopTokens; ++i) s.add_stop_token_ids(ValidId());
  }
  s.set_ignore_eos(rng_() % 2 == 0);
  if (rng_() % 2 == 0) {
    std::string id;
    for (size_t i = 0; i < kMaxRequestIdBytes; ++i) id += static_cast<char>(32 + rng_() % 95);
    r.set_request_id(id);
  }
  return c;
}

}  // namespace int4kv
