#include "host/base/shape.h"

#include <gtest/gtest.h>

namespace ckptbridge {
namespace {

TEST(ShapeTest, ElementsAndBytes) {
  EXPECT_EQ(*NumElements({}), 1);
  EXPECT_EQ(*NumElements({3, 0, 5}), 0);
  EXPECT_EQ(*NumElements({128256, 4096}), 525336576);
  EXPECT_EQ(*NumBytes({128256, 4096}, 2), 1050673152);
}

TEST(ShapeTest, RejectsNegativeAndOverflowingShapes) {
  Result<int64_t> neg = NumElements({4, -1});
  ASSERT_FALSE(neg.ok());
  EXPECT_EQ(neg.status().message(), "negative dimension in shape [4, -1]");
  EXPECT_FALSE(NumElements({int64_t{1} << 40, int64_t{1} << 40}).ok());
  // Fits as elements, overflows as bytes.
  EXPECT_TRUE(NumElements({int64_t{1} << 61}).ok());
  EXPECT_FALSE(NumBytes({int64_t{1} << 61}, 8).ok());
}

TEST(ShapeTest, StringsAndStrides) {
  EXPECT_EQ(ShapeString({256, 64}), "[256, 64]");
  EXPECT_EQ(ShapeString({256, 64}, /*compact=*/true), "[256,64]");
  EXPECT_EQ(ShapeString({}), "[]");
  EXPECT_EQ(RowMajorStrides({2, 3, 4}), (std::vector<int64_t>{12, 4, 1}));
}

}  // namespace
}  // namespace ckptbridge
