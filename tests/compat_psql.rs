//! psql and pgbench through pgveil: every output must equal the output of
//! the same commands run directly against PostgreSQL.

mod common;

use std::process::{Command, Output};

use common::proxy::{self, ProxyOptions, USER_PASSWORD};

const USER: &str = "app";

/// Runs a client program with a libpq connection given as environment.
fn run(program: &str, args: &[&str], host: &str, port: u16, user: &str, password: &str, db: &str, stdin: Option<&str>) -> Output {
    let bin = common::cluster().bin_dir().join(program);
    let mut command = Command::new(bin);
    command
        .args(args)
        .env("PGHOST", host)
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", db)
        .env("PGSSLMODE", "disable")
        .env("PGCLIENTENCODING", "UTF8")
        .env_remove("PGOPTIONS");
    if let Some(input) = stdin {
        use std::io::Write;
        use std::process::Stdio;
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn client");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        return child.wait_with_output().expect("client output");
    }
    command.output().expect("run client")
}

struct Pair {
    proxy: proxy::Proxy,
    direct_db: String,
}

impl Pair {
    /// Two databases with the same content: one reached directly, one through the proxy.
    async fn new(prefix: &str) -> Pair {
        let direct_db = common::fresh_database(&format!("{prefix}_direct")).await;
        let proxied_db = common::fresh_database(&format!("{prefix}_proxied")).await;
        Pair {
            proxy: proxy::start(&proxied_db, &[USER], ProxyOptions::default()),
            direct_db,
        }
    }

    fn direct(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let c = common::cluster();
        run(program, args, c.host(), c.port(), c.superuser(), c.password(), &self.direct_db, stdin)
    }

    fn proxied(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let p = &self.proxy;
        run(program, args, &p.addr.ip().to_string(), p.addr.port(), USER, USER_PASSWORD, &p.database, stdin)
    }

    /// Runs psql both ways and returns (stdout+stderr, status) of each.
    fn psql_both(&self, args: &[&str], stdin: Option<&str>) -> (String, String) {
        let mut full = vec!["-X", "-v", "VERBOSITY=default"];
        full.extend_from_slice(args);
        let show = |o: Output| format!("{}\n--stderr--\n{}\n--status {}--", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), o.status);
        (show(self.direct("psql", &full, stdin)), show(self.proxied("psql", &full, stdin)))
    }
}

const SCRIPT: &str = "
create table people (id int primary key, name text, city text, born date);
insert into people values (1, 'Jonas Kazlauskas', 'Vilnius', '1980-05-01'), (2, '王伟', '北京', '1975-12-31'), (3, 'Mary O''Brien', 'Dublin', null);
select * from people order by id;
select 1/0;
select count(*) as after_error from people;
begin;
update people set city = 'Kaunas' where id = 1 returning *;
select nonexistent_column from people;
select 'inside failed transaction';
rollback;
select city from people where id = 1;
";

#[tokio::test]
async fn psql_script_with_errors_matches_direct() {
    let pair = Pair::new("psql_script").await;
    let (direct, proxied) = pair.psql_both(&["-v", "ON_ERROR_STOP=0", "-f", "-"], Some(SCRIPT));
    assert_eq!(direct, proxied);
    assert!(proxied.contains("王伟"), "{proxied}");
    assert!(proxied.contains("division by zero"), "{proxied}");
    assert!(proxied.contains("current transaction is aborted"), "{proxied}");
    assert!(proxied.contains("Vilnius"), "rollback undid the update: {proxied}");
}

#[tokio::test]
async fn psql_multi_statement_c_and_describe_match_direct() {
    let pair = Pair::new("psql_multi").await;
    let setup = "create table accounts (id serial primary key, email text not null unique, balance numeric(12,2) default 0); create index on accounts (lower(email)); comment on table accounts is 'money';";
    let (direct, proxied) = pair.psql_both(&["-c", setup], None);
    assert_eq!(direct, proxied);
    let (direct, proxied) = pair.psql_both(&["-c", "insert into accounts (email) values ('a@x.lt'); select 1 as one; select email from accounts"], None);
    assert_eq!(direct, proxied);
    assert!(proxied.contains("a@x.lt"), "{proxied}");
    for meta in ["\\d accounts", "\\dt+", "\\d+ accounts", "\\di", "\\l crm", "\\dn", "\\df lower"] {
        let (direct, proxied) = pair.psql_both(&["-c", meta], None);
        assert_eq!(direct.replace(&pair.direct_db, "DB"), proxied.replace(&pair.proxy.database, "DB"), "{meta}");
    }
    let (_, proxied) = pair.psql_both(&["-c", "\\d accounts"], None);
    assert!(proxied.contains("accounts_email_key"), "{proxied}");
}

#[tokio::test]
async fn psql_copy_in_and_out_match_direct() {
    let pair = Pair::new("psql_copy").await;
    pair.psql_both(&["-c", "create table items (id int, label text, price numeric)"], None);
    let rows: String = (1..=2000).map(|i| format!("{i}\tžąsis \\\\ {i}\t{}.5\n", i % 97)).collect();
    let (direct, proxied) = pair.psql_both(&["-c", "\\copy items from stdin"], Some(&rows));
    assert_eq!(direct, proxied);
    assert!(proxied.contains("COPY 2000"), "{proxied}");
    let (direct, proxied) = pair.psql_both(&["-c", "\\copy (select * from items order by id) to stdout with (format csv, header)"], None);
    assert_eq!(direct, proxied);
    assert!(proxied.contains("2000,žąsis \\ 2000,19.5"), "{}", &proxied[proxied.len().saturating_sub(200)..]);
    let (direct, proxied) = pair.psql_both(&["-c", "\\copy items from stdin"], Some("1\tx\tnot-a-number\n"));
    assert_eq!(direct, proxied);
    assert!(proxied.contains("invalid input syntax for type numeric"), "{proxied}");
}

fn pgbench_summary(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "pgbench failed: {text}\n{}", String::from_utf8_lossy(&output.stderr));
    text.lines()
        .filter(|l| l.starts_with("number of transactions actually processed") || l.starts_with("number of failed"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn pgbench_init_and_select_only_in_simple_and_prepared_mode() {
    let pair = Pair::new("pgbench").await;
    for output in [pair.direct("pgbench", &["-i", "-s", "1", "-q"], None), pair.proxied("pgbench", &["-i", "-s", "1", "-q"], None)] {
        assert!(output.status.success(), "pgbench -i failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let count = "select count(*), sum(abalance), sum(bid) from pgbench_accounts";
    let (direct, proxied) = pair.psql_both(&["-c", count], None);
    assert_eq!(direct, proxied);
    assert!(proxied.contains("100000"), "{proxied}");
    for mode in ["simple", "extended", "prepared"] {
        let args = ["-n", "-S", "-M", mode, "-c", "4", "-j", "2", "-t", "250"];
        let direct = pgbench_summary(&pair.direct("pgbench", &args, None));
        let proxied = pgbench_summary(&pair.proxied("pgbench", &args, None));
        assert_eq!(direct, proxied, "mode {mode}");
        assert!(proxied.contains("processed: 1000/1000"), "mode {mode}: {proxied}");
    }
    let reconnecting = pgbench_summary(&pair.proxied("pgbench", &["-n", "-S", "-C", "-c", "2", "-t", "50"], None));
    assert!(reconnecting.contains("processed: 100/100"), "{reconnecting}");
}
