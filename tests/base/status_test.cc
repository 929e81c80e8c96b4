#include "host/base/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace ckptbridge {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  CKB_ASSIGN_OR_RETURN(int half, Half(x));
  CKB_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

TEST(StatusTest, MacrosPropagateTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "3 is odd");
}

TEST(StatusTest, ExitCodesSeparateBadInputFromFailure) {
  EXPECT_EQ(ExitCodeFor(Status::Ok()), 0);
  EXPECT_EQ(ExitCodeFor(InvalidArgument("x")), 2);
  EXPECT_EQ(ExitCodeFor(NotFound("x")), 2);
  EXPECT_EQ(ExitCodeFor(Unsupported("x")), 2);
  EXPECT_EQ(ExitCodeFor(DataLoss("x")), 2);
  EXPECT_EQ(ExitCodeFor(FailedPrecondition("x")), 2);
  EXPECT_EQ(ExitCodeFor(IoError("x")), 1);
  EXPECT_EQ(ExitCodeFor(Internal("x")), 1);
  EXPECT_EQ(ExitCodeFor(ResourceExhausted("x")), 1);
}

TEST(StatusTest, ContextAndErrno) {
  EXPECT_EQ(NotFound("gone").WithContext("a.json").message(), "a.json: gone");
  EXPECT_EQ(ErrnoError("/x", ENOSPC).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoError("/x", ENOENT).code(), StatusCode::kNotFound);
  EXPECT_EQ(ErrnoError("/x", EACCES).message(), "/x: Permission denied");
}

}  // namespace
}  // namespace ckptbridge
