//! Text for people: semantic diffs (`meshc diff`) and policy test reports
//! (`meshc test`).

use meshc_compiler::policytest::Outcome;
use meshc_ir::diff::Change;

/// How many reached workloads a line names before summarising.
const SHOWN: usize = 5;

/// One line per change, each followed by the workloads it reaches.
pub fn human(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no semantic changes\n".into();
    }
    let mut s = String::new();
    for c in changes {
        s.push_str(&c.to_string());
        s.push('\n');
        if !c.reaches.is_empty() {
            let shown: Vec<&str> = c.reaches.iter().take(SHOWN).map(String::as_str).collect();
            s.push_str("    reaches: ");
            s.push_str(&shown.join(", "));
            if c.reaches.len() > SHOWN {
                s.push_str(&format!(" and {} more", c.reaches.len() - SHOWN));
            }
            s.push('\n');
        }
    }
    s.push_str(&format!("{} change(s)\n", changes.len()));
    s
}

/// `PASS`/`FAIL` per case, with what was decided for failures.
pub fn test_report(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    for o in outcomes {
        s.push_str(&format!(
            "{} {} ({})\n",
            if o.passed { "PASS" } else { "FAIL" },
            o.name,
            o.at
        ));
        if !o.passed {
            for f in &o.failures {
                s.push_str(&format!("    expected: {f}\n"));
            }
            for d in &o.decided {
                s.push_str(&format!("    decided:  {d}\n"));
            }
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    s.push_str(&format!(
        "{} passed, {failed} failed\n",
        outcomes.len() - failed
    ));
    s
}
