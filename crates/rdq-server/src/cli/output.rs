//! What the client verbs print: aligned tables, relative times, pretty JSON,
//! and progress bars on stderr.
//!
//! Everything here builds strings; [`print()`] writes them. A closed pipe
//! (`rdq jobs | head`) is not an error: the reader has seen enough.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};

use super::client::RateView;
use super::CliError;

/// How a column lines up its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// A table of text: a header row, then rows, columns separated by two
/// spaces and padded to the widest cell. Widths count characters, not
/// terminal cells, which is right for the ASCII the verbs print.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            aligns: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, each ending in `\n`, without trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                match self.aligns[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A length of time in at most two units: `850ms`, `42s`, `3m12s`, `2h05m`,
/// `3d4h`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ if s % 86_400 / 3600 == 0 => format!("{}d", s / 86_400),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A moment relative to `now`: `3s ago`, `now` (less than a second ago),
/// `in 2m`, `in 850ms` (a hold about to end is worth the detail).
pub fn relative(at: SystemTime, now: SystemTime) -> String {
    match now.duration_since(at) {
        Ok(past) if past < Duration::from_secs(1) => "now".to_owned(),
        Ok(past) => format!("{} ago", span(past)),
        Err(future) => format!("in {}", span(future.duration())),
    }
}

/// A server time (RFC 3339) relative to now, or the text as given if it is
/// not one.
pub fn relative_text(rfc3339: &str) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(at) => relative(at, SystemTime::now()),
        Err(_) => rfc3339.to_owned(),
    }
}

/// A server time in full, then relative: `2025-01-02T03:04:05.000000Z (3s
/// ago)`; `-` when absent.
pub fn moment(rfc3339: Option<&str>) -> String {
    match rfc3339 {
        Some(t) => format!("{t} ({})", relative_text(t)),
        None => "-".to_owned(),
    }
}

/// A rate as `rdq rate` takes it: `10/s`, `600/min`, `5/2s`, with `, burst
/// N` when more than one launch may go back to back.
pub fn rate(r: &RateView) -> String {
    let ms = r.period_ms;
    let period = match ms {
        1000 => "s".to_owned(),
        60_000 => "min".to_owned(),
        3_600_000 => "h".to_owned(),
        86_400_000 => "d".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}min", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    };
    if r.burst > 1 {
        format!("{}/{period}, burst {}", r.count, r.burst)
    } else {
        format!("{}/{period}", r.count)
    }
}

/// Text on one line and at most `max` characters: line breaks become
/// spaces; a longer text is cut and ends in `…`.
pub fn shorten(text: &str, max: usize) -> String {
    let flat = one_line(text);
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The text with every run of whitespace (line breaks included) turned into
/// one space, so that an error is one line on stderr.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// JSON, indented, ending in a newline: what `--json` prints.
pub fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// Writes to stdout. A closed pipe ends the output quietly.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!("cannot write the output: {e}"))),
    }
}

/// A progress bar on stderr counting `len` items (or a spinner when the
/// count is unknown); hidden when stderr is not a terminal, so scripts and
/// logs get none of it.
pub fn progress(len: Option<u64>, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            format!("{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed}} {{msg}}"),
        ),
        None => (
            ProgressBar::new_spinner(),
            format!("{{spinner}} {{pos}} {unit} {{elapsed}} {{msg}}"),
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let mut t = Table::new(&[
            ("ID", Align::Right),
            ("STATE", Align::Left),
            ("ERROR", Align::Left),
        ]);
        t.row(vec!["7".into(), "pending".into(), String::new()]);
        t.row(vec!["1234".into(), "dead".into(), "HTTP 500".into()]);
        t.row(vec!["5".into()]);
        assert_eq!(
            t.render(),
            "  ID  STATE    ERROR\n   7  pending\n1234  dead     HTTP 500\n   5\n"
        );
        assert!(!t.is_empty());
        assert!(Table::new(&[("A", Align::Left)]).render() == "A\n");
    }

    #[test]
    fn spans_use_two_units_at_most() {
        let s = Duration::from_secs;
        assert_eq!(span(Duration::from_millis(850)), "850ms");
        assert_eq!(span(s(42)), "42s");
        assert_eq!(span(s(180)), "3m");
        assert_eq!(span(s(192)), "3m12s");
        assert_eq!(span(s(7200)), "2h");
        assert_eq!(span(s(7500)), "2h05m");
        assert_eq!(span(s(3 * 86_400)), "3d");
        assert_eq!(span(s(3 * 86_400 + 4 * 3600 + 59)), "3d4h");
    }

    #[test]
    fn times_are_relative_to_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(relative(now - Duration::from_secs(3), now), "3s ago");
        assert_eq!(relative(now + Duration::from_secs(120), now), "in 2m");
        assert_eq!(relative(now + Duration::from_millis(300), now), "in 300ms");
        assert_eq!(relative(now - Duration::from_millis(300), now), "now");
        assert_eq!(relative_text("yesterday"), "yesterday");
        assert!(relative_text("2000-01-01T00:00:00.000000Z").ends_with(" ago"));
        assert_eq!(moment(None), "-");
        assert!(moment(Some("2000-01-01T00:00:00Z")).starts_with("2000-01-01T00:00:00Z ("));
    }

    #[test]
    fn rates_print_as_rdq_rate_takes_them() {
        let r = |count, period_ms, burst| {
            rate(&RateView {
                count,
                period_ms,
                burst,
            })
        };
        assert_eq!(r(10, 1000, 1), "10/s");
        assert_eq!(r(600, 60_000, 1), "600/min");
        assert_eq!(r(5, 2000, 1), "5/2s");
        assert_eq!(r(1, 250, 1), "1/250ms");
        assert_eq!(r(100, 7_200_000, 1), "100/2h");
        assert_eq!(r(10, 1000, 5), "10/s, burst 5");
        for text in ["10/s", "600/min", "5/2s", "1/250ms", "100/2h"] {
            let parsed = crate::config::resolved::parse_rate(text, None).unwrap();
            let view = RateView {
                count: parsed.count(),
                period_ms: parsed.period().as_millis() as u64,
                burst: parsed.burst(),
            };
            assert_eq!(rate(&view), text);
        }
    }

    #[test]
    fn shortened_text_is_one_line() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("line one\nline  two", 100), "line one line two");
        assert_eq!(shorten("abcdefghijkl", 6), "abcde…");
        assert_eq!(shorten("abcdefghijkl", 6).chars().count(), 6);
    }

    #[test]
    fn json_is_pretty_with_a_final_newline() {
        assert_eq!(pretty(&serde_json::json!({"a": 1})), "{\n  \"a\": 1\n}\n");
    }
}
