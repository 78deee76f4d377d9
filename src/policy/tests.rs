use std::path::PathBuf;

use super::*;

fn crm() -> Policy {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"));
    Policy::load(&[path]).unwrap()
}

fn from_text(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_sources(vec![Source {
        path: PathBuf::from("test.toml"),
        text: text.to_string(),
    }])
}

fn problems(text: &str) -> Vec<Problem> {
    match from_text(text) {
        Err(PolicyError::Invalid(p)) => p,
        other => panic!("expected invalid policy, got {other:?}"),
    }
}

const MINIMAL: &str = r#"
[tables.customers.columns]
customer_id = { class = "identity", kind = "id" }
email = { class = "identity", kind = "email" }
region = "non_personal"

[view_sets.standard]
kind = "standard"

[roles.support]
view_sets = ["standard"]

[users.sam]
role = "support"
"#;

#[test]
fn example_policy_loads() {
    let p = crm();
    assert_eq!(p.protected_tables().len(), 6);
    assert!(p
        .protected_tables()
        .contains(&("public".to_string(), "customers".to_string())));
}

#[test]
fn misspelt_key_is_reported_with_file_and_line() {
    let text = MINIMAL.replace(
        "region = \"non_personal\"",
        "region = { clas = \"non_personal\" }",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    let loc = p[0].location.clone().unwrap();
    assert_eq!(loc.file, PathBuf::from("test.toml"));
    assert_eq!(loc.line, 5);
    assert!(p[0].message.contains("unknown field `clas`"), "{}", p[0]);
    assert!(p[0].to_string().starts_with("test.toml:5:"), "{}", p[0]);
}

#[test]
fn misspelt_top_level_section_is_an_error() {
    let text = format!("{MINIMAL}\n[user.bob]\nrole = \"support\"\n");
    let p = problems(&text);
    assert!(p[0].message.contains("unknown field `user`"), "{}", p[0]);
    assert_eq!(p[0].location.as_ref().unwrap().line, 16);
}

#[test]
fn unknown_classification_names_the_choices() {
    let text = MINIMAL.replace("\"non_personal\"", "\"public\"");
    let p = problems(&text);
    assert!(p[0].message.contains("identity"), "{}", p[0]);
    assert_eq!(p[0].location.as_ref().unwrap().line, 5);
}

#[test]
fn mask_parameters_are_checked() {
    let text = MINIMAL.replace(
        "kind = \"email\" }",
        "kind = \"email\", standard = { mask = \"generalize\" } }",
    );
    let p = problems(&text);
    assert!(p[0].message.contains("needs exactly one of"), "{}", p[0]);
    assert_eq!(p[0].location.as_ref().unwrap().line, 4);
    let text = MINIMAL.replace(
        "kind = \"email\" }",
        "kind = \"email\", standard = { mask = \"email\", width = 3 } }",
    );
    assert!(problems(&text)[0]
        .message
        .contains("`width` does not apply"));
}

#[test]
fn conditional_mask_on_sensitive_column_is_refused() {
    let text = MINIMAL.replace(
        "region = \"non_personal\"",
        "date_of_death = { class = \"sensitive\", anonymous = { mask = \"generalize\", unit = \"year\" } }",
    );
    let p = problems(&text);
    assert!(p[0].message.contains("reveals who has a value"), "{}", p[0]);
}

#[test]
fn sql_mask_needs_an_admin_expression() {
    let text = MINIMAL.replace(
        "kind = \"email\" }",
        "kind = \"email\", standard = { mask = \"sql\", name = \"lower_mail\" } }",
    );
    assert!(problems(&text)[0].message.contains("[admin.expressions]"));
    let ok = format!("{text}\n[admin.expressions]\nlower_mail = \"lower({{col}})\"\n");
    from_text(&ok).unwrap();
    let bad =
        format!("{text}\n[admin.expressions]\nlower_mail = \"lower({{col}}); DROP TABLE x\"\n");
    assert!(problems(&bad)[0].message.contains("not one SQL expression"));
}

#[test]
fn references_are_checked() {
    let text = MINIMAL.replace("view_sets = [\"standard\"]", "view_sets = [\"standrad\"]");
    let p = problems(&text);
    assert!(
        p[0].message.contains("unknown view set \"standrad\""),
        "{}",
        p[0]
    );
    assert_eq!(p[0].location.as_ref().unwrap().line, 11);
}

#[test]
fn row_filter_must_be_one_condition() {
    let text = format!(
        "{MINIMAL}\n[view_sets.standard.row_filters]\ncustomers = \"region = $user.region; DELETE FROM customers\"\n"
    );
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.message.contains("not one SQL condition")),
        "{p:?}"
    );
    // sam lacks the region attribute the filter needs.
    assert!(
        p.iter().any(|p| p.message.contains("has no region")),
        "{p:?}"
    );
}

#[test]
fn files_merge_and_duplicates_are_errors() {
    let a = Source {
        path: "a.toml".into(),
        text: MINIMAL.into(),
    };
    let b = Source {
        path: "b.toml".into(),
        text: "[users.sam]\nrole = \"support\"\n".into(),
    };
    match Policy::from_sources(vec![a, b]) {
        Err(PolicyError::Invalid(p)) => {
            assert!(p[0].message.contains("defined twice"), "{}", p[0]);
            assert_eq!(
                p[0].location.as_ref().unwrap().file,
                PathBuf::from("b.toml")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sessions_resolve_to_view_sets_and_login_roles() {
    let p = crm();
    let g = p.resolve_session("alice_north", None).unwrap();
    assert_eq!(g.view_set, "sales");
    assert_eq!(g.schema.as_deref(), Some("veil_sales"));
    assert_eq!(g.login_role.as_deref(), Some("veil_sales__region_north"));
    assert!(!g.read_only);
    let g = p.resolve_session("ana", None).unwrap();
    assert_eq!(
        (g.kind, g.min_group_size, g.read_only),
        (ViewKind::Anonymous, Some(5), true)
    );
    let g = p.resolve_session("olivia", Some("standard")).unwrap();
    assert_eq!(g.login_role.as_deref(), Some("veil_standard"));
    let g = p.resolve_session("mark", None).unwrap();
    assert_eq!(g.purpose.as_deref(), Some("direct_marketing"));
    let g = p.resolve_session("root", None).unwrap();
    assert_eq!(
        (g.kind, g.schema, g.login_role),
        (ViewKind::Admin, None, None)
    );
}

#[test]
fn session_errors_are_clear() {
    let p = crm();
    let e = p.resolve_session("mallory", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "user \"mallory\" is not known to the privacy policy"
    );
    let e = p.resolve_session("sam", Some("personal")).unwrap_err();
    assert!(
        e.to_string().contains("may not use view set \"personal\""),
        "{e}"
    );
    let e = p.resolve_session("sam", Some("nope")).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(p.resolve_session("ana", Some("admin")).is_err());
}

#[test]
fn login_roles_cover_each_region_once() {
    let p = crm();
    let names: Vec<String> = p.login_roles().into_iter().map(|r| r.name).collect();
    for n in [
        "veil_sales__region_north",
        "veil_sales__region_south",
        "veil_sales__region_east",
        "veil_sales__region_west",
        "veil_standard",
        "veil_personal",
        "veil_analytics",
        "veil_marketing",
        "veil_partner_export",
    ] {
        assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
    }
    assert!(!names.contains(&"veil_sales".to_string()));
    assert_eq!(names.len(), 9);
}

#[test]
fn odd_attribute_values_get_hashed_role_names() {
    let p = crm();
    let attrs = [("region".to_string(), "Nord-Ost".to_string())]
        .into_iter()
        .collect();
    let name = p.login_role_name("sales", &attrs);
    assert!(
        name.starts_with("veil_sales__") && name.len() == "veil_sales__".len() + 12,
        "{name}"
    );
}

#[test]
fn masks_resolve_by_precedence() {
    let p = crm();
    let set = |n: &str| p.view_sets()[n].get().clone();
    let m = |s: &str, t: &str, c: &str| p.mask_for(&set(s), t, c).spec.mask;
    // column override
    assert_eq!(m("standard", "customers", "email"), MaskName::Email);
    // policy rule by kind
    assert_eq!(
        m("standard", "customers", "date_of_birth"),
        MaskName::Generalize
    );
    // policy rule default
    assert_eq!(m("standard", "customers", "street"), MaskName::Null);
    // built-in defaults
    assert_eq!(m("standard", "customers", "health_notes"), MaskName::Hide);
    assert_eq!(m("personal", "customers", "health_notes"), MaskName::Keep);
    assert_eq!(
        m("analytics", "customers", "customer_id"),
        MaskName::Pseudonym
    );
    assert_eq!(m("analytics", "customers", "first_name"), MaskName::Hide);
    // selective: listed fields take the anonymous mask, others the selective one
    assert_eq!(m("partner_export", "customers", "email"), MaskName::Hide);
    assert_eq!(
        m("partner_export", "customers", "customer_id"),
        MaskName::Pseudonym
    );
    assert_eq!(
        m("partner_export", "customers", "first_name"),
        MaskName::Keep
    );
    // patterns
    assert_eq!(m("standard", "customers", "created_at"), MaskName::Keep);
    // unclassified: hidden except in personal
    assert_eq!(m("standard", "customers", "shoe_size"), MaskName::Hide);
    assert_eq!(m("personal", "customers", "shoe_size"), MaskName::Keep);
}

#[test]
fn glob_patterns() {
    assert!(glob_match("*_at", "created_at"));
    assert!(glob_match("work_*", "work_email"));
    assert!(glob_match("*mail*", "work_email_2"));
    assert!(!glob_match("*_at", "status"));
    assert!(!glob_match("a*b*c", "acb"));
}

#[test]
fn erase_and_retention_rules_are_checked() {
    let crm = crm();
    let customers = crm.tables()["customers"].get();
    assert_eq!(customers.erase, Some(EraseRule::Anonymize));
    let retention = customers.retention.as_ref().unwrap();
    assert_eq!(retention.interval().as_deref(), Some("3 years"));

    let text = format!(
        "[subject]\ntable = \"customers\"\nkey = \"customer_id\"\n\
         [tables.customers]\nerase = \"anonymize\"\n\
         retention = {{ column = \"last_active_at\", after = \"3 fortnights\" }}\n\
         [tables.orders]\nerase = \"anonymize\"\n\
         retention = {{ column = \"ordered_at\", after = \"10 years\" }}\n\
         [tables.orders.columns]\norder_id = \"non_personal\"\n\
         [tables.notes]\nretention = {{ column = \"at\", after = \"1 year\" }}\n\
         [tables.notes.columns]\nat = \"non_personal\"\n{MINIMAL}"
    );
    let found: Vec<String> = problems(&text).iter().map(|p| p.to_string()).collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].contains("\"3 fortnights\" is not an age"),
        "{found:#?}"
    );
    assert!(found[1].contains("notes: a retention rule needs an erase rule"));
    assert!(found[2].contains("orders: expired rows of a table other than the subject"));
    let bad_rule = problems(&format!("[tables.x]\nerase = \"shred\"\n{MINIMAL}"));
    assert!(bad_rule[0].to_string().contains("shred"), "{bad_rule:?}");
}

#[test]
fn quasi_identifiers_must_be_shown_columns_of_an_anonymous_set() {
    let set = |kind: &str, qi: &str| {
        format!("{MINIMAL}\n[view_sets.stats]\nkind = \"{kind}\"\nmin_group_size = 5\nquasi_identifiers = [{qi}]\n")
    };
    assert!(from_text(&set("anonymous", "\"customers.region\"")).is_ok());
    let hidden = problems(&set("anonymous", "\"customers.email\""));
    assert!(
        hidden[0]
            .message
            .contains("quasi-identifier \"customers.email\""),
        "{hidden:?}"
    );
    assert!(problems(&set("anonymous", "\"customers.shoe_size\""))[0]
        .message
        .contains("customers.shoe_size"));
    let wrong_kind =
        problems(&set("standard", "\"customers.region\"").replace("min_group_size = 5\n", ""));
    assert!(
        wrong_kind[0].message.contains("only apply to anonymous"),
        "{wrong_kind:?}"
    );
}
