#include "train/plot.h"

#include <cmath>
#include <fstream>

#include "autograd/error.h"

namespace tapelm::train {

void write_svg_chart(const std::string& path, const Chart& c) {
  const double W = 760, H = 460, L = 80, R = 170, T = 40, B = 50;
  double x_min = 1e300, x_max = -1e300, y_min = 1e300, y_max = -1e300;
  auto fx = [&](double x) { return c.log_x ? std::log10(std::max(x, 1e-300)) : x; };
  auto fy = [&](double y) { return c.log_y ? std::log10(std::max(y, 1e-300)) : y; };
  for (auto& s : c.series)
    for (auto [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      x_min = std::min(x_min, fx(x)), x_max = std::max(x_max, fx(x));
      y_min = std::min(y_min, fy(y)), y_max = std::max(y_max, fy(y));
    }
  if (x_min > x_max) x_min = 0, x_max = 1;
  if (y_min > y_max) y_min = 0, y_max = 1;
  if (!c.log_x && x_min > 0) x_min = 0;
  if (x_max - x_min < 1e-12) x_max = x_min + 1;
  if (y_max - y_min < 1e-12) y_max = y_min + 1;
  auto px = [&](double x) { return L + (W - L - R) * (fx(x) - x_min) / (x_max - x_min); };
  auto py = [&](double y) { return T + (H - T - B) * (1 - (fy(y) - y_min) / (y_max - y_min)); };
  auto label = [](double v) {
    return std::abs(v) >= 1e4 || (v != 0 && std::abs(v) < 1e-2) ? fmt::format("{:.2e}", v) : fmt::format("{:.4g}", v);
  };
  std::string s = fmt::format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='12'>\n"
      "<rect width='100%' height='100%' fill='white'/>\n"
      "<text x='{}' y='22' font-size='15'>{}</text>\n",
      W, H, L, c.title);
  for (int i = 0; i <= 5; ++i) {
    const double ty = y_min + (y_max - y_min) * i / 5, tx = x_min + (x_max - x_min) * i / 5;
    const double vy = c.log_y ? std::pow(10, ty) : ty, vx = c.log_x ? std::pow(10, tx) : tx;
    s += fmt::format(
        "<line x1='{}' x2='{}' y1='{:.1f}' y2='{:.1f}' stroke='#ddd'/>"
        "<text x='{}' y='{:.1f}' text-anchor='end'>{}</text>\n",
        L, W - R, py(vy), py(vy), L - 6, py(vy) + 4, label(vy));
    s += fmt::format("<text x='{:.1f}' y='{}' text-anchor='middle'>{}</text>\n", px(vx), H - B + 18, label(vx));
  }
  s += fmt::format(
      "<text x='{}' y='{}' text-anchor='middle'>{}</text>"
      "<text x='16' y='{}' transform='rotate(-90 16 {})' text-anchor='middle'>{}</text>\n",
      (L + W - R) / 2, H - 12, c.x_label, (T + H - B) / 2, (T + H - B) / 2, c.y_label);
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8"};
  int place = 0, legend = 0;
  for (auto& series : c.series) {
    const char* color = colors[(series.color >= 0 ? series.color : place) % 12];
    ++place;
    if (series.markers) {
      for (auto [x, y] : series.points)
        if (std::isfinite(y))
          s += fmt::format("<circle cx='{:.1f}' cy='{:.1f}' r='3' fill='{}'/>\n", px(x), py(y), color);
    } else {
      s += fmt::format("<polyline fill='none' stroke='{}' stroke-width='1.6'{} points='", color,
                       series.dashed ? " stroke-dasharray='6 4'" : "");
      for (auto [x, y] : series.points)
        if (std::isfinite(y)) s += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
      s += "'/>\n";
    }
    if (!series.in_legend) continue;
    s += fmt::format("<rect x='{}' y='{}' width='14' height='3' fill='{}'/><text x='{}' y='{}'>{}</text>\n", W - R + 12,
                     T + 10 + 16 * legend, color, W - R + 32, T + 15 + 16 * legend, series.name);
    ++legend;
  }
  s += "</svg>\n";
  std::ofstream out(path);
  TAPELM_CHECK(out.good(), "plot: cannot write {}", path);
  out << s;
}

void write_loss_svg(const std::string& path, const std::vector<std::pair<int64_t, double>>& train,
                    const std::vector<std::pair<int64_t, double>>& val, const std::string& title) {
  auto to_series = [](std::string name, const std::vector<std::pair<int64_t, double>>& pts) {
    Series s{std::move(name), {}};
    for (auto [x, y] : pts) s.points.push_back({(double)x, y});
    return s;
  };
  write_svg_chart(
      path,
      Chart{title, "step", "loss", false, false, {to_series("train loss", train), to_series("validation loss", val)}});
}

}  // namespace tapelm::train
