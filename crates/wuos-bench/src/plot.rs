//! The demos' plots, each drawn twice, as PNG and SVG, with an embedded font: the VoIP scenario's
//! (`wuos demo voip`: call-setup time of every call over time, with the orchestrator's decisions
//! marked), the SD-WAN demo's ([`paths`]: each path's latency and loss over time, with the
//! degradations and the class's moves marked), and curves of a benchmark ([`curves`]).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// A chart over time with f64 axes.
type TimeChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Vertical lines at `marks` (seconds, label) across `chart` (`t_max`, `y_max`: its ranges), in
/// `color`, dashed or not; the labels written at `label_y` × `y_max` (none: not written), every
/// other one a step lower so that neighbours do not overlap.
fn vertical_marks<DB: DrawingBackend>(
    chart: &mut TimeChart<'_, DB>,
    marks: &[(f64, String)],
    (t_max, y_max): (f64, f64),
    (color, dashed): (RGBColor, bool),
    label_y: Option<f64>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    for (i, (t, label)) in marks.iter().enumerate() {
        let line = [(*t, 0.0), (*t, y_max)];
        if dashed {
            chart
                .draw_series(DashedLineSeries::new(line, 6, 4, color.stroke_width(1)))
                .map_err(|e| anyhow!("{e:?}"))?;
        } else {
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        if let Some(y) = label_y {
            let y = y_max * (y - 0.08 * (i % 2) as f64);
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*t + t_max * 0.004, y),
                    ("sans-serif", 14).into_font().color(&color),
                )))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
    }
    Ok(())
}

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
    vertical_marks(&mut chart, marks, (t_max, y_max), (RED, false), Some(0.95))?;
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

/// The series' legend in the upper left corner.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))
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
    legend(&mut chart)?;
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

/// One path's figures over time (seconds; ms and %); a sample without a latency (no answer yet, or
/// down) leaves a gap.
pub struct PathSeries {
    pub name: String,
    pub rtt_ms: Vec<(f64, f64)>,
    pub loss_pct: Vec<(f64, f64)>,
}

/// The SD-WAN demo's figure: paths' latency (top) and loss (bottom) over time, the SLA's limits,
/// the degradations injected (dashed, grey) and the class's moves (red).
pub struct Paths<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub paths: Vec<PathSeries>,
    pub latency_limit_ms: f64,
    pub loss_limit_pct: f64,
    /// (seconds, label)
    pub injected: Vec<(f64, String)>,
    pub moves: Vec<(f64, String)>,
}

fn draw_paths<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, p: &Paths<'_>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let root = root.titled(p.title, ("sans-serif", 22)).map_err(|e| anyhow!("{e:?}"))?;
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 * 55 / 100);
    let t_max = p
        .paths
        .iter()
        .flat_map(|s| s.rtt_ms.iter().chain(&s.loss_pct))
        .map(|x| x.0)
        .chain(p.injected.iter().chain(&p.moves).map(|m| m.0))
        .fold(1.0f64, f64::max)
        * 1.02;
    let max_of = |f: &dyn Fn(&PathSeries) -> &Vec<(f64, f64)>, floor: f64| {
        p.paths
            .iter()
            .flat_map(|s| f(s).iter().map(|x| x.1))
            .fold(floor, f64::max)
            * 1.2
    };
    let panels = [
        (
            top,
            "round trip (ms)",
            max_of(&|s| &s.rtt_ms, p.latency_limit_ms * 1.25),
            p.latency_limit_ms,
            format!("SLA: {} ms", p.latency_limit_ms),
        ),
        (
            bottom,
            "loss (% of the probes)",
            max_of(&|s| &s.loss_pct, p.loss_limit_pct * 3.0),
            p.loss_limit_pct,
            format!("SLA: {} %", p.loss_limit_pct),
        ),
    ];
    for (k, (area, y_desc, y_max, limit, limit_label)) in panels.into_iter().enumerate() {
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(if k == 1 { 40 } else { 20 })
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..t_max, 0f64..y_max)
            .map_err(|e| anyhow!("{e:?}"))?;
        let mut mesh = chart.configure_mesh();
        mesh.y_desc(y_desc).label_style(("sans-serif", 14));
        if k == 1 {
            mesh.x_desc(p.x_desc);
        }
        mesh.draw().map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, limit), (t_max, limit)],
                8,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                limit_label,
                (t_max * 0.005, limit + y_max * 0.02),
                ("sans-serif", 13).into_font().color(&BLACK),
            )))
            .map_err(|e| anyhow!("{e:?}"))?;
        let grey = RGBColor(120, 120, 120);
        vertical_marks(
            &mut chart,
            &p.injected,
            (t_max, y_max),
            (grey, true),
            (k == 1).then_some(0.93),
        )?;
        vertical_marks(
            &mut chart,
            &p.moves,
            (t_max, y_max),
            (RED, false),
            (k == 0).then_some(0.93),
        )?;
        for (i, s) in p.paths.iter().enumerate() {
            // Not red: the moves are.
            let color = [BLUE.to_rgba(), RGBColor(0, 150, 70).to_rgba()]
                .get(i)
                .copied()
                .unwrap_or_else(|| Palette99::pick(i + 2).to_rgba());
            let pts = if k == 0 { &s.rtt_ms } else { &s.loss_pct };
            // A gap in the samples (no latency known) breaks the line.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            let step = pts.windows(2).map(|w| w[1].0 - w[0].0).fold(f64::INFINITY, f64::min);
            for (j, &pt) in pts.iter().enumerate() {
                if j > 0 && pt.0 - pts[j - 1].0 > step * 4.0 {
                    runs.push(Vec::new());
                }
                runs.last_mut().expect("one run at least").push(pt);
            }
            for (r, run) in runs.into_iter().enumerate() {
                let series = chart
                    .draw_series(LineSeries::new(run, color.stroke_width(2)))
                    .map_err(|e| anyhow!("{e:?}"))?;
                if r == 0 && k == 0 {
                    series
                        .label(s.name.clone())
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
                }
            }
        }
        if k == 0 {
            legend(&mut chart)?;
        }
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Draws `p` into `stem.png` and `stem.svg`; returns their paths.
pub fn paths(stem: &Path, p: &Paths<'_>) -> Result<(String, String)> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw_paths(BitMapBackend::new(&png, (1100, 720)).into_drawing_area(), p)?;
    draw_paths(SVGBackend::new(&svg, (1100, 720)).into_drawing_area(), p)?;
    Ok((png.display().to_string(), svg.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_figure_is_drawn_with_gaps_and_marks() {
        let dir = tempfile::tempdir().unwrap();
        let series = |name: &str, base: f64| PathSeries {
            name: name.into(),
            rtt_ms: (0..40)
                .filter(|i| !(20..24).contains(i))
                .map(|i| (f64::from(i) * 0.25, base + f64::from(i)))
                .collect(),
            loss_pct: (0..40).map(|i| (f64::from(i) * 0.25, f64::from(i % 5))).collect(),
        };
        let (png, svg) = paths(
            &dir.path().join("paths"),
            &Paths {
                title: "test",
                x_desc: "s",
                paths: vec![series("wan/mpls", 6.0), series("wan/inet", 25.0)],
                latency_limit_ms: 40.0,
                loss_limit_pct: 1.0,
                injected: vec![(2.0, "mpls +9 ms".into())],
                moves: vec![(2.2, "voip → wan/inet".into())],
            },
        )
        .unwrap();
        for f in [png, svg] {
            let len = std::fs::metadata(&f).unwrap().len();
            assert!(len > 1000, "{f}: {len} bytes");
        }
        let text = std::fs::read_to_string(dir.path().join("paths.svg")).unwrap();
        assert!(
            text.contains("voip → wan/inet") && text.contains("SLA: 40 ms"),
            "labels drawn"
        );
    }
}
