//! Rules for anonymous view sets (`min_group_size: Some(k)`): only aggregate
//! queries read protected tables, every group has at least k rows, and
//! filters on identifying columns (which single people out) are refused.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, Function, GroupByExpr, InTarget, ObjectName, Select, SelectItem,
    TableFactor, TableWithJoins, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::names::{normalize, parts};
use super::Refusal;

/// Aggregates whose result summarises a group.
const SUMMARY_AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "bool_and",
    "bool_or",
    "every",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
];

/// Aggregates that return the group's individual values.
const COLLECTING_AGGREGATES: &[&str] = &[
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "json_agg_strict",
    "jsonb_agg_strict",
    "json_objectagg",
    "json_arrayagg",
    "xmlagg",
    "range_agg",
    "range_intersect_agg",
];

/// Refusal for a non-aggregate read of a protected table.
pub fn non_aggregate() -> Refusal {
    Refusal::denied(
        "this view set is anonymous: protected tables can only be read by aggregate queries",
        "Use GROUP BY with aggregates such as count(*), avg(...); groups smaller than the minimum group size are suppressed.",
    )
}

fn function_name(f: &Function) -> String {
    parts(&f.name)
        .and_then(|p| p.last().cloned())
        .unwrap_or_default()
}

/// Refuses aggregates that return individual values.
pub fn check_function(f: &Function) -> Result<(), Refusal> {
    let name = function_name(f);
    match COLLECTING_AGGREGATES.contains(&name.as_str()) {
        true => Err(Refusal::denied(
            format!(
                "{name}() is not allowed on an anonymous view set: it returns individual values"
            ),
            "Use summary aggregates such as count, sum, avg.",
        )),
        false => Ok(()),
    }
}

/// Whether the select's FROM reads a protected table directly.
pub fn reads_protected<F>(select: &Select, mut protected: F) -> Result<bool, Refusal>
where
    F: FnMut(&ObjectName) -> Result<Option<String>, Refusal>,
{
    let mut found = false;
    for twj in &select.from {
        found |= twj_reads(twj, &mut protected)?;
    }
    Ok(found)
}

fn twj_reads<F>(twj: &TableWithJoins, protected: &mut F) -> Result<bool, Refusal>
where
    F: FnMut(&ObjectName) -> Result<Option<String>, Refusal>,
{
    let mut found = factor_reads(&twj.relation, protected)?;
    for j in &twj.joins {
        found |= factor_reads(&j.relation, protected)?;
    }
    Ok(found)
}

fn factor_reads<F>(tf: &TableFactor, protected: &mut F) -> Result<bool, Refusal>
where
    F: FnMut(&ObjectName) -> Result<Option<String>, Refusal>,
{
    match tf {
        TableFactor::Table {
            name, args: None, ..
        } => Ok(protected(name)?.is_some()),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => twj_reads(table_with_joins, protected),
        _ => Ok(false),
    }
}

struct AggregateFinder(bool);

impl Visitor for AggregateFinder {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            if f.over.is_none() && SUMMARY_AGGREGATES.contains(&function_name(f).as_str()) {
                self.0 = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

fn is_aggregate(select: &Select) -> bool {
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, _) => !e.is_empty(),
    };
    let mut finder = AggregateFinder(false);
    for item in &select.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            let _ = e.visit(&mut finder);
        }
    }
    grouped || finder.0
}

/// Columns that identify a person: filtering on them singles people out.
fn is_identifying(column: &str) -> bool {
    column == "id"
        || column.ends_with("_id")
        || matches!(
            column,
            "email"
                | "phone"
                | "national_id"
                | "account_no"
                | "first_name"
                | "last_name"
                | "full_name"
        )
}

fn column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(i) => Some(normalize(i)),
        Expr::CompoundIdentifier(v) => v.last().map(normalize),
        Expr::Nested(e) | Expr::Cast { expr: e, .. } => column_name(e),
        _ => None,
    }
}

fn identifying(expr: &Expr) -> Option<String> {
    column_name(expr).filter(|c| is_identifying(c))
}

struct DifferencingFinder(Option<String>);

impl Visitor for DifferencingFinder {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        let hit = match expr {
            Expr::BinaryOp { left, op, right } if is_comparison(op) => {
                match (identifying(left), identifying(right)) {
                    (Some(c), _) if column_name(right).is_none() => Some(c),
                    (_, Some(c)) if column_name(left).is_none() => Some(c),
                    _ => None,
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(_) | InTarget::Unnest(_),
                ..
            } => identifying(expr),
            Expr::Between { expr, .. }
            | Expr::Like { expr, .. }
            | Expr::ILike { expr, .. }
            | Expr::SimilarTo { expr, .. }
            | Expr::AnyOp { left: expr, .. }
            | Expr::AllOp { left: expr, .. } => identifying(expr),
            _ => None,
        };
        match hit {
            Some(c) => {
                self.0 = Some(c);
                ControlFlow::Break(())
            }
            None => ControlFlow::Continue(()),
        }
    }
}

fn is_comparison(op: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq)
}

fn check_differencing(select: &Select) -> Result<(), Refusal> {
    let mut finder = DifferencingFinder(None);
    for e in select.selection.iter().chain(select.having.iter()) {
        let _ = e.visit(&mut finder);
    }
    match finder.0 {
        Some(c) => Err(Refusal::denied(
            format!("filtering on the identifying column {c} is not allowed on an anonymous view set: it can single people out"),
            "Filter and group on non-identifying columns such as region or country.",
        )),
        None => Ok(()),
    }
}

fn threshold(k: u32) -> Result<Expr, Refusal> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("count(*) >= {k}"))
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Refusal::unanalysable(format!("group size threshold: {e}")))
}

/// Enforces the anonymous rules on a select that reads a protected table:
/// refuses non-aggregate and singling-out queries, adds `HAVING count(*) >= k`.
pub fn enforce(select: &mut Select, k: u32) -> Result<(), Refusal> {
    if !is_aggregate(select) {
        return Err(non_aggregate());
    }
    check_differencing(select)?;
    let min = threshold(k)?;
    select.having = Some(match select.having.take() {
        None => min,
        Some(h) => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(h))),
            op: BinaryOperator::And,
            right: Box::new(min),
        },
    });
    Ok(())
}
