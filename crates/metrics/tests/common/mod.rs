//! Shared test helpers: real capnp metrics reports built with `FrameWriter`, and a line-by-line
//! checker of the text exposition format.
#![allow(dead_code)]

use turnstile_wire::turnstile_capnp::{agent_to_proxy, metrics_report};
use turnstile_wire::{FrameWriter, Message};

/// `(name, value)` label pairs.
pub type L<'a> = Vec<(&'a str, &'a str)>;

/// `(name, labels, sum, count, [(le, cumulative count)])`
pub type H<'a> = (&'a str, L<'a>, f64, u64, Vec<(f64, u64)>);

/// A report to build.
#[derive(Default, Clone)]
pub struct Spec<'a> {
    pub counters: Vec<(&'a str, L<'a>, u64)>,
    pub gauges: Vec<(&'a str, L<'a>, f64)>,
    pub histograms: Vec<H<'a>>,
}

impl<'a> Spec<'a> {
    pub fn counter(mut self, name: &'a str, labels: L<'a>, v: u64) -> Self {
        self.counters.push((name, labels, v));
        self
    }
    pub fn gauge(mut self, name: &'a str, labels: L<'a>, v: f64) -> Self {
        self.gauges.push((name, labels, v));
        self
    }
    pub fn histogram(
        mut self,
        name: &'a str,
        labels: L<'a>,
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    ) -> Self {
        self.histograms.push((name, labels, sum, count, buckets));
        self
    }
}

fn n32(n: usize) -> u32 {
    u32::try_from(n).unwrap()
}

fn set_labels(
    mut list: capnp::struct_list::Builder<'_, turnstile_wire::turnstile_capnp::label::Owned>,
    labels: &L<'_>,
) {
    for (i, (name, value)) in labels.iter().enumerate() {
        let mut l = list.reborrow().get(n32(i));
        l.set_name(*name);
        l.set_value(*value);
    }
}

/// Encodes `spec` as an `AgentToProxy.metrics` frame.
pub fn frame(spec: &Spec<'_>) -> Vec<u8> {
    let mut scratch = vec![0u8; 1 << 16];
    let mut w = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    w.write::<agent_to_proxy::Owned, _>(&mut out, |root| {
        let mut m = root.init_metrics();
        m.set_agent_id("claimed-by-agent");
        m.set_timestamp_ms(1_700_000_000_000);
        m.set_interval_ms(5_000);
        let mut list = m.reborrow().init_counters(n32(spec.counters.len()));
        for (i, (name, labels, v)) in spec.counters.iter().enumerate() {
            let mut c = list.reborrow().get(n32(i));
            c.set_name(*name);
            c.set_value(*v);
            set_labels(c.init_labels(n32(labels.len())), labels);
        }
        let mut list = m.reborrow().init_gauges(n32(spec.gauges.len()));
        for (i, (name, labels, v)) in spec.gauges.iter().enumerate() {
            let mut g = list.reborrow().get(n32(i));
            g.set_name(*name);
            g.set_value(*v);
            set_labels(g.init_labels(n32(labels.len())), labels);
        }
        let mut list = m.init_histograms(n32(spec.histograms.len()));
        for (i, (name, labels, sum, count, buckets)) in spec.histograms.iter().enumerate() {
            let mut h = list.reborrow().get(n32(i));
            h.set_name(*name);
            h.set_sum(*sum);
            h.set_count(*count);
            set_labels(h.reborrow().init_labels(n32(labels.len())), labels);
            let mut bl = h.init_buckets(n32(buckets.len()));
            for (j, (le, n)) in buckets.iter().enumerate() {
                let mut b = bl.reborrow().get(n32(j));
                b.set_le(*le);
                b.set_count(*n);
            }
        }
        Ok(())
    })
    .unwrap();
    out
}

/// Parses `frame` and hands its `MetricsReport` reader to `f`.
pub fn with_report<R>(frame: &[u8], f: impl FnOnce(metrics_report::Reader<'_>) -> R) -> R {
    let msg = Message::from_frame_bytes(frame).unwrap();
    let root = msg.root::<agent_to_proxy::Owned>().unwrap();
    match root.which().unwrap() {
        agent_to_proxy::Metrics(m) => f(m.unwrap()),
        _ => panic!("not a metrics report"),
    }
}

/// Records `spec` for `agent` in `reports`.
pub fn record(
    reports: &turnstile_metrics::AgentReports,
    agent: &str,
    spec: &Spec<'_>,
) -> Result<(), turnstile_metrics::MetricsError> {
    with_report(&frame(spec), |r| reports.record(agent, r))
}

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: String,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn f64(&self) -> f64 {
        match self.value.as_str() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap(),
        }
    }
}

fn metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Parses `name{labels} value`, panicking with the line on any format error.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line:?}"));
    let name = &line[..name_end];
    assert!(metric_name(name), "bad metric name in {line:?}");
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest
                .find('=')
                .unwrap_or_else(|| panic!("no '=' in {line:?}"));
            let lname = &rest[..eq];
            assert!(label_name(lname), "bad label name {lname:?} in {line:?}");
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, '\n')) => panic!("raw newline in {line:?}"),
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            assert!(
                !labels.iter().any(|(n, _): &(String, String)| n == lname),
                "duplicate label {lname} in {line:?}"
            );
            labels.push((lname.to_owned(), value));
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else {
                assert!(rest.starts_with('}'), "expected ',' or '}}' in {line:?}");
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before value in {line:?}"));
    let ok = matches!(value, "NaN" | "+Inf" | "-Inf") || value.parse::<f64>().is_ok();
    assert!(ok, "bad value {value:?} in {line:?}");
    assert!(
        !value.contains(' '),
        "timestamp or junk after value in {line:?}"
    );
    Sample {
        name: name.to_owned(),
        labels,
        value: value.to_owned(),
    }
}

/// Checks every line of `text` against the 0.0.4 format and the grouping rules (each family's
/// `# HELP`/`# TYPE` once, before its samples; samples of a family contiguous; histogram
/// samples only `_bucket` with `le`, `_sum`, `_count`; no duplicate series) and returns the samples.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    use std::collections::{HashMap, HashSet};
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(metric_name(name), "{line:?}");
            assert!(helped.insert(name.to_owned()), "second HELP: {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(parts.next().is_none(), "{line:?}");
            assert!(metric_name(name), "{line:?}");
            assert!(
                matches!(
                    kind,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ),
                "{line:?}"
            );
            assert!(!types.contains_key(name), "second TYPE: {line:?}");
            assert!(!closed.contains(name), "TYPE after samples: {line:?}");
            if let Some(c) = current.take() {
                closed.insert(c);
            }
            types.insert(name.to_owned(), kind.to_owned());
            current = Some(name.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        assert!(!line.is_empty(), "empty line");
        let s = parse_sample(line);
        let family = current
            .clone()
            .unwrap_or_else(|| panic!("sample before TYPE: {line:?}"));
        match types[&family].as_str() {
            "histogram" => {
                let suffix = s
                    .name
                    .strip_prefix(family.as_str())
                    .unwrap_or_else(|| panic!("{line:?} outside family {family}"));
                assert!(
                    matches!(suffix, "_bucket" | "_sum" | "_count"),
                    "{line:?} in histogram {family}"
                );
                assert_eq!(suffix == "_bucket", s.label("le").is_some(), "{line:?}");
            }
            _ => assert_eq!(s.name, family, "sample outside its family: {line:?}"),
        }
        let mut key = s.labels.clone();
        key.sort();
        assert!(
            seen.insert((s.name.clone(), key)),
            "duplicate series {line:?}"
        );
        samples.push(s);
    }
    samples
}

/// The samples named `name`.
pub fn named<'s>(samples: &'s [Sample], name: &str) -> Vec<&'s Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}
