//! C ABI placeholder
