//! The property every rewrite must keep, checked on the rewritten SQL with
//! sqlparser's own AST walk (independently of the rewriter's logic): no
//! relation names a protected base table. Shared by `tests/rewrite_prop.rs`
//! and the `rewrite` fuzz target.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{Ident, ObjectName, Query, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The relations of `sql` that name one of the `protected` tables of
/// `base_schema`: qualified by that schema, or unqualified and not the name
/// of a CTE the text defines. An error when `sql` does not parse.
pub fn base_tables_named(
    sql: &str,
    protected: &[String],
    base_schema: &str,
) -> Result<Vec<String>, String> {
    let statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| format!("{sql}: {e}"))?;
    let mut names = Names::default();
    let _ = statements.visit(&mut names);
    Ok(names
        .relations
        .into_iter()
        .filter(|parts| names_base_table(parts, protected, base_schema, &names.ctes))
        .map(|parts| parts.join("."))
        .collect())
}

fn names_base_table(
    parts: &[String],
    protected: &[String],
    base_schema: &str,
    ctes: &HashSet<String>,
) -> bool {
    let Some((table, qualifiers)) = parts.split_last() else {
        return false;
    };
    if !protected.contains(table) {
        return false;
    }
    match qualifiers.last() {
        Some(schema) => schema == base_schema,
        None => !ctes.contains(table),
    }
}

/// Relation names (identifiers folded as PostgreSQL folds them) and CTE names.
#[derive(Default)]
struct Names {
    relations: Vec<Vec<String>>,
    ctes: HashSet<String>,
}

/// An identifier as PostgreSQL resolves it: unquoted names fold to lower case.
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

impl Visitor for Names {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let parts = relation
            .0
            .iter()
            .map(|part| part.as_ident().map_or_else(|| part.to_string(), folded))
            .collect();
        self.relations.push(parts);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes
                .extend(with.cte_tables.iter().map(|cte| folded(&cte.alias.name)));
        }
        ControlFlow::Continue(())
    }
}
