//! RFC 6902 JSON Patch between two snapshots of one call (`?delta=json-patch`).
//!
//! Hand-written rather than the `json-patch` crate: only the *diff* side is needed (clients
//! apply), it is ~80 lines, and it is shaped for how a vCon grows: objects gain keys and
//! arrays (`dialog`, `party_history`, `attachments`) gain elements at the end, so arrays are
//! diffed as "common prefix, element-wise, then appends or trailing removals" — linear in
//! the document size, never the quadratic LCS a general array diff needs. A changed array
//! whose middle shifted still yields a correct (if longer) patch; the hub falls back to the
//! full snapshot whenever the patch is not smaller.

use serde_json::{Map, Value};

/// Operations turning `from` into `to`, appended to `out` (empty when equal).
pub fn diff(from: &Value, to: &Value, out: &mut Vec<Value>) {
    let mut path = String::new();
    diff_at(&mut path, from, to, out);
}

fn op(kind: &str, path: &str, value: Option<&Value>) -> Value {
    let mut m = Map::with_capacity(3);
    m.insert("op".into(), Value::String(kind.into()));
    m.insert("path".into(), Value::String(path.into()));
    if let Some(v) = value {
        m.insert("value".into(), v.clone());
    }
    Value::Object(m)
}

/// Appends `/token` to `path`, escaped per RFC 6901 (`~` → `~0`, `/` → `~1`).
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn diff_at(path: &mut String, from: &Value, to: &Value, out: &mut Vec<Value>) {
    if from == to {
        return;
    }
    let base = path.len();
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys() {
                if !b.contains_key(k) {
                    push_token(path, k);
                    out.push(op("remove", path, None));
                    path.truncate(base);
                }
            }
            for (k, bv) in b {
                push_token(path, k);
                match a.get(k) {
                    Some(av) => diff_at(path, av, bv, out),
                    None => out.push(op("add", path, Some(bv))),
                }
                path.truncate(base);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            let common = a.len().min(b.len());
            for (i, (av, bv)) in a.iter().zip(b.iter()).enumerate() {
                push_token(path, &i.to_string());
                diff_at(path, av, bv, out);
                path.truncate(base);
            }
            // Appends in order; removals from the end so earlier indices stay valid.
            for bv in b.iter().skip(common) {
                path.push_str("/-");
                out.push(op("add", path, Some(bv)));
                path.truncate(base);
            }
            for i in (common..a.len()).rev() {
                push_token(path, &i.to_string());
                out.push(op("remove", path, None));
                path.truncate(base);
            }
        }
        _ => out.push(op("replace", path, Some(to))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal RFC 6902 applier for add/remove/replace (what `diff` emits).
    pub(crate) fn apply(doc: &mut Value, patch: &[Value]) {
        for op in patch {
            let path = op["path"].as_str().unwrap();
            let toks: Vec<String> = path
                .split('/')
                .skip(1)
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect();
            if toks.is_empty() {
                *doc = op["value"].clone();
                continue;
            }
            let (last, parents) = toks.split_last().unwrap();
            let mut cur = &mut *doc;
            for t in parents {
                cur = match cur {
                    Value::Object(m) => m.get_mut(t).unwrap(),
                    Value::Array(a) => &mut a[t.parse::<usize>().unwrap()],
                    _ => panic!("bad path {path}"),
                };
            }
            match (op["op"].as_str().unwrap(), cur) {
                ("add" | "replace", Value::Object(m)) => {
                    m.insert(last.clone(), op["value"].clone());
                }
                ("remove", Value::Object(m)) => {
                    m.remove(last).unwrap();
                }
                ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
                ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), op["value"].clone()),
                ("replace", Value::Array(a)) => {
                    a[last.parse::<usize>().unwrap()] = op["value"].clone()
                }
                ("remove", Value::Array(a)) => {
                    a.remove(last.parse().unwrap());
                }
                (o, _) => panic!("unsupported {o}"),
            }
        }
    }

    fn roundtrip(a: Value, b: Value) -> usize {
        let mut p = Vec::new();
        diff(&a, &b, &mut p);
        let mut x = a.clone();
        apply(&mut x, &p);
        assert_eq!(x, b, "patch {p:?}");
        p.len()
    }

    #[test]
    fn equal_documents_give_no_ops() {
        assert_eq!(roundtrip(json!({"a":[1,2]}), json!({"a":[1,2]})), 0);
    }

    #[test]
    fn vcon_like_growth_is_appends_and_replaces() {
        let a = json!({"parties":[{"tel":"+1"}],"vcontap":{"state":"ringing"},"dialog":[]});
        let b = json!({"parties":[{"tel":"+1"}],"vcontap":{"state":"answered","answered_at":"x"},
                       "dialog":[{"type":"recording"},{"type":"recording"}]});
        assert_eq!(roundtrip(a, b), 4);
    }

    #[test]
    fn removals_shrinks_type_changes_and_escaped_keys() {
        roundtrip(
            json!({"a/b":1,"c~d":[1,2,3],"e":{"f":1}}),
            json!({"c~d":[1],"e":[1],"g":null}),
        );
        roundtrip(json!([1, {"x": 2}, 3]), json!([{"x": 2}]));
        roundtrip(json!({"k": 1}), json!("scalar root"));
        roundtrip(json!(null), json!({"a": {"b": [true]}}));
    }
}
