//! The run's result: rows of the Markdown table, the plots, and the machine it ran on.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

/// One figure beside its ceiling.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which of the six sections.
    pub section: &'static str,
    /// The size it was measured at (sessions, payments, events missed, load).
    pub size: String,
    /// What was measured.
    pub figure: String,
    /// The measured value, rendered.
    pub value: String,
    /// The ceiling measured in the same run (or the target), rendered.
    pub ceiling: String,
    /// value / ceiling, or empty when the ceiling is a target rather than a measure.
    pub ratio: String,
}

/// A line chart: named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File name under the results directory.
    pub file: String,
    /// Chart title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// (name, points).
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Everything a run produces.
#[derive(Debug, Default)]
pub struct Report {
    /// Table rows in order.
    pub rows: Vec<Row>,
    /// Plots to draw.
    pub plots: Vec<Plot>,
    /// Remarks printed under the table (what was skipped and why, how figures are taken).
    pub notes: Vec<String>,
}

/// The section titles, in order; a complete table has rows for each.
pub const SECTIONS: [&str; 10] = [
    "1. Ingest",
    "2. End to end",
    "3. Fan-out",
    "4. Reconnect storm",
    "5. Projector",
    "6. Polling baseline",
    "7. Correctness",
    "8. Production shape",
    "9. Long lives",
    "10. Idle sessions",
];

impl Report {
    /// Adds a row whose ceiling is a measured number (ratio = value / ceiling).
    #[allow(clippy::too_many_arguments)]
    pub fn measured(
        &mut self,
        section: &'static str,
        size: impl Into<String>,
        figure: &str,
        value: f64,
        ceiling: f64,
        ceiling_what: &str,
        unit: &str,
    ) {
        let ratio = if ceiling > 0.0 {
            format!("{:.2}", value / ceiling)
        } else {
            "n/a".into()
        };
        self.rows.push(Row {
            section,
            size: size.into(),
            figure: figure.to_owned(),
            value: format!("{} {unit}", num(value)),
            ceiling: format!("{} {unit} ({ceiling_what})", num(ceiling)),
            ratio,
        });
    }

    /// Adds a row without a measured ceiling (the ceiling column names the target).
    pub fn plain(&mut self, section: &'static str, size: impl Into<String>, figure: &str, value: String, target: &str) {
        self.rows.push(Row {
            section,
            size: size.into(),
            figure: figure.to_owned(),
            value,
            ceiling: target.to_owned(),
            ratio: String::new(),
        });
    }

    /// Adds a row counting what went wrong (`count`), only when anything did: a
    /// clean run's table carries no zero rows of failures.
    pub fn failures(
        &mut self,
        section: &'static str,
        size: impl Into<String>,
        figure: &str,
        count: usize,
        target: &str,
    ) {
        if count > 0 {
            self.plain(section, size, figure, count.to_string(), target);
        }
    }

    /// The Markdown document: machine, table, notes, plots.
    pub fn markdown(&self, machine: &str) -> String {
        let mut out = String::from("# paytrack capacity figures\n\n");
        out.push_str(machine);
        out.push_str("\n| section | size | figure | value | ceiling (same run) | ratio |\n|---|---|---|---|---|---|\n");
        // In section order, whatever order the sections ran in (a stable sort keeps
        // each section's own rows as they came).
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| SECTIONS.iter().position(|s| *s == r.section));
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.section, r.size, r.figure, r.value, r.ceiling, r.ratio
            );
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out.push('\n');
        for p in &self.plots {
            let _ = writeln!(out, "![{}]({})", p.title, p.file);
        }
        out
    }

    /// Sections without a single row (a complete run has none).
    pub fn missing_sections(&self) -> Vec<&'static str> {
        SECTIONS
            .into_iter()
            .filter(|s| !self.rows.iter().any(|r| r.section == *s))
            .collect()
    }

    /// Draws every plot as PNG into `dir`.
    pub fn draw(&self, dir: &Path) -> anyhow::Result<()> {
        register_font();
        for p in &self.plots {
            draw_plot(&dir.join(&p.file), p)?;
        }
        Ok(())
    }
}

/// A number with sensible precision.
pub fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Embeds DejaVu Sans so drawing text needs no system fonts.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is valid TrueType shipped inside the crate; a failure leaves text out.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

fn draw_plot(path: &Path, plot: &Plot) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let points = plot.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_max) = (0.0f64, 0.0f64);
    let (mut x_min, mut y_min) = (f64::MAX, 0.0f64);
    for (x, y) in points {
        x_max = x_max.max(*x);
        x_min = x_min.min(*x);
        y_max = y_max.max(*y);
        y_min = y_min.min(*y);
    }
    if x_min >= x_max {
        x_min = 0.0;
        x_max = x_max.max(1.0) * 1.1;
    }
    let y_max = if y_max <= y_min { y_min + 1.0 } else { y_max * 1.1 };
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_min..x_max, y_min..y_max)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(&plot.x_label)
        .y_desc(&plot.y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, pts)) in plot.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
