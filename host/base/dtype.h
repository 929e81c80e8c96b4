// host/base/dtype.h - element types and their names in every format we speak.
//
// DType values equal the CKB_DTYPE_* values of the plugin ABI, so they cross
// the boundary unchanged. Each format spells them differently:
//
//   DType      safetensors  zarr v3 / TensorStore   zarr v2      torch_dtype
//   kBF16      "BF16"       "bfloat16"              "bfloat16"   "bfloat16"
//   kF32       "F32"        "float32"               "<f4"        "float32"
//   kI64       "I64"        "int64"                 "<i8"        "int64"
//   ...
#ifndef CKPTBRIDGE_HOST_BASE_DTYPE_H_
#define CKPTBRIDGE_HOST_BASE_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "ckptbridge/plugin_abi.h"

namespace ckptbridge {

enum class DType : int32_t {
  kInvalid = CKB_DTYPE_INVALID,
  kBool = CKB_DTYPE_BOOL,
  kU8 = CKB_DTYPE_U8,
  kI8 = CKB_DTYPE_I8,
  kU16 = CKB_DTYPE_U16,
  kI16 = CKB_DTYPE_I16,
  kU32 = CKB_DTYPE_U32,
  kI32 = CKB_DTYPE_I32,
  kU64 = CKB_DTYPE_U64,
  kI64 = CKB_DTYPE_I64,
  kF16 = CKB_DTYPE_F16,
  kBF16 = CKB_DTYPE_BF16,
  kF32 = CKB_DTYPE_F32,
  kF64 = CKB_DTYPE_F64,
  kF8E4M3 = CKB_DTYPE_F8_E4M3,
  kF8E5M2 = CKB_DTYPE_F8_E5M2,
  kF8E8M0 = CKB_DTYPE_F8_E8M0,
};

// Bytes per element (1 for kBool); 0 for kInvalid.
size_t DTypeSize(DType dtype);

// True for the floating-point types (including the 8-bit ones).
bool IsFloating(DType dtype);

// A DType from its ABI value, or nullopt for a value this host does not know.
std::optional<DType> DTypeFromAbi(int32_t value);

// The safetensors name ("BF16", "F8_E4M3", ...).
std::string_view SafetensorsName(DType dtype);
std::optional<DType> DTypeFromSafetensorsName(std::string_view name);

// The zarr v3 `data_type` / TensorStore name ("bfloat16", "float32",
// "float8_e4m3fn", "int64", "bool", ...). Also what we print to users and
// accept for --save-dtype.
std::string_view ZarrName(DType dtype);
std::optional<DType> DTypeFromZarrName(std::string_view name);

// The zarr v2 `dtype` string as TensorStore writes it ("<f4", "|b1",
// "bfloat16", ...).
std::string_view ZarrV2Name(DType dtype);
std::optional<DType> DTypeFromZarrV2Name(std::string_view name);

// A transformers `torch_dtype` value ("bfloat16", "float16", "float32") to a
// DType; nullopt for anything else.
std::optional<DType> DTypeFromTorchName(std::string_view name);

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_DTYPE_H_
