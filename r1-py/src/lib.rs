//! Python bindings placeholder
