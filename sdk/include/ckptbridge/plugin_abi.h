/* ckptbridge/plugin_abi.h - the C boundary between the ckptbridge host and
 * model-family adapter plugins.
 *
 * A plugin is a shared object that exports exactly one symbol,
 * `ckptbridge_plugin_entry_v1`. The host calls it once, right after loading,
 * and gets back a descriptor: who the plugin is, which Hugging Face model
 * families it serves and a table of functions. Everything the host later asks
 * of the plugin goes through that table:
 *
 *   create          an adapter for one HF `config.json` (every dimension comes
 *                   from the config, never from a table of sizes)
 *   enumerate_rules the parameter mapping: one rule per MaxText tensor, saying
 *                   which HF tensors it is made of, how they stack (layers,
 *                   experts) and which chain of invertible ops turns one HF
 *                   slice into one MaxText slice
 *   translate_config HF config -> MaxText model settings, and the complete HF
 *                   `config.json` to write on export
 *   preset_config   the HF config of a MaxText model name (`--model NAME`)
 *   apply_custom    what no op can say (e.g. FP8 block dequantization), on
 *                   host-owned buffers, addressed by an id
 *
 * Rules are data, not code: the host plans and checks a whole conversion from
 * them before reading a byte, and inverts op chains itself for the MaxText ->
 * HF direction.
 *
 * Contract
 *  - Only C types cross: fixed-width integers, `ckb_str` (UTF-8, borrowed for
 *    the duration of the call unless stated otherwise), POD structs whose first
 *    field is their own size, opaque handles, function pointers with a `ctx`.
 *    No C++ types, no exceptions: every function is noexcept in spirit and
 *    reports failure through its status and the error sink.
 *  - The host owns every buffer it hands in; the plugin never returns heap
 *    memory for the host to free. Variable-size results leave through `emit`
 *    callbacks, during which the host copies what it needs.
 *  - Plugins are never unloaded, so static plugin data (the descriptor, family
 *    names, string literals) may be borrowed for the life of the process.
 *  - This header is append-only. Struct fields are only ever added at the end;
 *    the host reads a field only when `offsetof(field) + sizeof(field) <=
 *    struct_size`. Enum values are never renumbered.
 *
 * Versioning
 *  - CKPTBRIDGE_ABI_MAJOR changes on any breaking change; the entry symbol
 *    carries it (`..._entry_v1`), so one binary can serve two majors.
 *  - CKPTBRIDGE_ABI_MINOR counts appended fields and functions. A descriptor's
 *    `abi_minor` is the minor the plugin *requires*: the host accepts a plugin
 *    when the majors are equal and the plugin's minor is not higher than its
 *    own. Appended fields are optional by design, so a plugin that merely
 *    fills them (say, sample configs) still requires minor 0 and loads in a
 *    1.0 host, which ignores what lies beyond the struct_size it knows.
 *
 * History
 *  - 1.0  the first ABI.
 *  - 1.1  ckb_plugin_descriptor.sample_configs: tiny HF configs per model
 *         type, from which `ckptbridge plugins check` synthesizes checkpoints.
 *  - 1.2  ckb_stack_axis.hf_leading: a stack axis may run along the leading
 *         axis of the HF tensors instead of a key placeholder (GPT-OSS keeps
 *         all experts of a layer in one tensor), so that one expert is one
 *         unit of work; CKB_RULE_KEEP_F32: a rule's tensors stay float32
 *         whatever the save dtype.
 *
 * Most authors never touch this file directly: the header-only helpers in
 * `ckptbridge/sdk/` build these tables from ordinary C++.
 */
#ifndef CKPTBRIDGE_PLUGIN_ABI_H_
#define CKPTBRIDGE_PLUGIN_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CKPTBRIDGE_ABI_MAJOR 1u
#define CKPTBRIDGE_ABI_MINOR 2u

/* The one exported symbol's name, for hosts that look it up by string. */
#define CKPTBRIDGE_PLUGIN_ENTRY_V1_NAME "ckptbridge_plugin_entry_v1"

/* ------------------------------------------------------------------------ */
/* Basic types                                                               */

/* A UTF-8 string that is not NUL-terminated. Borrowed: valid for the call it
 * is passed to (or, inside the descriptor, for the life of the process). */
typedef struct ckb_str {
  const char* data;
  size_t size;
} ckb_str;

/* Status codes. Mirror absl::StatusCode names; never renumbered. */
enum {
  CKB_OK = 0,
  CKB_INVALID_ARGUMENT = 1, /* bad config, bad options, bad tensor */
  CKB_NOT_FOUND = 2,        /* unknown family, model preset, transform id */
  CKB_UNSUPPORTED = 3,      /* understood but not converted (e.g. quantized) */
  CKB_FAILED_PRECONDITION = 4,
  CKB_INTERNAL = 5, /* plugin bug; also any escaped C++ exception */
  CKB_RESOURCE_EXHAUSTED = 6
};

/* Host-owned error sink. On failure a plugin calls `set` once with a message
 * in the house style (lowercase, no trailing period, naming the offending key
 * or shape). The host copies the text during the call. */
typedef struct ckb_error_sink {
  uint32_t struct_size;
  void* ctx;
  void (*set)(void* ctx, int32_t code, ckb_str message);
} ckb_error_sink;

/* Element types. Values are stable; names follow safetensors. */
enum {
  CKB_DTYPE_INVALID = 0,
  CKB_DTYPE_BOOL = 1,
  CKB_DTYPE_U8 = 2,
  CKB_DTYPE_I8 = 3,
  CKB_DTYPE_U16 = 4,
  CKB_DTYPE_I16 = 5,
  CKB_DTYPE_U32 = 6,
  CKB_DTYPE_I32 = 7,
  CKB_DTYPE_U64 = 8,
  CKB_DTYPE_I64 = 9,
  CKB_DTYPE_F16 = 10,
  CKB_DTYPE_BF16 = 11,
  CKB_DTYPE_F32 = 12,
  CKB_DTYPE_F64 = 13,
  CKB_DTYPE_F8_E4M3 = 14,
  CKB_DTYPE_F8_E5M2 = 15,
  CKB_DTYPE_F8_E8M0 = 16
};

/* What an axis means. Declared per axis of every tensor a rule names; the host
 * checks ranks against them and uses them to name axes in messages. */
enum {
  CKB_AXIS_OTHER = 0,
  CKB_AXIS_EMBED = 1, /* model width (hidden_size) */
  CKB_AXIS_VOCAB = 2,
  CKB_AXIS_HEADS = 3, /* query heads */
  CKB_AXIS_KV_HEADS = 4,
  CKB_AXIS_HEAD_DIM = 5,
  CKB_AXIS_MLP = 6, /* feed-forward width */
  CKB_AXIS_EXPERTS = 7,
  CKB_AXIS_LAYERS = 8,
  CKB_AXIS_FUSED = 9 /* several of the above merged, e.g. heads*head_dim */
};

/* Host services handed to the plugin at entry. */
typedef struct ckb_host_api {
  uint32_t struct_size;
  uint32_t abi_major;
  uint32_t abi_minor;
  ckb_str host_version; /* semver of the host binary */
  void* ctx;
  /* Optional (may be NULL): a line for the user, level 0 info, 1 warning. */
  void (*log)(void* ctx, int32_t level, ckb_str message);
} ckb_host_api;

/* A dense, C-contiguous, host-owned tensor. */
typedef struct ckb_tensor_view {
  uint32_t struct_size;
  int32_t dtype;
  int32_t rank;
  const int64_t* dims;
  void* data;
} ckb_tensor_view;

/* ------------------------------------------------------------------------ */
/* Rules                                                                     */

/* Op kinds. Each op maps one tensor to one tensor, except CONCAT (several
 * inputs -> one, only first in a chain), SPLIT (one -> several outputs, only
 * last in a chain) and CUSTOM (a plugin callback, only first in a chain). The
 * host derives every op's inverse for the MaxText -> HF direction, so a chain
 * of these is invertible by construction; CUSTOM is not. Axes are
 * non-negative and refer to the op's input tensor. */
enum {
  CKB_OP_TRANSPOSE = 1,    /* values = permutation; out dim i = in dim values[i] */
  CKB_OP_RESHAPE = 2,      /* values = new shape (row-major; same element count) */
  CKB_OP_SCALE = 3,        /* x * factor in f32; inverse x * inverse_factor */
  CKB_OP_ADD = 4,          /* x + factor in f32; inverse x - factor */
  CKB_OP_INTERLEAVE = 5,   /* on `axis` of even size D: out[2j] = in[j], out[2j+1] = in[j+D/2] */
  CKB_OP_DEINTERLEAVE = 6, /* inverse of INTERLEAVE */
  CKB_OP_PAD = 7,          /* grow `axis` to `size` with zeros; inverse TRUNCATE */
  CKB_OP_TRUNCATE = 8,     /* shrink `axis` to `size`; inverse PAD (lossy) */
  CKB_OP_CONCAT = 9,       /* join all rule inputs along `axis` */
  CKB_OP_SPLIT = 10,       /* cut along `axis` into pieces of `values` sizes */
  CKB_OP_CUSTOM = 11       /* plugin transform `custom_id`; output dims = values */
};

typedef struct ckb_op {
  uint32_t struct_size;
  int32_t kind;
  int32_t axis;
  int32_t custom_id;
  const int64_t* values; /* permutation, shape, split sizes or custom output dims */
  size_t value_count;
  float factor;         /* SCALE / ADD */
  float inverse_factor; /* SCALE only: the factor the inverse multiplies by.
                           MaxText uses e.g. f32(1/sqrt(D)) forward and
                           f32(sqrt(D)) back, which is not 1/f32(1/sqrt(D)). */
  int64_t size;         /* PAD / TRUNCATE target size */
} ckb_op;

/* One tensor named by a rule. On the HF side `name` is a key template in which
 * `{layer}` and `{expert}` stand for the slice's HF layer / expert index, and
 * `dims` is the shape of one slice (one HF tensor). On the MaxText side `name`
 * is the parameter path inside the `params` collection, dot-separated
 * ("decoder.layers.mlp.wi_0.kernel"), and `dims` is the full stacked shape. */
typedef struct ckb_tensor_decl {
  uint32_t struct_size;
  ckb_str name;
  int32_t rank;
  const int64_t* dims;
  const int32_t* axis_meanings; /* rank entries of CKB_AXIS_*, or NULL */
} ckb_tensor_decl;

/* A stacked axis of the MaxText tensors of a rule: slice i along `mt_axis`
 * comes from HF index `hf_start + hf_stride * i` of the `{layer}` or
 * `{expert}` placeholder (meaning CKB_AXIS_LAYERS or CKB_AXIS_EXPERTS). */
typedef struct ckb_stack_axis {
  uint32_t struct_size;
  int32_t meaning;
  int32_t mt_axis;
  int64_t count;
  int64_t hf_start;
  int64_t hf_stride;
  /* ---- ABI 1.2 ---- */
  /* Nonzero: the slices are not separate HF tensors named through a
   * placeholder but the leading axis of every HF input of the rule, whose
   * declared dims then include that axis (size `count`; hf_start 0, stride
   * 1). GPT-OSS stores all experts of a layer as one [experts, ...] tensor;
   * declaring that axis here makes one expert one unit of work, so memory
   * does not grow with the number of experts. The rule's ops act on one
   * slice: the HF tensor without its leading axis. At most one stack axis of
   * a rule is leading. Zero (and a struct_size that does not reach this
   * field): the placeholder, as in ABI 1.0. */
  int32_t hf_leading;
} ckb_stack_axis;

/* Rule flags. */
enum {
  /* The rule applies only if its HF tensors are present in the source; when
   * none of them is, it is skipped without error. */
  CKB_RULE_OPTIONAL = 1u << 0,
  /* Reading/writing this rule is lossy by definition (truncation, custom). */
  CKB_RULE_LOSSY = 1u << 1,
  /* Since ABI 1.2: the rule's output tensors are written as float32 whatever
   * the save dtype (parameters MaxText keeps in f32, such as Qwen3-Next's
   * A_log). A plugin that sets it requires minor 2. */
  CKB_RULE_KEEP_F32 = 1u << 2
};

typedef struct ckb_rule {
  uint32_t struct_size;
  uint32_t flags;
  const ckb_tensor_decl* const* hf_inputs; /* one or more */
  size_t hf_input_count;
  const ckb_tensor_decl* const* mt_outputs; /* one or more */
  size_t mt_output_count;
  const ckb_stack_axis* const* stack_axes; /* zero, one (layers or experts) or two */
  size_t stack_axis_count;
  const ckb_op* const* ops; /* HF slice -> MaxText slice, in order */
  size_t op_count;
} ckb_rule;

/* Tensors the plugin knows about but deliberately does not convert (a tied
 * `lm_head` copy, rotary `inv_freq` buffers, MTP layers...). `pattern` is a
 * glob over source tensor names (`*` matches any run of characters) on the
 * side given by `side`. Matching tensors are skipped and counted in a notice
 * instead of failing strict accounting. */
enum { CKB_SIDE_HF = 0, CKB_SIDE_MAXTEXT = 1 };

typedef struct ckb_ignore {
  uint32_t struct_size;
  int32_t side;
  ckb_str pattern;
  ckb_str reason;
} ckb_ignore;

/* Alternative names. Some checkpoints of a family name their tensors
 * differently from what the rules use (Gemma3's released files say
 * `language_model.model.` where transformers says `model.language_model.`).
 * A source tensor whose name starts with `from_prefix` is read as if it
 * started with `to_prefix` instead; outputs always use the rules' names. */
typedef struct ckb_rename {
  uint32_t struct_size;
  int32_t side; /* CKB_SIDE_HF */
  ckb_str from_prefix;
  ckb_str to_prefix;
} ckb_rename;

/* Receives the rule set. The pointers are valid only during each call. A
 * plugin calls a callback only if `struct_size` covers it and it is not NULL
 * (an older host may not have it). */
typedef struct ckb_rule_sink {
  uint32_t struct_size;
  void* ctx;
  void (*rule)(void* ctx, const ckb_rule* rule);
  void (*ignore)(void* ctx, const ckb_ignore* ignore);
  void (*rename)(void* ctx, const ckb_rename* rename);
} ckb_rule_sink;

/* Receives a string result (JSON text), possibly in several pieces that the
 * host concatenates. Valid only during the call. */
typedef struct ckb_text_sink {
  uint32_t struct_size;
  void* ctx;
  void (*text)(void* ctx, ckb_str text);
} ckb_text_sink;

/* ------------------------------------------------------------------------ */
/* The plugin                                                                */

typedef struct ckb_adapter ckb_adapter; /* opaque, plugin-owned */

enum { CKB_TO_MAXTEXT = 0, CKB_TO_HF = 1 };

typedef struct ckb_plugin_vtable_v1 {
  uint32_t struct_size;

  /* An adapter for `model_type` (one of the descriptor's families) configured
   * by the HF `config.json` text. Lives until destroy(). */
  int32_t (*create)(ckb_str model_type, ckb_str hf_config_json, ckb_adapter** out,
                    const ckb_error_sink* err);
  void (*destroy)(ckb_adapter* adapter);

  /* The rules for one conversion. `options_json` is a JSON object; keys the
   * plugin does not know are ignored. Keys defined in ABI 1.0:
   *   "direction":   "to_maxtext" | "to_hf"
   *   "scan_layers": true | false
   *   "multimodal":  true | false  (convert vision towers too; default false)
   *   "mtp":         true | false  (convert multi-token-prediction layers; default false) */
  int32_t (*enumerate_rules)(const ckb_adapter* adapter, ckb_str options_json,
                             const ckb_rule_sink* sink, const ckb_error_sink* err);

  /* CKB_TO_MAXTEXT: the MaxText model settings as a JSON object
   *   ({"base_emb_dim": 4096, "base_num_query_heads": 32, ...}).
   * CKB_TO_HF: the complete HF config.json to write on export. */
  int32_t (*translate_config)(const ckb_adapter* adapter, int32_t direction,
                              const ckb_text_sink* out, const ckb_error_sink* err);

  /* The HF config.json of a MaxText model name (e.g. "llama3.1-8b"), or
   * CKB_NOT_FOUND. May be NULL when the plugin has no presets. */
  int32_t (*preset_config)(ckb_str model_name, const ckb_text_sink* out, const ckb_error_sink* err);

  /* Custom transform `custom_id` of a rule (CKB_OP_CUSTOM). Inputs are the
   * rule's HF slices in their source dtypes; outputs are host-allocated with
   * the op's declared dims and dtype F32. Every buffer is C-contiguous and
   * aligned to at least 8 bytes. May be NULL when no rule uses one. */
  int32_t (*apply_custom)(const ckb_adapter* adapter, int32_t custom_id,
                          const ckb_tensor_view* const* inputs, size_t input_count,
                          const ckb_tensor_view* const* outputs, size_t output_count,
                          const ckb_error_sink* err);
} ckb_plugin_vtable_v1;

/* Descriptor flags. */
enum {
  /* apply_custom may be called concurrently on one adapter. */
  CKB_PLUGIN_THREAD_SAFE_ADAPTERS = 1u << 0
};

/* Since ABI 1.1. A complete HF config.json for one model type of the plugin,
 * small enough to convert in milliseconds (a couple of layers, widths of a few
 * dozen) yet exercising every rule of its variant: the conformance kit
 * (`ckptbridge plugins check`) synthesizes random checkpoints from it and
 * converts them both ways. Give one per model type and per structurally
 * different variant (dense / MoE, tied / untied embeddings, ...). */
typedef struct ckb_sample_config {
  uint32_t struct_size;
  ckb_str model_type;  /* one of the descriptor's model_types */
  ckb_str variant;     /* a short label, unique per model type: "base", "moe" */
  ckb_str config_json; /* the config.json text */
} ckb_sample_config;

typedef struct ckb_plugin_descriptor {
  uint32_t struct_size;
  uint32_t abi_major;         /* must equal the host's */
  uint32_t abi_minor;         /* minimum host minor this plugin needs */
  ckb_str name;               /* "llama" */
  ckb_str version;            /* semver, "1.0.0" */
  ckb_str description;        /* one line for `ckptbridge plugins` */
  const ckb_str* model_types; /* HF `model_type` values served: "llama", "mistral" */
  size_t model_type_count;
  const ckb_str* architectures; /* HF `architectures[0]` values served (may be empty) */
  size_t architecture_count;
  const ckb_str* model_presets; /* MaxText model names preset_config() knows */
  size_t model_preset_count;
  uint64_t flags;
  const ckb_plugin_vtable_v1* vtable;
  /* ---- ABI 1.1 (a host reads these only when struct_size covers them) ---- */
  /* Sample configs for the conformance kit; may be empty. An array of
   * pointers, so that ckb_sample_config itself can grow. */
  const ckb_sample_config* const* sample_configs;
  size_t sample_config_count;
} ckb_plugin_descriptor;

/* The entry point. Returns NULL and reports through `err` when it cannot serve
 * this host (e.g. a different ABI major). */
typedef const ckb_plugin_descriptor* (*ckb_plugin_entry_v1_fn)(const ckb_host_api* host,
                                                               const ckb_error_sink* err);

#ifdef __cplusplus
}
#endif

#endif /* CKPTBRIDGE_PLUGIN_ABI_H_ */
