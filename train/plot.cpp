// A dependency-free SVG line chart for loss curves.
#include <fstream>

#include "autograd/error.h"
#include "train/trainer.h"

namespace tapelm::train {

void write_loss_svg(const std::string& path, const std::vector<std::pair<int64_t, double>>& train,
                    const std::vector<std::pair<int64_t, double>>& val, const std::string& title) {
  const double W = 720, H = 440, L = 70, R = 20, T = 40, B = 50;
  double x_max = 1, y_min = 1e300, y_max = -1e300;
  for (auto* s : {&train, &val})
    for (auto [x, y] : *s) {
      x_max = std::max(x_max, (double)x);
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
    }
  if (y_min > y_max) y_min = 0, y_max = 1;
  if (y_max - y_min < 1e-9) y_max = y_min + 1;
  auto px = [&](double x) { return L + (W - L - R) * x / x_max; };
  auto py = [&](double y) { return T + (H - T - B) * (1 - (y - y_min) / (y_max - y_min)); };
  std::string s = fmt::format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='12'>\n"
      "<rect width='100%' height='100%' fill='white'/>\n"
      "<text x='{}' y='22' font-size='15'>{}</text>\n",
      W, H, L, title);
  for (int i = 0; i <= 5; ++i) {
    double y = y_min + (y_max - y_min) * i / 5, x = x_max * i / 5;
    s += fmt::format("<line x1='{}' x2='{}' y1='{:.1f}' y2='{:.1f}' stroke='#ddd'/>"
                     "<text x='{}' y='{:.1f}' text-anchor='end'>{:.3f}</text>\n",
                     L, W - R, py(y), py(y), L - 6, py(y) + 4, y);
    s += fmt::format("<text x='{:.1f}' y='{}' text-anchor='middle'>{:.0f}</text>\n", px(x), H - B + 18, x);
  }
  s += fmt::format("<text x='{}' y='{}' text-anchor='middle'>step</text>"
                   "<text x='16' y='{}' transform='rotate(-90 16 {})' text-anchor='middle'>loss</text>\n",
                   (L + W - R) / 2, H - 12, (T + H - B) / 2, (T + H - B) / 2);
  auto line = [&](const std::vector<std::pair<int64_t, double>>& pts, const char* color, const char* name, int k) {
    if (pts.empty()) return;
    s += fmt::format("<polyline fill='none' stroke='{}' stroke-width='1.6' points='", color);
    for (auto [x, y] : pts) s += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    s += "'/>\n";
    s += fmt::format("<rect x='{}' y='{}' width='14' height='3' fill='{}'/><text x='{}' y='{}'>{}</text>\n",
                     W - R - 150, T + 10 + 16 * k, color, W - R - 130, T + 15 + 16 * k, name);
  };
  line(train, "#1f77b4", "train loss", 0);
  line(val, "#d62728", "validation loss", 1);
  s += "</svg>\n";
  std::ofstream out(path);
  TAPELM_CHECK(out.good(), "plot: cannot write {}", path);
  out << s;
}

}  // namespace tapelm::train
