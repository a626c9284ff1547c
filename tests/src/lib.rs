//! Cross-crate integration, stress and property tests live in `tests/`; this library is empty on purpose.
