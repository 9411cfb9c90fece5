//! [`Json`]: a member value of the vCon that is either a `serde_json::Value` tree or text
//! that is already compact JSON.
//!
//! Why: the large members a finished call carries (the SIP trace, the RTP quality report,
//! the `vcontap` object) were built as `Value` trees only to be serialized once and freed:
//! thousands of small allocations per call, more than a third of `--record none`'s cost of
//! finishing a call. Writers that render such a member straight to text hand it over as
//! [`Json::Text`], and serialization copies it verbatim. Reading a vCon back always gives
//! [`Json::Tree`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value, as a tree or as compact text that is known to be valid JSON.
#[derive(Debug, Clone)]
pub enum Json {
    /// A value tree.
    Tree(Value),
    /// Already-serialized JSON (validated when it was made).
    Text(Box<RawValue>),
}

impl Json {
    /// Wraps text that must be one valid JSON value; `None` when it is not.
    pub fn from_text(text: String) -> Option<Json> {
        RawValue::from_string(text).ok().map(Json::Text)
    }

    /// The value as a tree (parses [`Json::Text`]; `Null` if that ever failed).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Tree(v) => v.clone(),
            Json::Text(t) => serde_json::from_str(t.get()).unwrap_or(Value::Null),
        }
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Self {
        Json::Tree(v)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        match (self, other) {
            (Json::Tree(a), Json::Tree(b)) => a == b,
            (Json::Text(a), Json::Text(b)) if a.get() == b.get() => true,
            _ => self.to_value() == other.to_value(),
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Tree(v) => v.serialize(s),
            Json::Text(t) => t.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Json::Tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_copied_verbatim_and_reads_back_as_a_tree() {
        let t = Json::from_text(r#"{"b":1,"a":[true,null]}"#.into()).unwrap();
        let outer = json!({ "x": 1 });
        let mut s = serde_json::to_string(&outer).unwrap();
        s.truncate(s.len() - 1);
        s.push_str(",\"y\":");
        s.push_str(&serde_json::to_string(&t).unwrap());
        s.push('}');
        assert_eq!(s, r#"{"x":1,"y":{"b":1,"a":[true,null]}}"#);
        let back: Json = serde_json::from_str(r#"{"b":1,"a":[true,null]}"#).unwrap();
        assert!(matches!(back, Json::Tree(_)));
        assert_eq!(back, t);
        assert_eq!(t.to_value(), json!({"a": [true, null], "b": 1}));
    }

    #[test]
    fn invalid_text_is_refused() {
        assert!(Json::from_text("{\"a\":".into()).is_none());
        assert!(Json::from_text("1 2".into()).is_none());
    }
}
