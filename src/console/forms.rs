//! Submitted forms: their fields, the CSRF check every handler makes first, and the
//! parsing of numbers and sizes with errors a person understands.

use axum::http::StatusCode;

use super::session::{same_secret, Ctx};
use super::Failure;

/// A submitted form's fields, in order (a name may repeat).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's value, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_string()
    }

    /// A field's value, `None` when empty.
    pub fn opt(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|s| !s.is_empty())
    }

    /// A required field: "Label: give a value" when missing.
    pub fn need(&self, name: &str, label: &str) -> Result<String, String> {
        self.opt(name)
            .ok_or_else(|| format!("{label}: this field is required"))
    }

    /// A whole number in `range`, with the label in the error.
    pub fn number(
        &self,
        name: &str,
        label: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, String> {
        let t = self.need(name, label)?;
        let n: i64 = t
            .parse()
            .map_err(|_| format!("{label}: {t:?} is not a whole number"))?;
        if !range.contains(&n) {
            return Err(format!(
                "{label}: {n} is out of range ({} to {})",
                range.start(),
                range.end()
            ));
        }
        Ok(n)
    }

    /// Refuses a form without this session's CSRF token.
    pub fn check(&self, ctx: &Ctx) -> Result<(), Failure> {
        check_token(self.get("csrf"), ctx)
    }
}

pub fn check_token(given: Option<&str>, ctx: &Ctx) -> Result<(), Failure> {
    match given {
        Some(t) if same_secret(t, &ctx.csrf) => Ok(()),
        _ => Err(Failure(
            StatusCode::FORBIDDEN,
            "This form is out of date or did not come from this console (missing or wrong \
             security token). Reload the page and try again."
                .into(),
        )),
    }
}

/// A name for something a person creates: not empty, at most 255 characters, no control
/// characters.
pub fn name(label: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err(format!("{label}: give a name"));
    }
    if v.chars().count() > 255 {
        return Err(format!("{label}: at most 255 characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{label}: no control characters"));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn numbers_and_names_are_checked_with_the_label() {
        let x = f(&[("size", "ten"), ("n", "0"), ("ok", " 5 ")]);
        assert_eq!(
            x.number("size", "Size (GiB)", 1..=100).unwrap_err(),
            "Size (GiB): \"ten\" is not a whole number"
        );
        assert!(x
            .number("n", "Count", 1..=10)
            .unwrap_err()
            .contains("out of range"));
        assert_eq!(x.number("ok", "Count", 1..=10).unwrap(), 5);
        assert!(x.need("missing", "Name").unwrap_err().contains("required"));
        assert!(name("Name", "  ").is_err());
        assert!(name("Name", "a\u{7}b").is_err());
        assert_eq!(name("Name", " web1 ").unwrap(), "web1");
    }
}
