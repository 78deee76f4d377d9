//! Deterministic rows of the example CRM. Every customer draws from its own
//! random stream (seed, customer id, table), so a customer's rows do not
//! depend on how many customers are generated or in which order.

use rand::seq::SliceRandom;
use rand::Rng;

use super::calendar::{Date, Timestamp};
use super::copy_text::{Cents, RowBuf};
use super::locale::{Locale, Sex};
use super::stream::Stream;

/// The sales regions; every customer and every rep belongs to one.
pub const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
/// Sales reps per region; rep ids are 1..=REGIONS.len() * REPS_PER_REGION.
pub const REPS_PER_REGION: u32 = 5;
/// The consent purposes of table `consents`.
pub const PURPOSES: [&str; 4] = [
    "direct_marketing",
    "third_party_disclosure",
    "automated_decision",
    "sensitive_data",
];
/// Per purpose: percent of customers with no consent row, and percent of
/// the remaining rows that are opt-outs (`granted = false`).
const CONSENT_SHARES: [(u32, u32); 4] = [(10, 25), (15, 55), (20, 35), (25, 60)];

/// What a random stream of a customer feeds.
#[derive(Clone, Copy)]
enum Part {
    /// The facts dependent rows need ([`Account`]).
    Account = 0,
    /// The rest of the `customers` row.
    Details = 1,
    /// The dependent tables.
    Dependents = 2,
}

fn rng_for(seed: u64, id: u64, part: Part) -> Stream {
    Stream::new(seed, id * 4 + part as u64)
}

fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    match items.choose(rng) {
        Some(item) => *item,
        None => unreachable!("value tables are never empty"),
    }
}

/// A uniformly random point in `[from, to)` seconds.
fn moment(rng: &mut impl Rng, from: Timestamp, to: Timestamp) -> Timestamp {
    Timestamp(rng.gen_range(from.0..to.0.max(from.0 + 1)))
}

/// A random percentage draw: true with probability `percent` / 100.
fn chance(rng: &mut impl Rng, percent: u32) -> bool {
    rng.gen_range(0..100) < percent
}

const FIRST_CUSTOMER: Timestamp = Date::ymd(2015, 1, 1).midnight();
const LAST_SIGN_UP: Timestamp = Date::ymd(2024, 7, 1).midnight();
/// No generated event happens on or after this moment.
const DATA_END: Timestamp = Date::ymd(2025, 1, 1).midnight();

// ------------------------------------------------------------ sales reps

/// Number of sales reps generated.
pub const REP_COUNT: u32 = REGIONS.len() as u32 * REPS_PER_REGION;

/// Writes the sales reps; rep `r` works in region `REGIONS[(r - 1) / 5]`.
pub(crate) fn write_reps(seed: u64, rows: &mut RowBuf) {
    let mut rng = rng_for(seed, 0, Part::Details);
    for rep_id in 1..=REP_COUNT {
        let sex = if rng.gen() { Sex::Female } else { Sex::Male };
        let locale = Locale::pick(&mut rng);
        let person = locale.person(&mut rng, sex, Date::ymd(1980, 1, 1));
        let full_name = match locale {
            Locale::Chinese => format!("{}{}", person.last_name, person.first_name),
            _ => format!("{} {}", person.first_name, person.last_name),
        };
        rows.field(rep_id)
            .field(full_name)
            .field(format!("{}.{rep_id}@sales.example.com", person.email_name))
            .field(rep_region(rep_id))
            .field(Cents(rng.gen_range(250..=1200)));
        rows.end_row();
    }
}

fn rep_region(rep_id: u32) -> &'static str {
    REGIONS[((rep_id - 1) / REPS_PER_REGION) as usize]
}

// ------------------------------------------------------------- customers

/// The facts about a customer that its dependent rows need; cheap to draw.
#[derive(Debug, Clone, Copy)]
struct Account {
    locale: Locale,
    sex: Sex,
    born: Date,
    language_draw: u32,
    region_index: u32,
    rep_id: u32,
    created_at: Timestamp,
}

fn account(seed: u64, id: u64) -> Account {
    let mut rng = rng_for(seed, id, Part::Account);
    let region_index = rng.gen_range(0..REGIONS.len() as u32);
    Account {
        locale: Locale::pick(&mut rng),
        sex: if rng.gen() { Sex::Female } else { Sex::Male },
        born: Date(rng.gen_range(Date::ymd(1940, 1, 1).0..=Date::ymd(2006, 12, 31).0)),
        language_draw: rng.gen_range(0..10),
        region_index,
        rep_id: region_index * REPS_PER_REGION + rng.gen_range(1..=REPS_PER_REGION),
        created_at: moment(&mut rng, FIRST_CUSTOMER, LAST_SIGN_UP),
    }
}

impl Account {
    /// The customer's preferred language: mostly their locale's.
    fn language(&self) -> &'static str {
        match (self.locale, self.language_draw) {
            (Locale::Chinese, 0) | (Locale::Lithuanian, 0) => "en",
            (Locale::Lithuanian, 1) => "ru",
            (locale, _) => locale.language(),
        }
    }
}

/// Writes the `customers` row of customer `id`.
pub(crate) fn write_customer(seed: u64, id: u64, rows: &mut RowBuf) {
    let a = account(seed, id);
    let mut rng = rng_for(seed, id, Part::Details);
    let person = a.locale.person(&mut rng, a.sex, a.born);
    let domain = pick(&mut rng, &["example.com", "example.org", "example.net"]);
    let gender = match rng.gen_range(0..100) {
        0..=2 => None,
        3..=4 => Some("non-binary"),
        _ if a.sex == Sex::Female => Some("female"),
        _ => Some("male"),
    };
    rows.field(id)
        .field(format!("ACC-{id:06}"))
        .field(person.first_name)
        .field(person.last_name)
        .field((!chance(&mut rng, 5)).then(|| format!("{}{id}@{domain}", person.email_name)))
        .field((!chance(&mut rng, 8)).then_some(&person.phone))
        .field((!chance(&mut rng, 10)).then_some(&person.national_id))
        .field(a.born)
        .field(gender)
        .field((!chance(&mut rng, 10)).then(|| Cents(rng.gen_range(1_200_000..25_000_000))))
        .field(&person.street)
        .field(person.city)
        .field(&person.postal_code)
        .field(person.country)
        .field(REGIONS[a.region_index as usize]);
    write_sensitive(&mut rng, a.locale, a.born, rows);
    rows.field(a.rep_id)
        .field(a.created_at)
        .field(moment(&mut rng, a.created_at, DATA_END));
    rows.end_row();
}

const RELIGIONS: &[&str] = &[
    "none",
    "Christian",
    "Catholic",
    "Orthodox",
    "Buddhist",
    "Muslim",
    "Jewish",
    "Hindu",
];
const HEALTH_NOTES: &[&str] = &[
    "Type 2 diabetes",
    "Asthma",
    "Wheelchair user",
    "Hearing impaired; prefers email",
    "Allergies:\n- penicillin\n- latex",
    "Visual impairment\tuses screen reader",
    "Recovering from knee surgery",
];

/// Writes ethnicity, religion, health_notes and date_of_death (mostly NULL).
fn write_sensitive(rng: &mut impl Rng, locale: Locale, born: Date, rows: &mut RowBuf) {
    let ethnicity = chance(rng, 30).then(|| pick(rng, locale.ethnicities()));
    let religion = chance(rng, 40).then(|| pick(rng, RELIGIONS));
    let health = chance(rng, 15).then(|| pick(rng, HEALTH_NOTES));
    let earliest_death = Date((born.0 + 18 * 365).max(Date::ymd(2016, 1, 1).0));
    let died =
        chance(rng, 1).then(|| Date(rng.gen_range(earliest_death.0..=Date::ymd(2024, 12, 31).0)));
    rows.field(ethnicity)
        .field(religion)
        .field(health)
        .field(died);
}

// -------------------------------------------------------- dependent rows

/// Ids for opportunities and orders, numbered across all customers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) opportunities: u64,
    pub(crate) orders: u64,
}

/// Which dependent table to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dependent {
    /// `contact_preferences`: one row per customer.
    ContactPreferences,
    /// `opportunities`: 0–3 per customer.
    Opportunities,
    /// `orders`: 0–3 per customer.
    Orders,
    /// `consents`: up to one row per customer and purpose.
    Consents,
}

/// Writes the rows of `table` belonging to customer `id`. All dependent
/// tables are drawn from one stream, so each pass replays the same draws.
pub(crate) fn write_dependent(
    seed: u64,
    id: u64,
    table: Dependent,
    counters: &mut Counters,
    rows: &mut RowBuf,
) {
    let account = account(seed, id);
    let mut rng = rng_for(seed, id, Part::Dependents);
    use Dependent::*;
    let preferences = only(table, ContactPreferences, rows);
    contact_preferences(&mut rng, id, account, preferences);
    let opportunity_rows = only(table, Opportunities, rows);
    opportunities(
        &mut rng,
        id,
        account,
        &mut counters.opportunities,
        opportunity_rows,
    );
    orders(
        &mut rng,
        id,
        account,
        &mut counters.orders,
        only(table, Orders, rows),
    );
    consents(&mut rng, id, account, only(table, Consents, rows));
}

/// `rows` when `table` is the `wanted` one, so only that table is written.
fn only(table: Dependent, wanted: Dependent, rows: &mut RowBuf) -> Option<&mut RowBuf> {
    (table == wanted).then_some(rows)
}

fn contact_preferences(rng: &mut impl Rng, id: u64, a: Account, rows: Option<&mut RowBuf>) {
    let channel = pick(
        rng,
        &[
            "email", "email", "email", "phone", "phone", "sms", "sms", "post",
        ],
    );
    let prefers_email = chance(rng, if channel == "email" { 90 } else { 30 });
    let best_time =
        chance(rng, 60).then(|| pick(rng, &["morning", "afternoon", "evening", "weekends only"]));
    if let Some(rows) = rows {
        rows.field(id)
            .field(channel)
            .field(prefers_email)
            .field(best_time)
            .field(a.language());
        rows.end_row();
    }
}

const TITLES: &[&str] = &[
    "Annual support renewal",
    "Premium plan upgrade",
    "Fleet expansion",
    "Consulting package",
    "Hardware refresh",
    "Training workshop",
    "Cloud migration",
    "Loyalty bundle",
];

fn opportunities(
    rng: &mut impl Rng,
    id: u64,
    a: Account,
    next_id: &mut u64,
    mut rows: Option<&mut RowBuf>,
) {
    for _ in 0..rng.gen_range(0..=3) {
        *next_id += 1;
        let stage = pick(
            rng,
            &["lead", "qualified", "proposal", "won", "won", "lost"],
        );
        let amount = Cents(rng.gen_range(50_000..=25_000_000));
        let opened = moment(rng, a.created_at, DATA_END).date();
        let closed =
            matches!(stage, "won" | "lost").then(|| Date(opened.0 + rng.gen_range(1..=180)));
        // Mostly the customer's own rep, sometimes a colleague from the region.
        let rep_id = match chance(rng, 85) {
            true => a.rep_id,
            false => a.region_index * REPS_PER_REGION + rng.gen_range(1..=REPS_PER_REGION),
        };
        let title = pick(rng, TITLES);
        if let Some(rows) = rows.as_deref_mut() {
            rows.field(*next_id)
                .field(id)
                .field(rep_id)
                .field(title)
                .field(stage)
                .field(amount)
                .field(opened)
                .field(closed);
            rows.end_row();
        }
    }
}

fn orders(
    rng: &mut impl Rng,
    id: u64,
    a: Account,
    next_id: &mut u64,
    mut rows: Option<&mut RowBuf>,
) {
    for _ in 0..rng.gen_range(0..=3) {
        *next_id += 1;
        let at = moment(rng, a.created_at, DATA_END);
        let total = Cents(rng.gen_range(500..=500_000));
        let status = pick(
            rng,
            &[
                "placed",
                "shipped",
                "shipped",
                "delivered",
                "delivered",
                "delivered",
                "delivered",
                "returned",
            ],
        );
        if let Some(rows) = rows.as_deref_mut() {
            rows.field(*next_id)
                .field(id)
                .field(at)
                .field(total)
                .field(status);
            rows.end_row();
        }
    }
}

fn consents(rng: &mut impl Rng, id: u64, a: Account, mut rows: Option<&mut RowBuf>) {
    for (purpose, (missing, opted_out)) in PURPOSES.iter().zip(CONSENT_SHARES) {
        let recorded = !chance(rng, missing);
        let granted = !chance(rng, opted_out);
        let updated = moment(rng, a.created_at, DATA_END);
        if let (true, Some(rows)) = (recorded, rows.as_deref_mut()) {
            rows.field(id).field(*purpose).field(granted).field(updated);
            rows.end_row();
        }
    }
}
