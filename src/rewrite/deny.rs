//! Statement-level deny rules: which kinds of statement may run at all, and
//! which settings may be changed.

use sqlparser::ast::{
    CopyTarget, Expr, FromTable, ObjectName, Reset, Set, Statement, TableFactor, TableObject,
};

use super::names::{is_catalog_name, parts};
use super::{Refusal, Target};

/// Checks one statement (top-level or nested) against the deny rules.
pub fn check_statement(stmt: &Statement, target: &Target) -> Result<(), Refusal> {
    match stmt {
        Statement::Query(_)
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Prepare { .. }
        | Statement::Deallocate { .. }
        | Statement::Discard { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::NOTIFY { .. }
        | Statement::Lock(_) => Ok(()),
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => check_write(stmt, target),
        Statement::Copy {
            target: to_or_from,
            to,
            ..
        } => check_copy(stmt, to_or_from, *to, target),
        Statement::Declare { stmts, .. } => match stmts.iter().all(|d| d.for_query.is_some()) {
            true => Ok(()),
            false => Err(Refusal::unanalysable("DECLARE without a cursor query")),
        },
        Statement::Execute {
            immediate, name, ..
        } => match (*immediate, name) {
            (false, Some(_)) => Ok(()),
            _ => Err(Refusal::denied(
                "EXECUTE of SQL text is not allowed",
                "Use PREPARE name AS ... and EXECUTE name(...).",
            )),
        },
        Statement::Set(set) => check_set(set),
        Statement::Reset(r) => check_reset(&r.reset),
        Statement::ShowVariable { variable } => check_show(variable),
        other => Err(refuse_kind(other)),
    }
}

fn refuse_kind(stmt: &Statement) -> Refusal {
    match stmt {
        Statement::Explain { .. } | Statement::ExplainTable { .. } => Refusal::denied(
            "EXPLAIN is not allowed: plans and row estimates reveal how values are distributed",
            "Run the query itself; ask an administrator for query plans.",
        ),
        Statement::Call(_) => Refusal::denied(
            "CALL is not allowed: procedures run outside the privacy views",
            "Ask an administrator to run the procedure.",
        ),
        Statement::CreateFunction(_) | Statement::CreateProcedure { .. } => Refusal::denied(
            "creating functions or procedures is not allowed",
            "Functions can run arbitrary SQL; ask an administrator.",
        ),
        Statement::CreateTable(ct) if ct.query.is_some() => Refusal::denied(
            "CREATE TABLE AS is not allowed: it copies data out of the privacy views",
            "Query the data directly instead of copying it into a table.",
        ),
        _ => Refusal::denied(
            format!("{} statements are not allowed", statement_kind(stmt)),
            "pgveil lets applications read and write data; schema changes, administration and \
             server-side code need an administrator connection.",
        ),
    }
}

/// The first keywords of a statement, e.g. `CREATE VIEW`, for messages.
fn statement_kind(stmt: &Statement) -> String {
    let text = stmt.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take(2)
        .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .collect();
    words.join(" ").to_ascii_uppercase()
}

fn check_write(stmt: &Statement, target: &Target) -> Result<(), Refusal> {
    if target.read_only || target.min_group_size.is_some() {
        return Err(Refusal::read_only());
    }
    match write_targets(stmt).iter().any(|n| is_catalog_name(n)) {
        true => Err(Refusal::denied(
            "writing to system catalogs is not allowed",
            "Settings and catalogs cannot be changed through pgveil.",
        )),
        false => Ok(()),
    }
}

fn table_factor_name(tf: &TableFactor) -> Option<&ObjectName> {
    match tf {
        TableFactor::Table { name, .. } => Some(name),
        _ => None,
    }
}

/// The relations a DML statement writes to.
fn write_targets(stmt: &Statement) -> Vec<&ObjectName> {
    match stmt {
        Statement::Insert(i) => match &i.table {
            TableObject::TableName(n) => vec![n],
            TableObject::TableFunction(_) | TableObject::TableQuery(_) => vec![],
        },
        Statement::Update(u) => table_factor_name(&u.table.relation).into_iter().collect(),
        Statement::Delete(d) => {
            let (FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v)) = &d.from;
            v.iter()
                .filter_map(|t| table_factor_name(&t.relation))
                .chain(d.tables.iter())
                .collect()
        }
        Statement::Merge(m) => table_factor_name(&m.table).into_iter().collect(),
        Statement::Copy { source, .. } => match source {
            sqlparser::ast::CopySource::Table { table_name, .. } => vec![table_name],
            sqlparser::ast::CopySource::Query(_) => vec![],
        },
        _ => vec![],
    }
}

fn check_copy(stmt: &Statement, io: &CopyTarget, to: bool, target: &Target) -> Result<(), Refusal> {
    if !matches!(io, CopyTarget::Stdin | CopyTarget::Stdout) {
        return Err(Refusal::denied(
            "COPY to or from a server file or program is not allowed",
            "Use COPY ... TO STDOUT / FROM STDIN (psql: \\copy).",
        ));
    }
    match to {
        true => Ok(()),
        false => check_write(stmt, target),
    }
}

fn setting_refusal(name: &str) -> Refusal {
    Refusal::denied(
        format!("changing {name} is not allowed: it could escape the privacy views"),
        "The role, session authorization, search_path and pgveil.* settings are managed by pgveil.",
    )
}

/// Normalised dotted name of a setting.
fn setting_name(name: &ObjectName) -> String {
    parts(name)
        .map(|p| p.join("."))
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn is_protected_setting(name: &str) -> bool {
    matches!(name, "role" | "session_authorization" | "search_path") || name.starts_with("pgveil.")
}

fn value_text(value: &Expr) -> String {
    value
        .to_string()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_ascii_lowercase()
}

fn is_utf8(value: &str) -> bool {
    matches!(value.replace(['-', '_'], "").as_str(), "utf8" | "unicode")
}

fn check_setting(name: &str, values: &[Expr]) -> Result<(), Refusal> {
    if is_protected_setting(name) {
        return Err(setting_refusal(name));
    }
    let texts: Vec<String> = values.iter().map(value_text).collect();
    let allowed = match name {
        "client_encoding" | "names" => texts.iter().all(|v| is_utf8(v) || v == "default"),
        "standard_conforming_strings" => texts
            .iter()
            .all(|v| matches!(v.as_str(), "on" | "true" | "1" | "yes" | "default")),
        _ => true,
    };
    match allowed {
        true => Ok(()),
        false => Err(Refusal::denied(
            format!("SET {name} to {} is not allowed: pgveil analyses SQL as UTF8 with standard-conforming strings", texts.join(", ")),
            "Use client_encoding UTF8 and standard_conforming_strings on.",
        )),
    }
}

fn check_set(set: &Set) -> Result<(), Refusal> {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => check_setting(&setting_name(variable), values),
        Set::MultipleAssignments { assignments } => assignments.iter().try_for_each(|a| {
            check_setting(&setting_name(&a.name), std::slice::from_ref(&a.value))
        }),
        Set::SetRole { .. } => Err(setting_refusal("role")),
        Set::SetSessionAuthorization(_) => Err(setting_refusal("session_authorization")),
        Set::SetNames { charset_name, .. } => {
            match is_utf8(&charset_name.value.to_ascii_lowercase()) {
                true => Ok(()),
                false => Err(Refusal::denied(
                    format!("SET NAMES {charset_name} is not allowed: pgveil analyses SQL as UTF8"),
                    "Use client_encoding UTF8.",
                )),
            }
        }
        Set::SetTimeZone { .. } | Set::SetNamesDefault {} | Set::SetTransaction { .. } => Ok(()),
        Set::ParenthesizedAssignments { .. } | Set::SetSessionParam(_) => {
            Err(Refusal::unanalysable("this form of SET"))
        }
    }
}

fn check_reset(reset: &Reset) -> Result<(), Refusal> {
    match reset {
        Reset::ALL => Ok(()),
        Reset::SessionAuthorization => Err(setting_refusal("session_authorization")),
        Reset::ConfigurationParameter(name) => {
            let name = setting_name(name);
            match is_protected_setting(&name) {
                true => Err(setting_refusal(&name)),
                false => Ok(()),
            }
        }
    }
}

fn check_show(variable: &[sqlparser::ast::Ident]) -> Result<(), Refusal> {
    let first = variable.first().map(|i| i.value.to_ascii_lowercase());
    match first.as_deref() {
        Some("pgveil") | Some("all") => Err(Refusal::denied(
            "SHOW of pgveil.* settings (or SHOW ALL) is not allowed",
            "Show individual settings by name.",
        )),
        _ => Ok(()),
    }
}
