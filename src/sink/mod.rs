//! Where results go: the results store (tables per UTC day, Parquet and JSON lines, on a local
//! folder or a blob container, published by commit under a lock), their Sentinel schema, the HTML
//! report and the terminal summary.

pub mod blob;
pub mod commit;
pub mod findings;
pub mod local;
pub mod lock;
pub mod report;
pub mod results;
pub mod schema;
pub mod sentinel;
pub mod store;
pub mod summary;
pub mod table;
pub mod tables;

pub use table::{Cell, ColumnType, Columns, Table};

/// A result that could not be written. Nothing half-written is left visible.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("`{path}` in the results store cannot be read back: {message}")]
    Decode { path: String, message: String },
    #[error("cannot encode table `{table}`: {message}")]
    Encode { table: String, message: String },
}
