//! Tokenization.
