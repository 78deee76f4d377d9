//! The protected tables the writer looks for in statements, with their
//! columns, each column's classification and the view sets that hide it.

use std::collections::HashMap;

/// One column of a protected table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedColumn {
    /// Column name.
    pub name: String,
    /// Its classification, e.g. `identity`; None when the policy does not
    /// classify it.
    pub classification: Option<String>,
    /// View sets whose views leave the column out.
    pub hidden_in: Vec<String>,
}

impl ProtectedColumn {
    /// Whether a session of `view_set` can read the column (sessions
    /// outside every view set, e.g. the administrator, read all columns).
    pub fn visible_in(&self, view_set: Option<&str>) -> bool {
        view_set.is_none_or(|set| !self.hidden_in.iter().any(|h| h == set))
    }
}

/// One protected base table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedTable {
    /// Schema of the base table, e.g. `public`.
    pub schema: String,
    /// Table name, e.g. `customers`.
    pub table: String,
    /// Its columns in table order.
    pub columns: Vec<ProtectedColumn>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_columns_are_visible_outside_their_view_sets() {
        let column = ProtectedColumn {
            name: "religion".into(),
            classification: Some("sensitive".into()),
            hidden_in: vec!["standard".into()],
        };
        assert!(!column.visible_in(Some("standard")));
        assert!(column.visible_in(Some("personal")));
        assert!(column.visible_in(None));
    }
}
