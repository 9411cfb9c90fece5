//! The transform stage: every finished vCon passes it, in order, before it is spooled, so
//! the spool and every store hold the same transformed bytes. Signing (JWS), consent and
//! redaction at the source plug in here as further [`Transform`]s.
//!
//! A transform that fails does not let the vCon through unchanged (a failed redaction must
//! not leak what it should have removed) and does not lose it either: the original is
//! dead-lettered under `dead/_transform/` with the reason, for an operator to look at.
//!
//! Built in today: `drop_attachments` (remove attachments by `purpose`, e.g. the SIP
//! message trace when stores must not keep signalling details).

use serde_json::Value;

/// One step of the transform stage.
pub trait Transform: Send + Sync + 'static {
    /// Name (logs, dead-letter reasons).
    fn name(&self) -> &str;
    /// Changes the vCon in place, or says why it cannot.
    fn apply(&self, vcon: &mut Value) -> Result<(), String>;
}

/// Removes attachments whose `purpose` is listed.
#[derive(Debug, Clone)]
pub struct DropAttachments {
    purposes: Vec<String>,
}

impl DropAttachments {
    /// Drops attachments with any of these purposes.
    pub fn new(purposes: Vec<String>) -> Self {
        DropAttachments { purposes }
    }
}

impl Transform for DropAttachments {
    fn name(&self) -> &str {
        "drop_attachments"
    }

    fn apply(&self, vcon: &mut Value) -> Result<(), String> {
        let Some(obj) = vcon.as_object_mut() else {
            return Err("the vCon is not a JSON object".into());
        };
        if let Some(Value::Array(atts)) = obj.get_mut("attachments") {
            atts.retain(|a| {
                let p = a
                    .get("purpose")
                    .or_else(|| a.get("type"))
                    .and_then(Value::as_str);
                !p.is_some_and(|p| self.purposes.iter().any(|x| x == p))
            });
        }
        Ok(())
    }
}

/// Builds a transform from its CLI/config form `name[:arg,arg…]`
/// (e.g. `drop_attachments:sip-message-trace,sip-invite`).
pub fn parse(spec: &str) -> Result<Box<dyn Transform>, String> {
    let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
    let args: Vec<String> = args
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    match name {
        "drop_attachments" if !args.is_empty() => Ok(Box::new(DropAttachments::new(args))),
        "drop_attachments" => {
            Err("drop_attachments needs purposes: drop_attachments:PURPOSE[,PURPOSE…]".into())
        }
        other => Err(format!(
            "unknown transform `{other}` (known: drop_attachments)"
        )),
    }
}

/// Runs a chain over compact JSON bytes; with no transforms the bytes pass untouched.
pub fn apply_all(chain: &[Box<dyn Transform>], json: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if chain.is_empty() {
        return Ok(None);
    }
    let mut v: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    for t in chain {
        t.apply(&mut v).map_err(|e| format!("{}: {e}", t.name()))?;
    }
    serde_json::to_vec(&v).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_by_purpose_and_keeps_the_rest() {
        let chain = vec![parse("drop_attachments:sip-message-trace").unwrap()];
        let j = br#"{"uuid":"u","attachments":[{"purpose":"sip-message-trace","body":"x"},{"purpose":"tags","body":"[]"}]}"#;
        let out = apply_all(&chain, j).unwrap().unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["attachments"].as_array().unwrap().len(), 1);
        assert_eq!(v["attachments"][0]["purpose"], "tags");
        assert!(apply_all(&[], j).unwrap().is_none());
        assert!(apply_all(&chain, b"[1]").is_err());
        assert!(apply_all(&chain, b"{not json").is_err());
        assert!(parse("drop_attachments").err().is_some());
        assert!(parse("sign:key")
            .err()
            .unwrap()
            .contains("unknown transform"));
    }
}
