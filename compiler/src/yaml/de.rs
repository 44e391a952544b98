//! Typed decoding straight from a loaded [`Node`] tree, as if from the JSON
//! that [`Node::to_json`] makes of it: mapping entries whose value is `null`
//! are left out (the API server prunes them), a non-finite float reads as
//! `null`, and every answer a `serde_json::Value` would give (which visitor
//! method, which error, with the same message) is given the same way. The
//! JSON tree was built and dropped for every document only to be read once;
//! `tests/yaml_fast.rs` compares both readings on every corpus document.

use serde::de::{
    self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};
use serde_json::Error;

use super::{Entry, Node, Value};

/// A deserializer over one node.
#[derive(Clone, Copy)]
pub struct NodeDe<'a>(pub &'a Node);

/// Whether a node reads as JSON `null`.
fn is_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Float(f) => !f.is_finite(),
        _ => false,
    }
}

impl NodeDe<'_> {
    fn unexpected(&self) -> Unexpected<'_> {
        match &self.0.value {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Int(i) if *i >= 0 => Unexpected::Unsigned(*i as u64),
            Value::Int(i) => Unexpected::Signed(*i),
            Value::Float(f) if f.is_finite() => Unexpected::Float(*f),
            Value::Float(_) => Unexpected::Unit,
            Value::String(s) => Unexpected::Str(s),
            Value::Seq(_) => Unexpected::Seq,
            Value::Map(_) => Unexpected::Map,
        }
    }

    fn invalid<T>(&self, exp: &dyn de::Expected) -> Result<T, Error> {
        Err(de::Error::invalid_type(self.unexpected(), exp))
    }
}

/// Numbers as `serde_json::Number` hands them out: non-negative integers
/// as `u64`, negative ones as `i64`, others as `f64`.
fn visit_number<'a, V: Visitor<'a>>(v: &Value, visitor: V) -> Option<Result<V::Value, Error>> {
    match v {
        Value::Int(i) if *i >= 0 => Some(visitor.visit_u64(*i as u64)),
        Value::Int(i) => Some(visitor.visit_i64(*i)),
        Value::Float(f) if f.is_finite() => Some(visitor.visit_f64(*f)),
        _ => None,
    }
}

/// Number methods: each reads a number as `serde_json::Number` hands it out.
macro_rules! numbers {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_number(visitor)
        })*
    };
}

impl<'a> de::Deserializer<'a> for NodeDe<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Float(f) if !f.is_finite() => visitor.visit_unit(),
            Value::Int(_) | Value::Float(_) => {
                visit_number(&self.0.value, visitor).expect("a number")
            }
            Value::String(s) => visitor.visit_borrowed_str(s.as_str()),
            Value::Seq(items) => visit_seq(items, visitor),
            Value::Map(entries) => visit_map(entries, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0.value {
            Value::Bool(b) => visitor.visit_bool(*b),
            _ => self.invalid(&visitor),
        }
    }

    numbers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_f32 deserialize_f64
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }
    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0.value {
            Value::String(s) => visitor.visit_borrowed_str(s.as_str()),
            _ => self.invalid(&visitor),
        }
    }
    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }
    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0.value {
            Value::String(s) => visitor.visit_borrowed_str(s.as_str()),
            Value::Seq(items) => visit_seq(items, visitor),
            _ => self.invalid(&visitor),
        }
    }
    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        if is_null(&self.0.value) {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        if is_null(&self.0.value) {
            visitor.visit_unit()
        } else {
            self.invalid(&visitor)
        }
    }
    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0.value {
            Value::Seq(items) => visit_seq(items, visitor),
            _ => self.invalid(&visitor),
        }
    }
    fn deserialize_tuple<V: Visitor<'a>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0.value {
            Value::Map(entries) => visit_map(entries, visitor),
            _ => self.invalid(&visitor),
        }
    }
    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.0.value {
            Value::Seq(items) => visit_seq(items, visitor),
            Value::Map(entries) => visit_map(entries, visitor),
            _ => self.invalid(&visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.0.value {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) => {
                let mut present = entries.iter().filter(|e| e.value.value != Value::Null);
                match (present.next(), present.next()) {
                    (Some(e), None) => visitor.visit_enum(EnumAccess(e)),
                    _ => Err(de::Error::invalid_value(
                        Unexpected::Map,
                        &"map with a single key",
                    )),
                }
            }
            _ => Err(de::Error::invalid_type(self.unexpected(), &"string or map")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

impl<'a> NodeDe<'a> {
    fn deserialize_number<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        let unexpected = self.unexpected();
        match &self.0.value {
            Value::Int(_) | Value::Float(_) if !is_null(&self.0.value) => {
                visit_number(&self.0.value, visitor).expect("a number")
            }
            _ => Err(de::Error::invalid_type(unexpected, &visitor)),
        }
    }
}

fn visit_seq<'a, V: Visitor<'a>>(items: &'a [Node], visitor: V) -> Result<V::Value, Error> {
    let len = items.len();
    let mut seq = Seq(items.iter());
    let value = visitor.visit_seq(&mut seq)?;
    if seq.0.len() == 0 {
        Ok(value)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in array"))
    }
}

fn visit_map<'a, V: Visitor<'a>>(entries: &'a [Entry], visitor: V) -> Result<V::Value, Error> {
    let len = entries
        .iter()
        .filter(|e| e.value.value != Value::Null)
        .count();
    let mut map = Map {
        entries: entries.iter(),
        value: None,
        left: len,
    };
    let value = visitor.visit_map(&mut map)?;
    if map.left == 0 {
        Ok(value)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in map"))
    }
}

struct Seq<'a>(std::slice::Iter<'a, Node>);

impl<'a> SeqAccess<'a> for Seq<'a> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|n| seed.deserialize(NodeDe(n)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// A mapping key: a string, as JSON keys are.
fn key(k: &str) -> de::value::BorrowedStrDeserializer<'_, Error> {
    de::value::BorrowedStrDeserializer::new(k)
}

struct Map<'a> {
    entries: std::slice::Iter<'a, Entry>,
    value: Option<&'a Node>,
    /// Entries not yet read (those with a `null` value are not counted).
    left: usize,
}

impl<'a> MapAccess<'a> for Map<'a> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        for e in self.entries.by_ref() {
            if e.value.value == Value::Null {
                continue;
            }
            self.value = Some(&e.value);
            self.left -= 1;
            return seed.deserialize(key(&e.key)).map(Some);
        }
        Ok(None)
    }
    fn next_value_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<T::Value, Error> {
        match self.value.take() {
            Some(n) => seed.deserialize(NodeDe(n)),
            None => Err(de::Error::custom("value is missing")),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// An externally tagged enum variant: a one-entry mapping.
struct EnumAccess<'a>(&'a Entry);

impl<'a> de::EnumAccess<'a> for EnumAccess<'a> {
    type Error = Error;
    type Variant = NodeDe<'a>;
    fn variant_seed<V: DeserializeSeed<'a>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), Error> {
        let v = seed.deserialize(key(&self.0.key))?;
        Ok((v, NodeDe(&self.0.value)))
    }
}

impl<'a> de::VariantAccess<'a> for NodeDe<'a> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self)
    }
    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'a>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }
    fn struct_variant<V: Visitor<'a>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(self, "", &[], visitor)
    }
}
