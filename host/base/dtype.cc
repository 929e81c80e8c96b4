#include "host/base/dtype.h"

#include <array>

namespace ckptbridge {
namespace {

struct DTypeInfo {
  DType dtype;
  size_t size;
  bool floating;
  std::string_view safetensors;
  std::string_view zarr;
  std::string_view zarr_v2;
};

constexpr std::array<DTypeInfo, 16> kDTypes = {{
    {DType::kBool, 1, false, "BOOL", "bool", "|b1"},
    {DType::kU8, 1, false, "U8", "uint8", "|u1"},
    {DType::kI8, 1, false, "I8", "int8", "|i1"},
    {DType::kU16, 2, false, "U16", "uint16", "<u2"},
    {DType::kI16, 2, false, "I16", "int16", "<i2"},
    {DType::kU32, 4, false, "U32", "uint32", "<u4"},
    {DType::kI32, 4, false, "I32", "int32", "<i4"},
    {DType::kU64, 8, false, "U64", "uint64", "<u8"},
    {DType::kI64, 8, false, "I64", "int64", "<i8"},
    {DType::kF16, 2, true, "F16", "float16", "<f2"},
    {DType::kBF16, 2, true, "BF16", "bfloat16", "bfloat16"},
    {DType::kF32, 4, true, "F32", "float32", "<f4"},
    {DType::kF64, 8, true, "F64", "float64", "<f8"},
    {DType::kF8E4M3, 1, true, "F8_E4M3", "float8_e4m3fn", "float8_e4m3fn"},
    {DType::kF8E5M2, 1, true, "F8_E5M2", "float8_e5m2", "float8_e5m2"},
    {DType::kF8E8M0, 1, true, "F8_E8M0", "float8_e8m0fnu", "float8_e8m0fnu"},
}};

const DTypeInfo* Find(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return &info;
  }
  return nullptr;
}

}  // namespace

size_t DTypeSize(DType dtype) {
  const DTypeInfo* info = Find(dtype);
  return info ? info->size : 0;
}

bool IsFloating(DType dtype) {
  const DTypeInfo* info = Find(dtype);
  return info && info->floating;
}

std::optional<DType> DTypeFromAbi(int32_t value) {
  for (const auto& info : kDTypes) {
    if (static_cast<int32_t>(info.dtype) == value) return info.dtype;
  }
  return std::nullopt;
}

std::string_view SafetensorsName(DType dtype) {
  const DTypeInfo* info = Find(dtype);
  return info ? info->safetensors : "INVALID";
}

std::optional<DType> DTypeFromSafetensorsName(std::string_view name) {
  for (const auto& info : kDTypes) {
    if (info.safetensors == name) return info.dtype;
  }
  return std::nullopt;
}

std::string_view ZarrName(DType dtype) {
  const DTypeInfo* info = Find(dtype);
  return info ? info->zarr : "invalid";
}

std::optional<DType> DTypeFromZarrName(std::string_view name) {
  for (const auto& info : kDTypes) {
    if (info.zarr == name) return info.dtype;
  }
  return std::nullopt;
}

std::string_view ZarrV2Name(DType dtype) {
  const DTypeInfo* info = Find(dtype);
  return info ? info->zarr_v2 : "invalid";
}

std::optional<DType> DTypeFromZarrV2Name(std::string_view name) {
  for (const auto& info : kDTypes) {
    if (info.zarr_v2 == name) return info.dtype;
  }
  // Single-byte types are endian-free; writers use '|' or '<' for them.
  if (name == "<b1") return DType::kBool;
  if (name == "<u1") return DType::kU8;
  if (name == "<i1") return DType::kI8;
  return std::nullopt;
}

std::optional<DType> DTypeFromTorchName(std::string_view name) {
  if (name.substr(0, 6) == "torch.") name.remove_prefix(6);
  if (name == "bfloat16") return DType::kBF16;
  if (name == "float16" || name == "half") return DType::kF16;
  if (name == "float32" || name == "float") return DType::kF32;
  if (name == "float64" || name == "double") return DType::kF64;
  return std::nullopt;
}

}  // namespace ckptbridge
