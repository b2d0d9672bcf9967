//! The benchmark's report: a Markdown file of medians and ratios, and CSV files of the raw
//! figures that `scripts/bench_charts.py` draws (latency distributions, live users over time).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub struct Report {
    dir: PathBuf,
    markdown: String,
}

impl Report {
    pub fn new(dir: &Path, header: &str) -> Report {
        std::fs::create_dir_all(dir).expect("creating the report directory");
        Report {
            dir: dir.to_owned(),
            markdown: format!("{header}\n"),
        }
    }

    /// A section: a heading, a line of context, and a table.
    pub fn table(&mut self, heading: &str, note: &str, columns: &[&str], rows: &[Vec<String>]) {
        let md = &mut self.markdown;
        let _ = write!(md, "\n## {heading}\n\n");
        if !note.is_empty() {
            let _ = write!(md, "{note}\n\n");
        }
        let _ = writeln!(md, "| {} |", columns.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(columns.len()));
        for row in rows {
            let _ = writeln!(md, "| {} |", row.join(" | "));
        }
        self.save();
    }

    /// Writes `name` (a CSV file) with `header` and `rows`.
    pub fn csv(&self, name: &str, header: &str, rows: impl IntoIterator<Item = String>) {
        let mut text = format!("{header}\n");
        for row in rows {
            text.push_str(&row);
            text.push('\n');
        }
        std::fs::write(self.dir.join(name), text).expect("writing a CSV file");
    }

    /// Saves what the report has so far, so an interrupted run keeps its finished sections.
    fn save(&self) {
        std::fs::write(self.dir.join("report.md"), &self.markdown).expect("writing report.md");
    }

    pub fn print(&self) {
        println!("{}", self.markdown);
        println!("report: {}", self.dir.join("report.md").display());
    }
}

/// `x` with one decimal.
pub fn f1(x: f64) -> String {
    format!("{x:.1}")
}

/// A ratio as `x1.23`.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("x{:.2}", a / b)
    } else {
        "n/a".into()
    }
}
