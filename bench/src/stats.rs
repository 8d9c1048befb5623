//! Sample statistics and the SVG chart.

use std::fmt::Write;

/// The order in which `n` entries run in round `round`: a permutation shuffled from a
/// fixed seed, so a run is repeatable and over the rounds every entry follows every other
/// one about equally often.
pub fn round_order(round: usize, n: usize) -> Vec<usize> {
    // splitmix64: a few lines, good enough to shuffle a handful of entries.
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (round as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order
}

#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub ms: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, v: f64) {
        self.ms.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }

    /// Nearest-rank percentile (p in 0..=100).
    pub fn pct(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
}

/// A strip chart (every sample a dot, the median a bar) per series, on a
/// shared linear axis. Hand-written SVG: no plotting dependency.
pub fn svg_strip(title: &str, unit: &str, series: &[(String, &Samples)]) -> String {
    let (w, row, left, top) = (900.0, 34.0, 230.0, 50.0);
    let h = top + row * series.len() as f64 + 50.0;
    let max = series
        .iter()
        .flat_map(|(_, s)| s.ms.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let nice = nice_ceiling(max);
    let x = |v: f64| left + (w - left - 30.0) * v / nice;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for i in 0..=5 {
        let v = nice * i as f64 / 5.0;
        let xx = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{v:.1}</text>"##,
            h - 40.0,
            h - 24.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{unit}</text>"#,
        x(nice / 2.0),
        h - 6.0
    );
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
    ];
    for (i, (name, sm)) in series.iter().enumerate() {
        let y = top + row * i as f64 + row / 2.0;
        let c = colors[i % colors.len()];
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 10.0,
            y + 4.0,
            esc(name)
        );
        for (j, v) in sm.ms.iter().enumerate() {
            // Deterministic jitter keeps overlapping dots visible.
            let jy = y + ((j * 7919) % 11) as f64 - 5.0;
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{jy:.1}" r="2.5" fill="{c}" fill-opacity="0.55"/>"#,
                x(*v)
            );
        }
        let m = x(sm.median());
        let _ = writeln!(
            s,
            r#"<line x1="{m:.1}" y1="{:.1}" x2="{m:.1}" y2="{:.1}" stroke="black" stroke-width="2"/>"#,
            y - 11.0,
            y + 11.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = Samples {
            ms: vec![5.0, 1.0, 3.0, 2.0, 4.0],
        };
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.pct(90.0), 5.0);
        assert_eq!(s.pct(20.0), 1.0);
        let e = Samples { ms: vec![1.0, 2.0] };
        assert_eq!(e.median(), 1.5);
        assert!(Samples::default().median().is_nan());
    }

    #[test]
    fn every_round_runs_each_entry_once_and_predecessors_vary() {
        let mut after = std::collections::BTreeSet::new();
        for round in 0..30 {
            let o = round_order(round, 5);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
            after.extend(o.windows(2).map(|w| (w[0], w[1])));
        }
        // Over 30 rounds every ordered pair of the 5 entries occurs: no entry always
        // follows the same one.
        assert_eq!(after.len(), 20);
        assert_eq!(round_order(7, 5), round_order(7, 5));
    }

    #[test]
    fn chart_has_a_row_per_series() {
        let a = Samples { ms: vec![1.0, 2.0] };
        let b = Samples { ms: vec![3.0] };
        let svg = svg_strip("t", "ms", &[("a".into(), &a), ("b<c".into(), &b)]);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("b&lt;c"));
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(0.42), 0.5);
    }
}
