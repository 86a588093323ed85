//! Plots a `metrics.jsonl` file as a PNG grid of line charts, one panel per metric.
//!
//! Each line of the file is one JSON object with an integer `"step"` and any number of other
//! fields; numeric fields are metrics (`"reward/mean": 0.42`), everything else (strings, booleans,
//! `null`, arrays, objects) is ignored. A metric need not be on every line (evaluation metrics
//! typically appear every N steps). Rendering uses a bundled subset of DejaVu Sans (see
//! `fonts/DejaVuSans-LICENSE.txt`), so no system font libraries are needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// Most panels drawn when no keys are asked for.
pub const MAX_AUTO_PANELS: usize = 12;

/// Most bad lines kept, with their messages, in [`PlotError::BadLines`].
const MAX_BAD_LINES_KEPT: usize = 10;

/// Width and height of one panel, in pixels.
const PANEL_SIZE: (u32, u32) = (480, 320);

/// Line colours (matplotlib's "tab10" without its grey), cycled over panels.
const COLORS: [(u8, u8, u8); 9] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
];

/// The bundled font: DejaVu Sans cut down to Latin-1, Greek and a few symbols.
static FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");

/// One line of a metrics file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Why [`plot_metrics`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The metrics file could not be opened or read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The metrics file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Some lines are not JSON objects with an integer `"step"`.
    #[error("{}", describe_bad_lines(path, *count, lines))]
    BadLines {
        /// The metrics file.
        path: PathBuf,
        /// How many lines are bad in all.
        count: usize,
        /// The first few bad lines (at most 10), in file order.
        lines: Vec<BadLine>,
    },
    /// None of the requested keys (or, with no keys requested, no numeric metric at all) has a
    /// value in the file.
    #[error("`{}` has no values for {}", path.display(), describe_keys(requested))]
    NoData {
        /// The metrics file.
        path: PathBuf,
        /// The keys asked for (empty: any numeric key).
        requested: Vec<String>,
    },
    /// The bundled font could not be registered with the plotting library.
    #[error("the bundled plot font could not be loaded")]
    Font,
    /// Drawing or encoding the image failed (e.g. the output directory does not exist).
    #[error("cannot draw `{}`: {message}", path.display())]
    Draw {
        /// The image being written.
        path: PathBuf,
        /// The plotting library's message.
        message: String,
    },
}

fn describe_bad_lines(path: &Path, count: usize, lines: &[BadLine]) -> String {
    let mut s = format!("`{}` has {count} bad line(s):", path.display());
    for bad in lines {
        let _ = write!(s, "\n  line {}: {}", bad.line, bad.message);
    }
    if count > lines.len() {
        let _ = write!(s, "\n  … and {} more", count - lines.len());
    }
    s
}

fn describe_keys(keys: &[String]) -> String {
    if keys.is_empty() {
        "any numeric metric".to_string()
    } else {
        format!("the keys {keys:?}")
    }
}

/// Reads the metrics file `jsonl` and draws one line chart per key (x = step) into `out_png`,
/// laid out in a grid; returns the keys drawn, in panel order.
///
/// * `keys` empty: every numeric key except `step`, sorted, at most [`MAX_AUTO_PANELS`].
/// * `keys` given: those keys in that order (duplicates dropped); keys with no value anywhere in
///   the file are skipped (so the result can be shorter than `keys`).
///
/// Blank lines are skipped. Any other line that is not a JSON object with an integer `"step"` is
/// an error ([`PlotError::BadLines`], with line numbers); so is a file with nothing to draw
/// ([`PlotError::NoData`]). Points are sorted by step (stably, so repeated steps keep file order).
/// The image format follows `out_png`'s extension, so it should end in `.png`; its directory must
/// exist.
pub fn plot_metrics(jsonl: &Path, out_png: &Path, keys: &[&str]) -> Result<Vec<String>, PlotError> {
    let mut series = read_series(jsonl)?;
    let chosen: Vec<String> = if keys.is_empty() {
        series.keys().take(MAX_AUTO_PANELS).cloned().collect()
    } else {
        let mut seen = Vec::new();
        for key in keys {
            if !seen.iter().any(|k: &String| k == key) && series.contains_key(*key) {
                seen.push((*key).to_string());
            }
        }
        seen
    };
    if chosen.is_empty() {
        return Err(PlotError::NoData {
            path: jsonl.to_path_buf(),
            requested: keys.iter().map(|k| (*k).to_string()).collect(),
        });
    }
    let panels: Vec<(String, Vec<(i64, f64)>)> = chosen
        .iter()
        .map(|k| {
            let mut points = series.remove(k).unwrap_or_default();
            points.sort_by_key(|p| p.0);
            (k.clone(), points)
        })
        .collect();
    draw(out_png, &panels)?;
    Ok(chosen)
}

/// Reads every numeric metric of the file as `(step, value)` points, keyed by metric name.
fn read_series(path: &Path) -> Result<BTreeMap<String, Vec<(i64, f64)>>, PlotError> {
    let read_err = |source| PlotError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(read_err)?);
    let mut series: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut bad_count = 0usize;
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
            break;
        }
        line_no += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(&buf) {
            Ok((step, fields)) => {
                for (key, value) in fields {
                    series.entry(key).or_default().push((step, value));
                }
            }
            Err(message) => {
                bad_count += 1;
                if bad.len() < MAX_BAD_LINES_KEPT {
                    bad.push(BadLine {
                        line: line_no,
                        message,
                    });
                }
            }
        }
    }
    if bad_count > 0 {
        return Err(PlotError::BadLines {
            path: path.to_path_buf(),
            count: bad_count,
            lines: bad,
        });
    }
    Ok(series)
}

/// Parses one non-blank line into its step and its finite numeric fields other than `step`.
fn parse_line(line: &[u8]) -> Result<(i64, Vec<(String, f64)>), String> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("not a JSON object".to_string());
    };
    let step = match map.get("step") {
        None => return Err("no \"step\" field".to_string()),
        Some(s) => s
            .as_i64()
            .ok_or_else(|| format!("\"step\" is not an integer: {s}"))?,
    };
    let fields = map
        .into_iter()
        .filter(|(k, _)| k != "step")
        .filter_map(|(k, v)| v.as_f64().filter(|x| x.is_finite()).map(|x| (k, x)))
        .collect();
    Ok((step, fields))
}

/// Registers the bundled font as `sans-serif` (once per process).
fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

/// Grid shape `(rows, cols)` for `n` panels: near-square, wider than tall.
fn grid(n: usize) -> (usize, usize) {
    let mut cols = 1;
    while cols * cols < n {
        cols += 1;
    }
    (n.div_ceil(cols), cols)
}

/// Axis range with some padding; never empty.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    if span > 0.0 && span.is_finite() {
        (lo - 0.05 * span, hi + 0.05 * span)
    } else {
        let pad = if lo.abs() > 0.0 { lo.abs() * 0.05 } else { 1.0 };
        (lo - pad, hi + pad)
    }
}

/// Compact tick label: plain for moderate magnitudes, scientific otherwise.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    }
}

fn draw(out: &Path, panels: &[(String, Vec<(i64, f64)>)]) -> Result<(), PlotError> {
    ensure_font()?;
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: out.to_path_buf(),
        message: e.to_string(),
    };
    let (rows, cols) = grid(panels.len());
    let size = (PANEL_SIZE.0 * cols as u32, PANEL_SIZE.1 * rows as u32);
    // Drawn into memory and encoded with `png`: plotters' own encoder pulls in `image` with
    // every codec (half a minute of a fresh build) for one PNG.
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    render(&mut rgb, size, rows, cols, panels).map_err(|e| err(&e))?;
    write_png(out, size, &rgb).map_err(|e| err(&e))
}

fn render(
    rgb: &mut [u8],
    size: (u32, u32),
    rows: usize,
    cols: usize,
    panels: &[(String, Vec<(i64, f64)>)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = root.split_evenly((rows, cols));
    for (i, ((key, points), area)) in panels.iter().zip(areas.iter()).enumerate() {
        let (x_lo, x_hi) = points.iter().fold((i64::MAX, i64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        // A little room on both sides so end markers are not clipped.
        let pad = ((x_hi.saturating_sub(x_lo)) / 50).max(1);
        let (x_lo, x_hi) = (x_lo.saturating_sub(pad), x_hi.saturating_add(pad));
        let (y_lo, y_hi) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.1), hi.max(p.1))
            });
        let (y_lo, y_hi) = padded(y_lo, y_hi);

        let mut chart = ChartBuilder::on(area)
            .caption(key, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("value")
            .x_labels(6)
            .y_labels(6)
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        let (r, g, b) = COLORS[i % COLORS.len()];
        let color = RGBColor(r, g, b);
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
        // Sparse series (e.g. evaluation every N steps, or a single point) also get markers.
        if points.len() <= 40 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))
}

/// Encodes 8-bit RGB pixels as a PNG file.
fn write_png(out: &Path, (width, height): (u32, u32), rgb: &[u8]) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(rgb)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// xorshift64*: deterministic pseudo-random numbers without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A metrics file over 50 steps: dense reward/loss, sparse eval, a string and a bool field.
    fn sample_jsonl(rng: &mut Rng) -> String {
        let mut s = String::new();
        for step in 0..50 {
            let mut line = serde_json::json!({
                "step": step,
                "reward/mean": 0.2 + 0.01 * step as f64 + 0.05 * rng.unit(),
                "loss/value": 2.0 * (-0.05 * step as f64).exp() + 0.1 * rng.unit(),
                "kl": 1e-4 * step as f64,
                "phase": "train",
                "finished": step % 2 == 0,
                "extra": null,
            });
            if step % 10 == 9 {
                line["eval/accuracy"] = serde_json::json!(rng.unit());
            }
            s.push_str(&line.to_string());
            s.push('\n');
            if step % 17 == 0 {
                s.push_str("   \n");
            }
        }
        s
    }

    /// Checks the PNG signature and returns the IHDR width and height.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert!(bytes.len() > 33, "too short for a PNG");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
        let be = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        (be(16), be(20))
    }

    /// Decodes the PNG and returns its RGB pixels.
    fn pixels(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
        let decoder = png::Decoder::new(fs::File::open(path).expect("PNG file"));
        let mut reader = decoder.read_info().expect("PNG header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("decode PNG");
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        let pixels = buf[..info.buffer_size()]
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        (info.width, info.height, pixels)
    }

    #[test]
    fn plots_all_numeric_keys_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jsonl = dir.path().join("metrics.jsonl");
        fs::write(&jsonl, sample_jsonl(&mut Rng(7))).expect("write");
        let png = dir.path().join("metrics.png");
        let drawn = plot_metrics(&jsonl, &png, &[]).expect("plot");
        assert_eq!(drawn, ["eval/accuracy", "kl", "loss/value", "reward/mean"]);

        let bytes = fs::read(&png).expect("png");
        assert_eq!(png_size(&bytes), (2 * PANEL_SIZE.0, 2 * PANEL_SIZE.1));
        assert!(
            bytes.len() > 10_000,
            "suspiciously small PNG: {} bytes",
            bytes.len()
        );

        let (w, h, px) = pixels(&png);
        assert_eq!((w, h), (2 * PANEL_SIZE.0, 2 * PANEL_SIZE.1));
        let white = px.iter().filter(|p| **p == [255, 255, 255]).count();
        let dark = px.iter().filter(|p| p.iter().all(|&c| c < 100)).count();
        let colored = px
            .iter()
            .filter(|p| p.iter().max().unwrap_or(&0) - p.iter().min().unwrap_or(&0) > 60)
            .count();
        let total = px.len();
        assert!(
            white > total / 2,
            "mostly white background: {white}/{total}"
        );
        assert!(dark > 2_000, "axes and text drawn: {dark} dark pixels");
        assert!(
            colored > 1_000,
            "series drawn in colour: {colored} coloured pixels"
        );
        // Every panel has something in it (the text and lines are not all in one corner).
        for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let ink = (r * PANEL_SIZE.1..(r + 1) * PANEL_SIZE.1)
                .flat_map(|y| (c * PANEL_SIZE.0..(c + 1) * PANEL_SIZE.0).map(move |x| (x, y)))
                .filter(|&(x, y)| px[(y * w + x) as usize] != [255, 255, 255])
                .count();
            assert!(ink > 3_000, "panel ({r},{c}) has {ink} non-white pixels");
        }
    }

    #[test]
    fn explicit_keys_keep_order_skip_missing_and_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jsonl = dir.path().join("m.jsonl");
        fs::write(&jsonl, sample_jsonl(&mut Rng(99))).expect("write");
        let png = dir.path().join("m.png");
        let drawn = plot_metrics(
            &jsonl,
            &png,
            &[
                "reward/mean",
                "nope",
                "phase",
                "step",
                "eval/accuracy",
                "reward/mean",
            ],
        )
        .expect("plot");
        assert_eq!(drawn, ["reward/mean", "eval/accuracy"]);
        let bytes = fs::read(&png).expect("png");
        assert_eq!(png_size(&bytes), (2 * PANEL_SIZE.0, PANEL_SIZE.1));
    }

    #[test]
    fn auto_keys_capped_at_twelve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jsonl = dir.path().join("m.jsonl");
        let mut rng = Rng(3);
        let mut s = String::new();
        for step in (0..200).step_by(10) {
            let mut obj = serde_json::Map::new();
            obj.insert("step".into(), step.into());
            for k in 0..20 {
                obj.insert(format!("m{k:02}"), serde_json::json!(rng.unit() * k as f64));
            }
            s.push_str(&serde_json::Value::Object(obj).to_string());
            s.push('\n');
        }
        fs::write(&jsonl, s).expect("write");
        let png = dir.path().join("m.png");
        let drawn = plot_metrics(&jsonl, &png, &[]).expect("plot");
        let expected: Vec<String> = (0..12).map(|k| format!("m{k:02}")).collect();
        assert_eq!(drawn, expected);
        let bytes = fs::read(&png).expect("png");
        assert_eq!(png_size(&bytes), (4 * PANEL_SIZE.0, 3 * PANEL_SIZE.1));
    }

    #[test]
    fn single_point_and_constant_series_plot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jsonl = dir.path().join("m.jsonl");
        fs::write(
            &jsonl,
            "{\"step\": 5, \"a\": 1.5, \"b\": 0}\n{\"step\": 6, \"b\": 0}",
        )
        .expect("write");
        let png = dir.path().join("m.png");
        assert_eq!(plot_metrics(&jsonl, &png, &[]).expect("plot"), ["a", "b"]);
        let (_, _, px) = pixels(&png);
        assert!(
            px.iter()
                .any(|p| p.iter().max().unwrap_or(&0) - p.iter().min().unwrap_or(&0) > 60)
        );
    }

    #[test]
    fn bad_lines_are_reported_with_line_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jsonl = dir.path().join("m.jsonl");
        let text = [
            r#"{"step": 1, "a": 1}"#,
            "",
            r#"{"step": 2, "a": 2"#,    // 3: truncated
            r#"[1, 2]"#,                // 4: not an object
            r#"{"a": 3}"#,              // 5: no step
            r#"{"step": 1.5, "a": 3}"#, // 6: non-integer step
            r#"{"step": "7", "a": 3}"#, // 7: string step
            r#"{"step": 8, "a": 4}"#,
        ]
        .join("\n");
        fs::write(&jsonl, text).expect("write");
        let err = plot_metrics(&jsonl, &dir.path().join("m.png"), &[]).expect_err("bad lines");
        let PlotError::BadLines { count, lines, .. } = &err else {
            panic!("wrong error: {err}");
        };
        assert_eq!(*count, 5);
        let numbers: Vec<usize> = lines.iter().map(|b| b.line).collect();
        assert_eq!(numbers, [3, 4, 5, 6, 7]);
        let msg = err.to_string();
        assert!(msg.contains("line 3: invalid JSON"), "{msg}");
        assert!(msg.contains("line 5: no \"step\""), "{msg}");
        assert!(msg.contains("line 6: \"step\" is not an integer"), "{msg}");
        assert!(!dir.path().join("m.png").exists());
    }

    #[test]
    fn many_bad_lines_are_counted_but_few_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jsonl = dir.path().join("m.jsonl");
        fs::write(&jsonl, "garbage\n".repeat(25)).expect("write");
        let err = plot_metrics(&jsonl, &dir.path().join("m.png"), &[]).expect_err("bad");
        let PlotError::BadLines { count, lines, .. } = &err else {
            panic!("wrong error: {err}");
        };
        assert_eq!((*count, lines.len()), (25, MAX_BAD_LINES_KEPT));
        assert!(err.to_string().contains("and 15 more"));
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jsonl = dir.path().join("m.jsonl");
        fs::write(&jsonl, "{\"step\": 1, \"note\": \"hi\"}\n\n").expect("write");
        let png = dir.path().join("m.png");
        assert!(matches!(
            plot_metrics(&jsonl, &png, &[]),
            Err(PlotError::NoData { .. })
        ));
        fs::write(&jsonl, "{\"step\": 1, \"a\": 2}\n").expect("write");
        let err = plot_metrics(&jsonl, &png, &["b"]).expect_err("missing key");
        assert!(
            matches!(&err, PlotError::NoData { requested, .. } if requested == &["b"]),
            "{err}"
        );
        fs::write(&jsonl, "").expect("write");
        assert!(matches!(
            plot_metrics(&jsonl, &png, &[]),
            Err(PlotError::NoData { .. })
        ));
    }

    #[test]
    fn io_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("absent.jsonl");
        let err = plot_metrics(&missing, &dir.path().join("m.png"), &[]).expect_err("missing");
        assert!(matches!(err, PlotError::Read { .. }));
        assert!(err.to_string().contains("absent.jsonl"));

        let jsonl = dir.path().join("m.jsonl");
        fs::write(&jsonl, "{\"step\": 1, \"a\": 2}\n").expect("write");
        let err =
            plot_metrics(&jsonl, &dir.path().join("no/such/dir/m.png"), &[]).expect_err("no dir");
        assert!(matches!(err, PlotError::Draw { .. }), "{err}");
    }

    #[test]
    fn grid_and_ticks() {
        assert_eq!(grid(1), (1, 1));
        assert_eq!(grid(2), (1, 2));
        assert_eq!(grid(3), (2, 2));
        assert_eq!(grid(4), (2, 2));
        assert_eq!(grid(5), (2, 3));
        assert_eq!(grid(7), (3, 3));
        assert_eq!(grid(12), (3, 4));
        for n in 1..=40 {
            let (r, c) = grid(n);
            assert!(r * c >= n && r * c < n + c && r <= c, "{n}: {r}x{c}");
        }
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(-1.5), "-1.5");
        assert_eq!(tick(100.0), "100");
        assert_eq!(tick(-0.00001), "-1.00e-5");
        assert_eq!(tick(123456.0), "1.23e5");
        assert_eq!(tick(-0.00004), "-4.00e-5");
        assert_eq!(padded(1.0, 1.0), (0.95, 1.05));
        assert_eq!(padded(0.0, 0.0), (-1.0, 1.0));
        assert_eq!(padded(0.0, 10.0), (-0.5, 10.5));
    }
}
