//! How a command's answer is printed: human-readable lines by default, the JSON as
//! received with `--json` (one document, for `jq` and scripts).

use serde_json::Value;

/// The output mode every command shares.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of lines.
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON, or the human lines `human` renders of it.
    pub fn emit(&self, value: &Value, human: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            let text = human(value);
            println!("{}", text.trim_end());
        }
        Ok(())
    }
}

/// A JSON value as a short cell: strings bare, null as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An aligned table with a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// `amount currency`, or `-` when the amount is unknown.
pub fn money(amount: &Value, currency: &Value) -> String {
    match amount {
        Value::Null => "-".to_owned(),
        a => format!("{} {}", cell(a), cell(currency)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns() {
        let rows = vec![vec!["pay_1".to_owned(), "succeeded".to_owned()]];
        assert_eq!(
            table(&["PAYMENT", "STATUS"], &rows),
            "PAYMENT  STATUS\npay_1    succeeded"
        );
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(money(&json!(1250), &json!("USD")), "1250 USD");
    }
}
