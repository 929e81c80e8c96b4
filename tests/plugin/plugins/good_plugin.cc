// tests/plugin/plugins/good_plugin.cc - a well-behaved plugin for the host's
// loader and adapter tests, written against plugin_abi.h alone (no SDK
// helpers), so the tests exercise the raw C boundary.
//
// Family "testfam" serves model types test_a and test_b. Built with
// TESTFAM_OTHER it is "otherfam" serving test_b and test_c instead, to test a
// model type claimed by two plugins. The version comes from
// ckptbridge_add_plugin(VERSION), so copies differ only there.
//
// Test hooks (the host tests need to reach paths a real plugin never takes):
//  - the config's "num_layers" sets the layer count; a negative one fails
//    create with CKB_INVALID_ARGUMENT;
//  - rule options containing "bad":"<case>" make enumerate_rules emit one
//    malformed rule or ignore entry (see EmitBadRule);
//  - preset "live-adapters" returns how many adapters exist, so tests can
//    check that the host destroys what it creates; preset "empty" returns OK
//    without text.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ckptbridge/plugin_abi.h"

#ifndef CKPTBRIDGE_PLUGIN_VERSION
#define CKPTBRIDGE_PLUGIN_VERSION "1.0.0"
#endif

struct ckb_adapter {
  std::string model_type;
  int64_t layers = 2;
};

namespace {

int live_adapters = 0;

ckb_str S(const char* s) { return ckb_str{s, std::strlen(s)}; }

int32_t Fail(const ckb_error_sink* err, int32_t code, const std::string& message) {
  if (err != nullptr && err->set != nullptr)
    err->set(err->ctx, code, ckb_str{message.data(), message.size()});
  return code;
}

std::string ToString(ckb_str s) { return s.data ? std::string(s.data, s.size) : std::string(); }

// The integer after "key": in a JSON text; `fallback` when absent. Enough
// JSON for a test plugin.
int64_t IntField(const std::string& json, const char* key, int64_t fallback) {
  std::string quoted = std::string("\"") + key + "\"";
  size_t at = json.find(quoted);
  if (at == std::string::npos) return fallback;
  at = json.find(':', at + quoted.size());
  if (at == std::string::npos) return fallback;
  return std::strtoll(json.c_str() + at + 1, nullptr, 10);
}

#ifdef TESTFAM_OTHER
const char kName[] = "otherfam";
const ckb_str kModelTypes[] = {S("test_b"), S("test_c")};
const ckb_str kArchitectures[] = {S("OtherForCausalLM")};
const ckb_str kPresets[] = {S("other-small")};
#else
const char kName[] = "testfam";
const ckb_str kModelTypes[] = {S("test_a"), S("test_b")};
const ckb_str kArchitectures[] = {S("TestForCausalLM"), S("TestBForCausalLM")};
const ckb_str kPresets[] = {S("test-small"), S("test-large")};
#endif

bool Serves(const std::string& type) {
  for (const ckb_str& t : kModelTypes) {
    if (ToString(t) == type) return true;
  }
  return false;
}

int32_t Create(ckb_str model_type, ckb_str hf_config_json, ckb_adapter** out,
               const ckb_error_sink* err) {
  std::string type = ToString(model_type);
  if (!Serves(type)) return Fail(err, CKB_NOT_FOUND, "unknown model type '" + type + "'");
  int64_t layers = IntField(ToString(hf_config_json), "num_layers", 2);
  if (layers <= 0) {
    return Fail(err, CKB_INVALID_ARGUMENT,
                "config.json: num_layers must be positive, got " + std::to_string(layers));
  }
  *out = new ckb_adapter{type, layers};
  ++live_adapters;
  return CKB_OK;
}

void Destroy(ckb_adapter* adapter) {
  --live_adapters;
  delete adapter;
}

// --- Rules ----------------------------------------------------------------

// Builders for the C structs; everything lives on EnumerateRules' stack,
// which is enough because the host copies during the callback.
ckb_tensor_decl Decl(const char* name, int32_t rank, const int64_t* dims, const int32_t* meanings) {
  return ckb_tensor_decl{sizeof(ckb_tensor_decl), S(name), rank, dims, meanings};
}

ckb_op Op(int32_t kind, const int64_t* values = nullptr, size_t count = 0) {
  ckb_op op{};
  op.struct_size = sizeof(ckb_op);
  op.kind = kind;
  op.values = values;
  op.value_count = count;
  return op;
}

ckb_stack_axis Stack(int32_t meaning, int32_t mt_axis, int64_t count, int64_t start = 0,
                     int64_t stride = 1) {
  return ckb_stack_axis{sizeof(ckb_stack_axis), meaning, mt_axis, count, start, stride, 0};
}

struct RuleParts {
  const ckb_tensor_decl* hf[2] = {};
  size_t hf_count = 0;
  const ckb_tensor_decl* mt[2] = {};
  size_t mt_count = 0;
  const ckb_stack_axis* stack[2] = {};
  size_t stack_count = 0;
  const ckb_op* ops[4] = {};
  size_t op_count = 0;
  uint32_t flags = 0;

  ckb_rule Rule() const {
    return ckb_rule{sizeof(ckb_rule), flags, hf,          hf_count, mt,
                    mt_count,         stack, stack_count, ops,      op_count};
  }
};

void Emit(const ckb_rule_sink* sink, const RuleParts& parts) {
  ckb_rule rule = parts.Rule();
  sink->rule(sink->ctx, &rule);
}

// One malformed rule or ignore entry per case, named "decoder.bad.kernel" so
// the host's message can name it.
void EmitBadRule(const std::string& which, const ckb_rule_sink* sink) {
  static const int64_t kDims[] = {4, 4};
  static const int64_t kNegative[] = {4, -1};
  static const int32_t kBadMeanings[] = {CKB_AXIS_EMBED, 42};
  static const int64_t kPerm[] = {1, 0};
  static const int64_t kSplit[] = {2, 2};
  ckb_tensor_decl hf = Decl("model.bad.weight", 2, kDims, nullptr);
  ckb_tensor_decl mt = Decl("decoder.bad.kernel", 2, kDims, nullptr);
  ckb_op op = Op(CKB_OP_TRANSPOSE, kPerm, 2);
  ckb_op split = Op(CKB_OP_SPLIT, kSplit, 2);
  ckb_stack_axis stack = Stack(CKB_AXIS_LAYERS, 0, 4);
  RuleParts parts;
  parts.hf[0] = &hf;
  parts.hf_count = 1;
  parts.mt[0] = &mt;
  parts.mt_count = 1;
  parts.ops[0] = &op;
  parts.op_count = 1;
  if (which == "op_kind") {
    op.kind = 42;
  } else if (which == "op_size") {
    op.struct_size = 8;
  } else if (which == "split_first") {
    split.axis = 1;
    parts.ops[0] = &split;
    parts.ops[1] = &op;
    parts.op_count = 2;
  } else if (which == "stack_meaning") {
    stack.meaning = CKB_AXIS_HEADS;
    parts.stack[0] = &stack;
    parts.stack_count = 1;
  } else if (which == "stack_axis") {
    stack.mt_axis = 5;
    parts.stack[0] = &stack;
    parts.stack_count = 1;
  } else if (which == "stack_count") {
    stack.count = 0;
    parts.stack[0] = &stack;
    parts.stack_count = 1;
  } else if (which == "leading_start") {
    stack.hf_leading = 1;
    stack.hf_start = 2;
    parts.stack[0] = &stack;
    parts.stack_count = 1;
  } else if (which == "neg_dim") {
    hf.dims = kNegative;
  } else if (which == "axis_meaning") {
    mt.axis_meanings = kBadMeanings;
  } else if (which == "no_input") {
    parts.hf_count = 0;
  } else if (which == "empty_name") {
    hf.name = S("");
  } else if (which == "ignore_side") {
    ckb_ignore ignore{sizeof(ckb_ignore), 7, S("model.*"), S("")};
    sink->ignore(sink->ctx, &ignore);
    return;
  } else if (which == "rename_side") {
    ckb_rename rename{sizeof(ckb_rename), CKB_SIDE_MAXTEXT, S("a."), S("b.")};
    sink->rename(sink->ctx, &rename);
    return;
  } else if (which == "rename_empty") {
    ckb_rename rename{sizeof(ckb_rename), CKB_SIDE_HF, S(""), S("b.")};
    sink->rename(sink->ctx, &rename);
    return;
  }
  Emit(sink, parts);
}

int32_t EnumerateRules(const ckb_adapter* adapter, ckb_str options_json, const ckb_rule_sink* sink,
                       const ckb_error_sink* err) {
  std::string options = ToString(options_json);
  const std::string bad_key = "\"bad\":\"";
  if (size_t at = options.find(bad_key); at != std::string::npos) {
    size_t begin = at + bad_key.size();
    std::string which = options.substr(begin, options.find('"', begin) - begin);
    if (which == "fail") return Fail(err, CKB_UNSUPPORTED, "scan_layers=false is not supported");
    if (which == "fail_silently") return CKB_INTERNAL;
    EmitBadRule(which, sink);
    return CKB_OK;
  }
  const int64_t layers = adapter->layers;

  // Embedding: a plain copy.
  static const int64_t kEmbed[] = {16, 8};
  static const int32_t kEmbedMeanings[] = {CKB_AXIS_VOCAB, CKB_AXIS_EMBED};
  ckb_tensor_decl embed_hf = Decl("model.embed_tokens.weight", 2, kEmbed, kEmbedMeanings);
  ckb_tensor_decl embed_mt = Decl("token_embedder.embedding", 2, kEmbed, kEmbedMeanings);
  RuleParts embed;
  embed.hf[0] = &embed_hf;
  embed.hf_count = 1;
  embed.mt[0] = &embed_mt;
  embed.mt_count = 1;
  Emit(sink, embed);

  // Query: transpose, reshape into heads, scale; stacked over layers.
  static const int64_t kQHf[] = {8, 8};
  static const int32_t kQHfMeanings[] = {CKB_AXIS_FUSED, CKB_AXIS_EMBED};
  const int64_t q_mt_dims[] = {8, layers, 2, 4};
  static const int32_t kQMtMeanings[] = {CKB_AXIS_EMBED, CKB_AXIS_LAYERS, CKB_AXIS_HEADS,
                                         CKB_AXIS_HEAD_DIM};
  static const int64_t kPerm[] = {1, 0};
  static const int64_t kHeads[] = {8, 2, 4};
  ckb_tensor_decl q_hf =
      Decl("model.layers.{layer}.self_attn.q_proj.weight", 2, kQHf, kQHfMeanings);
  ckb_tensor_decl q_mt =
      Decl("decoder.layers.self_attention.query.kernel", 4, q_mt_dims, kQMtMeanings);
  ckb_stack_axis q_stack = Stack(CKB_AXIS_LAYERS, 1, layers);
  ckb_op q_transpose = Op(CKB_OP_TRANSPOSE, kPerm, 2);
  ckb_op q_reshape = Op(CKB_OP_RESHAPE, kHeads, 3);
  ckb_op q_scale = Op(CKB_OP_SCALE);
  q_scale.factor = 0.5f;
  q_scale.inverse_factor = 2.0f;
  RuleParts query;
  query.hf[0] = &q_hf;
  query.hf_count = 1;
  query.mt[0] = &q_mt;
  query.mt_count = 1;
  query.stack[0] = &q_stack;
  query.stack_count = 1;
  query.ops[0] = &q_transpose;
  query.ops[1] = &q_reshape;
  query.ops[2] = &q_scale;
  query.op_count = 3;
  Emit(sink, query);

  // Experts: two stack axes, the layer one with a start and a stride.
  static const int64_t kExpertHf[] = {6, 8};
  const int64_t expert_mt_dims[] = {4, layers, 8, 6};
  static const int32_t kExpertMeanings[] = {CKB_AXIS_EXPERTS, CKB_AXIS_LAYERS, CKB_AXIS_EMBED,
                                            CKB_AXIS_MLP};
  ckb_tensor_decl expert_hf =
      Decl("model.layers.{layer}.mlp.experts.{expert}.w1.weight", 2, kExpertHf, nullptr);
  ckb_tensor_decl expert_mt = Decl("decoder.layers.moe.wi_0", 4, expert_mt_dims, kExpertMeanings);
  ckb_stack_axis expert_stack = Stack(CKB_AXIS_EXPERTS, 0, 4);
  ckb_stack_axis layer_stack = Stack(CKB_AXIS_LAYERS, 1, layers, 1, 2);
  ckb_op expert_transpose = Op(CKB_OP_TRANSPOSE, kPerm, 2);
  RuleParts experts;
  experts.flags = CKB_RULE_OPTIONAL;
  experts.hf[0] = &expert_hf;
  experts.hf_count = 1;
  experts.mt[0] = &expert_mt;
  experts.mt_count = 1;
  experts.stack[0] = &expert_stack;
  experts.stack[1] = &layer_stack;
  experts.stack_count = 2;
  experts.ops[0] = &expert_transpose;
  experts.op_count = 1;
  Emit(sink, experts);

  // Fused gate/up: split into two MaxText tensors.
  static const int64_t kGateUpHf[] = {12, 8};
  const int64_t wi_dims[] = {8, layers, 6};
  static const int64_t kSplit[] = {6, 6};
  ckb_tensor_decl gate_up_hf =
      Decl("model.layers.{layer}.mlp.gate_up_proj.weight", 2, kGateUpHf, nullptr);
  ckb_tensor_decl wi0 = Decl("decoder.layers.mlp.wi_0.kernel", 3, wi_dims, nullptr);
  ckb_tensor_decl wi1 = Decl("decoder.layers.mlp.wi_1.kernel", 3, wi_dims, nullptr);
  ckb_stack_axis gate_up_stack = Stack(CKB_AXIS_LAYERS, 1, layers);
  ckb_op gate_up_transpose = Op(CKB_OP_TRANSPOSE, kPerm, 2);
  ckb_op gate_up_split = Op(CKB_OP_SPLIT, kSplit, 2);
  gate_up_split.axis = 1;
  RuleParts gate_up;
  gate_up.hf[0] = &gate_up_hf;
  gate_up.hf_count = 1;
  gate_up.mt[0] = &wi0;
  gate_up.mt[1] = &wi1;
  gate_up.mt_count = 2;
  gate_up.stack[0] = &gate_up_stack;
  gate_up.stack_count = 1;
  gate_up.ops[0] = &gate_up_transpose;
  gate_up.ops[1] = &gate_up_split;
  gate_up.op_count = 2;
  Emit(sink, gate_up);

  // LM head: pad the vocabulary, transpose, add a constant; lossy.
  static const int64_t kHeadHf[] = {16, 8};
  static const int64_t kHeadMt[] = {8, 20};
  ckb_tensor_decl head_hf = Decl("lm_head.weight", 2, kHeadHf, nullptr);
  ckb_tensor_decl head_mt = Decl("decoder.logits_dense.kernel", 2, kHeadMt, nullptr);
  ckb_op head_pad = Op(CKB_OP_PAD);
  head_pad.axis = 0;
  head_pad.size = 20;
  ckb_op head_transpose = Op(CKB_OP_TRANSPOSE, kPerm, 2);
  ckb_op head_add = Op(CKB_OP_ADD);
  head_add.factor = 1.5f;
  RuleParts head;
  head.flags = CKB_RULE_LOSSY;
  head.hf[0] = &head_hf;
  head.hf_count = 1;
  head.mt[0] = &head_mt;
  head.mt_count = 1;
  head.ops[0] = &head_pad;
  head.ops[1] = &head_transpose;
  head.ops[2] = &head_add;
  head.op_count = 3;
  Emit(sink, head);

  // A custom transform with two inputs.
  static const int64_t kFp8[] = {2, 2};
  static const int64_t kScale[] = {1, 1};
  ckb_tensor_decl fp8_weight = Decl("model.fp8.weight", 2, kFp8, nullptr);
  ckb_tensor_decl fp8_scale = Decl("model.fp8.weight_scale_inv", 2, kScale, nullptr);
  ckb_tensor_decl fp8_mt = Decl("decoder.fp8.kernel", 2, kFp8, nullptr);
  ckb_op custom = Op(CKB_OP_CUSTOM, kFp8, 2);
  custom.custom_id = 7;
  RuleParts fp8;
  fp8.flags = CKB_RULE_LOSSY;
  fp8.hf[0] = &fp8_weight;
  fp8.hf[1] = &fp8_scale;
  fp8.hf_count = 2;
  fp8.mt[0] = &fp8_mt;
  fp8.mt_count = 1;
  fp8.ops[0] = &custom;
  fp8.op_count = 1;
  Emit(sink, fp8);

  ckb_ignore inv_freq{sizeof(ckb_ignore), CKB_SIDE_HF,
                      S("model.layers.*.self_attn.rotary_emb.inv_freq"),
                      S("recomputed from rope_theta")};
  ckb_ignore mtp{sizeof(ckb_ignore), CKB_SIDE_MAXTEXT, S("decoder.mtp.*"), S("")};
  sink->ignore(sink->ctx, &inv_freq);
  sink->ignore(sink->ctx, &mtp);
  // Released checkpoints of this made-up family say "orig." for "model.".
  ckb_rename orig{sizeof(ckb_rename), CKB_SIDE_HF, S("orig."), S("model.")};
  sink->rename(sink->ctx, &orig);
  return CKB_OK;
}

// --- Config -----------------------------------------------------------------

void Text(const ckb_text_sink* out, const std::string& text) {
  out->text(out->ctx, ckb_str{text.data(), text.size()});
}

int32_t TranslateConfig(const ckb_adapter* adapter, int32_t direction, const ckb_text_sink* out,
                        const ckb_error_sink* err) {
  const std::string layers = std::to_string(adapter->layers);
  if (direction == CKB_TO_MAXTEXT) {
    Text(out, "{\"base_emb_dim\": 8, \"base_num_decoder_layers\": " + layers + "}");
    return CKB_OK;
  }
  if (direction == CKB_TO_HF) {
    // Two pieces: the host must concatenate what the sink receives.
    Text(out, "{\"model_type\": \"" + adapter->model_type + "\", ");
    Text(out, "\"num_layers\": " + layers + "}");
    return CKB_OK;
  }
  return Fail(err, CKB_INVALID_ARGUMENT, "unknown direction " + std::to_string(direction));
}

int32_t PresetConfig(ckb_str model_name, const ckb_text_sink* out, const ckb_error_sink* err) {
  std::string name = ToString(model_name);
  if (name == "test-small" || name == "other-small") {
    Text(out, "{\"model_type\": \"" + ToString(kModelTypes[0]) + "\", \"num_layers\": 2}");
  } else if (name == "test-large") {
    Text(out, "{\"model_type\": \"" + ToString(kModelTypes[0]) + "\", \"num_layers\": 4}");
  } else if (name == "live-adapters") {
    Text(out, std::to_string(live_adapters));
  } else if (name == "silent") {
    return CKB_NOT_FOUND;
  } else if (name != "empty") {
    return Fail(err, CKB_NOT_FOUND, "unknown model '" + name + "'");
  }
  return CKB_OK;
}

// --- Custom transform 7: output = 2 * input, f32 ----------------------------

int64_t Elements(const ckb_tensor_view* view) {
  int64_t n = 1;
  for (int32_t i = 0; i < view->rank; ++i) n *= view->dims[i];
  return n;
}

int32_t ApplyCustom(const ckb_adapter* /*adapter*/, int32_t custom_id,
                    const ckb_tensor_view* const* inputs, size_t input_count,
                    const ckb_tensor_view* const* outputs, size_t output_count,
                    const ckb_error_sink* err) {
  if (custom_id != 7) {
    return Fail(err, CKB_NOT_FOUND, "unknown custom transform " + std::to_string(custom_id));
  }
  if (input_count < 1 || output_count != 1) {
    return Fail(err, CKB_INVALID_ARGUMENT,
                "custom transform 7 takes at least 1 input and exactly 1 output, got " +
                    std::to_string(input_count) + " and " + std::to_string(output_count));
  }
  const ckb_tensor_view* in = inputs[0];
  const ckb_tensor_view* out = outputs[0];
  if (in->dtype != CKB_DTYPE_F32) {
    return Fail(
        err, CKB_INVALID_ARGUMENT,
        "custom transform 7: input 0 has dtype " + std::to_string(in->dtype) + ", expected f32");
  }
  if (Elements(in) != Elements(out)) {
    return Fail(err, CKB_INVALID_ARGUMENT, "custom transform 7: input and output sizes differ");
  }
  const float* src = static_cast<const float*>(in->data);
  float* dst = static_cast<float*>(out->data);
  for (int64_t i = 0; i < Elements(in); ++i) dst[i] = 2.0f * src[i];
  return CKB_OK;
}

const ckb_plugin_vtable_v1 kVtable = {
    sizeof(ckb_plugin_vtable_v1),
    &Create,
    &Destroy,
    &EnumerateRules,
    &TranslateConfig,
    &PresetConfig,
    &ApplyCustom,
};

const ckb_plugin_descriptor kDescriptor = {
    sizeof(ckb_plugin_descriptor),
    CKPTBRIDGE_ABI_MAJOR,
    CKPTBRIDGE_ABI_MINOR,
    S(kName),
    S(CKPTBRIDGE_PLUGIN_VERSION),
    S("test family for the host's plugin tests"),
    kModelTypes,
    sizeof(kModelTypes) / sizeof(kModelTypes[0]),
    kArchitectures,
    sizeof(kArchitectures) / sizeof(kArchitectures[0]),
    kPresets,
    sizeof(kPresets) / sizeof(kPresets[0]),
    0,
    &kVtable,
    nullptr,  // sample_configs (ABI 1.1): none
    0,
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const ckb_plugin_descriptor*
ckptbridge_plugin_entry_v1(const ckb_host_api* host, const ckb_error_sink* err) {
  if (host == nullptr || host->abi_major != CKPTBRIDGE_ABI_MAJOR) {
    Fail(err, CKB_FAILED_PRECONDITION, "this plugin needs ABI 1");
    return nullptr;
  }
  return &kDescriptor;
}
