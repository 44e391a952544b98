//! Compiled string matches.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string match, as Istio's `StringMatch` compiles to Envoy's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StrMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// The whole value matches the (RE2-syntax) expression.
    Regex(Regex),
    /// Present with any value (Istio's empty `StringMatch`, headers only).
    Present,
}

impl StrMatch {
    /// Whether `value` matches; `fold` compares case-insensitively (exact and
    /// prefix only, like Istio's `ignoreUriCase`).
    pub fn matches(&self, value: &str, fold: bool) -> bool {
        match self {
            StrMatch::Exact(e) if fold => e.eq_ignore_ascii_case(value),
            StrMatch::Exact(e) => e == value,
            StrMatch::Prefix(p) if fold => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            StrMatch::Prefix(p) => value.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_full_match(value),
            StrMatch::Present => true,
        }
    }
}

impl fmt::Display for StrMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrMatch::Exact(s) => write!(f, "= {s:?}"),
            StrMatch::Prefix(s) => write!(f, "prefix {s:?}"),
            StrMatch::Regex(r) => write!(f, "regex {:?}", r.as_str()),
            StrMatch::Present => f.write_str("present"),
        }
    }
}

/// A regular expression that must match a whole value. It is kept as written
/// (the encoding is the pattern) and compiled on first use.
///
/// 32 bytes until used: every header, query and URI match of every route of
/// a thousand-host scope holds one, mostly never compiled, so the compiled
/// forms live behind one pointer allocated on first use.
#[derive(Clone)]
pub struct Regex {
    pattern: Box<str>,
    compiled: std::sync::OnceLock<Box<Compiled>>,
}

/// The compiled forms of a [`Regex`], each made on first use.
#[derive(Clone, Default)]
struct Compiled {
    /// Anchored at both ends, for matches (`None`: over the size limit).
    anchored: std::sync::OnceLock<Option<regex::Regex>>,
    /// The bare (unanchored) pattern, for rewrites.
    bare: std::sync::OnceLock<Option<regex::Regex>>,
}

/// Compiled regexes stay under this size (as the compiler checks them).
const SIZE_LIMIT: usize = 1 << 20;

fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// Compile `pattern` under [`SIZE_LIMIT`].
fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .build()
}

impl Regex {
    /// Check `pattern` (RE2 syntax, anchored at both ends); it is compiled
    /// when first used.
    pub fn new(pattern: &str) -> Result<Regex, String> {
        regex_syntax::Parser::new()
            .parse(&anchored(pattern))
            .map_err(|e| e.to_string())?;
        Ok(Regex {
            pattern: pattern.into(),
            compiled: std::sync::OnceLock::new(),
        })
    }
    /// Check `pattern` fully, by compiling it (so a pattern over the size
    /// limit is refused here, at its source), and keep it uncompiled like
    /// [`Regex::new`]. The compiler uses this.
    pub fn checked(pattern: &str) -> Result<Regex, String> {
        compile(&anchored(pattern)).map_err(|e| e.to_string())?;
        Regex::new(pattern)
    }
    fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(Box::default)
    }
    fn regex(&self) -> Option<&regex::Regex> {
        self.compiled()
            .anchored
            .get_or_init(|| compile(&anchored(&self.pattern)).ok())
            .as_ref()
    }
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
    /// Whether the whole of `value` matches (never, for a pattern over the
    /// size limit).
    pub fn is_full_match(&self, value: &str) -> bool {
        self.regex().is_some_and(|r| r.is_match(value))
    }
    /// Replace every match in `value` with `with` (`\1` style groups as `$1`).
    pub fn replace_all(&self, value: &str, with: &str) -> String {
        // The anchored form matches only whole values; rewrites use the bare pattern.
        match self
            .compiled()
            .bare
            .get_or_init(|| compile(&self.pattern).ok())
        {
            Some(r) => r.replace_all(value, with.replace('\\', "$")).into_owned(),
            None => value.to_string(),
        }
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.pattern, f)
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Regex {}

impl Serialize for Regex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

impl<'de> Deserialize<'de> for Regex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored() {
        let r = Regex::new("/api/v[0-9]+").unwrap();
        assert!(r.is_full_match("/api/v2"));
        assert!(!r.is_full_match("/api/v2/x"));
        assert!(!r.is_full_match("x/api/v2"));
        let alt = Regex::new("a|b").unwrap();
        assert!(!alt.is_full_match("ab"));
    }

    #[test]
    fn uncompiled_matches_stay_small() {
        // Thousands of these sit in a large scope's routes.
        assert!(std::mem::size_of::<Regex>() <= 32);
        assert!(std::mem::size_of::<StrMatch>() <= 40);
        let r = Regex::new("(a+)b").unwrap();
        assert!(r.compiled.get().is_none(), "nothing compiled before use");
        assert_eq!(r.replace_all("xaab", "\\1"), "xaa");
        assert!(r.is_full_match("aab"));
    }

    #[test]
    fn folding() {
        assert!(StrMatch::Prefix("/API".into()).matches("/api/x", true));
        assert!(!StrMatch::Prefix("/API".into()).matches("/api/x", false));
        assert!(!StrMatch::Prefix("/api/x".into()).matches("/ap", true));
        assert!(StrMatch::Exact("GET".into()).matches("get", true));
    }
}
