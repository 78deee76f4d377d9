//! `views::apply` against a real PostgreSQL: install the example CRM policy,
//! then log in as each view-set role and check what it sees and may do.

mod common;

use std::path::{Path, PathBuf};

use pgveil::policy::{Policy, Source};
use pgveil::views::{self, hmac_sha256, login_password, mask_key, Severity};
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, NoTls};

const SECRET: &[u8] = b"test master secret";

/// A fresh database in the shared test cluster, with ways to log in to it.
struct Cluster {
    db: String,
}

impl Cluster {
    async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let shared = common::cluster();
        let conf = format!(
            "host={} port={} user={user} password={password} dbname={db}",
            shared.host(),
            shared.port()
        );
        let (client, conn) = tokio_postgres::connect(&conf, NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn admin(&self, db: &str) -> Client {
        let shared = common::cluster();
        self.connect(shared.superuser(), shared.password(), db)
            .await
            .unwrap()
    }

    async fn role(&self, role: &str) -> Client {
        self.connect(role, &login_password(SECRET, role), &self.db)
            .await
            .unwrap_or_else(|e| panic!("login as {role}: {e}"))
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

const ROWS: &str = "
INSERT INTO sales_reps VALUES (1, 'Rita North', 'rita@corp.example', 'north', 5.00),
                              (2, 'Sid South', 'sid@corp.example', 'south', 4.50);
INSERT INTO customers (customer_id, account_no, first_name, last_name, email, phone, national_id,
    date_of_birth, gender, annual_income, street, city, postal_code, country, region,
    ethnicity, religion, health_notes, date_of_death, rep_id) VALUES
 (1, 'ACC-1', 'Anna', 'Adams', 'anna@mail.example', '+49 170 1234567', 'NID-1', '1980-05-17', 'f', 55000.00, 'Main St 1', 'Berlin', '10115', 'DE', 'north', 'e1', 'r1', 'asthma', NULL, 1),
 (2, 'ACC-2', 'Ben', 'Brown', 'ben@web.example', '+49 171 7654321', 'NID-2', '1975-11-02', 'm', 72000.50, 'Elm St 2', 'Hamburg', '20095', 'DE', 'north', 'e2', 'r2', NULL, '2020-01-01', 1),
 (3, 'ACC-3', 'Cleo', 'Chen', 'cleo@mail.example', '+33 6 11223344', 'NID-3', '1990-02-28', 'f', 48000.00, 'Rue 3', 'Lyon', '69001', 'FR', 'south', 'e3', 'r3', NULL, NULL, 2),
 (4, 'ACC-4', 'Dan', 'Diaz', 'dan@web.example', '+34 600 111222', 'NID-4', '1968-07-04', 'm', 91000.00, 'Calle 4', 'Madrid', '28001', 'ES', 'south', 'e4', 'r4', NULL, NULL, 2);
INSERT INTO contact_preferences VALUES (1, 'email', true, NULL, 'de'), (2, 'phone', false, 'morning', 'de'),
                                       (3, 'email', true, NULL, 'fr'), (4, 'post', false, NULL, 'es');
INSERT INTO opportunities VALUES (10, 1, 1, 'Upgrade', 'lead', 1200.00, '2024-01-10', NULL),
                                 (11, 2, 1, 'Add-on', 'won', 800.00, '2024-02-01', '2024-03-01'),
                                 (12, 3, 2, 'Renewal', 'won', 5300.00, '2024-02-11', '2024-02-20');
INSERT INTO orders VALUES (100, 1, '2024-03-15 10:00+00', 99.90, 'placed'),
                          (101, 1, '2024-04-02 12:00+00', 10.00, 'shipped'),
                          (102, 2, '2024-04-03 12:00+00', 20.00, 'placed'),
                          (103, 3, '2024-05-20 09:30+00', 30.00, 'delivered'),
                          (104, 4, '2024-06-01 08:00+00', 40.00, 'returned');
INSERT INTO consents (customer_id, purpose, granted) VALUES
 (1, 'direct_marketing', true), (2, 'direct_marketing', false),
 (3, 'third_party_disclosure', true), (4, 'third_party_disclosure', false);
";

async fn strings(c: &Client, sql: &str) -> Vec<Option<String>> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn one(c: &Client, sql: &str) -> Option<String> {
    let mut v = strings(c, sql).await;
    assert_eq!(v.len(), 1, "{sql} returned {v:?}");
    v.remove(0)
}

async fn ids(c: &Client, sql: &str) -> Vec<i64> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn sqlstate(c: &Client, sql: &str) -> String {
    match c.batch_execute(sql).await {
        Ok(()) => panic!("{sql} succeeded but must fail"),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_default(),
    }
}

async fn columns(c: &Client, schema: &str, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position"
    );
    strings(c, &sql).await.into_iter().flatten().collect()
}

fn policy() -> Policy {
    Policy::load(&[repo("policies")]).unwrap()
}

async fn setup() -> (Cluster, Client) {
    let cluster = Cluster {
        db: common::fresh_database("views_apply").await,
    };
    let admin = cluster.admin(&cluster.db).await;
    let schema = std::fs::read_to_string(repo("examples/crm/schema.sql")).unwrap();
    admin.batch_execute(&schema).await.unwrap();
    admin.batch_execute(ROWS).await.unwrap();
    (cluster, admin)
}

#[tokio::test]
async fn views_apply_end_to_end() {
    let (cluster, admin) = setup().await;
    let policy = policy();

    let findings = views::check(&admin, &policy).await.unwrap();
    let errors: Vec<_> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    let first = views::apply(&admin, &policy, SECRET).await.unwrap();
    assert!(first.changed());
    let second = views::apply(&admin, &policy, SECRET).await.unwrap();
    assert!(
        second.changes.is_empty(),
        "second apply changed: {:#?}",
        second.changes
    );
    assert_eq!(
        views::installed_fingerprint(&admin, &policy).await.unwrap(),
        Some(views::fingerprint(&policy))
    );

    standard(&cluster).await;
    personal(&cluster).await;
    anonymous(&cluster).await;
    opt_out(&cluster).await;
    selective(&cluster).await;
    sales(&cluster).await;
    base_tables_denied(&cluster, &policy).await;
    index_scans(&cluster).await;
    drift(&cluster, &admin, &policy).await;
}

/// Searches through the views use the base tables' indexes: a standard view
/// (no row filter) is pulled up into the query, a masked indexed column has
/// its index over the mask, and a row-filtered view still pushes its
/// caller's key lookups down to the base table's scan.
async fn index_scans(cluster: &Cluster) {
    let plan = |role: &'static str, sql: &'static str| async move {
        let c = cluster.role(role).await;
        c.batch_execute("SET enable_seqscan = off").await.unwrap();
        strings(&c, &format!("EXPLAIN (COSTS OFF) {sql}"))
            .await
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n")
    };
    let point = plan(
        "veil_standard",
        "SELECT first_name, email FROM customers WHERE customer_id = 1",
    )
    .await;
    assert!(point.contains("Index Scan using customers_pkey"), "{point}");
    assert!(!point.contains("Subquery Scan"), "{point}");
    let search = plan(
        "veil_standard",
        "SELECT customer_id FROM customers WHERE email LIKE '***@mail%'",
    )
    .await;
    assert!(search.contains("pgveil_mask_customers_email_"), "{search}");
    let filtered = plan(
        "veil_sales__region_north",
        "SELECT first_name FROM customers WHERE customer_id = 1",
    )
    .await;
    // The key lookup runs inside the barrier, on the base table's scan (a
    // qual left above it would name the view: customers.customer_id).
    assert!(filtered.contains("Index"), "{filtered}");
    assert!(filtered.contains(": (customer_id = 1)"), "{filtered}");
}

async fn standard(cluster: &Cluster) {
    let c = cluster.role("veil_standard").await;
    let cols = columns(&c, "veil_standard", "customers").await;
    for hidden in ["ethnicity", "religion", "health_notes", "date_of_death"] {
        assert!(
            !cols.contains(&hidden.to_string()),
            "{hidden} visible: {cols:?}"
        );
    }
    assert!(cols.contains(&"email".to_string()));
    let row = c
        .query_one(
            "SELECT first_name, email, phone, national_id, date_of_birth::text, annual_income::text, \
             street, postal_code, city FROM customers WHERE customer_id = 1",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<Option<String>> = (0..9).map(|i| row.get(i)).collect();
    let want = [
        Some("Anna"),
        Some("***@mail.example"),
        Some("************567"),
        None,
        Some("1980-01-01"),
        Some("50000.00"),
        None,
        Some("10"),
        Some("Berlin"),
    ];
    assert_eq!(got, want.map(|s| s.map(String::from)).to_vec());
    // Filters see masked values only (attack 2).
    let n = |sql: &'static str| {
        let c = &c;
        async move { one(c, sql).await }
    };
    assert_eq!(
        n("SELECT count(*)::text FROM customers WHERE date_of_birth = '1980-05-17'")
            .await
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        n("SELECT count(*)::text FROM customers WHERE date_of_birth = '1980-01-01'")
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        n("SELECT count(*)::text FROM customers WHERE email LIKE 'anna%'")
            .await
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        n("SELECT count(*)::text FROM customers WHERE annual_income = 55000")
            .await
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        n("SELECT count(*)::text FROM customers WHERE annual_income BETWEEN 50000 AND 59999")
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        n("SELECT count(*)::text FROM customers WHERE annual_income > 50000")
            .await
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        sqlstate(&c, "SELECT health_notes FROM customers").await,
        "42703"
    );
    assert_eq!(
        sqlstate(&c, "SELECT * FROM pgveil_private.keys").await,
        "42501"
    );
    assert_eq!(
        sqlstate(&c, "INSERT INTO orders VALUES (999, 1, now(), 1, 'x')").await,
        "42501"
    );
}

async fn personal(cluster: &Cluster) {
    let c = cluster.role("veil_personal").await;
    let row = c
        .query_one(
            "SELECT email, health_notes, date_of_birth::text, national_id FROM customers WHERE customer_id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "anna@mail.example");
    assert_eq!(row.get::<_, &str>(1), "asthma");
    assert_eq!(row.get::<_, &str>(2), "1980-05-17");
    assert_eq!(row.get::<_, &str>(3), "NID-1");
}

fn pseudonym(view_set: &str, domain_and_value: &str) -> i64 {
    let h = hmac_sha256(
        &mask_key(SECRET, view_set, "pseudonym"),
        domain_and_value.as_bytes(),
    );
    i64::from_be_bytes(h[..8].try_into().unwrap())
}

async fn anonymous(cluster: &Cluster) {
    let c = cluster.role("veil_analytics").await;
    let cols = columns(&c, "veil_analytics", "customers").await;
    for hidden in [
        "first_name",
        "last_name",
        "email",
        "phone",
        "national_id",
        "street",
        "health_notes",
    ] {
        assert!(
            !cols.contains(&hidden.to_string()),
            "{hidden} visible: {cols:?}"
        );
    }
    let pseudonyms = ids(&c, "SELECT customer_id FROM customers ORDER BY customer_id").await;
    assert_eq!(pseudonyms.len(), 4);
    assert!(
        pseudonyms.iter().all(|p| !(1..=4).contains(p)),
        "{pseudonyms:?}"
    );
    // Keyed: equals HMAC-SHA-256 under the view set's key, not an unkeyed hash.
    assert!(pseudonyms.contains(&pseudonym("analytics", "customer_id:1")));
    let unkeyed =
        |v: &str| i64::from_be_bytes(Sha256::digest(v.as_bytes())[..8].try_into().unwrap());
    assert!(!pseudonyms.contains(&unkeyed("1")) && !pseudonyms.contains(&unkeyed("customer_id:1")));
    // Stable across tables: the pseudonymized keys join.
    let joined = one(
        &c,
        "SELECT count(*)::text FROM customers c JOIN orders o ON o.customer_id = c.customer_id",
    )
    .await;
    assert_eq!(joined.as_deref(), Some("5"));
    let per = ids(&c, "SELECT count(*) FROM orders o JOIN customers c USING (customer_id) GROUP BY c.customer_id ORDER BY 1").await;
    assert_eq!(per, vec![1, 1, 1, 2]);
    // Generalization.
    assert_eq!(
        strings(
            &c,
            "SELECT date_of_birth::text || ' ' || postal_code FROM customers ORDER BY 1"
        )
        .await,
        [
            "1968-01-01 28",
            "1975-01-01 20",
            "1980-01-01 10",
            "1990-01-01 69"
        ]
        .map(|s| Some(s.to_string()))
        .to_vec()
    );
    assert_eq!(
        one(
            &c,
            "SELECT amount::text FROM opportunities WHERE opportunity_id = 10"
        )
        .await
        .as_deref(),
        Some("1000.00")
    );
    assert_eq!(
        one(&c, "SELECT to_char(ordered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM orders WHERE order_id = 100").await.as_deref(),
        Some("2024-03-01")
    );
    // Noise: bounded, deterministic, not the raw value.
    let noisy = strings(
        &c,
        "SELECT annual_income::text FROM customers ORDER BY customer_id",
    )
    .await;
    assert_eq!(
        noisy,
        strings(
            &c,
            "SELECT annual_income::text FROM customers ORDER BY customer_id"
        )
        .await
    );
    let raw = [55000.00, 72000.50, 48000.00, 91000.00];
    let values: Vec<f64> = noisy
        .iter()
        .map(|v| v.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(
        values
            .iter()
            .all(|v| raw.iter().all(|r| (v - r).abs() > 0.001)),
        "{values:?}"
    );
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let mut raw_sorted = raw;
    raw_sorted.sort_by(f64::total_cmp);
    for (v, r) in sorted.iter().zip(raw_sorted) {
        assert!((v - r).abs() <= r * 0.05 + 0.01, "{v} vs {r}");
    }
    assert_eq!(
        sqlstate(&c, "UPDATE customers SET region = 'x'").await,
        "42501"
    );
}

async fn opt_out(cluster: &Cluster) {
    let c = cluster.role("veil_marketing").await;
    assert_eq!(
        ids(&c, "SELECT customer_id FROM customers ORDER BY 1").await,
        vec![1, 3, 4]
    );
    assert_eq!(
        ids(&c, "SELECT order_id FROM orders ORDER BY 1").await,
        vec![100, 101, 103, 104]
    );
    assert_eq!(
        ids(&c, "SELECT opportunity_id FROM opportunities ORDER BY 1").await,
        vec![10, 12]
    );
    assert_eq!(
        ids(&c, "SELECT customer_id FROM contact_preferences ORDER BY 1").await,
        vec![1, 3, 4]
    );
    assert_eq!(
        one(&c, "SELECT email FROM customers WHERE customer_id = 1")
            .await
            .as_deref(),
        Some("anna@mail.example")
    );
    assert_eq!(
        ids(&c, "SELECT rep_id::bigint FROM sales_reps ORDER BY 1").await,
        vec![1, 2]
    );
}

async fn selective(cluster: &Cluster) {
    let c = cluster.role("veil_partner_export").await;
    let cols = columns(&c, "veil_partner_export", "customers").await;
    assert!(
        !cols.contains(&"email".to_string()) && !cols.contains(&"phone".to_string()),
        "{cols:?}"
    );
    assert!(!cols.contains(&"health_notes".to_string()));
    // Opt-in purpose: only customer 3 granted third_party_disclosure.
    let row = c
        .query_one(
            "SELECT customer_id, first_name, last_name, city, date_of_birth::text, annual_income::text FROM customers",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        pseudonym("partner_export", "customer_id:3")
    );
    assert_ne!(
        row.get::<_, i64>(0),
        pseudonym("analytics", "customer_id:3"),
        "pseudonyms link exports"
    );
    assert_eq!(row.get::<_, &str>(1), "Cleo");
    assert_eq!(row.get::<_, &str>(2), "Chen");
    assert_eq!(row.get::<_, &str>(3), "Lyon");
    assert_eq!(row.get::<_, &str>(4), "1990-01-01");
    assert_eq!(row.get::<_, &str>(5), "48000.00");
    let orders = ids(
        &c,
        "SELECT o.order_id FROM orders o JOIN customers c USING (customer_id)",
    )
    .await;
    assert_eq!(orders, vec![103]);
    // opportunities.customer_id is not in the anonymize list: kept as is.
    assert_eq!(
        ids(&c, "SELECT customer_id FROM opportunities").await,
        vec![3]
    );
}

async fn sales(cluster: &Cluster) {
    let north = cluster.role("veil_sales__region_north").await;
    let south = cluster.role("veil_sales__region_south").await;
    assert_eq!(
        ids(&north, "SELECT customer_id FROM customers ORDER BY 1").await,
        vec![1, 2]
    );
    assert_eq!(
        ids(&south, "SELECT customer_id FROM customers ORDER BY 1").await,
        vec![3, 4]
    );
    assert_eq!(
        ids(
            &north,
            "SELECT opportunity_id FROM opportunities ORDER BY 1"
        )
        .await,
        vec![10, 11]
    );
    assert_eq!(
        ids(&north, "SELECT order_id FROM orders ORDER BY 1").await,
        vec![100, 101, 102]
    );
    // Masking applies as in standard.
    assert_eq!(
        one(&north, "SELECT email FROM customers WHERE customer_id = 1")
            .await
            .as_deref(),
        Some("***@mail.example")
    );
    // Writes stay inside the region (WITH CHECK OPTION).
    north
        .batch_execute("INSERT INTO customers (customer_id, account_no, first_name, last_name, country, region) VALUES (5, 'ACC-5', 'Eve', 'Evans', 'DE', 'north')")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(&north, "INSERT INTO customers (customer_id, account_no, first_name, last_name, country, region) VALUES (6, 'ACC-6', 'Fay', 'Fox', 'DE', 'south')").await,
        "44000"
    );
    assert_eq!(
        sqlstate(
            &north,
            "UPDATE customers SET region = 'south' WHERE customer_id = 1"
        )
        .await,
        "44000"
    );
    let n = north
        .execute(
            "UPDATE customers SET city = 'Potsdam' WHERE customer_id = 3",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 0, "a rep updated a customer of another region");
    let n = north
        .execute(
            "UPDATE customers SET city = 'Potsdam' WHERE customer_id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        sqlstate(
            &north,
            "INSERT INTO opportunities VALUES (13, 3, 2, 'Steal', 'lead', 1, '2024-01-01', NULL)"
        )
        .await,
        "44000"
    );
    // Masked and sensitive columns are not writable.
    assert_eq!(
        sqlstate(
            &north,
            "UPDATE customers SET email = 'x@y' WHERE customer_id = 1"
        )
        .await,
        "0A000"
    );
    assert_eq!(
        sqlstate(
            &north,
            "UPDATE customers SET health_notes = 'x' WHERE customer_id = 1"
        )
        .await,
        "42703"
    );
    assert_eq!(
        sqlstate(&north, "UPDATE orders SET total = 0").await,
        "42501"
    );
    assert_eq!(
        ids(
            &south,
            "SELECT customer_id FROM customers WHERE city = 'Potsdam'"
        )
        .await,
        Vec::<i64>::new()
    );
}

async fn base_tables_denied(cluster: &Cluster, policy: &Policy) {
    for role in policy.login_roles() {
        let c = cluster.role(&role.name).await;
        for (schema, table) in policy.protected_tables() {
            let sql = format!("SELECT 1 FROM {schema}.{table}");
            assert_eq!(
                sqlstate(&c, &sql).await,
                "42501",
                "{} read {sql}",
                role.name
            );
        }
        assert_eq!(
            sqlstate(&c, "CREATE TABLE public.copy (x int)").await,
            "42501"
        );
    }
}

async fn drift(cluster: &Cluster, admin: &Client, policy: &Policy) {
    admin
        .batch_execute(
            "GRANT SELECT ON public.customers TO veil_standard; \
             CREATE VIEW veil_standard.extra AS SELECT 1 AS one; \
             UPDATE pgveil_private.login_attributes SET value = 'south' WHERE login_role = 'veil_sales__region_north'",
        )
        .await
        .unwrap();
    let mask_index: String = admin
        .query_one(
            "SELECT relname::text FROM pg_class WHERE relname LIKE 'pgveil_mask_customers_email_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!("DROP INDEX public.{mask_index}"))
        .await
        .unwrap();
    let report = views::apply(admin, policy, SECRET).await.unwrap();
    let text = report.changes.join("\n");
    assert!(text.contains("veil_standard.extra"), "{text}");
    assert!(
        text.contains(&format!("+ index public.{mask_index}")),
        "{text}"
    );
    assert!(
        text.contains("attribute veil_sales__region_north region=south"),
        "{text}"
    );
    assert!(text.contains("- relation public.customers kind=r options= acl={postgres=arwdDxt/postgres,veil_standard=r/postgres}"), "{text}");
    let c = cluster.role("veil_standard").await;
    assert_eq!(
        sqlstate(&c, "SELECT 1 FROM public.customers").await,
        "42501"
    );
    let again = views::apply(admin, policy, SECRET).await.unwrap();
    assert!(again.changes.is_empty(), "{:#?}", again.changes);
}

#[tokio::test]
async fn check_reports_unknown_columns_with_file_and_line() {
    let (_cluster, admin) = setup().await;
    let text = std::fs::read_to_string(repo("policies/crm.toml")).unwrap();
    let text = text.replace("\nstreet = {", "\nstreat = {");
    let line = text.lines().position(|l| l.starts_with("streat")).unwrap() + 1;
    let policy = Policy::from_sources(vec![Source {
        path: "crm.toml".into(),
        text,
    }])
    .unwrap();
    let findings = views::check(&admin, &policy).await.unwrap();
    let bad = findings
        .iter()
        .find(|f| f.message.contains("customers.streat does not exist"))
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(bad.severity, Severity::Error);
    assert_eq!(bad.location.as_ref().unwrap().line, line);
    assert!(bad.to_string().starts_with(&format!("crm.toml:{line}:")));
    assert!(findings
        .iter()
        .any(|f| f.message.contains("customers.street is not classified")));
}
