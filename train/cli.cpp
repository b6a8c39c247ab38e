#include "train/cli.h"

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "nn/mixers.h"

namespace tapelm::train {

namespace {

// The flag of a --config key (a model or run field's key, or a flag name
// with '_' for '-'), and whether that field holds one value (not a list).
struct ConfigKey {
  std::string flag;
  bool single_value = false;
};
ConfigKey flag_of_key(const std::string& key) {
  for (const nn::ConfigField& f : nn::config_fields())
    if (f.key == key && !f.flag.empty()) return {f.flag, true};
  for (const RunField& f : run_fields())
    if (f.key == key) return {f.flag, !std::holds_alternative<std::vector<std::string> TrainOptions::*>(f.member)};
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  for (const nn::ConfigField& f : nn::config_fields())  // a flag name ("n-layer", "context")
    if (f.flag == flag) return {flag, true};
  for (const RunField& f : run_fields())
    if (f.flag == flag) return flag_of_key(f.key);
  return {flag, false};  // a flag of its own subcommand (compare's lists) or an unknown one, which CLI11 names
}

template <class S>
void add_field_flags(CLI::App* app, S& s, const std::vector<Field<S>>& fields, const std::string& skip = "") {
  for (const Field<S>& f : fields) {
    if (f.flag.empty() || f.flag == skip) continue;
    std::string help = f.help;
    if (!f.choices.empty()) help += fmt::format(": {}", fmt::join(f.choices, ", "));
    if (f.flag == "--mixer") help += ": " + nn::mixer_names();
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(s.*member)>;
          CLI::Option* o = app->add_option(f.flag, s.*member, help)->capture_default_str();
          if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            o->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
          } else if constexpr (!std::is_same_v<T, bool>) {
            // The field's domain, checked as the flag is parsed, so the error names the flag.
            o->check(CLI::Validator(
                [f](std::string& text) -> std::string {
                  T v{};
                  if (!CLI::detail::lexical_conversion<T, T>({text}, v)) return "";  // CLI11 reports the type
                  return domain_error(f, v);
                },
                ""));
          }
        },
        f.member);
  }
}

}  // namespace

std::vector<std::string> expand_config(std::vector<std::string> args, size_t first_flag) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string path;
    size_t n_erase = 0;
    if (args[i] == "--config" && i + 1 < args.size())
      path = args[i + 1], n_erase = 2;
    else if (args[i].rfind("--config=", 0) == 0)
      path = args[i].substr(9), n_erase = 1;
    if (path.empty()) continue;
    std::ifstream in(path);
    TAPELM_CHECK(in.good(), "--config: cannot read {}", path);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      throw Error(fmt::format("--config: {} is not valid JSON: {}", path, e.what()));
    }
    TAPELM_CHECK(j.is_object(), "--config: {} must hold a JSON object of flag names", path);
    std::vector<std::string> from_file;
    std::map<std::string, std::pair<std::string, nlohmann::json>> seen;  // flag -> the key and value that set it
    for (auto& [key, value] : j.items()) {
      const auto [flag, single_value] = flag_of_key(key);
      TAPELM_CHECK(!single_value || !value.is_array(), "--config: {}: '{}' takes one value, got the list {}", path, key,
                   value.dump());
      if (auto [it, fresh] = seen.try_emplace(flag, key, value); !fresh)
        TAPELM_CHECK(it->second.second == value, "--config: {}: '{}' and '{}' both set {}, to {} and {}", path,
                     it->second.first, key, flag, it->second.second.dump(), value.dump());
      auto one = [&](const nlohmann::json& v) {
        const std::string text = v.is_string() ? v.get<std::string>() : v.dump();
        if (!text.empty()) return from_file.push_back(flag + "=" + text);  // "=": a text like "---" stays a value
        // CLI11 reads "--flag=" as wanting the next argument (an empty --doc-sep took the flag after it as
        // its value): an empty string goes apart from its flag.
        from_file.push_back(flag);
        from_file.push_back("");
      };
      if (value.is_array())
        for (auto& v : value) one(v);
      else
        one(value);
    }
    args.erase(args.begin() + i, args.begin() + i + n_erase);
    args.insert(args.begin() + std::min(first_flag, args.size()), from_file.begin(), from_file.end());
    break;
  }
  return args;
}

void add_model_flags(CLI::App* app, nn::ModelConfig& model, bool with_mixer) {
  add_field_flags(app, model, nn::config_fields(), with_mixer ? "" : "--mixer");
}

void add_run_flags(CLI::App* app, TrainOptions& run) {
  add_field_flags(app, run, run_fields());
  app->get_option("--data")->required();
}

void add_sample_flags(CLI::App* app, SampleOptions& sample) { add_field_flags(app, sample, sample_fields()); }

std::vector<std::string> given_model_keys(const CLI::App* app) {
  std::vector<std::string> keys;
  for (const nn::ConfigField& f : nn::config_fields())
    if (!f.flag.empty() && app->get_option_no_throw(f.flag) && app->count(f.flag)) keys.push_back(f.key);
  return keys;
}

std::vector<std::string> given_run_keys(const CLI::App* app) {
  std::vector<std::string> keys;
  for (const RunField& f : run_fields())
    if (!f.flag.empty() && app->get_option_no_throw(f.flag) && app->count(f.flag)) keys.push_back(f.key);
  return keys;
}

nn::ModelConfig model_from_flags(const CLI::App* app, const nn::ModelConfig& model) {
  nn::ModelConfig c = nn::with_recipe(model, given_model_keys(app));
  nn::check_config(c);
  return c;
}

}  // namespace tapelm::train
