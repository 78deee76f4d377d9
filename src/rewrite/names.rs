//! Identifier normalisation and the set of protected base tables.

use std::collections::HashSet;

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

/// Schemas whose objects are never protected base tables.
const SYSTEM_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];

/// The name PostgreSQL uses for an identifier: unquoted names fold to lower case.
pub fn normalize(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// The identifier parts of an object name, normalised; `None` if a part is not
/// a plain identifier (a dialect-specific function part).
pub fn parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(normalize(ident)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// Protected base tables, as `(schema, table)` in PostgreSQL's stored spelling.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    qualified: HashSet<(String, String)>,
    tables: HashSet<String>,
    folded: HashSet<String>,
}

impl Protected {
    /// Builds the set from `(schema, table)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let qualified: HashSet<(String, String)> = pairs.into_iter().collect();
        let tables: HashSet<String> = qualified.iter().map(|(_, t)| t.clone()).collect();
        let folded = tables.iter().map(|t| t.to_ascii_lowercase()).collect();
        Self {
            qualified,
            tables,
            folded,
        }
    }

    /// Whether a name equals a protected table name, ignoring ASCII case.
    pub fn is_table_name_folded(&self, name: &str) -> bool {
        self.folded.contains(&name.to_ascii_lowercase())
    }

    /// Whether `schema.table` (normalised) is a protected base table.
    pub fn is_qualified_protected(&self, schema: &str, table: &str) -> bool {
        self.qualified
            .contains(&(schema.to_owned(), table.to_owned()))
    }

    /// Whether a bare (normalised) name equals the name of any protected table.
    pub fn is_table_name(&self, name: &str) -> bool {
        self.tables.contains(name)
    }

    /// The protected table a relation name refers to, if any, given the view
    /// set schema (names already in it are the views, not base tables).
    ///
    /// An unqualified name that matches a protected table in any schema is
    /// treated as protected: the search path is not ours to know for sure.
    pub fn resolve(&self, name: &ObjectName, view_schema: &str) -> Resolution {
        let Some(parts) = parts(name) else {
            return Resolution::Unknown;
        };
        match parts.as_slice() {
            [table] if self.tables.contains(table) => Resolution::Protected(table.clone()),
            [_] => Resolution::Other,
            [.., schema, table] => self.resolve_qualified(schema, table, view_schema),
            [] => Resolution::Unknown,
        }
    }

    fn resolve_qualified(&self, schema: &str, table: &str, view_schema: &str) -> Resolution {
        if schema == view_schema {
            return Resolution::View;
        }
        if SYSTEM_SCHEMAS.contains(&schema) {
            return Resolution::Other;
        }
        let key = (schema.to_owned(), table.to_owned());
        if self.qualified.contains(&key) {
            Resolution::Protected(table.to_owned())
        } else {
            Resolution::Other
        }
    }
}

/// What a relation name refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A protected base table; carries its (normalised) table name.
    Protected(String),
    /// Already a view of the target view set.
    View,
    /// Anything else (catalog, unprotected table, ...).
    Other,
    /// A name we cannot interpret.
    Unknown,
}

/// `"<schema>"."<table>"` as an object name with quoted identifiers.
pub fn view_name(schema: &str, table: &str) -> ObjectName {
    ObjectName(vec![
        ObjectNamePart::Identifier(Ident::with_quote('"', schema)),
        ObjectNamePart::Identifier(Ident::with_quote('"', table)),
    ])
}

/// Whether an object name is in a system schema, or is an unqualified `pg_*` name.
pub fn is_catalog_name(name: &ObjectName) -> bool {
    match parts(name).as_deref() {
        Some([table]) => table.starts_with("pg_"),
        Some([.., schema, _]) => SYSTEM_SCHEMAS.contains(&schema.as_str()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(parts: &[Ident]) -> ObjectName {
        ObjectName(
            parts
                .iter()
                .cloned()
                .map(ObjectNamePart::Identifier)
                .collect(),
        )
    }

    fn set() -> Protected {
        Protected::new([
            ("public".to_owned(), "customers".to_owned()),
            ("crm".to_owned(), "leads".to_owned()),
        ])
    }

    #[test]
    fn resolution_cases() {
        let p = set();
        let v = "veil_standard";
        let cases = [
            (
                name(&[Ident::new("customers")]),
                Resolution::Protected("customers".into()),
            ),
            (
                name(&[Ident::new("CUSTOMERS")]),
                Resolution::Protected("customers".into()),
            ),
            (
                name(&[Ident::with_quote('"', "Customers")]),
                Resolution::Other,
            ),
            (
                name(&[Ident::with_quote('"', "customers")]),
                Resolution::Protected("customers".into()),
            ),
            (
                name(&[Ident::new("public"), Ident::new("customers")]),
                Resolution::Protected("customers".into()),
            ),
            (
                name(&[
                    Ident::new("db"),
                    Ident::new("public"),
                    Ident::new("customers"),
                ]),
                Resolution::Protected("customers".into()),
            ),
            (
                name(&[Ident::new("pg_catalog"), Ident::new("customers")]),
                Resolution::Other,
            ),
            (
                name(&[Ident::new("other"), Ident::new("customers")]),
                Resolution::Other,
            ),
            (
                name(&[Ident::new("leads")]),
                Resolution::Protected("leads".into()),
            ),
            (
                name(&[Ident::new("crm"), Ident::new("leads")]),
                Resolution::Protected("leads".into()),
            ),
            (
                name(&[Ident::with_quote('"', v), Ident::new("customers")]),
                Resolution::View,
            ),
            (name(&[Ident::new("orders")]), Resolution::Other),
        ];
        for (n, want) in cases {
            assert_eq!(p.resolve(&n, v), want, "{n}");
        }
    }

    #[test]
    fn catalog_names() {
        assert!(is_catalog_name(&name(&[Ident::new("pg_settings")])));
        assert!(is_catalog_name(&name(&[
            Ident::new("PG_CATALOG"),
            Ident::new("x")
        ])));
        assert!(!is_catalog_name(&name(&[Ident::new("customers")])));
    }
}
