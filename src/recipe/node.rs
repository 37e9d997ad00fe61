//! A TOML document as a tree that keeps the byte span of every key and value,
//! so validation can point at `file:line:column` for any entry, and report
//! every problem of a file instead of stopping at the first as serde would.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

pub type Span = Range<usize>;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Spanned<Node>>),
    /// Entries in document order; TOML itself rejects duplicate keys.
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// What a user calls this kind of value, for "expected X, found Y".
    pub fn kind(&self) -> &'static str {
        match self {
            Node::String(_) => "a string",
            Node::Integer(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Boolean(_) => "a boolean",
            Node::Datetime(_) => "a datetime",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
        }
    }
}

/// Parses a whole document. The error carries toml's message and span.
pub fn parse(text: &str) -> Result<Spanned<Node>, toml::de::Error> {
    toml::from_str(text)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Boolean(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Integer)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        loop {
            match map.next_key_seed(KeySeed) {
                Ok(Some(key)) => {
                    let value = map.next_value::<Spanned<Node>>()?;
                    entries.push((key, value));
                }
                Ok(None) => return Ok(Node::Table(entries)),
                // toml hands a datetime to visitors as a one-entry map whose
                // key carries no span, so a spanned key cannot be read; its
                // value is the datetime's text.
                Err(err) if entries.is_empty() => {
                    return map
                        .next_value::<String>()
                        .map(Node::Datetime)
                        .map_err(|_| err)
                }
                Err(err) => return Err(err),
            }
        }
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Spanned<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Spanned::<String>::deserialize(d)
    }
}

/// Converts byte offsets into 1-based line and column (columns count
/// characters, as editors do).
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    pub fn position(&self, offset: usize) -> super::Position {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_of_keys_and_values() {
        let text = "[package]\nname = \"x\"\n\n[[source]]\nurls = [\"a\", 1]\n";
        let doc = parse(text).unwrap();
        let Node::Table(top) = doc.get_ref() else {
            panic!("top is a table")
        };
        assert_eq!(top[0].0.get_ref(), "package");
        let Node::Table(pkg) = top[0].1.get_ref() else {
            panic!("package is a table")
        };
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(pkg[0].0.span().start), (2, 1));
        assert_eq!(idx.position(pkg[0].1.span().start), (2, 8));
        let Node::Array(sources) = top[1].1.get_ref() else {
            panic!("source is an array")
        };
        let Node::Table(src) = sources[0].get_ref() else {
            panic!("source[0] is a table")
        };
        let Node::Array(urls) = src[0].1.get_ref() else {
            panic!("urls is an array")
        };
        assert_eq!(idx.position(urls[1].span().start), (5, 14));
        assert_eq!(urls[1].get_ref(), &Node::Integer(1));
    }

    #[test]
    fn datetimes_are_values() {
        let doc = parse("v = 2024-01-01\n").unwrap();
        let Node::Table(top) = doc.into_inner() else {
            panic!("top is a table")
        };
        assert_eq!(top[0].1.get_ref(), &Node::Datetime("2024-01-01".into()));
    }

    #[test]
    fn columns_count_characters() {
        let idx = LineIndex::new("a = \"é\"\nb");
        assert_eq!(idx.position(7), (1, 7));
        assert_eq!(idx.position(9), (2, 1));
    }
}
