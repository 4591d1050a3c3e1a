//! Integration tests live in tests/. This crate's docs are the top-level README, so that its
//! examples compile as doc tests (`cargo test -p integration-tests --doc`).
#![doc = include_str!("../../README.md")]
