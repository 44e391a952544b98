//! The algebra behind shadowing: when does every request one match accepts
//! also satisfy another?
//!
//! A match is a conjunction of constraints (uri, method, headers, port,
//! source labels, gateways...). `a` covers `b` when each of `a`'s constraints
//! is implied by `b`'s constraint on the same attribute. String constraints
//! (exact, prefix, regex, optionally case-insensitive) are regular languages,
//! so implication is language containment, decided on the product of two lazy
//! DFAs. Exact and prefix pairs take a string fast path; a product that grows
//! past a bound answers "unknown", which counts as not covered, so the rules
//! built on this never report a shadow that is not there.

use std::collections::{HashMap, HashSet, VecDeque};

use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

use crate::model::{HttpMatchRequest, L4MatchAttributes, Map, StringMatch, TlsMatchAttributes};

/// A string constraint in a normal form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Pattern {
    /// Equals.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// RE2 full match.
    Regex(String),
}

impl Pattern {
    pub(crate) fn from_match(m: &StringMatch) -> Option<Pattern> {
        if let Some(e) = &m.exact {
            Some(Pattern::Exact(e.clone()))
        } else if let Some(p) = &m.prefix {
            Some(Pattern::Prefix(p.clone()))
        } else {
            m.regex.as_ref().map(|r| Pattern::Regex(r.clone()))
        }
    }

    fn regex(&self, ignore_case: bool) -> String {
        let body = match self {
            Pattern::Exact(s) => regex_syntax_escape(s),
            Pattern::Prefix(s) => format!("{}(?s:.*)", regex_syntax_escape(s)),
            Pattern::Regex(r) => format!("(?:{r})"),
        };
        let flags = if ignore_case { "(?i)" } else { "" };
        format!("{flags}{body}$")
    }
}

fn regex_syntax_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Decides containment between patterns, caching compiled automata.
#[derive(Default)]
pub(crate) struct Oracle {
    /// Regex → index into `automata`, or `None` when it does not compile.
    compiled: HashMap<String, Option<usize>>,
    automata: Vec<(DFA, Cache)>,
}

/// Product states explored before giving up.
const PRODUCT_LIMIT: usize = 4096;

impl Oracle {
    /// Whether every string `b` accepts is accepted by `a`. `None` when it
    /// cannot be decided within bounds (an invalid regex, a product too big).
    pub(crate) fn contains(
        &mut self,
        a: &Pattern,
        a_icase: bool,
        b: &Pattern,
        b_icase: bool,
    ) -> Option<bool> {
        if a_icase == b_icase && !a_icase {
            match (a, b) {
                (Pattern::Exact(x), Pattern::Exact(y)) => return Some(x == y),
                (Pattern::Prefix(p), Pattern::Exact(y) | Pattern::Prefix(y)) => {
                    return Some(y.starts_with(p.as_str()));
                }
                (Pattern::Exact(_), Pattern::Prefix(_)) => return Some(false),
                _ => {}
            }
        }
        if a == b && (a_icase || !b_icase) {
            return Some(true);
        }
        let ia = self.compile(a.regex(a_icase))?;
        let ib = self.compile(b.regex(b_icase))?;
        if ia == ib {
            return Some(true);
        }
        // Both caches mutably at once: split the vector between the two.
        let (lo, hi) = self.automata.split_at_mut(ia.max(ib));
        let (x, y) = (&mut lo[ia.min(ib)], &mut hi[0]);
        let ((da, ca), (db, cb)) = if ia < ib { (x, y) } else { (y, x) };
        product_contains(da, ca, db, cb)
    }

    /// The index of `re`'s automaton, compiling it on first use.
    fn compile(&mut self, re: String) -> Option<usize> {
        if let Some(&i) = self.compiled.get(&re) {
            return i;
        }
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .cache_capacity(1 << 20)
                    .minimum_cache_clear_count(Some(0)),
            )
            .build(&re)
            .ok();
        let index = dfa.map(|d| {
            let cache = d.create_cache();
            self.automata.push((d, cache));
            self.automata.len() - 1
        });
        self.compiled.insert(re, index);
        index
    }
}

/// L(b) ⊆ L(a), by a breadth-first walk of the product automaton looking for
/// a string that `b` accepts and `a` rejects.
fn product_contains(a: &DFA, ca: &mut Cache, b: &DFA, cb: &mut Cache) -> Option<bool> {
    let cfg = start::Config::new().anchored(Anchored::Yes);
    let sa = a.start_state(ca, &cfg).ok()?;
    let sb = b.start_state(cb, &cfg).ok()?;
    let (clears_a, clears_b) = (ca.clear_count(), cb.clear_count());
    let mut seen: HashSet<(LazyStateID, LazyStateID)> = HashSet::new();
    let mut queue = VecDeque::from([(sa, sb)]);
    seen.insert((sa, sb));
    while let Some((xa, xb)) = queue.pop_front() {
        let ea = a.next_eoi_state(ca, xa).ok()?;
        let eb = b.next_eoi_state(cb, xb).ok()?;
        if eb.is_match() && !ea.is_match() {
            return Some(false);
        }
        for byte in (0..=255u8).filter(|b| field_byte(*b)) {
            let nb = b.next_state(cb, xb, byte).ok()?;
            if nb.is_dead() {
                continue;
            }
            let na = a.next_state(ca, xa, byte).ok()?;
            if na.is_quit() || nb.is_quit() {
                return None;
            }
            if seen.insert((na, nb)) {
                if seen.len() > PRODUCT_LIMIT {
                    return None;
                }
                queue.push_back((na, nb));
            }
        }
        if ca.clear_count() != clears_a || cb.clear_count() != clears_b {
            return None;
        }
    }
    Some(true)
}

/// Bytes that can occur in an HTTP path, method or field value: visible
/// ASCII, space, tab and obs-text. Control characters (CR, LF...) cannot, so
/// `/api/.*` covers the prefix `/api/` although `.` does not match a newline.
fn field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

/// Whether `a` (`None`: any value) covers `b` as string constraints.
fn covers_string(
    o: &mut Oracle,
    a: Option<&StringMatch>,
    a_icase: bool,
    b: Option<&StringMatch>,
    b_icase: bool,
) -> bool {
    let Some(a) = a.and_then(Pattern::from_match) else {
        // No constraint (or an empty StringMatch, which matches anything).
        return true;
    };
    let Some(b) = b.and_then(Pattern::from_match) else {
        return false;
    };
    o.contains(&a, a_icase, &b, b_icase) == Some(true)
}

fn covers_map(
    o: &mut Oracle,
    a: Option<&Map<String, StringMatch>>,
    b: Option<&Map<String, StringMatch>>,
) -> bool {
    let empty = crate::model::Map::default();
    let b = b.unwrap_or(&empty);
    a.unwrap_or(&empty).iter().all(|(k, am)| match b.get(k) {
        // An empty StringMatch on a header means "present": only another
        // presence test implies it, and any value test does.
        Some(bm) => covers_string(o, Some(am), false, Some(bm), false),
        None => false,
    })
}

fn subset<T: PartialEq>(small: Option<&[T]>, big: Option<&[T]>) -> bool {
    match (small, big) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(s), Some(b)) => s.iter().all(|x| b.contains(x)),
    }
}

fn labels_cover(a: Option<&Map<String, String>>, b: Option<&Map<String, String>>) -> bool {
    a.is_none_or(|a| {
        let b = b.cloned().unwrap_or_default();
        a.iter().all(|(k, v)| b.get(k) == Some(v))
    })
}

fn eq_opt<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
    a.is_none() || a == b
}

/// Whether an HTTP match accepts every request at all (no constraint).
pub(crate) fn http_is_catch_all(m: &HttpMatchRequest) -> bool {
    let empty_sm =
        |s: &Option<StringMatch>| s.as_ref().is_none_or(|s| Pattern::from_match(s).is_none());
    empty_sm(&m.uri)
        && empty_sm(&m.scheme)
        && empty_sm(&m.method)
        && empty_sm(&m.authority)
        && m.headers.as_ref().is_none_or(|m| m.is_empty())
        && m.query_params.as_ref().is_none_or(|m| m.is_empty())
        && m.without_headers.as_ref().is_none_or(|m| m.is_empty())
        && m.port.is_none()
        && m.source_labels.as_ref().is_none_or(|m| m.is_empty())
        && m.gateways.as_ref().is_none_or(Vec::is_empty)
        && m.source_namespace.is_none()
}

/// Whether every request `b` matches is matched by `a`.
pub(crate) fn http_covers(o: &mut Oracle, a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    let ai = a.ignore_uri_case == Some(true);
    let bi = b.ignore_uri_case == Some(true);
    covers_string(o, a.uri.as_ref(), ai, b.uri.as_ref(), bi)
        && covers_string(o, a.scheme.as_ref(), false, b.scheme.as_ref(), false)
        && covers_string(o, a.method.as_ref(), false, b.method.as_ref(), false)
        && covers_string(o, a.authority.as_ref(), false, b.authority.as_ref(), false)
        && covers_map(o, a.headers.as_ref(), b.headers.as_ref())
        && covers_map(o, a.query_params.as_ref(), b.query_params.as_ref())
        && a.without_headers
            .as_ref()
            .is_none_or(|w| w.is_empty() || Some(w) == b.without_headers.as_ref())
        && eq_opt(a.port, b.port)
        && labels_cover(a.source_labels.as_ref(), b.source_labels.as_ref())
        && subset(b.gateways.as_deref(), a.gateways.as_deref())
        && eq_opt(a.source_namespace.as_ref(), b.source_namespace.as_ref())
}

/// Whether every connection `b` matches is matched by `a` (TCP).
pub(crate) fn tcp_covers(a: &L4MatchAttributes, b: &L4MatchAttributes) -> bool {
    eq_opt(a.port, b.port)
        && subset(
            b.destination_subnets.as_deref(),
            a.destination_subnets.as_deref(),
        )
        && labels_cover(a.source_labels.as_ref(), b.source_labels.as_ref())
        && subset(b.gateways.as_deref(), a.gateways.as_deref())
        && eq_opt(a.source_namespace.as_ref(), b.source_namespace.as_ref())
        && eq_opt(a.source_subnet.as_ref(), b.source_subnet.as_ref())
}

/// Whether every connection `b` matches is matched by `a` (TLS, by SNI).
pub(crate) fn tls_covers(a: &TlsMatchAttributes, b: &TlsMatchAttributes) -> bool {
    let sni = b.sni_hosts.iter().all(|h| {
        a.sni_hosts
            .iter()
            .any(|p| crate::analysis::host_matches(p, h) || p == h)
    });
    sni && eq_opt(a.port, b.port)
        && subset(
            b.destination_subnets.as_deref(),
            a.destination_subnets.as_deref(),
        )
        && labels_cover(a.source_labels.as_ref(), b.source_labels.as_ref())
        && subset(b.gateways.as_deref(), a.gateways.as_deref())
        && eq_opt(a.source_namespace.as_ref(), b.source_namespace.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: &str, s: &str) -> Pattern {
        match kind {
            "exact" => Pattern::Exact(s.into()),
            "prefix" => Pattern::Prefix(s.into()),
            _ => Pattern::Regex(s.into()),
        }
    }

    #[test]
    fn string_containment() {
        let mut o = Oracle::default();
        let mut c = |a: Pattern, b: Pattern| o.contains(&a, false, &b, false);
        assert_eq!(c(p("prefix", "/api"), p("exact", "/api/v1")), Some(true));
        assert_eq!(c(p("prefix", "/api"), p("prefix", "/ap")), Some(false));
        assert_eq!(c(p("regex", "/api/.*"), p("prefix", "/api/")), Some(true));
        assert_eq!(
            c(p("regex", "/api/v[0-9]+"), p("exact", "/api/v12")),
            Some(true)
        );
        assert_eq!(
            c(p("regex", "/api/v[0-9]+"), p("regex", "/api/v1[0-9]*")),
            Some(true)
        );
        assert_eq!(
            c(p("regex", "/api/v1[0-9]*"), p("regex", "/api/v[0-9]+")),
            Some(false)
        );
        assert_eq!(
            c(p("prefix", "/api/v"), p("regex", "/api/v[0-9]+")),
            Some(true)
        );
        assert_eq!(c(p("exact", "/a"), p("regex", "/a|/b")), Some(false));
        // An invalid regex is undecided, never "covered".
        assert_eq!(c(p("regex", "(("), p("exact", "x")), None);
    }

    #[test]
    fn case_insensitive() {
        let mut o = Oracle::default();
        assert_eq!(
            o.contains(&p("prefix", "/API"), true, &p("exact", "/api/x"), false),
            Some(true)
        );
        assert_eq!(
            o.contains(&p("prefix", "/api"), false, &p("exact", "/api/x"), true),
            Some(false)
        );
    }

    #[test]
    fn http_matches() {
        let mut o = Oracle::default();
        let m = |v: serde_json::Value| -> HttpMatchRequest { serde_json::from_value(v).unwrap() };
        let a = m(
            serde_json::json!({"uri": {"prefix": "/api/v1/product"}, "method": {"exact": "GET"}}),
        );
        let b = m(
            serde_json::json!({"uri": {"prefix": "/api/v1/products"}, "method": {"exact": "GET"}}),
        );
        let c = m(
            serde_json::json!({"uri": {"prefix": "/api/v1/products"}, "method": {"exact": "POST"}}),
        );
        let h = m(
            serde_json::json!({"uri": {"prefix": "/api/v1/products"}, "method": {"exact": "GET"}, "headers": {"x-canary": {"exact": "1"}}}),
        );
        assert!(http_covers(&mut o, &a, &b));
        assert!(!http_covers(&mut o, &b, &a));
        assert!(!http_covers(&mut o, &a, &c));
        assert!(http_covers(&mut o, &b, &h));
        assert!(!http_covers(&mut o, &h, &b));
        assert!(http_is_catch_all(&HttpMatchRequest::default()));
    }
}
