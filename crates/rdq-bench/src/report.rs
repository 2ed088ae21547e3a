//! One JSON line per scenario.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) id: &'static str,
    pub(crate) metric: &'static str,
    pub(crate) value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ratio: Option<f64>,
    pub(crate) target: String,
    /// Against `target`; `None` where the scenario has no target (it is
    /// reported for comparison only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pass: Option<bool>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub(crate) detail: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// The JSON line.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// A row of the Markdown table (see [`markdown`]).
    fn row(&self) -> String {
        let num = |x: Option<f64>| x.map_or_else(String::new, fmt_number);
        // The spread over rounds, where the scenario has one: of the ratio
        // if it has one, else of the value.
        let spread = self
            .detail
            .iter()
            .find(|(k, _)| *k == "ratio_range")
            .or_else(|| self.detail.iter().find(|(k, _)| k.starts_with("range_")))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or("")
            .replace("..", " – ");
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.id,
            self.metric,
            fmt_number(self.value),
            num(self.baseline),
            num(self.ratio),
            spread,
            self.target.replace('|', "\\|"),
            match self.pass {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            }
        )
    }
}

/// A number as a reader wants it: thousands grouped, at most 3 decimals.
fn fmt_number(x: f64) -> String {
    if x.abs() >= 1000.0 {
        let digits = format!("{:.0}", x.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if x < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The README's Benchmarks table: one row per report, then the context
/// (`context` lines, e.g. the command and the machine).
pub(crate) fn markdown(reports: &[Report], context: &[String]) -> String {
    let mut out = String::from(
        "| id | metric | value | baseline | ratio | range over rounds | target | pass |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out.push_str(&r.row());
        out.push('\n');
    }
    out.push('\n');
    for line in context {
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `x` rounded to three decimals, for ratios.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The smallest and largest of `values`.
pub(crate) fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// The median of per-round `values`, with their range recorded in `detail`
/// under `key` (as `low..high`, no decimals: for rates).
pub(crate) fn median_with_range(
    values: &mut [f64],
    key: &str,
    detail: &mut serde_json::Map<String, serde_json::Value>,
) -> f64 {
    let (lo, hi) = range(values);
    detail.insert(key.into(), format!("{lo:.0}..{hi:.0}").into());
    median(values)
}
