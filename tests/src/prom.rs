//! Reads a `/metrics` scrape (Prometheus text format 0.0.4) for assertions: the
//! `# HELP` and `# TYPE` lines by metric, and every sample with its labels.

use std::collections::{BTreeMap, HashMap};

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The series name (`_bucket`, `_sum`, `_count` included).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    /// `# HELP` text by metric.
    pub help: HashMap<String, String>,
    /// `# TYPE` by metric (`counter`, `gauge`, `histogram`, `summary`).
    pub types: HashMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses `text`; a line it cannot read fails with the line.
    pub fn parse(text: &str) -> anyhow::Result<Scrape> {
        let mut scrape = Scrape::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                scrape.help.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| anyhow::anyhow!("bad TYPE line {line:?}"))?;
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else if line.starts_with('#') {
                continue;
            } else {
                scrape.samples.push(sample(line)?);
            }
        }
        Ok(scrape)
    }

    /// Samples of `name` whose labels include every pair of `labels`.
    pub fn find<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of [`Scrape::find`]'s values, None when there is no such sample.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.find(name, labels).peekable();
        found.peek()?;
        Some(found.map(|s| s.value).sum())
    }
}

fn sample(line: &str) -> anyhow::Result<Sample> {
    let bad = || anyhow::anyhow!("bad sample line {line:?}");
    let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().map_err(|_| bad())?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, labels(rest.strip_suffix('}').ok_or_else(bad)?).ok_or_else(bad)?),
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes in values.
fn labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_help_types_and_labelled_samples() -> anyhow::Result<()> {
        let scrape = Scrape::parse(
            "# HELP x_seconds Time.\n# TYPE x_seconds histogram\nx_seconds_bucket{route=\"/a/{id}\",le=\"0.5\"} 3\nx_seconds_bucket{route=\"/a/{id}\",le=\"+Inf\"} 4\ny_total 2\n",
        )?;
        assert_eq!(scrape.help["x_seconds"], "Time.");
        assert_eq!(scrape.types["x_seconds"], "histogram");
        assert_eq!(scrape.sum("x_seconds_bucket", &[("le", "+Inf")]), Some(4.0));
        assert_eq!(scrape.sum("y_total", &[]), Some(2.0));
        assert_eq!(scrape.sum("z", &[]), None);
        Ok(())
    }
}
