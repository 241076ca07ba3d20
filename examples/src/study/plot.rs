//! The SVG chart of speedup against workers: one panel per workload, side by
//! side, one line per engine, and the ideal line y = x.

use std::path::Path;

use plotters::prelude::*;

/// One line of a panel: an engine's speedup at each worker count.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// (workers, speedup) points, in order of workers.
    pub points: Vec<(f64, f64)>,
    /// Whether the points are measurements, marked with dots (a reference
    /// line is not).
    pub measured: bool,
}

/// Line colors, in order of series: distinct and readable on white.
const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One panel: a workload and its engines' lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// The panel's title.
    pub title: String,
    /// The lines, drawn in order.
    pub series: Vec<Series>,
}

/// Width and height of one panel, in pixels.
const PANEL: (u32, u32) = (640, 480);

/// Draws `panels` side by side into an SVG file at `path`, with workers from
/// 1 to `max_workers` on x, speedup on y, and the ideal line y = x dashed.
pub fn speedup_svg(path: &Path, panels: &[Panel], max_workers: usize) -> anyhow::Result<()> {
    let size = (PANEL.0 * panels.len().max(1) as u32, PANEL.1);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    let x_max = max_workers.max(2) as f64;
    for (panel, area) in panels.iter().zip(&areas) {
        let highest = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite())
            .fold(x_max, f64::max);
        let y_max = (highest * 1.1).ceil();
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(1f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("workers")
            .y_desc("speedup over sequential")
            .x_labels(max_workers.clamp(2, 16))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                [(1.0, 1.0), (x_max, x_max)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            ))?
            .label("ideal (y = x)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.6)));
        for (i, series) in panel.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let line = LineSeries::new(series.points.iter().copied(), color.stroke_width(2));
            chart
                .draw_series(if series.measured { line.point_size(3) } else { line })?
                .label(&series.label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_every_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("speedup.svg");
        let panel = |title: &str| Panel {
            title: title.into(),
            series: vec![
                Series {
                    label: "threads".into(),
                    points: vec![(1.0, 0.9), (2.0, 1.8)],
                    measured: true,
                },
                Series {
                    label: "processes/messages".into(),
                    points: vec![(1.0, 0.7), (2.0, 1.1)],
                    measured: false,
                },
            ],
        };
        speedup_svg(&path, &[panel("word count"), panel("matmul")], 2).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"));
        for text in [
            "word count",
            "matmul",
            "threads",
            "processes/messages",
            "ideal (y = x)",
            "workers",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
