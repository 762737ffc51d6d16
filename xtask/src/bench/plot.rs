//! PNG bar charts for BENCHMARKS.md, drawn with plotters and a font compiled into the bench
//! (DejaVu Sans), so no system font or font library is needed.

use std::{path::Path, sync::Once};

use anyhow::{anyhow, Result};
use plotters::{
    prelude::*,
    style::{
        register_font,
        text_anchor::{HPos, Pos, VPos},
        FontStyle,
    },
};

/// One group of bars (e.g. a handler), each bar a (series, value) pair.
pub struct Group {
    /// Label under the group.
    pub label: String,
    /// Bars, in series order; a missing series leaves a gap.
    pub bars: Vec<(String, f64)>,
}

/// A series' colour: the same scenario has the same colour in every plot.
fn colour(series: &str, index: usize) -> RGBColor {
    const OTHERS: [RGBColor; 3] = [
        RGBColor(130, 90, 170),
        RGBColor(60, 160, 170),
        RGBColor(150, 120, 60),
    ];
    let s = series.to_ascii_lowercase();
    if s.starts_with("no ") {
        RGBColor(120, 120, 120)
    } else if s.starts_with("bare") {
        RGBColor(214, 140, 40)
    } else if s.starts_with("spanhook") {
        RGBColor(40, 110, 190)
    } else if s.starts_with("obi") {
        RGBColor(180, 60, 60)
    } else if s.starts_with("otelhttp") {
        RGBColor(60, 150, 90)
    } else {
        OTHERS[index % OTHERS.len()]
    }
}

fn fonts() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| anyhow!("the embedded DejaVu Sans font does not load"));
    });
    result
}

/// Draws a grouped bar chart; `reference` draws a line at that value (e.g. 1.0 for a
/// ratio to the baseline); `format` writes each bar's value above it.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[Group],
    reference: Option<f64>,
    format: impl Fn(f64) -> String,
) -> Result<()> {
    fonts()?;
    let series: Vec<String> = {
        let mut s: Vec<String> = Vec::new();
        for g in groups {
            for (name, _) in &g.bars {
                if !s.contains(name) {
                    s.push(name.clone());
                }
            }
        }
        s
    };
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|(_, v)| *v))
        .chain(reference)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.18;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    let draw_err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(y_label)
        .y_label_formatter(&|v| {
            if max >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(draw_err)?;
    let width = 0.8 / series.len().max(1) as f64;
    for (si, name) in series.iter().enumerate() {
        let color = colour(name, si);
        let bars: Vec<(f64, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(gi, g)| {
                g.bars
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| (gi as f64 + 0.1 + si as f64 * width, *v))
            })
            .collect();
        chart
            .draw_series(
                bars.iter().map(|&(x, v)| {
                    Rectangle::new([(x, 0.0), (x + width * 0.9, v)], color.filled())
                }),
            )
            .map_err(draw_err)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart
            .draw_series(bars.iter().map(|&(x, v)| {
                Text::new(
                    format(v),
                    (x + width * 0.45, v + max * 0.01),
                    ("sans-serif", 13)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(draw_err)?;
    }
    if let Some(r) = reference {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, r), (groups.len() as f64, r)],
                BLACK.stroke_width(1),
            )))
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;
    for (gi, g) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(gi as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            g.label.clone(),
            (x, y + 10),
            ("sans-serif", 16)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}
