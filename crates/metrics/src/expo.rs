//! Writing the Prometheus text exposition format 0.0.4: `# HELP`, `# TYPE` and sample lines, label
//! value escaping, float formatting. Names are written as given: callers only pass names that are
//! constants of this crate or were validated by [`is_metric_name`] / [`is_label_name`].

use std::fmt::Write as _;

/// A metric family's type, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
}

impl Kind {
    /// The `# TYPE` keyword.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The sample-name suffixes a histogram family `h` owns besides `h` itself.
pub(crate) const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Writes `# HELP` (escaping `\` and newlines in `help`) and `# TYPE` for family `name`.
pub(crate) fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

/// Appends `v` escaped for a label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub(crate) fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a float as the format expects: `NaN`, `+Inf`, `-Inf`; otherwise the shortest digits
/// that round-trip, in plain decimal from 1e-6 up to 1e15 (`0.000001`, `2.5`, `3`) and with an
/// exponent outside that range (`1e-7`, `1e20`). Go's `ParseFloat` reads both.
pub(crate) fn write_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == 0.0 || (1e-6..1e15).contains(&v.abs()) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// One sample line being written: `name{label="value",...} value\n`.
pub(crate) struct Sample<'o> {
    out: &'o mut String,
    labels: bool,
}

impl<'o> Sample<'o> {
    /// Starts the line with `name` followed by `suffix` (e.g. `_bucket`, or `""`).
    pub(crate) fn start(out: &'o mut String, name: &str, suffix: &str) -> Self {
        out.push_str(name);
        out.push_str(suffix);
        Sample { out, labels: false }
    }

    /// Adds a label; `name` must be a valid label name.
    pub(crate) fn label(mut self, name: &str, value: &str) -> Self {
        self.out.push(if self.labels { ',' } else { '{' });
        self.labels = true;
        self.out.push_str(name);
        self.out.push_str("=\"");
        escape_label_value(self.out, value);
        self.out.push('"');
        self
    }

    /// Adds each `(name, value)` pair.
    pub(crate) fn labels<'l>(
        mut self,
        labels: impl IntoIterator<Item = &'l (String, String)>,
    ) -> Self {
        for (name, value) in labels {
            self = self.label(name, value);
        }
        self
    }

    fn close(&mut self) {
        if self.labels {
            self.out.push('}');
        }
        self.out.push(' ');
    }

    /// Ends the line with an integer value.
    pub(crate) fn u64(mut self, v: u64) {
        self.close();
        let _ = writeln!(self.out, "{v}");
    }

    /// Ends the line with a signed integer value.
    pub(crate) fn i64(mut self, v: i64) {
        self.close();
        let _ = writeln!(self.out, "{v}");
    }

    /// Ends the line with a float value.
    pub(crate) fn f64(mut self, v: f64) {
        self.close();
        write_f64(self.out, v);
        self.out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "_", ":", "a:b_c9", "Z_total", "__x"] {
            assert!(is_metric_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a b", "é", "a.b", "a{"] {
            assert!(!is_metric_name(bad), "{bad}");
        }
        for ok in ["a", "_", "a_b9", "__name__"] {
            assert!(is_label_name(ok), "{ok}");
        }
        for bad in ["", "9", "a:b", "a-b", "ü"] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn floats_and_escapes() {
        let mut s = String::new();
        for v in [
            0.0,
            3.0,
            -2.0,
            0.5,
            1e-7,
            0.000001,
            1.048576,
            1e20,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            write_f64(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "0 3 -2 0.5 1e-7 0.000001 1.048576 1e20 NaN +Inf -Inf ");
        let mut s = String::new();
        Sample::start(&mut s, "m", "_x")
            .label("a", "q\"b\\c\nd")
            .label("b", "")
            .u64(7);
        assert_eq!(s, "m_x{a=\"q\\\"b\\\\c\\nd\",b=\"\"} 7\n");
        let mut s = String::new();
        Sample::start(&mut s, "m", "").f64(0.25);
        assert_eq!(s, "m 0.25\n");
    }
}
