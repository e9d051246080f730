#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/config/experiment.h"
#include "trainer/io/png.h"
#include "trainer/report/report.h"
#include "trainer/report/report_internal.h"
#include "trainer/run/trainer.h"
#include "trainer/writers/writer.h"

namespace fs = std::filesystem;

namespace {

// RFC 4648's decoding, written apart from kd's encoder.
std::string from_base64(const std::string& text) {
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int bits = 0, value = 0;
  for (const char c : text) {
    if (c == '=') break;
    value = (value << 6) | static_cast<int>(alphabet.find(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((value >> bits) & 0xff);
    }
  }
  return out;
}

// The page's chart data (its kd-data element), parsed.
nlohmann::json page_data(const std::string& html) {
  const std::string open = "<script type=\"application/json\" id=\"kd-data\">";
  const size_t begin = html.find(open);
  REQUIRE(begin != std::string::npos);
  const size_t end = html.find("</script>", begin);
  return nlohmann::json::parse(html.substr(begin + open.size(), end - begin - open.size()));
}

// A workdir as a run leaves it: metrics.jsonl, config.yaml, an image in TensorBoard's files.
fs::path make_workdir(const fs::path& dir, double scale) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.yaml") << "seed: 7\nmodel: {type: MLP, input_size: 4}\n";
  {
    kd::writers::JsonlWriter jsonl((dir / "metrics.jsonl").string());
    for (int64_t step : {10, 20, 30}) {
      jsonl.write_scalars(step, "train", {{"losses/xent", scale / step}, {"schedules/learning_rate", 0.1}});
    }
    jsonl.write_scalars(30, "test", {{"metrics/accuracy", 0.75}});
    jsonl.flush();
  }
  kd::writers::TensorBoardWriter tensorboard(dir.string());
  for (int64_t step : {10, 30}) {
    const auto image = torch::full({2, 3, 1}, step, torch::kUInt8);  // the newest is step 30's
    tensorboard.write_summaries(step, "train",
                                {{"summaries/images", kd::writers::SummaryRecord::Kind::kImages, kd::Tree(image)}});
  }
  tensorboard.flush();
  return dir;
}

std::string read_page_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("base64 as RFC 4648 gives it") {
  CHECK(kd::report::base64("") == "");
  CHECK(kd::report::base64("f") == "Zg==");
  CHECK(kd::report::base64("fo") == "Zm8=");
  CHECK(kd::report::base64("foo") == "Zm9v");
  CHECK(kd::report::base64("foob") == "Zm9vYg==");
  CHECK(kd::report::base64("fooba") == "Zm9vYmE=");
  CHECK(kd::report::base64("foobar") == "Zm9vYmFy");
  const std::string bytes = {'\0', '\xff', '\x10', '\x80'};
  CHECK(from_base64(kd::report::base64(bytes)) == bytes);
}

TEST_CASE("kd report's page holds every logged value, the latest ones, the experiment and the newest image") {
  const fs::path root = kd::testing::fresh_dir("kd_report_test_");
  const fs::path run = make_workdir(root / "run", 1.0);
  const std::string html = kd::report::render({run.string()});
  CHECK_THAT(html, Catch::StartsWith("<!-- kd report -->\n<!DOCTYPE html>"));
  CHECK(html.find("http://") == std::string::npos);                                // nothing to fetch: no network
  CHECK(html.find("https://") == html.find("https://github.com/danvk/dygraphs"));  // only dygraphs' license line

  const auto data = page_data(html);
  REQUIRE(data["runs"].size() == 1);
  CHECK(data["runs"][0]["name"] == "run");
  const auto& xent = data["runs"][0]["series"]["train"]["losses/xent"];
  REQUIRE(xent.size() == 3);
  CHECK(xent[0][0] == 10);
  CHECK(xent[0][1].get<double>() == Approx(0.1));
  CHECK(xent[2][1].get<double>() == Approx(1.0 / 30));
  CHECK(data["runs"][0]["series"]["test"]["metrics/accuracy"][0] == nlohmann::json::array({30, 0.75}));

  // The latest values (step 30's), the experiment, escaped.
  CHECK_THAT(html,
             Catch::Contains("<tr><td>losses/xent</td><td class=\"num\">0.0333333</td><td class=\"num\">30</td>"));
  CHECK_THAT(html, Catch::Contains("model: {type: MLP, input_size: 4}"));
  // The newest image of the tag, as its PNG, in the images' section.
  const size_t section = html.find("<section id=\"kd-images\">");
  const std::string images = html.substr(section, html.find("</section>", section) - section);
  const std::string uri = "src=\"data:image/png;base64,";
  const size_t at = images.find(uri);
  REQUIRE(at != std::string::npos);
  CHECK(images.find(uri, at + 1) == std::string::npos);  // one image: the newest of the tag
  const std::string png =
      from_base64(images.substr(at + uri.size(), images.find('"', at + uri.size()) - at - uri.size()));
  const torch::Tensor image = kd::io::decode_png(png);
  REQUIRE(image.sizes() == torch::IntArrayRef({2, 3, 1}));
  CHECK(image.flatten()[0].item<int>() == 30);
  CHECK_THAT(html, Catch::Contains("train · summaries/images · step 30"));
  fs::remove_all(root);
}

TEST_CASE("kd report shows several runs side by side, told apart by name, or by path when names clash") {
  const fs::path root = kd::testing::fresh_dir("kd_report_test_");
  const fs::path a = make_workdir(root / "a" / "run", 1.0), b = make_workdir(root / "b" / "run", 2.0);
  const auto data = page_data(kd::report::render({a.string(), b.string()}));
  REQUIRE(data["runs"].size() == 2);
  CHECK(data["runs"][0]["name"] == a.string());
  CHECK(data["runs"][1]["name"] == b.string());
  CHECK(data["runs"][1]["series"]["train"]["losses/xent"][0][1].get<double>() == Approx(0.2));
  const fs::path c = make_workdir(root / "c", 3.0);
  CHECK(page_data(kd::report::render({a.string(), c.string()}))["runs"][1]["name"] == "c");
  fs::remove_all(root);
}

TEST_CASE("the latest values are those of the highest step, whatever the order of the records") {
  const fs::path root = kd::testing::fresh_dir("kd_report_test_");
  const fs::path run = make_workdir(root / "run", 1.0);
  {  // kd eval --step=10 after the run: its record comes last in the file
    kd::writers::JsonlWriter jsonl((run / "metrics.jsonl").string());
    jsonl.write_scalars(10, "test", {{"metrics/accuracy", 0.5}});
  }
  const std::string html = kd::report::render({run.string()});
  CHECK_THAT(html,
             Catch::Contains("<tr><td>metrics/accuracy</td><td class=\"num\">0.75</td><td class=\"num\">30</td>"));
  CHECK_THROWS_WITH(kd::report::render({run.string(), (run / ".").string()}), Catch::Contains("is given twice"));
  fs::remove_all(root);
}

TEST_CASE("a tag or an experiment with markup cannot break out of the page") {
  const fs::path root = kd::testing::fresh_dir("kd_report_test_");
  fs::create_directories(root);
  std::ofstream(root / "config.yaml") << "note: \"</script><script>alert(1)</script>\"\n";
  {
    kd::writers::JsonlWriter jsonl((root / "metrics.jsonl").string());
    jsonl.write_scalars(1, "train", {{"losses/</script><b>x", 1.0}, {"losses/nan", std::nan("")}});
  }
  const std::string html = kd::report::render({root.string()});
  size_t scripts = 0;
  for (size_t at = html.find("</script>"); at != std::string::npos; at = html.find("</script>", at + 1)) ++scripts;
  CHECK(scripts == 3);  // the data's, dygraphs', report.js's
  CHECK(html.find("<b>x") == std::string::npos);
  CHECK_THAT(html, Catch::Contains("&lt;/script&gt;&lt;script&gt;alert(1)"));
  const auto data = page_data(html);
  CHECK(data["runs"][0]["series"]["train"].contains("losses/</script><b>x"));
  CHECK(data["runs"][0]["series"]["train"]["losses/nan"][0][1] == "NaN");  // JSON has no NaN: a gap
  fs::remove_all(root);
}

TEST_CASE("a metrics.jsonl cut short by a killed run is shown without its torn last line") {
  const fs::path root = kd::testing::fresh_dir("kd_report_test_");
  const fs::path run = make_workdir(root / "run", 1.0);
  std::ofstream(run / "metrics.jsonl", std::ios::app) << R"({"step": 40, "collection": "train", "losses/xe)";
  const std::string html = kd::report::render({run.string()});
  CHECK(page_data(html)["runs"][0]["series"]["train"]["losses/xent"].size() == 3);
  CHECK_THAT(html, Catch::Contains("cut short"));
  // Anything else malformed is an error naming the line.
  std::ofstream(run / "metrics.jsonl", std::ios::app) << "\n{\"step\": 50}\n";
  CHECK_THROWS_WITH(kd::report::render({run.string()}), Catch::Contains("metrics.jsonl:5: not a metrics record"));
  fs::remove_all(root);
}

TEST_CASE("kd report refuses what is not a workdir, and never replaces a file that is not a report") {
  const fs::path root = kd::testing::fresh_dir("kd_report_test_");
  fs::create_directories(root / "empty");
  CHECK_THROWS_AS(kd::report::render({(root / "missing").string()}), kd::ConfigError);
  CHECK_THROWS_WITH(kd::report::render({(root / "empty").string()}), Catch::Contains("neither metrics.jsonl"));
  const fs::path run = make_workdir(root / "run", 1.0);
  const fs::path mine = root / "notes.html";
  std::ofstream(mine) << "my own notes";
  CHECK_THROWS_WITH(kd::report::write({run.string()}, mine.string()), Catch::Contains("not a kd report"));
  CHECK(read_page_text(mine) == "my own notes");
  kd::report::write({run.string()}, mine.string(), /*overwrite=*/true);
  CHECK(kd::report::is_report(mine.string()));
  kd::report::write({run.string()}, mine.string());  // a report is replaced
  CHECK(kd::report::is_report(mine.string()));
  CHECK_THROWS_WITH(kd::report::write({run.string()}, root.string()), Catch::Contains("is a directory"));
  fs::remove_all(root);
}

TEST_CASE("writer.report keeps WORKDIR/report.html current, the final step and the model included") {
  const fs::path root = kd::testing::fresh_dir("kd_report_test_");
  fs::create_directories(root);
  std::ofstream(root / "exp.yaml") << R"(
seed: 0
num_train_steps: 30
log_metrics_every: 10
num_threads: 1
train_ds: {type: Synthetic, num_examples: 64, num_features: 4, num_classes: 2, batch_size: 16}
model: {type: MLP, input_size: 4, hidden_sizes: [8], output_size: 2}
train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels}}
optimizer: {type: sgd, learning_rate: 0.1}
writer: {report: true}
)";
  kd::train::Trainer(kd::config::load_experiment((root / "exp.yaml").string(), {{"workdir", (root / "wd").string()}}))
      .train();
  const fs::path page = root / "wd" / "report.html";
  REQUIRE(kd::report::is_report(page.string()));
  std::vector<std::string> warnings;
  const std::string html = read_page_text(page);
  const auto data = page_data(html);
  INFO(data.dump());
  const auto& xent = data["runs"][0]["series"]["train"]["losses/xent"];
  REQUIRE(xent.size() == 3);
  CHECK(xent[2][0] == 30);
  // The model table: MLP 4-8-2's params (4*8 + 8 + 8*2 + 2 = 58).
  CHECK_THAT(html, Catch::Contains("<td>layers.0.weight</td><td>float32[8, 4]</td>") &&
                       Catch::Contains("<td class=\"num\">58</td>"));

  // A report.html that is not a kd report is left alone, with one warning.
  fs::create_directories(root / "wd3");
  std::ofstream(root / "wd3" / "report.html") << "my notes";
  auto writer =
      kd::report::make_report_writer((root / "wd3").string(), [&](const std::string& w) { warnings.push_back(w); });
  writer->write_scalars(1, "train", {{"losses/xent", 1.0}});
  writer->flush();
  CHECK(read_page_text(root / "wd3" / "report.html") == "my notes");
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("is not a kd report"));

  CHECK_THROWS_WITH(
      kd::train::Trainer(kd::config::load_experiment(
          (root / "exp.yaml").string(), {{"workdir", (root / "wd2").string()}, {"writer.jsonl", "false"}})),
      Catch::Contains("writer.report draws its charts from metrics.jsonl"));
  fs::remove_all(root);
}
