//! 2-D data sets for the diffusion lab: seeded presets (a Gaussian mixture, two moons, a
//! spiral, rings, a checkerboard, a word in a built-in bitmap font) and validation of any
//! point set (a drawing, a file) with clear errors. Points are scaled to roughly unit
//! spread around the origin, where the forward process's N(0, I) end point lives.

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// The most points a data set may hold (the exact score loops over all of them per query).
pub const MAX_POINTS: usize = 20_000;
/// The most classes (the class embedding has one row per class plus the null class).
pub const MAX_CLASSES: usize = 16;

/// A validated 2-D point set with an optional class per point.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// (x, y) per point.
    pub points: Vec<[f32; 2]>,
    /// Class per point, all `< num_classes`; `None` for an unlabelled set.
    pub labels: Option<Vec<u32>>,
    /// 0 when unlabelled.
    pub num_classes: usize,
}

impl Dataset {
    /// Check a point set: at least 2 points, at most [`MAX_POINTS`], finite coordinates,
    /// one label per point below `num_classes` (≤ [`MAX_CLASSES`]) when labelled.
    pub fn new(
        points: Vec<[f32; 2]>,
        labels: Option<Vec<u32>>,
        num_classes: usize,
    ) -> Result<Self> {
        if points.is_empty() {
            return Err(Error::config(
                "the data set is empty: draw or load some points",
            ));
        }
        if points.len() == 1 {
            return Err(Error::config(
                "the data set has only one point: a diffusion model needs at least 2",
            ));
        }
        if points.len() > MAX_POINTS {
            return Err(Error::config(format!(
                "the data set has {} points; at most {MAX_POINTS} are supported",
                points.len()
            )));
        }
        if let Some(i) = points
            .iter()
            .position(|p| !p[0].is_finite() || !p[1].is_finite())
        {
            return Err(Error::config(format!(
                "point {i} has a non-finite coordinate ({}, {})",
                points[i][0], points[i][1]
            )));
        }
        match &labels {
            None => {
                if num_classes != 0 {
                    return Err(Error::config(format!(
                        "{num_classes} classes given but no labels"
                    )));
                }
            }
            Some(l) => {
                if l.len() != points.len() {
                    return Err(Error::config(format!(
                        "{} labels for {} points",
                        l.len(),
                        points.len()
                    )));
                }
                if num_classes == 0 || num_classes > MAX_CLASSES {
                    return Err(Error::config(format!(
                        "a labelled data set needs 1 to {MAX_CLASSES} classes, got {num_classes}"
                    )));
                }
                if let Some(i) = l.iter().position(|&c| c as usize >= num_classes) {
                    return Err(Error::config(format!(
                        "point {i} has class {} but there are only {num_classes} classes",
                        l[i]
                    )));
                }
            }
        }
        Ok(Dataset {
            points,
            labels,
            num_classes,
        })
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The same points without classes.
    pub fn unlabelled(mut self) -> Self {
        self.labels = None;
        self.num_classes = 0;
        self
    }

    /// Coordinates flattened as [x0, y0, x1, y1, ...].
    pub fn flat(&self) -> Vec<f32> {
        self.points.iter().flat_map(|p| [p[0], p[1]]).collect()
    }

    /// `n` points drawn uniformly with replacement (a "draw of the data" for the fit figure).
    pub fn draw(&self, n: usize, seed: u64) -> Vec<[f32; 2]> {
        let mut rng = SplitMix64(seed);
        (0..n)
            .map(|_| self.points[rng.below(self.points.len() as u64) as usize])
            .collect()
    }
}

/// Parse a point set from CSV text, one point per line: `x,y` (unlabelled) or `x,y,class`
/// (labelled; class an integer 0 to [`MAX_CLASSES`] − 1, the set has `max class + 1`
/// classes). Every line must have the same number of fields. Blank lines and lines starting
/// with `#` are skipped, as is a first line `x,y` or `x,y,class` (a header); spaces and tabs
/// around fields and a final `\r` are allowed. The points are used as given: the lab works
/// near unit scale (the presets lie within about ±2.5). `name` (the file) starts every
/// error, with the line number and what is wrong. Reads at most [`MAX_POINTS`] points
/// before refusing, so a huge input costs no more than its text.
pub fn parse_points_csv(text: &str, name: &str) -> Result<Dataset> {
    let mut points = Vec::new();
    let mut labels = Vec::new();
    let mut fields_per_line: Option<usize> = None;
    let mut seen_first = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let err = |what: String| Error::file(name, format!("line {line_no}: {what}"));
        let line = raw
            .strip_suffix('\r')
            .unwrap_or(raw)
            .trim_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = !seen_first;
        seen_first = true;
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim_matches([' ', '\t']))
            .collect();
        if first && (fields == ["x", "y"] || fields == ["x", "y", "class"]) {
            fields_per_line = Some(fields.len());
            continue;
        }
        if fields.len() != 2 && fields.len() != 3 {
            return Err(err(format!(
                "{} fields; expected `x,y` or `x,y,class`",
                fields.len()
            )));
        }
        match fields_per_line {
            None => fields_per_line = Some(fields.len()),
            Some(n) if n != fields.len() => {
                return Err(err(format!(
                    "{} fields, but earlier lines have {n}: either every point has a class \
                     or none has",
                    fields.len()
                )))
            }
            Some(_) => {}
        }
        if points.len() == MAX_POINTS {
            return Err(err(format!(
                "more than {MAX_POINTS} points; at most {MAX_POINTS} are supported"
            )));
        }
        let mut xy = [0f32; 2];
        for (k, (v, axis)) in xy.iter_mut().zip(["x", "y"]).enumerate() {
            let f = fields[k];
            *v = f
                .parse::<f32>()
                .map_err(|_| err(format!("{axis} = `{}` is not a number", clip(f))))?;
            if !v.is_finite() {
                return Err(err(format!(
                    "{axis} = `{}` is not finite (NaN, infinite or beyond f32's range)",
                    clip(f)
                )));
            }
        }
        points.push(xy);
        if let Some(c) = fields.get(2) {
            let class = c
                .parse::<u32>()
                .ok()
                .filter(|&c| (c as usize) < MAX_CLASSES)
                .ok_or_else(|| {
                    err(format!(
                        "class `{}` is not an integer from 0 to {}",
                        clip(c),
                        MAX_CLASSES - 1
                    ))
                })?;
            labels.push(class);
        }
    }
    let labelled = fields_per_line == Some(3);
    let num_classes = if labelled {
        labels.iter().max().map_or(0, |&m| m as usize + 1)
    } else {
        0
    };
    Dataset::new(points, labelled.then_some(labels), num_classes).map_err(|e| match e {
        Error::Config(msg) => Error::file(name, msg),
        other => other,
    })
}

/// At most 40 characters of a field, for error messages.
fn clip(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}

/// The built-in data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// 8 Gaussians on a circle (class = component).
    Gaussians,
    /// Two interleaved half circles (class = moon).
    Moons,
    /// A two-armed spiral (class = arm).
    Spiral,
    /// Three concentric rings (class = ring).
    Rings,
    /// A 4 × 4 checkerboard's dark squares (class = quadrant).
    Checkerboard,
    /// A word rasterised from a 5 × 7 bitmap font (class = letter, up to 16).
    Word,
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::Gaussians,
        Preset::Moons,
        Preset::Spiral,
        Preset::Rings,
        Preset::Checkerboard,
        Preset::Word,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Gaussians => "gaussians",
            Preset::Moons => "moons",
            Preset::Spiral => "spiral",
            Preset::Rings => "rings",
            Preset::Checkerboard => "checkerboard",
            Preset::Word => "word",
        }
    }

    pub fn from_name(name: &str) -> Result<Preset> {
        Preset::ALL
            .iter()
            .copied()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
                Error::config(format!(
                    "unknown preset `{name}` (presets: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Standard normal by Box–Muller.
fn gauss(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.next_f64(); // (0, 1]
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Generate `n` points of a preset (the word preset uses `text`, upper-cased; letters
/// outside A–Z and digits are skipped). Seeded: the same arguments give the same points.
pub fn generate(preset: Preset, n: usize, seed: u64, text: &str) -> Result<Dataset> {
    if n > MAX_POINTS {
        return Err(Error::config(format!(
            "{n} points requested; at most {MAX_POINTS} are supported"
        )));
    }
    let mut rng = SplitMix64(seed ^ 0x6c61_625f_6461_7461);
    let mut points = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let classes = match preset {
        Preset::Gaussians => {
            for _ in 0..n {
                let c = rng.below(8) as u32;
                let a = c as f64 * std::f64::consts::TAU / 8.0;
                let (x, y) = (
                    1.6 * a.cos() + 0.12 * gauss(&mut rng),
                    1.6 * a.sin() + 0.12 * gauss(&mut rng),
                );
                points.push([x as f32, y as f32]);
                labels.push(c);
            }
            8
        }
        Preset::Moons => {
            for _ in 0..n {
                let c = rng.below(2) as u32;
                let a = rng.next_f64() * std::f64::consts::PI;
                // sklearn's make_moons, centred and scaled to about [-1.8, 1.8] x [-1, 1].
                let (x, y) = if c == 0 {
                    (a.cos(), a.sin())
                } else {
                    (1.0 - a.cos(), 0.5 - a.sin())
                };
                let x = (x - 0.5) * 1.2 + 0.06 * gauss(&mut rng);
                let y = (y - 0.25) * 1.2 + 0.06 * gauss(&mut rng);
                points.push([x as f32, y as f32]);
                labels.push(c);
            }
            2
        }
        Preset::Spiral => {
            for _ in 0..n {
                let c = rng.below(2) as u32;
                let s = rng.next_f64().sqrt(); // even density along the arm
                let r = 0.15 + 1.75 * s;
                let a = 3.0 * std::f64::consts::PI * s + c as f64 * std::f64::consts::PI;
                let x = r * a.cos() + 0.04 * gauss(&mut rng);
                let y = r * a.sin() + 0.04 * gauss(&mut rng);
                points.push([x as f32, y as f32]);
                labels.push(c);
            }
            2
        }
        Preset::Rings => {
            let radii = [0.5, 1.15, 1.8];
            for _ in 0..n {
                // Points in proportion to the circumference.
                let u = rng.next_f64() * (radii[0] + radii[1] + radii[2]);
                let c = if u < radii[0] {
                    0
                } else if u < radii[0] + radii[1] {
                    1
                } else {
                    2
                };
                let a = rng.next_f64() * std::f64::consts::TAU;
                let r = radii[c] + 0.04 * gauss(&mut rng);
                points.push([(r * a.cos()) as f32, (r * a.sin()) as f32]);
                labels.push(c as u32);
            }
            3
        }
        Preset::Checkerboard => {
            for _ in 0..n {
                // 8 dark squares of a 4 x 4 board over [-2, 2]^2.
                let k = rng.below(8);
                let row = k / 2;
                let col = 2 * (k % 2) + (row % 2);
                let x = -2.0 + col as f64 + rng.next_f64();
                let y = -2.0 + row as f64 + rng.next_f64();
                points.push([x as f32, y as f32]);
                labels.push((x >= 0.0) as u32 + 2 * (y >= 0.0) as u32);
            }
            4
        }
        Preset::Word => {
            let cells = rasterise(text)?;
            let classes = cells.iter().map(|c| c.2 as usize + 1).max().unwrap_or(1);
            let cols = cells.iter().map(|c| c.0).max().unwrap_or(0) + 1;
            // Fit the text's width into [-2, 2]; pixel (col, row) is a unit square.
            let scale = 4.0 / cols.max(8) as f64;
            let cx = cols as f64 / 2.0;
            let cy = FONT_ROWS as f64 / 2.0;
            for _ in 0..n {
                let (col, row, c) = cells[rng.below(cells.len() as u64) as usize];
                let x = (col as f64 + rng.next_f64() - cx) * scale;
                let y = (cy - row as f64 - rng.next_f64()) * scale;
                points.push([x as f32, y as f32]);
                labels.push(c);
            }
            classes
        }
    };
    Dataset::new(points, Some(labels), classes)
}

const FONT_ROWS: usize = 7;

/// A 5 × 7 bitmap font: per character, 7 rows of 5 bits (bit 4 = leftmost column).
fn glyph(ch: char) -> Option<[u8; 7]> {
    Some(match ch {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        _ => return None,
    })
}

/// The lit pixels of `text` as (column, row, letter index as class); one blank column
/// between letters.
fn rasterise(text: &str) -> Result<Vec<(usize, usize, u32)>> {
    let mut cells = Vec::new();
    let mut letter = 0usize;
    for ch in text.chars().flat_map(|c| c.to_uppercase()) {
        let Some(rows) = glyph(ch) else { continue };
        if letter == MAX_CLASSES {
            return Err(Error::config(format!(
                "the word `{text}` has more than {MAX_CLASSES} letters"
            )));
        }
        for (r, bits) in rows.iter().enumerate() {
            for c in 0..5 {
                if bits & (0x10 >> c) != 0 {
                    cells.push((letter * 6 + c, r, letter as u32));
                }
            }
        }
        letter += 1;
    }
    if cells.is_empty() {
        return Err(Error::config(format!(
            "the word `{text}` has no letters A-Z or digits to draw"
        )));
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_seeded_bounded_and_labelled() {
        for p in Preset::ALL {
            let a = generate(p, 2000, 7, "lab").unwrap();
            let b = generate(p, 2000, 7, "lab").unwrap();
            let c = generate(p, 2000, 8, "lab").unwrap();
            assert_eq!(a, b, "{}: same seed, same points", p.name());
            assert_ne!(a.points, c.points, "{}: other seed, other points", p.name());
            assert_eq!(a.len(), 2000);
            let labels = a.labels.as_ref().unwrap();
            for k in 0..a.num_classes as u32 {
                assert!(labels.contains(&k), "{}: class {k} is used", p.name());
            }
            let (mut mx, mut my, mut m2) = (0.0f64, 0.0f64, 0.0f64);
            for q in &a.points {
                assert!(
                    q[0].abs() < 3.0 && q[1].abs() < 3.0,
                    "{}: {q:?} in range",
                    p.name()
                );
                mx += q[0] as f64;
                my += q[1] as f64;
                m2 += (q[0] as f64).powi(2) + (q[1] as f64).powi(2);
            }
            let n = a.len() as f64;
            assert!(
                (mx / n).abs() < 0.3 && (my / n).abs() < 0.3,
                "{}: centred",
                p.name()
            );
            let spread = (m2 / n).sqrt();
            assert!(
                (0.5..2.5).contains(&spread),
                "{}: rms radius {spread}",
                p.name()
            );
        }
        assert_eq!(Preset::from_name("moons").unwrap(), Preset::Moons);
        let e = Preset::from_name("mooons").unwrap_err().to_string();
        assert!(e.contains("mooons") && e.contains("moons"), "{e}");
    }

    #[test]
    fn word_has_one_class_per_letter_and_draws_its_pixels() {
        let d = generate(Preset::Word, 5000, 1, "Hi").unwrap();
        assert_eq!(d.num_classes, 2);
        // "I" is drawn right of "H".
        let (mut xh, mut xi, mut nh, mut ni) = (0.0, 0.0, 0, 0);
        for (p, &c) in d.points.iter().zip(d.labels.as_ref().unwrap()) {
            if c == 0 {
                xh += p[0];
                nh += 1;
            } else {
                xi += p[0];
                ni += 1;
            }
        }
        assert!(xh / (nh as f32) < xi / (ni as f32));
        // The middle of H's crossbar row is lit, the middle of its top row is not.
        assert!(rasterise("H").unwrap().contains(&(2, 3, 0)));
        assert!(!rasterise("H").unwrap().contains(&(2, 0, 0)));
        assert!(generate(Preset::Word, 10, 1, "?!").is_err());
        assert!(generate(Preset::Word, 10, 1, "ABCDEFGHIJKLMNOPQ").is_err());
    }

    #[test]
    fn bad_point_sets_get_clear_errors() {
        let e = |r: Result<Dataset>| r.unwrap_err().to_string();
        assert!(e(Dataset::new(vec![], None, 0)).contains("empty"));
        assert!(e(Dataset::new(vec![[0.0, 0.0]], None, 0)).contains("only one point"));
        assert!(e(Dataset::new(vec![[0.0, 0.0]; MAX_POINTS + 1], None, 0)).contains("at most"));
        assert!(e(Dataset::new(vec![[0.0, 0.0], [f32::NAN, 1.0]], None, 0)).contains("point 1"));
        assert!(e(Dataset::new(vec![[0.0, 0.0]; 2], Some(vec![0]), 1)).contains("1 labels for 2"));
        assert!(e(Dataset::new(vec![[0.0, 0.0]; 2], Some(vec![0, 3]), 2)).contains("class 3"));
        assert!(e(generate(Preset::Moons, MAX_POINTS + 1, 0, "")).contains("at most"));
        assert!(Dataset::new(vec![[0.0, 0.0], [1.0, 1.0]], Some(vec![0, 1]), 2).is_ok());
    }

    #[test]
    fn points_csv_parses_and_its_errors_name_the_line() {
        let d = parse_points_csv("x,y\n0.5, -1\n# comment\n\n2,3e-1\r\n", "p.csv").unwrap();
        assert_eq!(d.points, vec![[0.5, -1.0], [2.0, 0.3]]);
        assert_eq!((d.labels, d.num_classes), (None, 0));
        let d = parse_points_csv("0,0,2\n1,1,0\n\t-1 , 2 , 1 ", "p.csv").unwrap();
        assert_eq!(d.labels, Some(vec![2, 0, 1]));
        assert_eq!(d.num_classes, 3);
        let e = |text: &str| parse_points_csv(text, "p.csv").unwrap_err().to_string();
        let cases = [
            ("0,0\n1,a\n", "line 2: y = `a` is not a number"),
            ("0,0\n1\n", "line 2: 1 fields"),
            ("0,0\n1,2,3,4\n", "line 2: 4 fields"),
            ("0,0\n1,1,0\n", "line 2: 3 fields, but earlier lines have 2"),
            (
                "x,y,class\n0,0\n",
                "line 2: 2 fields, but earlier lines have 3",
            ),
            ("0,0\nNaN,1\n", "line 2: x = `NaN` is not finite"),
            ("0,0\n1,inf\n", "line 2: y = `inf` is not finite"),
            ("0,0\n1,1e39\n", "line 2: y = `1e39` is not finite"),
            (
                "0,0,0\n1,1,16\n",
                "line 2: class `16` is not an integer from 0 to 15",
            ),
            ("0,0,0\n1,1,-1\n", "line 2: class `-1`"),
            ("0,0,0\n1,1,1.5\n", "line 2: class `1.5`"),
            ("", "p.csv: the data set is empty"),
            ("x,y\n# nothing\n", "p.csv: the data set is empty"),
            ("1,2\n", "p.csv: the data set has only one point"),
            ("x,y\nx,y\n", "line 2: x = `x` is not a number"),
        ];
        for (text, want) in cases {
            let got = e(text);
            assert!(got.starts_with("p.csv: "), "{text:?}: {got}");
            assert!(got.contains(want), "{text:?}: {got} (want {want})");
        }
        let long = format!("0,0\n{},1\n", "9".repeat(100));
        assert!(e(&long).contains("…` is not finite"), "{}", e(&long));
        let many = "1,1\n".repeat(MAX_POINTS + 1);
        assert!(e(&many).contains(&format!("line {}: more than", MAX_POINTS + 1)));
        assert_eq!(
            parse_points_csv(&"1,1\n".repeat(MAX_POINTS), "p")
                .unwrap()
                .len(),
            MAX_POINTS
        );
    }
}
