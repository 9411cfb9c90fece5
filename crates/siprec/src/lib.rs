//! Sans-IO SIPREC recording server (SRS, RFC 7866) core.
//!
//! Filled in below.

// Input is hostile (docs/CONTRIBUTING.md): no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod answer;
pub mod body;
pub mod mapping;
pub mod metadata;
pub mod uas;

#[cfg(test)]
mod testdata;
#[cfg(test)]
mod uas_tests;
#[cfg(test)]
mod vendor_tests;
