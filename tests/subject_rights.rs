//! Data-subject rights against a real PostgreSQL with the example CRM and
//! the example policy applied: export, opt-out/opt-in, corrections with a
//! second reviewer, erasure, retention.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgveil::crm::{self, LoadOptions};
use pgveil::policy::{Class, EraseRule, Policy};
use pgveil::subject::{self, Action, Assignment, SubjectError};
use pgveil::views;
use tokio_postgres::{Client, NoTls};

const SECRET: &[u8] = b"subject test secret";

static APPLY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Crm {
    db: String,
    client: Client,
    policy: Policy,
}

async fn crm_db(prefix: &str) -> Crm {
    let db = common::fresh_database(prefix).await;
    let client = common::cluster().connect(&db).await.unwrap();
    let opts = LoadOptions {
        customers: 300,
        ..Default::default()
    };
    crm::load(&client, &opts).await.unwrap();
    let policy = Policy::load(&[PathBuf::from("policies")]).unwrap();
    {
        // Login roles are cluster-wide: applies to several databases of the
        // shared cluster must not run at the same time.
        let _one_at_a_time = APPLY.lock().await;
        views::apply(&client, &policy, SECRET).await.unwrap();
    }
    Crm { db, client, policy }
}

/// Logs in to the database as a view-set login role.
async fn login(db: &str, role: &str) -> Client {
    let mut config = common::cluster().pg_config();
    config
        .user(role)
        .password(views::login_password(SECRET, role))
        .dbname(db);
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A customer with at least two orders and opportunities, contact preferences
/// and consent rows, who did not refuse direct marketing.
async fn busy_customer(c: &Client) -> i64 {
    c.query_one(
        "SELECT c.customer_id FROM customers c
         WHERE (SELECT count(*) FROM orders o WHERE o.customer_id = c.customer_id) >= 2
           AND (SELECT count(*) FROM opportunities o WHERE o.customer_id = c.customer_id) >= 2
           AND EXISTS (SELECT 1 FROM contact_preferences p WHERE p.customer_id = c.customer_id)
           AND EXISTS (SELECT 1 FROM consents k WHERE k.customer_id = c.customer_id)
           AND NOT EXISTS (SELECT 1 FROM consents k WHERE k.customer_id = c.customer_id
                           AND k.purpose = 'direct_marketing' AND NOT k.granted)
           AND c.email IS NOT NULL AND c.national_id IS NOT NULL
         ORDER BY c.customer_id LIMIT 1",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Destruction records written by retention runs.
const RETENTION_RECORDS: &str =
    "SELECT count(*) FROM pgveil_private.destruction_log WHERE trigger = 'retention'";

/// The count a query returns.
async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn text(c: &Client, sql: &str, id: i64) -> Option<String> {
    c.query_one(sql, &[&id]).await.unwrap().get(0)
}

#[tokio::test]
async fn export_returns_every_table_with_real_values_and_classes() {
    let crm = crm_db("subject_export").await;
    let (c, policy) = (&crm.client, &crm.policy);
    let id = busy_customer(c).await;
    let out = subject::export(c, policy, &id.to_string(), "olivia")
        .await
        .unwrap();
    let v = &out.value;
    assert_eq!(v["subject"]["table"], "customers");
    assert_eq!(v["subject"]["value"], id.to_string());

    let customer = &v["tables"]["customers"][0];
    for column in [
        "email",
        "national_id",
        "last_name",
        "street",
        "health_notes",
    ] {
        let sql = format!("SELECT {column}::text FROM customers WHERE customer_id = $1");
        let direct = text(c, &sql, id).await;
        assert_eq!(
            customer[column]["value"].as_str(),
            direct.as_deref(),
            "{column}"
        );
    }
    assert_eq!(customer["email"]["class"], "identity");
    assert_eq!(customer["date_of_birth"]["class"], "personal");
    assert_eq!(customer["health_notes"]["class"], "sensitive");
    assert_eq!(customer["country"]["class"], "non_personal");

    let orders: Vec<String> = c
        .query(
            "SELECT order_id::text FROM orders WHERE customer_id = $1 ORDER BY order_id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut exported: Vec<String> = v["tables"]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"]["value"].as_str().unwrap().to_string())
        .collect();
    exported.sort_by_key(|s| s.parse::<i64>().unwrap());
    assert_eq!(exported, orders);
    assert!(orders.len() >= 2);

    let title = text(
        c,
        "SELECT min(title) FROM opportunities WHERE customer_id = $1",
        id,
    )
    .await;
    assert!(v["tables"]["opportunities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["title"]["value"].as_str() == title.as_deref()));
    let language = text(
        c,
        "SELECT language FROM contact_preferences WHERE customer_id = $1",
        id,
    )
    .await;
    assert_eq!(
        v["tables"]["contact_preferences"][0]["language"]["value"].as_str(),
        language.as_deref()
    );
    let consents: i64 = c
        .query_one(
            "SELECT count(*) FROM consents WHERE customer_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        v["tables"]["consents"].as_array().unwrap().len() as i64,
        consents
    );
    assert!(v["tables"].get("sales_reps").is_none());

    assert_eq!(out.record.action, Action::Export);
    let reference = out.record.customer_ref.clone().unwrap();
    assert_eq!(reference.len(), 64);
    assert_eq!(
        reference,
        subject::customer_ref(c, policy, &id.to_string())
            .await
            .unwrap()
    );
    assert_ne!(
        reference,
        subject::customer_ref(c, policy, &(id + 1).to_string())
            .await
            .unwrap()
    );

    // The key is taken in its canonical form: the same subject, the same reference.
    let padded = subject::export(c, policy, &format!("00{id}"), "olivia")
        .await
        .unwrap();
    assert_eq!(
        padded.record.customer_ref.as_deref(),
        Some(reference.as_str())
    );
    assert_eq!(padded.value["subject"]["value"], id.to_string());

    for missing in ["999999", "not-a-number"] {
        let err = subject::export(c, policy, missing, "olivia").await;
        assert!(
            matches!(err, Err(SubjectError::UnknownSubject(_))),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn private_tables_are_closed_to_every_view_set_role() {
    let crm = crm_db("subject_private").await;
    let (c, policy) = (&crm.client, &crm.policy);
    subject::review_list(c, policy, "olivia").await.unwrap();
    let roles = policy.login_roles();
    assert!(roles.len() > 5);
    for role in roles {
        for table in [
            "corrections",
            "destruction_log",
            "subject_key",
            "anonymized_subjects",
        ] {
            let row = c
                .query_one(
                    "SELECT has_table_privilege($1, 'pgveil_private.' || $2, \
                     'SELECT, INSERT, UPDATE, DELETE')",
                    &[&role.name, &table],
                )
                .await
                .unwrap();
            assert!(!row.get::<_, bool>(0), "{} can use {table}", role.name);
        }
    }
    let standard = login(&crm.db, "veil_standard").await;
    let err = standard
        .query("SELECT * FROM pgveil_private.corrections", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
}

#[tokio::test]
async fn opt_out_hides_the_customer_from_the_purpose_view_set_and_opt_in_restores() {
    let crm = crm_db("subject_consent").await;
    let (c, policy) = (&crm.client, &crm.policy);
    let id = busy_customer(c).await;
    let marketing = login(&crm.db, "veil_marketing").await;
    let visible = |table: &'static str| {
        let marketing = &marketing;
        async move {
            let sql = format!("SELECT count(*) FROM {table} WHERE customer_id = $1");
            marketing
                .query_one(&sql, &[&id])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(visible("customers").await, 1);
    assert!(visible("orders").await >= 2);

    let rec = subject::opt_out(c, policy, &id.to_string(), "direct_marketing", "sam")
        .await
        .unwrap();
    assert_eq!(rec.action, Action::OptOut);
    assert_eq!(rec.purpose.as_deref(), Some("direct_marketing"));
    assert_eq!(visible("customers").await, 0);
    assert_eq!(visible("orders").await, 0);
    let granted: bool = c
        .query_one(
            "SELECT granted FROM consents WHERE customer_id = $1 AND purpose = 'direct_marketing'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!granted);

    subject::opt_in(c, policy, &id.to_string(), "direct_marketing", "sam")
        .await
        .unwrap();
    assert_eq!(visible("customers").await, 1);
    assert!(visible("orders").await >= 2);

    // An opt-in purpose without a consent row gets one.
    c.execute(
        "DELETE FROM consents WHERE customer_id = $1 AND purpose = 'profiling'",
        &[&id],
    )
    .await
    .unwrap();
    subject::opt_in(c, policy, &id.to_string(), "profiling", "sam")
        .await
        .unwrap();
    let granted: bool = c
        .query_one(
            "SELECT granted FROM consents WHERE customer_id = $1 AND purpose = 'profiling'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(granted);

    let err = subject::opt_out(c, policy, &id.to_string(), "telepathy", "sam")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SubjectError::UnknownPurpose { .. }));
    assert!(message.contains("telepathy") && message.contains("direct_marketing"));
    let err = subject::opt_out(c, policy, "999999", "direct_marketing", "sam").await;
    assert!(matches!(err, Err(SubjectError::UnknownSubject(_))));
}

async fn email(c: &Client, id: i64) -> Option<String> {
    text(c, "SELECT email FROM customers WHERE customer_id = $1", id).await
}

fn set(target: &str) -> Vec<Assignment> {
    vec![target.parse().unwrap()]
}

#[tokio::test]
async fn corrections_need_another_reviewer_and_a_current_value() {
    let crm = crm_db("subject_correct").await;
    let (c, policy) = (&crm.client, &crm.policy);
    let id = busy_customer(c).await;
    let sid = id.to_string();
    let before = email(c, id).await;

    let filed = subject::correct(
        c,
        policy,
        &sid,
        &set("customers.email=ann.new@example.org"),
        "sam",
    )
    .await
    .unwrap();
    let corr = filed.value[0].clone();
    assert_eq!(corr.status, "pending");
    assert_eq!(corr.old_value, before);
    assert_eq!(
        email(c, id).await,
        before,
        "a pending correction is not applied"
    );
    assert_eq!(filed.record.action, Action::Correct);
    assert_eq!(filed.record.columns, vec!["customers.email".to_string()]);
    let pending = subject::review_list(c, policy, "olivia").await.unwrap();
    assert_eq!(
        pending.value.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![corr.id]
    );
    assert_eq!(pending.record.action, Action::ReviewList);
    assert_eq!(pending.record.outcome, "1 pending corrections listed");

    let own = subject::approve(c, policy, corr.id, "sam").await;
    assert!(matches!(own, Err(SubjectError::SameReviewer(_))));
    assert_eq!(email(c, id).await, before);

    let done = subject::approve(c, policy, corr.id, "olivia")
        .await
        .unwrap();
    assert_eq!(done.value.status, "approved");
    assert_eq!(done.value.reviewed_by.as_deref(), Some("olivia"));
    assert_eq!(email(c, id).await.as_deref(), Some("ann.new@example.org"));
    let again = subject::approve(c, policy, corr.id, "olivia").await;
    assert!(matches!(again, Err(SubjectError::NotPending { .. })));

    // Rejected: data unchanged.
    let city = text(c, "SELECT city FROM customers WHERE customer_id = $1", id).await;
    let filed = subject::correct(c, policy, &sid, &set("customers.city=Atlantis"), "sam")
        .await
        .unwrap();
    let own = subject::reject(c, policy, filed.value[0].id, "sam", "no").await;
    assert!(matches!(own, Err(SubjectError::SameReviewer(_))));
    let rejected = subject::reject(c, policy, filed.value[0].id, "olivia", "no evidence")
        .await
        .unwrap();
    assert_eq!(rejected.value.status, "rejected");
    assert_eq!(rejected.value.reason.as_deref(), Some("no evidence"));
    assert_eq!(
        text(c, "SELECT city FROM customers WHERE customer_id = $1", id).await,
        city
    );

    // Stale: the value changed after the request was filed.
    let filed = subject::correct(
        c,
        policy,
        &sid,
        &set("contact_preferences.language=fr"),
        "sam",
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE contact_preferences SET language = 'xx' WHERE customer_id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let stale = subject::approve(c, policy, filed.value[0].id, "olivia").await;
    assert!(matches!(stale, Err(SubjectError::Stale(_))), "{stale:?}");
    assert_eq!(
        text(
            c,
            "SELECT language FROM contact_preferences WHERE customer_id = $1",
            id
        )
        .await
        .as_deref(),
        Some("xx")
    );

    // What cannot be corrected.
    for (target, why) in [
        ("customers.country=DE", "non_personal"),
        ("customers.customer_id=5", "subject key"),
        ("customers.shoe_size=44", "no such column"),
        ("orders.customer_id=5", "subject key"),
        ("opportunities.title=Deal", "rows in this table"),
        ("sales_reps.full_name=X", "not a policy table holding"),
        ("customers.date_of_birth=someday", "does not fit"),
    ] {
        let err = subject::correct(c, policy, &sid, &set(target), "sam")
            .await
            .unwrap_err();
        assert!(
            matches!(err, SubjectError::Column { .. }),
            "{target}: {err}"
        );
        assert!(err.to_string().contains(why), "{target}: {err}");
    }
    assert!("customers".parse::<Assignment>().is_err());
    // Failed requests filed nothing.
    let pending = subject::review_list(c, policy, "olivia").await.unwrap();
    assert_eq!(pending.value.len(), 1);
}

/// Every column of `table` that holds data about a person, by the policy.
fn personal_columns(policy: &Policy, c: &[String], table: &str) -> Vec<String> {
    c.iter()
        .filter(|col| {
            policy
                .column_def(table, col)
                .is_none_or(|(_, d, _)| d.class != Class::NonPersonal)
        })
        .cloned()
        .collect()
}

async fn columns(c: &Client, table: &str) -> Vec<String> {
    c.query(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Personal values of the customer's rows, as text, NULLs left out.
async fn personal_values(c: &Client, policy: &Policy, table: &str, cond: &str) -> Vec<String> {
    let cols = personal_columns(policy, &columns(c, table).await, table);
    let list: Vec<String> = cols.iter().map(|c| format!("{c}::text")).collect();
    let sql = format!(
        "SELECT ARRAY[{}] FROM {table} WHERE {cond}",
        list.join(", ")
    );
    let mut out = Vec::new();
    for row in c.query(&sql, &[]).await.unwrap() {
        let values: Vec<Option<String>> = row.get(0);
        out.extend(values.into_iter().flatten());
    }
    out
}

const SUBJECT_TABLES: [&str; 5] = [
    "customers",
    "contact_preferences",
    "opportunities",
    "orders",
    "consents",
];

#[tokio::test]
async fn erase_anonymizes_or_deletes_every_row_and_logs_without_personal_data() {
    let crm = crm_db("subject_erase").await;
    let (c, policy) = (&crm.client, &crm.policy);
    let id = busy_customer(c).await;
    let sid = id.to_string();
    subject::correct(c, policy, &sid, &set("customers.city=Nowhere"), "sam")
        .await
        .unwrap();
    let cond = format!("customer_id = {id}");
    let mut old_values = Vec::new();
    for table in SUBJECT_TABLES {
        old_values.extend(personal_values(c, policy, table, &cond).await);
    }
    // Values that identify the customer (ids, names, contact data).
    let identifying: Vec<String> = c
        .query_one(
            "SELECT ARRAY[account_no, first_name, last_name, email, phone, national_id, street] \
             FROM customers WHERE customer_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get::<_, Vec<Option<String>>>(0)
        .into_iter()
        .flatten()
        .collect();
    let order_ids: Vec<i64> = c
        .query("SELECT order_id FROM orders WHERE customer_id = $1", &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stats = "SELECT (SELECT count(*) FROM customers)::text || '/' || \
                 (SELECT count(*) || ':' || sum(total) FROM orders) || '/' || \
                 (SELECT count(*) || ':' || sum(amount) FROM opportunities)";
    let stats_before: String = c.query_one(stats, &[]).await.unwrap().get(0);

    let out = subject::erase(c, policy, &sid, "olivia").await.unwrap();
    let report = &out.value;
    assert_eq!(out.record.action, Action::Erase);

    // No row holds the customer's key any more.
    for table in SUBJECT_TABLES {
        let sql = format!("SELECT count(*) FROM {table} WHERE customer_id = $1");
        let n: i64 = c.query_one(&sql, &[&id]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table} still holds customer {id}");
    }
    // The anonymized rows (found through the kept orders) hold no personal data.
    let new_key: i64 = c
        .query_one(
            "SELECT DISTINCT customer_id FROM orders WHERE order_id = ANY ($1)",
            &[&order_ids],
        )
        .await
        .unwrap()
        .get(0);
    assert!(new_key < 0);
    let anon = format!("customer_id = {new_key}");
    for table in SUBJECT_TABLES {
        for value in personal_values(c, policy, table, &anon).await {
            let constant =
                value == "erased" || value.starts_with("erased-") || value == new_key.to_string();
            assert!(constant, "{table} keeps personal value {value:?}");
            assert!(!old_values.contains(&value) || value == "erased", "{value}");
        }
    }
    for table in ["contact_preferences", "consents"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE {anon}");
        let n: i64 = c.query_one(&sql, &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table} rows should be deleted");
    }
    // Statistics are kept: same number of customers, orders and amounts.
    let stats_after: String = c.query_one(stats, &[]).await.unwrap().get(0);
    assert_eq!(stats_after, stats_before);
    // The correction request went with the data.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pgveil_private.corrections WHERE customer = $1",
            &[&sid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // The destruction record exists and holds no personal data.
    let row = c
        .query_one(
            "SELECT to_jsonb(d)::text, customer_ref, actor, trigger, tables::text \
             FROM pgveil_private.destruction_log d WHERE id = $1",
            &[&report.log_id],
        )
        .await
        .unwrap();
    let record: String = row.get(0);
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some(report.customer_ref.as_str())
    );
    assert_eq!(row.get::<_, String>(2), "olivia");
    assert_eq!(row.get::<_, String>(3), "request");
    let tables: serde_json::Value = serde_json::from_str(&row.get::<_, String>(4)).unwrap();
    let orders = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "orders")
        .unwrap();
    assert_eq!(orders["rows"], order_ids.len());
    assert_eq!(orders["action"], "anonymize");
    for value in &identifying {
        assert!(!record.contains(value.as_str()), "log holds {value}");
    }
    assert!(!record.contains(&format!("\"{sid}\"")));
    assert!(
        !record.contains(&new_key.to_string()),
        "log links the new key"
    );
    assert_eq!(
        report
            .tables
            .iter()
            .find(|t| t.table == "consents")
            .map(|t| t.action),
        Some(EraseRule::Delete)
    );

    // The customer is gone; the anonymized row cannot be erased again.
    let again = subject::erase(c, policy, &sid, "olivia").await;
    assert!(matches!(again, Err(SubjectError::UnknownSubject(_))));
    let anon_again = subject::erase(c, policy, &new_key.to_string(), "olivia").await;
    assert!(
        matches!(anon_again, Err(SubjectError::Rule(_))),
        "{anon_again:?}"
    );
    let export = subject::export(c, policy, &sid, "olivia").await;
    assert!(matches!(export, Err(SubjectError::UnknownSubject(_))));
}

#[tokio::test]
async fn retention_dry_run_changes_nothing_and_real_run_erases_only_inactive_customers() {
    let crm = crm_db("subject_retention").await;
    let (c, policy) = (&crm.client, &crm.policy);
    let inactive = "last_active_at < now() - interval '3 years'";
    let expected: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM customers WHERE {inactive}"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        expected > 0 && expected < 300,
        "{expected} inactive customers"
    );
    let digest = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM (
        SELECT c::text AS t FROM customers c UNION ALL SELECT o::text FROM orders o
        UNION ALL SELECT p::text FROM opportunities p UNION ALL SELECT k::text FROM consents k
        UNION ALL SELECT x::text FROM contact_preferences x) s";
    let active = format!(
        "SELECT md5(string_agg(c::text, ',' ORDER BY customer_id)) FROM customers c WHERE NOT ({inactive})"
    );
    let before: String = c.query_one(digest, &[]).await.unwrap().get(0);
    let active_before: String = c.query_one(&active, &[]).await.unwrap().get(0);

    let dry = subject::retention_run(c, policy, true, "cron")
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.subjects, expected as u64);
    assert_eq!(dry.records.len(), 1);
    assert_eq!(
        dry.records[0].outcome,
        format!(
            "dry run: {expected} subjects and {} rows would be erased",
            dry.tables.iter().map(|t| t.rows).sum::<u64>()
        )
    );
    let after_dry: String = c.query_one(digest, &[]).await.unwrap().get(0);
    assert_eq!(after_dry, before, "a dry run changed data");
    let logged: i64 = c
        .query_one("SELECT count(*) FROM pgveil_private.destruction_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 0);

    let real = subject::retention_run(c, policy, false, "cron")
        .await
        .unwrap();
    assert_eq!(real.subjects, expected as u64);
    assert_eq!(real.tables, dry.tables, "dry run predicted other counts");
    assert_eq!(real.records.len(), expected as usize);
    assert!(real.records.iter().all(|r| r.action == Action::Retention));
    let customers = real.tables.iter().find(|t| t.table == "customers").unwrap();
    assert_eq!(customers.rows, expected as u64);

    // Active customers untouched; inactive ones kept without personal data.
    let active_after: String = c.query_one(&active, &[]).await.unwrap().get(0);
    assert_eq!(active_after, active_before);
    let left: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM customers WHERE {inactive} AND (customer_id > 0 \
                 OR email IS NOT NULL OR national_id IS NOT NULL OR first_name <> 'erased' \
                 OR date_of_birth IS NOT NULL OR health_notes IS NOT NULL)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let total: i64 = c
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 300);
    assert_eq!(count(c, RETENTION_RECORDS).await, expected);

    // Anonymized rows are not erased twice.
    let second = subject::retention_run(c, policy, false, "cron")
        .await
        .unwrap();
    assert_eq!(second.subjects, 0);
}

/// A pgveil.toml for database `db` of the test cluster (administrator
/// login, the example policy, a privacy log in `log/`); returns its path
/// and the live log file.
fn cli_config(db: &str) -> (PathBuf, PathBuf) {
    let cluster = common::cluster();
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::create_dir(dir.join("log")).unwrap();
    std::fs::write(dir.join("backend.pw"), cluster.password()).unwrap();
    std::fs::write(dir.join("role.secret"), SECRET).unwrap();
    let policies = std::fs::canonicalize("policies").unwrap();
    let toml = format!(
        "policy = \"{}\"\n\n[backend]\nhost = \"{}\"\nport = {}\ndatabase = \"{db}\"\nuser = \"{}\"\n\
         password_file = \"backend.pw\"\nrole_secret_file = \"role.secret\"\ntls = \"disable\"\n\n\
         [audit]\nfile = \"log/pgveil-audit.jsonl\"\n",
        policies.display(),
        cluster.host(),
        cluster.port(),
        cluster.superuser(),
    );
    let path = dir.join("pgveil.toml");
    std::fs::write(&path, toml).unwrap();
    (path, dir.join("log").join("pgveil-audit.jsonl"))
}

/// Runs the pgveil binary with `args`, then `--config config --actor actor`.
fn pgveil(config: &Path, actor: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--actor", actor])
        .output()
        .unwrap()
}

/// Like [`pgveil`]; the command must succeed. Returns the JSON documents
/// it printed.
fn pgveil_ok(config: &Path, actor: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = pgveil(config, actor, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgveil {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::Deserializer::from_str(&stdout)
        .into_iter::<serde_json::Value>()
        .map(|v| v.unwrap())
        .collect()
}

/// The records of a privacy log file.
fn log_records(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn cli_requests_land_in_the_privacy_log_and_keep_its_chain() {
    let crm = crm_db("subject_cli").await;
    let (c, policy) = (&crm.client, &crm.policy);
    let (config, log) = cli_config(&crm.db);
    let id = busy_customer(c).await;
    let sid = id.to_string();
    let reference = subject::customer_ref(c, policy, &sid).await.unwrap();

    let export = pgveil_ok(
        &config,
        "olivia",
        &["subject", "export", "--customer", &sid],
    );
    assert_eq!(
        export[0]["tables"]["customers"][0]["email"]["value"].as_str(),
        email(c, id).await.as_deref()
    );
    let purpose = ["--purpose", "direct_marketing"];
    let opt_out = ["subject", "opt-out", "--customer", &sid];
    pgveil_ok(&config, "sam", &[&opt_out[..], &purpose[..]].concat());
    let opt_in = ["subject", "opt-in", "--customer", &sid];
    pgveil_ok(&config, "sam", &[&opt_in[..], &purpose[..]].concat());
    let correct = |value: &str| {
        let set = format!("customers.city={value}");
        let filed = pgveil_ok(
            &config,
            "sam",
            &["subject", "correct", "--customer", &sid, "--set", &set],
        );
        filed[0][0]["id"].as_i64().unwrap().to_string()
    };
    let first = correct("Kaunas");
    pgveil_ok(&config, "olivia", &["subject", "review", "list"]);
    pgveil_ok(&config, "olivia", &["subject", "review", "approve", &first]);
    let second = correct("Atlantis");
    let reject = [
        "subject", "review", "reject", &second, "--reason", "no proof",
    ];
    pgveil_ok(&config, "olivia", &reject);
    let unknown = pgveil(
        &config,
        "olivia",
        &["subject", "export", "--customer", "999999"],
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no data subject with key 999999"));
    pgveil_ok(&config, "olivia", &["subject", "erase", "--customer", &sid]);

    // Retention, dry and real, as `pgveil retention run`.
    let expired = "SELECT count(*) FROM customers WHERE last_active_at < now() - interval '3 years' \
                   AND customer_id::text NOT IN (SELECT key FROM pgveil_private.anonymized_subjects)";
    let expected = count(c, expired).await;
    assert!(expected > 0);
    let dry = pgveil_ok(&config, "cron", &["retention", "run", "--dry-run"]);
    assert_eq!(dry[0]["subjects"], expected);
    let real = pgveil_ok(&config, "cron", &["retention", "run"]);
    assert_eq!(real[0]["subjects"], expected);
    assert_eq!(real[0]["tables"], dry[0]["tables"]);
    assert_eq!(count(c, expired).await, 0, "expired customers left");
    let personal_left = "SELECT count(*) FROM customers \
        WHERE last_active_at < now() - interval '3 years' \
        AND (customer_id > 0 OR email IS NOT NULL OR first_name <> 'erased')";
    assert_eq!(count(c, personal_left).await, 0);
    assert_eq!(count(c, RETENTION_RECORDS).await, expected);

    // The log's chain holds every request, as `pgveil audit verify` says.
    let verify = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .arg("audit")
        .arg("verify")
        .arg(&log)
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{verdict}");
    assert!(verdict.contains("OK: the chain is intact"), "{verdict}");

    let records = log_records(&log);
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["verdict"].as_str().unwrap(),
                r["user"].as_str().unwrap(),
            )
        })
        .collect();
    let mut want = vec![
        ("export", "done", "olivia"),
        ("opt_out", "done", "sam"),
        ("opt_in", "done", "sam"),
        ("correct", "done", "sam"),
        ("review_list", "done", "olivia"),
        ("approve", "done", "olivia"),
        ("correct", "done", "sam"),
        ("reject", "done", "olivia"),
        ("export", "failed", "olivia"),
        ("erase", "done", "olivia"),
        ("retention", "done", "cron"),
    ];
    want.extend((0..expected).map(|_| ("retention", "done", "cron")));
    assert_eq!(summary, want);
    for r in &records {
        assert_eq!(r["event"], "subject");
        assert_eq!(r["application_name"], "pgveil subject");
    }
    for i in [0, 1, 2, 3, 5, 6, 7, 9] {
        assert_eq!(
            records[i]["subject_ref"],
            reference.as_str(),
            "{}",
            records[i]
        );
    }
    assert_eq!(records[1]["purpose"], "direct_marketing");
    assert_eq!(
        records[1]["tables"],
        serde_json::json!([{ "table": "public.consents", "access": "write",
            "classification": "non_personal",
            "columns": [{ "column": "granted", "classification": "non_personal" }] }])
    );
    assert_eq!(
        records[3]["tables"],
        serde_json::json!([{ "table": "public.customers", "access": "read",
            "classification": "personal",
            "columns": [{ "column": "city", "classification": "personal" }] }])
    );
    let exported = &records[0]["tables"][0];
    assert_eq!(exported["table"], "public.customers");
    assert_eq!(exported["access"], "read");
    assert_eq!(
        exported["classification"],
        "identity, non_personal, personal, sensitive"
    );
    assert_eq!(records[8]["reason"], "no data subject with this key");
    assert!(!records[8].to_string().contains("999999"));
    assert!(records[9]["outcome"]
        .as_str()
        .unwrap()
        .starts_with("erased; destruction record"));
    assert!(records[10]["outcome"]
        .as_str()
        .unwrap()
        .starts_with(&format!("dry run: {expected} subjects")));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(&format!("\"{sid}\"")),
        "the log names the subject key"
    );
}

/// `pgveil subject serve` on a free port with `token`; returns the child
/// (killed on drop) and its address.
struct Portal {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_portal(config: &Path, token: &str) -> Portal {
    use std::io::BufRead;
    let token_file = config.with_file_name("portal.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["--log-json", "subject", "serve", "--listen", "127.0.0.1:0"])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--config")
        .arg(config)
        .args(["--actor", "portal"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("subject serve ended before it listened")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "pgveil subject API listening" {
            break event["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Portal { child, addr }
}

/// Status and JSON body of one HTTP/1.1 request.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn the_http_api_serves_a_portal_and_logs_every_request() {
    let crm = crm_db("subject_http").await;
    let c = &crm.client;
    let (config, log) = cli_config(&crm.db);
    let token = "portal-token-0123456789";
    let portal = start_portal(&config, token);
    let addr = portal.addr;
    let id = busy_customer(c).await;
    let base = format!("/v1/subjects/{id}");
    let api = |method: &'static str, path: String, body: &'static str| async move {
        http(addr, method, &path, Some(token), body).await
    };

    // Without the token, or with another one, nothing is done or logged.
    let (status, _) = http(addr, "GET", &base, None, "").await;
    assert_eq!(status, 401);
    let (status, _) = http(addr, "GET", &base, Some("portal-token-0123456780"), "").await;
    assert_eq!(status, 401);
    let erasure = format!("{base}/erasure");
    let (status, _) = http(addr, "POST", &erasure, Some("nope"), "").await;
    assert_eq!(status, 401);
    assert!(email(c, id).await.is_some());

    let (status, export) = api("GET", base.clone(), "").await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(
        export["tables"]["customers"][0]["email"]["value"].as_str(),
        email(c, id).await.as_deref()
    );
    let (status, unknown) = api("GET", "/v1/subjects/999999".into(), "").await;
    assert_eq!(status, 404);
    assert!(unknown["error"]
        .as_str()
        .unwrap()
        .contains("no data subject with key 999999"));

    let marketing = login(&crm.db, "veil_marketing").await;
    let visible = || async {
        marketing
            .query_one(
                "SELECT count(*) FROM customers WHERE customer_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let (status, _) = api("POST", format!("{base}/opt-out/direct_marketing"), "").await;
    assert_eq!(status, 200);
    assert_eq!(visible().await, 0);
    let (status, _) = api("POST", format!("{base}/opt-in/direct_marketing"), "").await;
    assert_eq!(status, 200);
    assert_eq!(visible().await, 1);
    let (status, unknown) = api("POST", format!("{base}/opt-out/telepathy"), "").await;
    assert_eq!(status, 400);
    assert!(unknown["error"].as_str().unwrap().contains("telepathy"));

    // A correction waits for a reviewer; staff approve it on the command line.
    let city = "SELECT city FROM customers WHERE customer_id = $1";
    let before = text(c, city, id).await;
    let (status, filed) = api(
        "POST",
        format!("{base}/corrections"),
        r#"{"customers.city": "Kaunas"}"#,
    )
    .await;
    assert_eq!(status, 202, "{filed}");
    assert_eq!(text(c, city, id).await, before);
    let correction = filed[0]["id"].as_i64().unwrap().to_string();
    pgveil_ok(
        &config,
        "olivia",
        &["subject", "review", "approve", &correction],
    );
    assert_eq!(text(c, city, id).await.as_deref(), Some("Kaunas"));
    for bad in [
        r#"["customers.city"]"#,
        r#"{"city": "x"}"#,
        "{}",
        "not json",
    ] {
        let (status, answer) = api("POST", format!("{base}/corrections"), bad).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    let (status, _) = api("DELETE", base.clone(), "").await;
    assert_eq!(status, 404);

    let (status, erased) = api("POST", erasure, "").await;
    assert_eq!(status, 200, "{erased}");
    let left = format!("SELECT count(*) FROM customers WHERE customer_id = {id}");
    assert_eq!(count(c, &left).await, 0, "the customer's row keeps its key");
    let (status, _) = api("GET", base.clone(), "").await;
    assert_eq!(status, 404, "the erased key still exports");

    let summary: Vec<(String, String, String)> = log_records(&log)
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap().to_owned();
            (field("action"), field("verdict"), field("user"))
        })
        .collect();
    let want = [
        ("export", "done", "portal"),
        ("export", "failed", "portal"),
        ("opt_out", "done", "portal"),
        ("opt_in", "done", "portal"),
        ("opt_out", "failed", "portal"),
        ("correct", "done", "portal"),
        ("approve", "done", "olivia"),
        ("erase", "done", "portal"),
        ("export", "failed", "portal"),
    ]
    .map(|(a, v, u)| (a.to_owned(), v.to_owned(), u.to_owned()));
    assert_eq!(summary, want);
    let verify = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
