//! driver (see lib.rs for what this module owns).
