// The HTML audit reports of the bundled models, rendered by headless
// Chromium (Debian's chromium, installed by scripts/setup.sh): a server over
// checkpoints/ (training items served), the MNIST model audited by class and
// the text model by prompt at Stable Diffusion's guidance 7.5 through the
// CLI's --html, each page rendered to a screenshot that must not be blank,
// and its rendered text holding the verdicts and every flagged condition.
// MEMAUDIT_FIGURES_DIR, when set, keeps the screenshots (docs/figures is
// made so: docs/GUIDE.md).
#include <gtest/gtest.h>
#include <png.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>

#include "tests/server_process.h"
#include "tests/test_util.h"

namespace memaudit {
namespace {

using testing::CommandResult;
using testing::RunShell;
using testing::ScratchDir;
using testing::ServerProcess;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Screenshot {
  int width = 0, height = 0;
  double non_white = 0;  // fraction of pixels that are not near-white
  size_t colors = 0;     // distinct RGB values (capped at 1000)
};

// Reads an RGB screenshot with libpng's simplified API.
Screenshot ReadScreenshot(const std::string& path) {
  Screenshot shot;
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str())) return shot;
  image.format = PNG_FORMAT_RGB;
  std::vector<unsigned char> pixels(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr)) return shot;
  shot.width = static_cast<int>(image.width);
  shot.height = static_cast<int>(image.height);
  std::set<uint32_t> colors;
  size_t non_white = 0;
  for (size_t i = 0; i + 2 < pixels.size(); i += 3) {
    const int r = pixels[i], g = pixels[i + 1], b = pixels[i + 2];
    non_white += r + g + b < 3 * 240;
    if (colors.size() < 1000) colors.insert((r << 16) | (g << 8) | b);
  }
  shot.non_white = static_cast<double>(non_white) / static_cast<double>(pixels.size() / 3);
  shot.colors = colors.size();
  return shot;
}

class HtmlRenderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir;
    server_ =
        new ServerProcess(MEMAUDIT_SERVER_BINARY, std::string(MEMAUDIT_SOURCE_DIR) + "/checkpoints",
                          scratch_->path(), {"--serve_training_items"});
  }
  static void TearDownTestSuite() {
    delete server_;
    delete scratch_;
  }

  // Audits with `args` through the CLI, writing NAME.html and NAME.json;
  // returns the JSON report. Waits for the models to load first.
  nlohmann::json Audit(const std::string& name, const std::string& args) {
    const CommandResult serving = RunShell(std::string(MEMAUDIT_CLI_BINARY) + " --server " +
                                           server_->target() + " health --wait 120 2>&1");
    EXPECT_EQ(serving.exit_code, 0) << serving.output << server_->Log();
    const std::string command =
        std::string(MEMAUDIT_CLI_BINARY) + " --server " + server_->target() + " audit " + args +
        " --quiet --fail-on never --json --html " + scratch_->Join(name + ".html") + " > " +
        scratch_->Join(name + ".json") + " 2>&1";
    const CommandResult result = RunShell(command);
    EXPECT_EQ(result.exit_code, 0) << command << "\n"
                                   << Read(scratch_->Join(name + ".json")) << "\n"
                                   << server_->Log();
    return nlohmann::json::parse(Read(scratch_->Join(name + ".json")), nullptr, false);
  }

  // Renders NAME.html with Chromium, once: the screenshot, and the page's
  // text (the DOM after parsing, tags removed).
  std::string Render(const std::string& name, Screenshot* shot) {
    const std::string chromium = MEMAUDIT_CHROMIUM;
    EXPECT_FALSE(chromium.empty()) << "no chromium: scripts/setup.sh installs Debian's";
    const std::string page = "file://" + scratch_->Join(name + ".html");
    const std::string png = scratch_->Join(name + ".png");
    const std::string log = scratch_->Join(name + ".chromium.log");
    const CommandResult dom = RunShell(chromium +
                                       " --headless=new --no-sandbox --disable-gpu "
                                       "--hide-scrollbars --window-size=1100,1500 --screenshot=" +
                                       png + " --dump-dom " + page + " 2>" + log);
    EXPECT_EQ(dom.exit_code, 0) << Read(log);
    *shot = ReadScreenshot(png);
    if (const char* keep = std::getenv("MEMAUDIT_FIGURES_DIR"); keep != nullptr && *keep) {
      RunShell("cp " + png + " " + std::string(keep) + "/html_report_" + name + ".png");
    }
    std::string text = std::regex_replace(dom.output, std::regex("<style>[^<]*</style>"), " ");
    text = std::regex_replace(text, std::regex("<[^>]*>"), " ");
    text = std::regex_replace(text, std::regex("&quot;"), "\"");
    return std::regex_replace(text, std::regex("\\s+"), " ");
  }

  // The rendered page: not blank, the model's verdict, every flagged
  // condition's label and verdict; a copy beside its training item.
  void CheckPage(const std::string& name, const nlohmann::json& report) {
    ASSERT_FALSE(report.is_discarded());
    Screenshot shot;
    const std::string text = Render(name, &shot);
    EXPECT_EQ(shot.width, 1100) << name;
    EXPECT_GT(shot.non_white, 0.02) << name << ": the screenshot is (nearly) blank";
    EXPECT_GT(shot.colors, 50u) << name << ": too few colours for images and text";
    const std::string verdict = report["verdict"].get<std::string>();
    EXPECT_NE(text.find(report["model"].get<std::string>() + " is " + verdict), std::string::npos)
        << text.substr(0, 600);
    int flagged = 0;
    for (const auto& condition : report["conditions"]) {
      if (condition["verdict"] == "NOT_MEMORIZED") continue;
      ++flagged;
      const std::string heading =
          condition["label"].get<std::string>() + " " + condition["verdict"].get<std::string>();
      EXPECT_NE(text.find(heading), std::string::npos) << name << ": " << heading;
    }
    EXPECT_GT(flagged, 0) << name << ": no flagged condition to show";
    const std::string html = Read(scratch_->Join(name + ".html"));
    const size_t row = html.find("<tr class=\"copy\">");
    ASSERT_NE(row, std::string::npos) << name << ": no copy beside its training item";
    const std::string copy = html.substr(row, html.find("</tr>", row) - row);
    EXPECT_LT(copy.find("<td class=\"generation\"><img"), copy.find("<td class=\"training\"><img"));
  }

  static ScratchDir* scratch_;
  static ServerProcess* server_;
};
ScratchDir* HtmlRenderTest::scratch_ = nullptr;
ServerProcess* HtmlRenderTest::server_ = nullptr;

// checkpoints/mnist39: every "3", and one "9" repeated 100 times.
TEST_F(HtmlRenderTest, MnistReportRenders) {
  ASSERT_GT(server_->grpc_port(), 0) << server_->Log();
  const nlohmann::json report = Audit(
      "mnist39", "--model mnist39 --class 9 --class 3 --samples 2 --seed 9100 --guidance 7.5");
  CheckPage("mnist39", report);
}

// checkpoints/textmnist by prompt: a memorized caption and its generic
// counterpart; the memorized one's strongest token is shown.
TEST_F(HtmlRenderTest, TextModelReportRendersWithTokenAttribution) {
  ASSERT_GT(server_->grpc_port(), 0) << server_->Log();
  const nlohmann::json report = Audit(
      "textmnist",
      "--model textmnist --prompt 'a handwritten two, thick stroke, slanted right, the ashgrove "
      "print' --prompt 'a handwritten two, thick stroke, slanted right' --samples 2 --seed 9200 "
      "--guidance 7.5");
  CheckPage("textmnist", report);
  const std::string html = Read(scratch_->Join("textmnist.html"));
  EXPECT_NE(html.find("<b class=\"strongest-token\">"), std::string::npos);
  ASSERT_FALSE(report.is_discarded());
  for (const auto& condition : report["conditions"]) {
    ASSERT_TRUE(condition.contains("token_attribution")) << condition.dump().substr(0, 400);
    EXPECT_EQ(condition["token_attribution"]["samples"], 2);
    EXPECT_GT(condition["token_attribution"]["tokens"].size(), 5u);
  }
}

}  // namespace
}  // namespace memaudit
