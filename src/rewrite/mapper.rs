//! The AST walk: maps protected table references to the view set, honours
//! CTE shadowing, applies the per-statement deny rules and anonymous rules.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, Expr, Ident, ObjectName, Query, Select, SetExpr, Statement, TableAlias,
    TableFactor, VisitMut, VisitorMut, With,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;

use super::anon;
use super::deny::check_statement;
use super::names::{normalize, parts, view_name, Protected, Resolution};
use super::{Refusal, Target};

/// Schemas whose functions may be called with a qualified name.
const TRUSTED_FUNCTION_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];

/// Rewrites statements in place for one target.
pub struct Mapper<'a> {
    protected: &'a Protected,
    target: &'a Target,
    /// CTE names visible at each query nesting level.
    scopes: Vec<Vec<String>>,
    /// WITH clauses taken out of queries while their CTEs are walked by hand.
    stashed: Vec<Option<With>>,
    /// Names written by the user as CTE or table aliases.
    pub exempt: HashSet<String>,
    /// Where the identifiers that were rewritten started in the text.
    pub replaced: HashSet<Location>,
    /// Whether anything was changed.
    pub changed: bool,
}

type Flow = ControlFlow<Refusal>;

fn refuse<T>(r: Refusal) -> ControlFlow<Refusal, T> {
    ControlFlow::Break(r)
}

impl<'a> Mapper<'a> {
    /// A mapper for one target over the protected tables.
    pub fn new(protected: &'a Protected, target: &'a Target) -> Self {
        Self {
            protected,
            target,
            scopes: Vec::new(),
            stashed: Vec::new(),
            exempt: HashSet::new(),
            replaced: HashSet::new(),
            changed: false,
        }
    }

    fn shadowed(&self, name: &ObjectName) -> bool {
        match parts(name).as_deref() {
            Some([single]) => self.scopes.iter().any(|s| s.contains(single)),
            _ => false,
        }
    }

    /// The protected table a relation name refers to, unless a CTE shadows it.
    pub fn protected_table(&self, name: &ObjectName) -> Result<Option<String>, Refusal> {
        match self.protected.resolve(name, &self.target.schema) {
            Resolution::Protected(t) if !self.shadowed(name) => Ok(Some(t)),
            Resolution::Unknown => Err(Refusal::unanalysable(format!("relation name {name}"))),
            _ => Ok(None),
        }
    }

    /// Replaces a protected relation name by its view; returns the original
    /// last identifier when it did.
    fn map_name(&mut self, name: &mut ObjectName) -> Result<Option<Ident>, Refusal> {
        let Some(table) = self.protected_table(name)? else {
            return Ok(None);
        };
        let original = name.0.last().and_then(|p| p.as_ident()).cloned();
        if let Some(ident) = &original {
            self.replaced.insert(ident.span.start);
        }
        *name = view_name(&self.target.schema, &table);
        self.changed = true;
        Ok(original)
    }

    fn map_table_factor(&mut self, tf: &mut TableFactor) -> Result<(), Refusal> {
        match tf {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => check_function_name(name),
            TableFactor::Table { name, alias, .. } => {
                if let Some(a) = alias {
                    self.exempt.insert(normalize(&a.name));
                }
                let original = self.map_name(name)?;
                if let (Some(ident), None) = (original, &alias) {
                    *alias = Some(TableAlias {
                        explicit: true,
                        name: ident,
                        columns: vec![],
                        at: None,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn enter_query(&mut self, query: &mut Query) -> Flow {
        let Some(mut with) = query.with.take() else {
            self.scopes.push(Vec::new());
            self.stashed.push(None);
            return self.map_set_expr_tables(&mut query.body);
        };
        let names: Vec<String> = with
            .cte_tables
            .iter()
            .map(|c| normalize(&c.alias.name))
            .collect();
        self.exempt.extend(names.iter().cloned());
        for (i, cte) in with.cte_tables.iter_mut().enumerate() {
            let visible = match with.recursive {
                true => names.clone(),
                false => names[..i].to_vec(),
            };
            self.scopes.push(visible);
            let flow = cte.query.visit(self);
            self.scopes.pop();
            flow?;
        }
        self.scopes.push(names);
        self.stashed.push(Some(with));
        self.map_set_expr_tables(&mut query.body)
    }

    /// `TABLE t` in a query body or set operation.
    fn map_set_expr_tables(&mut self, body: &mut SetExpr) -> Flow {
        match body {
            SetExpr::SetOperation { left, right, .. } => {
                self.map_set_expr_tables(left)?;
                self.map_set_expr_tables(right)
            }
            SetExpr::Table(t) => self.map_table_statement(t),
            _ => ControlFlow::Continue(()),
        }
    }

    fn map_table_statement(&mut self, t: &mut sqlparser::ast::Table) -> Flow {
        let Some(table) = &t.table_name else {
            return ControlFlow::Continue(());
        };
        let name = ObjectName::from(
            t.schema_name
                .iter()
                .chain(std::iter::once(table))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let protected = match self.protected_table(&name) {
            Ok(p) => p,
            Err(r) => return refuse(r),
        };
        if let (Some(table), Some(ident)) = (protected, &t.table_name) {
            if self.target.min_group_size.is_some() {
                return refuse(anon::non_aggregate());
            }
            self.replaced.insert(ident.span.start);
            t.schema_name = Some(quoted(&self.target.schema));
            t.table_name = Some(quoted(&table));
            self.changed = true;
        }
        ControlFlow::Continue(())
    }

    fn map_copy(&mut self, stmt: &mut Statement) -> Result<(), Refusal> {
        let Statement::Copy { source, to, .. } = stmt else {
            return Ok(());
        };
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Ok(());
        };
        let Some(table) = self.protected_table(table_name)? else {
            return Ok(());
        };
        if !*to {
            self.map_name(table_name)?;
            return Ok(());
        }
        if let Some(ident) = table_name.0.last().and_then(|p| p.as_ident()) {
            self.replaced.insert(ident.span.start);
        }
        if self.target.min_group_size.is_some() {
            return Err(anon::non_aggregate());
        }
        let cols = match columns.is_empty() {
            true => "*".to_owned(),
            false => columns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let view = view_name(&self.target.schema, &table);
        let original = table_name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .cloned()
            .unwrap_or_else(|| Ident::new(table));
        let sql = format!("SELECT {cols} FROM {view} AS {original}");
        let query = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_query())
            .map_err(|e| Refusal::unanalysable(format!("COPY column list: {e}")))?;
        *source = CopySource::Query(query);
        self.changed = true;
        Ok(())
    }

    fn map_lock(&mut self, stmt: &mut Statement) -> Result<(), Refusal> {
        if let Statement::Lock(lock) = stmt {
            for t in &mut lock.tables {
                self.map_name(&mut t.name)?;
            }
        }
        Ok(())
    }

    /// Drops the schema from `public.customers.email` column references: the
    /// view is aliased by its table name.
    fn map_column_ref(&mut self, expr: &mut Expr) -> Result<(), Refusal> {
        let Expr::CompoundIdentifier(idents) = expr else {
            return Ok(());
        };
        if idents.len() < 3 {
            return Ok(());
        }
        let relation = ObjectName::from(idents[..idents.len() - 1].to_vec());
        if self.protected_table(&relation)?.is_some() {
            let keep = idents.split_off(idents.len() - 2);
            *idents = keep;
            self.changed = true;
        }
        Ok(())
    }
}

fn quoted(s: &str) -> Ident {
    Ident::with_quote('"', s)
}

/// Schema-qualified function calls are allowed only into trusted schemas.
fn check_function_name(name: &ObjectName) -> Result<(), Refusal> {
    match parts(name).as_deref() {
        Some([_]) => Ok(()),
        Some([.., schema, _]) if TRUSTED_FUNCTION_SCHEMAS.contains(&schema.as_str()) => Ok(()),
        _ => Err(Refusal::denied(
            format!("function {name} is not allowed: pgveil cannot vet functions outside pg_catalog"),
            "Call built-in functions only; ask an administrator to expose others through the views.",
        )),
    }
}

fn flow(r: Result<(), Refusal>) -> Flow {
    match r {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => ControlFlow::Break(e),
    }
}

impl VisitorMut for Mapper<'_> {
    type Break = Refusal;

    fn pre_visit_statement(&mut self, stmt: &mut Statement) -> Flow {
        flow(check_statement(stmt, self.target))?;
        flow(self.map_copy(stmt))?;
        flow(self.map_lock(stmt))
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> Flow {
        self.enter_query(query)
    }

    fn post_visit_query(&mut self, query: &mut Query) -> Flow {
        self.scopes.pop();
        if let Some(Some(with)) = self.stashed.pop() {
            query.with = Some(with);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> Flow {
        if select.into.is_some() {
            return refuse(Refusal::denied(
                "SELECT INTO is not allowed: it copies data out of the privacy views",
                "Select the rows without INTO.",
            ));
        }
        let Some(k) = self.target.min_group_size else {
            return ControlFlow::Continue(());
        };
        let reads = match anon::reads_protected(select, |n| self.protected_table(n)) {
            Ok(r) => r,
            Err(e) => return refuse(e),
        };
        if reads {
            flow(anon::enforce(select, k))?;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> Flow {
        flow(self.map_table_factor(tf))
    }

    fn pre_visit_relation(&mut self, name: &mut ObjectName) -> Flow {
        flow(self.map_name(name).map(|_| ()))
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> Flow {
        if let Expr::Function(f) = expr {
            flow(check_function_name(&f.name))?;
            if self.target.min_group_size.is_some() {
                flow(anon::check_function(f))?;
            }
        }
        flow(self.map_column_ref(expr))
    }
}
