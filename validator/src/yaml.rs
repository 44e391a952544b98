//! A small YAML emitter for JSON values (`meshc compile --format yaml`): block
//! style, strings plain when YAML would read them back as the same string and
//! double-quoted (JSON syntax, which YAML accepts) otherwise.

use serde_json::Value;

/// `v` as a YAML document.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => object(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => array(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn object(out: &mut String, m: &serde_json::Map<String, Value>, at: usize) {
    let mut first = true;
    for (k, v) in m {
        if !first {
            indent(out, at);
        }
        first = false;
        out.push_str(&string(k));
        out.push(':');
        value(out, v, at);
    }
}

fn array(out: &mut String, a: &[Value], at: usize) {
    let mut first = true;
    for v in a {
        if !first {
            indent(out, at);
        }
        first = false;
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => object(out, m, at + 2),
            Value::Array(x) if !x.is_empty() => array(out, x, at + 2),
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

/// After `key:`: a scalar on the same line, a collection on the next ones.
fn value(out: &mut String, v: &Value, at: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            indent(out, at + 2);
            object(out, m, at + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            indent(out, at);
            array(out, a, at);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A string, plain when that reads back as the same string.
fn string(s: &str) -> String {
    const WORDS: [&str; 22] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "True", "False", "Yes",
        "No", "On", "Off", "TRUE", "FALSE", "NULL", "Null", ".inf", ".nan",
    ];
    let plain = !s.is_empty()
        && !WORDS.contains(&s)
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'.'
                        | b'/'
                        | b'-'
                        | b'('
                        | b')'
                        | b'['
                        | b']'
                        | b'+'
                        | b'='
                        | b'$'
                        | b' '
                )
        })
        && !s.starts_with(['-', '[', ' ', '.'])
        && !s.ends_with(' ')
        && !s.contains(" #")
        && s.parse::<f64>().is_err()
        && !s.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("strings serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_style() {
        let v = serde_json::json!({
            "a": {"b": [1, {"c": "x y", "d": []}], "e": {}},
            "f": ["yes", "10", "*.local", "plain", "-x", "a: b", ""],
            "g": null
        });
        assert_eq!(
            to_yaml(&v),
            "a:\n  b:\n  - 1\n  - c: x y\n    d: []\n  e: {}\nf:\n- \"yes\"\n- \"10\"\n- \"*.local\"\n- plain\n- \"-x\"\n- \"a: b\"\n- \"\"\ng: null\n"
        );
    }
}
