// tests/plugin/plugins/bad_plugin.cc - deliberately broken plugins, one
// defect per build (the OpenXR loader-test pattern): each copy is compiled
// with exactly one CKB_BAD_* macro, and the host's tests assert the specific
// message it is rejected with.
//
//   CKB_BAD_NO_ENTRY           exports only ckptbridge_plugin_entry_v2
//   CKB_BAD_NULL_WITH_MESSAGE  entry returns NULL and says why
//   CKB_BAD_NULL_NO_MESSAGE    entry returns NULL and says nothing
//   CKB_BAD_ABI_MAJOR          descriptor claims ABI 2.0
//   CKB_BAD_ABI_MINOR          descriptor claims ABI 1.99
//   CKB_BAD_SMALL_STRUCT       descriptor struct_size 16
//   CKB_BAD_NULL_VTABLE        descriptor without a function table
//   CKB_BAD_NULL_CREATE        function table without create
//   CKB_BAD_NAME               name "Bad Name"
//   CKB_BAD_VERSION            version "1.0"
//   CKB_BAD_DUP_TYPES          model type "dup_x" listed twice
//   CKB_BAD_UNDEFINED          references a function nothing defines (linked
//                              without --no-undefined; RTLD_NOW must refuse it)
//   CKB_BAD_CREATE_FAILS       valid, but create returns what its config
//                              text says: "<status>" or "<status>:<message>"
//                              ("0" succeeds; "null" succeeds without an
//                              adapter); it has no apply_custom
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ckptbridge/plugin_abi.h"

namespace {

ckb_str S(const char* s) { return ckb_str{s, std::strlen(s)}; }

[[maybe_unused]] void Report(const ckb_error_sink* err, int32_t code, const std::string& message) {
  if (err != nullptr && err->set != nullptr) {
    err->set(err->ctx, code, ckb_str{message.data(), message.size()});
  }
}

int32_t Create(ckb_str /*model_type*/, ckb_str hf_config_json, ckb_adapter** out,
               const ckb_error_sink* err) {
#ifdef CKB_BAD_CREATE_FAILS
  std::string text(hf_config_json.data, hf_config_json.size);
  if (text == "null") return CKB_OK;  // "succeeds" without an adapter
  size_t colon = text.find(':');
  auto status = static_cast<int32_t>(std::strtol(text.c_str(), nullptr, 10));
  if (colon != std::string::npos) Report(err, status, text.substr(colon + 1));
  if (status == CKB_OK) {
    static int token;
    *out = reinterpret_cast<ckb_adapter*>(&token);
  }
  return status;
#else
  (void)hf_config_json;
  (void)err;
  static int token;
  *out = reinterpret_cast<ckb_adapter*>(&token);
  return CKB_OK;
#endif
}

void Destroy(ckb_adapter* /*adapter*/) {}

int32_t EnumerateRules(const ckb_adapter*, ckb_str, const ckb_rule_sink*, const ckb_error_sink*) {
  return CKB_OK;
}

int32_t TranslateConfig(const ckb_adapter*, int32_t, const ckb_text_sink* out,
                        const ckb_error_sink*) {
  out->text(out->ctx, S("{}"));
  return CKB_OK;
}

#ifdef CKB_BAD_UNDEFINED
extern "C" int ckb_test_function_nobody_defines(void);
#endif

ckb_plugin_vtable_v1 MakeVtable() {
  ckb_plugin_vtable_v1 v{};
  v.struct_size = sizeof(v);
  v.create = &Create;
  v.destroy = &Destroy;
  v.enumerate_rules = &EnumerateRules;
  v.translate_config = &TranslateConfig;
#ifdef CKB_BAD_NULL_CREATE
  v.create = nullptr;
#endif
  return v;
}

const ckb_plugin_vtable_v1 kVtable = MakeVtable();

#ifdef CKB_BAD_DUP_TYPES
const ckb_str kModelTypes[] = {S("dup_x"), S("dup_y"), S("dup_x")};
#else
const ckb_str kModelTypes[] = {S("bad_type")};
#endif

ckb_plugin_descriptor MakeDescriptor() {
  ckb_plugin_descriptor d{};
  d.struct_size = sizeof(d);
  d.abi_major = CKPTBRIDGE_ABI_MAJOR;
  d.abi_minor = CKPTBRIDGE_ABI_MINOR;
  d.name = S("badfam");
  d.version = S("0.0.1");
  d.model_types = kModelTypes;
  d.model_type_count = sizeof(kModelTypes) / sizeof(kModelTypes[0]);
  d.vtable = &kVtable;
#if defined(CKB_BAD_ABI_MAJOR)
  d.abi_major = 2;
#elif defined(CKB_BAD_ABI_MINOR)
  d.abi_minor = 99;
#elif defined(CKB_BAD_SMALL_STRUCT)
  d.struct_size = 16;
#elif defined(CKB_BAD_NULL_VTABLE)
  d.vtable = nullptr;
#elif defined(CKB_BAD_NAME)
  d.name = S("Bad Name");
#elif defined(CKB_BAD_VERSION)
  d.version = S("1.0");
#endif
  return d;
}

const ckb_plugin_descriptor kDescriptor = MakeDescriptor();

const ckb_plugin_descriptor* Entry(const ckb_host_api* /*host*/, const ckb_error_sink* err) {
#if defined(CKB_BAD_NULL_WITH_MESSAGE)
  Report(err, CKB_FAILED_PRECONDITION, "badfam needs a host built with CUDA support");
  return nullptr;
#elif defined(CKB_BAD_NULL_NO_MESSAGE)
  (void)err;
  return nullptr;
#elif defined(CKB_BAD_UNDEFINED)
  (void)err;
  return ckb_test_function_nobody_defines() ? &kDescriptor : nullptr;
#else
  (void)err;
  return &kDescriptor;
#endif
}

}  // namespace

#ifdef CKB_BAD_NO_ENTRY
// An ABI-2-only plugin: the right family of names, not the one this host asks for.
extern "C" __attribute__((visibility("default"))) const ckb_plugin_descriptor*
ckptbridge_plugin_entry_v2(const ckb_host_api* host, const ckb_error_sink* err) {
  return Entry(host, err);
}
#else
extern "C" __attribute__((visibility("default"))) const ckb_plugin_descriptor*
ckptbridge_plugin_entry_v1(const ckb_host_api* host, const ckb_error_sink* err) {
  return Entry(host, err);
}
#endif
