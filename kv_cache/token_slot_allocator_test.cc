#include "kv_cache/token_slot_allocator.h"

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache_config.h"
#include "kv_cache/testing/address_space_cap.h"

namespace int4kv {
namespace {

TEST(TokenSlotAllocatorTest, NeverHandsOutSlotZero) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(5);
  std::vector<int32_t> slots;
  ASSERT_TRUE(allocator->Allocate(5, &slots).ok());
  std::sort(slots.begin(), slots.end());
  EXPECT_EQ(slots, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(allocator->free_count(), 0);
}

TEST(TokenSlotAllocatorTest, ShortAllocationIsAllOrNothing) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(10);
  std::vector<int32_t> slots;
  ASSERT_TRUE(allocator->Allocate(7, &slots).ok());
  std::vector<int32_t> more;
  const absl::Status status = allocator->Allocate(4, &more);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(status.message().find("requested 4"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("only 3"), std::string::npos) << status.message();
  EXPECT_TRUE(more.empty());
  EXPECT_EQ(allocator->free_count(), 3);
  EXPECT_EQ(allocator->used_count(), 7);
}

TEST(TokenSlotAllocatorTest, BadFreesChangeNothing) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(8);
  std::vector<int32_t> slots;
  ASSERT_TRUE(allocator->Allocate(4, &slots).ok());
  const std::vector<std::vector<int32_t>> bad = {
      {slots[0], 0},                   // slot 0 is never allocated
      {slots[1], 9},                   // past capacity
      {slots[2], -1},                  // negative
      {slots[0], slots[1], slots[0]},  // duplicate within one call
  };
  for (const auto& frees : bad) {
    EXPECT_EQ(allocator->Free(frees).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(allocator->free_count(), 4);
    for (int32_t s : slots) EXPECT_TRUE(allocator->IsAllocated(s));
  }
  ASSERT_TRUE(allocator->Free({slots[3]}).ok());
  EXPECT_EQ(allocator->Free({slots[3]}).code(), absl::StatusCode::kInvalidArgument);  // double
  EXPECT_EQ(allocator->free_count(), 5);
}

// A capacity outside [1, kMaxCapacitySlots] is refused before anything is allocated: with
// the address space capped at 256 MiB more than is mapped now, a capacity that got past the
// check would fail to allocate (ResourceExhausted) instead of giving InvalidArgument.
TEST(TokenSlotAllocatorTest, CapacityOutsideOneToMaxIsInvalidArgument) {
  EXPECT_EQ(kMaxCapacitySlots, 2147483646);  // the limit the messages below spell out
  for (const int64_t capacity : {int64_t{0}, int64_t{-1}, int64_t{-2}, int64_t{1} << 31,
                                 kMaxCapacitySlots + 1, int64_t{1} << 40}) {
    absl::Status status;
    {
      ScopedAddressSpaceCap cap(int64_t{256} << 20);
      status = TokenSlotAllocator::Create(capacity).status();
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << capacity;
    EXPECT_EQ(status.message(), "TokenSlotAllocator capacity = " + std::to_string(capacity) +
                                    " is invalid: must be in [1, 2147483646] (kMaxCapacitySlots)");
  }
}

// A valid capacity whose free list and flags do not fit gives ResourceExhausted with the
// bytes it needed, and nothing is kept.
TEST(TokenSlotAllocatorTest, CapacityThatDoesNotFitIsResourceExhausted) {
  const int64_t capacity = kMaxCapacitySlots;  // about 10 GiB of free list and flags
  absl::Status status;
  {
    ScopedAddressSpaceCap cap(int64_t{256} << 20);
    if (!cap.active()) GTEST_SKIP() << "cannot cap the address space here";
    status = TokenSlotAllocator::Create(capacity).status();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(status.message(),
            absl::StrCat(
                "cannot allocate ", TokenSlotAllocator::HostBytes(capacity),
                " bytes of host memory for the token slot allocator (capacity = ", capacity, ")"));
  EXPECT_TRUE(TokenSlotAllocator::Create(16).ok());  // the cap is gone
  // The bytes it names: a 4-byte free-list entry and a 1-byte flag for each slot, and the
  // reserved slot 0's flag.
  EXPECT_EQ(TokenSlotAllocator::HostBytes(10), 51);
}

// Bad arguments to Allocate change nothing and name the problem.
TEST(TokenSlotAllocatorTest, NegativeCountOrNullListIsInvalidArgument) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(4);
  std::vector<int32_t> slots = {42};
  absl::Status status = allocator->Allocate(-1, &slots);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "slot count -1 is negative");
  status = allocator->Allocate(2, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "the slot list to append to is null");
  EXPECT_EQ(slots, std::vector<int32_t>{42});
  EXPECT_EQ(allocator->free_count(), 4);
}

// Thousands of random alloc/free sequences against a set-based model.
TEST(TokenSlotAllocatorTest, RandomSequencesKeepExactCounts) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t capacity = 1 + rng() % 300;
    const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(capacity);
    std::set<int32_t> held;
    for (int step = 0; step < 500; ++step) {
      const int action = rng() % 3;
      if (action < 2) {
        const int64_t count = rng() % (capacity / 3 + 2);
        std::vector<int32_t> got;
        const absl::Status status = allocator->Allocate(count, &got);
        if (count > capacity - static_cast<int64_t>(held.size())) {
          EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
          EXPECT_TRUE(got.empty());
        } else {
          ASSERT_TRUE(status.ok());
          ASSERT_EQ(static_cast<int64_t>(got.size()), count);
          for (int32_t s : got) {
            ASSERT_GE(s, 1);
            ASSERT_LE(s, capacity);
            ASSERT_TRUE(held.insert(s).second) << "slot " << s << " handed out twice";
          }
        }
      } else if (!held.empty()) {
        std::vector<int32_t> frees;
        for (int32_t s : held) {
          if (rng() % 2) frees.push_back(s);
        }
        std::shuffle(frees.begin(), frees.end(), rng);
        const bool spoil = rng() % 4 == 0;
        if (spoil) frees.push_back(rng() % 2 ? frees.empty() ? 0 : frees[0] : capacity + 1);
        const absl::Status status = allocator->Free(frees);
        if (spoil) {
          EXPECT_FALSE(status.ok());
        } else {
          ASSERT_TRUE(status.ok()) << status;
          for (int32_t s : frees) held.erase(s);
        }
      }
      ASSERT_EQ(allocator->used_count(), static_cast<int64_t>(held.size()));
      ASSERT_EQ(allocator->free_count(), capacity - static_cast<int64_t>(held.size()));
      for (int32_t s : held) ASSERT_TRUE(allocator->IsAllocated(s));
    }
  }
}

}  // namespace
}  // namespace int4kv
