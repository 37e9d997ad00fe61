//! A TOML document as a tree that keeps the byte span of every key and value,
//! so validation can point at `file:line:column` for any entry, and report
//! every problem of a file instead of stopping at the first as serde would.
//!
//! Built from toml_edit's parsed document, whose spans are optional: an
//! implicit table (the `a` of a dotted key `a.b = 1`) has none, and then the
//! nearest enclosing span stands in.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

pub type Span = Range<usize>;

/// A value and where it is in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    span: Span,
    value: T,
}

impl<T> Spanned<T> {
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    pub fn get_ref(&self) -> &T {
        &self.value
    }
}

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

/// A TOML syntax error: the parser's message and where it stopped.
#[derive(Debug)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
}

/// Parses a whole document.
pub fn parse(text: &str) -> Result<Spanned<Node>, SyntaxError> {
    let doc = ImDocument::parse(text).map_err(|e| SyntaxError {
        message: e.message().to_owned(),
        span: e.span().unwrap_or(0..0),
    })?;
    Ok(table(doc.as_table(), 0..0))
}

fn table(t: &Table, outer: Span) -> Spanned<Node> {
    let span = t.span().unwrap_or(outer);
    let mut entries = Vec::new();
    for (key, item) in t.iter() {
        let Some(value) = node(item, span.clone()) else {
            continue;
        };
        let key_span = t
            .key(key)
            .and_then(|k| k.span())
            .unwrap_or_else(|| value.span());
        entries.push((spanned(key_span, key.to_owned()), value));
    }
    spanned(span, Node::Table(entries))
}

fn node(item: &Item, outer: Span) -> Option<Spanned<Node>> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(value(v, outer)),
        Item::Table(t) => Some(table(t, outer)),
        Item::ArrayOfTables(a) => {
            let span = a.span().unwrap_or(outer);
            let items = a.iter().map(|t| table(t, span.clone())).collect();
            Some(spanned(span, Node::Array(items)))
        }
    }
}

fn value(v: &Value, outer: Span) -> Spanned<Node> {
    let span = v.span().unwrap_or(outer);
    let node = match v {
        Value::String(s) => Node::String(s.value().clone()),
        Value::Integer(i) => Node::Integer(*i.value()),
        Value::Float(f) => Node::Float(*f.value()),
        Value::Boolean(b) => Node::Boolean(*b.value()),
        Value::Datetime(d) => Node::Datetime(d.value().to_string()),
        Value::Array(a) => Node::Array(a.iter().map(|x| value(x, span.clone())).collect()),
        Value::InlineTable(t) => {
            let mut entries = Vec::new();
            for (key, x) in t.iter() {
                let x = value(x, span.clone());
                let key_span = t
                    .key(key)
                    .and_then(|k| k.span())
                    .unwrap_or_else(|| x.span());
                entries.push((spanned(key_span, key.to_owned()), x));
            }
            Node::Table(entries)
        }
    };
    spanned(span, node)
}

fn spanned<T>(span: Span, value: T) -> Spanned<T> {
    Spanned { span, value }
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
        let Node::Table(top) = doc.get_ref() else {
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
