//! psync-lustre: psync's Lustre support.
//!
//! So far the layout codec ([`layout`]): a file's striping as Lustre reports
//! it in the `lustre.lov` xattr, decoded into types and encoded back, so a
//! copier can give a new file its source's layout before writing any data.
//! The copier itself, FIDs and backend selection (issue 16) are not done yet.
#![deny(missing_docs)]

pub mod layout;

pub use layout::{
    Component, CompositeLayout, ForeignLayout, Layout, LayoutError, OstId, OstObject, PlainLayout,
    PoolName,
};
