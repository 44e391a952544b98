//! The loaded YAML tree as a JSON representation `jsonschema` validates
//! directly (its [`Json`] traits), reading as [`Node::to_json`]'s JSON
//! would: mapping entries whose value is `null` are absent (the API server
//! prunes them) and a non-finite float is `null`. A valid document, nearly
//! every one, is then checked without building its JSON at all; an invalid
//! one is checked again as JSON to report its errors.

use std::borrow::Cow;

use jsonschema::json::{Array, Json, JsonNumber, Node as JsonNode, NodeIdentity, Object};
use jsonschema::types::JsonType;
use serde_json::Value as J;

use crate::yaml::{Entry, Node, Value};

/// The representation.
pub struct Yaml;

/// One value: a node of the tree, or a string on its own (a property name
/// checked by `propertyNames`).
#[derive(Clone, Copy)]
pub enum YNode<'a> {
    /// A node of the tree.
    Tree(&'a Node),
    /// A bare string.
    Str(&'a str),
}

impl Json for Yaml {
    type Node<'a> = YNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = ();

    // Mappings are short slices: a scan per lookup is what `get` does.
    const KEYS_PER_LOOKUP: usize = 0;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>(_: &mut (), string: &str, f: impl FnOnce(YNode<'_>) -> T) -> T {
        f(YNode::Str(string))
    }
}

fn present(e: &Entry) -> bool {
    e.value.value != Value::Null
}

/// A number as `serde_json::Number` holds it.
#[derive(Clone, Copy)]
pub enum Number {
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
}

impl Number {
    fn json(self) -> serde_json::Number {
        match self {
            Number::Int(i) => i.into(),
            Number::Float(f) => serde_json::Number::from_f64(f).expect("finite"),
        }
    }
}

impl JsonNumber for Number {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Number::Int(i) => u64::try_from(i).ok(),
            Number::Float(_) => None,
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match *self {
            Number::Int(i) => Some(i),
            Number::Float(_) => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        })
    }
    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.json().to_string())
    }
    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        Cow::Owned(self.json())
    }
    fn is_written_as_integer(&self) -> bool {
        matches!(self, Number::Int(_))
    }
}

impl<'a> JsonNode<'a, Yaml> for YNode<'a> {
    type Object = &'a [Entry];
    type Array = &'a [Node];
    type Number = Number;

    fn as_object(&self) -> Option<&'a [Entry]> {
        match self {
            YNode::Tree(Node {
                value: Value::Map(m),
                ..
            }) => Some(m),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&'a [Node]> {
        match self {
            YNode::Tree(Node {
                value: Value::Seq(s),
                ..
            }) => Some(s),
            _ => None,
        }
    }
    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            YNode::Tree(Node {
                value: Value::String(s),
                ..
            }) => Some(Cow::Borrowed(s.as_str())),
            YNode::Str(s) => Some(Cow::Borrowed(s)),
            _ => None,
        }
    }
    fn as_number(&self) -> Option<Number> {
        match self {
            YNode::Tree(n) => match n.value {
                Value::Int(i) => Some(Number::Int(i)),
                Value::Float(f) if f.is_finite() => Some(Number::Float(f)),
                _ => None,
            },
            YNode::Str(_) => None,
        }
    }
    fn as_boolean(&self) -> Option<bool> {
        match self {
            YNode::Tree(Node {
                value: Value::Bool(b),
                ..
            }) => Some(*b),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        self.json_type() == JsonType::Null
    }
    fn json_type(&self) -> JsonType {
        match self {
            YNode::Str(_) => JsonType::String,
            YNode::Tree(n) => match &n.value {
                Value::Null => JsonType::Null,
                Value::Float(f) if !f.is_finite() => JsonType::Null,
                Value::Bool(_) => JsonType::Boolean,
                Value::Int(_) | Value::Float(_) => JsonType::Number,
                Value::String(_) => JsonType::String,
                Value::Seq(_) => JsonType::Array,
                Value::Map(_) => JsonType::Object,
            },
        }
    }
    fn to_value(&self) -> Cow<'a, J> {
        Cow::Owned(match self {
            YNode::Tree(n) => n.to_json(),
            YNode::Str(s) => J::String((*s).to_owned()),
        })
    }
    fn identity(&self) -> Option<NodeIdentity> {
        match self {
            YNode::Tree(n) => Some(NodeIdentity::new(std::ptr::from_ref::<Node>(n) as usize)),
            YNode::Str(_) => None,
        }
    }
}

/// The present entries of a mapping, as name and value.
pub struct Members<'a>(std::slice::Iter<'a, Entry>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, YNode<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .by_ref()
            .find(|e| present(e))
            .map(|e| (e.key.as_str(), YNode::Tree(&e.value)))
    }
}

impl<'a> Object<'a, Yaml> for &'a [Entry] {
    type Node = YNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.iter().filter(|e| present(e)).count()
    }
    fn get(&self, key: &Box<str>) -> Option<YNode<'a>> {
        self.iter()
            .find(|e| present(e) && e.key.as_str() == &**key)
            .map(|e| YNode::Tree(&e.value))
    }
    fn members(&self) -> Members<'a> {
        Members(self.iter())
    }
}

impl<'a> Array<'a, Yaml> for &'a [Node] {
    type Node = YNode<'a>;
    type ElementsIter = std::iter::Map<std::slice::Iter<'a, Node>, fn(&'a Node) -> YNode<'a>>;

    fn len(&self) -> usize {
        <[Node]>::len(self)
    }
    fn elements(&self) -> Self::ElementsIter {
        self.iter().map(YNode::Tree)
    }
}
