//! The mask library as SQL expressions evaluated inside the views. Every
//! mask reads the raw column and nothing else sees it; results keep the
//! column's type where the mask allows.

use crate::policy::{DateUnit, MaskName, MaskSpec};

use super::catalog::{CatalogColumn, TypeCategory};

/// Quotes an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Alias of the base table inside every view.
pub const BASE_ALIAS: &str = "t";

/// What a mask expression needs besides the column.
pub struct MaskContext<'a> {
    /// Schema of pgveil's private tables.
    pub private_schema: &'a str,
    /// The view set (selects the keys).
    pub view_set: &'a str,
    /// The table name (domain of per-row noise).
    pub table: &'a str,
    /// SQL text of the row key (for noise), if the table has one.
    pub row_key: Option<String>,
    /// A named admin expression, for `sql` masks.
    pub admin_expression: Option<&'a str>,
}

/// The select-list expression of a masked column; None when hidden.
/// Errors say why the mask does not fit the column.
pub fn mask_expression(
    ctx: &MaskContext,
    column: &CatalogColumn,
    spec: &MaskSpec,
) -> Result<Option<String>, String> {
    let col = format!("{BASE_ALIAS}.{}", ident(&column.name));
    let ty = &column.type_name;
    let cat = column.category;
    let expr = match spec.mask {
        MaskName::Keep => col,
        MaskName::Hide => return Ok(None),
        MaskName::Null => format!("NULL::{ty}"),
        MaskName::Constant => {
            format!(
                "{}::{ty}",
                literal(spec.value.as_deref().unwrap_or_default())
            )
        }
        MaskName::Partial => {
            require(cat, &[TypeCategory::Text], "partial")?;
            partial(&col, spec, ty)
        }
        MaskName::Email => {
            require(cat, &[TypeCategory::Text], "email")?;
            format!(
                "(CASE WHEN strpos({col}, '@') > 0 THEN '***@' || substring({col} from '@([^@]*)$') ELSE '***' END)::{ty}"
            )
        }
        MaskName::Pseudonym => pseudonym(ctx, column, spec, &col)?,
        MaskName::Generalize => generalize(&col, spec, column)?,
        MaskName::Noise => noise(ctx, column, spec, &col)?,
        MaskName::Sql => {
            let text = ctx
                .admin_expression
                .ok_or("the sql mask names no admin expression")?;
            format!("({})", text.replace("{col}", &col))
        }
    };
    Ok(Some(format!("{expr} AS {}", ident(&column.name))))
}

fn require(cat: TypeCategory, allowed: &[TypeCategory], mask: &str) -> Result<(), String> {
    if allowed.contains(&cat) {
        Ok(())
    } else {
        let names: Vec<String> = allowed
            .iter()
            .map(|c| format!("{c:?}").to_lowercase())
            .collect();
        Err(format!(
            "mask `{mask}` fits {} columns, not {}",
            names.join("/"),
            format!("{cat:?}").to_lowercase()
        ))
    }
}

fn partial(col: &str, spec: &MaskSpec, ty: &str) -> String {
    let f = spec.keep_first.unwrap_or(0);
    let l = spec.keep_last.unwrap_or(0);
    let keep = f + l;
    format!(
        "(CASE WHEN length({col}) <= {keep} THEN repeat('*', length({col})) \
         ELSE left({col}, {f}) || repeat('*', length({col}) - {keep}) || right({col}, {l}) END)::{ty}"
    )
}

/// HMAC-SHA-256 of the text `message` under the view set's key for
/// `purpose`, computed from the padded keys in the private table.
pub fn hmac_sql(ctx: &MaskContext, purpose: &str, message: &str) -> String {
    let key = |pad: &str| {
        format!(
            "(SELECT k.{pad} FROM {}.keys k WHERE k.view_set = {} AND k.purpose = {})",
            ident(ctx.private_schema),
            literal(ctx.view_set),
            literal(purpose)
        )
    };
    format!(
        "sha256({} || sha256({} || convert_to({message}, 'UTF8')))",
        key("opad"),
        key("ipad")
    )
}

fn pseudonym(
    ctx: &MaskContext,
    column: &CatalogColumn,
    spec: &MaskSpec,
    col: &str,
) -> Result<String, String> {
    let domain = spec.domain.as_deref().unwrap_or(&column.name);
    let message = format!("{} || ({col})::text", literal(&format!("{domain}:")));
    let h = hmac_sql(ctx, "pseudonym", &message);
    let ty = &column.type_name;
    match (column.category, ty.as_str()) {
        (TypeCategory::Text, _) => Ok(format!("encode({h}, 'hex')::{ty}")),
        (TypeCategory::Integer, "bigint") => Ok(format!(
            "('x' || encode(substr({h}, 1, 8), 'hex'))::bit(64)::bigint"
        )),
        (TypeCategory::Integer, "integer") => Ok(format!(
            "('x' || encode(substr({h}, 1, 4), 'hex'))::bit(32)::integer"
        )),
        (TypeCategory::Integer, _) => Ok(format!(
            "(('x' || encode(substr({h}, 1, 2), 'hex'))::bit(16)::integer - 32768)::smallint"
        )),
        (cat, _) => require(
            cat,
            &[TypeCategory::Text, TypeCategory::Integer],
            "pseudonym",
        )
        .map(|_| String::new()),
    }
}

fn generalize(col: &str, spec: &MaskSpec, column: &CatalogColumn) -> Result<String, String> {
    let ty = &column.type_name;
    let cat = column.category;
    if let Some(width) = spec.width {
        require(
            cat,
            &[TypeCategory::Integer, TypeCategory::Numeric],
            "generalize width",
        )?;
        return Ok(format!(
            "(floor(({col})::numeric / {width}) * {width})::{ty}"
        ));
    }
    if let Some(unit) = spec.unit {
        require(
            cat,
            &[TypeCategory::Date, TypeCategory::Timestamp],
            "generalize unit",
        )?;
        let unit = match unit {
            DateUnit::Year => "year",
            DateUnit::Month => "month",
        };
        return Ok(format!("date_trunc('{unit}', {col})::{ty}"));
    }
    let n = spec.prefix.unwrap_or(1);
    require(cat, &[TypeCategory::Text], "generalize prefix")?;
    Ok(format!("left({col}, {n})::{ty}"))
}

fn noise(
    ctx: &MaskContext,
    column: &CatalogColumn,
    spec: &MaskSpec,
    col: &str,
) -> Result<String, String> {
    let key = ctx
        .row_key
        .as_ref()
        .ok_or("noise needs a row key: the table has no primary key (set `key` in the table)")?;
    let message = format!(
        "{} || {key}",
        literal(&format!("{}.{}:", ctx.table, column.name))
    );
    let h = hmac_sql(ctx, "noise", &message);
    // A uniform number in [-1, 1) that is the same for the row every time.
    let unit = format!(
        "(2 * (('x' || encode(substr({h}, 1, 4), 'hex'))::bit(32)::bigint)::numeric / 4294967296 - 1)"
    );
    let ty = &column.type_name;
    if let Some(amount) = spec.amount {
        require(
            column.category,
            &[TypeCategory::Integer, TypeCategory::Numeric],
            "noise amount",
        )?;
        return Ok(format!(
            "(({col})::numeric * (1 + {amount} * {unit}))::{ty}"
        ));
    }
    let days = spec.days.unwrap_or(1);
    match column.category {
        TypeCategory::Date => Ok(format!("({col} + round({days} * {unit})::integer)::{ty}")),
        TypeCategory::Timestamp => Ok(format!(
            "({col} + round({days} * {unit})::integer * interval '1 day')::{ty}"
        )),
        cat => require(
            cat,
            &[TypeCategory::Date, TypeCategory::Timestamp],
            "noise days",
        )
        .map(|_| String::new()),
    }
}
