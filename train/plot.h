// A dependency-free SVG line chart: loss curves of a run (loss.svg), and the
// bake-off's loss-vs-FLOPs and decoding-speed pictures.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tapelm::train {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
  int color = -1;         // palette index (−1: the series' place in the chart)
  bool in_legend = true;  // several runs of one family can share one legend entry
  bool dashed = false;    // a fitted line
  bool markers = false;   // points only, no line
};

struct Chart {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  std::vector<Series> series;
};

// Writes the chart to `path`; throws Error if it cannot be written.
void write_svg_chart(const std::string& path, const Chart& chart);

// Draws a run's train and validation loss against steps (loss.svg).
void write_loss_svg(const std::string& path, const std::vector<std::pair<int64_t, double>>& train,
                    const std::vector<std::pair<int64_t, double>>& val, const std::string& title);

}  // namespace tapelm::train
