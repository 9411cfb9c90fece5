//! `vcontap siprec` recording-policy options, in one struct so the `[siprec]` config table
//! maps onto it field for field; the decisions themselves are pure and live in
//! `vcontap_siprec::policy`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use vcontap_siprec::policy::{DoNotRecord, Policy, RecordPolicy};

/// Largest do-not-record file read (a million entries of ~30 bytes).
const MAX_DNR_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Which sessions are recorded.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecordPolicyArg {
    /// Every session (unless on the do-not-record list).
    #[default]
    All,
    /// Only sessions the SRC marks: `a=record:on`, or a marker header/metadata element.
    Marked,
}

/// Recording policy options (`[siprec]`: `record_policy`, `do_not_record`,
/// `record_marker_headers`, `record_marker_elements`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    /// Which sessions are recorded; the others are still answered, and their vCon says why
    /// nothing was recorded.
    #[arg(long, value_enum, default_value_t = RecordPolicyArg::All)]
    pub record_policy: RecordPolicyArg,
    /// Never record sessions with a participant on this list: one number (E.164 or
    /// national), SIP URI, `user@host` or user name per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    pub do_not_record: Option<PathBuf>,
    /// `--record-policy marked`: an INVITE with this header is marked (repeatable).
    #[arg(long = "record-marker-header", value_name = "NAME")]
    pub record_marker_headers: Vec<String>,
    /// `--record-policy marked`: metadata with an element of this local name is marked
    /// (repeatable).
    #[arg(long = "record-marker-element", value_name = "NAME")]
    pub record_marker_elements: Vec<String>,
}

impl PolicyArgs {
    /// The policy, with the do-not-record file read and checked.
    pub fn load(&self) -> Result<Policy> {
        let do_not_record = match &self.do_not_record {
            None => DoNotRecord::default(),
            Some(path) => {
                let len = std::fs::metadata(path)
                    .with_context(|| format!("--do-not-record {}", path.display()))?
                    .len();
                if len > MAX_DNR_FILE_BYTES {
                    anyhow::bail!(
                        "--do-not-record {}: larger than {MAX_DNR_FILE_BYTES} bytes",
                        path.display()
                    );
                }
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--do-not-record {}", path.display()))?;
                DoNotRecord::parse(&text)
                    .with_context(|| format!("--do-not-record {}", path.display()))?
            }
        };
        Ok(Policy {
            mode: match self.record_policy {
                RecordPolicyArg::All => RecordPolicy::All,
                RecordPolicyArg::Marked => RecordPolicy::Marked,
            },
            marker_headers: self.record_marker_headers.clone(),
            marker_elements: self.record_marker_elements.clone(),
            do_not_record,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_list_and_reports_bad_lines() {
        let dir = std::env::temp_dir().join(format!("vcontap-dnr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(&good, "+15551230001\nsip:alice@example.com\n").unwrap();
        let a = PolicyArgs {
            record_policy: RecordPolicyArg::Marked,
            do_not_record: Some(good),
            record_marker_headers: vec!["X-Record".into()],
            ..PolicyArgs::default()
        };
        let p = a.load().unwrap();
        assert_eq!(p.mode, RecordPolicy::Marked);
        assert_eq!(p.do_not_record.len(), 2);
        assert_eq!(p.marker_headers, ["X-Record"]);
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, "+15551230001\nnot an entry\n").unwrap();
        let err = PolicyArgs {
            do_not_record: Some(bad),
            ..PolicyArgs::default()
        }
        .load()
        .unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
