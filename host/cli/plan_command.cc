// `ckptbridge plan`: a dry run from headers only.
#include <filesystem>
#include <string>
#include <system_error>

#include "host/check/estimate.h"
#include "host/check/open.h"
#include "host/cli/commands.h"
#include "host/cli/format.h"
#include "host/engine/execute.h"
#include "host/formats/safetensors/writer.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kHelp =
    R"(Usage: ckptbridge plan --to maxtext|hf [options] SOURCE [DESTINATION]

A dry run of `convert`, reading only headers and metadata: the plugin and
rules convert would use, every output tensor (name, shape, dtype, chunking or
shard, bytes), the shards, the bytes read and written, the predicted peak
memory and the disk space the output needs. Takes convert's options.

With DESTINATION, the plan is refused (exit 1) when the free disk space there
is too small, naming --save-dtype bfloat16 when that would fit; with
--max-memory, when a slice alone needs more than the budget, naming the least
--max-memory that holds.

Examples:
  ckptbridge plan --to maxtext path/to/Llama-3.1-8B
  ckptbridge plan --to maxtext --max-memory 16GiB path/to/Llama-3.1-70B /data/out
  ckptbridge plan --to hf --max-shard-size 5GB out/mt/0/items

Options)";

struct Totals {
  uint64_t bytes_bf16 = 0;  // the output written as bfloat16
};

std::string Dtype(DType d) { return std::string(ZarrName(d)); }

// The existing directory that will hold `path`.
fs::path ExistingAncestor(fs::path path) {
  std::error_code ec;
  path = fs::absolute(path, ec);
  while (!path.empty() && !fs::exists(path, ec)) {
    if (path == path.parent_path()) break;
    path = path.parent_path();
  }
  return path;
}

}  // namespace

void PrintPlanSummary(const engine::Plan& plan, int threads, uint64_t max_shard_bytes,
                      std::ostream& out, uint64_t max_memory) {
  const bool to_maxtext = plan.direction == engine::Direction::kToMaxText;
  out << "plan: " << plan.units.size() << " slices, read " << HumanBytes(plan.read_bytes) << " in "
      << (to_maxtext ? plan.hf_tensors.size() : plan.mt_tensors.size()) << " tensors, write "
      << HumanBytes(plan.write_bytes) << " in "
      << (to_maxtext ? plan.mt_tensors.size() : plan.hf_tensors.size()) << " tensors";
  Result<check::PlanEstimate> e =
      check::Estimate(plan, threads, max_shard_bytes, engine::MaxMemoryOrDefault(max_memory));
  if (!e.ok()) {
    out << '\n';
    return;
  }
  if (!e->shards.empty()) out << " (" << e->shards.size() << " shards)";
  out << "; peak memory ~" << HumanBytes(e->peak_memory) << " with " << e->threads
      << " threads (largest slice "
      << HumanBytes(e->unit_memory.empty() ? 0 : e->unit_memory.front()) << "), disk "
      << HumanBytes(e->disk_bytes) << '\n';
}

int RunPlanCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  po::options_description options(kHelp);
  // clang-format off
  options.add_options()
      ("help,h", "Show this help")
      ("to", po::value<std::string>()->value_name("maxtext|hf"), "Direction, as for convert. Required")
      ("scan-layers", po::bool_switch(), "As for convert")
      ("no-scan-layers", po::bool_switch(), "As for convert")
      ("save-dtype", po::value<std::string>()->value_name("DTYPE"), "As for convert")
      ("max-shard-size", po::value<std::string>()->value_name("SIZE")->default_value("3GiB"),
       "To HF: largest safetensors shard")
      ("max-memory", po::value<std::string>()->value_name("SIZE"),
       "As for convert (default: a quarter of the physical memory); refused when a slice "
       "alone needs more")
      ("threads", po::value<int>()->value_name("N")->default_value(0),
       "Worker threads convert would use; 0 is every core")
      ("hf-config", po::value<std::string>()->value_name("FILE"), "As for convert")
      ("model", po::value<std::string>()->value_name("NAME"), "As for convert")
      ("family", po::value<std::string>()->value_name("PLUGIN"), "As for convert")
      ("multimodal", po::bool_switch(), "As for convert")
      ("mtp", po::bool_switch(), "As for convert")
      ("overwrite", po::bool_switch(), "DESTINATION may exist (convert --overwrite)")
      ("summary", po::bool_switch(), "Only the totals, not every tensor");
  // clang-format on
  AddPluginOptions(options);
  po::options_description hidden;
  hidden.add_options()("paths", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("paths", -1);
  po::variables_map vars;
  if (!ParseArgs(args, "plan", all, positional, vars, err)) return 2;
  if (vars.count("help")) {
    out << options << '\n';
    return 0;
  }
  auto usage = [&](const std::string& message) {
    err << "ckptbridge plan: " << message << "\nsee `ckptbridge plan --help`\n";
    return 2;
  };
  const std::vector<std::string> paths = vars.count("paths")
                                             ? vars["paths"].as<std::vector<std::string>>()
                                             : std::vector<std::string>{};
  if (!vars.count("to")) return usage("--to maxtext or --to hf is required");
  if (paths.empty() || paths.size() > 2) {
    return usage("expected SOURCE [DESTINATION], got " + std::to_string(paths.size()) + " paths");
  }
  const std::string to = vars["to"].as<std::string>();
  engine::Direction direction;
  if (to == "maxtext") {
    direction = engine::Direction::kToMaxText;
  } else if (to == "hf" || to == "huggingface") {
    direction = engine::Direction::kToHf;
  } else {
    return usage("--to '" + to + "' is not maxtext or hf");
  }
  check::OpenOptions open;
  open.source = paths[0];
  if (vars["scan-layers"].as<bool>() && vars["no-scan-layers"].as<bool>()) {
    return usage("--scan-layers and --no-scan-layers contradict each other");
  }
  if (vars["scan-layers"].as<bool>()) open.scan_layers = true;
  if (vars["no-scan-layers"].as<bool>()) open.scan_layers = false;
  if (vars.count("save-dtype")) open.save_dtype = vars["save-dtype"].as<std::string>();
  if (vars.count("hf-config")) open.hf_config_file = vars["hf-config"].as<std::string>();
  if (vars.count("model")) open.model_name = vars["model"].as<std::string>();
  if (vars.count("family")) open.family = vars["family"].as<std::string>();
  if (vars["multimodal"].as<bool>()) open.plugin_options["multimodal"] = true;
  if (vars["mtp"].as<bool>()) open.plugin_options["mtp"] = true;
  const int threads = vars["threads"].as<int>();
  if (threads < 0) return usage("--threads must be 0 or more");
  Result<uint64_t> shard = ParseSize(vars["max-shard-size"].as<std::string>(), "--max-shard-size");
  if (!shard.ok()) return ReportError(err, "plan", shard.status());
  std::optional<uint64_t> max_memory;
  if (vars.count("max-memory")) {
    Result<uint64_t> m = ParseSize(vars["max-memory"].as<std::string>(), "--max-memory");
    if (!m.ok()) return ReportError(err, "plan", m.status());
    max_memory = *m;
  }
  std::error_code ec;
  if (!fs::exists(open.source, ec)) {
    return ReportError(err, "plan", NotFound(open.source.string() + ": no such file or directory"));
  }

  Result<PluginRegistry> plugins = DiscoverPlugins(vars);
  if (!plugins.ok()) return ReportError(err, "plan", plugins.status());
  // Plan as convert does: units too large for the budget cut into blocks.
  open.max_unit_memory = engine::UnitMemoryLimit(max_memory.value_or(engine::DefaultMaxMemory()));
  Result<check::Opened> opened = check::OpenSource(open, direction, *plugins);
  if (!opened.ok()) return ReportError(err, "plan", opened.status());
  const engine::Plan& plan = opened->plan;
  Result<check::PlanEstimate> estimate =
      check::Estimate(plan, threads, *shard, max_memory.value_or(engine::DefaultMaxMemory()));
  if (!estimate.ok()) return ReportError(err, "plan", estimate.status());
  const check::PlanEstimate& e = *estimate;
  const bool to_maxtext = direction == engine::Direction::kToMaxText;

  out << "plan: " << paths[0] << " -> " << (to_maxtext ? "MaxText" : "Hugging Face")
      << " with plugin " << opened->plugin_label << " (" << opened->model_type << ", "
      << (opened->scan ? "scanned" : "unscanned") << ")\n";
  for (const engine::IgnoredGroup& g : plan.ignored) {
    out << "skips " << g.names.size() << " tensor" << (g.names.size() == 1 ? "" : "s") << " ("
        << g.reason << "): " << g.names[0] << (g.names.size() > 1 ? ", ..." : "") << '\n';
  }

  Totals totals;
  std::map<std::string, std::string> shard_of;
  if (!to_maxtext) {
    std::vector<safetensors::TensorSpec> specs;
    for (const engine::HfTensor& hf : plan.hf_tensors)
      specs.push_back({hf.name, hf.dtype, hf.shape});
    Result<safetensors::ShardPlan> shards = safetensors::PlanShards(std::move(specs), *shard);
    if (shards.ok()) {
      for (const auto& [name, where] : shards->location)
        shard_of[name] = shards->shards[where.first].file_name;
    }
  }
  std::vector<std::vector<std::string>> rows;
  if (to_maxtext) {
    rows.push_back({"TENSOR", "SHAPE", "DTYPE", "CHUNK", "BYTES"});
    for (const engine::MtTensor& mt : plan.mt_tensors) {
      const uint64_t n = static_cast<uint64_t>(NumElementsUnchecked(mt.shape));
      totals.bytes_bf16 += n * 2;
      rows.push_back({mt.name, ShapeString(mt.shape), Dtype(mt.dtype), ShapeString(mt.chunk_shape),
                      HumanBytes(n * DTypeSize(mt.dtype))});
    }
  } else {
    rows.push_back({"TENSOR", "SHAPE", "DTYPE", "SHARD", "BYTES"});
    for (const engine::HfTensor& hf : plan.hf_tensors) {
      const uint64_t n = static_cast<uint64_t>(NumElementsUnchecked(hf.shape));
      totals.bytes_bf16 += n * 2;
      rows.push_back({hf.name, ShapeString(hf.shape), Dtype(hf.dtype), shard_of[hf.name],
                      HumanBytes(n * DTypeSize(hf.dtype))});
    }
  }
  if (!vars["summary"].as<bool>()) PrintTable(out, rows);
  if (!e.shards.empty()) {
    out << "shards:\n";
    for (const check::PlannedShardFile& s : e.shards) {
      out << "  " << s.file_name << "  " << s.tensors << " tensors, " << HumanBytes(s.bytes)
          << '\n';
    }
  }
  out << "read:   " << HumanBytes(e.read_bytes) << " in "
      << (to_maxtext ? plan.hf_tensors.size() : plan.mt_tensors.size()) << " tensors\n"
      << "write:  " << HumanBytes(e.write_bytes) << " in "
      << (to_maxtext ? plan.mt_tensors.size() : plan.hf_tensors.size()) << " tensors, " << e.units
      << " slices\n"
      << "memory: peak ~" << HumanBytes(e.peak_memory) << " with " << e.threads
      << " threads within a budget of " << HumanBytes(e.max_memory) << " (largest slice "
      << HumanBytes(e.unit_memory.empty() ? 0 : e.unit_memory[0]) << ")\n"
      << "disk:   " << HumanBytes(e.disk_bytes)
      << " at the destination, staged next to it and renamed into place (no other scratch)\n";

  int refused = 0;
  if (max_memory) {
    const check::MemoryFit fit = check::FitMemory(e, *max_memory);
    if (!fit.fits) {
      err << "ckptbridge plan: --max-memory " << HumanBytes(*max_memory)
          << " is smaller than the largest slice, which needs " << HumanBytes(fit.largest)
          << " and would run alone above the budget; --max-memory " << HumanBytes(fit.largest)
          << " is the least that holds\n";
      refused = 1;
    }
  }
  if (paths.size() == 2) {
    const fs::path destination = paths[1];
    if (fs::exists(destination, ec) && !vars["overwrite"].as<bool>()) {
      err << "ckptbridge plan: " << destination.string()
          << " exists; convert would refuse it without --overwrite\n";
      refused = 1;
    }
    const fs::path where = ExistingAncestor(destination);
    const fs::space_info space = fs::space(where, ec);
    if (!ec) {
      out << "free:   " << HumanBytes(space.available) << " at " << where.string() << '\n';
      const check::DiskFit fit = check::FitDisk(e, totals.bytes_bf16, space.available);
      if (!fit.fits) {
        err << "ckptbridge plan: the output needs " << HumanBytes(e.disk_bytes) << " but "
            << where.string() << " has " << HumanBytes(space.available) << " free; ";
        if (fit.bf16_fits) {
          err << "--save-dtype bfloat16 fits (" << HumanBytes(fit.bf16_bytes) << ")\n";
        } else {
          err << "free " << HumanBytes(fit.shortfall) << " more, or choose another destination\n";
        }
        refused = 1;
      }
    }
  }
  return refused;
}

}  // namespace ckptbridge::cli
