//! A PNG of throughput and p99 latency against connection count.
//!
//! Text needs a font: DejaVu Sans (Debian's fonts-dejavu-core) is loaded at
//! run time when present; without it the plot is drawn without labels.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::drive::PhaseResult;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn load_font() -> bool {
    let path = std::env::var("ERRATA_LOADGEN_FONT").ok();
    let candidates = path
        .iter()
        .map(String::as_str)
        .chain(FONT_PATHS.iter().copied());
    for candidate in candidates {
        if let Ok(bytes) = std::fs::read(candidate) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// One line per (workload, endpoint): x = connections.
type Series = BTreeMap<String, Vec<(f64, f64)>>;

pub fn draw(path: &Path, phases: &[PhaseResult]) -> anyhow::Result<()> {
    let text = load_font();
    let mut throughput = Series::new();
    let mut p99 = Series::new();
    for phase in phases {
        for e in &phase.endpoints {
            let name = if phase.workload == "healthz" {
                e.endpoint.clone()
            } else {
                format!("{} ({})", e.endpoint, phase.workload)
            };
            let x = phase.connections as f64;
            throughput.entry(name.clone()).or_default().push((x, e.rps));
            p99.entry(name).or_default().push((x, e.p99_ms));
        }
    }
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    panel(
        &left,
        "throughput (req/s) vs connections",
        &throughput,
        text,
    )?;
    panel(&right, "p99 latency (ms) vs connections", &p99, text)?;
    root.present()?;
    if !text {
        eprintln!("  (no DejaVu Sans font found: the plot has no labels; set ERRATA_LOADGEN_FONT)");
    }
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    series: &Series,
    text: bool,
) -> anyhow::Result<()> {
    let max_x = series.values().flatten().map(|p| p.0).fold(1.0, f64::max);
    let max_y = series.values().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder
            .caption(title, ("sans-serif", 18))
            .x_label_area_size(35)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("connections");
    } else {
        mesh.disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0);
    }
    mesh.draw()?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let mut points = points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let drawn = chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
        if text {
            drawn
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    Ok(())
}
