//! The protected tables the writer looks for in statements, with their
//! classification summaries.

use std::collections::HashMap;

/// One protected base table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedTable {
    /// Schema of the base table, e.g. `public`.
    pub schema: String,
    /// Table name, e.g. `customers`.
    pub table: String,
    /// Summary of its classification, e.g. `personal: email, phone`.
    pub classification: Option<String>,
}

impl ProtectedTable {
    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// Protected tables by name.
#[derive(Debug, Clone, Default)]
pub struct TableCatalog {
    by_name: HashMap<String, Vec<ProtectedTable>>,
}

impl TableCatalog {
    /// A catalog of these tables.
    pub fn new(tables: impl IntoIterator<Item = ProtectedTable>) -> Self {
        let mut by_name: HashMap<String, Vec<ProtectedTable>> = HashMap::new();
        for t in tables {
            by_name.entry(t.table.clone()).or_default().push(t);
        }
        TableCatalog { by_name }
    }

    /// The protected table a (possibly qualified) name refers to: the one in
    /// schema `qualifier` if there is one, else the first of that name (the
    /// qualifier may be a view set schema or an alias).
    pub fn lookup(&self, qualifier: Option<&str>, name: &str) -> Option<&ProtectedTable> {
        let candidates = self.by_name.get(name)?;
        qualifier
            .and_then(|q| candidates.iter().find(|t| t.schema == q))
            .or_else(|| candidates.first())
    }
}
