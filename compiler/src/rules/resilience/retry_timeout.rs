//! `MC0502` retries-exceed-timeout.

use super::duration_secs;
use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports an http route whose retries cannot fit in its `timeout`: the
    /// per-try timeout is as long as the route timeout, or the tries (1 +
    /// `attempts`) times the per-try timeout exceed it.
    ///
    /// ## Why is this bad?
    /// The route timeout bounds all tries together. Retries configured beyond
    /// it never run: the caller gets a 504 while the configuration promises
    /// more attempts, and the reasoning about availability behind the numbers
    /// is wrong.
    ///
    /// ## Example
    /// ```yaml
    /// http:
    /// - timeout: 2s
    ///   retries: {attempts: 3, perTryTimeout: 1s}    # 4 tries need 4s
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    /// - timeout: 2s
    ///   retries: {attempts: 3, perTryTimeout: 500ms}
    /// ```
    pub static RETRIES_EXCEED_TIMEOUT = {
        code: "MC0502",
        name: "retries-exceed-timeout",
        group: Resilience,
        severity: Warning,
        summary: "A route's tries times the per-try timeout exceed the route timeout",
        equivalents: [],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        for (i, http) in vs.http.iter().flatten().enumerate() {
            let (Some(timeout), Some(retries)) = (&http.timeout, &http.retries) else {
                continue;
            };
            let (Some(total), Some(per_try)) = (
                duration_secs(timeout),
                retries.per_try_timeout.as_deref().and_then(duration_secs),
            ) else {
                continue;
            };
            let attempts = retries.attempts.unwrap_or(0);
            if total <= 0.0 || per_try <= 0.0 || attempts <= 0 {
                continue;
            }
            let tries = attempts as f64 + 1.0;
            let at = path!["spec", "http", i, "retries", "perTryTimeout"];
            let message = if per_try >= total {
                format!(
                    "perTryTimeout {} is not shorter than the route timeout {timeout}: no retry ever starts",
                    retries.per_try_timeout.as_deref().unwrap_or_default()
                )
            } else if per_try * tries > total + 1e-9 {
                let fit = (total / per_try).floor() as i64;
                format!(
                    "{} tries of {} need {}s but the route timeout is {timeout}: at most {fit} of them run",
                    tries as i64,
                    retries.per_try_timeout.as_deref().unwrap_or_default(),
                    trim(per_try * tries)
                )
            } else {
                continue;
            };
            out.push(
                r.diag(&RETRIES_EXCEED_TIMEOUT, at, message)
                    .with_related(
                        r.label(path!["spec", "http", i, "timeout"])
                            .with_message("bounds all tries together"),
                    )
                    .with_help("make (attempts + 1) × perTryTimeout fit in the route timeout, or lengthen the timeout"),
            );
        }
    }
}

/// A number of seconds without trailing zeros.
fn trim(secs: f64) -> String {
    let s = format!("{secs:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
