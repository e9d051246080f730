// kd report end to end: pages of real runs, rendered by headless Chromium.
#include <set>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "tests/e2e/helpers.h"
#include "trainer/io/png.h"

using namespace kd_e2e;

namespace {

// Chromium, headless, on `page`: its DOM after the scripts ran (`args` "--dump-dom"), or a
// screenshot (`args` "--screenshot=FILE"). A profile of its own, so that tests run side by side.
Result chromium(const fs::path& page, const std::string& args, const fs::path& profile) {
  INFO("Chromium is needed to render kd report's pages: install Debian's chromium (scripts/setup does)");
  REQUIRE(std::string(KD_CHROMIUM) != "");
  return run_command(std::string(KD_CHROMIUM) +
                     " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars --no-first-run "
                     "--user-data-dir=" +
                     profile.string() + " --window-size=1400,2400 --virtual-time-budget=10000 " + args + " file://" +
                     page.string() + " 2>/dev/null");
}

// The distinct tags of a workdir's metrics.jsonl.
std::set<std::string> logged_tags(const fs::path& workdir) {
  std::set<std::string> tags;
  for (const auto& record : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    for (const auto& [tag, value] : record.values) tags.insert(tag);
  }
  return tags;
}

}  // namespace

TEST_CASE("kd report draws a chart per logged tag for two runs, in headless Chromium, with their images") {
  const fs::path root = fresh_dir();
  const std::string images =
      " '--cfg.train_summaries={images: {type: ShowImages, images: batch.image, num_images: 3, in_vrange: [0, 1]}}'";
  const fs::path a = root / "a", b = root / "b";
  Result r = run_kd("train " + small_mlp(a) + images + " --cfg.writer.report=true");
  INFO(r.output);
  REQUIRE(r.code == 0);
  r = run_kd("train " + small_mlp(b) + " --cfg.optimizer.learning_rate=3e-4");
  REQUIRE(r.code == 0);
  // writer.report kept a's page; kd report draws both.
  REQUIRE(fs::exists(a / "report.html"));
  const fs::path page = root / "both.html";
  r = run_kd("report --workdir=" + a.string() + " --workdir=" + b.string() + " --out=" + page.string());
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("wrote " + page.string() + " (2 runs)"));

  std::set<std::string> tags = logged_tags(a);
  for (const auto& t : logged_tags(b)) tags.insert(t);
  REQUIRE(tags.size() >= 8);  // losses, metrics, schedules, perf_stats

  const Result dom = chromium(page, "--dump-dom", root / "profile1");
  REQUIRE(dom.code == 0);
  // Every chart drew (report.js counts dygraphs' first draws), each with its canvas.
  CHECK_THAT(dom.output, Catch::Contains("data-charts-drawn=\"" + std::to_string(tags.size()) + "\""));
  size_t charts = 0, canvases = 0;
  for (size_t at = dom.output.find("class=\"chart\""); at != std::string::npos;
       at = dom.output.find("class=\"chart\"", at + 1)) {
    ++charts;
  }
  for (size_t at = dom.output.find("<canvas"); at != std::string::npos; at = dom.output.find("<canvas", at + 1)) {
    ++canvases;
  }
  CHECK(charts == tags.size());
  CHECK(canvases >= charts);
  // A series per run and collection: a's and b's train lines in the legend of losses/xent.
  CHECK_THAT(dom.output, Catch::Contains("a · train") && Catch::Contains("b · train") && Catch::Contains("a · test"));
  CHECK_THAT(dom.output, Catch::Contains("data:image/png;base64,") && Catch::Contains("summaries/images · step 300"));

  // The screenshot shows drawn charts: far from a blank page, and with the lines' colours.
  const fs::path shot = root / "page.png";
  REQUIRE(chromium(page, "--screenshot=" + shot.string(), root / "profile2").code == 0);
  std::ifstream in(shot, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const torch::Tensor pixels = kd::io::decode_png(bytes).to(torch::kInt);  // [H, W, C]
  REQUIRE(pixels.size(2) >= 3);
  const torch::Tensor rgb = pixels.narrow(2, 0, 3);
  const double non_white = (rgb < 240).any(2).to(torch::kDouble).mean().item<double>();
  // Saturated colour (a line or a legend swatch, not grey text): max - min channel >= 80.
  const torch::Tensor spread = std::get<0>(rgb.max(2)) - std::get<0>(rgb.min(2));
  const int64_t coloured = (spread >= 80).sum().item<int64_t>();
  INFO("non-white fraction " << non_white << ", coloured pixels " << coloured);
  CHECK(non_white > 0.02);
  CHECK(coloured > 2000);
  fs::remove_all(root);
}

TEST_CASE("kd report names what is wrong: not a workdir, several runs without --out, a file it would replace") {
  const fs::path root = fresh_dir();
  fs::create_directories(root / "empty");
  Result r = run_kd("report --workdir=" + (root / "empty").string());
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("is it the workdir of a kd run"));
  r = run_kd("report --workdir=" + (root / "x").string() + " --workdir=" + (root / "y").string());
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("needs --out="));
  fs::remove_all(root);
}
