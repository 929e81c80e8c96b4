// host/base/status.h - Status and Result<T>: how errors travel inside the host.
//
// Every fallible function in the host returns a Status (no value) or a
// Result<T> (a value or a Status). Exceptions never cross component
// boundaries; the few places that call throwing libraries (nlohmann::json,
// Boost) catch at the call site and turn the exception into a Status.
//
// A Status carries a code and a message. Messages follow the house style:
// lowercase, no trailing period, naming the file, tensor and both sides of a
// mismatch, e.g.
//   model-00002-of-00004.safetensors: tensor 'model.norm.weight': data_offsets
//   [0, 100) exceed the 64-byte data section
//
// Codes decide the process exit code (ExitCodeFor): problems with what the
// user gave us (bad usage, bad or unsupported input) exit 2, failures while
// doing the work (I/O, internal) exit 1.
//
//   Result<Index> r = ReadIndex(path);
//   if (!r.ok()) return r.status();
//   Index& index = *r;
//
// or, with the macros below,
//
//   CKB_ASSIGN_OR_RETURN(Index index, ReadIndex(path));
//   CKB_RETURN_IF_ERROR(Check(index));
#ifndef CKPTBRIDGE_HOST_BASE_STATUS_H_
#define CKPTBRIDGE_HOST_BASE_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace ckptbridge {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad usage or malformed input
  kNotFound,            // a file, tensor, plugin or family that is not there
  kUnsupported,         // understood, but not something we convert
  kFailedPrecondition,  // e.g. destination exists without --overwrite
  kDataLoss,            // corrupt input: bad checksum, bad compressed frame
  kIoError,             // the OS refused a read or write
  kResourceExhausted,   // out of memory or disk
  kCancelled,           // interrupted by a signal
  kInternal,            // a bug in ckptbridge or a plugin
};

// The name of a code, e.g. "invalid argument".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // A copy with `context` prepended: "context: message".
  Status WithContext(std::string_view context) const;

  // Marks a status as deliberately ignored.
  void IgnoreError() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Shorthands, one per code.
Status InvalidArgument(std::string message);
Status NotFound(std::string message);
Status Unsupported(std::string message);
Status FailedPrecondition(std::string message);
Status DataLoss(std::string message);
Status IoError(std::string message);
Status ResourceExhausted(std::string message);
Status Cancelled(std::string message);
Status Internal(std::string message);

// An I/O error naming `what` (usually a path) and the text of errno `err`.
Status ErrnoError(std::string_view what, int err);

// The process exit code for a status: 0 ok, 2 for bad usage or bad input
// (invalid argument, not found, unsupported, failed precondition, data loss),
// 1 for everything else.
int ExitCodeFor(const Status& status);

// Result<T>: a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "Result constructed from an OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T&& operator*() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace ckptbridge

#define CKB_STATUS_CONCAT_INNER_(a, b) a##b
#define CKB_STATUS_CONCAT_(a, b) CKB_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function if `expr` (a Status) is not OK.
#define CKB_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::ckptbridge::Status ckb_status_ = (expr); \
    if (!ckb_status_.ok()) return ckb_status_; \
  } while (0)

// Evaluates `rexpr` (a Result<T>); on error returns its status, otherwise
// moves the value into `lhs` (which may be a declaration).
#define CKB_ASSIGN_OR_RETURN(lhs, rexpr) \
  CKB_ASSIGN_OR_RETURN_IMPL_(CKB_STATUS_CONCAT_(ckb_result_, __LINE__), lhs, rexpr)
#define CKB_ASSIGN_OR_RETURN_IMPL_(result, lhs, rexpr) \
  auto result = (rexpr);                               \
  if (!result.ok()) return result.status();            \
  lhs = std::move(result).value()

#endif  // CKPTBRIDGE_HOST_BASE_STATUS_H_
