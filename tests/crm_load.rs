//! Loading the example CRM: counts, determinism, locales, rep regions,
//! consents and escaping, checked with SQL as a user would.

mod common;

use pgveil::crm::{self, LoadOptions, LoadReport, PURPOSES, REGIONS, REPS_PER_REGION};
use tokio_postgres::Client;

const CUSTOMERS: u64 = 2_000;

async fn loaded(prefix: &str, customers: u64, seed: u64) -> (Client, LoadReport) {
    let db = common::fresh_database(prefix).await;
    let client = common::cluster().connect(&db).await.unwrap();
    let opts = LoadOptions {
        customers,
        seed,
        ..LoadOptions::default()
    };
    let report = crm::load(&client, &opts).await.unwrap();
    (client, report)
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// A digest of a whole table's content, in primary-key order.
async fn digest(client: &Client, table: &str, order: &str) -> String {
    let sql = format!("SELECT md5(string_agg(t::text, '|' ORDER BY {order})) FROM {table} t");
    client.query_one(&sql, &[]).await.unwrap().get(0)
}

const TABLES: [(&str, &str); 6] = [
    ("sales_reps", "rep_id"),
    ("customers", "customer_id"),
    ("contact_preferences", "customer_id"),
    ("opportunities", "opportunity_id"),
    ("orders", "order_id"),
    ("consents", "customer_id, purpose"),
];

#[tokio::test]
async fn loads_the_requested_counts_and_reports_them() {
    let (client, report) = loaded("crm_counts", CUSTOMERS, 1).await;
    assert_eq!(report.customers, CUSTOMERS);
    assert_eq!(
        report.sales_reps,
        REGIONS.len() as u64 * u64::from(REPS_PER_REGION)
    );
    assert_eq!(report.contact_preferences, CUSTOMERS);
    let in_db = |table: &'static str| {
        let client = &client;
        async move { count(client, &format!("SELECT count(*) FROM {table}")).await as u64 }
    };
    assert_eq!(in_db("sales_reps").await, report.sales_reps);
    assert_eq!(in_db("customers").await, report.customers);
    assert_eq!(
        in_db("contact_preferences").await,
        report.contact_preferences
    );
    assert_eq!(in_db("opportunities").await, report.opportunities);
    assert_eq!(in_db("orders").await, report.orders);
    assert_eq!(in_db("consents").await, report.consents);
    // 0-3 opportunities and orders per customer: about 1.5 each on average.
    for n in [report.opportunities, report.orders] {
        assert!(
            (2_600..=3_400).contains(&n),
            "{n} rows for {CUSTOMERS} customers"
        );
    }
    // At most one consent row per customer and purpose, most present.
    assert!(report.consents > CUSTOMERS * 3 && report.consents < CUSTOMERS * 4);

    let ids = "SELECT count(*) FROM customers WHERE customer_id BETWEEN 1 AND 2000";
    assert_eq!(count(&client, ids).await, CUSTOMERS as i64);
    let acc: String = client
        .query_one(
            "SELECT account_no FROM customers WHERE customer_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(acc, "ACC-000001");
    let orphans = "SELECT count(*) FROM orders o WHERE NOT EXISTS \
                   (SELECT 1 FROM customers c WHERE c.customer_id = o.customer_id)";
    assert_eq!(count(&client, orphans).await, 0);
}

#[tokio::test]
async fn same_seed_gives_identical_data_and_another_seed_does_not() {
    let (a, _) = loaded("crm_seed_a", CUSTOMERS, 7).await;
    let (b, _) = loaded("crm_seed_b", CUSTOMERS, 7).await;
    let (c, _) = loaded("crm_seed_c", CUSTOMERS, 8).await;
    for (table, order) in TABLES {
        let (da, db, dc) = (
            digest(&a, table, order).await,
            digest(&b, table, order).await,
            digest(&c, table, order).await,
        );
        assert_eq!(da, db, "{table} differs for the same seed");
        assert_ne!(da, dc, "{table} is the same for another seed");
    }
    // A customer's row does not depend on how many customers are loaded.
    let (small, _) = loaded("crm_seed_small", 100, 7).await;
    let first_hundred = "(SELECT * FROM customers WHERE customer_id <= 100)";
    assert_eq!(
        digest(&a, first_hundred, "customer_id").await,
        digest(&small, "customers", "customer_id").await
    );
}

#[tokio::test]
async fn all_three_locales_round_trip_non_ascii_text() {
    let (client, _) = loaded("crm_locales", CUSTOMERS, 3).await;
    let rows = client
        .query(
            "SELECT country::text, count(*) FROM customers GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let countries: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(countries, ["CN", "GB", "IE", "LT", "US"]);
    for row in &rows {
        let n: i64 = row.get(1);
        assert!(
            n >= 100,
            "only {n} customers in {}",
            row.get::<_, String>(0)
        );
    }

    // Chinese names and addresses are written in Han characters.
    let cn = client
        .query(
            "SELECT last_name || first_name, city, street FROM customers WHERE country = 'CN'",
            &[],
        )
        .await
        .unwrap();
    for row in &cn {
        let (name, city, street): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert!(name.chars().all(is_han), "{name}");
        assert!(city.ends_with('市'), "{city}");
        assert!(street.ends_with('号'), "{street}");
    }
    let wang_wei = "SELECT count(*) FROM customers WHERE last_name = '王' AND first_name = '伟'";
    assert!(
        count(&client, wang_wei).await > 0,
        "王伟 is the most common name"
    );

    // Lithuanian letters survive the round trip, in names and streets.
    let lt = "SELECT count(*) FROM customers WHERE country = 'LT' \
              AND (last_name ~ '[ąčęėįšųūž]' OR street ~ '[ĄČĘĖĮŠŲŪŽąčęėįšųūž]')";
    assert!(count(&client, lt).await > 100);
    let kazlauskiene = "SELECT count(*) FROM customers WHERE last_name = 'Kazlauskienė' \
                        AND gender IS DISTINCT FROM 'male'";
    assert!(count(&client, kazlauskiene).await > 0);
    let lt_postal = "SELECT count(*) FROM customers WHERE country = 'LT' \
                     AND postal_code !~ '^LT-[0-9]{5}$'";
    assert_eq!(count(&client, lt_postal).await, 0);

    // E-mail addresses are plain ASCII even for non-ASCII names.
    let bad_email =
        "SELECT count(*) FROM customers WHERE email !~ '^[a-z.]+[0-9]+@example\\.(com|org|net)$'";
    assert_eq!(count(&client, bad_email).await, 0);
}

fn is_han(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

#[tokio::test]
async fn every_customer_has_a_rep_of_their_own_region() {
    let (client, _) = loaded("crm_regions", CUSTOMERS, 4).await;
    let mismatched = "SELECT count(*) FROM customers c LEFT JOIN sales_reps r USING (rep_id) \
                      WHERE r.region IS DISTINCT FROM c.region";
    assert_eq!(count(&client, mismatched).await, 0);
    for region in REGIONS {
        let reps = client
            .query_one(
                "SELECT count(*) FROM sales_reps WHERE region = $1",
                &[&region],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(reps, i64::from(REPS_PER_REGION), "reps in {region}");
        let customers = client
            .query_one(
                "SELECT count(*) FROM customers WHERE region = $1",
                &[&region],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert!(customers > 300, "{customers} customers in {region}");
    }
}

#[tokio::test]
async fn consents_have_realistic_opt_out_and_missing_shares() {
    let (client, _) = loaded("crm_consents", CUSTOMERS, 5).await;
    let purposes = client
        .query("SELECT DISTINCT purpose FROM consents ORDER BY 1", &[])
        .await
        .unwrap();
    let mut found: Vec<String> = purposes.iter().map(|r| r.get(0)).collect();
    let mut expected: Vec<String> = PURPOSES.iter().map(|p| p.to_string()).collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    for purpose in PURPOSES {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE NOT granted), count(*) FROM consents WHERE purpose = $1",
                &[&purpose],
            )
            .await
            .unwrap();
        let (opted_out, recorded): (i64, i64) = (row.get(0), row.get(1));
        let missing = CUSTOMERS as i64 - recorded;
        let share = opted_out as f64 / recorded as f64;
        assert!(
            (0.15..=0.70).contains(&share),
            "{purpose}: opt-out share {share}"
        );
        assert!(
            (100..=700).contains(&missing),
            "{purpose}: {missing} without a row"
        );
    }
}

#[tokio::test]
async fn values_with_newlines_and_tabs_and_sensitive_nulls_load_correctly() {
    let (client, _) = loaded("crm_values", CUSTOMERS, 6).await;
    let multiline = "SELECT count(*) FROM customers \
                     WHERE health_notes = E'Allergies:\\n- penicillin\\n- latex'";
    assert!(count(&client, multiline).await > 0);
    let tabbed = "SELECT count(*) FROM customers \
                  WHERE health_notes = E'Visual impairment\\tuses screen reader'";
    assert!(count(&client, tabbed).await > 0);
    let apostrophe = "SELECT count(*) FROM customers WHERE last_name = 'O''Brien'";
    assert!(count(&client, apostrophe).await > 0);

    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE ethnicity IS NULL), \
                    count(*) FILTER (WHERE health_notes IS NULL), \
                    count(*) FILTER (WHERE date_of_death IS NOT NULL), \
                    count(*) FILTER (WHERE date_of_death <= date_of_birth), \
                    count(*) FILTER (WHERE last_active_at < created_at) \
             FROM customers",
            &[],
        )
        .await
        .unwrap();
    let (no_ethnicity, no_health, dead, dead_before_birth, active_before_creation): (
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert!(no_ethnicity > 1_200, "{no_ethnicity}");
    assert!(no_health > 1_500, "{no_health}");
    assert!((1..=60).contains(&dead), "{dead} deceased customers");
    assert_eq!(dead_before_birth, 0);
    assert_eq!(active_before_creation, 0);
}

/// Index and constraint definitions of the CRM tables, sorted.
async fn definitions(client: &Client) -> Vec<String> {
    let sql = "SELECT tablename || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public' \
               UNION ALL \
               SELECT conrelid::regclass::text || ': ' || conname || ' ' || pg_get_constraintdef(oid) \
               FROM pg_constraint WHERE connamespace = 'public'::regnamespace \
               ORDER BY 1";
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn loading_keeps_every_index_and_constraint_of_the_schema() {
    let schema_only = common::fresh_database("crm_schema_only").await;
    let reference = common::cluster().connect(&schema_only).await.unwrap();
    reference.batch_execute(crm::SCHEMA_SQL).await.unwrap();
    let (client, _) = loaded("crm_constraints", 200, 9).await;
    let expected = definitions(&reference).await;
    assert!(expected.len() >= 15, "{expected:#?}");
    assert_eq!(definitions(&client).await, expected);

    let err = client
        .batch_execute("INSERT INTO orders VALUES (999999, 424242, now(), 1, 'placed')")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "23503", "{err}");
    let err = client
        .batch_execute("INSERT INTO customers (customer_id, account_no, first_name, last_name, country, region) VALUES (1, 'X', 'a', 'b', 'GB', 'north')")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "23505", "{err}");
}

#[tokio::test]
async fn loads_into_existing_tables_without_creating_the_schema() {
    let db = common::fresh_database("crm_existing").await;
    let client = common::cluster().connect(&db).await.unwrap();
    client.batch_execute(crm::SCHEMA_SQL).await.unwrap();
    let opts = LoadOptions {
        customers: 50,
        seed: 1,
        create_schema: false,
    };
    let report = crm::load(&client, &opts).await.unwrap();
    assert_eq!(report.customers, 50);
    assert_eq!(count(&client, "SELECT count(*) FROM customers").await, 50);
    // Loading twice violates the primary keys and leaves the first load intact.
    assert!(crm::load(&client, &opts).await.is_err());
    assert_eq!(count(&client, "SELECT count(*) FROM customers").await, 50);
}
