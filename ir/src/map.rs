//! [`Map`]: the IR's and the compiler model's small maps.

use serde::{Deserialize, Serialize};

/// A small map (labels, selectors, header and query matches): entries in a
/// vector sorted by key (`litemap`), encoded as a JSON mapping exactly as a
/// `BTreeMap` is (keys in order), and, with feature `schemars`, described to
/// a JSON Schema as one. Nearly every such map holds one to three entries,
/// where a `BTreeMap` allocates a node of eleven (about 540 bytes for string
/// pairs): a 10,000-service repository holds some 130,000 of them in its
/// model and as many in its IR.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Map<K, V>(litemap::LiteMap<K, V>);

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Map(litemap::LiteMap::new())
    }
}

impl<K, V> std::ops::Deref for Map<K, V> {
    type Target = litemap::LiteMap<K, V>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K, V> std::ops::DerefMut for Map<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for Map<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Map(iter.into_iter().collect())
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for Map<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K, V> IntoIterator for Map<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_tuple_vec().into_iter()
    }
}

impl<K: Ord, V> Extend<(K, V)> for Map<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl<'a, K, V> IntoIterator for &'a Map<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.as_slice().iter().map(|(k, v)| (k, v))
    }
}

/// Always a mapping (`litemap` writes an empty map as a sequence).
impl<K: Serialize, V: Serialize> Serialize for Map<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Only from a mapping (`litemap` takes a sequence of pairs too); a key seen
/// twice keeps its last value, as a `BTreeMap` does.
impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for Map<K, V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<K, V> {
            type Value = Map<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut m = litemap::LiteMap::with_capacity(a.size_hint().unwrap_or(0).min(64));
                while let Some((k, v)) = a.next_entry()? {
                    // Sorted input appends; anything else is inserted in place.
                    if let Some((k, v)) = m.try_append(k, v) {
                        m.insert(k, v);
                    }
                }
                Ok(Map(m))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[cfg(feature = "schemars")]
impl<K: schemars::JsonSchema, V: schemars::JsonSchema> schemars::JsonSchema for Map<K, V> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <std::collections::BTreeMap<K, V> as schemars::JsonSchema>::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        <std::collections::BTreeMap<K, V> as schemars::JsonSchema>::schema_id()
    }
    fn inline_schema() -> bool {
        <std::collections::BTreeMap<K, V> as schemars::JsonSchema>::inline_schema()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <std::collections::BTreeMap<K, V> as schemars::JsonSchema>::json_schema(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn encodes_and_reads_like_a_btree_map() {
        for json in [
            r#"{}"#,
            r#"{"a":"1"}"#,
            r#"{"b":"2","a":"1","c":"3"}"#,
            r#"{"a":"1","a":"2"}"#,
        ] {
            let m: Map<String, String> = serde_json::from_str(json).unwrap();
            let b: BTreeMap<String, String> = serde_json::from_str(json).unwrap();
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
            assert_eq!(
                serde_json::to_string_pretty(&m).unwrap(),
                serde_json::to_string_pretty(&b).unwrap()
            );
            assert!(m.iter().eq(b.iter()));
        }
        // A sequence of pairs is not a map.
        assert!(serde_json::from_str::<Map<String, String>>(r#"[["a","1"]]"#).is_err());
    }
}
