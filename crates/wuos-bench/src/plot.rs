//! The plot of the VoIP scenario (`wuos demo voip`): call-setup time of every call over time, with the
//! orchestrator's decisions marked; drawn twice, as PNG and SVG, with an embedded font.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The only font the plots use; failing here would only lose the text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    calls: &[(f64, f64)],
    marks: &[(f64, String)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let t_max = calls
        .iter()
        .map(|c| c.0)
        .chain(marks.iter().map(|m| m.0))
        .fold(1.0f64, f64::max)
        * 1.02;
    let y_max = calls.iter().map(|c| c.1).fold(10.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("wuos demo voip: call setup time (INVITE → 200 OK)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("time since the first call (s)")
        .y_desc("setup time (ms)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .draw_series(calls.iter().map(|&(t, ms)| Circle::new((t, ms), 2, BLUE.filled())))
        .map_err(|e| anyhow!("{e:?}"))?
        .label("a call")
        .legend(|(x, y)| Circle::new((x, y), 3, BLUE.filled()));
    for (t, label) in marks {
        chart
            .draw_series(LineSeries::new([(*t, 0.0), (*t, y_max)], RED.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (*t + t_max * 0.005, y_max * 0.95),
                ("sans-serif", 16).into_font().color(&RED),
            )))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Draws `calls` (seconds since the start, setup ms) and `marks` (seconds, label) into
/// `dir/voip.png` and `dir/voip.svg`; returns their paths.
pub fn plot(dir: &Path, calls: &[(f64, f64)], marks: &[(f64, String)]) -> Result<(String, String)> {
    register_font();
    let png = dir.join("voip.png");
    let svg = dir.join("voip.svg");
    draw(BitMapBackend::new(&png, (1000, 560)).into_drawing_area(), calls, marks)?;
    draw(SVGBackend::new(&svg, (1000, 560)).into_drawing_area(), calls, marks)?;
    Ok((png.display().to_string(), svg.display().to_string()))
}

/// A figure of curves: its title, axes and series (name, points), drawn on log-log axes when
/// `log` (values must be positive).
pub struct Curves<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

fn draw_curves<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, c: &Curves<'_>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let points = || c.series.iter().flat_map(|s| s.1.iter());
    let x_max = points().map(|p| p.0).fold(1.0f64, f64::max) * 1.05;
    let y_max = points().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, (name, pts)) in c.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Draws `c` into `stem.png` and `stem.svg`; returns their paths.
pub fn curves(stem: &Path, c: &Curves<'_>) -> Result<(String, String)> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw_curves(BitMapBackend::new(&png, (1000, 560)).into_drawing_area(), c)?;
    draw_curves(SVGBackend::new(&svg, (1000, 560)).into_drawing_area(), c)?;
    Ok((png.display().to_string(), svg.display().to_string()))
}
